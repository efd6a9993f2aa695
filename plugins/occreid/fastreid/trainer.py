"""``OccReIDTrainer``: FastReID's ``DefaultTrainer`` with occreid's data handling.

Differences from ``DefaultTrainer`` (everything else, hooks, solver, checkpoints, is FastReID's):

- datasets are built here so that ``DATASETS.SUBSET.*`` (deterministic identity subsets) applies to
  any registered dataset, occreid's or FastReID's own;
- an image that cannot be read raises an error naming its file (:class:`ReIDImageDataset`);
- metrics are printed every ``SOLVER.LOG_PERIOD`` iterations (FastReID: every 200);
- evaluation uses :class:`~occreid.fastreid.evaluator.OccReIDEvaluator` (occreid's re-ranking);
- ``MODEL.WEIGHTS`` is checked against the model before loading: a checkpoint of another model is an
  error naming the file, not a silently half-initialised network (:func:`check_checkpoint_matches`);
- ``SEED`` >= 0 seeds python, numpy and torch before the data loader, sampler and model are built
  (:func:`seed_everything`), so two runs with one seed on the CPU give the same loss curve;
- ``SOLVER.BUDGET_IMAGES`` > 0 trains for a budget of images seen by the network instead of
  ``SOLVER.MAX_EPOCH`` epochs (:func:`budget_iterations`): the comparison protocol of
  ``benchmarks/compare.py``. The number of images seen, the training time and the images per second
  are kept in ``trainer.throughput`` and written to ``OUTPUT_DIR/occreid_run.json`` by train_net.py.
"""

import contextlib
import logging
import math
import os
import pickle
import time
import warnings

import torch
from fastreid.data import build_reid_test_loader, build_reid_train_loader
from fastreid.data.build import _root as _fastreid_root
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.samplers import NaiveIdentitySampler
from fastreid.data.transforms import build_transforms
from fastreid.engine import DefaultTrainer, hooks
from fastreid.utils import comm
from fastreid.utils.env import seed_all_rng

from occreid.data.common import ReIDSplits
from occreid.data.subset import subset_splits

from .evaluator import OccReIDEvaluator
from .image_dataset import CachedReIDImageDataset, ReIDImageDataset
from .resume import RNGStates, SeededIdentitySampler, SeededSampleStream
from .aligned import aligned_distance_from_cfg
from .amdnet import amd_distance_from_cfg
from .ocnet import ocnet_distance_from_cfg

#: meta-architectures whose network sees more images per step than the sampler gives (name -> cfg -> factor):
#: SGR's Compound Batch Erasing feeds [RE(X); BcE(X)], two copies of the sampled batch X.
IMAGES_PER_SAMPLE = {"SGR": lambda cfg: 2 if cfg.INPUT.CBE.ENABLED else 1,
                     # AlignedReID + OBC feeds [X; Occ(X)] (the clean and the occluded copy, Chakraborty et al. Sec. 4)
                     "AlignedReID": lambda cfg: 2 if cfg.MODEL.ALIGNED.OBC.ENABLED else 1}

#: meta-architectures whose test distance is not the plain metric of their features (name -> cfg -> fn)
TEST_DISTANCES = {"OCNet": ocnet_distance_from_cfg, "AlignedReID": aligned_distance_from_cfg,
                  "AMDNet": amd_distance_from_cfg}

logger = logging.getLogger(__name__)

#: Parameters a fine-tuning checkpoint may lack or have in another shape (the identity classifier):
#: FastReID's EmbeddingHead ``heads.weight`` and any module named ``*classifier`` / ``*classifiers`` (OCNet's
#: ``classifiers``, SGR's ``classifier`` and ``rp_classifier``).
CLASSIFIER_KEYS = ("heads.weight",)


