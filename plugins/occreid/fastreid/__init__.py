"""occreid's FastReID adapter. ``import occreid.fastreid`` registers everything, exactly once:

- the meta-architectures ``OCNet``, ``PAN``, ``AlignedReID``, ``SGR`` and ``AMDNet`` in ``META_ARCH_REGISTRY``, the head ``SGRHead`` in
  ``REID_HEADS_REGISTRY``; the backbone ``build_timm_hrnet_backbone`` in ``BACKBONE_REGISTRY``;
- the datasets of :mod:`occreid.fastreid.datasets` in ``DATASET_REGISTRY``;
- occreid's config keys (:func:`add_occreid_config`) in FastReID's default config, so that
  ``fastreid.config.get_cfg()`` knows them and YAML files using them load;
- a check on FastReID's plain ``DefaultTrainer`` (:mod:`occreid.fastreid.plain_trainer`): when it builds a
  model whose config sets keys only :class:`OccReIDTrainer` applies (``DATASETS.SUBSET.*``, ...), or a method
  whose test distance is its own (OCNet's Eq. 4), the log says in one line what is ignored.

Importing it again (or ``importlib.reload``) changes nothing. In an existing FastReID checkout, the
one line to add to ``tools/train_net.py`` is ``import occreid.fastreid  # noqa: F401``; use
:class:`OccReIDTrainer` in place of ``DefaultTrainer`` to get ``DATASETS.SUBSET`` and the checks.
"""

from fastreid.config.defaults import _C as _fastreid_default_cfg

from .config import add_occreid_config, expand_config_paths
from .datasets import OccReIDImageDataset, TestOnlyDatasetError, register_datasets
from .evaluator import OccReIDEvaluator
from .aligned import AlignedReID, register_aligned
from .amdnet import AMDNet, register_amd
from .backbones import register_backbones
from .ocnet import OCNet, register_ocnet
from .pan import PAN, register_pan
from .plain_trainer import install_plain_trainer_check, warn_if_plain_trainer
from .sgr import SGR, SGRHead, register_sgr
from .trainer import OccReIDTrainer, ReIDImageDataset, check_checkpoint_matches

register_datasets()
register_ocnet()
register_aligned()
register_pan()
register_sgr()
register_amd()
register_backbones()
add_occreid_config(_fastreid_default_cfg)
install_plain_trainer_check()

__all__ = ["AMDNet", "AlignedReID", "OCNet", "PAN", "SGR", "SGRHead", "add_occreid_config", "expand_config_paths", "OccReIDEvaluator", "OccReIDImageDataset", "TestOnlyDatasetError", "OccReIDTrainer",
           "ReIDImageDataset", "check_checkpoint_matches", "register_datasets"]
