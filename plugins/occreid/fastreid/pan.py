"""PAN (Ye et al., "Part-aware network: A simple but efficient method for occluded person
re-identification") as a FastReID meta-architecture, ``MODEL.META_ARCHITECTURE: PAN``.

The method lives in :mod:`occreid.layers.pan` (mask generator, weighted pooling, buffer layers, shared FC);
this module is the FastReID glue: the backbone from the config cut into stem / Conv40 / Conv50, a BNNeck and
identity classifier per feature, FastReID's label-smoothing CE and soft-margin batch-hard triplet (Eq. 5).

Model layout (FastReID conventions): ``backbone`` is FastReID's backbone, unchanged (its pretrained weights,
``MODEL.FREEZE_LAYERS [backbone]``); ``buffer`` holds the buffer layers Conv41 / Conv51 (copies of pretrained
units, so they are frozen with ``FREEZE_LAYERS [backbone, buffer]`` and get the base learning rate);
``heads`` holds every randomly initialised module (mask generator, FCs, BNNecks, classifiers), so
``SOLVER.HEADS_LR_FACTOR`` reaches them.

Config (``MODEL.PAN.*``, defaults = the paper's choices, projects/PAN/README.md): ``NUM_MASKS`` p (14),
``GLOBAL_DIM`` N_g (512), ``LOCAL_DIM`` n_l (256; gamma = p n_l / N_g = 7), ``SHARED_FC`` (Table 2),
``MASK_SOURCE`` conv40 | conv41 | conv50 and ``LOCAL_SOURCE`` conv50 | conv51 (Table 3), ``MASK_SOFTMAX``
none | parts | spatial (Table 4), ``UNIT`` stage | block (what "Conv40" / "Conv50" are), ``ID_WEIGHT`` (1/2 in
Eq. 5), ``TRI_WEIGHT`` (1), ``NECK_FEAT`` after | before.
"""

import torch
import torch.nn.functional as F
from torch import nn

from fastreid.config import configurable
from fastreid.modeling.backbones import build_backbone
from fastreid.modeling.losses import cross_entropy_loss, log_accuracy
from fastreid.modeling.losses.triplet_loss import hard_example_mining
from fastreid.modeling.losses.utils import cosine_dist, euclidean_dist
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY
from fastreid.modeling.meta_arch.baseline import Baseline

from occreid.layers.pan import PANBuffer, PANHead, pan_feature_maps

UNITS = ("stage", "block")


def cut_backbone(backbone: nn.Module, unit: str = "stage"):
    """Cut a FastReID ResNet or OSNet into (stem, block40, block50) with ``block50(block40(stem(x)))`` equal
    to ``backbone(x)``.

    ``unit="stage"``: Conv40 / Conv50 are the last two stages (ResNet layer3 / layer4 = conv4_x / conv5_x;
    OSNet conv4 / conv5). ``unit="block"``: the last two blocks (ResNet layer4[-2] / layer4[-1]; OSNet
    conv4[-1] / conv5). The pieces reference the backbone's own modules (no copy).

    Raises:
        ValueError: an unknown ``unit``, a ResNet with non-local blocks (``MODEL.BACKBONE.WITH_NL``), or a
            backbone that is neither FastReID's ResNet nor OSNet (names the class).
    """
    from fastreid.modeling.backbones.osnet import OSNet
    from fastreid.modeling.backbones.resnet import ResNet
    if unit not in UNITS:
        raise ValueError(f"MODEL.PAN.UNIT must be one of {UNITS}, got {unit!r}")
    if isinstance(backbone, ResNet):
        if any(len(getattr(backbone, f"NL_{i}", ())) for i in range(1, 5)):
            raise ValueError("PAN: MODEL.BACKBONE.WITH_NL is not supported (the cut would skip the non-local blocks)")
        head = [backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool, backbone.layer1, backbone.layer2]
        if unit == "stage":
            return nn.Sequential(*head), backbone.layer3, backbone.layer4
        return nn.Sequential(*head, backbone.layer3, *backbone.layer4[:-2]), backbone.layer4[-2], backbone.layer4[-1]
    if isinstance(backbone, OSNet):
        head = [backbone.conv1, backbone.maxpool, backbone.conv2, backbone.conv3]
        if unit == "stage":
            return nn.Sequential(*head), backbone.conv4, backbone.conv5
        return nn.Sequential(*head, *backbone.conv4[:-1]), backbone.conv4[-1], backbone.conv5
    raise ValueError(f"PAN: MODEL.BACKBONE.NAME builds a {type(backbone).__name__}; PAN knows how to cut "
                     "FastReID's ResNet and OSNet only")


