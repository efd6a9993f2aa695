"""Converter Module (CM) of OCNet (Kim et al., ICASSP 2022, Sec. 2.1, Fig. 3a)."""

import torch
from torch import nn


class ConverterModule(nn.Module):
    """Grouped 1x1 convolution that splits the channels into groups and reduces them, then BN + ReLU.

    "We adopt grouped convolution, which has the advantage of learning a channel with high
    correlation for each group ... CM not only reduces channels ... but also provides parameters that
    each feature learns with the corresponding objective function" (Sec. 2.1). Each OCNet branch
    (global, each part, centre) has its own CM (Fig. 2 caption).

    Args:
        in_channels: C of the input map.
        out_channels: reduced channels D (must be divisible by ``groups``, as ``in_channels``).
        groups: number of channel groups of the convolution.
    Shapes: (B, C, H, W) -> (B, D, H, W). :meth:`pre_activation` gives BN(conv(x)) before the ReLU
    (signed; what OCNet's Separation Loss compares, see :class:`~occreid.layers.OCNetBranches`).
    Raises:
        ValueError: channels not divisible by ``groups``.
    """

    def __init__(self, in_channels: int, out_channels: int, groups: int = 4):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels {in_channels} and out_channels {out_channels} must be "
                             f"divisible by groups {groups}")
        self.conv = nn.Conv2d(in_channels, out_channels, 1, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """BN(conv(x)), (B, D, H, W), before the ReLU."""
        return self.bn(self.conv(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.pre_activation(x))
