"""Mask pictures like PAN's Fig. 4 (Ye et al., "Part-aware network", Sec. 5.6): one column per image; rows:
the image, the fusion of all masks, then masks 1, 2, 3, ... as heat maps over the image.

Toolbox-free (Pillow + matplotlib's colormap). Masks of PAN take any sign (Eq. 1, no softmax); each map is
shown min-max scaled per image, so a picture compares where a mask is high, not values across images.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

CELL = (64, 128)  # width, height of one picture


def fuse_masks(masks: np.ndarray) -> np.ndarray:
    """The "fusion of all masks" of Fig. 4: the sum over the p masks. (p, h, w) -> (h, w)."""
    return np.asarray(masks, dtype=np.float32).sum(axis=0)


def _scaled(m: np.ndarray) -> np.ndarray:
    lo, hi = float(m.min()), float(m.max())
    return np.zeros_like(m) if hi - lo < 1e-12 else (m - lo) / (hi - lo)


def overlay(image: Image.Image, mask: np.ndarray, alpha: float = 0.55, cmap: str = "jet") -> Image.Image:
    """``mask`` (h, w), min-max scaled, resized to the picture and blended over ``image`` with ``cmap``."""
    from matplotlib import colormaps
    img = image.convert("RGB").resize(CELL)
    m = Image.fromarray((_scaled(np.asarray(mask, dtype=np.float32)) * 255).astype(np.uint8)).resize(CELL, Image.BILINEAR)
    heat = (colormaps[cmap](np.asarray(m) / 255.0)[..., :3] * 255).astype(np.uint8)
    return Image.blend(img, Image.fromarray(heat), alpha)


def draw_mask_grid(images: Sequence, masks: np.ndarray, out_png: str, num_masks: int = 3,
                   captions: Sequence[str] | None = None) -> str:
    """Write the Fig. 4 grid and return ``out_png``.

    Args:
        images: N image paths or PIL images. masks: (N, p, h, w) masks of those images (any sign).
        num_masks: how many single masks to show under the fused one (the paper shows 3).
        captions: optional N short texts written under the images (e.g. "pid 5").
    Raises: ValueError when the number of images and of mask sets differ; OSError naming an unreadable image.
    """
    masks = np.asarray(masks, dtype=np.float32)
    if masks.ndim != 4 or len(images) != masks.shape[0]:
        raise ValueError(f"draw_mask_grid: {len(images)} images but masks of shape {masks.shape} (want (N, p, h, w))")
    k = min(num_masks, masks.shape[1])
    labels = ["image", "fused"] + [f"mask {i + 1}" for i in range(k)]
    left, text_h = 48, 14
    canvas = Image.new("RGB", (left + CELL[0] * len(images), (CELL[1] + 2) * len(labels) + text_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, label in enumerate(labels):
        draw.text((2, r * (CELL[1] + 2) + CELL[1] // 2), label, fill=(0, 0, 0))
    for c, (img, m) in enumerate(zip(images, masks)):
        if isinstance(img, (str, os.PathLike)):
            try:
                img = Image.open(img).convert("RGB")
            except OSError as e:
                raise OSError(f"cannot read image {img}: {e}") from e
        x = left + c * CELL[0]
        tiles = [img.convert("RGB").resize(CELL), overlay(img, fuse_masks(m))] + [overlay(img, m[i]) for i in range(k)]
        for r, tile in enumerate(tiles):
            canvas.paste(tile, (x, r * (CELL[1] + 2)))
        if captions is not None:
            draw.text((x + 2, len(labels) * (CELL[1] + 2)), str(captions[c])[:10], fill=(0, 0, 0))
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    canvas.save(out_png)
    return out_png
