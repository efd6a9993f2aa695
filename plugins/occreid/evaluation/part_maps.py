"""AMD-Net's per-part debugging view (BPBreID-style): one row per query with the image, its foreground map p_t,
the K part attention maps with their visibility, and its top gallery matches with the distance and the
per-part distances (only parts visible in both images count; Eq. 12).

Toolbox-free (Pillow + matplotlib's colormap); :func:`part_match_rows` computes the rows from AMD-Net test
features, :func:`draw_part_maps` draws them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from .masks import overlay

PART_NAMES = ("head", "arms", "trunk", "legs", "feet")
CAPTION = 40
TILE = (96, 192)


def split_features(feats: torch.Tensor, num_parts: int):
    """AMD-Net test features (N, 2C + K C + K) -> (f_t (N, C), f_g (N, C), parts (N, K, C), visibility (N, K)).
    Raises ValueError when the width fits no C."""
    n, d = feats.shape
    if (d - num_parts) % (num_parts + 2):
        raise ValueError(f"features of width {d} are not AMD-Net's [f_t, f_g, {num_parts} parts, visibility]")
    c = (d - num_parts) // (num_parts + 2)
    return (feats[:, :c], feats[:, c:2 * c], feats[:, 2 * c:2 * c + num_parts * c].reshape(n, num_parts, c),
            feats[:, d - num_parts:])


def part_match_rows(q_feats, g_feats, distance: np.ndarray, num_parts: int = 5, topk: int = 3):
    """For each query, its ``topk`` gallery indices and, per match, (distance, per-part distances (K,) with NaN
    where the part is not visible in both). q_feats (q, D), g_feats (g, D), distance (q, g)."""
    _, _, qp, qv = split_features(torch.as_tensor(q_feats).float(), num_parts)
    _, _, gp, gv = split_features(torch.as_tensor(g_feats).float(), num_parts)
    rows = []
    for i in range(len(qp)):
        order = np.argsort(distance[i])[:topk]
        matches = []
        for j in order:
            d_parts = (qp[i] - gp[j]).norm(dim=1).numpy()
            both = (qv[i] * gv[j]).numpy() > 0
            matches.append((int(j), float(distance[i, j]), np.where(both, d_parts, np.nan)))
        rows.append(matches)
    return rows


def draw_part_maps(queries: Sequence, part_maps: np.ndarray, visibility: np.ndarray, out_png: str,
                   gallery: Sequence = (), matches: Sequence = (), captions: Sequence[str] | None = None,
                   gallery_captions: Sequence[str] | None = None, part_names: Sequence[str] = PART_NAMES,
                   query_pids: Sequence[int] | None = None, gallery_pids: Sequence[int] | None = None) -> str:
    """Write the per-part view and return ``out_png``.

    Args:
        queries: N image paths or PIL images. part_maps: (N, K, h, w) part attention maps (probabilities).
        visibility: (N, K) in {0, 1}. gallery: image paths / PIL images indexed by ``matches``.
        matches: N lists of (gallery index, distance, per-part distances (K,), NaN = not compared).
        captions: N texts under the queries; gallery_captions: one per gallery image (e.g. "pid 5").
        query_pids, gallery_pids: when both are given, each match is marked "TRUE" (same pid) or "false".
    Raises: ValueError on inconsistent shapes; OSError naming an unreadable image.
    """
    maps = np.asarray(part_maps, dtype=np.float32)
    vis = np.asarray(visibility)
    if maps.ndim != 4 or len(queries) != len(maps) or vis.shape != maps.shape[:2]:
        raise ValueError(f"draw_part_maps: {len(queries)} queries, maps {maps.shape}, visibility {vis.shape}")
    n, k = maps.shape[:2]
    topk = max((len(m) for m in matches), default=0)
    cols = 2 + k + topk
    w, h = TILE
    canvas = Image.new("RGB", (cols * (w + 4), n * (h + CAPTION + 4)), "white")
    draw = ImageDraw.Draw(canvas)

    def load(x):
        if isinstance(x, Image.Image):
            return x.convert("RGB")
        try:
            return Image.open(x).convert("RGB")
        except OSError as e:
            raise OSError(f"cannot read image {x}: {e}") from e

    for i in range(n):
        y = i * (h + CAPTION + 4)
        img = load(queries[i])
        tiles = [(img, captions[i] if captions else "query"),
                 (overlay(img, maps[i].max(0), cmap="viridis"), f"p_t max {maps[i].max():.2f}")]
        for j in range(k):
            name = part_names[j] if j < len(part_names) else f"part {j + 1}"
            tiles.append((overlay(img, maps[i, j], cmap="jet"),
                          f"{name} {'vis' if vis[i, j] else 'HID'}\nmax {maps[i, j].max():.2f}"))
        for gi, dist, d_parts in (matches[i] if matches else []):
            cap = gallery_captions[gi] if gallery_captions else f"#{gi}"
            if query_pids is not None and gallery_pids is not None:
                cap += " TRUE" if gallery_pids[gi] == query_pids[i] else " false"
            parts = [f"{(part_names[j] if j < len(part_names) else str(j + 1))[0]} "
                     + ("-" if np.isnan(v) else f"{v:.1f}") for j, v in enumerate(d_parts)]
            tiles.append((load(gallery[gi]), f"{cap}\nd {dist:.2f}: {' '.join(parts[:2])}\n{' '.join(parts[2:])}"))
        for c, (tile, text) in enumerate(tiles):
            x = c * (w + 4)
            canvas.paste(tile.resize(TILE), (x, y))
            draw.multiline_text((x + 1, y + h + 1), text, fill="black", spacing=1)
    canvas.save(out_png)
    return out_png
