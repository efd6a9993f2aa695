"""k-reciprocal re-ranking: hand-computed pieces, equality with TorchReID's and FastReID's dense
implementations (synthetic and real features), top-k API, evaluator wiring."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from occreid.evaluation.rerank import (encode_v, exact_neighbour_pass, expanded_sets, jaccard_min_sum,
                                       query_expansion, re_ranking, re_ranking_topk, reciprocal_sets)


def clustered(n=700, ids=50, dim=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(ids, dim, generator=g) * 2
    labels = torch.randint(0, ids, (n,), generator=g)
    return centers[labels] + torch.randn(n, dim, generator=g), labels.numpy()


def l2(a, b):
    return torch.cdist(torch.as_tensor(a).double(), torch.as_tensor(b).double()).float().numpy()


def torchreid_reference(q, g, k1=20, k2=6, lam=0.3):
    from torchreid.reid.utils.rerank import re_ranking as ref
    return ref(l2(q, g), l2(q, q), l2(g, g), k1=k1, k2=k2, lambda_value=lam)


def fastreid_reference(q, g, k1=20, k2=6, lam=0.3, metric="cosine"):
    from fastreid.utils.compute_dist import build_dist, compute_jaccard_distance
    dist = build_dist(q, g, metric)
    if metric == "cosine":
        q, g = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(g, dim=1)
    jac = compute_jaccard_distance(torch.cat([q, g]), k1=k1, k2=k2, search_option=3)[: len(q), len(q):]
    return jac * (1 - lam) + dist * lam


def test_exact_neighbour_pass_hand_case():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    nb = exact_neighbour_pass(x, k=3, block=3)  # two blocks
    assert nb.rank.tolist() == [[0, 1, 2], [1, 0, 2], [2, 1, 0], [3, 2, 1]]
    np.testing.assert_allclose(nb.knn_dist[3], [0, 16, 36])
    np.testing.assert_allclose(nb.row_max, [49, 36, 16, 49])


def test_reciprocal_and_expanded_sets_hand_case():
    # neighbour lists (self first) of 4 points
    rank = np.array([[0, 1, 2], [1, 0, 3], [2, 3, 0], [3, 2, 1]])
    r = reciprocal_sets(rank, 2)
    # 0<->1 and 2<->3 are mutual 2-NN
    assert r.tolist() == [[0, 1], [1, 0], [2, 3], [3, 2]]
    r3 = reciprocal_sets(rank, 3)
    assert r3[0].tolist() == [0, 1, 2] and r3[1].tolist() == [1, 0, 3] and r3[3].tolist() == [3, 2, 1]
    # R*(0): R(0,3) = {0,1,2}; R(c, 1) = {c} for every c, fully inside -> nothing new
    exp = expanded_sets(r3, reciprocal_sets(rank, 1))
    assert sorted(v for v in exp[0] if v >= 0) == [0, 1, 2]
    # with half sets R(c,2): R(1,2)={1,0} inside R(0,3) -> accepted; R(2,2)={2,3}: 1/2 <= 2/3 -> rejected
    exp = expanded_sets(r3, r)
    assert sorted(v for v in exp[0] if v >= 0) == [0, 1, 2]
    # R*(3): R(3,3) = {3,2,1}; R(3,2) = R(2,2) = {2,3} accepted; R(1,2) = {1,0} shares 1 <= 4/3: rejected
    assert sorted(v for v in exp[3] if v >= 0) == [1, 2, 3]


def test_encode_v_weights_are_softmax_of_scaled_distance():
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    sets = np.array([[0, 1, -1], [1, 0, 2], [2, -1, -1]])
    v = encode_v(x, sets, scale=np.array([1.0, 0.5, 1.0], dtype=np.float32)).toarray()
    e = np.exp([-0.0, -1.0])
    np.testing.assert_allclose(v[0], [e[0] / e.sum(), e[1] / e.sum(), 0], rtol=1e-6)
    w = np.exp([-0.5 * 1.0, 0.0, -0.5 * 5.0])  # d(1,0)=1, d(1,1)=0, d(1,2)=5, scaled by 0.5
    np.testing.assert_allclose(v[1], w / w.sum(), rtol=1e-6)
    np.testing.assert_allclose(v.sum(1), 1.0, rtol=1e-6)


def test_query_expansion_and_jaccard_hand_case():
    v = sp.csr_matrix(np.array([[0.5, 0.5, 0.0], [0.0, 0.25, 0.75], [1.0, 0.0, 0.0]], dtype=np.float32))
    rank = np.array([[0, 2, 1], [1, 0, 2], [2, 0, 1]])
    qe = query_expansion(v, rank, 2).toarray()
    np.testing.assert_allclose(qe[0], [0.75, 0.25, 0.0])  # mean of rows 0 and 2
    np.testing.assert_allclose(qe[1], [0.25, 0.375, 0.375])
    assert query_expansion(v, rank, 1) is v
    num = jaccard_min_sum(v[:1], v[1:].tocsc())
    # row0=(.5,.5,0) vs row1=(0,.25,.75): min sum .25; vs row2=(1,0,0): .5
    np.testing.assert_allclose(num, [[0.25, 0.5]])


@pytest.mark.parametrize("k1,k2,lam", [(20, 6, 0.3), (10, 1, 0.5), (7, 3, 0.0)])
def test_zhong_mode_equals_torchreid_dense(k1, k2, lam):
    feats, _ = clustered()
    q, g = feats[:120], feats[120:]
    ref = torchreid_reference(q, g, k1, k2, lam)
    ours = re_ranking(q.numpy(), g, k1=k1, k2=k2, lambda_value=lam, block=97, chunk=50)
    assert ours.shape == (120, 580) and ours.dtype == np.float32
    assert np.abs(ours - ref).max() < 1e-4


def test_cosine_metric_is_euclidean_on_normalised_features():
    feats, _ = clustered(seed=1)
    q, g = feats[:100], feats[100:]
    qn, gn = (torch.nn.functional.normalize(t, dim=1) for t in (q, g))
    assert np.abs(re_ranking(q, g, metric="cosine") - torchreid_reference(qn, gn)).max() < 1e-4


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_fastreid_mode_equals_fastreid_compute_jaccard(metric):
    feats, _ = clustered(seed=2)
    q, g = feats[:150], feats[150:]
    ref = fastreid_reference(q, g, metric=metric)
    ours = re_ranking(q, g, metric=metric, mode="fastreid")
    assert np.abs(ours - ref).max() < 1e-4 * max(1.0, np.abs(ref).max())


def test_topk_matches_dense_block_without_it():
    feats, _ = clustered(seed=3)
    q, g = feats[:90], feats[90:]
    dense = re_ranking(q, g)
    idx, dist = re_ranking_topk(q, g, topk=7, chunk=16)
    np.testing.assert_allclose(dist, np.sort(dense, 1)[:, :7], rtol=1e-5)  # chunks round differently
    np.testing.assert_allclose(np.take_along_axis(dense, idx, 1), dist, rtol=1e-5)  # chunking rounds differently


def test_faiss_search_gives_the_same_neighbours_as_exact():
    feats, _ = clustered(seed=4)
    q, g = feats[:100], feats[100:]
    exact = re_ranking(q, g, mode="fastreid", metric="euclidean")
    via_faiss = re_ranking(q, g, mode="fastreid", metric="euclidean", search="faiss")
    assert np.abs(exact - via_faiss).max() < 1e-4  # fastreid mode needs no row maxima


def test_base_distance_replaces_the_mixed_distance():
    feats, _ = clustered(seed=5)
    q, g = feats[:60], feats[60:]
    base = np.random.default_rng(0).random((60, len(g))).astype(np.float32)
    plain = re_ranking(q, g, lambda_value=0.0)  # Jaccard part only
    mixed = re_ranking(q, g, lambda_value=0.4, base_distance=base)
    np.testing.assert_allclose(mixed, 0.6 * plain + 0.4 * base, rtol=1e-5, atol=1e-6)


def test_bad_input_errors():
    q, g = np.zeros((3, 4), np.float32), np.zeros((5, 6), np.float32)
    with pytest.raises(ValueError, match="feature sizes differ: 4 vs 6"):
        re_ranking(q, g)
    with pytest.raises(ValueError, match="2-D"):
        re_ranking(np.zeros(4, np.float32), g)
    with pytest.raises(ValueError, match="mode"):
        re_ranking(q, q, mode="dense")
    with pytest.raises(TypeError, match="numpy array or a torch tensor"):
        re_ranking([[0.0]], q)


def test_evaluator_rerank_keeps_fastreid_numbers():
    """TEST.RERANK with MODE fastreid gives FastReID's own ReidEvaluator numbers."""
    from fastreid.config import get_cfg
    from fastreid.evaluation import ReidEvaluator
    import occreid.fastreid  # noqa: F401
    from occreid.fastreid import OccReIDEvaluator

    feats, labels = clustered(n=600, ids=40, seed=6)
    feats = feats + 0.8 * torch.randn_like(feats)
    cams = np.arange(600) % 2
    cfg = get_cfg()
    cfg.TEST.RERANK.ENABLED = True
    out = []
    for ev in (ReidEvaluator(cfg, 100), OccReIDEvaluator(cfg, 100)):
        for s in range(0, 600, 128):
            ev.process({"targets": torch.as_tensor(labels[s:s + 128]), "camids": torch.as_tensor(cams[s:s + 128])},
                       feats[s:s + 128])
        out.append(ev.evaluate())
    for key in ("Rank-1", "Rank-5", "mAP", "mINP"):
        assert out[0][key] == pytest.approx(out[1][key], abs=1e-6), key


