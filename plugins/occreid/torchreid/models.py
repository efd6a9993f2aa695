"""occreid's methods as TorchReID models: one FastReID meta-architecture (the same module, the same code as
through FastReID: no second copy of any method) behind TorchReID's model interface.

``import occreid.torchreid`` adds every name of :data:`MODELS` to TorchReID's model factory, so
``torchreid.models.build_model("ocnet_osnet_x0_25", num_classes=702, loss="softmax")`` builds OCNet from
``projects/OCNet/configs/occluded_duke_osnet_x0_25_cpu.yml`` (backbone, heads, losses, test distance).

Images: TorchReID's loaders give ImageNet-normalised tensors (``(x / 255 - mean) / std``, its default
``norm_mean`` / ``norm_std``); FastReID's models take raw 0-255 pixels and normalise them themselves with
``MODEL.PIXEL_MEAN`` / ``PIXEL_STD`` (the same ImageNet statistics x 255). :class:`FastReIDModel` undoes
TorchReID's normalisation with those statistics, so the network sees the same numbers through either
toolbox. (Keep TorchReID's default ``norm_mean`` / ``norm_std``.)
"""

from __future__ import annotations

import os
from typing import Optional

import torch
from torch import nn

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

#: TorchReID model name -> occreid FastReID config (relative to the repository root). One per method x backbone
#: that has a config; the dataset keys of the config do not matter to the model.
MODELS = {
    "bot_osnet_x0_25": "projects/BoT/configs/occluded_duke_osnet_x0_25_cpu.yml",
    "bot_resnet50": "projects/BoT/configs/occluded_duke_r50.yml",
    "ocnet_osnet_x0_25": "projects/OCNet/configs/occluded_duke_osnet_x0_25_cpu.yml",
    "ocnet_resnet50": "projects/OCNet/configs/occluded_duke_r50.yml",
    "ocnet_resnet50_ibn": "projects/OCNet/configs/occluded_duke_r50_ibn.yml",
    "sgr_osnet_x0_25": "projects/SGR/configs/occluded_duke_osnet_x0_25_cpu.yml",
    "sgr_resnet50": "projects/SGR/configs/occluded_duke_r50.yml",
    "pan_osnet_x0_25": "projects/PAN/configs/occluded_duke_osnet_x0_25_cpu.yml",
    "pan_osnet": "projects/PAN/configs/occluded_duke_osnet.yml",
    "pan_resnet50": "projects/PAN/configs/occluded_duke_r50.yml",
    "alignedreid_osnet_x0_25": "projects/AlignedReID/configs/occluded_duke_osnet_x0_25_cpu.yml",
    "alignedreid_resnet50": "projects/AlignedReID/configs/occluded_duke_r50.yml",
    "amdnet_osnet_x0_25": "projects/AMDNet/configs/occluded_duke_osnet_x0_25_cpu.yml",
    "amdnet_hrnet32": "projects/AMDNet/configs/occluded_duke_hrnet32.yml",
}

#: TorchReID's default normalisation (``ImageDataManager(norm_mean=..., norm_std=...)``), on 0-1 pixels
TORCHREID_MEAN = (0.485, 0.456, 0.406)
TORCHREID_STD = (0.229, 0.224, 0.225)


def load_config(config_file: str, opts=(), num_classes: Optional[int] = None, pretrained: bool = True,
                device: Optional[str] = None):
    """An occreid-extended FastReID config from ``config_file`` (a path, or relative to the repository root),
    ``opts`` (KEY, VALUE, ...) merged, environment variables in paths expanded.

    Raises:
        FileNotFoundError: no such config file (names it).
        KeyError: an unknown key in the file or ``opts``, or an unset ``$VAR`` in a path (names it).
    """
    import occreid.fastreid  # noqa: F401  occreid's keys and meta-architectures
    from fastreid.config import get_cfg
    from occreid.fastreid.config import expand_config_paths

    path = config_file if os.path.isfile(config_file) else os.path.join(REPO_ROOT, config_file)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"occreid config {config_file!r} not found (also tried {path})")
    cfg = get_cfg()
    cfg.merge_from_file(path)
    cfg.merge_from_list(list(opts))
    if num_classes is not None:
        cfg.MODEL.HEADS.NUM_CLASSES = int(num_classes)
    if not pretrained:
        cfg.MODEL.BACKBONE.PRETRAIN = False
    if device is not None:
        cfg.MODEL.DEVICE = device
    if not cfg.MODEL.BACKBONE.PRETRAIN:
        cfg.MODEL.BACKBONE.PRETRAIN_PATH = ""  # nothing to expand or load
    return expand_config_paths(cfg)


