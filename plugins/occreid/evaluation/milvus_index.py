"""A gallery index in a Milvus collection: the same API as :class:`~occreid.evaluation.faiss_index.GalleryIndex`.

FAISS in-process (:class:`GalleryIndex`, a folder on disk) stays the default backend; this one is for
galleries that live in a Milvus server or cluster, shared by several services and growing online
(``pip install occreid[milvus]``). The same code opens

- a milvus-lite file: ``uri="galleries/duke.db"`` (embedded, in-process; nothing to start), or
- a Milvus server / cluster / Zilliz Cloud: ``uri="http://host:19530"`` (``token="user:password"`` or an
  API key).

One collection is one gallery. Rows: ``id`` (INT64 primary key = the item's position in the gallery, 0, 1,
...; it is :attr:`SearchResult.indices`), ``feature`` (FLOAT_VECTOR, l2-normalised when ``metric="cosine"``,
like :class:`GalleryIndex`), ``path`` (VARCHAR), ``pid``, ``camid`` (INT64; ``-1`` unknown). The vector
index is an exact ``FLAT`` index under ``L2``, so a search equals FAISS's exact ``IndexFlatL2`` search;
distances are returned as l2 (the square root of Milvus's squared l2), as :meth:`GalleryIndex.search` does.
The gallery's metadata lives in the collection's properties: ``occreid.format_version``, ``occreid.dim``,
``occreid.metric``, ``occreid.model_hash``, ``occreid.info`` (JSON).

Opening checks the query side's model hash and feature size against the collection (an
:class:`IndexMismatchError` naming the collection, never a silent search in another feature space) and
every search checks them again, so that a collection dropped and rebuilt by another model under the same
name is noticed by the services that hold it open.

Writes to one collection must come from one writer at a time (ids are positions: :meth:`add` numbers the new
rows from the current row count); any number of readers may search it.
"""

from __future__ import annotations

import json
import os
import re
from typing import Iterable, List, Optional, Sequence
from urllib.parse import urlparse, urlunparse

import numpy as np

from .faiss_index import GalleryIndex
from .gallery_base import IndexMismatchError, SearchResult, _normalize, check_finite, check_topk

FORMAT_VERSION = 1
DEFAULT_COLLECTION = "occreid_gallery"
PROPERTY_PREFIX = "occreid."
MAX_TOPK = 16384          # Milvus: limit (topk) of one search, and offset + limit of one query
MAX_NQ = 1024             # queries per search request (Milvus allows 16384; results also count)
MAX_RESULTS = 1 << 18     # queries x topk per search request (keeps a reply far below gRPC's 64 MB)
INSERT_ROWS_BYTES = 16 << 20  # feature bytes per insert request (Milvus' default gRPC limit is 64 MB)
MAX_PATH_BYTES = 4096     # VARCHAR max_length of the path field
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
INSTALL_HINT = ("the Milvus gallery backend needs pymilvus: pip install 'occreid[milvus]' "
                "(pymilvus, and milvus-lite for a local .db file)")


def _pymilvus():
    """The ``pymilvus`` module, imported on first use.

    Raises:
        ImportError: pymilvus is not installed (the message says ``pip install occreid[milvus]``).
    """
    try:
        import pymilvus
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return pymilvus


def safe_uri(uri: str) -> str:
    """``uri`` without a ``user:password@`` part, for messages."""
    p = urlparse(uri)
    if p.scheme and "@" in p.netloc:
        return urlunparse(p._replace(netloc=p.netloc.rsplit("@", 1)[1]))
    return uri


