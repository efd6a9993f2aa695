"""``OccReIDTrainer``: FastReID's ``DefaultTrainer`` with occreid's data handling.

Differences from ``DefaultTrainer`` (everything else, hooks, solver, checkpoints, is FastReID's):

- datasets are built here so that ``DATASETS.SUBSET.*`` (deterministic identity subsets) applies to
  any registered dataset, occreid's or FastReID's own;
- an image that cannot be read raises an error naming its file (:class:`ReIDImageDataset`);
- metrics are printed every ``SOLVER.LOG_PERIOD`` iterations (FastReID: every 200);
- evaluation uses :class:`~occreid.fastreid.evaluator.OccReIDEvaluator` (occreid's re-ranking);
- ``MODEL.WEIGHTS`` is checked against the model before loading: a checkpoint of another model is an
  error naming the file, not a silently half-initialised network (:func:`check_checkpoint_matches`).
"""

import logging
import os

import torch
from fastreid.data import build_reid_test_loader, build_reid_train_loader
from fastreid.data.build import _root as _fastreid_root
from fastreid.data.common import CommDataset
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.transforms import build_transforms
from fastreid.engine import DefaultTrainer, hooks
from fastreid.utils import comm

from occreid.data.common import ReIDSplits
from occreid.data.subset import subset_splits

from .evaluator import OccReIDEvaluator
from .ocnet import ocnet_distance_from_cfg

#: meta-architectures whose test distance is not the plain metric of their features (name -> cfg -> fn)
TEST_DISTANCES = {"OCNet": ocnet_distance_from_cfg}

logger = logging.getLogger(__name__)

#: Parameters a fine-tuning checkpoint may lack or have in another shape (the identity classifier):
#: FastReID's EmbeddingHead ``heads.weight`` and any module named ``*classifier`` / ``*classifiers`` (OCNet's
#: ``classifiers``, SGR's ``classifier`` and ``rp_classifier``).
CLASSIFIER_KEYS = ("heads.weight",)


def is_classifier_key(key):
    """True for the identity-classifier parameters, whose size depends on the number of training ids."""
    parts = key.split(".")
    return key in CLASSIFIER_KEYS or any(p.endswith(("classifier", "classifiers")) for p in parts)


def datasets_root():
    """The datasets root: ``$FASTREID_DATASETS`` now, else what FastReID read at import, else ``datasets``."""
    return os.getenv("FASTREID_DATASETS", _fastreid_root)


class ReIDImageDataset(CommDataset):
    """FastReID's ``CommDataset`` whose unreadable images raise ``RuntimeError`` naming the file."""

    def __getitem__(self, index):
        try:
            return super().__getitem__(index)
        except Exception as e:  # PIL / OSError / decoding errors carry no path
            raise RuntimeError(f"cannot read image {self.img_items[index][0]}: {e}") from e


def check_checkpoint_matches(model, path):
    """Raise ``ValueError`` if the checkpoint at ``path`` was not made for ``model``.

    Loads with ``torch.load(weights_only=True)`` (no pickled code runs). A checkpoint matches when
    every parameter / buffer of the model is present with the same shape, except the identity
    classifier (:func:`is_classifier_key`), which may differ when fine-tuning on another dataset.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file holds no model state dict, or keys / shapes do not match.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    from fastreid.utils.checkpoint import _checkpoint_safe_globals  # added by our fastreid patch 0003
    with torch.serialization.safe_globals(_checkpoint_safe_globals()):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise ValueError(f"checkpoint {path} holds no model state dict")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state and not is_classifier_key(k)]
    shapes = [f"{k}: {tuple(state[k].shape)} in file, {tuple(v.shape)} in model" for k, v in own.items()
              if k in state and not is_classifier_key(k) and hasattr(state[k], "shape")
              and tuple(state[k].shape) != tuple(v.shape)]
    if missing or shapes:
        raise ValueError(
            f"checkpoint {path} does not match the model {type(model).__name__} "
            f"({len(missing)} missing keys, {len(shapes)} shape mismatches); first: "
            f"{(missing + shapes)[:3]}. Was it trained with another config (META_ARCHITECTURE, BACKBONE)?")


def load_checked_weights(model, path):
    """Load the checkpoint at ``path`` into ``model`` after :func:`check_checkpoint_matches`."""
    from fastreid.utils.checkpoint import Checkpointer
    check_checkpoint_matches(model, path)
    Checkpointer(model).load(path)
    return model


class OccReIDTrainer(DefaultTrainer):
    """FastReID ``DefaultTrainer`` with identity subsets, path-naming image errors and checkpoint checks."""

    @classmethod
    def _load_dataset(cls, cfg, name):
        return DATASET_REGISTRY.get(name)(root=datasets_root(), combineall=cfg.DATASETS.COMBINEALL)

    @classmethod
    def build_train_loader(cls, cfg):
        logger.info("Prepare training set")
        sub = cfg.DATASETS.SUBSET
        items = []
        for name in cfg.DATASETS.NAMES:
            data = cls._load_dataset(cfg, name)
            train = subset_splits(ReIDSplits(data.train, [], []), train_ids=sub.TRAIN_IDS,
                                  mode=sub.MODE, seed=sub.SEED).train
            if sub.TRAIN_IDS:
                logger.info(f"{name}: subset of {sub.TRAIN_IDS} training identities "
                            f"({sub.MODE}, seed {sub.SEED}): {len(train)} images")
            if comm.is_main_process():
                data.show_train()
            items.extend(train)
        train_set = ReIDImageDataset(items, build_transforms(cfg, is_train=True), relabel=True)
        return build_reid_train_loader(cfg, train_set=train_set)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        sub = cfg.DATASETS.SUBSET
        data = cls._load_dataset(cfg, dataset_name)
        _, query, gallery = subset_splits(ReIDSplits([], data.query, data.gallery), test_ids=sub.TEST_IDS,
                                          mode=sub.MODE, seed=sub.SEED)
        if sub.TEST_IDS:
            logger.info(f"{dataset_name}: subset of {len({q[1] for q in query})} query identities: "
                        f"{len(query)} query / {len(gallery)} gallery images")
        elif comm.is_main_process():
            data.show_test()
        test_set = ReIDImageDataset(query + gallery, build_transforms(cfg, is_train=False), relabel=False)
        return build_reid_test_loader(test_set=test_set, test_batch_size=cfg.TEST.IMS_PER_BATCH,
                                      num_query=len(query), num_workers=cfg.DATALOADER.NUM_WORKERS)

    def build_hooks(self):
        ret = super().build_hooks()
        for h in ret:
            if isinstance(h, hooks.PeriodicWriter):
                h._period = self.cfg.SOLVER.LOG_PERIOD  # FastReID hard-codes 200 iterations
        return ret

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_dir=None):
        data_loader, num_query = cls.build_test_loader(cfg, dataset_name)
        distance = TEST_DISTANCES.get(cfg.MODEL.META_ARCHITECTURE)
        return data_loader, OccReIDEvaluator(cfg, num_query, output_dir,
                                             distance_fn=distance(cfg) if distance else None)

    def resume_or_load(self, resume=True):
        weights = self.cfg.MODEL.WEIGHTS
        if weights and not (resume and self.checkpointer.has_checkpoint()):
            check_checkpoint_matches(self.model, weights)
        return super().resume_or_load(resume=resume)
