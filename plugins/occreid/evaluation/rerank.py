"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017) whose memory grows as O(N x k1), not O(N^2).

Notation (N = q + g points, query first; paper Sec. 3):

- ``d(i, j)``: base distance, squared l2 of the (optionally l2-normalised) features.
- ``N(i, k)``: the k nearest neighbours of i, i itself included (Eq. 1).
- ``R(i, k) = {j in N(i, k) : i in N(j, k)}``: the k-reciprocal set (Eq. 3).
- ``R*(i, k1)``: R(i, k1) expanded by every R(c, k1/2), c in R(i, k1), that shares more than 2/3 of
  its points with R(i, k1) (Eq. 6).
- ``V[i, j] = exp(-d(i, j)) / sum_{s in R*} exp(-d(i, s))`` for j in R*(i), else 0 (Eq. 7).
- local query expansion: ``V[i] <- mean of V[j] over j in N(i, k2)`` (Eq. 11).
- Jaccard distance ``d_J(i, j) = 1 - sum_c min(V[i,c], V[j,c]) / sum_c max(V[i,c], V[j,c])`` (Eq. 10);
  since each V row sums to 1, ``sum max = 2 - sum min``.
- final distance ``d*(i, j) = (1 - lambda) d_J(i, j) + lambda d(i, j)`` (Eq. 12).

Two flavours, selected by ``mode``:

``"zhong"`` (default)
    Zhong's reference code as shipped by TorchReID (``torchreid.reid.utils.rerank.re_ranking``):
    d is the squared l2 divided by the row's maximum over all N points, N(i, .) holds k1 + 1 points,
    and the mixed distance is that normalised d. Given TorchReID the plain (not squared) l2 matrices,
    our result matches its dense one to float32 rounding.
``"fastreid"``
    FastReID's ``compute_jaccard_distance`` + lambda mixing (``ReidEvaluator`` with TEST.RERANK):
    no row normalisation, N(i, .) holds k1 points, the mixed distance is the evaluator's own base
    distance (cosine distance or squared l2), negative Jaccard values clipped to 0.

How memory stays O(N x k1): the neighbour lists come from one blocked pass over all pairs (or from a
FAISS index), V and its query expansion are sparse (scipy CSR, about N x k1 x k2 entries), and the
Jaccard numerator is accumulated only over pairs that share a non-zero column of V (an inverted
index), one chunk of queries at a time. The only dense output is the q x g block of
:func:`re_ranking`; :func:`re_ranking_topk` returns the top-k gallery per query without it.

Where the time goes (CPU, exact search): the pass over all pairs is most of it. It computes each pair
once (d is symmetric: half the products of a k-NN search of all N), takes the k-NN, the row maxima and the
q x g block from the same products, and keeps the selection cheap by only merging the entries closer than
a point's current k-th neighbour (:func:`exact_neighbour_pass`); the later stages are vectorised over all
points (sparse products, bitmaps, one ``np.bincount`` per query chunk). ``benchmarks/rerank_profile.py``
times each stage against a faiss k-NN search of all N.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Iterator, Optional, Tuple, Union

import numpy as np
import scipy.sparse as sp
import torch

logger = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor]
MODES = ("zhong", "fastreid")
METRICS = ("euclidean", "cosine")
SEARCHES = ("exact", "faiss", "ivf", "hnsw")


#: the largest squared feature norm whose squared distances |a|^2 + |b|^2 - 2 a.b stay finite in float32
_MAX_SQ_NORM = float(np.finfo(np.float32).max) / 8


def _check_magnitude(x: torch.Tensor, name: str) -> None:
    """Raise ValueError naming the row when a row of ``x`` (n, D) is so large that squared l2 distances
    |a|^2 + |b|^2 - 2 a.b overflow float32 (they would turn into inf / NaN and break the neighbour ranking)."""
    norms = torch.linalg.vector_norm(x, dim=1)   # inf when the squared norm overflows float32
    if not float(norms.max()) <= _MAX_SQ_NORM ** 0.5:
        row = int(torch.nan_to_num(norms, posinf=float("inf")).argmax())
        sq = float(x[row].double().pow(2).sum())
        raise ValueError(f"{name}: row {row} has a squared norm of {sq:.3g}, too large for float32 "
                         f"squared distances (at most {_MAX_SQ_NORM:.3g}); scale the features down (or l2-normalise "
                         f"them, metric='cosine')")