class UnknownDatasetError(KeyError):
    """A dataset name that is not in FastReID's DATASET registry; ``str()`` is the message itself."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


class UnsafeCheckpointError(ValueError, pickle.UnpicklingError):
    """A checkpoint file that is not one, or that would need unpickling arbitrary objects (refused)."""


def is_classifier_key(key):
    """True for the identity-classifier parameters, whose size depends on the number of training ids."""
    parts = key.split(".")
    return key in CLASSIFIER_KEYS or any(p.endswith(("classifier", "classifiers")) for p in parts)


CHANNELS_LAST_MODES = ("auto", "on", "off")


def _cpu_lever(cfg, key: str) -> bool:
    """The value of an "auto" | "on" | "off" key (``"MODEL.CHANNELS_LAST"``, ``"TEST.FROZEN_BACKBONE"``): "auto" is on
    when ``MODEL.DEVICE`` is the CPU and off on CUDA (not measured there). Raises ValueError naming the key."""
    node, name = key.split(".")
    value = cfg[node][name]
    mode = str(value).lower()
    if mode not in CHANNELS_LAST_MODES:
        raise ValueError(f"{key} must be one of {CHANNELS_LAST_MODES}, got {value!r}")
    if mode == "auto":
        return not str(cfg.MODEL.DEVICE).startswith("cuda")
    return mode == "on"


def channels_last_enabled(cfg) -> bool:
    """``MODEL.CHANNELS_LAST``: "on", "off" or "auto" (on for the CPU, off on CUDA, where it was not measured).
    Raises ValueError naming the key for another value."""
    return _cpu_lever(cfg, "MODEL.CHANNELS_LAST")


def _channels_last_input(module, args):
    batch = args[0] if args else None
    if isinstance(batch, dict) and isinstance(batch.get("images"), torch.Tensor) and batch["images"].dim() == 4:
        batch = dict(batch, images=batch["images"].contiguous(memory_format=torch.channels_last))
        return (batch,) + tuple(args[1:])
    return None


def use_channels_last(model):
    """Give the meta-architecture its images (``batched_inputs["images"]``, (B, 3, H, W)) in channels-last memory
    format (NHWC strides, same shape and values): the normalisation keeps that layout and every convolution after
    it runs on oneDNN's NHWC kernels, 1.4-1.6x faster on the CPU for OSNet x0.25
    (benchmarks/results/throughput_cpu.md). The parameters keep their layout (FastReID's ``ContiguousParams``
    optimiser needs them contiguous); outputs equal the contiguous run's up to float rounding. The caller's dict
    is not modified. Returns the hook handle."""
    return unwrap_model(model).register_forward_pre_hook(_channels_last_input)


FROZEN_BACKBONE_MODES = CHANNELS_LAST_MODES


def frozen_backbone_enabled(cfg) -> bool:
    """``TEST.FROZEN_BACKBONE``: "on", "off" or "auto" (on for the CPU, off on CUDA). Raises ValueError naming the
    key for another value."""
    return _cpu_lever(cfg, "TEST.FROZEN_BACKBONE")


FROZEN_BACKBONE_ENGINES = ("auto", "onnxruntime", "torchscript")


def frozen_backbone_engine(cfg) -> str:
    """``TEST.FROZEN_BACKBONE_ENGINE``: "onnxruntime" or "torchscript" for the frozen evaluation backbone. "auto" is
    onnxruntime on the CPU when ``onnxruntime`` and ``onnx`` are installed (2-3x the TorchScript forward for OSNet
    x0.25 there, benchmarks/results/throughput_cpu.md), else torchscript. onnxruntime runs on the CPU only: on
    CUDA it is torchscript whatever the key says. Raises ValueError naming the key for another value."""
    value = str(cfg.TEST.get("FROZEN_BACKBONE_ENGINE", "auto")).lower()
    if value not in FROZEN_BACKBONE_ENGINES:
        raise ValueError(f"TEST.FROZEN_BACKBONE_ENGINE must be one of {FROZEN_BACKBONE_ENGINES}, "
                         f"got {cfg.TEST.FROZEN_BACKBONE_ENGINE!r}")
    if str(cfg.MODEL.DEVICE).startswith("cuda"):
        return "torchscript"
    if value == "auto":
        import importlib.util
        have = all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))
        return "onnxruntime" if have else "torchscript"
    return value


class OnnxRuntimeBackbone(torch.nn.Module):
    """A backbone exported to ONNX (in memory, TorchScript exporter, opset 18, dynamic batch) and run by
    onnxruntime's CPU execution provider with ``threads`` intra-op threads: input (B, 3, H, W) float32 on the
    CPU (any memory format), output the backbone's tensor(s), float32 CPU, the same up to float rounding (max
    |difference| about 1e-5 for OSNet x0.25, tests/test_throughput.py). Inference only (no autograd).

    Raises:
        TypeError: the backbone's output is not a tensor or a tuple of tensors (``frozen_backbone`` then falls back
            to TorchScript).
    """

    def __init__(self, backbone: torch.nn.Module, example: torch.Tensor, threads: int):
        super().__init__()
        import io
        import onnxruntime as ort
        with torch.no_grad():
            out = backbone(example)
        if isinstance(out, torch.Tensor):
            self.n_out, self.single = 1, True
        elif isinstance(out, (tuple, list)) and all(isinstance(o, torch.Tensor) for o in out):
            self.n_out, self.single = len(out), False
        else:
            raise TypeError(f"output of type {type(out).__name__}, not a tensor or a tuple of tensors")
        names = [f"out{i}" for i in range(self.n_out)]
        buf = io.BytesIO()
        with torch.no_grad():
            torch.onnx.export(backbone, (example.contiguous(),), buf, input_names=["images"], output_names=names,
                              dynamic_axes={"images": {0: "batch"}, **{n: {0: "batch"} for n in names}},
                              opset_version=18, dynamo=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, int(threads))
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])

    def forward(self, images: torch.Tensor):
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        out = [torch.from_numpy(o) for o in self.session.run(None, {"images": x})]
        return out[0] if self.single else tuple(out)


@contextlib.contextmanager
def frozen_backbone(model, size, channels_last=True, engine: str = "torchscript"):
    """Evaluate with ``model.backbone`` replaced by a frozen inference copy of it in eval mode, made from the current
    weights, and put the original backbone back (with its training mode) on exit; training goes on with its own
    modules. ``size`` is (H, W) of the test images. ``engine``:

    - "torchscript": a TorchScript trace, frozen (BatchNorm folded into the convolutions, weights as constants) and
      optimised for inference (``torch.jit.freeze``, ``torch.jit.optimize_for_inference``): about 1.3-1.4x the
      channels-last forward of OSNet x0.25 on the CPU;
    - "onnxruntime": :class:`OnnxRuntimeBackbone` (CPU only): 2-3x the TorchScript trace there.

    Both give the same features up to float rounding (tests/test_throughput.py) and are made anew at every
    evaluation (a few seconds). A backbone that cannot be exported falls back to TorchScript, one that cannot be
    traced is evaluated as it is, each with a warning. Raises ValueError for an unknown ``engine``."""
    if engine not in ("torchscript", "onnxruntime"):
        raise ValueError(f"frozen_backbone: engine must be 'torchscript' or 'onnxruntime', got {engine!r}")
    inner = unwrap_model(model)
    backbone = getattr(inner, "backbone", None)
    if backbone is None:
        yield model
        return
    was_training = backbone.training
    backbone.eval()
    device = next(backbone.parameters()).device
    example = torch.randn(2, 3, *size, device=device)
    frozen = None
    if engine == "onnxruntime" and device.type == "cpu":
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                frozen = OnnxRuntimeBackbone(backbone, example, torch.get_num_threads())
        except Exception as e:  # noqa: BLE001 - any export failure: TorchScript instead
            logger.warning(f"TEST.FROZEN_BACKBONE_ENGINE onnxruntime: the backbone {type(backbone).__name__} could "
                           f"not be exported ({type(e).__name__}: {e}); using torchscript")
    if frozen is None:
        try:
            if channels_last:
                example = example.contiguous(memory_format=torch.channels_last)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(backbone, example)))
        except Exception as e:  # noqa: BLE001 - any tracing failure: evaluate the backbone as it is
            logger.warning(f"TEST.FROZEN_BACKBONE: the backbone {type(backbone).__name__} could not be traced "
                           f"({e}); evaluating it unfrozen")
            backbone.train(was_training)
            yield model
            return
    inner.backbone = frozen
    try:
        yield model
    finally:
        inner.backbone = backbone
        backbone.train(was_training)


TEST_INTERPOLATIONS = ("bicubic", "bilinear")


def build_test_transforms(cfg):
    """FastReID's test transforms (``build_transforms(cfg, is_train=False)``: resize to ``INPUT.SIZE_TEST``, to
    tensor) with the resize's interpolation from ``INPUT.TEST_INTERPOLATION``: "bicubic" (FastReID's) or "bilinear"
    (TorchReID's, for TorchReID-trained weights such as the model-zoo OSNet). Raises ValueError naming the key."""
    from torchvision.transforms import InterpolationMode, Resize
    mode = str(cfg.INPUT.TEST_INTERPOLATION).lower()
    if mode not in TEST_INTERPOLATIONS:
        raise ValueError(f"INPUT.TEST_INTERPOLATION must be one of {TEST_INTERPOLATIONS}, got "
                         f"{cfg.INPUT.TEST_INTERPOLATION!r}")
    tf = build_transforms(cfg, is_train=False)
    for t in tf.transforms:
        if isinstance(t, Resize):
            t.interpolation = InterpolationMode.BILINEAR if mode == "bilinear" else InterpolationMode.BICUBIC
    return tf


def datasets_root():
    """The datasets root: ``$FASTREID_DATASETS`` now, else what FastReID read at import, else ``datasets``."""
    return os.getenv("FASTREID_DATASETS", _fastreid_root)


def unwrap_model(model):
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper (``model`` itself otherwise)."""
    return model.module if isinstance(model, (torch.nn.parallel.DistributedDataParallel,
                                              torch.nn.DataParallel)) else model


def read_state_dict(path):
    """``(state_dict with FastReID key names, format)`` of a checkpoint file, loaded with ``weights_only=True``.

    Reads FastReID's checkpoints (``{"model": ...}``, ``format == "fastreid"``), TorchReID's
    (``{"state_dict": ...}`` from ``torchreid.utils.save_checkpoint``, keys of an occreid TorchReID model prefixed
    ``fastreid.``, stripped; ``format == "torchreid"``) and bare state dicts (``"state_dict"``); ``module.`` is
    stripped.

    Raises:
        FileNotFoundError: no file at ``path``.
        UnsafeCheckpointError: the file is not a checkpoint, or holds pickled objects other than tensors and
            plain containers (never unpickled).
        ValueError: the file is not a PyTorch checkpoint or holds no state dict (names the file).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    from fastreid.utils.checkpoint import _checkpoint_safe_globals  # added by our fastreid patch 0003
    try:
        with torch.serialization.safe_globals(_checkpoint_safe_globals()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message advises weights_only=False, the unsafe load: never repeat it
        if "Unsupported global" in str(e) or "not an allowed global" in str(e):
            raise UnsafeCheckpointError(
                f"checkpoint {path} holds Python objects other than tensors and plain containers; occreid never "
                f"unpickles such objects (they can run code). Save the weights as a state dict "
                f"(torch.save({{'model': model.state_dict()}}, path))") from None
        raise UnsafeCheckpointError(f"{path} is not a PyTorch checkpoint (it does not unpickle as one)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a PyTorch checkpoint ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:160] if str(e) else 'unreadable'})") from None
    fmt, state = "state_dict", ckpt
    if isinstance(ckpt, dict):
        for key, name in (("model", "fastreid"), ("state_dict", "torchreid")):
            if isinstance(ckpt.get(key), dict):
                fmt, state = name, ckpt[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) for k in state):
        raise ValueError(f"checkpoint {path} holds no model state dict (FastReID's 'model' or TorchReID's "
                         f"'state_dict')")
    prefixes = ("module.",) if fmt == "fastreid" else ("module.", "fastreid.")
    out = {}
    for k, v in state.items():
        for prefix in prefixes:
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out, fmt


def check_checkpoint_matches(model, path):
    """Raise ``ValueError`` if the checkpoint at ``path`` was not made for ``model``.

    Loads with ``torch.load(weights_only=True)`` (no pickled code runs); FastReID and TorchReID checkpoints
    (:func:`read_state_dict`). A checkpoint matches when every parameter / buffer of the model is present with
    the same shape, except the identity classifier (:func:`is_classifier_key`), which may differ when
    fine-tuning on another dataset.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file holds no model state dict, or keys / shapes do not match.
    """
    state, _ = read_state_dict(path)
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
    """Load the checkpoint at ``path`` into ``model`` after :func:`check_checkpoint_matches`.

    FastReID checkpoints load through FastReID's ``Checkpointer``; TorchReID checkpoints of occreid models
    (``scripts/torchreid_main.py``) load their tensors directly (the classifier only where its shape matches)."""
    from fastreid.utils.checkpoint import Checkpointer
    check_checkpoint_matches(model, path)
    state, fmt = read_state_dict(path)
    if fmt == "fastreid":
        Checkpointer(model).load(path)
    else:
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)},
                              strict=False)
        logger.info(f"Loaded the {fmt} checkpoint {path} ({len(own)} tensors checked)")
    return model


