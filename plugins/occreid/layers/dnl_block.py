"""Disentangled Non-Local block (Yin et al., ECCV 2020), as used by SGR (Yan et al., ICCV 2021, Eq. 1)."""

import math

import torch
import torch.nn.functional as F
from torch import nn


class DNLBlock(nn.Module):
    """x + BN(W_o sum_j w(f_i, f_j) W_v f_j), with the attention of SGR's Eq. 1:

    ``w(f_i, f_j) = softmax_j((W_q f_i - mu_q)^T (W_k f_j - mu_k) / sqrt(d)) + softmax_j(W_m f_j)``:
    a whitened pairwise term (means over positions subtracted) and a unary saliency term. The output
    BN starts at zero (the block starts as the identity, as FastReID's non-local blocks).

    Args:
        channels: C. reduction: inner size d = C / reduction for query, key and value.
    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, channels: int, reduction: int = 2):
        super().__init__()
        inner = max(1, channels // reduction)
        # no bias where it cannot act: the whitening removes a constant from the query and key, and the
        # unary softmax over positions is invariant to one
        self.query = nn.Conv2d(channels, inner, 1, bias=False)
        self.key = nn.Conv2d(channels, inner, 1, bias=False)
        self.value = nn.Conv2d(channels, inner, 1)
        self.unary = nn.Conv2d(channels, 1, 1, bias=False)
        self.out = nn.Conv2d(inner, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)
        self.scale = 1.0 / math.sqrt(inner)

    def _terms(self, x: torch.Tensor):
        """The whitened pairwise term (B, HW, HW) and the unary term (B, 1, HW) of Eq. 1."""
        q = self.query(x).flatten(2)  # (B, d, HW)
        k = self.key(x).flatten(2)
        q = q - q.mean(2, keepdim=True)  # whitening: subtract mu_q, mu_k
        k = k - k.mean(2, keepdim=True)
        pairwise = torch.softmax(torch.bmm(q.transpose(1, 2), k) * self.scale, dim=2)
        unary = torch.softmax(self.unary(x).flatten(2), dim=2)
        return pairwise, unary

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """(B, HW, HW) attention w(f_i, f_j), rows i, each the sum of two distributions over j."""
        pairwise, unary = self._terms(x)
        return pairwise + unary

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q = self.query(x).flatten(2)
        k = self.key(x).flatten(2)
        q = (q - q.mean(2, keepdim=True)).transpose(1, 2)  # (B, HW, d), whitened
        k = (k - k.mean(2, keepdim=True)).transpose(1, 2)
        v = self.value(x).flatten(2)                        # (B, d, HW)
        # pairwise part: sum_j softmax_j(q_i.k_j / sqrt(d)) v_j, by PyTorch's fused attention (it does
        # not hold the HW x HW matrix); unary part: sum_j softmax_j(W_m f_j) v_j, the same for every i
        pairwise = F.scaled_dot_product_attention(q, k, v.transpose(1, 2), scale=self.scale)  # (B, HW, d)
        unary = torch.bmm(v, torch.softmax(self.unary(x).flatten(2), dim=2).transpose(1, 2))  # (B, d, 1)
        y = pairwise.transpose(1, 2) + unary
        return x + self.bn(self.out(y.reshape(b, -1, h, w)))
