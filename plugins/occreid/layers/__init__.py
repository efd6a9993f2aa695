"""Method layers: plain ``torch.nn`` modules named after the papers' terms (no toolbox import)."""

from .center_focus_module import CenterFocusModule, center_crop
from .converter_module import ConverterModule
from .ocnet_head import OCNetBranches, horizontal_parts
from .relation_adaptive_module import RelationAdaptiveModule, RelationNetwork

__all__ = ["CenterFocusModule", "center_crop", "ConverterModule", "RelationAdaptiveModule", "RelationNetwork",
           "OCNetBranches", "horizontal_parts"]
