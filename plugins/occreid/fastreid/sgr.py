"""SGR (Yan et al., "Occluded Person Re-Identification with Single-scale Global Representations",
ICCV 2021) on FastReID's strong baseline: ``MODEL.META_ARCHITECTURE: SGR``, ``MODEL.HEADS.NAME: SGRHead``.

The method's pieces are toolbox-free (:class:`occreid.layers.DNLBlock`,
:class:`occreid.layers.ReconstructivePooling`, :class:`occreid.layers.MultiHeadClassifier`,
:class:`occreid.layers.MomentumMeanFeature`, :func:`occreid.losses.bed_loss`,
:class:`occreid.data.BatchConstantErasing`); this module is the FastReID glue:

- :func:`insert_dnl_blocks`: DNL blocks (Eq. 1) after the last n blocks of each backbone stage, where
  FastReID puts its non-local blocks (ResNet-50: 2 in stage 2, 3 in stage 3), replacing them;
- :class:`SGRHead`: GeM -> BNNeck -> classifier (multi-head, L_c of Eq. 5, or FastReID's), reconstructive
  pooling of the final map (Eq. 2, training only) and the momentum mean feature (Eq. 6);
- :class:`SGR`: FastReID's ``Baseline`` with Compound Batch Erasing of the training batch (Sec. 3.2),
  the loss of Eq. 5 and its ablation switches (Table 5).

Config keys (``MODEL.SGR.*``, ``INPUT.CBE.*``; defaults are the paper's values): see
:func:`add_sgr_config` and projects/SGR/README.md.
"""

import logging

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import RandomErasing

from fastreid.config import configurable
from fastreid.layers import any_softmax, get_norm, pooling
from fastreid.layers.weight_init import weights_init_kaiming
from fastreid.modeling.heads import REID_HEADS_REGISTRY
from fastreid.modeling.losses import cross_entropy_loss, log_accuracy, triplet_loss
from fastreid.modeling.meta_arch import META_ARCH_REGISTRY
from fastreid.modeling.meta_arch.baseline import Baseline

from occreid.data.batch_erasing import BatchConstantErasing, compound_batch
from occreid.layers import DNLBlock, MomentumMeanFeature, MultiHeadClassifier, ReconstructivePooling
from occreid.losses import bed_loss

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------
# DNL-enabled backbone (Sec. 3.2, Eq. 1)

def _stages(backbone):
    """The four stages of a FastReID backbone at strides 4, 8, 16 and the last one, each as
    ``(name, stage module, indices of its blocks)``. Raises ValueError for other backbones."""
    kind = type(backbone).__name__
    if kind == "ResNet":
        return [(f"layer{i}", getattr(backbone, f"layer{i}"), list(range(len(getattr(backbone, f"layer{i}")))))
                for i in range(1, 5)]
    if kind == "OSNet":
        out = []
        for name in ("conv2", "conv3", "conv4"):
            stage = getattr(backbone, name)
            out.append((name, stage, [i for i, m in enumerate(stage) if type(m).__name__ == "OSBlock"]))
        return out + [("conv5", backbone.conv5, [])]
    raise ValueError(f"MODEL.SGR.DNL: cannot place DNL blocks in a {kind} backbone "
                     f"(supported: FastReID's ResNet and OSNet); set MODEL.SGR.DNL.ENABLED False")


@torch.no_grad()
def _output_channels(backbone, modules):
    """Output channels of ``modules`` (blocks inside ``backbone``), from one forward pass of a small image."""
    chans = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, k=id(m): chans.__setitem__(k, out.shape[1]))
             for m in modules]
    was_training = backbone.training
    try:
        device = next(backbone.parameters()).device
        backbone.eval()(torch.zeros(1, 3, 64, 32, device=device))
    finally:
        backbone.train(was_training)
        for h in hooks:
            h.remove()
    return [chans[id(m)] for m in modules]


