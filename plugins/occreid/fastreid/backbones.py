"""Backbones occreid adds to FastReID's ``BACKBONE_REGISTRY``.

``build_timm_hrnet_backbone``: HRNet (Wang et al.) from timm, the backbone of AMD-Net (HRNet-W32). Its four
resolution branches (stride 4, 8, 16, 32; 32 + 64 + 128 + 256 channels for W32) are upsampled bilinearly to
the stride-4 size and concatenated, as BPBreID (on which AMD-Net's code builds) does: 480 channels, a 96 x 32
map at 384 x 128. Config: ``MODEL.BACKBONE.DEPTH`` ("w18", "w32", "w48", ... : timm's ``hrnet_<depth>``),
``FEAT_DIM`` (must equal the concatenated width: ValueError otherwise), ``PRETRAIN`` / ``PRETRAIN_PATH`` (a
timm state dict, loaded with ``weights_only=True``; no ImageNet weights ship with occreid).
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


def build_timm_hrnet_backbone(cfg):
    depth = str(cfg.MODEL.BACKBONE.DEPTH).lower()
    model = TimmHRNet(depth)
    if cfg.MODEL.BACKBONE.FEAT_DIM != model.out_channels:
        raise ValueError(f"MODEL.BACKBONE.FEAT_DIM is {cfg.MODEL.BACKBONE.FEAT_DIM} but hrnet_{depth}'s concatenated "
                         f"branches have {model.out_channels} channels")
    if cfg.MODEL.BACKBONE.PRETRAIN:
        path = cfg.MODEL.BACKBONE.PRETRAIN_PATH
        if not path:
            raise FileNotFoundError("MODEL.BACKBONE.PRETRAIN is True but MODEL.BACKBONE.PRETRAIN_PATH is empty "
                                    "(timm cannot download weights here: give a local hrnet state dict)")
        state = torch.load(path, map_location="cpu", weights_only=True)
        missing, unexpected = model.body.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"{path} is not a timm hrnet_{depth} state dict: {len(missing)} of the backbone's keys "
                             f"are missing (first: {missing[:3]})")
        logger.info(f"hrnet_{depth} from {path}: {len(unexpected)} unused keys (the classification head)")
    return model


def register_backbones():
    if "build_timm_hrnet_backbone" not in BACKBONE_REGISTRY._obj_map:
        BACKBONE_REGISTRY.register(build_timm_hrnet_backbone)