def _channels(stem, block40, block50):
    """Output channels of block40 and block50 (one 64 x 32 image through the pieces, eval mode, no grad)."""
    mods = [stem, block40, block50]
    modes = [m.training for m in mods]
    try:
        for m in mods:
            m.eval()
        with torch.no_grad():
            p = next(stem.parameters())
            c40 = block40(stem(torch.zeros(1, 3, 64, 32, device=p.device, dtype=p.dtype)))
            c50 = block50(c40)
    finally:
        for m, t in zip(mods, modes):
            m.train(t)
    return c40.shape[1], c50.shape[1]


class PANHeads(nn.Module):
    """PAN's new modules: ``pan`` (:class:`occreid.layers.PANHead`), ``global_neck`` / ``local_neck`` (BNNecks,
    bias frozen; the local one has its own statistics per part and channel, whether the FC is shared or not, so
    that Table 2's switch changes the FC only), ``global_classifier`` and ``local_classifiers`` (one per part,
    PCB-style)."""

    def __init__(self, pan: PANHead, num_classes: int):
        super().__init__()
        self.pan = pan
        p, n_g, n_l = pan.num_masks, pan.global_dim, pan.local_dim
        self.global_neck = nn.BatchNorm1d(n_g)
        self.local_neck = nn.BatchNorm1d(p * n_l)
        for bn in (self.global_neck, self.local_neck):
            bn.bias.requires_grad_(False)
        self.global_classifier = nn.Linear(n_g, num_classes, bias=False)
        self.local_classifiers = nn.ModuleList(nn.Linear(n_l, num_classes, bias=False) for _ in range(p))
        for fc in [self.global_classifier, *self.local_classifiers]:
            nn.init.normal_(fc.weight, std=0.01)  # FastReID's EmbeddingHead

    def necks(self, glob: torch.Tensor, local: torch.Tensor):
        """BNNeck features: (B, N_g), (B, p, n_l) -> same shapes."""
        b, p, n = local.shape
        return self.global_neck(glob), self.local_neck(local.reshape(b, p * n)).view(b, p, n)


