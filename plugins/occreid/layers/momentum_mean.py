"""Momentum-effect elimination of SGR (Yan et al., ICCV 2021, Eq. 6; after Tang et al., NeurIPS 2020)."""

import torch
import torch.nn.functional as F
from torch import nn


class MomentumMeanFeature(nn.Module):
    """A running mean of the batches' mean l2-normalised feature, kept as a buffer (saved in
    checkpoints): mu_t = beta mu_{t-1} + (1 - beta) mean_b(z_b / |z_b|) (Eq. 6, mu_0 = 0).

    ``update(z)`` in training; ``forward(z)`` returns ``z / |z| - mu`` (the de-biased test feature).

    Args:
        dim: feature size D. beta: momentum (paper: 0.9).
    Shapes: (B, D) -> (B, D).
    """

    def __init__(self, dim: int, beta: float = 0.9):
        super().__init__()
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.beta = beta
        self.register_buffer("mean", torch.zeros(dim))

    @torch.no_grad()
    def update(self, z: torch.Tensor) -> torch.Tensor:
        """mu <- beta mu + (1 - beta) mean_b(z_b / |z_b|). Under torch.distributed the batch mean is averaged over
        the ranks (equal per-rank batches: the mean of the global batch), so every rank keeps the same mu as one
        process training on the whole batch."""
        batch_mean = F.normalize(z.detach(), dim=1).mean(0)
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            torch.distributed.all_reduce(batch_mean)
            batch_mean /= torch.distributed.get_world_size()
        self.mean.mul_(self.beta).add_((1 - self.beta) * batch_mean)
        return self.mean

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=1) - self.mean