def insert_dnl_blocks(backbone, layers, reduction=2):
    """Put :class:`~occreid.layers.DNLBlock` s after the last ``layers[s]`` blocks of stage s (in place).

    This is FastReID's non-local placement (``NL_LAYERS`` of ResNet-50 = [0, 2, 3, 0]: two blocks in
    the second and three in the third stage, as SGR Sec. 3.2 says); FastReID's own ``Non_local``
    blocks (``MODEL.BACKBONE.WITH_NL``) are replaced. Each block starts as the identity (zero-initialised
    output BN), so pre-trained weights keep their function.

    Args:
        backbone: a FastReID ``ResNet`` (stages layer1-4) or ``OSNet`` (conv2, conv3, conv4: strides 4,
            8, 16; conv5 has no blocks).
        layers: 4 counts, one per stage.
        reduction: DNL inner size = channels / reduction.
    Returns: the backbone.
    Raises:
        ValueError: another backbone, ``layers`` not of length 4, or more blocks asked than a stage has.
    """
    layers = list(layers)
    stages = _stages(backbone)
    if len(layers) != 4:
        raise ValueError(f"MODEL.SGR.DNL.LAYERS needs 4 counts (one per stage), got {layers}")
    for (name, stage, blocks), n in zip(stages, layers):
        if n > len(blocks):
            raise ValueError(f"MODEL.SGR.DNL.LAYERS asks for {n} DNL blocks in {name}, which has {len(blocks)} blocks")
    where = [(name, stage, blocks[len(blocks) - n:]) for (name, stage, blocks), n in zip(stages, layers) if n > 0]
    targets = [stage[i] for _, stage, idx in where for i in idx]
    channels = iter(_output_channels(backbone, targets) if targets else [])
    kind = type(backbone).__name__
    if kind == "ResNet":  # FastReID's Non_local blocks go, in every stage
        for s in range(1, 5):
            setattr(backbone, f"NL_{s}", nn.ModuleList())
            setattr(backbone, f"NL_{s}_idx", [])
    for name, stage, idx in where:
        dnls = [DNLBlock(next(channels), reduction) for _ in idx]
        if kind == "ResNet":  # FastReID's ResNet runs NL_s[k] after block NL_s_idx[k] of layer s
            s = name[-1]
            setattr(backbone, f"NL_{s}", nn.ModuleList(dnls))
            setattr(backbone, f"NL_{s}_idx", list(idx))
        else:
            after = dict(zip(idx, dnls))
            mods = []
            for i, m in enumerate(stage):
                mods.append(m)
                if i in after:
                    mods.append(after[i])
            setattr(backbone, name, nn.Sequential(*mods))
    logger.info("DNL blocks: " + ", ".join(f"{len(idx)} in {name}" for name, _, idx in where))
    return backbone


# --------------------------------------------------------------------------------------------------
# Head: GeM + BNNeck + classifier, reconstructive pooling, momentum mean

class IdentityClassifier(nn.Module):
    """Identity classifier on a BNNeck output b (B, C): SGR's multi-head classifier (``cls_type=
    "multihead"``, :class:`~occreid.layers.MultiHeadClassifier`, L_c of Eq. 5) or one of FastReID's
    (``Linear``, ``CircleSoftmax``, ``ArcSoftmax``, ``CosSoftmax``, as in its ``EmbeddingHead``).

    ``forward(b, targets)`` returns ``(cls_outputs, pred_class_logits)``: for the multi-head classifier
    with ``loss="per_head"`` ``cls_outputs`` are the (H, B, N) head logits (one CE each, Eq. 5), with
    ``"summed"`` their mean (B, N) (Tang et al.); for FastReID's, the margin logits (B, N).
    Raises: ValueError for an unknown ``cls_type`` or ``loss``.
    """

    def __init__(self, feat_dim, num_classes, cls_type="multihead", heads=2, scale=16.0, gamma=1 / 32,
                 margin=0.0, loss="per_head"):
        super().__init__()
        if loss not in ("per_head", "summed"):
            raise ValueError(f"MODEL.SGR.CLS.LOSS must be 'per_head' or 'summed', got {loss!r}")
        self.loss = loss
        if cls_type == "multihead":
            self.multihead = MultiHeadClassifier(feat_dim, num_classes, heads, scale, gamma)
            self.weight, self.cls_layer = None, None
        else:
            if not hasattr(any_softmax, cls_type):
                raise ValueError(f"classifier {cls_type!r} is neither 'multihead' nor one of FastReID's "
                                 f"(MODEL.HEADS.CLS_LAYER: Linear, CircleSoftmax, ArcSoftmax, CosSoftmax)")
            self.multihead = None
            self.weight = nn.Parameter(torch.empty(num_classes, feat_dim))
            nn.init.normal_(self.weight, std=0.01)
            self.cls_layer = getattr(any_softmax, cls_type)(num_classes, scale, margin)

    def forward(self, b, targets):
        if self.multihead is not None:
            heads = self.multihead.head_logits(b)   # (H, B, N)
            pred = heads.mean(0)                    # Tang et al.'s logits
            return (heads if self.loss == "per_head" else pred), pred
        if self.cls_layer.__class__.__name__ == "Linear":
            logits = F.linear(b, self.weight)
        else:
            logits = F.linear(F.normalize(b), F.normalize(self.weight))
        return self.cls_layer(logits.clone(), targets), logits.mul(self.cls_layer.s)


