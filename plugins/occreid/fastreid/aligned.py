"""AlignedReID with the occlusion classifier (OBC) of Chakraborty, Pan, Mishra ("Tackling Occlusion in Person
Re-identification") as a FastReID meta-architecture, ``MODEL.META_ARCHITECTURE: AlignedReID``.

The method's layers are toolbox-free (:mod:`occreid.layers.aligned`, :mod:`occreid.data.occlusion`); this
module is the glue: backbone from the config, global pooling, the local branch, FastReID's batch-hard
triplet on the global distance with the same hard pairs for the local distance (Sec. 3.2.3), the OBC head
and the multi-task loss L = alpha L_T + (1 - alpha) L_O (Eq. 3), and the test distance (global, local or
their sum).

With OBC on, each training step sees the sampled batch X and its occluded copy Occ(X) (the simulator of
Algorithm 1 on the batch), occlusion labels 1 (clean) and 0 (occluded) (Sec. 4): twice the images per step,
which the comparison protocol's budget counts (:data:`occreid.fastreid.trainer.IMAGES_PER_SAMPLE`).

Config ``MODEL.ALIGNED.*`` (defaults = the paper's, projects/AlignedReID/README.md): ``LOCAL_DIM`` c (128),
``POOL`` avg | max (global and horizontal pooling), ``ID_WEIGHT`` (0: the paper's loss is triplet only),
``TEST_DISTANCE`` global | local | sum, ``LOCAL_NORM`` (L2-normalised stripes, the reference code's), ``OBC.ENABLED``, ``OBC.ALPHA`` (0.8, Sec. 6.5), ``OBC.SIZE``
(patch area fraction, 0.305 = 50 x 50 on Market-1501's 128 x 64 images), ``OBC.FILL`` mean | black | noise,
``OBC.NECK`` none | bn (BatchNorm1d before the OBC's FC, not in the paper).
"""

import numpy as np
import torch
from torch import nn

from fastreid.config import configurable
from fastreid.modeling.backbones import build_backbone
from fastreid.modeling.losses import cross_entropy_loss, log_accuracy
from fastreid.modeling.losses.utils import euclidean_dist
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY

from occreid.data.occlusion import OcclusionSimulator
from occreid.layers.aligned import AlignedLocalBranch, OcclusionClassifier, aligned_local_distance

TEST_DISTANCES = ("global", "local", "sum")


def hard_pairs(dist: torch.Tensor, targets: torch.Tensor):
    """Batch-hard mining (Hermans et al.): per anchor, the index of the farthest positive and of the
    nearest negative under ``dist`` (N, N). Returns (pos_idx (N,), neg_idx (N,))."""
    n = dist.shape[0]
    same = targets.view(n, 1).eq(targets.view(1, n))
    big = dist.detach().max() + 1
    pos = torch.where(same, dist.detach(), torch.full_like(dist, -1.0)).argmax(1)
    neg = torch.where(~same, dist.detach(), big.expand_as(dist)).argmin(1)
    return pos, neg


class AlignedHeads(nn.Module):
    """AlignedReID's new modules: ``local`` (:class:`occreid.layers.AlignedLocalBranch`), ``obc``
    (:class:`occreid.layers.OcclusionClassifier` or None) and ``classifier`` (identity, or None)."""

    def __init__(self, feat_dim, local_dim, pool, obc, num_classes, id_loss, obc_neck="none"):
        super().__init__()
        self.local = AlignedLocalBranch(feat_dim, local_dim, pool)
        self.obc = OcclusionClassifier(feat_dim, neck=obc_neck) if obc else None
        self.classifier = nn.Linear(feat_dim, num_classes, bias=False) if id_loss else None
        if self.classifier is not None:
            nn.init.normal_(self.classifier.weight, std=0.01)