def _as_tensor(x: ArrayLike, name: str) -> torch.Tensor:
    """``x`` as a detached, contiguous (n, D) float32 tensor on its own device, or a clear error.

    Accepts numpy arrays and torch tensors of any real dtype (float16 / float64 / integers are converted to
    float32; tensors that require grad are detached).

    Raises:
        TypeError: not an array / tensor, or a bool / complex / object dtype.
        ValueError: not 2-D, no rows or no columns, or NaN / inf in any row (after the float32 conversion;
            one such row would turn every re-ranked distance into NaN): says how many rows and the first.
    """
    if isinstance(x, np.ndarray):
        if x.dtype == np.bool_ or not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")
    if x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"{name} must hold real numbers, got dtype {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D (n, dim), got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    x = x.detach().float().contiguous()
    if x.is_cuda:
        bad = (~torch.isfinite(x).all(1)).cpu().numpy()
    else:  # NumPy's check: faster than torch's on the CPU
        xn = x.numpy()
        with np.errstate(over="ignore", invalid="ignore"):
            bad = ~np.isfinite(xn.sum(1))  # a sum is finite iff its terms are (or it overflows: checked below)
        if bad.any():
            bad = ~np.isfinite(xn).all(1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(f"{name}: {len(rows)} of {x.shape[0]} rows contain NaN or inf (as float32; first: row "
                         f"{int(rows[0])}); one such row would make every re-ranked distance NaN")
    return x


@dataclass
class NeighbourPass:
    """What one pass over all N x N pairs yields, in O(N x k) memory.

    Attributes:
        rank: (N, k) int64, the k nearest neighbours of each point, nearest first (self included).
        knn_dist: (N, k) float32, their squared l2 distances.
        row_max: (N,) float32, each point's largest squared l2 distance to any point (or an estimate).
        head: (m, N - m) float32 squared l2 distances of the first m points to the others, when the pass was
            asked to keep them (``keep_rows=m``: the query x gallery block, which then costs no second product).
    """

    rank: np.ndarray
    knn_dist: np.ndarray
    row_max: np.ndarray
    head: Optional[np.ndarray] = None  # (m, N - m) squared l2 of the first m rows to the others, if kept


def _sq_dist_block(a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor, b_sq: torch.Tensor,
                   backend: str = "auto") -> torch.Tensor:
    """(m, n) squared l2 distances ``|a|^2 + |b|^2 - 2 a.b``, clamped at 0.

    ``backend``: ``"torch"`` (one ``torch.addmm``; the CUDA path, also run on CPU tensors by the tests),
    ``"numpy"`` (the product through NumPy's BLAS: faster than torch's here on the CPU for this shape; CPU only),
    ``"auto"`` (torch on CUDA, numpy on the CPU)."""
    if backend == "torch" or (backend == "auto" and a.is_cuda):
        return torch.addmm(a_sq[:, None] + b_sq[None, :], a, b.t(), beta=1.0, alpha=-2.0).clamp_(min=0)
    d = torch.from_numpy(a.numpy() @ b.numpy().T)
    d.mul_(-2.0).add_(a_sq[:, None]).add_(b_sq[None, :])
    return d.clamp_(min=0)


def _torch_neighbour_pass(feats: torch.Tensor, k: int, block: int, progress: bool, keep_rows: int) -> NeighbourPass:
    """The torch code path of :func:`exact_neighbour_pass` (CUDA; the tests run it on CPU tensors): each block of
    rows is one product against all N points, of ``[x_i, 1]`` and ``[-2 x_j, |x_j|^2]``, i.e.
    ``d(i, j) - |x_i|^2``, whose k smallest (``torch.topk``) and largest entries are the row's k-NN and row max."""
    n = feats.shape[0]
    sq = (feats * feats).sum(1)
    rows = torch.cat([feats, torch.ones(n, 1, dtype=feats.dtype, device=feats.device)], 1)
    cols = torch.cat([-2.0 * feats, sq[:, None]], 1)
    rank = np.empty((n, k), dtype=np.int64)
    knn = np.empty((n, k), dtype=np.float32)
    row_max = np.empty(n, dtype=np.float32)
    head = np.empty((keep_rows, n - keep_rows), dtype=np.float32) if keep_rows else None
    starts = range(0, n, block)
    if progress:
        from tqdm import tqdm
        starts = tqdm(starts, desc="k-NN + row max", unit="block")
    for s in starts:
        e = min(s + block, n)
        m = rows[s:e] @ cols.t()
        m[torch.arange(e - s), torch.arange(s, e)] = -sq[s:e]  # exactly d(i, i) = 0
        vals, idx = torch.topk(m, k, dim=1, largest=False, sorted=True)
        rank[s:e] = idx.cpu().numpy()
        knn[s:e] = (vals + sq[s:e, None]).clamp_(min=0).cpu().numpy()
        row_max[s:e] = (m.max(1).values + sq[s:e]).cpu().numpy()
        if s < keep_rows:
            h = min(e, keep_rows) - s
            head[s:s + h] = (m[:h, keep_rows:] + sq[s:s + h, None]).clamp_(min=0).cpu().numpy()
    return NeighbourPass(rank, knn, row_max, head)


def _merge_candidates(best_d: np.ndarray, best_i: np.ndarray, r: np.ndarray, j: np.ndarray, v: np.ndarray) -> None:
    """Merge new candidates into running k-NN lists, in place.

    Args:
        best_d, best_i: (m, k) distances / indices of the k nearest found so far of m points, nearest first
            (``inf`` / -1 where fewer were seen).
        r: (P,) the row (0 .. m-1) of each candidate, ascending; j: (P,) its point index; v: (P,) its distance.
    """
    if len(r) == 0:
        return
    m, k = best_d.shape
    cnt = np.bincount(r, minlength=m)
    rows = np.flatnonzero(cnt)  # the rows that get candidates
    cnt = cnt[rows]
    width = k + int(cnt.max())
    cand_d = np.full((len(rows), width), np.inf, dtype=best_d.dtype)  # per row: its k, then its new ones
    cand_i = np.empty((len(rows), width), dtype=best_i.dtype)
    cand_d[:, :k], cand_i[:, :k] = best_d[rows], best_i[rows]
    at = np.repeat(np.arange(len(rows)) * width + k - (np.cumsum(cnt) - cnt), cnt) + np.arange(len(r))
    cand_d.ravel()[at], cand_i.ravel()[at] = v, j
    if width <= 4 * k:
        top = np.argsort(cand_d, axis=1, kind="stable")[:, :k]
    else:
        top = np.argpartition(cand_d, k - 1, axis=1)[:, :k]
        top = np.take_along_axis(top, np.argsort(np.take_along_axis(cand_d, top, 1), axis=1, kind="stable"), 1)
    top += (np.arange(len(rows)) * width)[:, None]
    best_d[rows], best_i[rows] = cand_d.ravel()[top], cand_i.ravel()[top]


def exact_neighbour_pass(feats: torch.Tensor, k: int, block: int = 2048, progress: bool = False,
                         backend: str = "auto", keep_rows: int = 0, seed_cols: int = 1024) -> NeighbourPass:
    """Exact k-NN and row maxima of squared l2 distances in one blocked pass over the pairs (flat brute force).

    CPU (NumPy's BLAS): the points are cut into blocks of ``block``; each tile (I, J), I <= J, is one matrix
    product of the augmented vectors ``[x_i, |x_i|^2, 1]`` and ``[-2 x_j, 1, |x_j|^2]``, which is ``d(i, j)``
    itself. d is symmetric, so a tile serves the rows of I and, transposed, those of J: half the products of
    an all-pairs search. Row and column maxima of the tiles give each point's largest distance (the row
    normalisation of Zhong's code) from the same products. The k-NN lists are built by merging: the
    diagonal tiles come first (each row's threshold: its k-th nearest among the block's first columns),
    then a tile only hands a point the entries no farther than its current k-th neighbour (a compare over
    the tile; the rest cannot enter its list) to :func:`_merge_candidates`. The torch path (CUDA, or
    ``backend="torch"``) is a plain pass over full rows, :func:`_torch_neighbour_pass`. The self distance is
    exactly 0. Time O(N^2 D / 2) on the CPU, memory O(block^2 + N x (k + D)).

    Args:
        feats: (N, D) float32, CPU or CUDA.
        k: neighbours per point (<= N).
        block: points per block (CPU: tiles of block x block; torch: block rows x N).
        backend: ``"torch"`` (the products in torch on the features' device: the CUDA path, which the tests run
            on CPU tensors), ``"numpy"`` (CPU, NumPy's BLAS), ``"auto"`` (torch on CUDA, numpy on the CPU).
        keep_rows: also keep the squared distances of the first ``keep_rows`` points to the others
            (``NeighbourPass.head``; memory keep_rows x (N - keep_rows) floats).
        seed_cols: CPU: the first threshold of a row is its k-th nearest among this many columns of its diagonal
            tile (a speed setting only: any value gives the same result).
    """
    n = feats.shape[0]
    k = min(k, n)
    if backend == "torch" or (backend == "auto" and feats.is_cuda):
        return _torch_neighbour_pass(feats, k, block, progress, keep_rows)
    x = feats.numpy()
    sq = np.einsum("ij,ij->i", x, x)[:, None]
    one = np.ones((n, 1), dtype=x.dtype)
    rows = np.concatenate([x, sq, one], 1)          # [x_i, |x_i|^2, 1]
    cols = np.concatenate([-2.0 * x, one, sq], 1)   # [-2 x_j, 1, |x_j|^2]
    best_d = np.full((n, k), np.inf, dtype=np.float32)
    best_i = np.full((n, k), -1, dtype=np.int64)
    row_max = np.full(n, -np.inf, dtype=np.float32)
    head = np.empty((keep_rows, n - keep_rows), dtype=np.float32) if keep_rows else None
    bounds = [(s, min(s + block, n)) for s in range(0, n, block)]
    nb = len(bounds)
    tiles = [(i, i) for i in range(nb)] + [(i, j) for i in range(nb) for j in range(i + 1, nb)]  # diagonal first
    if progress:
        from tqdm import tqdm
        tiles = tqdm(tiles, desc="k-NN + row max", unit="tile")
    size = min(block, n) ** 2
    buf_d, buf_near, buf_b = np.empty(size, np.float32), np.empty(size, bool), np.empty(size, bool)  # reused per tile
    for ti, tj in tiles:
        (a, b), (c, e) = bounds[ti], bounds[tj]
        shape = (b - a, e - c)
        d = np.matmul(rows[a:b], cols[c:e].T, out=buf_d[:shape[0] * shape[1]].reshape(shape))  # d(i, j)
        if ti == tj:
            np.fill_diagonal(d, 0.0)  # exactly d(i, i) = 0
        if keep_rows and a < keep_rows and e > keep_rows:  # the query x gallery part
            hb, hc = min(b, keep_rows), max(c, keep_rows)
            np.maximum(d[:hb - a, hc - c:], 0.0, out=head[a:hb, hc - keep_rows:e - keep_rows])
        np.maximum(row_max[a:b], d.max(1), out=row_max[a:b])
        near = buf_near[:d.size].reshape(shape)
        if ti == tj:  # diagonal tile: rows only (it holds both d(i, j) and d(j, i))
            thr = best_d[a:b, -1]
            if b - a > k:  # seed: the k-th nearest among the block's first columns bounds the k-th nearest of all
                seed = np.partition(d[:, :max(k + 1, min(b - a, seed_cols))], k - 1, axis=1)[:, k - 1]
                thr = np.minimum(thr, seed)
            flat = np.flatnonzero(np.less_equal(d, thr[:, None], out=near))
            ri, ci = np.divmod(flat, e - c)
            _merge_candidates(best_d[a:b], best_i[a:b], ri, ci + c, d.ravel()[flat])
            continue
        np.maximum(row_max[c:e], d.max(0), out=row_max[c:e])
        thr_r, thr_c = best_d[a:b, -1].copy(), best_d[c:e, -1].copy()  # current k-th neighbour distances
        np.less_equal(d, thr_r[:, None], out=near)
        near |= np.less_equal(d, thr_c, out=buf_b[:d.size].reshape(shape))
        flat = np.flatnonzero(near)
        ri, ci = np.divmod(flat, e - c)
        v = d.ravel()[flat]
        sel = v <= thr_r[ri]  # entries for the rows of I
        _merge_candidates(best_d[a:b], best_i[a:b], ri[sel], ci[sel] + c, v[sel])
        sel = v <= thr_c[ci]  # and, transposed, for the rows of J
        order = np.argsort(ci[sel], kind="stable")
        _merge_candidates(best_d[c:e], best_i[c:e], ci[sel][order], ri[sel][order] + a, v[sel][order])
    return NeighbourPass(best_i, np.maximum(best_d, 0.0), row_max, head)


#: Fewest points (query + gallery) that ``search="ivf"`` / ``"hnsw"`` accept. Below it the exact pass is both exact
#: and faster on the CPU: in ``benchmarks/results/knn_recall_cpu.md`` (k = 21, synthetic features built from real
#: OSNet x0.25 ones) no IVF / HNSW setting reaches 0.99 recall@k faster than the exact k-NN at 20,000 points, none
#: reaches 0.99 at all at 100,000 (best 0.979, 2.5x the exact time), and at 500,000 IVF gains 7.6x at 0.848 recall.
APPROX_MIN_POINTS = 200_000
#: Default IVF cells probed and HNSW ``efSearch`` (same file: at 500,000 points nprobe 16 is 7.6x faster than the
#: exact pass at recall 0.848; each doubling of nprobe adds about 0.01-0.03 recall for about twice the time).
IVF_NPROBE = 16
HNSW_EF_SEARCH = 64


def approximate_defaults(search: str, n: int, k: int = 21) -> dict:
    """The settings ``search="ivf"`` / ``"hnsw"`` use on ``n`` points when none are given: IVF ``nlist`` = 4 sqrt(n)
    cells, ``nprobe`` = :data:`IVF_NPROBE`; HNSW ``hnsw_m`` 32 links, ``efSearch`` = max(:data:`HNSW_EF_SEARCH`, 2k).
    Raises ValueError for another ``search``."""
    if search == "ivf":
        nlist = max(1, int(4 * math.sqrt(n)))
        return {"nlist": nlist, "nprobe": min(IVF_NPROBE, nlist)}
    if search == "hnsw":
        return {"hnsw_m": 32, "efSearch": max(HNSW_EF_SEARCH, 2 * k)}
    raise ValueError(f"approximate_defaults: search must be 'ivf' or 'hnsw', got {search!r}")


def _check_approximate(search: str, n: int, nlist, nprobe, hnsw_m, hnsw_ef) -> None:
    """Refuse an approximate search on too few points, and settings it cannot run with (ValueError)."""
    if search not in ("ivf", "hnsw"):
        return
    if n < APPROX_MIN_POINTS:
        raise ValueError(
            f"search={search!r} on {n:,} points (query + gallery): below {APPROX_MIN_POINTS:,} points the exact pass "
            f"is faster than the approximate one at the recall it reaches (benchmarks/results/knn_recall_cpu.md); "
            f"use search='exact' (or change occreid.evaluation.rerank.APPROX_MIN_POINTS)")
    for name, value in (("nlist", nlist), ("nprobe", nprobe), ("hnsw_m", hnsw_m), ("hnsw_ef", hnsw_ef)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    if search == "ivf" and nlist is not None and nlist > n:
        raise ValueError(f"nlist {nlist} is larger than the {n:,} points to index: an IVF index needs at least one "
                         f"training point per cell; give nlist <= {n} or leave it None (4 sqrt(N))")


def faiss_neighbour_pass(feats: torch.Tensor, k: int, search: str = "faiss", nlist: Optional[int] = None,
                         nprobe: Optional[int] = None, hnsw_m: int = 32, max_sample: int = 8192, seed: int = 0,
                         hnsw_ef: Optional[int] = None) -> NeighbourPass:
    """k-NN from a FAISS index; row maxima estimated from a random sample of points.

    ``search``: ``"faiss"`` exact ``IndexFlatL2`` (a GPU index when faiss has GPUs and the features
    are on CUDA), ``"ivf"`` ``IndexIVFFlat`` (``nlist`` cells, default 4 sqrt(N), ``nprobe`` probed, default
    :data:`IVF_NPROBE`), ``"hnsw"`` ``IndexHNSWFlat`` (``hnsw_m`` links, ``efSearch`` = ``hnsw_ef``, default
    max(:data:`HNSW_EF_SEARCH`, 2k)). The row maximum (Zhong's normaliser) is the exact
    maximum over ``max_sample`` random points and the k neighbours: a lower bound of the true one, so
    normalised distances come out slightly larger (the approximation this mode documents).

    Raises:
        ValueError: ``"ivf"`` / ``"hnsw"`` on fewer than :data:`APPROX_MIN_POINTS` points (the exact pass is faster
            there), ``nlist`` larger than N, a setting that is not a positive integer, an unknown ``search``.
    """
    import faiss

    n, dim = feats.shape
    _check_approximate(search, n, nlist, nprobe, hnsw_m, hnsw_ef)
    k = min(k, n)
    on_gpu = feats.is_cuda and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    x = np.ascontiguousarray(feats.cpu().numpy(), dtype=np.float32)
    if search == "faiss":
        index = faiss.IndexFlatL2(dim)
        if on_gpu:
            try:
                gpu_index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), feats.device.index or 0, index)
                gpu_index.add(x)
                knn, rank = gpu_index.search(x, k)
            except Exception as e:  # e.g. FastReID's known "runL2Norm ... CUDA error" set-ups
                warnings.warn(f"re-ranking: the faiss GPU index failed ({type(e).__name__}: {e}); "
                              f"falling back to the CPU index", RuntimeWarning)
                on_gpu = False
    elif search == "ivf":
        defaults = approximate_defaults("ivf", n, k)
        nlist = nlist or defaults["nlist"]
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist)
        rng = np.random.default_rng(seed)
        train = x[rng.choice(n, size=min(n, 40 * nlist), replace=False)]
        index.train(train)
        index.nprobe = min(nprobe or defaults["nprobe"], nlist)
    elif search == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m)
        index.hnsw.efSearch = max(hnsw_ef or approximate_defaults("hnsw", n, k)["efSearch"], k)
    else:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    if not (search == "faiss" and on_gpu):
        index.add(x)
        knn, rank = index.search(x, k)
    knn = np.maximum(knn, 0).astype(np.float32)
    # the point itself first, once (an approximate index may miss it, a tie may put it later)
    self_col = rank == np.arange(n)[:, None]
    order = np.argsort(~self_col, axis=1, kind="stable")  # self (if found) first, others in order
    rank, knn = np.take_along_axis(rank, order, 1), np.take_along_axis(knn, order, 1)
    missing = ~self_col.any(1)
    rank[missing, 1:], knn[missing, 1:] = rank[missing, :-1], knn[missing, :-1]
    rank[:, 0] = np.arange(n)
    knn[:, 0] = 0.0
    rng = np.random.default_rng(seed)
    sample = torch.from_numpy(x[rng.choice(n, size=min(n, max_sample), replace=False)])
    xs = torch.from_numpy(x)
    row_max = np.empty(n, dtype=np.float32)
    sq, ssq = (xs * xs).sum(1), (sample * sample).sum(1)
    for s in range(0, n, 4096):
        e = min(s + 4096, n)
        row_max[s:e] = _sq_dist_block(xs[s:e], sample, sq[s:e], ssq).max(1).values.numpy()
    row_max = np.maximum(row_max, knn.max(1))
    return NeighbourPass(rank.astype(np.int64), knn, row_max)


