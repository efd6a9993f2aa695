"""AMD-Net (Ge et al., "Semantically Enhanced Attention Map-Driven Occluded Person Re-identification", Electronics
Letters 2024) as a FastReID meta-architecture, ``MODEL.META_ARCHITECTURE: AMDNet``.

The method's layers are toolbox-free (:mod:`occreid.layers.amdnet`); this module is the glue::

    G = backbone(x)                                     (B, C, h, w)
    P = PAGB(G) = softmax(conv1x1(SIM(G)))              (B, K + 1, h, w): background + K parts   (Eq. 1, 3-4)
    F = TFF(G)                                          (Eq. 5, 8-11)
    f_t, f_1..f_K, f_c, f_g = pooling(F, P)             (Eq. 6-7)
    L = L_part^tri + L_global^CE(f_t, f_c, f_g) + L_part_a^CE      (Eq. 12-14)

Model layout (FastReID conventions): ``backbone`` unchanged; ``heads`` holds every new module (PAGB with SIM,
TFF, the BNNecks and classifiers), so ``SOLVER.HEADS_LR_FACTOR`` and ``FREEZE_LAYERS`` reach them.

Config ``MODEL.AMD.*`` (defaults = the paper's; projects/AMDNet/README.md): ``NUM_PARTS`` K (5),
``PART_ATTENTION`` (False: Table 2 "w/o Part Attention": f_g only, CE + batch-hard triplet), ``SIM.ENABLED``,
``SIM.ALPHA`` (0.35), ``SIM.KERNEL``, ``TFF.ENABLED``, ``TFF.BLOCKS`` (3), ``PARSING_WEIGHT`` (1; 0: attention
maps learnt from the re-ID losses only), ``PARSING_SIGMA`` (0.15), ``PART_LOSS`` part_soft | hard_triplet | id
(Table 2's last rows), ``BETA_HEAD`` (0.5), ``GAMMA`` (0.4, visibility), ``TEST_DISTANCE`` visible_parts |
global. Parsing labels come with the batch (``"parsing"``, :mod:`occreid.fastreid.parsing_data`).
"""

import numpy as np
import torch
from torch import nn

from fastreid.config import configurable
from fastreid.modeling.backbones import build_backbone
from fastreid.modeling.losses import cross_entropy_loss, log_accuracy
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY
from fastreid.modeling.meta_arch.baseline import Baseline

from occreid.layers.amdnet import (PartAttentionHead, SpatialFrequencyInteraction, TaylorFeatureFilter,
                                   attention_pooling, batch_hard, euclidean, part_attention_loss, parsing_targets,
                                   part_soft_distance, part_soft_triplet_loss, part_weights,
                                   per_part_hard_triplet_loss, visibility_scores)

PART_LOSSES = ("part_soft", "hard_triplet", "id")
TEST_DISTANCES = ("visible_parts", "global")


def _bnneck(dim):
    bn = nn.BatchNorm1d(dim)
    bn.bias.requires_grad_(False)
    return bn


def _classifier(dim, num_classes):
    fc = nn.Linear(dim, num_classes, bias=False)
    nn.init.normal_(fc.weight, std=0.01)   # FastReID's EmbeddingHead
    return fc


class AMDHeads(nn.Module):
    """AMD-Net's new modules: ``pagb`` (:class:`PartAttentionHead`, with ``pagb.sim``; None without part
    attention), ``tff`` (:class:`TaylorFeatureFilter` or Identity), a BNNeck + classifier for f_g and, with part
    attention, for f_t and f_c; ``part_classifiers`` (one per part) for ``PART_LOSS id``."""

    def __init__(self, c, num_classes, num_parts, part_attention, sim, sim_alpha, sim_kernel, tff, tff_blocks,
                 part_loss):
        super().__init__()
        self.pagb = (PartAttentionHead(c, num_parts, SpatialFrequencyInteraction(c, sim_alpha, sim_kernel)
                                       if sim else None) if part_attention else None)
        self.tff = TaylorFeatureFilter(c, tff_blocks) if tff else nn.Identity()
        self.neck_g, self.g_classifier = _bnneck(c), _classifier(c, num_classes)
        if part_attention:
            self.neck_t, self.t_classifier = _bnneck(c), _classifier(c, num_classes)
            self.neck_c, self.c_classifier = _bnneck(num_parts * c), _classifier(num_parts * c, num_classes)
            if part_loss == "id":
                self.part_classifiers = nn.ModuleList(_classifier(c, num_classes) for _ in range(num_parts))