class SGRHead(nn.Module):
    """SGR's head on the final backbone map F (B, C, h, w).

    - global feature: ``pool`` (GeM in the paper's FastReID baseline) -> BNNeck; the feature z used by
      the metric losses, the momentum mean and the test is the pooled feature (``neck_feat="before"``,
      SGR: "the features after the global pooling", Sec. 3.2) or the BNNeck output (``"after"``, FastReID's
      strong baseline). The momentum mean of BNNeck outputs is ~0 (training-mode BN centres every
      channel over the batch), so ME needs ``"before"``;
    - :class:`IdentityClassifier` on the BNNeck output (L_c of Eq. 5);
    - reconstructive pooling f_r of F (Eq. 2), training only (``rp``); with ``rp_cls`` f_r also gets its
      own BNNeck and identity classifier (Fig. 2: "the BED loss together with the identity loss is
      applied to both features");
    - momentum mean mu of the normalised z (Eq. 6), updated in every training step with gradients, kept
      as the buffer ``momentum_mean.mean`` (saved in checkpoints); with ``me`` the test feature is
      ``z / |z| - mu``, else z. ``test_feat="bnneck"`` tests with the BNNeck output instead (FastReID's
      strong-baseline test feature), ignoring ``me``: ME against BNNeck features on one checkpoint.

    Training output: dict with ``cls_outputs`` (see :class:`IdentityClassifier`), ``pred_class_logits``
    (B, N), ``features`` z (B, C) and, with ``rp``, ``rp_features`` (B, C) (and ``rp_cls_outputs``).
    Test output: (B, C).
    """

    @configurable
    def __init__(self, *, feat_dim, num_classes, pool_type="GeneralizedMeanPoolingP", neck_feat="before",
                 with_bnneck=True, norm_type="BN", cls_type="multihead", cls_heads=2, cls_scale=16.0,
                 cls_gamma=1 / 32, cls_margin=0.0, cls_loss="per_head", rp=True, rp_cls=False, me=True,
                 me_beta=0.9, test_feat="auto"):
        super().__init__()
        if test_feat not in ("auto", "bnneck"):
            raise ValueError(f"MODEL.SGR.TEST_FEAT must be 'auto' or 'bnneck', got {test_feat!r}")
        self.test_feat = test_feat
        if not hasattr(pooling, pool_type):
            raise ValueError(f"MODEL.HEADS.POOL_LAYER {pool_type!r} is not one of FastReID's pooling layers")
        if neck_feat not in ("before", "after"):
            raise ValueError(f"MODEL.HEADS.NECK_FEAT must be 'before' or 'after', got {neck_feat!r}")
        if me and neck_feat == "after":
            logger.warning("MODEL.SGR.ME.ENABLED with MODEL.HEADS.NECK_FEAT 'after': the momentum mean of "
                           "BNNeck outputs is close to 0 (BN centres each channel), ME will change little")
        self.pool_layer = getattr(pooling, pool_type)()
        self.neck_feat = neck_feat
        self.bottleneck = get_norm(norm_type, feat_dim, bias_freeze=True) if with_bnneck else nn.Identity()
        self.bottleneck.apply(weights_init_kaiming)
        cls_args = (feat_dim, num_classes, cls_type, cls_heads, cls_scale, cls_gamma, cls_margin, cls_loss)
        self.classifier = IdentityClassifier(*cls_args)
        self.rp = ReconstructivePooling(feat_dim) if rp else None
        self.rp_bottleneck, self.rp_classifier = None, None
        if rp and rp_cls:
            self.rp_bottleneck = get_norm(norm_type, feat_dim, bias_freeze=True) if with_bnneck else nn.Identity()
            self.rp_bottleneck.apply(weights_init_kaiming)
            self.rp_classifier = IdentityClassifier(*cls_args)
        self.me = me
        self.momentum_mean = MomentumMeanFeature(feat_dim, me_beta)

    @classmethod
    def from_config(cls, cfg):
        s, h = cfg.MODEL.SGR, cfg.MODEL.HEADS
        multi = s.CLS.NAME == "multihead"
        if s.CLS.NAME not in ("multihead", "fastreid"):
            raise ValueError(f"MODEL.SGR.CLS.NAME must be 'multihead' or 'fastreid', got {s.CLS.NAME!r}")
        return {
            "feat_dim": cfg.MODEL.BACKBONE.FEAT_DIM, "num_classes": h.NUM_CLASSES, "pool_type": h.POOL_LAYER,
            "neck_feat": h.NECK_FEAT, "with_bnneck": h.WITH_BNNECK, "norm_type": h.NORM,
            "cls_type": "multihead" if multi else h.CLS_LAYER, "cls_heads": s.CLS.HEADS,
            "cls_scale": s.CLS.SCALE if multi else h.SCALE, "cls_gamma": s.CLS.GAMMA,
            "cls_margin": h.MARGIN, "cls_loss": s.CLS.LOSS if multi else "summed",
            "rp": s.RP.ENABLED, "rp_cls": s.RP.CLS, "me": s.ME.ENABLED, "me_beta": s.ME.BETA,
            "test_feat": s.TEST_FEAT,
        }

    def forward(self, features, targets=None):
        gf = self.pool_layer(features)                      # (B, C, 1, 1)
        bn = self.bottleneck(gf)[..., 0, 0]
        z = bn if self.neck_feat == "after" else gf[..., 0, 0]
        if not self.training:
            if self.test_feat == "bnneck":
                return bn
            return self.momentum_mean(z) if self.me else z
        if torch.is_grad_enabled():  # not in FastReID's PreciseBN passes
            self.momentum_mean.update(z)
        cls_outputs, pred = self.classifier(bn, targets)
        out = {"cls_outputs": cls_outputs, "pred_class_logits": pred, "features": z}
        if self.rp is not None:
            out["rp_features"] = self.rp(features)
            if self.rp_classifier is not None:
                rb = self.rp_bottleneck(out["rp_features"][..., None, None])[..., 0, 0]
                out["rp_cls_outputs"] = self.rp_classifier(rb, targets)[0]
        return out


