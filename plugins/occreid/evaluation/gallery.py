"""Gallery index and search: one API over two backends, and the names a caller needs.

- FAISS, in-process, a folder on disk (the default): :class:`GalleryIndex`, defined in
  :mod:`occreid.evaluation.faiss_index` (on-disk format, atomic writes, model checks);
- Milvus, a collection in a milvus-lite file or a server / cluster (``pip install occreid[milvus]``):
  :class:`occreid.evaluation.milvus_index.MilvusGalleryIndex`, with the same API.

:func:`open_gallery_index` / :func:`write_gallery_index` choose by ``backend="faiss" | "milvus"``. What both
backends share (:class:`SearchResult`, :class:`IndexMismatchError`, :func:`check_finite`, :func:`check_topk`) is in
:mod:`occreid.evaluation.gallery_base`. Every one of these names is importable from here
(``from occreid.evaluation.gallery import GalleryIndex, IndexMismatchError, open_gallery_index``).

Imports run one way: ``gallery`` -> ``milvus_index`` -> ``faiss_index`` -> ``gallery_base``; neither backend
imports this module. Toolbox-free.
"""

from __future__ import annotations

from typing import Optional

# re-exported: callers import these names from here (documented in the modules that define them)
from .faiss_index import (FORMAT_VERSION, INDEX_FILE, MANIFEST_FILE, META_FILE, GalleryIndex,  # noqa: F401
                          index_exists)
from .gallery_base import IndexMismatchError, SearchResult, _normalize, check_finite, check_topk  # noqa: F401
from .milvus_index import DEFAULT_COLLECTION, MilvusGalleryIndex

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
        return MilvusGalleryIndex.open(uri, location or DEFAULT_COLLECTION, expected_model_hash=expected_model_hash,
                                       expected_dim=expected_dim, token=token)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


def write_gallery_index(gallery: GalleryIndex, location: Optional[str] = None, backend: str = "faiss",
                        uri: Optional[str] = None, token: str = "", if_exists: Optional[str] = None):
    """Write ``gallery`` to either backend.

    Args:
        location, backend, uri, token: as in :func:`open_gallery_index`.
        if_exists: what to do with an index already there: ``"error"`` (the default for both backends: an index is
            never replaced silently), ``"overwrite"`` (replace it; the faiss folder is replaced atomically) or
            ``"append"`` (open it, checked against ``gallery``'s model hash, feature size and metric, and add the
            items).
    Returns:
        the written index (:class:`GalleryIndex` or ``MilvusGalleryIndex``).
    Raises:
        FileExistsError: ``if_exists="error"`` and the index exists; IndexMismatchError: appending another
        model's features or another metric; ValueError: unknown backend or ``if_exists``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if_exists = if_exists or "error"
    if if_exists not in ("overwrite", "error", "append"):
        raise ValueError(f"if_exists must be 'overwrite', 'error' or 'append', got {if_exists!r}")
    if backend == "faiss":
        if not location:
            raise ValueError("the faiss backend needs the index folder")
        exists = index_exists(location)
        if exists and if_exists == "error":
            raise FileExistsError(f"gallery index already exists: {location} (append to it or overwrite it)")
        if exists and if_exists == "append":
            old = GalleryIndex.load(location, expected_model_hash=gallery.model_hash, expected_dim=gallery.dim)
            if old.metric != gallery.metric:
                raise IndexMismatchError(f"{location} uses metric {old.metric!r}, the new items {gallery.metric!r}")
            old.add(gallery.features, gallery.paths, gallery.pids, gallery.camids)
            gallery = old
        gallery.save(location)
        return gallery
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