def connect(uri: str, token: str = "", db_name: str = ""):
    """A ``pymilvus.MilvusClient`` for ``uri``.

    Args:
        uri: a milvus-lite file (a path ending in ``.db``; its folder is created) or a server / cluster address
            (``http://host:19530``, ``https://...``).
        token: ``"user:password"`` or an API key for a server with authentication; empty for milvus-lite.
        db_name: Milvus database; empty: the server's default.
    Raises:
        ImportError: pymilvus (or, for a ``.db`` file, milvus-lite) is not installed.
        ValueError: ``uri`` is empty.
    """
    if not uri:
        raise ValueError("the Milvus backend needs a URI: a milvus-lite file (gallery.db) or http://host:19530")
    pymilvus = _pymilvus()
    if uri.endswith(".db"):
        try:
            import milvus_lite  # noqa: F401
        except ImportError as e:
            raise ImportError(f"{uri} is a milvus-lite file: {INSTALL_HINT}") from e
        parent = os.path.dirname(os.path.abspath(uri))
        os.makedirs(parent, exist_ok=True)
    return pymilvus.MilvusClient(uri=uri, token=token, db_name=db_name)


def _check_name(collection: str) -> None:
    if not isinstance(collection, str) or not _NAME_RE.match(collection):
        raise ValueError(f"invalid Milvus collection name {collection!r}: letters, digits and underscores, "
                         f"starting with a letter or underscore, at most 255 characters")