#: key prefix of an occreid model in a TorchReID checkpoint (:class:`occreid.torchreid.models.FastReIDModel` keeps
#: the FastReID meta-architecture as its ``fastreid`` attribute); :func:`read_state_dict` strips it
TORCHREID_KEY_PREFIX = "fastreid."


def convert_checkpoint(src: str, dst: str, to: str = "fastreid"):
    """Convert a checkpoint file: ``to="fastreid"`` writes ``{"model": ...}`` (FastReID keys), ``to="torchreid"``
    writes ``{"state_dict": ...}`` with ``fastreid.``-prefixed keys (``torchreid.utils.load_pretrained_weights``
    and ``FastReIDModel.load_state_dict`` read it). ``src`` is read by :func:`read_state_dict` (either format).
    Needs no TorchReID: ``occreid convert-checkpoint`` runs it; :func:`occreid.torchreid.weights.convert_checkpoint`
    calls it.

    Raises:
        ValueError: unknown ``to``, or ``src`` holds no state dict.
    """
    state = read_state_dict(src)[0]
    if to == "fastreid":
        out = {"model": state}
    elif to == "torchreid":
        out = {"state_dict": {TORCHREID_KEY_PREFIX + k: v for k, v in state.items()}}
    else:
        raise ValueError(f"to must be 'fastreid' or 'torchreid', got {to!r}")
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    torch.save(out, dst)
    return dst


