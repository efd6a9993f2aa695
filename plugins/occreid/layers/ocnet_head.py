"""OCNet's feature branches on the backbone map (Kim et al., ICASSP 2022, Sec. 2.1-2.2, Fig. 2)."""

from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from .center_focus_module import CenterFocusModule
from .converter_module import ConverterModule
from .relation_adaptive_module import RelationAdaptiveModule, RelationNetwork

FUSIONS = ("ram", "concat", "rn")


def horizontal_parts(x: torch.Tensor, num_parts: int) -> List[torch.Tensor]:
    """Split a (B, C, H, W) map into ``num_parts`` horizontal stripes, top first (the last takes
    the remainder rows). Two parts: the top and bottom halves of the paper."""
    h = x.shape[2]
    if not 1 <= num_parts <= h:
        raise ValueError(f"num_parts must be in 1..{h} for a map of height {h}, got {num_parts}")
    step = h // num_parts
    return [x[:, :, i * step:(h if i == num_parts - 1 else (i + 1) * step)] for i in range(num_parts)]


class OCNetBranches(nn.Module):
    """F_BB -> f_g (CM), parts f_t, f_b, ... (crop + CM), f_c (CFM + CM), F_concat and F_final.

    Every branch has its own Converter Module and global average pooling; F_concat is the
    concatenation of the enabled branches in the order [f_g, parts..., f_c]; F_final is
    F_concat * F_w with F_w from the RAM (``fusion="ram"``), F_concat itself (``"concat"``), or the
    relation vectors of a Relation Network (``"rn"``, Table 2 rows 5-6).

    Args:
        in_channels: C of F_BB.
        dim: D, each branch's feature size after its CM.
        num_parts: horizontal parts (Table 3: 1-4; paper 2); 0 disables them.
        use_global: the CM global branch f_g.
        use_cfm: the Center-Focus branch f_c.
        center_size: CFM crop size W (Table 3: 2 best).
        fusion: ``"ram"``, ``"concat"`` or ``"rn"``.
        groups: CM channel groups. ram_reduction: RAM hidden size D / ram_reduction.
        cfm_score: the CFM's softmax, ``"channel"`` or ``"mean"`` (:class:`CenterFocusModule`).
    Shapes: (B, C, H, W) -> dict with ``F_BB`` (B, C) pooled, ``f_g`` (B, D) or None, ``parts``
        list of (B, D), ``f_c`` (B, D) or None, ``F_concat`` / ``F_final`` (B, K * D), ``F_w`` or None,
        and ``f_g_pre`` / ``parts_pre``: f_g and the parts pooled from their CM's BN output before the
        ReLU (signed, so that cosines can be negative: where the Separation Loss acts by default).
    Raises:
        ValueError: no branch enabled, or bad options.
    """

    def __init__(self, in_channels: int, dim: int, num_parts: int = 2, use_global: bool = True,
                 use_cfm: bool = True, center_size: int = 2, fusion: str = "ram", groups: int = 4,
                 ram_reduction: int = 4, cfm_score: str = "channel"):
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.num_branches = int(use_global) + num_parts + int(use_cfm)
        if self.num_branches == 0:
            raise ValueError("OCNet needs at least one of the global, part and centre branches")
        self.num_parts = num_parts
        self.cm_global = ConverterModule(in_channels, dim, groups) if use_global else None
        self.cm_parts = nn.ModuleList(ConverterModule(in_channels, dim, groups) for _ in range(num_parts))
        self.cfm = CenterFocusModule(center_size, cfm_score) if use_cfm else None
        self.cm_center = ConverterModule(in_channels, dim, groups) if use_cfm else None
        if fusion == "ram":
            self.fusion = RelationAdaptiveModule(dim, ram_reduction)
        elif fusion == "rn":
            self.fusion = RelationNetwork(dim)
        else:
            self.fusion = None
        self.dim = dim
        self.out_dim = self.num_branches * dim

    @staticmethod
    def _pool(x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 1).flatten(1)

    def forward(self, fmap: torch.Tensor) -> Dict[str, torch.Tensor]:
        out = {"F_BB": self._pool(fmap), "f_g": None, "parts": [], "f_c": None, "F_w": None,
               "f_g_pre": None, "parts_pre": []}
        branches = []
        if self.cm_global is not None:
            pre = self.cm_global.pre_activation(fmap)
            out["f_g_pre"], out["f_g"] = self._pool(pre), self._pool(torch.relu(pre))
            branches.append(out["f_g"])
        if self.num_parts:
            for cm, part in zip(self.cm_parts, horizontal_parts(fmap, self.num_parts)):
                pre = cm.pre_activation(part)
                out["parts_pre"].append(self._pool(pre))
                out["parts"].append(self._pool(torch.relu(pre)))
            branches.extend(out["parts"])
        if self.cfm is not None:
            out["f_c"] = self._pool(self.cm_center(self.cfm(fmap)))
            branches.append(out["f_c"])
        stacked = torch.stack(branches, dim=1)  # (B, K, D)
        out["F_concat"] = stacked.flatten(1)
        if self.fusion is None:
            out["F_final"] = out["F_concat"]
        else:
            out["F_final"], out["F_w"] = self.fusion(stacked)
        return out