# --------------------------------------------------------------------------------------------------
# Meta-architecture

class SGR(Baseline):
    """FastReID's ``Baseline`` (backbone -> head, same test path) with SGR's training step:

    1. Compound Batch Erasing (Sec. 3.2), when ``cbe_stripes`` is given: the sampled batch X (B images,
       0-255 scale) becomes X_full = [RE(X); BcE(X)] (2B) with the labels repeated, so both halves keep
       the P x K identities; RE is Zhong et al.'s random erasing (torchvision's ``RandomErasing``, probability
       ``cbe_re_prob``, area ``cbe_re_scale`` of the image, aspect ``cbe_re_ratio``),
       BcE erases one of s in ``cbe_stripes`` horizontal stripes in every image of its half. With
       ``cbe_second="re"`` the second half is another random-erasing draw, [RE(X); RE(X)]: the control
       that doubles the batch without BcE.
    2. Loss (Eq. 5): L = L_bed^rpf + L_bed^gf + L_c with L_bed (Eq. 3, :func:`occreid.losses.bed_loss`,
       alpha = ``bed_alpha``) on the l2-normalised (``bed_norm_feat``) reconstructive-pooled and global
       features, over the ordered pairs of the 2B batch reduced by ``bed_reduction`` (``"sum"``: per anchor, the sum
       over the other 2B - 1 images, averaged over anchors; ``"balanced"``: per anchor, mean over positives
       + mean over negatives; ``"pairs"``: mean over all pairs; :func:`occreid.losses.bed_loss`); L_c the head's classification loss (sum of the
       heads' label-smoothing CE for the multi-head classifier), on the global feature and, with
       ``MODEL.SGR.RP.CLS``, on f_r too. With ``bed_enabled=False`` the metric
       loss is FastReID's batch-hard triplet (the baseline's), on the same features.

    Args (besides ``Baseline``'s backbone, heads, pixel_mean, pixel_std, loss_kwargs):
        cbe_stripes: stripe counts of BcE (paper: 6, 7, 8), or None for no CBE.
        cbe_re_prob: random-erasing probability of the RE half. cbe_value: fill value (3 values, 0-255).
        cbe_second: ``"bce"`` (the paper) or ``"re"`` (control).
        bed_enabled, bed_alpha, bed_norm_feat, bed_reduction: see 2.
    """

    @configurable
    def __init__(self, *, backbone, heads, pixel_mean, pixel_std, loss_kwargs, cbe_stripes=(6, 7, 8),
                 cbe_re_prob=0.5, cbe_re_scale=(0.02, 0.4), cbe_re_ratio=(0.3, 3.33),
                 cbe_value=(123.675, 116.28, 103.53), cbe_second="bce", bed_enabled=True, bed_alpha=0.3,
                 bed_norm_feat=True, bed_reduction="pairs"):
        super().__init__(backbone=backbone, heads=heads, pixel_mean=pixel_mean, pixel_std=pixel_std,
                         loss_kwargs=loss_kwargs)
        if not isinstance(heads, SGRHead):
            raise ValueError(f"the SGR meta-architecture needs MODEL.HEADS.NAME SGRHead, got {type(heads).__name__}")
        if cbe_second not in ("bce", "re"):
            raise ValueError(f"INPUT.CBE.SECOND must be 'bce' or 're', got {cbe_second!r}")
        self.cbe = bool(cbe_stripes)
        self.batch_erasing = BatchConstantErasing(cbe_stripes, list(cbe_value)) \
            if cbe_stripes and cbe_second == "bce" else None
        self.random_erasing = RandomErasing(p=cbe_re_prob, scale=tuple(cbe_re_scale), ratio=tuple(cbe_re_ratio),
                                            value=list(cbe_value)) if cbe_stripes else None
        self.bed_enabled, self.bed_alpha, self.bed_norm_feat = bed_enabled, bed_alpha, bed_norm_feat
        self.bed_reduction = bed_reduction

    @classmethod
    def from_config(cls, cfg):
        if cfg.MODEL.HEADS.NAME != "SGRHead":
            raise ValueError(f"MODEL.META_ARCHITECTURE SGR needs MODEL.HEADS.NAME SGRHead, got {cfg.MODEL.HEADS.NAME!r}")
        cbe = cfg.INPUT.CBE
        if cbe.ENABLED and cfg.INPUT.REA.ENABLED:
            raise ValueError("INPUT.CBE.ENABLED applies random erasing to one half of the batch itself; "
                             "set INPUT.REA.ENABLED False (the data pipeline would erase both halves)")
        args = Baseline.from_config(cfg)
        s = cfg.MODEL.SGR
        if s.DNL.ENABLED:
            insert_dnl_blocks(args["backbone"], s.DNL.LAYERS, s.DNL.REDUCTION)
        args.update(cbe_stripes=tuple(cbe.STRIPES) if cbe.ENABLED else None, cbe_re_prob=cbe.RE_PROB,
                    cbe_re_scale=tuple(cbe.RE_SCALE), cbe_re_ratio=tuple(cbe.RE_RATIO),
                    cbe_value=tuple(cbe.VALUE), cbe_second=cbe.SECOND, bed_enabled=s.BED.ENABLED,
                    bed_alpha=s.BED.ALPHA, bed_norm_feat=s.BED.NORM_FEAT, bed_reduction=s.BED.REDUCTION)
        return args

    def forward(self, batched_inputs):
        if not self.training:
            return super().forward(batched_inputs)
        images, targets = batched_inputs["images"], batched_inputs["targets"]
        if targets.sum() < 0:  # FastReID's PreciseBN passes -1 labels
            targets.zero_()
        if self.cbe:
            images, targets = compound_batch(images, targets, self.random_erasing, self.batch_erasing)
        features = self.backbone(self.preprocess_image(images))
        return self.losses(self.heads(features, targets), targets)

    def losses(self, outputs, gt_labels):
        """Eq. 5 (or the baseline's CE + triplet with ``bed_enabled=False``); a dict of named terms."""
        log_accuracy(outputs["pred_class_logits"].detach(), gt_labels)
        names = self.loss_kwargs["loss_names"]
        loss = {}
        if "CrossEntropyLoss" in names:
            ce = self.loss_kwargs["ce"]
            for key, name in (("cls_outputs", "loss_cls"), ("rp_cls_outputs", "loss_cls_rpf")):
                if key in outputs:
                    cls = outputs[key]
                    heads = cls if cls.dim() == 3 else cls[None]  # (H, B, N): one CE per head, summed
                    loss[name] = sum(cross_entropy_loss(c, gt_labels, ce["eps"], ce["alpha"]) for c in heads) * ce["scale"]
        feats = {"gf": outputs["features"]}
        if "rp_features" in outputs:
            feats["rpf"] = outputs["rp_features"]
        for name, f in feats.items():
            if self.bed_enabled:
                z = F.normalize(f, dim=1) if self.bed_norm_feat else f
                loss[f"loss_bed_{name}"] = bed_loss(z, gt_labels, self.bed_alpha, self.bed_reduction)
            elif "TripletLoss" in names:
                tri = self.loss_kwargs["tri"]
                loss[f"loss_triplet_{name}"] = triplet_loss(f, gt_labels, tri["margin"], tri["norm_feat"],
                                                            tri["hard_mining"]) * tri["scale"]
        return loss


