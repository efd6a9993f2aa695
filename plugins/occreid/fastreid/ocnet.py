"""OCNet (Kim et al., "Occluded Person Re-identification via Relational Adaptive Feature Correction
Learning", ICASSP 2022) as a FastReID meta-architecture, ``MODEL.META_ARCHITECTURE: OCNet``.

The method lives in :class:`occreid.layers.OCNetBranches` (CM, CFM, RAM) and
:func:`occreid.losses.separation_loss`; this module is the FastReID glue: backbone from the config,
BNNeck + identity classifier per supervised feature, FastReID's label-smoothing CE and batch-hard
triplet, and the test distance of Eq. 4.

Config (``MODEL.OCNET.*``, defaults = the paper's values, see projects/OCNet/README.md):
``DIM`` per-branch size after the CM, ``GROUPS`` CM groups, ``USE_GLOBAL``, ``NUM_PARTS`` (2),
``CFM.ENABLED`` / ``CFM.SIZE`` (2) / ``CFM.SCORE`` (channel | mean), ``FUSION`` (ram | concat | rn),
``RAM.REDUCTION``, ``SL.ENABLED`` / ``SL.GAMMA`` (1) / ``SL.FEAT`` (pre_relu | post_relu), ``LAMBDAS``
(0.8, 0.5, 0.25, 0.25 for F_final, F_BB, f_g, f_c), ``ALPHA`` (1, Eq. 4).

Every module OCNet adds to the backbone (branches, BNNecks, classifiers) lives under ``model.heads``, so
FastReID's ``SOLVER.HEADS_LR_FACTOR`` reaches them as it reaches ``Baseline``'s head, and
``MODEL.FREEZE_LAYERS [backbone]`` + ``SOLVER.FREEZE_ITERS`` trains them alone first.
"""

import numpy as np
import torch
from torch import nn

from fastreid.config import configurable
from fastreid.layers import get_norm
from fastreid.modeling.backbones import build_backbone
from fastreid.modeling.losses import cross_entropy_loss, log_accuracy, triplet_loss
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY
from fastreid.modeling.meta_arch.baseline import Baseline

from occreid.layers import OCNetBranches
from occreid.losses import separation_loss

#: the supervised features of Eq. 2, in the order of MODEL.OCNET.LAMBDAS
SUPERVISED = ("F_final", "F_BB", "f_g", "f_c")


class OCNetHeads(nn.Module):
    """Container of OCNet's new modules (named ``heads`` in the model, FastReID's name for the head):
    ``branches`` (:class:`occreid.layers.OCNetBranches`), ``necks`` and ``classifiers`` (ModuleDicts by
    feature name)."""

    def __init__(self, branches):
        super().__init__()
        self.branches = branches
        self.necks = nn.ModuleDict()
        self.classifiers = nn.ModuleDict()