@pytest.mark.realdata
def test_equal_to_torchreid_on_real_osnet_features(real_osnet_features):
    from fastreid.evaluation.rank import evaluate_rank
    qf, gf, qp, gp, qc, gc = real_osnet_features
    ref = torchreid_reference(qf, gf)
    ours = re_ranking(qf, gf)
    assert np.abs(ours - ref).max() < 1e-4
    ra, rb = evaluate_rank(ref, qp, gp, qc, gc), evaluate_rank(ours, qp, gp, qc, gc)
    assert ra[0][0] == rb[0][0] and np.mean(ra[1]) == pytest.approx(np.mean(rb[1]), abs=1e-6)
    # and re-ranking changes the ranking of real data (it is not a no-op)
    base = evaluate_rank(l2(qf, gf), qp, gp, qc, gc)
    assert np.mean(base[1]) != pytest.approx(np.mean(ra[1]), abs=1e-4)


@pytest.mark.realdata
def test_fastreid_mode_on_real_osnet_features(real_osnet_features):
    qf, gf = (torch.from_numpy(a) for a in real_osnet_features[:2])
    ref = fastreid_reference(qf, gf)
    assert np.abs(re_ranking(qf, gf, metric="cosine", mode="fastreid") - ref).max() < 1e-4


def test_faiss_pass_puts_each_point_first_exactly_once():
    from occreid.evaluation.rerank import faiss_neighbour_pass
    x = torch.zeros(6, 4)  # all points tie: faiss may return any order
    x[3:] = 1.0
    nb = faiss_neighbour_pass(x, 4)
    assert nb.rank[:, 0].tolist() == list(range(6))
    assert all(len(set(r)) == len(r) for r in nb.rank.tolist())
