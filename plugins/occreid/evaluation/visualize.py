"""Rank-list pictures: each query with its top-k gallery thumbnails, as PNG and as an HTML page.

Borders: green = same identity, red = another identity, grey = same identity and same camera (the
standard protocol ignores these), white = ground truth unknown. Toolbox-free (Pillow).
"""

from __future__ import annotations

import html
import os
from typing import Sequence

from PIL import Image, ImageDraw, ImageOps

from .gallery import SearchResult

THUMB = (64, 128)  # width, height
BORDER = 4
COLORS = {"match": (0, 170, 0), "miss": (220, 0, 0), "junk": (150, 150, 150), "unknown": (255, 255, 255),
          "query": (0, 0, 0)}


def match_kind(query_pid: int, query_camid: int, pid: int, camid: int) -> str:
    """``"match"``, ``"miss"``, ``"junk"`` (same pid and camera) or ``"unknown"`` (a pid is -1)."""
    if query_pid < 0 or pid < 0:
        return "unknown"
    if pid != query_pid:
        return "miss"
    return "junk" if camid == query_camid and query_camid >= 0 else "match"


def _thumb(path: str, color) -> Image.Image:
    try:
        img = Image.open(path).convert("RGB")
    except OSError as e:
        raise OSError(f"cannot read image {path}: {e}") from e
    img = img.resize((THUMB[0] - 2 * BORDER, THUMB[1] - 2 * BORDER))
    return ImageOps.expand(img, border=BORDER, fill=color)


def draw_rank_lists(queries: Sequence[dict], results: Sequence[SearchResult], out_png: str,
                    max_rows: int = 20) -> str:
    """One row per query (up to ``max_rows``): the query, then its top-k with coloured borders and
    distances. ``queries``: dicts with ``path``, ``pid``, ``camid``. Returns ``out_png``."""
    rows = list(zip(queries, results))[:max_rows]
    k = max(len(r.paths) for _, r in rows)
    gap, text_h = 12, 14
    width = THUMB[0] * (k + 1) + gap
    height = (THUMB[1] + text_h) * len(rows)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (q, res) in enumerate(rows):
        y = r * (THUMB[1] + text_h)
        canvas.paste(_thumb(q["path"], COLORS["query"]), (0, y))
        draw.text((2, y + THUMB[1]), "query", fill=(0, 0, 0))
        for c, (p, pid, cam, d) in enumerate(zip(res.paths, res.pids, res.camids, res.distances)):
            x = gap + THUMB[0] * (c + 1)
            canvas.paste(_thumb(p, COLORS[match_kind(q["pid"], q["camid"], pid, cam)]), (x, y))
            draw.text((x + 2, y + THUMB[1]), f"{max(float(d), 0.0):.3f}", fill=(0, 0, 0))
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    canvas.save(out_png)
    return out_png


def write_rank_html(queries: Sequence[dict], results: Sequence[SearchResult], out_html: str,
                    title: str = "occreid search") -> str:
    """An HTML page with every query's rank list (images linked by absolute path). Returns ``out_html``."""
    def img(path, color, caption):
        rgb = "rgb({},{},{})".format(*color)
        return (f'<figure><img src="file://{html.escape(os.path.abspath(path))}" width="64" height="128" '
                f'style="border:4px solid {rgb}"><figcaption>{html.escape(caption)}</figcaption></figure>')

    parts = [f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
             "<style>figure{display:inline-block;margin:2px;font:11px sans-serif;text-align:center}"
             "div.row{white-space:nowrap;margin-bottom:8px}</style>",
             f"<h1>{html.escape(title)}</h1>",
             "<p>green: same identity; red: other identity; grey: same identity and camera "
             "(ignored by the standard protocol); white: unknown</p>"]
    for q, res in zip(queries, results):
        row = [img(q["path"], COLORS["query"], f"query pid {q['pid']} cam {q['camid']}")]
        for p, pid, cam, d in zip(res.paths, res.pids, res.camids, res.distances):
            row.append(img(p, COLORS[match_kind(q["pid"], q["camid"], pid, cam)], f"{max(float(d), 0.0):.3f} pid {pid}"))
        parts.append(f"<div class='row' title='{html.escape(q['path'])}'>{''.join(row)}</div>")
    os.makedirs(os.path.dirname(os.path.abspath(out_html)), exist_ok=True)
    with open(out_html, "w") as f:
        f.write("\n".join(parts))
    return out_html