def occluded_splits(cfg, dataset_name, query, gallery):
    """``DATASETS.OCCLUSION``: the query (and / or gallery) images replaced by occluded copies made by
    :class:`occreid.data.occlusion.OcclusionSimulator` (Chakraborty et al., Algorithm 1), deterministic from
    ``SEED`` and cached under ``CACHE_DIR`` (default ``~/.cache/occreid/occluded``). Returns (query, gallery)."""
    occ = cfg.DATASETS.OCCLUSION
    if not occ.ENABLED or occ.AREA <= 0:
        return query, gallery
    from occreid.data.occlusion import OcclusionSimulator, occlude_split
    bad = set(occ.SPLITS) - {"query", "gallery"}
    if bad:
        raise ValueError(f"DATASETS.OCCLUSION.SPLITS: unknown split(s) {sorted(bad)} (query, gallery)")
    sim = OcclusionSimulator(float(occ.AREA), occ.FILL, seed=occ.SEED)
    root = os.path.expanduser(occ.CACHE_DIR or "~/.cache/occreid/occluded")
    out = {"query": query, "gallery": gallery}
    for split in occ.SPLITS:
        folder = os.path.join(root, f"{dataset_name}_{split}_area{occ.AREA:g}_{occ.FILL}_seed{occ.SEED}")
        out[split] = occlude_split(out[split], sim, folder, desc=f"occluding {dataset_name} {split}")
        logger.info(f"{dataset_name}: {split} occluded ({occ.FILL} patch, {occ.AREA:.0%} of the image, seed "
                    f"{occ.SEED}), cached in {folder}")
    return out["query"], out["gallery"]


