"""Re-ranking inputs that must not give silent garbage, the torch (GPU) code path on CPU tensors, the fallback when
a device is missing, and top-k with FastReID's mode / a method's own base distance. References: TorchReID's and
FastReID's dense implementations (tests/test_rerank.py)."""

import warnings

import numpy as np
import pytest
import torch

from occreid.evaluation.rerank import exact_neighbour_pass, re_ranking, re_ranking_topk
from test_rerank import clustered, fastreid_reference, torchreid_reference


@pytest.fixture(scope="module")
def feats():
    x, _ = clustered(n=260, ids=20, dim=16, seed=3)
    return x[:60], x[60:]


def test_nan_or_inf_in_one_row_is_an_error_saying_how_many(feats):
    q, g = feats
    q = q.clone()
    q[7, 3] = float("nan")
    with pytest.raises(ValueError, match=r"query_features: 1 of 60 rows contain NaN or inf .*first: row 7"):
        re_ranking(q, g)
    g = g.clone()
    g[[2, 9], 0] = float("inf")
    with pytest.raises(ValueError, match=r"gallery_features: 2 of 200 rows"):
        re_ranking(feats[0], g)
    big = feats[1].double().clone()
    big[0, 0] = 1e300  # finite as float64, inf as float32
    with pytest.raises(ValueError, match="gallery_features: 1 of 200 rows"):
        re_ranking(feats[0], big)


def test_zero_vectors_with_cosine_are_an_error_and_fine_with_euclidean(feats):
    q, g = feats
    g = g.clone()
    g[4] = 0
    with pytest.raises(ValueError, match=r"gallery_features: 1 of 200 rows are zero vectors .*row 4"):
        re_ranking(q, g, metric="cosine")
    np.testing.assert_allclose(re_ranking(q, g), torchreid_reference(q, g), atol=2e-5)


@pytest.mark.parametrize("nq,ng", [(1, 200), (60, 1), (1, 1), (5, 8)])
def test_one_query_one_gallery_and_fewer_than_k1_points_equal_torchreid(feats, nq, ng):
    q, g = feats[0][:nq], feats[1][:ng]  # (5, 8): q + g = 13 < k1 = 20, so k1 > N too
    np.testing.assert_allclose(re_ranking(q, g), torchreid_reference(q, g), atol=2e-5)


@pytest.mark.parametrize("k1,k2", [(5, 12), (20, 40), (300, 6)])
def test_k2_larger_than_k1_and_k1_larger_than_n_equal_torchreid(feats, k1, k2):
    q, g = feats
    np.testing.assert_allclose(re_ranking(q, g, k1=k1, k2=k2), torchreid_reference(q, g, k1=k1, k2=k2), atol=2e-5)


def test_dtypes_and_grad_tensors(feats):
    q, g = feats
    ref = re_ranking(q, g)
    np.testing.assert_allclose(re_ranking(q.double(), g.double().numpy()), ref, atol=1e-6)
    np.testing.assert_allclose(re_ranking(q.half(), g.half()), re_ranking(q.half().float(), g.half().float()), atol=1e-6)
    qi, gi = (q * 10).round().int(), (g * 10).round().long().numpy()
    np.testing.assert_allclose(re_ranking(qi, gi), re_ranking(qi.float(), torch.from_numpy(gi).float()), atol=1e-6)
    qg = q.clone().requires_grad_(True)
    np.testing.assert_allclose(re_ranking(qg, g), ref, atol=1e-6)
    assert qg.grad is None
    with pytest.raises(TypeError, match="real numbers, got dtype torch.bool"):
        re_ranking(q > 0, g)
    with pytest.raises(TypeError, match="real numbers"):
        re_ranking(q.numpy().astype(np.complex64), g)
    with pytest.raises(ValueError, match="empty"):
        re_ranking(q[:0], g)
    with pytest.raises(ValueError, match="feature sizes differ: 16 vs 15"):
        re_ranking(q, g[:, :15])


def test_bad_base_distance_is_an_error(feats):
    q, g = feats
    with pytest.raises(ValueError, match=r"base_distance must be \(q, g\) = \(60, 200\)"):
        re_ranking(q, g, base_distance=np.zeros((60, 199), np.float32))
    bad = np.zeros((60, 200), np.float32)
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="base_distance: 1 entries are NaN"):
        re_ranking(q, g, base_distance=bad)


def test_torch_code_path_on_cpu_tensors_equals_the_reference(feats):
    """backend="torch" is the CUDA code path (torch products instead of NumPy's BLAS): run here on the CPU."""
    q, g = feats
    x = torch.cat([q, g])
    a = exact_neighbour_pass(x, 21, block=64, backend="torch")
    b = exact_neighbour_pass(x, 21, block=64, backend="numpy")
    np.testing.assert_array_equal(a.rank[:, :5], b.rank[:, :5])
    np.testing.assert_allclose(a.knn_dist, b.knn_dist, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(a.row_max, b.row_max, rtol=1e-5)
    np.testing.assert_allclose(re_ranking(q, g, backend="torch"), torchreid_reference(q, g), atol=2e-5)
    with pytest.raises(ValueError, match="backend"):
        re_ranking(q, g, backend="cupy")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback of a machine without CUDA")
def test_missing_gpu_falls_back_to_the_cpu_with_a_warning(feats):
    q, g = feats
    with pytest.warns(RuntimeWarning, match="device 'cuda' is not available"):
        out = re_ranking(q, g, device="cuda", search="faiss")
    np.testing.assert_allclose(out, re_ranking(q, g, search="faiss"), atol=1e-6)


def test_topk_in_fastreid_mode_and_with_a_callable_base_distance(feats):
    q, g = feats
    dense = fastreid_reference(q, g, metric="cosine")
    idx, dist = re_ranking_topk(q, g, topk=10, metric="cosine", mode="fastreid")
    np.testing.assert_allclose(dist, np.take_along_axis(dense, idx, 1), atol=2e-5)
    np.testing.assert_allclose(np.sort(dense, 1)[:, :10], dist, atol=2e-5)

    def base(qf, gf):  # a method's own distance (here: 2 x the l1 distance), per chunk of queries
        return 2 * torch.cdist(qf, gf, p=1).numpy()

    full = re_ranking(q, g, base_distance=base(q, g))
    np.testing.assert_allclose(re_ranking(q, g, base_distance=base), full, atol=1e-6)
    idx, dist = re_ranking_topk(q, g, topk=5, base_distance=base, chunk=7)
    np.testing.assert_allclose(dist, np.sort(full, 1)[:, :5], atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="gave shape"):
            re_ranking(q, g, base_distance=lambda a, b: np.zeros((1, 1)))