class MilvusGalleryIndex:
    """A gallery in a Milvus collection, with :class:`GalleryIndex`'s API (build, add, search, save, open).

    Make one with :meth:`build` / :meth:`from_gallery` (new collection) or :meth:`open` (existing one), not
    with the constructor.

    Attributes:
        client: the ``pymilvus.MilvusClient``.
        uri, collection: where the gallery lives.
        dim: feature size D; metric: ``"euclidean"`` or ``"cosine"``; model_hash, info: as in
            :class:`GalleryIndex`.
    """

    def __init__(self, client, uri: str, collection: str, dim: int, metric: str, model_hash: str, info: dict):
        self.client, self.uri, self.collection = client, uri, collection
        self.dim, self.metric, self.model_hash, self.info = int(dim), metric, model_hash, dict(info or {})

    def __repr__(self):
        return (f"MilvusGalleryIndex(collection={self.collection!r}, uri={safe_uri(self.uri)!r}, dim={self.dim}, "
                f"metric={self.metric!r}, model_hash={self.model_hash[:12]!r})")

    @property
    def where(self) -> str:
        """``collection 'NAME' at URI`` (credentials left out), for messages."""
        return f"collection {self.collection!r} at {safe_uri(self.uri)}"

    # ------------------------------------------------------------------ create / open
    @classmethod
    def create(cls, uri: str, collection: str = DEFAULT_COLLECTION, dim: int = 0, metric: str = "cosine",
               model_hash: str = "", info: Optional[dict] = None, token: str = "",
               overwrite: bool = False) -> "MilvusGalleryIndex":
        """An empty gallery collection (FLAT index, L2, strong consistency) holding the metadata.

        Raises:
            FileExistsError: the collection exists and ``overwrite`` is false.
            ValueError: invalid collection name, ``dim < 1`` or unknown metric.
            ImportError: pymilvus / milvus-lite missing.
        """
        _check_name(collection)
        if int(dim) < 1:
            raise ValueError(f"feature size must be >= 1, got {dim}")
        if metric not in ("euclidean", "cosine"):
            raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")
        pymilvus = _pymilvus()
        client = connect(uri, token)
        if client.has_collection(collection):
            if not overwrite:
                client.close()
                raise FileExistsError(
                    f"collection {collection!r} at {safe_uri(uri)} already exists: add to it (open + add, "
                    f"`occreid index --append`) or replace it (overwrite=True, `--overwrite`)")
            client.drop_collection(collection)
        DataType = pymilvus.DataType
        schema = pymilvus.MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False,
                                                     description="occreid gallery index")
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("feature", DataType.FLOAT_VECTOR, dim=int(dim))
        schema.add_field("path", DataType.VARCHAR, max_length=MAX_PATH_BYTES)
        schema.add_field("pid", DataType.INT64)
        schema.add_field("camid", DataType.INT64)
        index_params = client.prepare_index_params()
        index_params.add_index(field_name="feature", index_type="FLAT", metric_type="L2")
        props = {"format_version": FORMAT_VERSION, "dim": int(dim), "metric": metric, "model_hash": model_hash,
                 "info": json.dumps(info or {}, sort_keys=True)}
        client.create_collection(collection, schema=schema, index_params=index_params,
                                 properties={PROPERTY_PREFIX + k: str(v) for k, v in props.items()},
                                 consistency_level="Strong")
        return cls(client, uri, collection, dim, metric, model_hash, info or {})

    @classmethod
    def build(cls, features: np.ndarray, paths: Sequence[str], pids: Sequence[int], camids: Sequence[int],
              uri: str, collection: str = DEFAULT_COLLECTION, metric: str = "cosine", model_hash: str = "",
              info: Optional[dict] = None, token: str = "", overwrite: bool = False) -> "MilvusGalleryIndex":
        """A new collection holding ``features`` (g, D) and their ``paths`` / ``pids`` / ``camids`` (g each).

        Raises:
            ValueError: lengths disagree, features not 2-d, path too long, bad name / metric.
            FileExistsError: the collection exists and ``overwrite`` is false.
        """
        gi = GalleryIndex(features, list(paths), [int(p) for p in pids], [int(c) for c in camids], metric)
        _check_paths(gi.paths)
        index = cls.create(uri, collection, gi.dim, metric, model_hash, info, token, overwrite)
        index._insert(0, gi)
        return index

    @classmethod
    def from_gallery(cls, gallery: GalleryIndex, uri: str, collection: str = DEFAULT_COLLECTION, token: str = "",
                     overwrite: bool = False) -> "MilvusGalleryIndex":
        """A new collection with the features, metadata, metric, model hash and info of ``gallery``."""
        return cls.build(gallery.features, gallery.paths, gallery.pids, gallery.camids, uri, collection,
                         gallery.metric, gallery.model_hash, gallery.info, token, overwrite)

    @classmethod
    def open(cls, uri: str, collection: str = DEFAULT_COLLECTION, expected_model_hash: Optional[str] = None,
             expected_dim: Optional[int] = None, token: str = "") -> "MilvusGalleryIndex":
        """Reconnect to a collection written by :meth:`build` / :meth:`create` (loads it for search).

        Raises:
            FileNotFoundError: no such collection at ``uri`` (names both).
            ValueError: the collection is not an occreid gallery (no ``occreid.*`` properties), has another
                format version, or its vector field disagrees with its metadata.
            IndexMismatchError: ``expected_model_hash`` / ``expected_dim`` differ from the collection's.
        Warns:
            RuntimeWarning: the collection holds another number of rows than occreid recorded after its last write.
        """
        _check_name(collection)
        client = connect(uri, token)
        if not client.has_collection(collection):
            client.close()
            raise FileNotFoundError(f"no collection {collection!r} at {safe_uri(uri)}: build it first "
                                    f"(`occreid index --backend milvus --uri ... --collection {collection}`)")
        meta = _read_meta(client, uri, collection)
        index = cls(client, uri, collection, meta["dim"], meta["metric"], meta["model_hash"], meta["info"])
        index._check(meta, expected_model_hash, expected_dim)
        client.load_collection(collection)
        if meta.get("rows") is not None and len(index) != meta["rows"]:
            import warnings
            warnings.warn(f"{index.where} holds {len(index)} rows but occreid recorded {meta['rows']} after its last "
                          f"write: rows were deleted by another client, or the collection's files are damaged "
                          f"(rebuild it with `occreid index --overwrite` if so)", RuntimeWarning, stacklevel=2)
        return index

    load = open  # GalleryIndex.load's name

    def save(self) -> None:
        """Persist what was written (Milvus ``flush``: growing segments sealed to storage). Rows are searchable
        as soon as they are inserted; build / add call this."""
        self.client.flush(self.collection)

    def close(self) -> None:
        """Close the client (the collection stays)."""
        self.client.close()

    def drop(self) -> None:
        """Delete the collection and close the client."""
        self.client.drop_collection(self.collection)
        self.client.close()

    # ------------------------------------------------------------------ rows
    def __len__(self) -> int:
        rows = self.client.query(self.collection, filter="", output_fields=["count(*)"],
                                 consistency_level="Strong")
        return int(rows[0]["count(*)"])

    def add(self, features: np.ndarray, paths: Sequence[str], pids: Sequence[int],
            camids: Sequence[int]) -> np.ndarray:
        """Append (n, D) ``features`` with their metadata (n each); cosine: normalised like :class:`GalleryIndex`.

        Returns:
            (n,) int64 ids (gallery indices) given to the new rows, following the existing ones.
        Raises:
            IndexMismatchError: the features are not D-d, or the collection now holds another model's features.
            ValueError: lengths disagree or a path is too long.
        """
        gi = GalleryIndex(features, list(paths), [int(p) for p in pids], [int(c) for c in camids], self.metric)
        if gi.features.shape[1] != self.dim:
            raise IndexMismatchError(f"features of shape {gi.features.shape} for the {self.dim}-d {self.where}")
        _check_paths(gi.paths)
        self._check(_read_meta(self.client, self.uri, self.collection))
        start = self._next_id()
        self._insert(start, gi)
        return np.arange(start, start + len(gi.paths), dtype=np.int64)

    def _count(self, flt: str) -> int:
        rows = self.client.query(self.collection, filter=flt, output_fields=["count(*)"], consistency_level="Strong")
        return int(rows[0]["count(*)"])

    def _next_id(self) -> int:
        """1 + the largest id in the collection (0 when empty), found by count queries (an exponential then a
        binary search on ``id >= x``): new rows never reuse the id of a row that exists, whatever another client
        deleted (row count != largest id + 1 after a delete)."""
        if self._count("") == 0:
            return 0
        lo, hi = 0, max(1, len(self))        # invariant: some id >= lo exists
        while self._count(f"id >= {hi}") > 0:
            lo, hi = hi, hi * 2
        while hi - lo > 1:                   # some id >= lo, none >= hi
            mid = (lo + hi) // 2
            if self._count(f"id >= {mid}") > 0:
                lo = mid
            else:
                hi = mid
        return lo + 1

    def ids(self) -> np.ndarray:
        """All ids of the collection, sorted (0 .. len - 1 unless rows were deleted)."""
        end, out, window = self._next_id(), [], MAX_TOPK // 4
        for a in range(0, end, window):
            rows = self.client.query(self.collection, filter=f"id >= {a} and id < {a + window}", limit=window,
                                     output_fields=["id"], consistency_level="Strong")
            out.extend(int(r["id"]) for r in rows)
        return np.array(sorted(out), dtype=np.int64)

    def _insert(self, start: int, gi: GalleryIndex) -> None:
        n = len(gi.paths)
        step = max(1, INSERT_ROWS_BYTES // (4 * self.dim))
        for s in range(0, n, step):
            e = min(n, s + step)
            rows = [{"id": start + i, "feature": gi.features[i].tolist(), "path": gi.paths[i],
                     "pid": gi.pids[i], "camid": gi.camids[i]} for i in range(s, e)]
            self.client.insert(self.collection, rows)
        self.save()
        # the row count after this write: open() compares it with what the collection holds
        self.client.alter_collection_properties(self.collection, properties={PROPERTY_PREFIX + "rows": str(len(self))})

    def fetch(self, ids: Optional[Iterable[int]] = None) -> GalleryIndex:
        """Rows of the collection as an in-memory :class:`GalleryIndex` (same metric, model hash, info).

        Args:
            ids: gallery indices to fetch, in that order; ``None``: all rows, in id order (:meth:`ids`).
        Returns:
            a :class:`GalleryIndex` whose row ``i`` is ``ids[i]`` (its features are the stored float32 bits).
        Raises:
            KeyError: an id is not in the collection.
        """
        ids = self.ids() if ids is None else np.asarray(list(ids), dtype=np.int64)
        got = {}
        uniq = np.unique(ids)
        for s in range(0, len(uniq), MAX_TOPK // 4):
            part = uniq[s:s + MAX_TOPK // 4]
            flt = (f"id >= {part[0]} and id <= {part[-1]}" if part[-1] - part[0] + 1 == len(part)
                   else f"id in {[int(i) for i in part]}")
            for r in self.client.query(self.collection, filter=flt, limit=len(part),
                                       output_fields=["id", "feature", "path", "pid", "camid"],
                                       consistency_level="Strong"):
                got[int(r["id"])] = r
        missing = [int(i) for i in uniq if int(i) not in got]
        if missing:
            raise KeyError(f"ids {missing[:10]}{' ...' if len(missing) > 10 else ''} not in {self.where}")
        rows = [got[int(i)] for i in ids]
        feats = np.array([r["feature"] for r in rows], dtype=np.float32).reshape(len(rows), self.dim)
        return GalleryIndex(feats, [r["path"] for r in rows], [int(r["pid"]) for r in rows],
                            [int(r["camid"]) for r in rows], self.metric, self.model_hash, dict(self.info))

    to_gallery_index = fetch

    # ------------------------------------------------------------------ search
    def search(self, query_features: np.ndarray, topk: int = 10, rerank: bool = False, k1: int = 20,
               k2: int = 6, lambda_value: float = 0.3) -> List[SearchResult]:
        """Top-k gallery items for each query feature, as :meth:`GalleryIndex.search`.

        Args:
            query_features: (q, D) float32 from the collection's model.
            topk: results per query (at most the gallery size; at most 16,384, Milvus' limit).
            rerank: k-reciprocal re-ranking (:func:`occreid.evaluation.rerank.re_ranking_topk`): the whole
                gallery's features are fetched from the collection into memory (:meth:`fetch`) and re-ranked
                in-process, exactly as :meth:`GalleryIndex.search` does; fine for galleries that fit in RAM.
        Returns:
            one :class:`SearchResult` per query: ``indices`` (topk,) int64 gallery ids, nearest first;
            ``distances`` (topk,) float32 l2 (cosine: of normalised features) or, re-ranked, Zhong's distance.
        Raises:
            IndexMismatchError: the query feature size differs from the collection's, or the collection was
                rebuilt with another model / feature size since it was opened.
            ValueError: ``topk`` not a positive integer or above 16,384 without ``rerank``; a query row with NaN /
                inf (names the row); an empty collection.
        """
        q = np.ascontiguousarray(query_features, dtype=np.float32)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise IndexMismatchError(f"query features of shape {q.shape} for the {self.dim}-d {self.where}")
        check_topk(topk)
        check_finite(q, "query features")
        self._check(_read_meta(self.client, self.uri, self.collection))
        if len(self) == 0:
            raise ValueError(f"{self.where} is empty: add gallery images before searching")
        if rerank:
            gallery = self.fetch()
            ids = self.ids()
            res = gallery.search(q, topk=topk, rerank=True, k1=k1, k2=k2, lambda_value=lambda_value)
            for r in res:   # positions in the fetched gallery -> the collection's ids
                r.indices = ids[r.indices]
            return res
        topk = min(int(topk), len(self))
        if topk > MAX_TOPK:
            raise ValueError(f"topk {topk} above Milvus' limit of {MAX_TOPK} results per query")
        if self.metric == "cosine":
            q = _normalize(q)
        if topk <= 0:
            empty = np.zeros(0, dtype=np.int64)
            return [SearchResult(empty, np.zeros(0, np.float32), [], [], []) for _ in range(len(q))]
        results = []
        step = max(1, min(MAX_NQ, MAX_RESULTS // topk))
        for s in range(0, len(q), step):
            hits = self.client.search(self.collection, data=q[s:s + step].tolist(), limit=topk,
                                      anns_field="feature", search_params={"metric_type": "L2", "params": {}},
                                      output_fields=["path", "pid", "camid"], consistency_level="Strong")
            for row in hits:
                ent = [h["entity"] for h in row]
                dist = np.sqrt(np.maximum(np.array([h["distance"] for h in row], dtype=np.float32), 0))
                results.append(SearchResult(np.array([h["id"] for h in row], dtype=np.int64), dist,
                                            [e["path"] for e in ent], [int(e["pid"]) for e in ent],
                                            [int(e["camid"]) for e in ent]))
        return results

    # ------------------------------------------------------------------ checks
    def _check(self, meta: dict, expected_model_hash: Optional[str] = None,
               expected_dim: Optional[int] = None) -> None:
        """Raise :class:`IndexMismatchError` when the collection's metadata differ from what this object holds
        (rebuilt since it was opened) or from the expected model hash / feature size."""
        dim = self.dim if expected_dim is None else int(expected_dim)
        want_hash = self.model_hash if expected_model_hash is None else expected_model_hash
        if meta["dim"] != dim:
            raise IndexMismatchError(
                f"{self.where} holds {meta['dim']}-d features but the query model gives {dim}-d features: "
                f"build the index with the same model (config + weights)")
        if meta["model_hash"] != want_hash:
            raise IndexMismatchError(
                f"{self.where} was built with model {meta['model_hash'][:12]} ({meta['info'].get('weights', '?')}, "
                f"{meta['info'].get('config', '?')}) but the query model is {want_hash[:12]}: distances between "
                f"the two feature spaces are meaningless; rebuild the index")
        if meta["metric"] != self.metric:
            raise IndexMismatchError(f"{self.where} now uses metric {meta['metric']!r}, opened as {self.metric!r}")


def _check_paths(paths: Sequence[str]) -> None:
    for p in paths:
        if len(p.encode("utf-8")) > MAX_PATH_BYTES:
            raise ValueError(f"path longer than {MAX_PATH_BYTES} bytes (the collection's VARCHAR limit): {p[:80]}...")


def _read_meta(client, uri: str, collection: str) -> dict:
    """The ``occreid.*`` properties of ``collection`` as ``dict(format_version, dim, metric, model_hash, info)``.

    Raises:
        FileNotFoundError: the collection is gone.
        ValueError: not an occreid gallery, another format version, or the vector field disagrees.
    """
    where = f"collection {collection!r} at {safe_uri(uri)}"
    if not client.has_collection(collection):
        raise FileNotFoundError(f"no {where} (dropped?)")
    desc = client.describe_collection(collection)
    props = {k[len(PROPERTY_PREFIX):]: v for k, v in (desc.get("properties") or {}).items()
             if k.startswith(PROPERTY_PREFIX)}
    if "format_version" not in props:
        raise ValueError(f"{where} is not an occreid gallery (no {PROPERTY_PREFIX}format_version property)")
    if props["format_version"] != str(FORMAT_VERSION):
        raise ValueError(f"{where}: unsupported format_version {props['format_version']!r}")
    try:
        meta = {"format_version": int(props["format_version"]), "dim": int(props["dim"]),
                "metric": props["metric"], "model_hash": props["model_hash"], "info": json.loads(props["info"]),
                "rows": int(props["rows"]) if "rows" in props else None}
    except (KeyError, ValueError) as e:
        raise ValueError(f"{where}: incomplete occreid metadata ({e!r})") from e
    vec = [f for f in desc.get("fields", []) if f.get("name") == "feature"]
    field_dim = int(vec[0].get("params", {}).get("dim", -1)) if vec else -1
    if field_dim != meta["dim"]:
        raise ValueError(f"{where}: vector field 'feature' is {field_dim}-d but the metadata say {meta['dim']}-d")
    return meta
