"""A gallery index on disk: FAISS index + metadata, search with optional k-reciprocal re-ranking.

Toolbox-free: features come from any model. On disk a gallery index is a folder with

- ``index.faiss``: an exact ``IndexFlatL2`` over the (l2-normalised, for ``metric="cosine"``) features;
- ``meta.json``: format version, feature size, metric, ``model_hash`` (identifies the model that
  made the features: config and weights), and per item ``path``, ``pid``, ``camid`` (``-1`` unknown).

Loading checks the feature size and model hash of the query side against the file: a mismatch is an
:class:`IndexMismatchError`, never a silent search in the wrong feature space.

Backends: this in-process FAISS index is the default; a gallery in a Milvus collection (milvus-lite file or
cluster, ``pip install occreid[milvus]``) is :class:`occreid.evaluation.milvus_index.MilvusGalleryIndex`, with
the same API. :func:`open_gallery_index` / :func:`write_gallery_index` choose by ``backend="faiss" | "milvus"``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
META_FILE = "meta.json"


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


@dataclass
class GalleryIndex:
    """Gallery features with their metadata.

    Attributes:
        features: (g, D) float32, normalised if ``metric == "cosine"``.
        paths, pids, camids: per gallery item (pid / camid ``-1`` when unknown).
        metric: ``"euclidean"`` or ``"cosine"``.
        model_hash: identifies the model (config + weights) that produced the features.
        info: free-form provenance (config file, weights file, dataset, split).
    """

    features: np.ndarray
    paths: List[str]
    pids: List[int]
    camids: List[int]
    metric: str = "cosine"
    model_hash: str = ""
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.features = np.ascontiguousarray(self.features, dtype=np.float32)
        if self.features.ndim != 2:
            raise ValueError(f"features must be (g, D), got shape {self.features.shape}")
        n = self.features.shape[0]
        if not (len(self.paths) == len(self.pids) == len(self.camids) == n):
            raise ValueError(f"{n} features but {len(self.paths)} paths, {len(self.pids)} pids, "
                             f"{len(self.camids)} camids")
        if self.metric not in ("euclidean", "cosine"):
            raise ValueError(f"metric must be 'euclidean' or 'cosine', got {self.metric!r}")
        if self.metric == "cosine":
            norms = np.linalg.norm(self.features, axis=1)
            if n and np.abs(norms - 1).max() > 1e-5:  # already unit vectors (e.g. loaded): keep bits
                self.features = _normalize(self.features)

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    def add(self, features: np.ndarray, paths: List[str], pids: List[int], camids: List[int]) -> np.ndarray:
        """Append (n, D) ``features`` (normalised for cosine, as in the constructor) with their metadata (n each).

        Returns:
            (n,) int64 gallery indices of the new items, following the existing ones.
        Raises:
            IndexMismatchError: the features are not D-d.
            ValueError: lengths disagree.
        """
        new = GalleryIndex(features, list(paths), [int(p) for p in pids], [int(c) for c in camids], self.metric)
        if new.dim != self.dim:
            raise IndexMismatchError(f"features of shape {new.features.shape} for a {self.dim}-d index")
        start = len(self.paths)
        self.features = np.ascontiguousarray(np.concatenate([self.features, new.features]))
        self.paths, self.pids, self.camids = self.paths + new.paths, self.pids + new.pids, self.camids + new.camids
        return np.arange(start, start + len(new.paths), dtype=np.int64)

    def save(self, folder: str) -> None:
        """Write ``index.faiss`` and ``meta.json`` into ``folder`` (created)."""
        import faiss
        os.makedirs(folder, exist_ok=True)
        index = faiss.IndexFlatL2(self.dim)
        index.add(self.features)
        faiss.write_index(index, os.path.join(folder, INDEX_FILE))
        meta = {"format_version": FORMAT_VERSION, "dim": self.dim, "metric": self.metric,
                "model_hash": self.model_hash, "info": self.info,
                "items": [{"path": p, "pid": int(i), "camid": int(c)}
                          for p, i, c in zip(self.paths, self.pids, self.camids)]}
        with open(os.path.join(folder, META_FILE), "w") as f:
            json.dump(meta, f, indent=1)

    @classmethod
    def load(cls, folder: str, expected_model_hash: Optional[str] = None,
             expected_dim: Optional[int] = None) -> "GalleryIndex":
        """Read a folder written by :meth:`save`.

        Raises:
            FileNotFoundError: ``index.faiss`` or ``meta.json`` missing (names the file).
            ValueError: unknown format version, or the index and metadata disagree.
            IndexMismatchError: ``expected_model_hash`` / ``expected_dim`` differ from the file's.
        """
        import faiss
        index_path, meta_path = os.path.join(folder, INDEX_FILE), os.path.join(folder, META_FILE)
        for p in (index_path, meta_path):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"gallery index file not found: {p}")
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: unsupported format_version {meta.get('format_version')!r}")
        if expected_dim is not None and int(meta["dim"]) != int(expected_dim):
            raise IndexMismatchError(
                f"{folder} holds {meta['dim']}-d features but the query model gives {expected_dim}-d "
                f"features: build the index with the same model (config + weights)")
        if expected_model_hash is not None and meta["model_hash"] != expected_model_hash:
            raise IndexMismatchError(
                f"{folder} was built with model {meta['model_hash'][:12]} ({meta['info'].get('weights', '?')}, "
                f"{meta['info'].get('config', '?')}) but the query model is {expected_model_hash[:12]}: "
                f"distances between the two feature spaces are meaningless; rebuild the index")
        index = faiss.read_index(index_path)
        items = meta["items"]
        if index.ntotal != len(items) or index.d != int(meta["dim"]):
            raise ValueError(f"{folder}: index has {index.ntotal} x {index.d} vectors, metadata "
                             f"{len(items)} x {meta['dim']}")
        feats = index.reconstruct_n(0, index.ntotal)
        return cls(feats, [it["path"] for it in items], [it["pid"] for it in items],
                   [it["camid"] for it in items], meta["metric"], meta["model_hash"], meta["info"])

    def search(self, query_features: np.ndarray, topk: int = 10, rerank: bool = False, k1: int = 20,
               k2: int = 6, lambda_value: float = 0.3) -> List[SearchResult]:
        """Top-k gallery items for each query feature.

        Args:
            query_features: (q, D) float32 from the index's model.
            topk: results per query.
            rerank: k-reciprocal re-ranking (Zhong et al.) over queries + gallery, without a dense
                q x g array (:func:`occreid.evaluation.rerank.re_ranking_topk`).
        Returns:
            one :class:`SearchResult` per query; distances are l2 (cosine: of normalised features)
            or, re-ranked, Zhong's final distance.
        Raises:
            IndexMismatchError: the query feature size differs from the index's.
        """
        import faiss
        q = np.ascontiguousarray(query_features, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise IndexMismatchError(f"query features of shape {q.shape} for a {self.dim}-d index")
        if self.metric == "cosine":
            q = _normalize(q)
        topk = min(topk, len(self.paths))
        if rerank:
            from .rerank import re_ranking_topk
            idx, dist = re_ranking_topk(q, self.features, topk=topk, k1=k1, k2=k2, lambda_value=lambda_value)
        else:
            index = faiss.IndexFlatL2(self.dim)
            index.add(self.features)
            dist, idx = index.search(q, topk)
            dist = np.sqrt(np.maximum(dist, 0))
        return [SearchResult(i, d, [self.paths[j] for j in i], [self.pids[j] for j in i],
                             [self.camids[j] for j in i]) for i, d in zip(idx, dist)]


BACKENDS = ("faiss", "milvus")


def open_gallery_index(location: Optional[str] = None, backend: str = "faiss", uri: Optional[str] = None,
                       token: str = "", expected_model_hash: Optional[str] = None,
                       expected_dim: Optional[int] = None):
    """Open a gallery index of either backend, checked against the query model.

    Args:
        location: ``backend="faiss"``: the folder written by :meth:`GalleryIndex.save`; ``"milvus"``: the
            collection name (``None``: ``occreid_gallery``).
        backend: ``"faiss"`` (in-process, a folder on disk; default) or ``"milvus"``
            (:class:`occreid.evaluation.milvus_index.MilvusGalleryIndex`, ``pip install occreid[milvus]``).
        uri: Milvus only: a milvus-lite file (``gallery.db``) or a server / cluster (``http://host:19530``).
        token: Milvus only: ``"user:password"`` or an API key.
    Returns:
        a :class:`GalleryIndex` or a ``MilvusGalleryIndex``; both have ``search``, ``add``, ``dim``, ``metric``,
        ``model_hash``, ``info``.
    Raises:
        ValueError: unknown backend, missing location / uri.
        FileNotFoundError: no index there; IndexMismatchError: another model or feature size (see the backends).
        ImportError: ``backend="milvus"`` without pymilvus.
    """
    if backend == "faiss":
        if not location:
            raise ValueError("the faiss backend needs the index folder")
        return GalleryIndex.load(location, expected_model_hash=expected_model_hash, expected_dim=expected_dim)
    if backend == "milvus":
        from .milvus_index import DEFAULT_COLLECTION, MilvusGalleryIndex
        return MilvusGalleryIndex.open(uri, location or DEFAULT_COLLECTION, expected_model_hash=expected_model_hash,
                                       expected_dim=expected_dim, token=token)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def write_gallery_index(gallery: GalleryIndex, location: Optional[str] = None, backend: str = "faiss",
                        uri: Optional[str] = None, token: str = "", if_exists: Optional[str] = None):
    """Write ``gallery`` to either backend.

    Args:
        location, backend, uri, token: as in :func:`open_gallery_index`.
        if_exists: what to do with an index already there: ``"overwrite"`` (the faiss default: the folder's
            files are rewritten), ``"error"`` (the milvus default: a shared collection is never replaced
            silently) or ``"append"`` (open it, checked against ``gallery``'s model hash and feature size,
            and add the items).
    Returns:
        the written index (:class:`GalleryIndex` or ``MilvusGalleryIndex``).
    Raises:
        FileExistsError: ``if_exists="error"`` and the index exists; IndexMismatchError: appending another
        model's features; ValueError: unknown backend or ``if_exists``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if_exists = if_exists or ("overwrite" if backend == "faiss" else "error")
    if if_exists not in ("overwrite", "error", "append"):
        raise ValueError(f"if_exists must be 'overwrite', 'error' or 'append', got {if_exists!r}")
    if backend == "faiss":
        if not location:
            raise ValueError("the faiss backend needs the index folder")
        exists = os.path.isfile(os.path.join(location, META_FILE))
        if exists and if_exists == "error":
            raise FileExistsError(f"gallery index already exists: {location}")
        if exists and if_exists == "append":
            old = GalleryIndex.load(location, expected_model_hash=gallery.model_hash, expected_dim=gallery.dim)
            old.add(gallery.features, gallery.paths, gallery.pids, gallery.camids)
            gallery = old
        gallery.save(location)
        return gallery
    from .milvus_index import DEFAULT_COLLECTION, MilvusGalleryIndex
    collection = location or DEFAULT_COLLECTION
    if if_exists == "append":
        try:
            index = MilvusGalleryIndex.open(uri, collection, expected_model_hash=gallery.model_hash,
                                            expected_dim=gallery.dim, token=token)
        except FileNotFoundError:
            return MilvusGalleryIndex.from_gallery(gallery, uri, collection, token=token)
        if index.metric != gallery.metric:
            raise IndexMismatchError(f"{index.where} uses metric {index.metric!r}, the new items {gallery.metric!r}")
        index.add(gallery.features, gallery.paths, gallery.pids, gallery.camids)
        return index
    return MilvusGalleryIndex.from_gallery(gallery, uri, collection, token=token, overwrite=if_exists == "overwrite")


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

