"""PAN: Part-Aware Network (Ye, Zeng, Zhang, Chen, "Part-aware network: A simple but efficient method for
occluded person re-identification"). Toolbox-free layers; the FastReID glue is :mod:`occreid.fastreid.pan`.

- :class:`MaskGenerator`: M = G(F_g^1), a 1x1 convolution to p masks, no softmax (Sec. 2.1, Eq. 1).
- :func:`weighted_mask_pooling`: F_l,i = F_g^2 * m_i (Eq. 2), f_l,i = sum F_l,i / sum |m_i| (Eq. 3).
- :class:`LocalEmbedding`: the "Shared FC" c2 -> n_l used by every local feature (Sec. 2.2), or one FC per
  part (the "not shared" rows of Table 2).
- :class:`PANBuffer`: the buffer layers "Conv41" / "Conv51" (deep copies of the backbone's last two units,
  Table 3); :class:`PANHead`: mask generator, weighted pooling, global max pooling, global / local FCs;
  :func:`pan_feature_maps` runs a backbone cut into ``stem``, ``block40`` ("Conv40"), ``block50``
  ("Conv50"); :class:`PANBranches` is all of it in one module.
"""

import copy

import torch
from torch import nn

#: Table 3's sources of F_g^1 (masks) and F_g^2 (local features)
MASK_SOURCES = ("conv40", "conv41", "conv50")
LOCAL_SOURCES = ("conv50", "conv51")
#: "none" (the paper's PAN), "parts" (softmax over the p masks at each position, VPM's region
#: probability) or "spatial" (softmax over the h x w positions of each mask, PAT's attention): Table 4
MASK_SOFTMAX = ("none", "parts", "spatial")


class MaskGenerator(nn.Module):
    """G of Eq. 1: a 1x1 convolution from F_g^1 to p masks, values in (-inf, inf) (no softmax).

    Args:
        in_channels: c1. num_masks: p (14 on Occluded-Duke, 16 on Market-1501, Fig. 3).
        softmax: one of :data:`MASK_SOFTMAX`; ``"none"`` is the paper's choice (Table 4, "w/o").
    Shapes: (B, c1, h, w) -> (B, p, h, w).
    Raises: ValueError for an unknown ``softmax``.
    """

    def __init__(self, in_channels: int, num_masks: int, softmax: str = "none"):
        super().__init__()
        if softmax not in MASK_SOFTMAX:
            raise ValueError(f"mask softmax must be one of {MASK_SOFTMAX}, got {softmax!r}")
        self.conv = nn.Conv2d(in_channels, num_masks, kernel_size=1)
        self.softmax = softmax
        self.num_masks = num_masks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.conv(x)
        if self.softmax == "parts":
            m = torch.softmax(m, dim=1)
        elif self.softmax == "spatial":
            m = torch.softmax(m.flatten(2), dim=2).view_as(m)
        return m