def add_sgr_config(cfg):
    """``MODEL.SGR.*`` (the paper's values, every Table 5 component on) and ``INPUT.CBE.*`` (off by
    default for other models; projects/SGR/configs/Base-SGR.yml turns it on)."""
    from fastreid.config import CfgNode as CN
    if "SGR" not in cfg.MODEL:
        s = cfg.MODEL.SGR = CN()
        s.DNL = CN({"ENABLED": True, "LAYERS": [0, 2, 3, 0], "REDUCTION": 2})  # Sec. 3.2: 2 / 3 in stages 2 / 3
        s.RP = CN({"ENABLED": True, "CLS": False})  # Eq. 2; CLS: identity loss on f_r too (Fig. 2 caption; not Eq. 5)
        s.BED = CN({"ENABLED": True, "ALPHA": 0.3, "NORM_FEAT": True,          # Eq. 3, alpha = 0.3 (Sec. 5.1)
                    "REDUCTION": "pairs"})  # mean over all ordered pairs (or sum | balanced; README choice 5)
        s.CLS = CN({"NAME": "multihead", "HEADS": 2, "SCALE": 16.0, "GAMMA": 0.03125,  # Eq. 5, H = 2; Tang et al.
                    "LOSS": "per_head"})
        s.ME = CN({"ENABLED": True, "BETA": 0.9})                              # Eq. 6, beta = 0.9
        s.TEST_FEAT = "auto"   # auto: z / |z| - mu with ME, else z; bnneck: the BNNeck output
    if "CBE" not in cfg.INPUT:
        cfg.INPUT.CBE = CN({"ENABLED": False, "STRIPES": [6, 7, 8],  # Sec. 3.2
                            "RE_PROB": 0.5, "RE_SCALE": [0.02, 0.4], "RE_RATIO": [0.3, 3.33],  # Zhong et al.
                            "VALUE": [0.485 * 255, 0.456 * 255, 0.406 * 255],
                            "SECOND": "bce"})  # second half: BcE(X) (paper) or "re": RE(X), the doubled-batch control
    return cfg


def register_sgr():
    if "SGR" not in META_ARCH_REGISTRY._obj_map:
        META_ARCH_REGISTRY.register(SGR)
    if "SGRHead" not in REID_HEADS_REGISTRY._obj_map:
        REID_HEADS_REGISTRY.register(SGRHead)
