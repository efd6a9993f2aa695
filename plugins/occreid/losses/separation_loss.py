"""Separation Loss of OCNet (Kim et al., ICASSP 2022, Eq. 1)."""

from typing import Sequence

import torch
import torch.nn.functional as F


def separation_loss(f_g: torch.Tensor, parts: Sequence[torch.Tensor], reduction: str = "mean") -> torch.Tensor:
    """L_SL = sum_p (1 + cos(f_g, f_p)) (Eq. 1; with the two parts f_t, f_b of the paper:
    (1 + cos(f_g, f_t)) + (1 + cos(f_g, f_b))). It is 0 when every part points opposite to f_g and
    grows as the global feature shares information with the parts.

    Args:
        f_g: (B, D) global feature.
        parts: part features, each (B, D) (the paper: [f_t, f_b]).
        reduction: ``"mean"`` over the batch, or ``"none"`` for the per-sample (B,) loss.
    Raises:
        ValueError: no part, shapes differ, or unknown reduction.
    """
    if not parts:
        raise ValueError("separation_loss needs at least one part feature")
    if any(p.shape != f_g.shape for p in parts):
        raise ValueError(f"part shapes {[tuple(p.shape) for p in parts]} differ from f_g {tuple(f_g.shape)}")
    loss = sum(1.0 + F.cosine_similarity(f_g, p, dim=1, eps=1e-8) for p in parts)
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean()
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
