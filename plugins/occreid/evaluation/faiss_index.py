"""The FAISS gallery backend: a gallery index on disk (FAISS index + metadata), search with optional
k-reciprocal re-ranking.

Toolbox-free: features come from any model. On disk a gallery index is a folder with

- ``index-<generation>.faiss``: an exact ``IndexFlatL2`` over the (l2-normalised, for ``metric="cosine"``)
  features;
- ``meta-<generation>.json``: format version, feature size, metric, ``model_hash`` (identifies the model that
  made the features: config and weights), and per item ``path``, ``pid``, ``camid`` (``-1`` unknown);
- ``manifest.json``: which index / metadata pair is the index (their names, the item count and the sha256 of
  the index file).

Writes cannot leave a half-written index: a save writes a new pair of files beside the old one (fsync'ed),
then replaces ``manifest.json`` atomically (``os.replace``) and only then removes the old pair. A save that
fails or is killed at any point leaves the previous manifest, which still names complete files. Folders of
the first format (``index.faiss`` + ``meta.json``, no manifest) are still read.

Loading checks the feature size and model hash of the query side against the file: a mismatch is an
:class:`IndexMismatchError`, never a silent search in the wrong feature space.

Backends: this in-process FAISS index is the default; a gallery in a Milvus collection (milvus-lite file or
cluster, ``pip install occreid[milvus]``) is :class:`occreid.evaluation.milvus_index.MilvusGalleryIndex`, with
the same API. :func:`occreid.evaluation.gallery.open_gallery_index` /
:func:`occreid.evaluation.gallery.write_gallery_index` choose by ``backend="faiss" | "milvus"``;
:mod:`occreid.evaluation.gallery` re-exports :class:`GalleryIndex`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np

from .gallery_base import IndexMismatchError, SearchResult, _normalize, check_finite, check_topk

FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"       # the first format's names (no manifest), still read
META_FILE = "meta.json"
MANIFEST_FILE = "manifest.json"


def _fsync_write(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory file descriptors
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: str) -> str:
    import hashlib
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def index_exists(folder: str) -> bool:
    """True when ``folder`` holds a gallery index (a manifest, or the first format's ``meta.json``)."""
    return os.path.isfile(os.path.join(folder, MANIFEST_FILE)) or os.path.isfile(os.path.join(folder, META_FILE))


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
        check_finite(self.features, "gallery features")
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
        """Write the index into ``folder`` (created) without ever leaving a half-written index (module docstring):
        a new ``index-<gen>.faiss`` + ``meta-<gen>.json`` pair, fsync'ed, then ``manifest.json`` replaced
        atomically, then the files of the previous generation removed.

        Raises:
            TypeError: ``info`` holds a value JSON cannot write (nothing on disk is changed).
            OSError: the folder cannot be written (the previous index stays loadable).
        """
        import uuid

        import faiss
        meta = {"format_version": FORMAT_VERSION, "dim": self.dim, "metric": self.metric,
                "model_hash": self.model_hash, "info": self.info,
                "items": [{"path": p, "pid": int(i), "camid": int(c)}
                          for p, i, c in zip(self.paths, self.pids, self.camids)]}
        meta_bytes = json.dumps(meta, indent=1).encode()   # fails here, before any file is touched
        os.makedirs(folder, exist_ok=True)
        gen = uuid.uuid4().hex[:16]
        index_name, meta_name = f"index-{gen}.faiss", f"meta-{gen}.json"
        index = faiss.IndexFlatL2(self.dim)
        index.add(self.features)
        _fsync_write(os.path.join(folder, index_name), faiss.serialize_index(index).tobytes())
        _fsync_write(os.path.join(folder, meta_name), meta_bytes)
        manifest = {"format_version": FORMAT_VERSION, "index": index_name, "meta": meta_name,
                    "count": len(self.paths), "dim": self.dim,
                    "index_sha256": _sha256(os.path.join(folder, index_name))}
        tmp = os.path.join(folder, f".{MANIFEST_FILE}.{gen}.tmp")
        _fsync_write(tmp, json.dumps(manifest, indent=1).encode())
        os.replace(tmp, os.path.join(folder, MANIFEST_FILE))   # the commit point
        _fsync_dir(folder)
        for name in os.listdir(folder):   # older generations, the first format's files, leftovers of killed writes
            stale = (name.startswith(("index-", "meta-")) and name not in (index_name, meta_name)) \
                or name in (INDEX_FILE, META_FILE) or (name.startswith(f".{MANIFEST_FILE}.") and name.endswith(".tmp"))
            if stale:
                try:
                    os.remove(os.path.join(folder, name))
                except OSError:
                    pass

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
        manifest_path = os.path.join(folder, MANIFEST_FILE)
        manifest = None
        if os.path.isfile(manifest_path):
            try:
                with open(manifest_path) as f:
                    manifest = json.load(f)
                index_path = os.path.join(folder, manifest["index"])
                meta_path = os.path.join(folder, manifest["meta"])
            except (ValueError, KeyError, TypeError) as e:
                raise ValueError(f"{manifest_path} is not a gallery manifest ({e}); rebuild the index") from None
        else:
            index_path, meta_path = os.path.join(folder, INDEX_FILE), os.path.join(folder, META_FILE)
        for p in (index_path, meta_path):
            if not os.path.isfile(p):
                raise FileNotFoundError(f"gallery index file not found: {p}")
        if manifest is not None and manifest.get("index_sha256") and _sha256(index_path) != manifest["index_sha256"]:
            raise ValueError(f"{index_path} does not match its manifest's checksum (the file was changed or "
                             f"damaged after it was written); rebuild the index")
        try:
            with open(meta_path) as f:
                meta = json.load(f)
        except ValueError as e:
            raise ValueError(f"{meta_path} is not valid JSON ({e}); rebuild the index") from None
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
            ValueError: ``topk`` is not a positive integer, the index is empty, or a query row holds NaN / inf
                (names the row).
        """
        import faiss
        q = np.ascontiguousarray(query_features, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise IndexMismatchError(f"query features of shape {q.shape} for a {self.dim}-d index")
        check_topk(topk)
        if not self.paths:
            raise ValueError("the gallery index is empty: add gallery images before searching")
        check_finite(q, "query features")
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
        out = []
        for i, d in zip(idx, dist):
            keep = i >= 0   # faiss marks missing results with -1: never an item (the last one, by Python indexing)
            i, d = i[keep], d[keep]
            out.append(SearchResult(i, d, [self.paths[j] for j in i], [self.pids[j] for j in i],
                                    [self.camids[j] for j in i]))
        return out
