"""Shared fixtures: the real data root (../shared, unpacked) and small fixture trees of real JPEGs."""

import os

import numpy as np
import pytest
from PIL import Image

REAL_DATA_ENV = "OCCREID_DATA"


@pytest.fixture(scope="session")
def real_data_root():
    """The folder ``../shared/tools/unpack_data.sh`` unpacked into (``$OCCREID_DATA``).

    Under CI (``CI=true``) a missing data root is a failure, never a skip."""
    root = os.environ.get(REAL_DATA_ENV)
    if not root or not os.path.isdir(os.path.join(root, "Occluded_Duke")):
        msg = (f"real data not found: set {REAL_DATA_ENV} to the folder printed by "
               f"../shared/tools/unpack_data.sh (got {root!r})")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    return root


def write_jpeg(path, seed=0, size=(64, 32)):
    """A small random RGB JPEG at ``path`` (folders created)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[0], size[1], 3), dtype=np.uint8)).save(path, "JPEG")
    return path


@pytest.fixture(scope="session")
def real_osnet_features(real_data_root):
    """Features of real Occluded-Duke images from the MSMT17 OSNet x0.25 (torchreid, 512-d):
    the query images of 40 query identities, the gallery images of those identities, and 600 more
    gallery images (every 29th) as distractors. Returns (qf, gf, q_pids, g_pids, q_camids, g_camids).

    Gallery files that are copies of query files (1,870 in Occluded-Duke, ignored by the standard
    protocol as same id + same camera) are left out: exact duplicate features make distances tie,
    and at a tie Zhong's reference code depends on the order of NumPy's unstable argsort, so no
    other implementation can reproduce it bit for bit (docs/reranking.md, "Ties")."""
    from occreid.data import parse_occluded_duke, select_identities
    from occreid.torchreid.features import build_torchreid_model, extract_features

    _, query, gallery = parse_occluded_duke(real_data_root)
    query_names = {os.path.basename(q[0]) for q in query}
    gallery = [g for g in gallery if os.path.basename(g[0]) not in query_names]
    keep = select_identities((q[1] for q in query), 40)
    query = [q for q in query if q[1] in keep]
    gallery = [g for g in gallery if g[1] in keep] + [g for g in gallery[::29] if g[1] not in keep][:600]
    model = build_torchreid_model("osnet_x0_25", os.path.join(real_data_root, "weights", "osnet_x0_25_msmt17.pth"))
    qf = extract_features(model, [q[0] for q in query])
    gf = extract_features(model, [g[0] for g in gallery])
    arr = lambda items, k: np.array([it[k] for it in items])
    return qf, gf, arr(query, 1), arr(gallery, 1), arr(query, 2), arr(gallery, 2)


def train_on_real_subset(config_file, data_root, out_dir, overrides=()):
    """Train ``config_file`` for one epoch on a deterministic subset of real Occluded-Duke (24 training
    identities, batch 32 = 8 x 4, no warm-up, test on 40 random query identities) with
    ``OccReIDTrainer``, the trainer of train_net.py. ``FASTREID_DATASETS`` must point at ``data_root``.
    Returns ``(trainer, results, per-iteration total losses)``."""
    import torch
    from fastreid.config import get_cfg
    from occreid.fastreid import OccReIDTrainer, add_occreid_config
    from occreid.fastreid.config import expand_config_paths

    assert os.environ.get("FASTREID_DATASETS") == data_root
    torch.manual_seed(0)
    np.random.seed(0)
    cfg = add_occreid_config(get_cfg())
    cfg.merge_from_file(config_file)
    cfg.merge_from_list([
        "DATASETS.SUBSET.TRAIN_IDS", 24, "DATASETS.SUBSET.TEST_IDS", 40, "DATASETS.SUBSET.MODE", "random",
        "DATASETS.SUBSET.SEED", 3, "SOLVER.IMS_PER_BATCH", 32, "SOLVER.MAX_EPOCH", 1,
        "SOLVER.WARMUP_ITERS", 0, "TEST.EVAL_PERIOD", 1, "SOLVER.CHECKPOINT_PERIOD", 1,
        "DATALOADER.NUM_WORKERS", 1, "OUTPUT_DIR", str(out_dir), *overrides])
    expand_config_paths(cfg)
    trainer = OccReIDTrainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    losses = [v for v, _ in trainer.storage.history("total_loss").values()]
    return trainer, results, losses


def tiny_osnet_cfg(path):
    """The FastReID config of ``path`` on a randomly initialised OSNet x0.25 (128-d), 4 classes, CPU:
    small enough to build, train a step and test every paper config on 2 cores."""
    import occreid.fastreid  # noqa: F401
    from fastreid.config import get_cfg
    cfg = get_cfg()
    cfg.merge_from_file(path)
    b = cfg.MODEL.BACKBONE
    b.NAME, b.DEPTH, b.FEAT_DIM, b.WITH_IBN, b.PRETRAIN = "build_osnet_backbone", "x0_25", 128, False, False
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.HEADS.NUM_CLASSES = 4
    return cfg


def build_cfg_and_model(path, opts=(), num_classes=4, resnet=False):
    """(cfg, model) of the config at ``path`` with trailing ``opts`` (KEY, VALUE, ...), random weights, CPU, seed 0.

    ``resnet=False``: on the tiny OSNet x0.25 of :func:`tiny_osnet_cfg`; ``resnet=True``: the backbone as written
    (ResNet-50 for the paper configs), only ``PRETRAIN``, ``NUM_CLASSES`` and the device changed."""
    import torch
    from fastreid.modeling import build_model
    if resnet:
        import occreid.fastreid  # noqa: F401
        from fastreid.config import get_cfg
        cfg = get_cfg()
        cfg.merge_from_file(path)
        cfg.MODEL.BACKBONE.PRETRAIN = False
        cfg.MODEL.HEADS.NUM_CLASSES = num_classes
        cfg.MODEL.DEVICE = "cpu"
    else:
        cfg = tiny_osnet_cfg(path)
    cfg.merge_from_list(list(opts))
    torch.manual_seed(0)
    return cfg, build_model(cfg)
