"""The occlusion simulator of Chakraborty, Pan, Mishra ("Tackling Occlusion in Person Re-identification",
Algorithm 1, Sec. 4.2 and 6.4): a square patch filled with the image's mean colour at a random location.

Toolbox-free. Works on PIL images (a training transform, or a test-set builder that writes occluded copies)
and on image tensors (B, 3, H, W) (occluding a batch inside a model's training step).
"""

from __future__ import annotations

import hashlib
from typing import Optional

import numpy as np
import torch
from PIL import Image

FILLS = ("mean", "black", "noise")


class OcclusionSimulator:
    """Put one occluding patch on an image.

    Args:
        size: the patch: an int or (h, w) in pixels (the paper: 50 x 50 on Market-1501's 128 x 64 images), or a
            float in (0, 1]: the patch's **area as a fraction of the image**, square in pixels (side
            sqrt(fraction x H x W), clipped to the image).
        fill: "mean" (the image's mean colour, Algorithm 1 line 2), "black" (Sec. 6.4's first try), or
            "noise" (uniform random pixels).
        seed: seed of the location / noise draws. A simulator with a seed is deterministic per call order; use
            :meth:`occlude_path_deterministic` for a draw that depends only on (seed, image path).
    Raises: ValueError for an unknown fill or a size that is not positive.
    """

    def __init__(self, size=50, fill: str = "mean", seed: Optional[int] = None):
        if fill not in FILLS:
            raise ValueError(f"occlusion fill must be one of {FILLS}, got {fill!r}")
        if isinstance(size, float):
            if not 0 < size <= 1:
                raise ValueError(f"occlusion size as an area fraction must be in (0, 1], got {size}")
        else:
            hw = (size, size) if isinstance(size, int) else tuple(size)
            if len(hw) != 2 or min(hw) <= 0:
                raise ValueError(f"occlusion size in pixels must be positive, got {size}")
        self.size, self.fill, self.seed = size, fill, seed
        self.rng = np.random.default_rng(seed)

    def patch_size(self, height: int, width: int) -> tuple:
        """(h, w) of the patch for an image of ``height`` x ``width`` pixels, clipped to the image."""
        if isinstance(self.size, float):
            side = int(round((self.size * height * width) ** 0.5))
            ph, pw = side, side
        else:
            ph, pw = (self.size, self.size) if isinstance(self.size, int) else self.size
        return min(ph, height), min(pw, width)

    def _draw(self, rng, height, width):
        ph, pw = self.patch_size(height, width)
        top = int(rng.integers(0, height - ph + 1))
        left = int(rng.integers(0, width - pw + 1))
        return top, left, ph, pw

    def _apply_array(self, arr: np.ndarray, rng) -> np.ndarray:
        """arr (H, W, 3) uint8 -> occluded copy."""
        h, w = arr.shape[:2]
        top, left, ph, pw = self._draw(rng, h, w)
        out = arr.copy()
        if self.fill == "mean":
            out[top:top + ph, left:left + pw] = arr.reshape(-1, arr.shape[2]).mean(0).round().astype(arr.dtype)
        elif self.fill == "black":
            out[top:top + ph, left:left + pw] = 0
        else:
            out[top:top + ph, left:left + pw] = rng.integers(0, 256, (ph, pw, arr.shape[2]), dtype=np.uint8)
        return out

    def __call__(self, img: Image.Image) -> Image.Image:
        """Occlude a PIL image (a training transform): a new image, same size and mode RGB."""
        return Image.fromarray(self._apply_array(np.asarray(img.convert("RGB")), self.rng))

    def occlude_path_deterministic(self, path: str, img: Image.Image) -> Image.Image:
        """Occlude ``img`` with a draw that depends only on this simulator's seed and ``path``: the same
        occluded test set every time, whatever the order of the images."""
        digest = hashlib.sha256(f"{self.seed}:{path}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        return Image.fromarray(self._apply_array(np.asarray(img.convert("RGB")), rng))

    def occlude_batch(self, images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Occlude each image of a batch (B, C, H, W) (any scale) at its own random location; the fill uses each
        image's own mean colour ("mean"), 0 ("black") or uniform values in the batch's range ("noise").
        Returns a new tensor."""
        b, c, h, w = images.shape
        ph, pw = self.patch_size(h, w)
        out = images.clone()
        tops = torch.randint(0, h - ph + 1, (b,), generator=generator)
        lefts = torch.randint(0, w - pw + 1, (b,), generator=generator)
        if self.fill == "mean":
            fill = images.mean(dim=(2, 3))
        elif self.fill == "black":
            fill = images.new_zeros(b, c)
        else:
            lo, hi = float(images.min()), float(images.max())
        for k in range(b):
            t, l = int(tops[k]), int(lefts[k])
            if self.fill == "noise":
                patch = torch.rand(c, ph, pw, generator=generator).to(images) * (hi - lo) + lo
                out[k, :, t:t + ph, l:l + pw] = patch
            else:
                out[k, :, t:t + ph, l:l + pw] = fill[k].view(c, 1, 1)
        return out


def occlude_split(items, simulator: OcclusionSimulator, cache_dir: str, desc: str = "occluding"):
    """Occluded copies of a split's images, written once to ``cache_dir`` and reused.

    Each image gets the draw of :meth:`OcclusionSimulator.occlude_path_deterministic` (seeded by the simulator's
    seed and the image path), so the occluded set is the same on every run and machine. The copies keep the
    file names under ``cache_dir`` (PNG, lossless) and the items keep their pid / camid.

    Args:
        items: ``(path, pid, camid)`` tuples. simulator: the occluder (its ``seed`` must be set).
        cache_dir: folder for this (dataset, split, simulator) combination; created if missing.
    Returns: a new list of ``(cached_path, pid, camid)``.
    Raises: ValueError without a seed; OSError naming an unreadable image.
    """
    import os
    from tqdm import tqdm

    if simulator.seed is None:
        raise ValueError("occlude_split needs a simulator with a seed (a reproducible occluded test set)")
    os.makedirs(cache_dir, exist_ok=True)
    out = []
    for path, pid, camid in tqdm(items, desc=desc, unit="img", disable=len(items) < 200):
        key = hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:12]
        target = os.path.join(cache_dir, f"{os.path.splitext(os.path.basename(path))[0]}_{key}.png")
        if not os.path.isfile(target):
            try:
                img = Image.open(path)
                img.load()
            except OSError as e:
                raise OSError(f"cannot read image {path}: {e}") from e
            tmp = target + ".tmp.png"
            simulator.occlude_path_deterministic(os.path.basename(path), img).save(tmp)
            os.replace(tmp, target)   # a crash never leaves a half-written image in the cache
        out.append((target, pid, camid))
    return out
