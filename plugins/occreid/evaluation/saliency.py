"""Saliency maps of re-ID embeddings with Grad-CAM (Selvaraju et al., ICCV 2017), through the ``grad-cam``
package (pytorch_grad_cam), as Chakraborty et al. do for AlignedReID + OBC (Sec. 6.3, Fig. 2).

A re-ID model has no class score at test time; the target here is the dot product of an image's embedding
with a reference embedding (by default its own, detached: "what makes this image look like itself"; or a
gallery image's, "what makes the query match it"). Not the cosine: the cosine of an embedding with itself is
at its maximum, so its gradient, and the CAM, would be zero. The CAM is taken at the last backbone stage.
Works for any occreid / FastReID model whose eval forward maps ``{"images": (B, 3, H, W) 0-255}`` to (B, D).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

CELL = (64, 128)


class EmbeddingModel(nn.Module):
    """(B, 3, H, W) 0-255 images -> (B, D) test embeddings of a FastReID-style model (eval mode)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model({"images": x.clone()})   # FastReID's preprocess_image normalises in place


class EmbeddingSimilarityTarget:
    """Grad-CAM target: the dot product of one embedding (D,) with ``reference`` (D,), a scalar."""

    def __init__(self, reference: torch.Tensor):
        self.reference = reference.detach()

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return (output * self.reference.to(output)).sum()


def last_backbone_stage(model: nn.Module) -> nn.Module:
    """The module whose output Grad-CAM uses: ResNet ``layer4``, OSNet ``conv5``, else the backbone's last child
    with parameters. Raises ValueError if the model has no ``backbone``."""
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        raise ValueError(f"{type(model).__name__} has no .backbone; pass target_layer")
    for name in ("layer4", "conv5"):
        if hasattr(backbone, name):
            return getattr(backbone, name)
    children = [m for m in backbone.children() if any(True for _ in m.parameters())]
    return children[-1]


def grad_cam_maps(model: nn.Module, images: torch.Tensor, references: torch.Tensor | None = None,
                  target_layer: nn.Module | None = None) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in [0, 1] of ``images`` (N, 3, H, W, 0-255 scale, on the model's device).

    Args:
        references: (N, D) embeddings each map explains the similarity to; None = each image's own embedding.
        target_layer: default :func:`last_backbone_stage`.
    """
    from pytorch_grad_cam import GradCAM

    model.eval()
    wrapped = EmbeddingModel(model)
    if references is None:
        with torch.no_grad():
            references = wrapped(images)
    layer = target_layer if target_layer is not None else last_backbone_stage(model)
    with GradCAM(model=wrapped, target_layers=[layer]) as cam:
        maps = cam(input_tensor=images, targets=[EmbeddingSimilarityTarget(r) for r in references])
    return np.asarray(maps, dtype=np.float32)


def draw_saliency_grid(images: Sequence[Image.Image], maps: np.ndarray, out_png: str,
                       row_labels: Sequence[str] = ("image", "Grad-CAM"), captions: Sequence[str] | None = None,
                       columns_per_group: int = 1) -> str:
    """A PNG: one column per image; first row the image, second its CAM over it (``show_cam_on_image``).

    Args: images N PIL images; maps (N, h, w) in [0, 1]; captions N texts under the columns.
    Raises: ValueError when counts differ."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    if len(images) != len(maps):
        raise ValueError(f"draw_saliency_grid: {len(images)} images but {len(maps)} maps")
    left, text_h, gap = 60, 14, 6
    n = len(images)
    groups = (n + columns_per_group - 1) // columns_per_group
    width = left + n * CELL[0] + (groups - 1) * gap
    canvas = Image.new("RGB", (width, 2 * (CELL[1] + 2) + text_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, label in enumerate(row_labels[:2]):
        draw.text((2, r * (CELL[1] + 2) + CELL[1] // 2), label, fill=(0, 0, 0))
    for c, (img, m) in enumerate(zip(images, maps)):
        x = left + c * CELL[0] + (c // columns_per_group) * gap
        rgb = img.convert("RGB").resize(CELL)
        m = np.asarray(Image.fromarray((np.clip(m, 0, 1) * 255).astype(np.uint8)).resize(CELL, Image.BILINEAR)) / 255.0
        over = show_cam_on_image(np.asarray(rgb, dtype=np.float32) / 255.0, m.astype(np.float32), use_rgb=True)
        canvas.paste(rgb, (x, 0))
        canvas.paste(Image.fromarray(over), (x, CELL[1] + 2))
        if captions is not None:
            draw.text((x + 2, 2 * (CELL[1] + 2)), str(captions[c])[:10], fill=(0, 0, 0))
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    canvas.save(out_png)
    return out_png