class AlignedReID(nn.Module):
    """AlignedReID (+ OBC): backbone -> global feature (B, C) and local features (B, H, c).

    Args:
        backbone: module (B, 3, H, W) -> (B, C, h, w). feat_dim: C. local_dim: c. pool: "avg" | "max".
        num_classes: training identities (used only with ``id_weight`` > 0).
        obc: the occlusion classifier and the occluded copy of each batch (Sec. 4). alpha: Eq. 3.
        obc_size, obc_fill: the simulator (:class:`occreid.data.occlusion.OcclusionSimulator`).
        obc_neck: "none" (the paper's FC) | "bn" (:class:`occreid.layers.OcclusionClassifier`).
        tri_margin: margin of both triplet terms (AlignedReID: 0.3). id_weight: optional identity loss.
    Train output: loss_triplet_global, loss_triplet_local (each times alpha with OBC), loss_obc ((1 - alpha) L_O),
    loss_cls (if id_weight). Test output: (B, C + h c) = [global, local stripes], split by
    :func:`aligned_distance`.
    """

    @configurable
    def __init__(self, *, backbone, feat_dim, local_dim=128, pool="avg", num_classes=0, obc=True, alpha=0.8,
                 obc_size=0.305, obc_fill="mean", obc_neck="none", tri_margin=0.3, id_weight=0.0, ce_eps=0.1,
                 local_norm=True, pixel_mean, pixel_std):
        super().__init__()
        self.local_norm = local_norm
        self.backbone = backbone
        self.heads = AlignedHeads(feat_dim, local_dim, pool, obc, num_classes, id_weight > 0, obc_neck)
        self.pool = pool
        self.alpha = alpha if obc else 1.0
        self.simulator = OcclusionSimulator(float(obc_size), obc_fill) if obc else None
        self.tri_margin, self.id_weight, self.ce_eps = tri_margin, id_weight, ce_eps
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, -1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, -1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        a = cfg.MODEL.ALIGNED
        return {
            "backbone": build_backbone(cfg), "feat_dim": cfg.MODEL.BACKBONE.FEAT_DIM, "local_dim": a.LOCAL_DIM,
            "pool": a.POOL, "num_classes": cfg.MODEL.HEADS.NUM_CLASSES, "obc": a.OBC.ENABLED, "alpha": a.OBC.ALPHA,
            "obc_size": a.OBC.SIZE, "obc_fill": a.OBC.FILL, "obc_neck": a.OBC.NECK, "tri_margin": cfg.MODEL.LOSSES.TRI.MARGIN,
            "id_weight": a.ID_WEIGHT, "ce_eps": cfg.MODEL.LOSSES.CE.EPSILON, "local_norm": a.LOCAL_NORM,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN, "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def features(self, images: torch.Tensor):
        """Normalised images (B, 3, H, W) -> (global (B, C), local (B, h, c), map (B, C, h, w)).

        With ``local_norm`` (``MODEL.ALIGNED.LOCAL_NORM``, default) each stripe feature is L2-normalised along c, as
        AlignedReID's reference implementation does before the local distance (``local_loss(...,
        normalize_feature=True)`` and its test features): ||f_i - g_j|| <= 2, so Eq. 1's d_ij stays below
        tanh(1) = 0.76 instead of saturating at 1 for every pair (projects/AlignedReID/README.md)."""
        fmap = self.backbone(images)
        glob = fmap.mean(dim=(2, 3)) if self.pool == "avg" else fmap.amax(dim=(2, 3))
        local = self.heads.local(fmap)
        if self.local_norm:
            local = nn.functional.normalize(local, dim=-1, eps=1e-12)
        return glob, local, fmap

    def forward(self, batched_inputs):
        images = batched_inputs["images"].to(self.device)
        if not self.training:
            glob, local, _ = self.features((images - self.pixel_mean) / self.pixel_std)
            return torch.cat([glob, local.flatten(1)], dim=1)
        targets = batched_inputs["targets"].to(self.device)
        if targets.sum() < 0:  # FastReID's PreciseBN passes -1 labels
            targets.zero_()
        occluded = None
        if self.simulator is not None:
            # [X; Occ(X)] on the raw 0-255 images, occlusion labels 1 (clean) / 0 (occluded), Sec. 4
            images = torch.cat([images, self.simulator.occlude_batch(images)])
            occluded = torch.cat([torch.ones_like(targets), torch.zeros_like(targets)])
            targets = torch.cat([targets, targets])
        glob, local, _ = self.features((images - self.pixel_mean) / self.pixel_std)
        return self.losses(glob, local, targets, occluded)

    def losses(self, glob, local, targets, occlusion_labels=None):
        """Sec. 3.2.3 and Eq. 3: L_T = TriHard(global) + triplet(local) on the global hard pairs;
        L = alpha L_T + (1 - alpha) L_O with the OBC head."""
        dist = euclidean_dist(glob, glob)
        pos, neg = hard_pairs(dist, targets)
        idx = torch.arange(len(targets), device=glob.device)
        ranking = nn.functional.margin_ranking_loss
        one = torch.ones_like(dist[:, 0])
        l_glob = ranking(dist[idx, neg], dist[idx, pos], one, margin=self.tri_margin)
        d_ap = aligned_local_distance(local, local[pos], paired=True)
        d_an = aligned_local_distance(local, local[neg], paired=True)
        l_local = ranking(d_an, d_ap, one, margin=self.tri_margin)
        loss = {"loss_triplet_global": self.alpha * l_glob, "loss_triplet_local": self.alpha * l_local}
        if self.heads.obc is not None:
            logits = self.heads.obc(glob)
            loss["loss_obc"] = (1 - self.alpha) * nn.functional.cross_entropy(logits, occlusion_labels)
        if self.heads.classifier is not None:
            logits = self.heads.classifier(glob)
            log_accuracy(logits.detach(), targets)
            loss["loss_cls"] = self.id_weight * cross_entropy_loss(logits, targets, self.ce_eps)
        return loss


def aligned_distance(query, gallery, feat_dim: int, stripes: int, mode: str = "global") -> np.ndarray:
    """Test distance of AlignedReID: "global" (Euclidean of the global features), "local" (the aligned local
    distance, shortest path through Eq. 1) or "sum" (their sum, as AlignedReID reports).

    Args: query (q, C + h c), gallery (g, C + h c): the test features [global, local stripes]; feat_dim C;
    stripes h. Returns (q, g) float32. Raises ValueError for an unknown mode.
    """
    if mode not in TEST_DISTANCES:
        raise ValueError(f"MODEL.ALIGNED.TEST_DISTANCE must be one of {TEST_DISTANCES}, got {mode!r}")
    query, gallery = torch.as_tensor(query).float(), torch.as_tensor(gallery).float()
    out = torch.zeros(len(query), len(gallery))
    if mode in ("global", "sum"):
        out += torch.cdist(query[:, :feat_dim], gallery[:, :feat_dim])
    if mode in ("local", "sum"):
        c = (query.shape[1] - feat_dim) // stripes
        out += aligned_local_distance(query[:, feat_dim:].reshape(len(query), stripes, c),
                                      gallery[:, feat_dim:].reshape(len(gallery), stripes, c))
    return out.numpy()


def aligned_distance_from_cfg(cfg):
    """The test distance of a config, for :class:`occreid.fastreid.OccReIDEvaluator`."""
    c, mode = cfg.MODEL.BACKBONE.FEAT_DIM, cfg.MODEL.ALIGNED.TEST_DISTANCE
    local_dim = cfg.MODEL.ALIGNED.LOCAL_DIM

    def distance(q, g):
        stripes = (q.shape[1] - c) // local_dim
        return aligned_distance(q, g, c, stripes, mode)
    return distance


def add_aligned_config(cfg):
    """``MODEL.ALIGNED.*`` with the paper's values (Sec. 3-4, 6.4-6.5)."""
    from fastreid.config import CfgNode as CN
    if "ALIGNED" in cfg.MODEL:
        return cfg
    a = cfg.MODEL.ALIGNED = CN()
    a.LOCAL_DIM = 128            # the 1x1 conv C -> c
    a.LOCAL_NORM = True          # L2-normalise each stripe before Eq. 1 (AlignedReID's reference code)
    a.POOL = "avg"               # global / horizontal pooling
    a.ID_WEIGHT = 0.0            # the OBC paper's AlignedReID loss is triplet only (Sec. 3.2.3, 6.5)
    a.TEST_DISTANCE = "global"   # global | local | sum
    a.OBC = CN({"ENABLED": True, "ALPHA": 0.8,   # Eq. 3, alpha = 0.8 (Sec. 6.5)
                "SIZE": 0.305,                   # patch area fraction: 50 x 50 of a 128 x 64 image (Alg. 1)
                "FILL": "mean",                  # Alg. 1: the image's mean colour (Sec. 6.4: black first)
                "NECK": "none"})                 # "bn": BatchNorm1d before the FC (not in the paper, README)
    return cfg


def register_aligned():
    if "AlignedReID" not in META_ARCH_REGISTRY._obj_map:
        META_ARCH_REGISTRY.register(AlignedReID)