class PAN(nn.Module):
    """PAN: backbone (+ buffer layers) -> PANHead -> f_cat = [f_g, f_l,1 .. f_l,p] (test) or Eq. 5 (train).

    Args:
        backbone: FastReID ResNet / OSNet. unit: what Conv40 / Conv50 are (:func:`cut_backbone`).
        num_classes: training identities. pixel_mean, pixel_std: 3 values each, 0-255 scale.
        head_kwargs: :class:`occreid.layers.PANHead` options (num_masks, global_dim, local_dim, shared_fc,
            mask_source, local_source, mask_softmax).
        id_weight: weight of L_g,id and of L_l,id (1/2, Eq. 5). tri_weight: weight of L_tri (1).
        ce_eps: label smoothing. tri_margin: 0 = soft margin (the paper's). tri_hard_mining: must be True
            (batch-hard; ValueError otherwise). tri_norm_feat: cosine instead of Euclidean distances.
        neck_feat: "after" (BNNeck features at test) or "before" (FC outputs).
    Train output: dict loss_cls_global, loss_cls_local (mean over the p local classifiers), loss_triplet (on
    f_cat before the BNNecks). Test output: (B, N_g + p n_l).
    """

    @configurable
    def __init__(self, *, backbone, unit="stage", num_classes, pixel_mean, pixel_std, head_kwargs,
                 id_weight=0.5, tri_weight=1.0, ce_eps=0.1, tri_margin=0.0, tri_hard_mining=True,
                 tri_norm_feat=False, neck_feat="after"):
        super().__init__()
        if neck_feat not in ("after", "before"):
            raise ValueError(f"MODEL.PAN.NECK_FEAT must be 'after' or 'before', got {neck_feat!r}")
        self.backbone = backbone
        pieces = cut_backbone(backbone, unit)
        self.__dict__["_pieces"] = pieces   # views of the backbone's modules, not registered twice
        c40, c50 = _channels(*pieces)
        self.buffer = PANBuffer(pieces[1], pieces[2], head_kwargs.get("mask_source", "conv50"),
                                head_kwargs.get("local_source", "conv51"))
        self.heads = PANHeads(PANHead(c40, c50, **head_kwargs), num_classes)
        self.id_weight, self.tri_weight = id_weight, tri_weight
        if not tri_hard_mining:
            raise ValueError("PAN's triplet is batch-hard (the paper's Soft Margin Hard Mining Triplet Loss): "
                             "MODEL.LOSSES.TRI.HARD_MINING must be True")
        self.ce_eps, self.tri_margin, self.tri_norm_feat = ce_eps, tri_margin, tri_norm_feat
        self.neck_feat = neck_feat
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        p = cfg.MODEL.PAN
        return {
            "backbone": build_backbone(cfg), "unit": p.UNIT, "num_classes": cfg.MODEL.HEADS.NUM_CLASSES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN, "pixel_std": cfg.MODEL.PIXEL_STD,
            "head_kwargs": {"num_masks": p.NUM_MASKS, "global_dim": p.GLOBAL_DIM, "local_dim": p.LOCAL_DIM,
                            "shared_fc": p.SHARED_FC, "mask_source": p.MASK_SOURCE.lower(),
                            "local_source": p.LOCAL_SOURCE.lower(), "mask_softmax": p.MASK_SOFTMAX.lower()},
            "id_weight": p.ID_WEIGHT, "tri_weight": p.TRI_WEIGHT, "ce_eps": cfg.MODEL.LOSSES.CE.EPSILON,
            "tri_margin": cfg.MODEL.LOSSES.TRI.MARGIN, "tri_hard_mining": cfg.MODEL.LOSSES.TRI.HARD_MINING,
            "tri_norm_feat": cfg.MODEL.LOSSES.TRI.NORM_FEAT, "neck_feat": p.NECK_FEAT,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    preprocess_image = Baseline.preprocess_image

    def features(self, images: torch.Tensor) -> dict:
        """PANHead's outputs (global (B, N_g), local (B, p, n_l), masks (B, p, h, w), local_map) for
        normalised images (B, 3, H, W)."""
        return self.heads.pan(pan_feature_maps(*self._pieces, self.buffer, images))

    @torch.no_grad()
    def masks(self, batched_inputs) -> torch.Tensor:
        """The p masks M (Eq. 1) of a batch, (B, p, h, w), for visualisation (:mod:`occreid.evaluation.masks`)."""
        return self.features(self.preprocess_image(batched_inputs))["masks"]

    def forward(self, batched_inputs):
        out = self.features(self.preprocess_image(batched_inputs))
        if not self.training:
            if self.neck_feat == "before":
                g, l = out["global"], out["local"]
            else:
                g, l = self.heads.necks(out["global"], out["local"])
            return torch.cat([g, l.flatten(1)], dim=1)
        targets = batched_inputs["targets"]
        if targets.sum() < 0:  # FastReID's PreciseBN passes -1 labels
            targets.zero_()
        return self.losses(out, targets)

    def losses(self, out, targets):
        """Eq. 5: L = 1/2 (L_g,id + L_l,id) + L_tri, with L_l,id the mean of the p local CEs."""
        h = self.heads
        g_bn, l_bn = h.necks(out["global"], out["local"])
        logits_g = h.global_classifier(g_bn)
        log_accuracy(logits_g.detach(), targets)
        l_id = torch.stack([cross_entropy_loss(cls(l_bn[:, i]), targets, self.ce_eps)
                            for i, cls in enumerate(h.local_classifiers)]).mean()
        f_cat = torch.cat([out["global"], out["local"].flatten(1)], dim=1)
        return {
            "loss_cls_global": self.id_weight * cross_entropy_loss(logits_g, targets, self.ce_eps),
            "loss_cls_local": self.id_weight * l_id,
            "loss_triplet": self.tri_weight * self.triplet(f_cat, targets),
        }

    def triplet(self, feat, targets):
        """Batch-hard triplet on ``feat`` (B, D): soft margin log(1 + exp(d_ap - d_an)) when the margin is 0 (the
        paper's), else max(0, d_ap - d_an + margin). Written with softplus, which stays finite where FastReID's
        ``triplet_loss`` overflows and silently falls back to a 0.3 margin."""
        dist = cosine_dist(feat, feat) if self.tri_norm_feat else euclidean_dist(feat, feat)
        n = dist.shape[0]
        is_pos = targets.view(n, 1).eq(targets.view(1, n)).float()
        d_ap, d_an = hard_example_mining(dist, is_pos, 1 - is_pos)
        if self.tri_margin > 0:
            return F.relu(d_ap - d_an + self.tri_margin).mean()
        return F.softplus(d_ap - d_an).mean()


def add_pan_config(cfg):
    """``MODEL.PAN.*`` with the paper's choices (Sec. 2, Tables 2-4, Fig. 2-3)."""
    from fastreid.config import CfgNode as CN
    if "PAN" in cfg.MODEL:
        return cfg
    p = cfg.MODEL.PAN = CN()
    p.NUM_MASKS = 14           # p, Fig. 3 (Occluded-Duke; 16 on Market-1501)
    p.GLOBAL_DIM = 512         # N_g
    p.LOCAL_DIM = 256          # n_l; gamma = p n_l / N_g = 7 (Eq. 4, Fig. 2)
    p.SHARED_FC = True         # Table 2
    p.MASK_SOURCE = "conv50"   # F_g^1, Table 3 row 6
    p.LOCAL_SOURCE = "conv51"  # F_g^2: the buffer layer
    p.MASK_SOFTMAX = "none"    # Table 4 "w/o" (or parts | spatial)
    p.UNIT = "stage"           # Conv40 / Conv50 = the last two stages (or "block", README)
    p.ID_WEIGHT = 0.5          # Eq. 5
    p.TRI_WEIGHT = 1.0
    p.NECK_FEAT = "after"
    return cfg


def register_pan():
    if "PAN" not in META_ARCH_REGISTRY._obj_map:
        META_ARCH_REGISTRY.register(PAN)
