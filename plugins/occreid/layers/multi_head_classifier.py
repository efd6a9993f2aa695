"""Multi-head normalised classifier (Tang et al., NeurIPS 2020), SGR's L_c with H = 2 (Eq. 5)."""

import torch
from torch import nn


class MultiHeadClassifier(nn.Module):
    """Split features and class weights into H heads; logits = scale * sum_h <z_h / (|z_h| + gamma), w_h / |w_h|>.

    Args:
        dim: D (divisible by ``heads``). num_classes: identities. heads: H (SGR: 2).
        scale: logit scale (Tang et al.: 16). gamma: feature-norm offset (Tang et al.: 1/32).
    Shapes: (B, D) -> (B, num_classes).
    """

    def __init__(self, dim: int, num_classes: int, heads: int = 2, scale: float = 16.0, gamma: float = 1 / 32):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.scale, self.gamma = heads, scale, gamma
        self.weight = nn.Parameter(torch.randn(num_classes, dim) * 0.01)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        zs = z.chunk(self.heads, dim=1)
        ws = self.weight.chunk(self.heads, dim=1)
        logits = 0
        for zh, wh in zip(zs, ws):
            zn = zh / (zh.norm(dim=1, keepdim=True) + self.gamma)
            wn = wh / wh.norm(dim=1, keepdim=True).clamp(min=1e-12)
            logits = logits + zn @ wn.t()
        return self.scale * logits