def reciprocal_sets(rank: np.ndarray, n_neigh: int) -> np.ndarray:
    """k-reciprocal sets R(i, k) (Eq. 3) of all points, padded with -1.

    N(i, k) as a sparse matrix ``A[i, j] = 1 + (position of j in N(i, k))``; its elementwise product with the
    pattern of its transpose keeps the pairs with j in N(i, k) and i in N(j, k), and their positions.

    Args:
        rank: (N, >= n_neigh) neighbour lists, nearest first (-1: none).
        n_neigh: |N(i, k)|, the neighbours that count (columns ``rank[:, :n_neigh]``).
    Returns:
        (N, n_neigh) int64: entry p of row i is ``rank[i, p]`` if i is among the first ``n_neigh``
        neighbours of ``rank[i, p]``, else -1 (order of N(i, k) kept).
    """
    n = rank.shape[0]
    fwd = rank[:, :n_neigh]
    i, p = np.nonzero(fwd >= 0)
    a = sp.csr_matrix(((p + 1).astype(np.int32), (i, fwd[i, p])), shape=(n, n))
    both = a.multiply(a.T.astype(bool)).tocoo()  # j in N(i, k) and i in N(j, k)
    out = np.full(fwd.shape, -1, dtype=np.int64)
    out[both.row, both.data - 1] = both.col
    return out


