"""Center-Focus Module (CFM) of OCNet (Kim et al., ICASSP 2022, Sec. 2.1, Fig. 3b)."""

import torch
from torch import nn


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` cells of a (B, C, H, W) map (clipped to H and W).

    For an odd remainder the crop sits one cell towards the top / left."""
    h, w = x.shape[-2:]
    sh, sw = min(size, h), min(size, w)
    top, left = (h - sh) // 2, (w - sw) // 2
    return x[..., top:top + sh, left:left + sw]


class CenterFocusModule(nn.Module):
    """Crop the spatial centre of F_BB, softmax it into a spatial probability map, multiply and add.

    "CFM crops the part corresponding to the center in the spatial domain of F_BB and the softmax is
    taken to form a spatial-level probability map ... we extract a feature focusing on the center by
    multiplying and adding with F_BB" (Sec. 2.1). Our reading (the figure is missing; see
    projects/OCNet/README.md): with Z the centre crop (``size`` x ``size`` cells, W = 2 best, Table 3),
    the score of each cell is the channel mean of Z, P = softmax over the cells, and the output is
    ``Z * P + Z``; the centre feature f_c is pooled from it, so a larger crop mixes in more of the
    surroundings, as Table 3's discussion says.

    Args:
        size: crop side W in feature-map cells.
    Shapes: (B, C, H, W) -> (B, C, W', W') with W' = min(size, H or W).
    """

    def __init__(self, size: int = 2):
        super().__init__()
        if size < 1:
            raise ValueError(f"CFM size must be >= 1, got {size}")
        self.size = size

    def probability_map(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 1, h, w) softmax over the h*w cells of the channel-mean score of ``z``."""
        b, _, h, w = z.shape
        score = z.mean(1).reshape(b, h * w)
        return torch.softmax(score, dim=1).reshape(b, 1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = center_crop(x, self.size)
        return z * self.probability_map(z) + z
