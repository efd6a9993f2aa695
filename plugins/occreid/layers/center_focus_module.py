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
    P = softmax of Z over its cells, and the output is ``Z * P + Z``; the centre feature f_c is pooled
    from it, so a larger crop mixes in more of the surroundings, as Table 3's discussion says.

    ``score``: ``"channel"`` (default): the softmax is taken over the cells separately for every channel
    (P is C x W x W, each channel's map sums to 1), so a channel that fires in one cell focuses there;
    ``"mean"``: one map for all channels, the softmax of the channel mean of each cell. On real
    OSNet x0.25 maps of Occluded-Duke the channel mean barely varies between the 4 centre cells and the
    ``"mean"`` map stays near uniform (0.24-0.26 against 0.25), i.e. the module reduces to pooling the
    centre; per channel the maps focus (projects/OCNet/README.md, "CFM").

    Args:
        size: crop side W in feature-map cells.
        score: ``"channel"`` or ``"mean"``.
    Shapes: (B, C, H, W) -> (B, C, W', W') with W' = min(size, H or W).
    Raises:
        ValueError: size < 1 or unknown score.
    """

    def __init__(self, size: int = 2, score: str = "channel"):
        super().__init__()
        if size < 1:
            raise ValueError(f"CFM size must be >= 1, got {size}")
        if score not in ("channel", "mean"):
            raise ValueError(f"CFM score must be 'channel' or 'mean', got {score!r}")
        self.size = size
        self.score = score

    def probability_map(self, z: torch.Tensor) -> torch.Tensor:
        """The spatial probability map of the crop ``z`` (B, C, h, w): (B, C, h, w) for ``"channel"``
        (softmax over the h*w cells of each channel), (B, 1, h, w) for ``"mean"``."""
        b, c, h, w = z.shape
        score = z.reshape(b, c, h * w) if self.score == "channel" else z.mean(1).reshape(b, 1, h * w)
        return torch.softmax(score, dim=2).reshape(b, -1, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = center_crop(x, self.size)
        return z * self.probability_map(z) + z