def weighted_mask_pooling(feat: torch.Tensor, masks: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Eq. 2-3: f_l,i = sum_j (F_g^2 * m_i)_j / sum_j |m_i|_j over the h x w positions j.

    Args:
        feat: F_g^2, (B, c2, h, w). masks: M, (B, p, h, w), any sign (the absolute value normalises, so a
            mask whose values sum to 0 is still defined).
        eps: lower bound of the denominator (a mask that is 0 everywhere gives f_l,i = 0, not NaN).
    Returns: (B, p, c2).
    Raises: ValueError when the batch or spatial sizes of ``feat`` and ``masks`` differ.
    """
    if feat.shape[0] != masks.shape[0] or feat.shape[2:] != masks.shape[2:]:
        raise ValueError(f"weighted_mask_pooling: features {tuple(feat.shape)} and masks {tuple(masks.shape)} "
                         "must share batch and spatial sizes")
    num = torch.einsum("bchw,bphw->bpc", feat, masks)
    den = masks.abs().sum(dim=(2, 3)).clamp_min(eps)
    return num / den.unsqueeze(2)


class LocalEmbedding(nn.Module):
    """The local FC of Sec. 2.2: (B, p, c2) -> (B, p, n_l), one weight shared by all p local features
    ("Shared FC", the paper's choice) or one FC per part (Table 2, "not shared").

    Args:
        in_dim: c2. out_dim: n_l (256 in the paper, gamma = p n_l / N_g, Eq. 4). num_parts: p.
        shared: one FC for all parts.
    """

    def __init__(self, in_dim: int, out_dim: int, num_parts: int, shared: bool = True):
        super().__init__()
        self.shared = shared
        n = 1 if shared else num_parts
        self.fcs = nn.ModuleList(nn.Linear(in_dim, out_dim, bias=False) for _ in range(n))
        for fc in self.fcs:
            nn.init.kaiming_normal_(fc.weight, mode="fan_out")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shared:
            return self.fcs[0](x)
        return torch.stack([fc(x[:, i]) for i, fc in enumerate(self.fcs)], dim=1)


def check_sources(mask_source: str, local_source: str) -> None:
    """Raise ValueError unless the sources are among :data:`MASK_SOURCES` / :data:`LOCAL_SOURCES` (Table 3)."""
    if mask_source not in MASK_SOURCES:
        raise ValueError(f"mask source must be one of {MASK_SOURCES}, got {mask_source!r}")
    if local_source not in LOCAL_SOURCES:
        raise ValueError(f"local source must be one of {LOCAL_SOURCES}, got {local_source!r}")


class PANBuffer(nn.Module):
    """The buffer layers of Table 3: deep copies of the pretrained units, trained separately from then on.

    "Conv41" = copy of ``block40`` fed from the stem's output, "Conv51" = copy of ``block50`` fed from Conv40
    (the Table 3 note and Sec. 5.3: global and local branches do not share the last unit).

    Args:
        block40, block50: the backbone's last two units ("Conv40", "Conv50").
        mask_source: one of :data:`MASK_SOURCES`; "conv41" makes the Conv41 copy.
        local_source: one of :data:`LOCAL_SOURCES`; "conv51" makes the Conv51 copy.
    Forward: (x0 (B, c, H, W) = stem output, c40 = Conv40 output) -> dict of the copies' outputs.
    Raises: ValueError for unknown sources.
    """

    def __init__(self, block40: nn.Module, block50: nn.Module, mask_source: str = "conv50",
                 local_source: str = "conv51"):
        super().__init__()
        check_sources(mask_source, local_source)
        self.conv41 = copy.deepcopy(block40) if mask_source == "conv41" else None
        self.conv51 = copy.deepcopy(block50) if local_source == "conv51" else None

    def forward(self, x0: torch.Tensor, c40: torch.Tensor) -> dict:
        out = {}
        if self.conv41 is not None:
            out["conv41"] = self.conv41(x0)
        if self.conv51 is not None:
            out["conv51"] = self.conv51(c40)
        return out


class PANHead(nn.Module):
    """PAN after the backbone (Fig. 1): mask generator on F_g^1 (Eq. 1), weighted pooling of F_g^2 (Eq. 2-3),
    local FC c2 -> n_l, global max pooling of F_g^3 = Conv50 and global FC c3 -> N_g (Sec. 2.2).

    Args:
        c40, c50: channels of Conv40 / Conv50 (Conv41 / Conv51 have the same).
        num_masks: p. global_dim: N_g. local_dim: n_l (gamma = p n_l / N_g, Eq. 4). shared_fc: Table 2.
        mask_source: one of :data:`MASK_SOURCES` (paper: "conv50"); local_source: one of
            :data:`LOCAL_SOURCES` (paper: "conv51"); mask_softmax: one of :data:`MASK_SOFTMAX` (paper: "none").
    Forward: ``maps`` dict with "conv40", "conv50" and the buffers' outputs, each (B, c, h, w) ->
        dict ``global`` (B, N_g), ``local`` (B, p, n_l), ``masks`` (B, p, h, w), ``local_map`` F_g^2.
    Raises: ValueError for unknown options, or masks whose size differs from F_g^2's.
    """

    def __init__(self, c40: int, c50: int, *, num_masks: int = 14, global_dim: int = 512, local_dim: int = 256,
                 shared_fc: bool = True, mask_source: str = "conv50", local_source: str = "conv51",
                 mask_softmax: str = "none"):
        super().__init__()
        check_sources(mask_source, local_source)
        self.mask_source, self.local_source = mask_source, local_source
        c1 = c40 if mask_source in ("conv40", "conv41") else c50
        self.mask_generator = MaskGenerator(c1, num_masks, mask_softmax)
        self.global_fc = nn.Linear(c50, global_dim, bias=False)
        nn.init.kaiming_normal_(self.global_fc.weight, mode="fan_out")
        self.local_fc = LocalEmbedding(c50, local_dim, num_masks, shared_fc)
        self.num_masks, self.global_dim, self.local_dim = num_masks, global_dim, local_dim

    def forward(self, maps: dict) -> dict:
        masks = self.mask_generator(maps[self.mask_source])
        local_map = maps[self.local_source]
        if masks.shape[2:] != local_map.shape[2:]:
            raise ValueError(f"PAN: masks from {self.mask_source} are {tuple(masks.shape[2:])}, local features "
                             f"from {self.local_source} are {tuple(local_map.shape[2:])}; they must match "
                             "(ResNet: MODEL.BACKBONE.LAST_STRIDE 1)")
        local = self.local_fc(weighted_mask_pooling(local_map, masks))
        glob = self.global_fc(torch.amax(maps["conv50"], dim=(2, 3)))   # global max pooling of F_g^3, then FC
        return {"global": glob, "local": local, "masks": masks, "local_map": local_map}


def pan_feature_maps(stem, block40, block50, buffer: PANBuffer, x: torch.Tensor) -> dict:
    """Conv40, Conv50 and the buffer layers' maps of images ``x`` (B, 3, H, W), for :class:`PANHead`.

    ``stem``, ``block40``, ``block50`` are the backbone cut so that ``block50(block40(stem(x)))`` is its output.
    """
    x0 = stem(x)
    c40 = block40(x0)
    maps = {"conv40": c40, "conv50": block50(c40)}
    maps.update(buffer(x0, c40))
    return maps


class PANBranches(nn.Module):
    """The whole of PAN's feature extraction (Fig. 1) in one module, for use outside a toolbox.

    Args:
        stem, block40, block50: the backbone cut into consecutive pieces: ``block40`` / ``block50`` are the
            last two units ("Conv40", "Conv50"; ResNet stages conv4_x / conv5_x, see projects/PAN/README.md).
        c40, c50: as :class:`PANHead`.
        **kwargs: as :class:`PANHead` (sources, p, N_g, n_l, shared FC, softmax).
    Forward: (B, 3, H, W) -> :class:`PANHead`'s dict, plus ``fmap`` = Conv50 (B, c50, h, w).
    """

    def __init__(self, stem: nn.Module, block40: nn.Module, block50: nn.Module, c40: int, c50: int, **kwargs):
        super().__init__()
        self.stem, self.block40, self.block50 = stem, block40, block50
        self.buffer = PANBuffer(block40, block50, kwargs.get("mask_source", "conv50"),
                                kwargs.get("local_source", "conv51"))
        self.head = PANHead(c40, c50, **kwargs)

    def forward(self, x: torch.Tensor) -> dict:
        maps = pan_feature_maps(self.stem, self.block40, self.block50, self.buffer, x)
        out = self.head(maps)
        out["fmap"] = maps["conv50"]
        return out
