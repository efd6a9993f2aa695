"""Bounded Exponential Distance loss of SGR (Yan et al., ICCV 2021, Eq. 3-4)."""

import torch


def bed_pair_loss(d: torch.Tensor, same: torch.Tensor, alpha: float = 0.3) -> torch.Tensor:
    """Eq. 3 elementwise: ``y (1 - exp(-alpha d)) + (1 - y) exp(-alpha d)``.

    Bounds (Eq. 4): 0 at d = 0 and 1 as d -> inf for the same identity (y = 1); 1 at d = 0 and 0 as
    d -> inf for different identities. ``d``: l2 distances (any shape); ``same``: same shape, 0/1 or bool.
    """
    e = torch.exp(-alpha * d)
    y = same.to(d.dtype)
    return y * (1 - e) + (1 - y) * e


REDUCTIONS = ("balanced", "pairs", "sum")


def bed_loss(features: torch.Tensor, targets: torch.Tensor, alpha: float = 0.3,
             reduction: str = "pairs") -> torch.Tensor:
    """BED loss of a batch (SGR Eq. 3, alpha = 0.3 in the paper), from the pair loss of Eq. 3 over the
    ordered pairs i != j.

    The paper defines the loss of one pair and not how a batch averages it. ``reduction``:

    - ``"pairs"`` (default): the plain mean over all B (B - 1) ordered pairs;
    - ``"sum"``: for each anchor the sum of Eq. 3 over all j != i, averaged over the anchors
      (= (B - 1) x ``"pairs"``): every pair of the batch counts fully, as in a loss summed over a set of
      pairs. Measured on real Occluded-Duke batches (projects/SGR/README.md, choice 5), this is the only
      reduction whose gradient at the backbone is of the order of the identity loss's (the means are
      about 100x weaker), and on the CPU protocol it wrecks the pretrained features;
    - ``"balanced"``: for each anchor i, the mean of Eq. 3 over its positives (same identity)
      plus the mean over its negatives, averaged over the anchors that have both:
      ``1/|A| sum_i [mean_{j in P(i)} L_ij + mean_{j in N(i)} L_ij]`` (the usual batch form of a pairwise
      contrastive loss). In a P x K batch an anchor has K - 1 (SGR's compound batch: 2K - 1) positives
      against hundreds of negatives, so without this the positives' pull, the "exponential penalty on
      small intra-person distances" the paper argues for, is diluted by the negatives;

    Args:
        features: (B, D) pooled features z (l2 distance between them, Eq. 3).
        targets: (B,) identity labels.
    Returns: a scalar (float32).
    Raises:
        ValueError: fewer than two samples, an unknown reduction, or (``"balanced"``) no anchor with
        both a positive and a negative.
    """
    b = features.shape[0]
    if b < 2:
        raise ValueError("bed_loss needs at least two samples")
    if reduction not in REDUCTIONS:
        raise ValueError(f"bed_loss reduction must be one of {REDUCTIONS}, got {reduction!r}")
    features = features.float()  # distances of close pairs need float32 (also under AMP)
    sq = (features * features).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * features @ features.t()).clamp(min=1e-12)
    d = d2.sqrt()
    same = targets[:, None] == targets[None, :]
    off = ~torch.eye(b, dtype=torch.bool, device=features.device)
    if reduction == "pairs":
        return bed_pair_loss(d[off], same[off], alpha).mean()
    if reduction == "sum":
        return bed_pair_loss(d[off], same[off], alpha).sum() / b
    loss = bed_pair_loss(d, same, alpha)
    pos, neg = (same & off).float(), (~same).float()
    npos, nneg = pos.sum(1), neg.sum(1)
    valid = (npos > 0) & (nneg > 0)
    if not valid.any():
        raise ValueError("bed_loss (balanced) needs an anchor with both a positive and a negative in the batch")
    per_anchor = (loss * pos).sum(1) / npos.clamp(min=1) + (loss * neg).sum(1) / nneg.clamp(min=1)
    return per_anchor[valid].mean()
