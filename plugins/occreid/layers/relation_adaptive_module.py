"""Relation Adaptive Module (RAM) of OCNet and the Relation Network variant of its ablation
(Kim et al., ICASSP 2022, Sec. 2.2 and Table 2; Santoro et al., NeurIPS 2017 for the RN)."""

import torch
from torch import nn


class RelationAdaptiveModule(nn.Module):
    """Predict a weight vector F_w of F_concat's size from the relations between the K features,
    with two fully connected layers shared across the vectors; F_final = F_concat * F_w.

    "RAM consists of two fully connected shared layers that define relationships between vectors and
    handle occluded or insignificant features by weights" (Sec. 2.2). Our reading: for feature k, the
    relation input is [f_k, mean_{j != k} f_j] (itself and its context); FC(2D -> D / reduction),
    ReLU, FC(-> D), sigmoid give w_k; the same two layers serve every k.

    Args:
        dim: D, the size of each feature.
        reduction: hidden size D / reduction.
    Shapes: feats (B, K, D) -> (F_final (B, K * D), F_w (B, K * D)).
    """

    def __init__(self, dim: int, reduction: int = 4):
        super().__init__()
        hidden = max(1, dim // reduction)
        self.fc1 = nn.Linear(2 * dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, feats: torch.Tensor):
        b, k, d = feats.shape
        if k > 1:
            context = (feats.sum(1, keepdim=True) - feats) / (k - 1)
        else:
            context = torch.zeros_like(feats)
        w = torch.sigmoid(self.fc2(torch.relu(self.fc1(torch.cat([feats, context], dim=2)))))
        return (feats * w).reshape(b, k * d), w.reshape(b, k * d)


class RelationNetwork(nn.Module):
    """Relation Network (Santoro et al. 2017) as OCNet's Table 2 rows 5-6 use it: the final
    representation is made of relation vectors instead of re-weighted features.

    For each feature k: r_k = mean_j g([f_k, f_j]) with g two shared FC layers (2D -> D, ReLU, D -> D).

    Shapes: feats (B, K, D) -> (F_final (B, K * D), None).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.g = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, dim))

    def forward(self, feats: torch.Tensor):
        b, k, d = feats.shape
        pairs = torch.cat([feats[:, :, None].expand(b, k, k, d), feats[:, None].expand(b, k, k, d)], dim=3)
        return self.g(pairs).mean(2).reshape(b, k * d), None