def seed_everything(seed: int) -> bool:
    """Seed python's ``random``, numpy and torch with ``seed`` (the ``SEED`` key) when it is >= 0.

    FastReID's ``default_setup`` draws a random seed; this runs after it. Data loader workers get
    deterministic seeds from torch's generator (PyTorch seeds python, numpy and torch in each worker
    from it) and FastReID's P x K samplers draw their seed from numpy, so both follow. On the CPU two
    runs with one seed give the same loss curve (tests/test_protocol.py); on a GPU cuDNN's
    autotuner is switched off and its deterministic algorithms are asked for.
    Returns True when it seeded, False for a negative seed (random, FastReID's behaviour).
    """
    if seed is None or seed < 0:
        return False
    seed_all_rng(int(seed))
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    return True


def images_per_step(cfg) -> int:
    """Images the network sees per training step: ``SOLVER.IMS_PER_BATCH`` times the meta-architecture's
    factor (:data:`IMAGES_PER_SAMPLE`; 2 for SGR with Compound Batch Erasing)."""
    factor = IMAGES_PER_SAMPLE.get(cfg.MODEL.META_ARCHITECTURE, lambda c: 1)(cfg)
    return cfg.SOLVER.IMS_PER_BATCH * factor


def budget_iterations(cfg) -> int:
    """Training steps for ``SOLVER.BUDGET_IMAGES`` images seen by the network (floor of budget / images per
    step). Raises ValueError when the budget is smaller than one step."""
    per_step = images_per_step(cfg)
    iters = cfg.SOLVER.BUDGET_IMAGES // per_step
    if iters < 1:
        raise ValueError(f"SOLVER.BUDGET_IMAGES {cfg.SOLVER.BUDGET_IMAGES} is less than one step "
                         f"({per_step} images per step)")
    return iters


