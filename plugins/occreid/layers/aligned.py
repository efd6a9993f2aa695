"""AlignedReID's local branch and aligned local distance (Zhang et al. 2017, as summarised in Chakraborty,
Pan, Mishra, "Tackling Occlusion in Person Re-identification", Sec. 3), and the occlusion (OBC) head of
Sec. 4.1. Toolbox-free; the FastReID glue is :mod:`occreid.fastreid.aligned`.

- :class:`HorizontalPooling`: C x H x W -> C x H (global pooling along the width, Sec. 3.2.2).
- :class:`AlignedLocalBranch`: horizontal pooling, then a 1x1 convolution C -> c (+ BN + ReLU, AlignedReID's).
- :func:`stripe_distance`: d_ij = (e^||f_i - g_j|| - 1) / (e^||f_i - g_j|| + 1) (Eq. 1) = tanh(||f_i - g_j|| / 2).
- :func:`shortest_path`: the total distance of the shortest path from (1, 1) to (H, H) through D, moving one
  step right or down (AlignedReID's dynamic programme), batched.
- :func:`aligned_local_distance`: the two together, for paired or all-pairs inputs, chunked.
- :class:`OcclusionClassifier`: the fully connected layer that predicts the occlusion label (Sec. 4.1).
"""

import torch
from torch import nn


class HorizontalPooling(nn.Module):
    """Global pooling along the width: (B, C, H, W) -> (B, C, H). ``mode``: "max" (AlignedReID's code) or "avg"."""

    def __init__(self, mode: str = "max"):
        super().__init__()
        if mode not in ("max", "avg"):
            raise ValueError(f"horizontal pooling mode must be 'max' or 'avg', got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=3) if self.mode == "max" else x.mean(dim=3)


class AlignedLocalBranch(nn.Module):
    """Local features of AlignedReID: horizontal pooling, then a 1x1 convolution C -> c, BN and ReLU.

    Args: in_channels C; out_channels c (128 in AlignedReID); pool "max" | "avg".
    Shapes: (B, C, H, W) -> (B, H, c): one c-dimensional feature per horizontal stripe, top to bottom.
    """

    def __init__(self, in_channels: int, out_channels: int = 128, pool: str = "max"):
        super().__init__()
        self.pool = HorizontalPooling(pool)
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=1, bias=False)  # 1x1 conv on the C x H map
        self.bn = nn.BatchNorm1d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(self.pool(x)))).transpose(1, 2)


def stripe_distance(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Eq. 1 for every pair of stripes: d_ij = (e^||f_i - g_j|| - 1) / (e^||f_i - g_j|| + 1), in [0, 1).

    Args: f (..., H, c), g (..., H', c) with the same leading dims. Returns (..., H, H').
    Computed as tanh(||f_i - g_j|| / 2), the same function without overflow for large distances.
    """
    diff = f.unsqueeze(-2) - g.unsqueeze(-3)
    dist = diff.pow(2).sum(-1).clamp_min(1e-12).sqrt()
    return torch.tanh(dist / 2)


def shortest_path(d: torch.Tensor) -> torch.Tensor:
    """The shortest path from (1, 1) to (H, H') through d, one step right or down at a time, summing d over
    the cells visited (AlignedReID, Sec. 3.2.2): S(i, j) = d(i, j) + min(S(i - 1, j), S(i, j - 1)).

    Args: d (..., H, H'). Returns (...,). Differentiable (the gradient flows along the shortest path).
    Vectorised over the leading dims (all pairs of a batch at once); H x H' elementwise steps.
    """
    h, w = d.shape[-2:]
    prev = None
    for i in range(h):
        row = []
        for j in range(w):
            cell = d[..., i, j]
            if i == 0 and j == 0:
                acc = cell
            elif i == 0:
                acc = row[j - 1] + cell
            elif j == 0:
                acc = prev[j] + cell
            else:
                acc = torch.minimum(prev[j], row[j - 1]) + cell
            row.append(acc)
        prev = row
    return prev[-1]


def aligned_local_distance(f: torch.Tensor, g: torch.Tensor, paired: bool = False, chunk: int = 4096) -> torch.Tensor:
    """The local distance of AlignedReID: shortest path (:func:`shortest_path`) through Eq. 1's matrix.

    Args:
        f: (m, H, c) local features. g: (n, H, c).
        paired: if True, m == n and the result is (m,), the distance of f[k] to g[k]; else (m, n), all pairs.
        chunk: pairs per step (memory: chunk x H x H x c floats for the stripe differences).
    Returns: (m,) or (m, n), each in [0, 2H - 1).
    Raises: ValueError for mismatched shapes.
    """
    if f.dim() != 3 or g.dim() != 3 or f.shape[2] != g.shape[2]:
        raise ValueError(f"aligned_local_distance: want (m, H, c) and (n, H, c), got {tuple(f.shape)}, {tuple(g.shape)}")
    if paired:
        if f.shape[0] != g.shape[0]:
            raise ValueError(f"aligned_local_distance(paired=True): {f.shape[0]} != {g.shape[0]} rows")
        return torch.cat([shortest_path(stripe_distance(f[k:k + chunk], g[k:k + chunk]))
                          for k in range(0, f.shape[0], chunk)]) if f.shape[0] else f.new_zeros(0)
    m, n = f.shape[0], g.shape[0]
    out = f.new_empty(m, n)
    rows = max(1, chunk // max(n, 1))
    for k in range(0, m, rows):
        fk = f[k:k + rows]
        # (rows, n, H, H') from squared norms: |a - b|^2 = |a|^2 + |b|^2 - 2 a.b  (memory rows x n x H x H')
        sq = (fk.pow(2).sum(-1)[:, None, :, None] + g.pow(2).sum(-1)[None, :, None, :]
              - 2 * torch.einsum("ahc,bkc->abhk", fk, g))
        d = torch.tanh(sq.clamp_min(1e-12).sqrt() / 2)
        out[k:k + rows] = shortest_path(d)
    return out


class OcclusionClassifier(nn.Module):
    """The OBC head (Sec. 4.1): one fully connected layer from the global feature to the occlusion label's
    2 classes (0 = occluded, 1 = not occluded, the paper's coding). Shapes: (B, D) -> (B, 2) logits.

    ``neck="bn"`` (not in the paper) puts a BatchNorm1d before the FC, as BNNeck does for the identity
    classifier: the paper's plain FC on OSNet x0.25's small pooled features (mean ~0.07) learns so slowly that
    L_O stays at ln 2 for a one-epoch CPU run and its gradient at the backbone is ~1e-4 of the triplet's
    (projects/AlignedReID/README.md). Raises ValueError for another ``neck``.
    """

    NECKS = ("none", "bn")

    def __init__(self, in_dim: int, num_classes: int = 2, neck: str = "none"):
        super().__init__()
        if neck not in self.NECKS:
            raise ValueError(f"MODEL.ALIGNED.OBC.NECK must be one of {self.NECKS}, got {neck!r}")
        self.neck = nn.BatchNorm1d(in_dim) if neck == "bn" else nn.Identity()
        self.fc = nn.Linear(in_dim, num_classes)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.neck(x))
