"""occreid's config keys for FastReID, added by :func:`add_occreid_config`.

Keys (yacs: an unknown key in a YAML file or on the command line fails loudly):

``DATASETS.SUBSET.TRAIN_IDS`` (int, 0 = all)
    keep this many training identities (deterministic, see :func:`occreid.data.select_identities`).
``DATASETS.SUBSET.TEST_IDS`` (int, 0 = all)
    keep this many query identities, their query images and their gallery images.
``DATASETS.SUBSET.MODE`` (``"first"`` | ``"random"``), ``DATASETS.SUBSET.SEED`` (int)
    how identities are chosen.

``DATASETS.OCCLUSION.{ENABLED, SPLITS, AREA, FILL, SEED, CACHE_DIR}``
    evaluate on occluded copies of the test splits (default: the query only, as "Occluded Market-1501" of
    Chakraborty et al.): a patch of ``AREA`` (fraction of the image; 0.305 = 50 x 50 of 128 x 64) filled with
    ``FILL`` (mean | black | noise), deterministic from ``SEED``, cached in ``CACHE_DIR``
    (``~/.cache/occreid/occluded``). Works for every registered dataset and every model.
``TEST.RERANK.MODE`` (``"fastreid"`` | ``"zhong"``), ``TEST.RERANK.SEARCH`` (``"exact"`` | ``"faiss"`` |
``"ivf"`` | ``"hnsw"``)
    with FastReID's ``TEST.RERANK.ENABLED/K1/K2/LAMBDA``: occreid's scalable re-ranking
    (:func:`occreid.evaluation.rerank.re_ranking`); ``fastreid`` reproduces FastReID's own numbers.

``MODEL.OCNET.*``
    OCNet's keys (:func:`occreid.fastreid.ocnet.add_ocnet_config`).
``MODEL.ALIGNED.*``
    AlignedReID + OBC's keys (:func:`occreid.fastreid.aligned.add_aligned_config`).
``MODEL.PAN.*``
    PAN's keys (:func:`occreid.fastreid.pan.add_pan_config`).
``MODEL.SGR.*``, ``INPUT.CBE.*``
    SGR's keys (:func:`occreid.fastreid.sgr.add_sgr_config`).
``MODEL.CHANNELS_LAST`` (``"auto"`` | ``"on"`` | ``"off"``)
    feed the backbone channels-last (NHWC) input (:func:`occreid.fastreid.trainer.use_channels_last`); "auto" is
    on for the CPU (1.5-2x there, benchmarks/results/throughput_cpu.md) and off on CUDA (not measured there).
``DATALOADER.CACHE_DIR`` (str, "" = off)
    evaluate from a decoded-image cache in this folder (:class:`occreid.data.image_cache.DecodedImageCache`:
    query and gallery decoded and resized once, uint8, memory-mapped; about 2 GB for Occluded-Duke at 256 x 128).
``INPUT.TEST_INTERPOLATION`` (``"bicubic"`` | ``"bilinear"``)
    the test resize's interpolation (:func:`occreid.fastreid.trainer.build_test_transforms`): FastReID's bicubic, or
    TorchReID's bilinear for weights trained with TorchReID (the zoo configs).
``TEST.FROZEN_BACKBONE`` (``"auto"`` | ``"on"`` | ``"off"``)
    evaluate with the backbone traced, frozen and optimised for inference by TorchScript
    (:func:`occreid.fastreid.trainer.frozen_backbone`); "auto" is on for the CPU and off on CUDA.
``TEST.FROZEN_BACKBONE_ENGINE`` (``"auto"`` | ``"onnxruntime"`` | ``"torchscript"``)
    what runs the frozen backbone (:func:`occreid.fastreid.trainer.frozen_backbone_engine`): "auto" is onnxruntime
    on the CPU when it is installed (2-3x TorchScript there), else TorchScript; always TorchScript on CUDA.
``SEED`` (int, -1)
    seed of python, numpy and torch (data order, augmentation, initialisation); -1 = a random seed
    (FastReID's behaviour). Applied by :class:`occreid.fastreid.OccReIDTrainer` and train_net.py.
``SOLVER.BUDGET_IMAGES`` (int, 0 = off)
    train for this many images seen by the network instead of ``SOLVER.MAX_EPOCH`` epochs
    (:func:`occreid.fastreid.trainer.budget_iterations`; SGR with CBE sees 2 images per sampled one).
``SOLVER.LOG_PERIOD`` (int, 20)
    iterations between metric lines in the log (FastReID's trainer prints every 200).

The subset keys are applied by :class:`occreid.fastreid.OccReIDTrainer` (the trainer of this
project's ``train_net.py``); FastReID's plain ``DefaultTrainer`` does not read them.
"""