def _budget_config(cfg):
    """The config a budget run trains with: one "epoch" of :func:`budget_iterations` steps, and warm-up /
    freeze iterations scaled so that they cover the same number of images as with ``IMS_PER_BATCH``
    images per step (a method that doubles the batch the network sees gets half the steps, and half the
    warm-up steps). The learning-rate milestones (``SOLVER.STEPS``, in epochs) refer to that one epoch."""
    cfg = cfg.clone()
    cfg.defrost()
    factor = images_per_step(cfg) // cfg.SOLVER.IMS_PER_BATCH
    if factor > 1:
        cfg.SOLVER.WARMUP_ITERS = int(math.ceil(cfg.SOLVER.WARMUP_ITERS / factor))
        cfg.SOLVER.FREEZE_ITERS = int(math.ceil(cfg.SOLVER.FREEZE_ITERS / factor))
    cfg.SOLVER.MAX_EPOCH = 1
    cfg.freeze()
    return cfg


class ThroughputHook(hooks.HookBase):
    """Counts the images the network saw and the seconds spent in training steps (data loading and
    the optimiser step included, evaluation excluded)."""

    def __init__(self, per_step):
        self.per_step = per_step
        self.images_seen = 0
        self.train_seconds = 0.0
        self._t = None

    def before_step(self):
        self._t = time.perf_counter()

    def after_step(self):
        self.train_seconds += time.perf_counter() - self._t
        self.images_seen += self.per_step

    def summary(self):
        return {"images_seen": self.images_seen, "train_seconds": round(self.train_seconds, 2),
                "images_per_second": round(self.images_seen / self.train_seconds, 2) if self.train_seconds else None}


