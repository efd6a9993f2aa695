"""What both gallery backends share: the search result, the feature-space error and the input checks.

:class:`occreid.evaluation.faiss_index.GalleryIndex` (FAISS, a folder on disk) and
:class:`occreid.evaluation.milvus_index.MilvusGalleryIndex` (a Milvus collection) both import from here;
:mod:`occreid.evaluation.gallery` re-exports every name, so ``from occreid.evaluation.gallery import SearchResult``
keeps working. Toolbox-free; NumPy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np


class IndexMismatchError(ValueError):
    """The query features do not belong to the index's feature space (other model or feature size)."""


@dataclass
class SearchResult:
    """Top-k of one query: gallery ``indices`` (nearest first), their ``distances``, and metadata."""

    indices: np.ndarray
    distances: np.ndarray
    paths: List[str]
    pids: List[int]
    camids: List[int]


def check_finite(features: np.ndarray, name: str) -> None:
    """Raise ValueError naming ``name`` and the first row when ``features`` (n, D) holds NaN or inf."""
    bad = ~np.isfinite(features).all(axis=1) if features.size else np.zeros(0, dtype=bool)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"{name}: {len(rows)} of {len(features)} rows contain NaN or inf (first: row {int(rows[0])}); "
                         f"such a feature has no nearest neighbour")


def check_topk(topk) -> None:
    """Raise ValueError unless ``topk`` is a positive integer (results per query)."""
    if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
        raise ValueError(f"topk must be a positive integer (results per query), got {topk!r}")


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