class FastReIDModel(nn.Module):
    """A FastReID meta-architecture with TorchReID's model interface.

    ``forward(x)`` with ``x`` (B, 3, H, W) ImageNet-normalised images (TorchReID's loaders):

    - eval mode: (B, D) features, the FastReID model's test feature (OCNet: [F_final, F_BB]; its own distance is
      applied by :class:`occreid.torchreid.engine.OccReIDEngine`, see :meth:`test_distance`);
    - train mode, ``forward(x, pids)``: the method's own loss dict (``{name: scalar tensor}``), the same losses as
      through FastReID (what :class:`~occreid.torchreid.engine.OccReIDEngine` optimises);
    - train mode, ``forward(x)`` (TorchReID's ``ImageSoftmaxEngine`` / ``ImageTripletEngine``): (B, num_classes)
      logits, or ``(logits, features)`` when ``self.loss == "triplet"``. Only for FastReID's ``Baseline``
      (BoT): occreid's methods have losses of their own (two or more classifiers, part losses) that those two
      engines cannot express, which raises ``NotImplementedError`` naming OccReIDEngine.

    Attributes:
        cfg: the (frozen) FastReID config.
        fastreid: the FastReID module; its ``state_dict`` is a FastReID checkpoint's ``model``
            (:mod:`occreid.torchreid.weights` converts both ways).
    """

    def __init__(self, cfg, loss: str = "softmax"):
        super().__init__()
        from fastreid.modeling import build_model
        self.cfg = cfg.clone()
        self.cfg.freeze()
        self.loss = loss
        self.fastreid = build_model(self.cfg)
        if self.meta_architecture == "AMDNet" and self.cfg.MODEL.AMD.PARSING_WEIGHT > 0:
            import warnings
            warnings.warn("AMD-Net through TorchReID trains without human-parsing labels (TorchReID's loaders have "
                          "none): Eq. 2 is off, the part maps learn from the re-ID losses only. Train through "
                          "FastReID (DATASETS.PARSING.ROOT) for Eq. 2.", UserWarning)
        mean = torch.tensor(TORCHREID_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(TORCHREID_STD).view(1, 3, 1, 1)
        self.register_buffer("tr_mean", mean, persistent=False)
        self.register_buffer("tr_std", std, persistent=False)

    @property
    def meta_architecture(self) -> str:
        return self.cfg.MODEL.META_ARCHITECTURE

    def to_fastreid_images(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) TorchReID-normalised -> raw 0-255 pixels (FastReID's input)."""
        return (x * self.tr_std.to(x) + self.tr_mean.to(x)) * 255.0

    def forward(self, x: torch.Tensor, pids: Optional[torch.Tensor] = None):
        images = self.to_fastreid_images(x)
        if not self.training:
            return self.fastreid({"images": images})
        if pids is not None:
            from fastreid.utils.events import _CURRENT_STORAGE_STACK, EventStorage
            if _CURRENT_STORAGE_STACK:
                return self.fastreid({"images": images, "targets": pids})
            with EventStorage():  # FastReID's losses log their accuracy into one
                return self.fastreid({"images": images, "targets": pids})
        if self.meta_architecture != "Baseline":
            raise NotImplementedError(
                f"{self.meta_architecture} trains with its own losses: use occreid.torchreid.OccReIDEngine "
                f"(scripts/torchreid_main.py --engine occreid), not TorchReID's softmax / triplet engine")
        fr = self.fastreid
        feats = fr.backbone((images - fr.pixel_mean) / fr.pixel_std)
        out = fr.heads(feats)
        logits = out["cls_outputs"]
        return (logits, out["features"]) if self.loss == "triplet" else logits

    def test_distance(self):
        """The method's own test distance ``(qf, gf) -> (q, g)`` (OCNet Eq. 4, AlignedReID, AMD-Net), or ``None``
        when it is ``TEST.METRIC`` of its features."""
        from occreid.fastreid.trainer import TEST_DISTANCES
        fn = TEST_DISTANCES.get(self.meta_architecture)
        return fn(self.cfg) if fn else None


def build_occreid_model(name: str, num_classes: int, loss: str = "softmax", pretrained: bool = True,
                        use_gpu: bool = True, opts=()) -> FastReIDModel:
    """TorchReID-style constructor of the occreid model ``name`` (a key of :data:`MODELS`).

    ``pretrained``: the config's starting weights (OSNet: ``MODEL.BACKBONE.PRETRAIN_PATH``, the MSMT17 checkpoint
    under ``$FASTREID_DATASETS``); ``use_gpu``: CUDA when available.

    Raises:
        KeyError: unknown ``name`` (lists the known ones).
    """
    if name not in MODELS:
        raise KeyError(f"unknown occreid model {name!r}; known: {sorted(MODELS)}")
    device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
    cfg = load_config(MODELS[name], opts, num_classes=num_classes, pretrained=pretrained, device=device)
    return FastReIDModel(cfg, loss=loss)


def _constructor(name):
    def build(num_classes, loss="softmax", pretrained=True, use_gpu=True, **kwargs):
        if kwargs:
            raise TypeError(f"{name}: unexpected arguments {sorted(kwargs)} (occreid models take num_classes, loss, "
                            f"pretrained, use_gpu; the rest is in {MODELS[name]})")
        return build_occreid_model(name, num_classes, loss=loss, pretrained=pretrained, use_gpu=use_gpu)
    build.__name__ = name
    build.__doc__ = f"occreid's {name} ({MODELS[name]}) as a TorchReID model (:class:`FastReIDModel`)."
    return build


def register_models(tr=None):
    """Add every :data:`MODELS` name to TorchReID's model factory (names already there are left alone)."""
    from .compat import model_factory, torchreid_modules
    factory = model_factory(tr or torchreid_modules())
    for name in MODELS:
        factory.setdefault(name, _constructor(name))
    return {name: factory[name] for name in MODELS}
