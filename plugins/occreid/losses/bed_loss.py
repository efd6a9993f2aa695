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


def bed_loss(features: torch.Tensor, targets: torch.Tensor, alpha: float = 0.3) -> torch.Tensor:
    """Mean BED loss over all ordered pairs i != j of a batch (SGR Eq. 3, alpha = 0.3 in the paper).

    Args:
        features: (B, D) pooled features z (l2 distance between them, Eq. 3).
        targets: (B,) identity labels.
    Returns: a scalar (float32).
    """
    b = features.shape[0]
    if b < 2:
        raise ValueError("bed_loss needs at least two samples")
    features = features.float()  # distances of close pairs need float32 (also under AMP)
    sq = (features * features).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2 * features @ features.t()).clamp(min=1e-12)
    d = d2.sqrt()
    same = targets[:, None] == targets[None, :]
    off = ~torch.eye(b, dtype=torch.bool, device=features.device)
    return bed_pair_loss(d[off], same[off], alpha).mean()
