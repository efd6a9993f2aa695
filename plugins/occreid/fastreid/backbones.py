"""Backbones occreid adds to FastReID's ``BACKBONE_REGISTRY``.

``build_timm_hrnet_backbone``: HRNet (Wang et al.) from timm, the backbone of AMD-Net (HRNet-W32). Its four
resolution branches (stride 4, 8, 16, 32; 32 + 64 + 128 + 256 channels for W32) are upsampled bilinearly to
the stride-4 size and concatenated, as BPBreID (on which AMD-Net's code builds) does: 480 channels, a 96 x 32
map at 384 x 128. Config: ``MODEL.BACKBONE.DEPTH`` ("w18", "w32", "w48", ... : timm's ``hrnet_<depth>``),
``FEAT_DIM`` (must equal the concatenated width: ValueError otherwise), ``PRETRAIN`` / ``PRETRAIN_PATH`` (a
timm state dict, loaded with ``weights_only=True``; no ImageNet weights ship with occreid).

``build_torchreid_osnet_backbone``: a TorchReID OSNet *with its fc layer* (TorchReID model-zoo checkpoints, e.g. the
MSMT17 OSNet x0.25 of ../shared/data), as a FastReID backbone. FastReID's own ``build_osnet_backbone`` drops the
fc and gives the last map's C channels (128 for x0.25); TorchReID's test feature is fc(global average pool(map)),
512-d. This backbone returns that vector as a (B, 512, 1, 1) map, so FastReID's head (any pooling of a 1 x 1 map
is the identity; ``NECK_FEAT: before``) gives exactly TorchReID's feature. Config: ``MODEL.BACKBONE.DEPTH`` (x1_0,
x0_75, x0_5, x0_25: TorchReID's ``osnet_<depth>``), ``FEAT_DIM`` 512, ``PRETRAIN_PATH`` (the zoo file, loaded
with ``weights_only=True``; its classifier is dropped). Example: ``projects/BoT/configs/torchreid_zoo_osnet_x0_25.yml``.
"""

import logging

import torch
import torch.nn.functional as F
from torch import nn

from fastreid.modeling.backbones import BACKBONE_REGISTRY

logger = logging.getLogger(__name__)


class TimmHRNet(nn.Module):
    """timm HRNet -> (B, sum of branch widths, H / 4, W / 4)."""

    def __init__(self, depth: str = "w32"):
        super().__init__()
        import timm
        self.body = timm.create_model(f"hrnet_{depth}", pretrained=False, features_only=True, feature_location="",
                                      out_indices=(1, 2, 3, 4))
        self.out_channels = sum(self.body.feature_info.channels())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.body(x)
        size = feats[0].shape[-2:]
        return torch.cat([feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False)
                                       for f in feats[1:]], dim=1)


def _pretrain_path(cfg, what: str) -> str:
    """``MODEL.BACKBONE.PRETRAIN_PATH``, or FileNotFoundError saying it is empty and what it should be."""
    path = cfg.MODEL.BACKBONE.PRETRAIN_PATH
    if not path:
        raise FileNotFoundError(f"MODEL.BACKBONE.PRETRAIN is True but MODEL.BACKBONE.PRETRAIN_PATH is empty ({what})")
    return path


def build_timm_hrnet_backbone(cfg):
    depth = str(cfg.MODEL.BACKBONE.DEPTH).lower()
    model = TimmHRNet(depth)
    if cfg.MODEL.BACKBONE.FEAT_DIM != model.out_channels:
        raise ValueError(f"MODEL.BACKBONE.FEAT_DIM is {cfg.MODEL.BACKBONE.FEAT_DIM} but hrnet_{depth}'s concatenated "
                         f"branches have {model.out_channels} channels")
    if cfg.MODEL.BACKBONE.PRETRAIN:
        path = _pretrain_path(cfg, "timm cannot download weights here: give a local hrnet state dict")
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = model.body.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"{path} is not a timm hrnet_{depth} state dict: {len(missing)} of the backbone's keys "
                             f"are missing (first: {missing[:3]})")
        logger.info(f"hrnet_{depth} from {path}: {len(unexpected)} unused keys (the classification head)")
    return model


class TorchReIDOSNetFC(nn.Module):
    """TorchReID OSNet -> (B, fc width, 1, 1): fc(global average pool(last map))."""

    def __init__(self, depth: str = "x0_25"):
        super().__init__()
        from occreid.compat import torchreid_modules
        self.body = torchreid_modules().models.build_model(f"osnet_{depth}", num_classes=1, pretrained=False)
        self.body.classifier = nn.Identity()  # the zoo's identity classifier is not part of the feature
        self.out_channels = self.body.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.body.global_avgpool(self.body.featuremaps(x)).flatten(1)
        if self.body.fc is not None:
            v = self.body.fc(v)
        return v[:, :, None, None]


def build_torchreid_osnet_backbone(cfg):
    depth = str(cfg.MODEL.BACKBONE.DEPTH).lower()
    model = TorchReIDOSNetFC(depth)
    if cfg.MODEL.BACKBONE.FEAT_DIM != model.out_channels:
        raise ValueError(f"MODEL.BACKBONE.FEAT_DIM is {cfg.MODEL.BACKBONE.FEAT_DIM} but TorchReID's osnet_{depth} "
                         f"gives {model.out_channels}-d features (its fc)")
    if cfg.MODEL.BACKBONE.PRETRAIN:
        path = _pretrain_path(cfg, "a TorchReID model-zoo osnet checkpoint")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()
                 if not k.replace("module.", "").startswith("classifier.")}
        try:
            model.body.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"{path} is not a TorchReID osnet_{depth} checkpoint: {e}") from e
        logger.info(f"TorchReID osnet_{depth} (with its fc, {model.out_channels}-d) from {path}")
    return model


def register_backbones():
    for fn in (build_timm_hrnet_backbone, build_torchreid_osnet_backbone):
        if fn.__name__ not in BACKBONE_REGISTRY._obj_map:
            BACKBONE_REGISTRY.register(fn)
