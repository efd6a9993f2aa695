"""The vectorised stages of occreid's re-ranking against plain (slow) implementations of their definitions:
the symmetric-tile exact pass, R(i, k) (Eq. 3), R*(i, k1) (Eq. 6), the Jaccard numerator (Eq. 10) and the
mixing (Eq. 12)."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from occreid.evaluation.rerank import (_merge_candidates, exact_neighbour_pass, expanded_sets, jaccard_min_sum, mix,
                                       re_ranking, reciprocal_sets)


def clustered(n, dim=16, ids=None, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((ids or max(1, n // 12), dim)) * 2
    return (centers[rng.integers(0, len(centers), n)] + rng.standard_normal((n, dim))).astype(np.float32)


def brute_knn(x, k):
    xd = x.astype(np.float64)
    d = ((xd[:, None, :] - xd[None, :, :]) ** 2).sum(-1)
    return np.argsort(d, axis=1, kind="stable")[:, :k], d


@pytest.mark.parametrize("n,k,block,keep", [(300, 21, 64, 37), (300, 21, 17, 64), (50, 21, 8, 5), (40, 40, 16, 3),
                                            (1, 1, 4, 0), (7, 3, 2048, 2)])
def test_tiled_exact_pass_equals_brute_force(n, k, block, keep):
    """Tiles smaller than k, k = N, one point, one tile: the same k-NN sets, distances, row maxima and q x g block."""
    x = clustered(n, seed=n + block)
    nb = exact_neighbour_pass(torch.from_numpy(x), k, block=block, keep_rows=keep, seed_cols=8)
    ref, d = brute_knn(x, min(k, n))
    assert nb.rank.shape == (n, min(k, n))
    assert (nb.rank[:, 0] == np.arange(n)).all()  # self first, at distance exactly 0
    assert (nb.knn_dist[:, 0] == 0).all()
    for i in range(n):
        assert set(nb.rank[i]) == set(ref[i])
        np.testing.assert_allclose(nb.knn_dist[i], d[i, nb.rank[i]], rtol=1e-4, atol=1e-3)
    assert (np.diff(nb.knn_dist, axis=1) >= 0).all()  # nearest first
    np.testing.assert_allclose(nb.row_max, d.max(1), rtol=1e-5)
    if keep:
        np.testing.assert_allclose(nb.head, d[:keep, keep:], rtol=1e-4, atol=1e-3)
    else:
        assert nb.head is None


def test_tiled_pass_equals_the_torch_path_and_seed_is_only_speed():
    x = torch.from_numpy(clustered(500, seed=3))
    a = exact_neighbour_pass(x, 21, block=96, keep_rows=40)
    b = exact_neighbour_pass(x, 21, block=96, keep_rows=40, backend="torch")
    c = exact_neighbour_pass(x, 21, block=96, keep_rows=40, seed_cols=1)  # the loosest first thresholds
    for other in (b, c):
        assert all(set(r1) == set(r2) for r1, r2 in zip(a.rank, other.rank))
        np.testing.assert_allclose(a.knn_dist, other.knn_dist, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(a.row_max, other.row_max, rtol=1e-6)
        np.testing.assert_allclose(a.head, other.head, rtol=1e-5, atol=1e-4)


def test_merge_candidates_keeps_the_k_nearest():
    rng = np.random.default_rng(0)
    best_d = np.sort(rng.random((6, 4)).astype(np.float32), 1)
    best_d[5] = np.inf  # a row with nothing yet
    best_i = rng.integers(100, 200, (6, 4))
    best_i[5] = -1
    r = np.array([0, 0, 2, 5, 5, 5, 5, 5])
    j = np.arange(8)
    v = np.array([0.0, 2.0, 0.5, 0.3, 0.1, 0.2, 0.4, 0.05], np.float32)
    ref = [sorted(zip(list(best_d[i]) + list(v[r == i]), list(best_i[i]) + list(j[r == i])))[:4] for i in range(6)]
    _merge_candidates(best_d, best_i, r, j, v)
    for i in range(6):
        np.testing.assert_allclose(best_d[i], [t[0] for t in ref[i]])
        assert best_i[i].tolist() == [t[1] for t in ref[i]]


def zhong_sets(rank, k1):
    """R(i, k1) and R*(i, k1) with Zhong's loop (TorchReID's rerank.py), on given neighbour lists."""
    out_r, out_star = [], []
    half = int(np.around(k1 / 2.0)) + 1
    for i in range(len(rank)):
        fwd = rank[i, :k1 + 1]
        back = rank[fwd, :k1 + 1]
        r = fwd[np.where(back == i)[0]]
        star = r
        for c in r:
            cf = rank[c, :half]
            cb = rank[cf, :half]
            cr = cf[np.where(cb == c)[0]]
            if len(np.intersect1d(cr, r)) > 2.0 / 3 * len(cr):
                star = np.append(star, cr)
        out_r.append(set(r.tolist()))
        out_star.append(set(np.unique(star).tolist()))
    return out_r, out_star


@pytest.mark.parametrize("seed", [0, 1])
def test_reciprocal_and_expanded_sets_equal_zhongs_loop(seed):
    x = clustered(400, ids=25, seed=seed)
    rank, _ = brute_knn(x, 21)
    r_full, r_half = reciprocal_sets(rank, 21), reciprocal_sets(rank, 11)
    star = expanded_sets(r_full, r_half, chunk=64)
    ref_r, ref_star = zhong_sets(rank, 20)
    for i in range(len(x)):
        assert set(r_full[i][r_full[i] >= 0].tolist()) == ref_r[i]
        assert (r_full[i][r_full[i] >= 0] == [j for j in rank[i] if j in ref_r[i]]).all()  # order of N(i, k) kept
        row = star[i][star[i] >= 0]
        assert set(row.tolist()) == ref_star[i] and (np.diff(row) > 0).all()  # sorted, unique
        assert (star[i][len(row):] == -1).all()
    assert star.shape[1] == max(len(s) for s in ref_star)


def test_reciprocal_sets_ignore_missing_neighbours():
    rank = np.array([[0, 1, -1], [1, 0, 2], [2, -1, -1]])
    assert reciprocal_sets(rank, 3).tolist() == [[0, 1, -1], [1, 0, -1], [2, -1, -1]]


def test_jaccard_numerator_and_mixing_equal_their_dense_definitions():
    rng = np.random.default_rng(1)
    v = sp.random(60, 80, density=0.1, random_state=2, dtype=np.float32).tocsr()
    v = sp.csr_matrix(v.multiply(1.0 / np.maximum(v.sum(1), 1e-9)))
    dense = v.toarray()
    num = jaccard_min_sum(v[:20], v[20:].tocsc())
    ref = np.minimum(dense[:20, None, :], dense[None, 20:, :]).sum(-1)
    np.testing.assert_allclose(num, ref, rtol=1e-6, atol=1e-7)
    base = rng.random((20, 40)).astype(np.float32)
    scale = rng.random(20).astype(np.float32)
    jac = 1 - ref / (2 - ref)
    np.testing.assert_allclose(mix(num.copy(), base.copy(), 0.3, scale), 0.7 * jac + 0.3 * base * scale[:, None],
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mix(num.copy(), base.copy(), 0.3, clip=True), 0.7 * np.maximum(jac, 0) + 0.3 * base,
                               rtol=1e-5, atol=1e-6)


def test_finite_rows_whose_sum_overflows_are_accepted():
    q = np.full((2, 4), 3e38, np.float32)  # finite, but the row sums overflow float32
    g = np.zeros((3, 4), np.float32)
    assert np.isfinite(re_ranking(q / 1e30, g)).all()  # the check itself must not reject q
    from occreid.evaluation.rerank import _as_tensor
    assert _as_tensor(q, "q").shape == (2, 4)   # the NaN / inf check does not reject them ...
    with pytest.raises(ValueError, match="query_features: row 0 has a squared norm .* too large for float32"):
        re_ranking(q, g)                          # ... but their squared distances would overflow: a clear error
    q[1, 2] = np.inf
    with pytest.raises(ValueError, match="1 of 2 rows contain NaN or inf"):
        _as_tensor(q, "q")
