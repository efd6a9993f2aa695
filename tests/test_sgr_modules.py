"""SGR (Yan et al., ICCV 2021) building blocks: BED loss bounds, batch-constant erasing, DNL block,
reconstructive pooling, momentum mean feature, multi-head classifier. (The SGR meta-architecture and
configs are issue 5's remaining work.)"""

import math

import numpy as np
import pytest
import torch

from occreid.data.batch_erasing import BatchConstantErasing, compound_batch
from occreid.layers import DNLBlock, MomentumMeanFeature, MultiHeadClassifier, ReconstructivePooling
from occreid.losses import bed_loss, bed_pair_loss


def test_bed_pair_loss_values_and_bounds():
    d = torch.tensor([0.0, 1.0, 1e4])
    same = bed_pair_loss(d, torch.ones(3), alpha=0.3)
    diff = bed_pair_loss(d, torch.zeros(3), alpha=0.3)
    # Eq. 3 at d = 0: same 0, different 1; at d = 1: 1 - e^-0.3 and e^-0.3; Eq. 4 limits: 1 and 0
    np.testing.assert_allclose(same.numpy(), [0.0, 1 - math.exp(-0.3), 1.0], atol=1e-6)
    np.testing.assert_allclose(diff.numpy(), [1.0, math.exp(-0.3), 0.0], atol=1e-6)
    assert torch.all((same >= 0) & (same <= 1) & (diff >= 0) & (diff <= 1))


def test_bed_loss_on_a_batch_by_hand():
    z = torch.tensor([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    y = torch.tensor([0, 0, 1])
    # ordered pairs i != j: (0,1) same d=5, (0,2) diff d=0, (1,2) diff d=5, and their mirrors
    e5 = math.exp(-0.3 * 5)
    pair = {(0, 1): 1 - e5, (0, 2): 1.0, (1, 2): e5}  # Eq. 3 of each unordered pair
    expected = sum(pair.values()) * 2 / 6
    assert bed_loss(z, y, alpha=0.3).item() == pytest.approx(expected, rel=1e-5)  # "pairs", the default
    # "sum": per anchor the sum over the other two, averaged over the 3 anchors
    sums = [pair[0, 1] + pair[0, 2], pair[0, 1] + pair[1, 2], pair[0, 2] + pair[1, 2]]
    assert bed_loss(z, y, alpha=0.3, reduction="sum").item() == pytest.approx(sum(sums) / 3, rel=1e-5)
    # "balanced": anchors 0 and 1 have a positive and a negative, anchor 2 has no positive and is left out
    balanced = [pair[0, 1] + pair[0, 2], pair[0, 1] + pair[1, 2]]
    assert bed_loss(z, y, alpha=0.3, reduction="balanced").item() == pytest.approx(sum(balanced) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        bed_loss(z, y, reduction="max")
    with pytest.raises(ValueError, match="positive and a negative"):
        bed_loss(z, torch.tensor([0, 1, 2]), reduction="balanced")
    z.requires_grad_(True)
    bed_loss(z + 0.1, y).backward()
    assert torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match="two samples"):
        bed_loss(z[:1], y[:1])


def test_batch_constant_erasing_erases_the_same_stripe_and_only_it():
    g = torch.Generator().manual_seed(0)
    bce = BatchConstantErasing(stripes=(6, 7, 8), value=[1.0, 2.0, 3.0], generator=g)
    x = torch.rand(5, 3, 24, 8) + 10  # values far from the fill
    seen = set()
    for _ in range(30):
        out = bce(x)
        erased = (out != x).any(3).any(1)  # (B, H) rows changed
        assert torch.equal(erased, erased[:1].expand_as(erased))  # same rows in every image
        rows = torch.nonzero(erased[0]).flatten().tolist()
        assert rows == list(range(rows[0], rows[-1] + 1))  # one contiguous stripe
        assert len(rows) in (3, 4)  # H = 24: 8 stripes of 3 rows, 6 of 4, 7 of 3 or 4
        assert torch.all(out[:, 0, rows] == 1.0) and torch.all(out[:, 2, rows] == 3.0)
        keep = [r for r in range(24) if r not in rows]
        assert torch.equal(out[:, :, keep], x[:, :, keep])  # nothing else touched
        seen.add((rows[0], len(rows)))
    assert len(seen) > 3  # the stripe is drawn anew each batch


def test_compound_batch_keeps_labels_for_both_halves():
    x = torch.rand(4, 3, 16, 8)
    t = torch.tensor([1, 1, 2, 2])
    full, labels = compound_batch(x, t, lambda img: img * 0, BatchConstantErasing(value=0.5))
    assert full.shape == (8, 3, 16, 8) and labels.tolist() == [1, 1, 2, 2, 1, 1, 2, 2]
    assert torch.all(full[:4] == 0) and (full[4:] == 0.5).any()


def test_dnl_block_starts_as_identity_and_every_branch_gets_gradients():
    torch.manual_seed(0)
    blk = DNLBlock(8)
    x = torch.randn(2, 8, 6, 4, requires_grad=True)
    assert torch.allclose(blk(x), x)  # zero-initialised output BN
    att = blk.attention(x)
    assert att.shape == (2, 24, 24)
    np.testing.assert_allclose(att.sum(2).detach().numpy(), 2.0, rtol=1e-5)  # two distributions per row
    torch.nn.init.ones_(blk.bn.weight)
    blk(x).pow(2).sum().backward()
    for name, p in blk.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_reconstructive_pooling_is_a_saliency_weighted_sum():
    torch.manual_seed(0)
    rp = ReconstructivePooling(4)
    x = torch.randn(3, 4, 5, 2, requires_grad=True)
    out = rp(x)
    assert out.shape == (3, 4)
    w = rp.weights(x)
    v = rp.value(x).flatten(2)
    torch.testing.assert_close(out, (v * w[:, None]).sum(2))
    # with W_v = identity and a constant mask it is global average pooling
    with torch.no_grad():
        rp.value.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
        rp.mask.weight.zero_()
    torch.testing.assert_close(rp(x), x.mean((2, 3)))
    rp(x).sum().backward()
    assert rp.value.weight.grad is not None and x.grad.abs().sum() > 0


def test_momentum_mean_update_and_subtraction_and_checkpoint():
    mm = MomentumMeanFeature(2, beta=0.9)
    z = torch.tensor([[3.0, 4.0], [0.0, 2.0]])  # normalised: (0.6, 0.8), (0, 1) -> mean (0.3, 0.9)
    mm.update(z)
    np.testing.assert_allclose(mm.mean.numpy(), [0.03, 0.09], rtol=1e-5)
    mm.update(z)
    np.testing.assert_allclose(mm.mean.numpy(), [0.9 * 0.03 + 0.03, 0.9 * 0.09 + 0.09], rtol=1e-5)
    np.testing.assert_allclose(mm(z).numpy(), [[0.6 - 0.057, 0.8 - 0.171], [-0.057, 1 - 0.171]], rtol=1e-4)
    assert "mean" in mm.state_dict()
    with pytest.raises(ValueError, match="beta"):
        MomentumMeanFeature(2, beta=1.0)


def test_multi_head_classifier_follows_tang_et_al():
    clf = MultiHeadClassifier(4, 3, heads=2, scale=16.0, gamma=1.0)
    with torch.no_grad():
        clf.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 3.0, 3.0, 0.0], [1.0, 0.0, 3.0, 0.0]]))
    z = torch.tensor([[2.0, 0.0, 0.0, 3.0]])
    # heads: z1/|z1| = (1, 0), z2/|z2| = (0, 1); w_{c,h} / (|w_{c,h}| + 1):
    # class 0: (1,0)/2, (0,1)/2 -> 0.5, 0.5; class 1: (0,3)/4, (3,0)/4 -> 0, 0; class 2: (1,0)/2, (3,0)/4 -> 0.5, 0
    heads = clf.head_logits(z).detach().numpy()
    np.testing.assert_allclose(heads, 16 * np.array([[[0.5, 0.0, 0.5]], [[0.5, 0.0, 0.0]]]), atol=1e-6)
    # Tang et al.'s output: (tau / H) sum_h = mean of the head logits
    np.testing.assert_allclose(clf(z).detach().numpy(), [[8.0, 0.0, 4.0]], atol=1e-6)
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadClassifier(5, 3, heads=2)