from fastreid.config import CfgNode as CN


def add_occreid_config(cfg):
    """Add occreid's keys, with their defaults, to a FastReID config, in place, and return it.

    Idempotent: keys already present keep their values. Works on a frozen config too.
    """
    frozen = cfg.is_frozen()
    cfg.defrost()
    if "SUBSET" not in cfg.DATASETS:
        cfg.DATASETS.SUBSET = CN()
    sub = cfg.DATASETS.SUBSET
    for key, value in (("TRAIN_IDS", 0), ("TEST_IDS", 0), ("MODE", "first"), ("SEED", 0)):
        if key not in sub:
            sub[key] = value
    if "OCCLUSION" not in cfg.DATASETS:
        cfg.DATASETS.OCCLUSION = CN({"ENABLED": False, "SPLITS": ["query"], "AREA": 0.305, "FILL": "mean",
                                     "SEED": 0, "CACHE_DIR": ""})
    if "LOG_PERIOD" not in cfg.SOLVER:
        cfg.SOLVER.LOG_PERIOD = 20
    if "BUDGET_IMAGES" not in cfg.SOLVER:
        cfg.SOLVER.BUDGET_IMAGES = 0
    if "CHANNELS_LAST" not in cfg.MODEL:
        cfg.MODEL.CHANNELS_LAST = "auto"
    if "CACHE_DIR" not in cfg.DATALOADER:
        cfg.DATALOADER.CACHE_DIR = ""
    if "TEST_INTERPOLATION" not in cfg.INPUT:
        cfg.INPUT.TEST_INTERPOLATION = "bicubic"
    if "FROZEN_BACKBONE" not in cfg.TEST:
        cfg.TEST.FROZEN_BACKBONE = "auto"
    if "FROZEN_BACKBONE_ENGINE" not in cfg.TEST:
        cfg.TEST.FROZEN_BACKBONE_ENGINE = "auto"
    if "SEED" not in cfg:
        cfg.SEED = -1
    for key, value in (("MODE", "fastreid"), ("SEARCH", "exact")):
        if key not in cfg.TEST.RERANK:
            cfg.TEST.RERANK[key] = value
    from .ocnet import add_ocnet_config
    from .aligned import add_aligned_config
    from .pan import add_pan_config
    from .sgr import add_sgr_config
    from .amdnet import add_amd_config
    add_ocnet_config(cfg)
    add_pan_config(cfg)
    add_aligned_config(cfg)
    add_sgr_config(cfg)
    add_amd_config(cfg)
    if frozen:
        cfg.freeze()
    return cfg


#: Path-valued keys in which ``$VAR`` / ``${VAR}`` (e.g. ``${FASTREID_DATASETS}``) and ``~`` are expanded.
PATH_KEYS = (("MODEL", "BACKBONE", "PRETRAIN_PATH"), ("MODEL", "WEIGHTS"), ("OUTPUT_DIR",), ("DATASETS", "PARSING", "ROOT"))


def expand_config_paths(cfg):
    """Expand environment variables and ``~`` in ``PATH_KEYS`` of ``cfg`` (in place; returns ``cfg``).

    Raises:
        KeyError: a ``$VAR`` in one of these keys is not set in the environment (names key and variable).
    """
    import os
    import re

    frozen = cfg.is_frozen()
    cfg.defrost()
    for keys in PATH_KEYS:
        node = cfg
        for k in keys[:-1]:
            node = node[k]
        value = node[keys[-1]]
        if not value:
            continue
        expanded = os.path.expanduser(os.path.expandvars(value))
        unset = re.findall(r"\$\{?(\w+)", expanded)
        if unset:
            raise KeyError(f"{'.'.join(keys)} = {value!r}: environment variable {unset[0]} is not set")
        node[keys[-1]] = expanded
    if frozen:
        cfg.freeze()
    return cfg