def expanded_sets(r_full: np.ndarray, r_half: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """R*(i, k1) of Eq. 6: R(i, k1) plus every R(c, k1/2), c in R(i, k1), with
    |R(c, k1/2) & R(i, k1)| > 2/3 |R(c, k1/2)|. Sorted rows of unique indices, padded with -1 at the end.

    Per chunk of points, R(i, k1) is marked in a (chunk, N) bitmap, so that each member of each R(c, k1/2)
    is one look-up, both for the intersection and to keep only the members that R(i, k1) lacks.

    Args:
        r_full: (N, a) R(i, k1) padded with -1 (from :func:`reciprocal_sets`).
        r_half: (N, b) R(i, k1/2) padded with -1.
    Returns:
        (N, w) int64, w the largest |R*(i, k1)| (at most a + a * b).
    """
    n, a = r_full.shape
    b = r_half.shape[1]
    r_full, r_half = r_full.astype(np.int32), r_half.astype(np.int32)
    chunk = max(1, min(chunk, (1 << 25) // n))  # bitmap of at most 32 MB
    member = np.zeros(chunk * n, dtype=bool)     # (chunk, N), flat
    ok = r_full >= 0
    keys = [np.nonzero(ok)[0] * np.int64(n) + r_full[ok]]  # R(i, k1) as keys i * N + j
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        rf, okc = r_full[s:e], ok[s:e]                                  # R(i, k1): (c, a)
        row = (np.arange(e - s, dtype=np.int64) * n)[:, None]
        marks = (row + rf)[okc]
        member[marks] = True
        cand = r_half[np.where(okc, rf, 0)]                             # R(c, k1/2), c in R(i, k1): (c, a, b)
        valid = (cand >= 0) & okc[:, :, None]
        inside = member.take(row[:, :, None] + cand)                    # (-1 entries read a wrong bit: masked)
        inter = np.count_nonzero(inside & valid, axis=2)
        accept = okc & (inter > (2.0 / 3.0) * np.count_nonzero(valid, axis=2))  # > 2/3 |R(c, k1/2)| shared
        member[marks] = False
        r, p = np.nonzero((accept[:, :, None] & valid & ~inside).reshape(e - s, a * b))  # new members only
        keys.append(np.unique((r + s) * np.int64(n) + cand.reshape(e - s, a * b)[r, p]))
    rows, cols = np.divmod(np.sort(np.concatenate(keys)), n)
    start = np.searchsorted(rows, np.arange(n))
    cnt = np.diff(np.append(start, len(rows)))
    out = np.full((n, int(cnt.max(initial=1))), -1, dtype=np.int64)
    out[rows, np.arange(len(rows)) - start[rows]] = cols
    return out


def encode_v(feats: torch.Tensor, sets: np.ndarray, scale: np.ndarray, rank: Optional[np.ndarray] = None,
             knn_dist: Optional[np.ndarray] = None, chunk: int = 65536) -> sp.csr_matrix:
    """The sparse k-reciprocal feature matrix V of Eq. 7: ``V[i, j] = exp(-d(i,j) s_i) / Z_i`` for
    j in R*(i), with d the squared l2 distance and s_i = ``scale[i]`` (1 / row max for Zhong's
    normalisation, 1 for FastReID's). Rows sum to 1. Returns an (N, N) CSR matrix, float32.

    Distances of pairs found in ``rank`` / ``knn_dist`` (the neighbour pass) are reused; the other
    pairs of the sets are computed from the features, ``chunk`` pairs at a time."""
    n = feats.shape[0]
    rows, pos = np.nonzero(sets >= 0)
    cols = sets[rows, pos]
    d = np.empty(len(rows), dtype=np.float32)
    todo = np.ones(len(rows), dtype=bool)
    if rank is not None:
        hit = rank[rows] == cols[:, None]           # (P, k)
        found = hit.any(1)
        d[found] = knn_dist[rows[found], hit[found].argmax(1)]
        todo = ~found
    idx = np.flatnonzero(todo)
    sq = (feats * feats).sum(1)
    x, sq_np = (feats.numpy(), sq.numpy()) if feats.device.type == "cpu" else (None, None)
    for s in range(0, len(idx), chunk):
        sel = idx[s:s + chunk]
        if x is not None:  # NumPy: faster than torch's gathers on the CPU
            ri, ci = rows[sel], cols[sel]
            dd = sq_np[ri] + sq_np[ci] - 2 * np.einsum("ij,ij->i", x[ri], x[ci])
            d[sel] = np.maximum(dd, 0.0)
            continue
        ri = torch.from_numpy(rows[sel]).to(feats.device)
        ci = torch.from_numpy(cols[sel]).to(feats.device)
        dot = (feats[ri] * feats[ci]).sum(1)
        d[sel] = (sq[ri] + sq[ci] - 2 * dot).clamp_(min=0).cpu().numpy()
    w = np.exp(-(d * scale[rows]), dtype=np.float32)
    w /= np.bincount(rows, weights=w, minlength=n).astype(np.float32)[rows]
    return sp.csr_matrix((w, (rows, cols)), shape=(n, n), dtype=np.float32)


def query_expansion(v: sp.csr_matrix, rank: np.ndarray, k2: int) -> sp.csr_matrix:
    """Local query expansion (Eq. 11): row i becomes the mean of the rows of its k2 nearest
    neighbours (itself included). A sparse (N, N) x (N, N) product; ``k2 == 1`` returns ``v``."""
    if k2 <= 1:
        return v
    n = v.shape[0]
    k2 = min(k2, rank.shape[1])
    sel = sp.csr_matrix((np.full(n * k2, 1.0 / k2, dtype=np.float32),
                         (np.repeat(np.arange(n), k2), rank[:, :k2].reshape(-1))), shape=(n, n))
    return (sel @ v).tocsr()


def jaccard_min_sum(vq: sp.csr_matrix, vg_csc: sp.csc_matrix) -> np.ndarray:
    """``sum_c min(vq[i, c], vg[j, c])`` for every query row i and gallery row j (the numerator of
    Eq. 10), summed only over the columns both rows use (inverted index: the CSC columns of vg).

    Each non-zero ``vq[i, c]`` meets the gallery rows listed in column c of vg; every such meeting adds
    its minimum to ``out[i, j]`` (one ``np.bincount`` over all meetings of the chunk).

    Args:
        vq: (m, N) CSR, a chunk of query rows of V.
        vg_csc: (g, N) CSC, the gallery rows of V.
    Returns:
        (m, g) float32 dense block (zero where no column is shared).
    """
    m, g = vq.shape[0], vg_csc.shape[0]
    vq = vq.tocoo()
    start = vg_csc.indptr[vq.col]
    cnt = vg_csc.indptr[vq.col + 1] - start
    total = int(cnt.sum())
    if not total:
        return np.zeros((m, g), dtype=np.float32)
    at = np.repeat(start - (np.cumsum(cnt) - cnt), cnt)  # position in vg of each meeting: start + rank in its run
    at += np.arange(total, dtype=at.dtype)
    mins = np.repeat(vq.data, cnt)
    np.minimum(mins, vg_csc.data[at], out=mins)
    cell = np.repeat(vq.row.astype(np.int64) * g, cnt)
    cell += vg_csc.indices[at]
    return np.bincount(cell, weights=mins, minlength=m * g).reshape(m, g).astype(np.float32)


def mix(shared: np.ndarray, base: np.ndarray, lambda_value: float, base_scale: Optional[np.ndarray] = None,
        clip: bool = False) -> np.ndarray:
    """The final distance of Eq. 12, ``(1 - lambda) d_J + lambda base``, with ``d_J = 1 - shared / (2 - shared)``
    (Eq. 10; ``shared`` from :func:`jaccard_min_sum`), written into ``base`` (m, g) float32 in place and returned.
    ``base_scale``: (m,) factors of the base rows (Zhong's row normalisation); ``clip``: clip d_J at 0 (FastReID)."""
    den = np.subtract(2.0, shared, dtype=np.float32)
    jac = np.divide(shared, den, out=den)
    np.subtract(1.0, jac, out=jac)                # d_J
    if clip:
        np.maximum(jac, 0.0, out=jac)
    jac *= np.float32(1.0 - lambda_value)
    base *= (np.float32(lambda_value) if base_scale is None else base_scale[:, None] * np.float32(lambda_value))
    base += jac
    return base


class _Reranker:
    """Shared state of :func:`re_ranking` and :func:`re_ranking_topk` (see the module docstring)."""

    def __init__(self, query_features, gallery_features, k1, k2, lambda_value, metric, mode, search,
                 block, progress, base_distance=None, device=None, backend="auto", keep_qg=False,
                 nlist=None, nprobe=None, hnsw_m=32, max_sample=8192, seed=0, hnsw_ef=None):
        search_kwargs = dict(nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m, max_sample=max_sample, seed=seed,
                             hnsw_ef=hnsw_ef)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        if search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
        if backend not in ("auto", "torch", "numpy"):
            raise ValueError(f"backend must be auto, torch or numpy, got {backend!r}")
        for name, value in (("k1", k1), ("k2", k2), ("block", block)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if k1 < 1 or k2 < 1 or not 0.0 <= lambda_value <= 1.0:
            raise ValueError(f"need k1 >= 1, k2 >= 1, 0 <= lambda_value <= 1; got {k1}, {k2}, {lambda_value}")
        q = _as_tensor(query_features, "query_features")
        g = _as_tensor(gallery_features, "gallery_features")
        _check_magnitude(q, "query_features")   # (cosine too: an overflowing norm would normalise a row to 0)
        _check_magnitude(g, "gallery_features")
        q_in, g_in = q, g  # as given (before normalisation): what a callable base_distance receives
        if q.shape[1] != g.shape[1]:
            raise ValueError(f"query and gallery feature sizes differ: {q.shape[1]} vs {g.shape[1]}")
        if device is not None:
            try:
                q, g = q.to(device), g.to(device)
            except (RuntimeError, AssertionError) as e:  # no CUDA build / no device
                warnings.warn(f"re-ranking: device {device!r} is not available ({e}); running on the CPU",
                              RuntimeWarning)
                q, g = q.cpu(), g.cpu()
        if g.device != q.device:
            g = g.to(q.device)
        if backend == "numpy" and q.is_cuda:
            raise ValueError("backend 'numpy' runs on the CPU; the features are on CUDA (use backend 'auto' or 'torch')")
        if metric == "cosine":
            for name, x in (("query_features", q), ("gallery_features", g)):
                zero = (x.abs().sum(1) == 0)
                if bool(zero.any()):
                    raise ValueError(f"{name}: {int(zero.sum())} of {x.shape[0]} rows are zero vectors (first: row "
                                     f"{int(torch.nonzero(zero)[0])}): their cosine distance is undefined")
            q = torch.nn.functional.normalize(q, dim=1)
            g = torch.nn.functional.normalize(g, dim=1)
        self.q, self.g = q.shape[0], g.shape[0]
        self._q_in, self._g_in = q_in, g_in
        if callable(base_distance):
            pass  # evaluated per chunk of queries in chunks()
        elif base_distance is not None:
            if isinstance(base_distance, torch.Tensor):
                base_distance = base_distance.detach().cpu().numpy()
            base_distance = np.asarray(base_distance, dtype=np.float32)
            if base_distance.shape != (self.q, self.g):
                raise ValueError(f"base_distance must be (q, g) = ({self.q}, {self.g}), got {base_distance.shape}")
            if not np.isfinite(base_distance).all():
                raise ValueError(f"base_distance: {int((~np.isfinite(base_distance)).sum())} entries are NaN or inf")
        self.backend = backend
        self.feats = torch.cat([q, g])
        self.mode, self.metric, self.lambda_value = mode, metric, lambda_value
        self.base_distance = base_distance
        n_fwd = k1 + 1 if mode == "zhong" else k1
        n_half = int(np.around(k1 / 2.0)) + 1
        n_fwd = min(n_fwd, self.feats.shape[0])
        n_half = min(n_half, n_fwd)
        if search == "exact":
            try:
                nbr = exact_neighbour_pass(self.feats, max(n_fwd, k2), block=block, progress=progress,
                                           backend=backend, keep_rows=self.q if keep_qg else 0)
            except RuntimeError as e:
                if not self.feats.is_cuda:
                    raise
                warnings.warn(f"re-ranking on {self.feats.device} failed ({e}); falling back to the CPU",
                              RuntimeWarning)
                self.feats = self.feats.cpu()
                nbr = exact_neighbour_pass(self.feats, max(n_fwd, k2), block=block, progress=progress)
        else:
            nbr = faiss_neighbour_pass(self.feats, max(n_fwd, k2), search=search, **search_kwargs)
        self.row_max = np.maximum(nbr.row_max, np.finfo(np.float32).tiny)
        self.scale = 1.0 / self.row_max if mode == "zhong" else np.ones_like(self.row_max)
        r_full = reciprocal_sets(nbr.rank, n_fwd)
        r_half = reciprocal_sets(nbr.rank, n_half)
        v = encode_v(self.feats, expanded_sets(r_full, r_half), self.scale, nbr.rank, nbr.knn_dist)
        v = query_expansion(v, nbr.rank, k2)
        self.vq = v[: self.q]
        self.vg = v[self.q:].tocsc()
        self.sq = (self.feats * self.feats).sum(1)
        self.qg = nbr.head  # the q x g squared distances of the exact pass (dense output only), else None

    def chunks(self, chunk: int) -> Iterator[Tuple[int, int, np.ndarray]]:
        """Yield ``(start, end, final distance of queries start:end vs all gallery)``. With the q x g block of
        the exact pass (``keep_qg``), the result is written over that block's rows (the dense output)."""
        gal = self.feats[self.q:]
        for s in range(0, self.q, chunk):
            e = min(s + chunk, self.q)
            shared = jaccard_min_sum(self.vq[s:e], self.vg)  # sum_c min(V_i, V_j); sum max = 2 - it
            scale = None
            if callable(self.base_distance):
                base = self.base_distance(self._q_in[s:e], self._g_in)
                if isinstance(base, torch.Tensor):
                    base = base.detach().cpu().numpy()
                base = np.array(base, dtype=np.float32)  # a copy: mixed in place
                if base.shape != (e - s, self.g) or not np.isfinite(base).all():
                    raise ValueError(f"base_distance({e - s} queries, {self.g} gallery) gave shape {base.shape} "
                                     f"or non-finite values")
            elif self.base_distance is not None:
                base = np.array(self.base_distance[s:e], dtype=np.float32)
            else:
                if self.qg is not None:
                    base = self.qg[s:e]
                else:
                    base = _sq_dist_block(self.feats[s:e], gal, self.sq[s:e], self.sq[self.q:],
                                          backend=self.backend).cpu().numpy()
                if self.mode == "zhong":
                    scale = self.scale[s:e]
                elif self.metric == "cosine":
                    base *= 0.5  # = 1 - cos for unit vectors, FastReID's cosine distance
                # else FastReID's "euclidean": the squared l2
            yield s, e, mix(shared, base, self.lambda_value, scale, clip=self.mode == "fastreid")


def re_ranking(query_features: ArrayLike, gallery_features: ArrayLike, k1: int = 20, k2: int = 6,
               lambda_value: float = 0.3, metric: str = "euclidean", mode: str = "zhong",
               search: str = "exact", base_distance: Optional[np.ndarray] = None, block: int = 2048,
               chunk: int = 1024, progress: bool = False, device: Optional[str] = None, backend: str = "auto",
               nlist: Optional[int] = None, nprobe: Optional[int] = None, hnsw_m: int = 32, max_sample: int = 8192,
               seed: int = 0, hnsw_ef: Optional[int] = None) -> np.ndarray:
    """k-reciprocal re-ranked query x gallery distance (Zhong et al. CVPR 2017, Eq. 12).

    Args:
        query_features: (q, D) float32, numpy or torch (CPU or CUDA: the exact pass runs there).
        gallery_features: (g, D) float32.
        k1, k2, lambda_value: Zhong's k1 (k-reciprocal sets), k2 (query expansion), lambda (Eq. 12).
        metric: ``"euclidean"`` (plain l2 of the features) or ``"cosine"`` (l2 of l2-normalised features).
        mode: ``"zhong"`` (equals TorchReID's dense ``re_ranking`` given the plain l2 matrices) or
            ``"fastreid"`` (equals FastReID's ``compute_jaccard_distance`` + lambda mixing).
        search: ``"exact"`` (one blocked brute-force pass giving k-NN and exact row maxima; the fastest on the
            CPU at every size measured), ``"faiss"`` (exact faiss ``IndexFlatL2`` k-NN, a GPU index when faiss has GPUs
            and the features are on CUDA; row maxima estimated; on the CPU about 1.6x slower than ``"exact"``, so
            kept for faiss-gpu), ``"ivf"`` / ``"hnsw"`` (approximate faiss k-NN, only for N >=
            :data:`APPROX_MIN_POINTS`; recall@k 0.85-0.93 at 500k points, ``benchmarks/results/knn_recall_cpu.md``;
            row maxima estimated). See :func:`faiss_neighbour_pass`.
        base_distance: optional (q, g) distance to mix in place of the features' own (e.g. OCNet's
            two-feature distance), or a callable ``(query_feats (m, D), gallery_feats (g, D)) -> (m, g)`` called per
            chunk of queries (no (q, g) array needed); the k-reciprocal neighbourhoods still come from the features.
        block: points per block of the exact pass (CPU: tiles of ``block x block``; torch / CUDA: ``block x N``).
        chunk: queries per Jaccard chunk (memory ``chunk x g`` floats plus the shared pairs).
        progress: show a progress bar of the exact pass.
        device: run on this torch device (``"cuda"``: the exact pass as torch products on the GPU, a faiss GPU index
            with ``search="faiss"`` when faiss has GPUs); ``None``: the features' own device. A device that is not
            there, or a GPU pass that fails, falls back to the CPU with a ``RuntimeWarning``, never an error.
        backend: ``"auto"`` (torch products on CUDA, NumPy's BLAS on the CPU), ``"torch"`` (torch everywhere: the
            GPU code path, which the tests run on the CPU), ``"numpy"``.
        nlist, nprobe, hnsw_m, hnsw_ef, max_sample, seed: the approximate searches' settings
            (:func:`faiss_neighbour_pass`; None: :func:`approximate_defaults`; unused by ``search="exact"``). Any other keyword (a typo such as ``lamda_value``) is a ``TypeError``.
    Returns:
        (q, g) float32 numpy array; smaller is more similar.
    Raises:
        ValueError / TypeError: bad shapes, sizes or option values; NaN / inf in the features or the base
            distance (how many rows); zero vectors with ``metric="cosine"``; empty inputs. float16 / float64 /
            integer features are converted to float32, tensors that require grad are detached, and a gallery on
            another device than the query is moved to it. k1 or k2 larger than q + g behave as in Zhong's code
            (every point is a neighbour).

    Complexity: time O(N^2 D / 2) for the exact pass on the CPU (each pair once; O(N^2 D) on the torch path) plus
    O(q x |shared pairs|) for the Jaccard part;
    memory O(N x k1 x k2) plus the (q, g) output. N = q + g.
    """
    rr = _Reranker(query_features, gallery_features, k1, k2, lambda_value, metric, mode, search, block,
                   progress, base_distance, device=device, backend=backend,
                   keep_qg=base_distance is None, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m,
                   max_sample=max_sample, seed=seed, hnsw_ef=hnsw_ef)
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    # the q x g distances kept from the exact pass become the output, chunk by chunk (each chunk reads its rows first)
    out = rr.qg if rr.qg is not None else np.empty((rr.q, rr.g), dtype=np.float32)
    for s, e, d in rr.chunks(chunk):
        if rr.qg is None:
            out[s:e] = d
    return out


def re_ranking_topk(query_features: ArrayLike, gallery_features: ArrayLike, topk: int = 10, k1: int = 20,
                    k2: int = 6, lambda_value: float = 0.3, metric: str = "euclidean", mode: str = "zhong",
                    search: str = "exact", block: int = 2048, chunk: int = 256, progress: bool = False,
                    base_distance=None, device: Optional[str] = None, backend: str = "auto",
                    nlist: Optional[int] = None, nprobe: Optional[int] = None, hnsw_m: int = 32,
                    max_sample: int = 8192, seed: int = 0, hnsw_ef: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The ``topk`` gallery items per query under the re-ranked distance, without any (q, g) array.

    Same arguments as :func:`re_ranking` (``base_distance``: best a callable, so that no (q, g) array is made,
    e.g. ``occreid.fastreid.ocnet.ocnet_distance_from_cfg(cfg)`` for OCNet's Eq. 4). Memory O(N x k1 x k2 + chunk x g).

    Returns:
        ``(indices, distances)``: (q, topk) int64 gallery indices, nearest first, and their (q, topk)
        float32 re-ranked distances.
    """
    rr = _Reranker(query_features, gallery_features, k1, k2, lambda_value, metric, mode, search, block,
                   progress, base_distance, device=device, backend=backend, nlist=nlist, nprobe=nprobe,
                   hnsw_m=hnsw_m, max_sample=max_sample, seed=seed, hnsw_ef=hnsw_ef)
    topk = min(topk, rr.g)
    chunk = max(1, min(chunk, (1 << 25) // max(rr.g, 1)))  # at most ~2^25 distances per chunk
    idx = np.empty((rr.q, topk), dtype=np.int64)
    dist = np.empty((rr.q, topk), dtype=np.float32)
    for s, e, d in rr.chunks(chunk):
        part = np.argpartition(d, topk - 1, axis=1)[:, :topk]
        pd = np.take_along_axis(d, part, 1)
        order = np.argsort(pd, axis=1, kind="stable")
        idx[s:e] = np.take_along_axis(part, order, 1)
        dist[s:e] = np.take_along_axis(pd, order, 1)
    return idx, dist