class OccReIDTrainer(DefaultTrainer):
    """FastReID ``DefaultTrainer`` with identity subsets, path-naming image errors, checkpoint checks,
    ``SEED`` and ``SOLVER.BUDGET_IMAGES``."""

    def __init__(self, cfg):
        if seed_everything(cfg.SEED):
            logger.info(f"Seeded python, numpy and torch with SEED {cfg.SEED}")
        else:
            logger.info("SEED < 0: random seed (FastReID's behaviour); set SEED to repeat a run")
        self.budget_iters = budget_iterations(cfg) if cfg.SOLVER.BUDGET_IMAGES > 0 else 0
        if self.budget_iters:
            cfg = _budget_config(cfg)
        super().__init__(cfg)
        # the main process's python / numpy / torch generators go into every checkpoint (exact --resume)
        self.checkpointer.checkpointables["rng"] = RNGStates()
        if self.budget_iters:
            self.iters_per_epoch = self.budget_iters
            self.max_epoch = 1
            self.max_iter = self.budget_iters
            logger.info(f"Budget: {cfg.SOLVER.BUDGET_IMAGES} images seen by the network = "
                        f"{self.budget_iters} steps of {images_per_step(cfg)} images "
                        f"(warm-up {cfg.SOLVER.WARMUP_ITERS} steps, freeze {cfg.SOLVER.FREEZE_ITERS} steps)")

    @classmethod
    def build_model(cls, cfg):
        """FastReID's ``build_model``, with channels-last input to the backbone when ``MODEL.CHANNELS_LAST``
        says so (:func:`use_channels_last`)."""
        model = super().build_model(cfg)
        if channels_last_enabled(cfg):
            use_channels_last(model)
            logger.info("MODEL.CHANNELS_LAST: the backbone runs on channels-last (NHWC) input")
        return model

    def build_writers(self):
        """FastReID's writers; with ``SOLVER.BUDGET_IMAGES`` the console printer counts the budget's steps (FastReID
        builds it from the dataset's epoch before the budget is known, which printed a negative ETA)."""
        from fastreid.utils.events import CommonMetricPrinter
        writers = super().build_writers()
        if getattr(self, "budget_iters", 0):
            writers = [CommonMetricPrinter(self.budget_iters) if isinstance(w, CommonMetricPrinter) else w
                       for w in writers]
        return writers

    @classmethod
    def build_lr_scheduler(cls, cfg, optimizer, iters_per_epoch):
        if cfg.SOLVER.BUDGET_IMAGES > 0:
            iters_per_epoch = budget_iterations(cfg)
        return super().build_lr_scheduler(cfg, optimizer, iters_per_epoch)

    @property
    def throughput(self):
        """``{"images_seen", "train_seconds", "images_per_second"}`` of this trainer's training steps."""
        return self._throughput.summary()

    @classmethod
    def _load_dataset(cls, cfg, name):
        """The dataset ``name`` of FastReID's DATASET registry under :func:`datasets_root`.

        Raises:
            KeyError: no dataset of that name (lists the registered names)."""
        if name not in DATASET_REGISTRY._obj_map:
            raise UnknownDatasetError(
                f"no dataset named {name!r} (DATASETS.NAMES / DATASETS.TESTS / --dataset); registered: "
                f"{', '.join(sorted(DATASET_REGISTRY._obj_map))}")
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
        if cfg.MODEL.META_ARCHITECTURE == "AMDNet":
            train_set = cls._parsing_train_set(cfg, items)
        else:
            train_set = ReIDImageDataset(items, build_transforms(cfg, is_train=True), relabel=True)
        loader = build_reid_train_loader(cfg, train_set=train_set)
        if cfg.SEED >= 0:  # private sampler generator, numbered samples: per-sample seeds, exact resume (resume.py)
            sampler = loader.batch_sampler.sampler
            if isinstance(sampler, NaiveIdentitySampler):
                sampler = SeededIdentitySampler(sampler)
            loader.batch_sampler.sampler = SeededSampleStream(sampler, cfg.SEED, comm.get_rank())
        return loader

    @classmethod
    def _parsing_train_set(cls, cfg, items):
        """AMD-Net's training set: images with their parsing labels (``DATASETS.PARSING.ROOT``); logs the coverage."""
        from occreid.data.parsing import ParsingLabels
        from .parsing_data import ParsingReIDDataset
        root = cfg.DATASETS.PARSING.ROOT
        if root and not os.path.isdir(root):
            raise FileNotFoundError(f"DATASETS.PARSING.ROOT {root!r} is not a directory (generate labels with "
                                    f"`occreid parse`, projects/AMDNet/README.md)")
        labels = ParsingLabels(root, datasets_root()) if root else None
        train_set = ParsingReIDDataset(items, cfg, labels, relabel=True)
        n, total = train_set.coverage()
        logger.info(f"AMD-Net parsing labels: {n} / {total} training images labelled ({100 * n / max(total, 1):.1f} %)"
                    f" from {root or '(none: DATASETS.PARSING.ROOT empty)'}")
        return train_set

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
        query, gallery = occluded_splits(cfg, dataset_name, query, gallery)
        if cfg.DATALOADER.CACHE_DIR:
            test_set = CachedReIDImageDataset(query + gallery, build_test_transforms(cfg), cfg.DATALOADER.CACHE_DIR)
        else:
            test_set = ReIDImageDataset(query + gallery, build_test_transforms(cfg), relabel=False)
        return build_reid_test_loader(test_set=test_set, test_batch_size=cfg.TEST.IMS_PER_BATCH,
                                      num_query=len(query), num_workers=cfg.DATALOADER.NUM_WORKERS)

    def build_hooks(self):
        ret = super().build_hooks()
        self._throughput = ThroughputHook(images_per_step(self.cfg))
        ret.insert(0, self._throughput)
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
        """FastReID's ``resume_or_load`` after checking ``MODEL.WEIGHTS`` against the model; on a resume with
        ``SEED`` >= 0 the sample stream continues after the samples already trained on (exact resume,
        :mod:`occreid.fastreid.resume`)."""
        weights = self.cfg.MODEL.WEIGHTS
        model = unwrap_model(self.model)
        if weights and not (resume and self.checkpointer.has_checkpoint()):
            check_checkpoint_matches(model, weights)
            if read_state_dict(weights)[1] != "fastreid":  # a TorchReID checkpoint: FastReID's Checkpointer needs 'model'
                load_checked_weights(model, weights)
                return None
        out = super().resume_or_load(resume=resume)
        stream = getattr(self.data_loader.batch_sampler, "sampler", None)
        if self.start_epoch > 0 and isinstance(stream, SeededSampleStream):
            done = self.start_epoch * self.iters_per_epoch * self.data_loader.batch_sampler.batch_size
            stream.skip_to(done)
            rng = RNGStates()
            restored = rng.state_dict()  # a new loader iterator draws its worker seed: keep the restored state
            self.data_loader.shutdown()
            self._trainer._data_loader_iter = iter(self.data_loader)
            rng.load_state_dict(restored)
            logger.info(f"Resumed at epoch {self.start_epoch}: the sample stream continues at sample {done} of "
                        f"rank {comm.get_rank()}; RNG states restored from the checkpoint")
        elif self.start_epoch > 0:
            logger.warning("Resumed with SEED < 0: batches and augmentations after the resume are not those of an "
                           "uninterrupted run (set SEED for an exact resume)")
        return out

    @classmethod
    def test(cls, cfg, model):
        """FastReID's ``test``, with two additions: under torch.distributed every rank evaluates with rank 0's
        buffers (BatchNorm statistics are not synchronised in training, ``broadcast_buffers=False``), and the
        python / numpy / torch generators are restored afterwards, so an evaluation during training does not
        change what the training draws next."""
        if comm.get_world_size() > 1:
            import torch.distributed as dist
            for buf in unwrap_model(model).buffers():
                dist.broadcast(buf, src=0)
        rng = RNGStates()
        state = rng.state_dict()
        frozen = frozen_backbone(model, tuple(cfg.INPUT.SIZE_TEST), channels_last_enabled(cfg),
                                 frozen_backbone_engine(cfg)) \
            if frozen_backbone_enabled(cfg) else contextlib.nullcontext(model)
        try:
            with frozen:
                return super().test(cfg, model)
        finally:
            rng.load_state_dict(state)
