"""Method layers: plain ``torch.nn`` modules named after the papers' terms (no toolbox import)."""

from .aligned import (AlignedLocalBranch, HorizontalPooling, OcclusionClassifier, aligned_local_distance,
                      shortest_path, stripe_distance)
from .center_focus_module import CenterFocusModule, center_crop
from .converter_module import ConverterModule
from .dnl_block import DNLBlock
from .momentum_mean import MomentumMeanFeature
from .multi_head_classifier import MultiHeadClassifier
from .ocnet_head import OCNetBranches, horizontal_parts
from .reconstructive_pooling import ReconstructivePooling
from .relation_adaptive_module import RelationAdaptiveModule, RelationNetwork

__all__ = ["CenterFocusModule", "center_crop", "ConverterModule", "RelationAdaptiveModule", "RelationNetwork",
           "OCNetBranches", "horizontal_parts", "DNLBlock", "ReconstructivePooling", "MomentumMeanFeature",
           "MultiHeadClassifier"]
from .pan import (LocalEmbedding, MaskGenerator, PANBranches, PANBuffer, PANHead, pan_feature_maps,
                  weighted_mask_pooling)

__all__ += ["LocalEmbedding", "MaskGenerator", "PANBranches", "PANBuffer", "PANHead", "pan_feature_maps",
            "weighted_mask_pooling"]
__all__ += ["AlignedLocalBranch", "HorizontalPooling", "OcclusionClassifier", "aligned_local_distance",
            "shortest_path", "stripe_distance"]