class AMDNet(nn.Module):
    """AMD-Net on a FastReID backbone.

    Args:
        backbone: (B, 3, H, W) -> (B, C, h, w).
        feat_dim: C.
        num_classes: training identities.
        num_parts: K.
        part_attention, sim, tff: Table 2's switches.
        sim_alpha, sim_kernel, tff_blocks: see :mod:`occreid.layers.amdnet`.
        parsing_weight, parsing_sigma: Eq. 2's term.
        part_loss: part_soft (Eq. 12-13) | hard_triplet | id (Table 2).
        beta_head, gamma: Eq. 12, visibility.
        tri_margin: M.
        ce_eps: label smoothing of the identity CEs.
        test_distance: visible_parts | global.
    Train output: loss_cls_g, loss_cls_t, loss_cls_c (L_global^CE, Eq. 14), loss_triplet_parts (or
    loss_cls_parts), loss_part_attention (Eq. 2, when the batch has labels and parsing_weight > 0); without part
    attention loss_cls_g and loss_triplet_g. Test output: (B, 2C + K C + K) = [f_t, f_g, f_1..f_K, visibility]
    (BNNeck features), or (B, C) f_g without part attention.
    Raises ValueError for an unknown part_loss / test_distance.
    """

    @configurable
    def __init__(self, *, backbone, feat_dim, num_classes, pixel_mean, pixel_std, num_parts=5, part_attention=True,
                 sim=True, sim_alpha=0.35, sim_kernel=1, tff=True, tff_blocks=3, parsing_weight=1.0,
                 parsing_sigma=0.15, part_loss="part_soft", beta_head=0.5, gamma=0.4, tri_margin=0.3, ce_eps=0.1,
                 test_distance="visible_parts"):
        super().__init__()
        if part_loss not in PART_LOSSES:
            raise ValueError(f"MODEL.AMD.PART_LOSS must be one of {PART_LOSSES}, got {part_loss!r}")
        if test_distance not in TEST_DISTANCES:
            raise ValueError(f"MODEL.AMD.TEST_DISTANCE must be one of {TEST_DISTANCES}, got {test_distance!r}")
        self.backbone = backbone
        self.heads = AMDHeads(feat_dim, num_classes, num_parts, part_attention, sim, sim_alpha, sim_kernel, tff,
                              tff_blocks, part_loss)
        self.num_parts, self.part_attention, self.part_loss = num_parts, part_attention, part_loss
        self.parsing_weight, self.parsing_sigma = parsing_weight, parsing_sigma
        self.beta_head, self.gamma, self.tri_margin, self.ce_eps = beta_head, gamma, tri_margin, ce_eps
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        a = cfg.MODEL.AMD
        return {
            "backbone": build_backbone(cfg), "feat_dim": cfg.MODEL.BACKBONE.FEAT_DIM,
            "num_classes": cfg.MODEL.HEADS.NUM_CLASSES, "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD, "num_parts": a.NUM_PARTS, "part_attention": a.PART_ATTENTION,
            "sim": a.SIM.ENABLED, "sim_alpha": a.SIM.ALPHA, "sim_kernel": a.SIM.KERNEL, "tff": a.TFF.ENABLED,
            "tff_blocks": a.TFF.BLOCKS, "parsing_weight": a.PARSING_WEIGHT, "parsing_sigma": a.PARSING_SIGMA,
            "part_loss": a.PART_LOSS, "beta_head": a.BETA_HEAD, "gamma": a.GAMMA,
            "tri_margin": cfg.MODEL.LOSSES.TRI.MARGIN, "ce_eps": cfg.MODEL.LOSSES.CE.EPSILON,
            "test_distance": a.TEST_DISTANCE,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    preprocess_image = Baseline.preprocess_image

    def features(self, images: torch.Tensor) -> dict:
        """Normalised images (B, 3, H, W) -> dict G, F (B, C, h, w), P_logits / P (B, K + 1, h, w), parts
        (B, K, h, w), visibility (B, K) and the pooled features of :func:`occreid.layers.amdnet.attention_pooling`
        (with part attention), else G, F, f_g."""
        g = self.backbone(images)
        fmap = self.heads.tff(g)
        if self.heads.pagb is None:
            return {"G": g, "F": fmap, "f_g": fmap.mean(dim=(2, 3))}
        logits = self.heads.pagb.logits(g)
        probs = logits.softmax(1)
        parts = probs[:, 1:]
        out = attention_pooling(fmap, parts)
        out.update({"G": g, "F": fmap, "P_logits": logits, "P": probs, "parts": parts,
                    "visibility": visibility_scores(parts, self.gamma)})
        return out

    @torch.no_grad()
    def attention_maps(self, batched_inputs) -> dict:
        """Part maps (B, K, h, w), foreground p_t (B, h, w) and visibility (B, K) of a batch, for pictures."""
        out = self.features(self.preprocess_image(batched_inputs))
        return {k: out[k] for k in ("parts", "p_t", "visibility")}

    def forward(self, batched_inputs):
        out = self.features(self.preprocess_image(batched_inputs))
        h = self.heads
        if not self.training:
            if h.pagb is None:
                return h.neck_g(out["f_g"])
            b, k, c = out["f_parts"].shape
            parts = h.neck_c(out["f_c"])
            return torch.cat([h.neck_t(out["f_t"]), h.neck_g(out["f_g"]), parts, out["visibility"]], dim=1)
        targets = batched_inputs["targets"].to(self.device)
        if targets.sum() < 0:  # FastReID's PreciseBN passes -1 labels
            targets.zero_()
        parsing = batched_inputs.get("parsing")
        return self.losses(out, targets, parsing.to(self.device) if parsing is not None else None)

    def losses(self, out, targets, parsing=None):
        """Eq. 14: L = L_part^tri + L_global^CE + L_part_a^CE (see the class docstring for the terms)."""
        h, eps = self.heads, self.ce_eps
        logits_g = h.g_classifier(h.neck_g(out["f_g"]))
        log_accuracy(logits_g.detach(), targets)
        loss = {"loss_cls_g": cross_entropy_loss(logits_g, targets, eps)}
        if h.pagb is None:   # Table 2 "w/o Part Attention": the global feature with CE + batch-hard triplet
            d_ap, d_an = batch_hard(euclidean(out["f_g"], out["f_g"]), targets)
            loss["loss_triplet_g"] = torch.relu(d_ap - d_an + self.tri_margin).mean()
            return loss
        loss["loss_cls_t"] = cross_entropy_loss(h.t_classifier(h.neck_t(out["f_t"])), targets, eps)
        loss["loss_cls_c"] = cross_entropy_loss(h.c_classifier(h.neck_c(out["f_c"])), targets, eps)
        f_parts = out["f_parts"]
        if self.part_loss == "part_soft":
            loss["loss_triplet_parts"] = part_soft_triplet_loss(f_parts, targets, self.tri_margin, self.beta_head)
        elif self.part_loss == "hard_triplet":
            loss["loss_triplet_parts"] = per_part_hard_triplet_loss(f_parts, targets, self.tri_margin)
        else:   # "r/w ID Loss": a classifier per part on the part's BNNeck feature
            b, k, c = f_parts.shape
            bn = h.neck_c(out["f_c"]).view(b, k, c)
            loss["loss_cls_parts"] = torch.stack([cross_entropy_loss(fc(bn[:, i]), targets, eps)
                                                  for i, fc in enumerate(h.part_classifiers)]).mean()
        if parsing is not None and self.parsing_weight > 0:
            t = parsing_targets(parsing, out["P_logits"].shape[-2:])
            if (t >= 0).any():
                loss["loss_part_attention"] = self.parsing_weight * part_attention_loss(
                    out["P_logits"], t, self.parsing_sigma)
        return loss


def amd_distance(query, gallery, num_parts: int, mode: str = "visible_parts", beta_head: float = 0.5,
                 part_attention: bool = True) -> np.ndarray:
    """AMD-Net's test distance on the features of :class:`AMDNet` ([f_t, f_g, f_1..f_K, visibility], (N, 2C + KC + K)).

    "visible_parts": the mean of d_eu(f_t) and the Eq. 12 part distance restricted to the parts visible in both
    images (head weighted 1 + beta), each part and f_t weighing as in Eq. 12 (f_t weight 1, always visible);
    "global": the Euclidean distance of [f_t, f_c, f_g] (the paper's F_global). ``part_attention=False`` (features
    f_g only): the Euclidean distance. Returns (q, g) float32. Raises ValueError for an unknown mode or a width that
    is not [f_t, f_g, K parts, K visibility].
    """
    if mode not in TEST_DISTANCES:
        raise ValueError(f"MODEL.AMD.TEST_DISTANCE must be one of {TEST_DISTANCES}, got {mode!r}")
    q, g = torch.as_tensor(query).float(), torch.as_tensor(gallery).float()
    d, k = q.shape[1], num_parts
    if not part_attention:
        return torch.cdist(q, g).numpy()
    if (d - k) % (k + 2) != 0:
        raise ValueError(f"AMD-Net features of width {d} are not [f_t, f_g, {k} parts, {k} visibility scores]")
    c = (d - k) // (k + 2)
    if mode == "global":
        return torch.cdist(q[:, :d - k], g[:, :d - k]).numpy()
    qp, gp = q[:, 2 * c:2 * c + k * c].reshape(len(q), k, c), g[:, 2 * c:2 * c + k * c].reshape(len(g), k, c)
    qv, gv = q[:, d - k:], g[:, d - k:]
    w = part_weights(k, beta_head)
    both = qv[:, None, :] * gv[None, :, :] * w                              # (q, g, K)
    d_parts = part_soft_distance(qp, gp, beta_head, qv, gv) * both.sum(2)   # weighted sum over visible parts
    none = both.sum(2) == 0
    d_parts = torch.where(none, torch.zeros_like(d_parts), d_parts)
    return ((torch.cdist(q[:, :c], g[:, :c]) + d_parts) / (1 + both.sum(2))).numpy()


def amd_distance_from_cfg(cfg):
    """The test distance of a config, for :class:`occreid.fastreid.OccReIDEvaluator`."""
    a = cfg.MODEL.AMD
    if cfg.TEST.AQE.ENABLED and a.PART_ATTENTION:
        raise ValueError("TEST.AQE.ENABLED: query expansion would average AMD-Net's 0/1 visibility scores; "
                         "disable it for MODEL.META_ARCHITECTURE AMDNet")

    def distance(q, g):
        return amd_distance(q, g, a.NUM_PARTS, a.TEST_DISTANCE, a.BETA_HEAD, a.PART_ATTENTION)
    return distance


def add_amd_config(cfg):
    """``MODEL.AMD.*`` with the paper's values, and ``DATASETS.PARSING.ROOT``."""
    from fastreid.config import CfgNode as CN
    if "AMD" not in cfg.MODEL:
        a = cfg.MODEL.AMD = CN()
        a.NUM_PARTS = 5                 # head, arms, trunk, legs, feet
        a.PART_ATTENTION = True         # Table 2 "w/o Part Attention"
        a.SIM = CN({"ENABLED": True, "ALPHA": 0.35, "KERNEL": 1})    # Eq. 4
        a.TFF = CN({"ENABLED": True, "BLOCKS": 3})                  # three basis blocks
        a.PARSING_WEIGHT = 1.0          # Eq. 14 weighs L_part_a^CE 1
        a.PARSING_SIGMA = 0.15          # Eq. 2
        a.PART_LOSS = "part_soft"       # Eq. 12-13 | hard_triplet | id (Table 2)
        a.BETA_HEAD = 0.5               # Eq. 12
        a.GAMMA = 0.4                   # visibility threshold
        a.TEST_DISTANCE = "visible_parts"
    if "PARSING" not in cfg.DATASETS:
        cfg.DATASETS.PARSING = CN({"ROOT": ""})   # labels mirroring the datasets root (occreid.data.parsing)
    return cfg


def register_amd():
    if "AMDNet" not in META_ARCH_REGISTRY._obj_map:
        META_ARCH_REGISTRY.register(AMDNet)
