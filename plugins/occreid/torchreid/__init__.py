"""occreid's TorchReID adapter, for PyPI torchreid 0.2.5 (``torchreid.reid.*``) and TorchReID's GitHub tree
(``torchreid.*``). ``import occreid.torchreid`` registers, once and without editing TorchReID's files:

- every occreid model (:data:`occreid.torchreid.models.MODELS`: ``bot_osnet_x0_25``, ``ocnet_osnet_x0_25``,
  ``sgr_osnet_x0_25``, ``pan_osnet_x0_25``, ``alignedreid_osnet_x0_25``, ``amdnet_osnet_x0_25``, the ResNet-50 /
  HRNet-W32 / OSNet x1.0 paper configs) in TorchReID's model factory (``torchreid.models.build_model(name, ...)``);
- every occreid dataset (:mod:`occreid.torchreid.datasets`: ``occluded_duke``, ``partial_reid``, ...) in
  TorchReID's image-dataset registry.

Train with :class:`OccReIDEngine` (the method's own losses) or TorchReID's engines (BoT only), evaluate with the
method's own distance and occreid's re-ranking (:class:`OccReIDEvalMixin`); checkpoints go both ways
(:mod:`occreid.torchreid.weights`). ``scripts/torchreid_main.py`` mirrors TorchReID's ``scripts/main.py``.
Feature extraction with a plain TorchReID model: :mod:`occreid.torchreid.features`.
"""

from .compat import torchreid_modules
from .datasets import TestOnlyDatasetError, register_datasets
from .models import MODELS, FastReIDModel, build_occreid_model, load_config, register_models

_tr = torchreid_modules()
register_models(_tr)
register_datasets(_tr)

from .engine import OccReIDEngine, OccReIDEvalMixin, OccReIDSoftmaxEngine, OccReIDTripletEngine  # noqa: E402
from .weights import convert_checkpoint, fastreid_state_dict, load_weights, save_fastreid_checkpoint  # noqa: E402

__all__ = ["MODELS", "FastReIDModel", "OccReIDEngine", "OccReIDEvalMixin", "OccReIDSoftmaxEngine",
           "OccReIDTripletEngine", "TestOnlyDatasetError", "build_occreid_model", "convert_checkpoint",
           "fastreid_state_dict", "load_config", "load_weights", "register_datasets", "register_models",
           "save_fastreid_checkpoint", "torchreid_modules"]
