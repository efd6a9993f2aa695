"""Reconstructive pooling of SGR (Yan et al., ICCV 2021, Eq. 2)."""

import torch
from torch import nn


class ReconstructivePooling(nn.Module):
    """f_r = (W_v F) softmax(W_m F)^T: a saliency-weighted sum of the transformed positions of the
    final map F (c x wh). Used in training only (SGR Sec. 3.3).

    Args:
        channels: c.
    Shapes: (B, c, H, W) -> (B, c).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.value = nn.Conv2d(channels, channels, 1, bias=False)   # W_v, c x c
        self.mask = nn.Conv2d(channels, 1, 1, bias=False)           # W_m, 1 x c

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """(B, HW) softmax over positions of W_m F."""
        return torch.softmax(self.mask(x).flatten(2), dim=2)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.value(x).flatten(2)  # (B, c, HW)
        return torch.bmm(v, self.weights(x).unsqueeze(2))[:, :, 0]
