"""Multi-head normalised classifier (Tang et al., NeurIPS 2020, Sec. 3.3 "de-confounded training"),
SGR's L_c with H = 2 (Yan et al., ICCV 2021, Eq. 5)."""

import torch
from torch import nn


class MultiHeadClassifier(nn.Module):
    """Features and class weights are split into H heads of D / H channels; head h scores class c by

    ``logit_h[c] = scale * <z_h / |z_h|, w_{c,h} / (|w_{c,h}| + gamma)>``

    (the feature l2-normalised, the weight "causal-normalised" with the offset gamma, Tang et al.).
    :meth:`forward` returns Tang et al.'s classifier output, ``(scale / H) sum_h <...>`` = the mean of
    the head logits; :meth:`head_logits` returns each head's logits for SGR's L_c = sum_h CE(head h)
    (Eq. 5).

    Args:
        dim: D (divisible by ``heads``). num_classes: identities. heads: H (SGR: 2).
        scale: tau (Tang et al.: 16). gamma: weight-norm offset (Tang et al.: 1/32).
    Shapes: (B, D) -> (B, num_classes); ``head_logits``: (H, B, num_classes).
    Raises: ValueError if D is not divisible by H.
    """

    def __init__(self, dim: int, num_classes: int, heads: int = 2, scale: float = 16.0, gamma: float = 1 / 32):
        super().__init__()
        if heads < 1 or dim % heads:
            raise ValueError(f"feature size {dim} is not divisible by heads {heads}")
        self.heads, self.scale, self.gamma = heads, scale, gamma
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.normal_(self.weight, std=0.01)

    def head_logits(self, z: torch.Tensor) -> torch.Tensor:
        out = []
        for zh, wh in zip(z.chunk(self.heads, dim=1), self.weight.chunk(self.heads, dim=1)):
            zn = zh / zh.norm(dim=1, keepdim=True).clamp(min=1e-12)
            wn = wh / (wh.norm(dim=1, keepdim=True) + self.gamma)
            out.append(self.scale * zn @ wn.t())
        return torch.stack(out)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head_logits(z).mean(0)