def test_dnl_block_equals_eq1_computed_by_hand():
    """x + BN(W_o sum_j [softmax_j((q_i - mu_q).(k_j - mu_k) / sqrt(d)) + softmax_j(W_m f_j)] W_v f_j)
    (Eq. 1, whitened pairwise + unary), with the block's weights but an independent computation
    (float64, explicit loops over positions)."""
    torch.manual_seed(0)
    blk = DNLBlock(6, reduction=2).eval()
    torch.nn.init.normal_(blk.bn.weight)  # leave the zero (identity) start
    x = torch.randn(1, 6, 3, 2)
    with torch.no_grad():
        out = blk(x)
    w = lambda conv: conv.weight.detach()[:, :, 0, 0].double()
    f = x[0].double().reshape(6, -1)                     # (C, N), N = 6 positions
    q, k, v = w(blk.query) @ f, w(blk.key) @ f, w(blk.value) @ f + blk.value.bias.detach().double()[:, None]
    q = q - q.mean(1, keepdim=True)
    k = k - k.mean(1, keepdim=True)
    n, d = f.shape[1], q.shape[0]
    unary = torch.softmax(w(blk.unary) @ f, dim=1)[0]    # (N,)
    y = torch.zeros(d, n, dtype=torch.float64)
    for i in range(n):
        pair = torch.softmax(torch.stack([q[:, i] @ k[:, j] for j in range(n)]) / math.sqrt(d), 0)
        for j in range(n):
            y[:, i] += (pair[j] + unary[j]) * v[:, j]
    o = w(blk.out) @ y
    bn = blk.bn
    o = (o - bn.running_mean.double()[:, None]) / torch.sqrt(bn.running_var.double()[:, None] + bn.eps) \
        * bn.weight.detach().double()[:, None] + bn.bias.detach().double()[:, None]
    np.testing.assert_allclose(out[0].reshape(6, -1).double().numpy(), (f + o).numpy(), rtol=1e-4, atol=1e-5)