class OCNet(nn.Module):
    """OCNet: backbone -> OCNetBranches -> [F_final, F_BB] (test) or the loss dict of Eq. 2-3 (train).

    Args:
        backbone: module mapping (B, 3, H, W) images to the (B, C, h, w) map F_BB.
        branches: :class:`occreid.layers.OCNetBranches` on that map.
        feat_dim: C.
        num_classes: identities of the training set.
        pixel_mean, pixel_std: image normalisation (3 values each, 0-255 scale).
        lambdas: weights of F_final, F_BB, f_g, f_c in Eq. 2 (a branch that is off is skipped).
        gamma: weight of the Separation Loss in Eq. 3 (0 or ``sl_enabled=False`` turns it off).
        sl_feat: ``"pre_relu"`` (default): L_SL compares f_g and the parts pooled from their CM's BN output
            before the ReLU, signed, so Eq. 1 spans its range [0, 2 x parts]; ``"post_relu"``: the branch
            features themselves, non-negative, so cos >= 0 and L_SL >= parts (projects/OCNet/README.md).
        ce_eps: label smoothing. tri_margin, tri_hard_mining: batch-hard triplet (FastReID's).
        norm: BNNeck norm type. neck_feat: ``"after"`` (BN features at test) or ``"before"``.
    Test output: (B, K*D + C) = [F_final, F_BB], split by :func:`ocnet_distance` (Eq. 4).
    """

    @configurable
    def __init__(self, *, backbone, branches, feat_dim, num_classes, pixel_mean, pixel_std,
                 lambdas=(0.8, 0.5, 0.25, 0.25), gamma=1.0, sl_enabled=True, sl_feat="pre_relu", ce_eps=0.1,
                 tri_margin=0.3, tri_hard_mining=True, norm="BN", neck_feat="after"):
        super().__init__()
        if sl_feat not in ("pre_relu", "post_relu"):
            raise ValueError(f"MODEL.OCNET.SL.FEAT must be 'pre_relu' or 'post_relu', got {sl_feat!r}")
        self.backbone = backbone
        self.heads = OCNetHeads(branches)
        self.sl_feat = sl_feat
        if sl_enabled and gamma > 0 and (branches.cm_global is None or branches.num_parts == 0):
            raise ValueError("MODEL.OCNET.SL needs the global branch and at least one part")
        self.sl_enabled = sl_enabled and gamma > 0
        self.gamma = gamma
        self.lambdas = dict(zip(SUPERVISED, lambdas))
        dims = {"F_final": branches.out_dim, "F_BB": feat_dim, "f_g": branches.dim, "f_c": branches.dim}
        present = {"F_final": True, "F_BB": True, "f_g": branches.cm_global is not None,
                   "f_c": branches.cfm is not None}
        for name in SUPERVISED:
            if present[name] and self.lambdas[name] > 0:
                self.necks[name] = get_norm(norm, dims[name], bias_freeze=True)
                self.classifiers[name] = nn.Linear(dims[name], num_classes, bias=False)
                nn.init.normal_(self.classifiers[name].weight, std=0.01)  # FastReID's EmbeddingHead
        # the test features always need their BNNecks
        for name in ("F_final", "F_BB"):
            if name not in self.necks:
                self.necks[name] = get_norm(norm, dims[name], bias_freeze=True)
        self.ce_eps, self.tri_margin, self.tri_hard_mining = ce_eps, tri_margin, tri_hard_mining
        self.neck_feat = neck_feat
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1), False)

    branches = property(lambda self: self.heads.branches)
    necks = property(lambda self: self.heads.necks)
    classifiers = property(lambda self: self.heads.classifiers)

    @classmethod
    def from_config(cls, cfg):
        o = cfg.MODEL.OCNET
        branches = OCNetBranches(cfg.MODEL.BACKBONE.FEAT_DIM, o.DIM, num_parts=o.NUM_PARTS,
                                 use_global=o.USE_GLOBAL, use_cfm=o.CFM.ENABLED, center_size=o.CFM.SIZE,
                                 fusion=o.FUSION.lower(), groups=o.GROUPS, ram_reduction=o.RAM.REDUCTION,
                                 cfm_score=o.CFM.SCORE)
        return {
            "backbone": build_backbone(cfg), "branches": branches, "feat_dim": cfg.MODEL.BACKBONE.FEAT_DIM,
            "num_classes": cfg.MODEL.HEADS.NUM_CLASSES, "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD, "lambdas": tuple(o.LAMBDAS), "gamma": o.SL.GAMMA,
            "sl_enabled": o.SL.ENABLED, "sl_feat": o.SL.FEAT, "ce_eps": cfg.MODEL.LOSSES.CE.EPSILON,
            "tri_margin": cfg.MODEL.LOSSES.TRI.MARGIN, "tri_hard_mining": cfg.MODEL.LOSSES.TRI.HARD_MINING,
            "norm": cfg.MODEL.HEADS.NORM, "neck_feat": o.NECK_FEAT,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    preprocess_image = Baseline.preprocess_image

    def forward(self, batched_inputs):
        images = self.preprocess_image(batched_inputs)
        out = self.branches(self.backbone(images))
        if not self.training:
            feats = [out[n] if self.neck_feat == "before" else self._bnneck(n, out[n]) for n in ("F_final", "F_BB")]
            return torch.cat(feats, dim=1)
        targets = batched_inputs["targets"]
        if targets.sum() < 0:  # FastReID's PreciseBN passes -1 labels
            targets.zero_()
        return self.losses(out, targets)

    def _bnneck(self, name, feat):
        """FastReID's BNNeck (a BatchNorm2d with frozen bias) on a (B, D) feature."""
        return self.necks[name](feat[:, :, None, None])[:, :, 0, 0]

    def losses(self, out, targets):
        """Eq. 2-3: lambda-weighted CE (on BNNeck logits) and triplet (on pre-BN features) of
        F_final, F_BB, f_g, f_c, plus gamma * L_SL (on ``sl_feat``).

        A test feature (F_final, F_BB) whose lambda is 0 still passes through its BNNeck (detached), so that
        the BNNeck's running statistics are those of the trained model and not their initial values."""
        loss = {}
        for name in ("F_final", "F_BB"):
            if name not in self.classifiers:
                self._bnneck(name, out[name].detach())
        for name in self.classifiers:
            feat = out[name]
            logits = self.classifiers[name](self._bnneck(name, feat))
            if name == "F_final":
                log_accuracy(logits.detach(), targets)
            lam = self.lambdas[name]
            loss[f"loss_cls_{name}"] = lam * cross_entropy_loss(logits, targets, self.ce_eps)
            loss[f"loss_triplet_{name}"] = lam * triplet_loss(feat, targets, self.tri_margin, False,
                                                              self.tri_hard_mining)
        if self.sl_enabled:
            if self.sl_feat == "pre_relu":
                loss["loss_sl"] = self.gamma * separation_loss(out["f_g_pre"], out["parts_pre"])
            else:
                loss["loss_sl"] = self.gamma * separation_loss(out["f_g"], out["parts"])
        return loss


def ocnet_feature_split(cfg):
    """Size of F_final in OCNet's test feature [F_final, F_BB]."""
    o = cfg.MODEL.OCNET
    return (int(o.USE_GLOBAL) + o.NUM_PARTS + int(o.CFM.ENABLED)) * o.DIM


def pairwise_l2(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """(m, n) plain l2 distances of the rows of ``a`` (m, D) and ``b`` (n, D), float32."""
    from occreid.evaluation.rerank import _sq_dist_block
    a, b = a.float().contiguous(), b.float().contiguous()
    return _sq_dist_block(a, b, (a * a).sum(1), (b * b).sum(1)).sqrt_().cpu().numpy()


def ocnet_distance(query, gallery, split: int, alpha: float = 1.0) -> np.ndarray:
    """Eq. 4: D = ||F_final^q - F_final^g||_2 + alpha ||F_BB^q - F_BB^g||_2.

    Args:
        query: (q, K*D + C) test features [F_final, F_BB]; gallery: (g, K*D + C).
        split: K*D, where F_BB starts.
    Returns: (q, g) float32.
    """
    d = pairwise_l2(query[:, :split], gallery[:, :split])
    if alpha:
        d += alpha * pairwise_l2(query[:, split:], gallery[:, split:])
    return d


def ocnet_distance_from_cfg(cfg):
    """The Eq. 4 distance function of a config, for :class:`occreid.fastreid.OccReIDEvaluator`."""
    split, alpha = ocnet_feature_split(cfg), cfg.MODEL.OCNET.ALPHA
    return lambda q, g: ocnet_distance(q, g, split, alpha)


def add_ocnet_config(cfg):
    """``MODEL.OCNET.*`` with the paper's values (Sec. 3 and Table 3)."""
    from fastreid.config import CfgNode as CN
    if "OCNET" in cfg.MODEL:
        return cfg
    o = cfg.MODEL.OCNET = CN()
    o.DIM = 512            # per-branch size after the CM (F_final = 4 x 512 = 2048 for ResNet-50)
    o.GROUPS = 4           # CM channel groups
    o.USE_GLOBAL = True    # f_g
    o.NUM_PARTS = 2        # f_t, f_b (Table 3: 1-4)
    o.CFM = CN({"ENABLED": True, "SIZE": 2,       # Table 3: W = 2 best
                "SCORE": "channel"})              # softmax over the cells per channel (or "mean")
    o.FUSION = "ram"       # ram | concat | rn (Table 2)
    o.RAM = CN({"REDUCTION": 4})
    o.SL = CN({"ENABLED": True, "GAMMA": 1.0,     # Eq. 3, gamma = 1
               "FEAT": "pre_relu"})               # compare the CMs' signed outputs (or "post_relu")
    o.LAMBDAS = [0.8, 0.5, 0.25, 0.25]            # Eq. 2: F_final, F_BB, f_g, f_c
    o.ALPHA = 1.0          # Eq. 4
    o.NECK_FEAT = "after"  # BN features at test (BoT)
    return cfg


def register_ocnet():
    if "OCNet" not in META_ARCH_REGISTRY._obj_map:
        META_ARCH_REGISTRY.register(OCNet)
