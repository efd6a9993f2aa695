"""AMD-Net (Ge et al. 2024): SIM (Eq. 3-4) on hand-checkable maps, Eq. 2, the TFF basis block (Eq. 11), the
attention pooling (Eq. 6-7), the part-soft distance (Eq. 12) on a hand case and its head weighting, the
visibility threshold, the losses against independent references, gradients to every branch, the Table 2
switches from their configs as written (HRNet-W32), the joint image/label transforms and the test distance."""

import glob
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import build_cfg_and_model as _build
from occreid.layers.amdnet import (GatedConv2d, PartAttentionHead, SpatialFrequencyInteraction, TaylorBasisBlock,
                                   attention_pooling, part_attention_loss, part_soft_distance,
                                   part_soft_triplet_loss, parsing_targets, per_part_hard_triplet_loss,
                                   visibility_scores)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AMD_DIR = os.path.join(REPO, "projects", "AMDNet", "configs")
CPU_CFG = os.path.join(AMD_DIR, "occluded_duke_osnet_x0_25_cpu.yml")
CONFIGS = sorted(glob.glob(os.path.join(AMD_DIR, "**", "*.yml"), recursive=True))


# ---------------------------------------------------------------- SIM (Eq. 3-4)

def test_sim_on_a_constant_map_is_the_identity_whatever_the_phase_conv():
    """A positive constant map has one non-zero frequency (DC) with phase 0: a bias-free phase convolution keeps
    phase 0, so IFFT gives the map back and Eq. 4 mixes it with itself, for any W_b."""
    torch.manual_seed(0)
    sim = SpatialFrequencyInteraction(4, alpha=0.35, kernel_size=3, identity_init=False)
    g = torch.full((2, 4, 8, 6), 0.7)
    g[:, 1] = 2.5
    assert torch.allclose(sim(g), g, atol=1e-5)


def test_sim_identity_init_and_a_zeroed_phase_against_numpy():
    torch.manual_seed(0)
    g = torch.randn(2, 3, 8, 6)
    sim = SpatialFrequencyInteraction(3, alpha=0.35)
    assert torch.allclose(sim(g), g, atol=1e-5)                     # W_b = identity: IFFT(FFT(G)) = G
    with torch.no_grad():
        sim.phase_conv.weight.zero_()                               # phase -> 0: IFFT of the amplitude alone
    spec = np.fft.rfft2(g.numpy(), norm="ortho")
    ref = 0.35 * np.fft.irfft2(np.abs(spec), s=(8, 6), norm="ortho") + 0.65 * g.numpy()
    assert np.allclose(sim(g).detach().numpy(), ref, atol=1e-5)


def test_sim_bad_arguments_and_finite_gradients_on_zero_bins():
    with pytest.raises(ValueError, match="ALPHA"):
        SpatialFrequencyInteraction(3, alpha=1.5)
    with pytest.raises(ValueError, match="KERNEL"):
        SpatialFrequencyInteraction(3, kernel_size=2)
    sim = SpatialFrequencyInteraction(3, identity_init=False)
    g = torch.ones(1, 3, 4, 4, requires_grad=True)                 # every bin but DC has amplitude 0
    sim(g).sum().backward()
    assert torch.isfinite(g.grad).all() and torch.isfinite(sim.phase_conv.weight.grad).all()


# ---------------------------------------------------------------- PAGB, Eq. 1-2

def test_part_attention_head_softmax_over_background_and_parts():
    head = PartAttentionHead(8, num_parts=5, sim=SpatialFrequencyInteraction(8))
    p = head(torch.randn(2, 8, 6, 4))
    assert p.shape == (2, 6, 6, 4) and torch.allclose(p.sum(1), torch.ones(2, 6, 4), atol=1e-6)


def test_eq2_label_smoothed_pixel_ce_by_hand():
    logits = torch.tensor([[2.0, 0.0, -1.0]]).view(1, 3, 1, 1).repeat(1, 1, 1, 2)   # 2 pixels, N = 3 classes
    targets = torch.tensor([[[0, -1]]])                                               # second pixel unlabelled
    logp = [2 - np.log(np.exp(2) + 1 + np.exp(-1)), 0 - np.log(np.exp(2) + 1 + np.exp(-1)),
            -1 - np.log(np.exp(2) + 1 + np.exp(-1))]
    s = 0.15
    q = [1 - s + s / 3, s / 3, s / 3]
    ref = -sum(qi * li for qi, li in zip(q, logp))
    assert part_attention_loss(logits, targets, s).item() == pytest.approx(ref, rel=1e-5)
    assert part_attention_loss(logits, torch.full((1, 1, 2), -1)).item() == 0.0


def test_parsing_targets_area_majority_and_unlabelled_images():
    lab = torch.zeros(2, 4, 4, dtype=torch.long)
    lab[0, :2, :2] = 1                     # top-left cell all head
    lab[0, 2:, 2:] = 3
    lab[0, 2, 2] = 5                       # 1 of 4 pixels: trunk wins
    lab[1] = -1
    t = parsing_targets(lab, (2, 2))
    assert t[0].tolist() == [[1, 0], [0, 3]] and (t[1] == -1).all()


# ---------------------------------------------------------------- TFF (Eq. 8-11)

def test_taylor_basis_block_is_eq11():
    torch.manual_seed(0)
    blk = TaylorBasisBlock(4, zero_init=False).eval()
    tau = torch.randn(2, 4, 6, 5)
    with torch.no_grad():
        delta = blk.residual(tau)
        gate = blk.gated.feature(tau) * torch.sigmoid(blk.gated.gate(tau))
        ref = (tau + delta) + gate + 3 * delta
        assert torch.allclose(blk(tau), ref, atol=1e-6)
    assert torch.allclose(TaylorBasisBlock(4).eval()(tau), tau)     # zero-init: the identity on pretrained maps


def test_gated_conv_gate_scales_the_feature():
    gc = GatedConv2d(2, 2, 1)
    with torch.no_grad():
        gc.feature.weight.copy_(torch.eye(2).view(2, 2, 1, 1)); gc.feature.bias.zero_()
        gc.gate.weight.zero_(); gc.gate.bias.fill_(-100.0)
    x = torch.randn(1, 2, 3, 3)
    assert gc(x).abs().max() < 1e-30                               # gate closed
    with torch.no_grad():
        gc.gate.bias.fill_(100.0)
    assert torch.allclose(gc(x), x)                                 # gate open


# ---------------------------------------------------------------- Eq. 6-7, visibility, Eq. 12-13

def test_attention_pooling_divides_by_hw():
    fmap = torch.arange(8.0).view(1, 2, 2, 2)                       # C = 2, h = w = 2
    parts = torch.zeros(1, 2, 2, 2)
    parts[0, 0, 0, 0] = 1.0                                         # part 1: one cell
    parts[0, 1] = 0.5                                               # part 2: half everywhere
    out = attention_pooling(fmap, parts)
    assert out["f_parts"][0, 0].tolist() == [0 / 4, 4 / 4]
    assert out["f_parts"][0, 1].tolist() == pytest.approx([0.5 * 6 / 4, 0.5 * 22 / 4])
    assert out["f_g"][0].tolist() == [1.5, 5.5]
    assert out["p_t"][0].tolist() == [[1.0, 0.5], [0.5, 0.5]]
    assert out["f_t"][0].tolist() == pytest.approx([(0 + 0.5 * 6) / 4, (4 + 0.5 * 18) / 4])


def test_visibility_threshold():
    parts = torch.zeros(1, 3, 2, 2)
    parts[0, 0, 0, 0], parts[0, 1, 1, 1], parts[0, 2] = 0.41, 0.39, 0.4
    assert visibility_scores(parts, 0.4).tolist() == [[1.0, 0.0, 0.0]]


def test_eq12_hand_case_and_head_weighting():
    fa = torch.zeros(1, 3, 2)
    fb = torch.tensor([[[3.0, 4.0], [0.0, 4.0], [1.0, 0.0]]])       # part distances 5, 4, 1
    d = part_soft_distance(fa, fb, beta_head=0.5)
    assert d.item() == pytest.approx((1.5 * 5 + 4 + 1) / 3.5, rel=1e-5)
    assert part_soft_distance(fa, fb, beta_head=0.0).item() == pytest.approx(10 / 3, rel=1e-5)
    # a change of delta in the head distance moves d by (1 + beta) delta / (K + beta); in another part by 1 / (K + beta)
    fb2 = fb.clone(); fb2[0, 0] = torch.tensor([6.0, 8.0])        # head 5 -> 10
    fb3 = fb.clone(); fb3[0, 1] = torch.tensor([0.0, 9.0])        # arms 4 -> 9
    assert (part_soft_distance(fa, fb2) - d).item() == pytest.approx(1.5 * 5 / 3.5, rel=1e-5)
    assert (part_soft_distance(fa, fb3) - d).item() == pytest.approx(5 / 3.5, rel=1e-5)
    # visibility: only parts visible in both count
    va, vb = torch.tensor([[1.0, 0.0, 1.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    assert part_soft_distance(fa, fb, 0.5, va, vb).item() == pytest.approx(5.0, rel=1e-5)


def _hard_mining_reference(dist, y, margin):
    losses = []
    for i in range(len(y)):
        pos = [dist[i, j] for j in range(len(y)) if y[j] == y[i]]
        neg = [dist[i, j] for j in range(len(y)) if y[j] != y[i]]
        losses.append(max(0.0, float(max(pos) - min(neg)) + margin))
    return sum(losses) / len(losses)


def test_part_soft_and_per_part_triplets_against_references():
    torch.manual_seed(0)
    f = torch.randn(8, 5, 4)
    y = torch.arange(4).repeat_interleave(2)
    w = torch.tensor([1.5, 1, 1, 1, 1])
    d = sum(w[k] * torch.cdist(f[:, k], f[:, k]) for k in range(5)) / 5.5
    assert part_soft_triplet_loss(f, y, 0.3).item() == pytest.approx(_hard_mining_reference(d, y, 0.3), rel=1e-4)
    ref = np.mean([_hard_mining_reference(torch.cdist(f[:, k], f[:, k]), y, 0.3) for k in range(5)])
    assert per_part_hard_triplet_loss(f, y, 0.3).item() == pytest.approx(ref, rel=1e-4)


# ---------------------------------------------------------------- the model

def _batch(b=8, h=256, w=128, labels=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {"images": torch.rand(b, 3, h, w, generator=g) * 255, "targets": torch.arange(b // 2).repeat_interleave(2)}
    if labels:
        lab = torch.zeros(b, h, w, dtype=torch.long)
        for k, (r0, r1) in enumerate([(0, 0.15), (0.15, 0.5), (0.2, 0.5), (0.5, 0.9), (0.9, 1.0)], start=1):
            lab[:, int(r0 * h):int(r1 * h), w // 4: 3 * w // 4] = k
        lab[0] = -1                                   # one image without a label
        out["parsing"] = lab
    return out


def test_every_loss_term_and_every_branch_gets_gradient():
    from fastreid.utils.events import EventStorage
    cfg, model = _build(CPU_CFG)
    with torch.no_grad():   # leave the zero-init identity start: every TFF weight random
        for blk in model.heads.tff:
            blk.residual[-1].weight.normal_(1.0, 0.1)
            blk.gated.feature.weight.normal_(0, 0.05)
    model.train()
    rec = {}
    hk = model.backbone.register_forward_hook(lambda m, i, o: rec.setdefault("G", o))
    with EventStorage(0):
        losses = model(_batch())
    hk.remove()
    assert set(losses) == {"loss_cls_g", "loss_cls_t", "loss_cls_c", "loss_triplet_parts", "loss_part_attention"}
    for k, v in losses.items():
        (g,) = torch.autograd.grad(v, rec["G"], retain_graph=True)
        assert g.norm() > 0, k
    sum(losses.values()).backward()
    for name, p in model.heads.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_losses_against_an_independent_reference():
    from fastreid.utils.events import EventStorage
    cfg, model = _build(CPU_CFG)
    model.train()
    b = _batch()
    with EventStorage(0):
        losses = model(dict(b, images=b["images"].clone()))     # FastReID normalises the images in place
    h = model.heads
    with torch.no_grad():
        x = (b["images"] - model.pixel_mean) / model.pixel_std
        g = model.backbone(x)
        fmap = h.tff(g)
        logits = h.pagb.attention_conv(h.pagb.sim(g))
        parts = logits.softmax(1)[:, 1:]
        hh, ww = fmap.shape[-2:]
        f_parts = torch.stack([(fmap * parts[:, k:k + 1]).sum((2, 3)) / (hh * ww) for k in range(5)], 1)
        f_t = (fmap * parts.max(1, keepdim=True).values).sum((2, 3)) / (hh * ww)
        y = b["targets"]
        w = torch.tensor([1.5, 1, 1, 1, 1])
        d = sum(w[k] * torch.cdist(f_parts[:, k], f_parts[:, k]) for k in range(5)) / 5.5
        tri = _hard_mining_reference(d, y, 0.3)

        def ce(logit):   # FastReID's label smoothing: 1 - eps on the target, eps / (n - 1) elsewhere
            eps = cfg.MODEL.LOSSES.CE.EPSILON
            q = torch.full_like(logit, eps / (logit.shape[1] - 1))
            q[torch.arange(len(y)), y] = 1 - eps
            return -(q * logit.log_softmax(1)).sum(1).mean()
        # BNNecks in training mode: batch statistics
        bn = lambda neck, v: F.batch_norm(v, None, None, neck.weight, neck.bias, True, 0.0, neck.eps)
        ref_t = ce(h.t_classifier(bn(h.neck_t, f_t)))
        ref_c = ce(h.c_classifier(bn(h.neck_c, f_parts.flatten(1))))
        ref_g = ce(h.g_classifier(bn(h.neck_g, fmap.mean((2, 3)))))
    assert losses["loss_triplet_parts"].item() == pytest.approx(tri, rel=1e-4)
    assert losses["loss_cls_t"].item() == pytest.approx(ref_t.item(), rel=1e-4)
    assert losses["loss_cls_c"].item() == pytest.approx(ref_c.item(), rel=1e-4)
    assert losses["loss_cls_g"].item() == pytest.approx(ref_g.item(), rel=1e-4)


def test_reid_losses_reach_the_attention_maps():
    """Dual supervision (PAGB): the part-soft triplet and the CE on f_t / f_c back-propagate into the part
    attention logits, not only the parsing loss."""
    from fastreid.utils.events import EventStorage
    cfg, model = _build(CPU_CFG)
    model.train()
    b = _batch()
    out = model.features(model.preprocess_image(dict(b, images=b["images"].clone())))
    with EventStorage(0):
        losses = model.losses(out, b["targets"], b["parsing"])
    for k in ("loss_triplet_parts", "loss_cls_t", "loss_cls_c"):
        (g,) = torch.autograd.grad(losses[k], out["P_logits"], retain_graph=True)
        assert g.abs().sum() > 0, k
    (g,) = torch.autograd.grad(losses["loss_cls_g"], out["P_logits"], retain_graph=True, allow_unused=True)
    assert g is None or g.abs().sum() == 0                      # f_g does not use the maps


def test_scalar_keys_are_read_from_the_config():
    cfg, model = _build(CPU_CFG, ["MODEL.AMD.SIM.ALPHA", "0.5", "MODEL.AMD.SIM.KERNEL", "3", "MODEL.AMD.GAMMA", "0.25",
                                  "MODEL.AMD.BETA_HEAD", "1.0", "MODEL.AMD.TFF.BLOCKS", "2", "MODEL.AMD.NUM_PARTS", "4"])
    sim = model.heads.pagb.sim
    assert sim.alpha == 0.5 and sim.phase_conv.kernel_size == (3, 3)
    assert model.gamma == 0.25 and model.beta_head == 1.0 and len(model.heads.tff) == 2
    assert model.heads.pagb.attention_conv.out_channels == 5


def test_geometric_augmentations_without_the_label_are_refused():
    from fastreid.config import get_cfg
    from occreid.fastreid.parsing_data import image_only_transforms
    cfg = get_cfg()
    cfg.merge_from_file(CPU_CFG)
    cfg.INPUT.AFFINE.ENABLED = True
    with pytest.raises(ValueError, match="INPUT.AFFINE"):
        image_only_transforms(cfg)


def test_no_labels_no_parsing_term_and_parsing_weight():
    from fastreid.utils.events import EventStorage
    cfg, model = _build(CPU_CFG)
    model.train()
    with EventStorage(0):
        assert "loss_part_attention" not in model(_batch(labels=False))
    cfg, model2 = _build(CPU_CFG, ["MODEL.AMD.PARSING_WEIGHT", "2.0"])
    model2.load_state_dict(model.state_dict())
    b = _batch()
    with EventStorage(0):
        l1 = model(dict(b, images=b["images"].clone()))["loss_part_attention"]
        l2 = model2(dict(b, images=b["images"].clone()))["loss_part_attention"]
    assert l2.item() == pytest.approx(2 * l1.item(), rel=1e-5)


@pytest.mark.parametrize("name,pa,sim,tff,part_loss", [
    ("occluded_duke_hrnet32.yml", True, True, True, "part_soft"),
    ("ablation/wo_part_attention.yml", False, None, True, None),
    ("ablation/wo_sim.yml", True, False, True, "part_soft"),
    ("ablation/wo_tff.yml", True, True, False, "part_soft"),
    ("ablation/wo_sim_tff.yml", True, False, False, "part_soft"),
    ("ablation/part_id_loss.yml", True, True, True, "id"),
    ("ablation/part_hard_triplet.yml", True, True, True, "hard_triplet")])
def test_table2_switches_from_configs_as_written(name, pa, sim, tff, part_loss):
    from fastreid.utils.events import EventStorage
    from occreid.layers.amdnet import TaylorFeatureFilter
    cfg, model = _build(os.path.join(AMD_DIR, name), resnet=True)
    assert cfg.MODEL.BACKBONE.NAME == "build_timm_hrnet_backbone" and cfg.MODEL.BACKBONE.FEAT_DIM == 480
    h = model.heads
    assert (h.pagb is not None) == pa
    assert isinstance(h.tff, TaylorFeatureFilter) == tff
    calls = {}
    if pa:
        assert (h.pagb.sim is not None) == sim
        if sim:
            h.pagb.sim.register_forward_hook(lambda m, i, o: calls.__setitem__("sim", 1))
    if tff:
        h.tff.register_forward_hook(lambda m, i, o: calls.__setitem__("tff", 1))
    model.train()
    b = _batch(4, 64, 32)
    with EventStorage(0):
        losses = model(dict(b, images=b["images"].clone()))
    assert ("sim" in calls) == bool(sim) and ("tff" in calls) == tff
    if not pa:
        assert set(losses) == {"loss_cls_g", "loss_triplet_g"}
        return
    assert "loss_part_attention" in losses
    assert ("loss_cls_parts" in losses) == (part_loss == "id")
    assert ("loss_triplet_parts" in losses) == (part_loss != "id")
    if part_loss == "hard_triplet":    # the per-part batch-hard triplet, not Eq. 12-13
        with torch.no_grad():
            out = model.features(model.preprocess_image(b))
        ref = np.mean([_hard_mining_reference(torch.cdist(out["f_parts"][:, k], out["f_parts"][:, k]), b["targets"], 0.3)
                       for k in range(5)])
        assert losses["loss_triplet_parts"].item() == pytest.approx(ref, rel=1e-3)


@pytest.mark.parametrize("path", [c for c in CONFIGS if "hrnet32" in c or "cpu" in c])
def test_every_config_builds_trains_and_tests_on_a_tiny_osnet(path):
    from fastreid.utils.events import EventStorage
    cfg, model = _build(path)
    model.train()
    with EventStorage(0):
        losses = model(_batch(8, 64, 32))
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        feats = model(_batch(4, 64, 32, labels=False))
    assert feats.shape == (4, 2 * 128 + 5 * 128 + 5)


def test_test_distance_visible_parts_by_hand():
    from occreid.fastreid.amdnet import amd_distance
    c, k = 1, 5
    def feat(t, g, parts, vis):
        return torch.tensor([[t, g, *parts, *vis]], dtype=torch.float32)
    q = feat(0, 0, [0, 0, 0, 0, 0], [1, 1, 0, 1, 1])
    gal = feat(2, 7, [1, 3, 5, 2, 4], [1, 0, 1, 1, 1])
    # both visible: head (w 1.5, d 1), legs (d 2), feet (d 4); plus f_t (w 1, d 2)
    ref = (2 + 1.5 * 1 + 2 + 4) / (1 + 1.5 + 1 + 1)
    assert amd_distance(q, gal, k)[0, 0] == pytest.approx(ref, rel=1e-5)
    g_ref = np.sqrt(4 + 49 + 1 + 9 + 25 + 4 + 16)
    assert amd_distance(q, gal, k, "global")[0, 0] == pytest.approx(g_ref, rel=1e-5)
    with pytest.raises(ValueError, match="TEST_DISTANCE"):
        amd_distance(q, gal, k, "cosine")


# ---------------------------------------------------------------- joint image / label transforms

def test_joint_geometry_keeps_image_and_label_aligned():
    from fastreid.config import get_cfg
    import occreid.fastreid  # noqa: F401
    from occreid.fastreid.parsing_data import JointGeometry
    cfg = get_cfg()
    cfg.merge_from_file(CPU_CFG)
    cfg.INPUT.FLIP.PROB = 1.0                       # always flip
    geo = JointGeometry(cfg)
    arr = np.zeros((128, 64, 3), np.uint8)
    arr[:, :20, 0] = 255                            # a red stripe on the left ...
    arr[90:100, :, 1] = 255                         # ... and a green band across
    lab = np.zeros((128, 64), np.uint8)
    lab[:, :20] = 2                                 # ... labelled arms
    lab[90:100] = 4                                 # ... and legs
    for seed in range(5):
        import random
        random.seed(seed)
        img, out = geo(Image.fromarray(arr), lab)
        im = np.asarray(img)
        assert im.shape[:2] == out.shape == (256, 128)
        white = (im[..., 0] > 127) & (im[..., 1] < 127)
        band = im[..., 1] > 127
        assert ((out == 2) == white).mean() > 0.98   # label follows flip, resize and the pad + crop
        assert ((out == 4) == band).sum() > 0.97 * out.size and (out == 4).sum() > 0.8 * band.sum()
        assert white[:, -30:].mean() > white[:, :30].mean()   # flipped: the stripe is on the right
    _, none = geo(Image.fromarray(arr), None)
    assert (none == -1).all()


def test_part_maps_view_rows_and_picture(tmp_path):
    from occreid.evaluation.part_maps import draw_part_maps, part_match_rows
    from occreid.fastreid.amdnet import amd_distance
    torch.manual_seed(0)
    c, k = 4, 5
    q = torch.cat([torch.randn(2, 2 * c + k * c), torch.tensor([[1, 1, 0, 1, 1], [1, 1, 1, 1, 1.0]])], 1)
    g = torch.cat([torch.randn(6, 2 * c + k * c), torch.ones(6, k)], 1)
    g[3, :2 * c + k * c] = q[0, :2 * c + k * c]                     # gallery 3 is query 0's twin
    dist = amd_distance(q, g, k)
    rows = part_match_rows(q, g, dist, k, topk=3)
    assert rows[0][0][0] == 3 and rows[0][0][1] == pytest.approx(0.0, abs=1e-3)
    assert np.isnan(rows[0][1][2][2]) and not np.isnan(rows[1][1][2][2])   # trunk hidden in query 0
    imgs = [Image.new("RGB", (64, 128), (i * 40, 0, 0)) for i in range(8)]
    maps = torch.rand(2, k, 16, 8).softmax(1).numpy()
    out = draw_part_maps(imgs[:2], maps, q[:, -k:].numpy(), str(tmp_path / "p.png"), gallery=imgs[2:], matches=rows)
    assert Image.open(out).size == ((2 + k + 3) * 100, 2 * (192 + 40 + 4))
    with pytest.raises(ValueError, match="visibility"):
        draw_part_maps(imgs[:2], maps, np.ones((3, k)), str(tmp_path / "x.png"))


@pytest.mark.slow
def test_amdnet_trains_on_real_occluded_duke_with_generated_parsing_labels(real_data_root, tmp_path, monkeypatch):
    """Labels generated with MediaPipe for the training subset, then the trainer of train_net.py: the parsing
    term is in the loss, the total loss goes down, metrics are computed, and `occreid part-maps` draws the view."""
    pytest.importorskip("mediapipe")
    from conftest import train_on_real_subset
    from occreid.data.common import ReIDSplits
    from occreid.data.parsing import build_parsers, parse_image, read_rgb, write_label_png
    from occreid.data.subset import subset_splits
    from occreid.fastreid.cli import main
    monkeypatch.setenv("FASTREID_DATASETS", real_data_root)
    from occreid.fastreid.datasets import OccludedDuke   # the trainer's items (pids prefixed), so the same subset
    train = subset_splits(ReIDSplits(OccludedDuke(root=real_data_root).train, [], []), train_ids=24,
                          mode="random", seed=3).train
    pose, seg = build_parsers()
    labelled = 0
    for path, _, _ in train[:160]:     # the rest of the subset trains without Eq. 2
        label = parse_image(read_rgb(path), pose, seg)
        if label is not None:
            write_label_png(str(tmp_path / "parsing" / (os.path.relpath(path, real_data_root)[:-4] + ".png")), label)
            labelled += 1
    assert labelled > 40
    (tmp_path / "run").mkdir()
    trainer, results, losses = train_on_real_subset(
        CPU_CFG, real_data_root, tmp_path / "run", ["DATASETS.PARSING.ROOT", str(tmp_path / "parsing")])
    hist = trainer.storage.history("loss_part_attention").values()
    assert len(hist) > 0
    assert np.mean(losses[-4:]) < np.mean(losses[:4]), losses
    for key in ("Rank-1", "mAP", "mINP"):
        assert np.isfinite(results[key]) and 0 <= results[key] <= 100
    out = tmp_path / "pm.png"
    main(["part-maps", "--config-file", CPU_CFG, "--weights", str(tmp_path / "run" / "model_final.pth"),
          "--dataset", "OccludedDuke", "--num-queries", "2", "--gallery-size", "10", "--out", str(out),
          "MODEL.DEVICE", "cpu"])
    assert Image.open(out).size == ((2 + 5 + 3) * 100, 2 * (192 + 40 + 4))


def test_part_attention_loss_targets_follow_the_labels_rows():
    """Eq. 2 on the model's own part maps: loss_part_attention = weight * CE(P_logits, parsing_targets(labels)),
    with the labels as given (head rows at the top). Flipping them vertically (head labels on the feet) changes the
    loss (issue 29: a flipped target passed every test)."""
    from fastreid.utils.events import EventStorage
    from occreid.layers.amdnet import part_attention_loss
    cfg, model = _build(CPU_CFG)
    model.train()
    torch.manual_seed(0)
    images = torch.rand(4, 3, 128, 64) * 255
    k = cfg.MODEL.AMD.NUM_PARTS if "NUM_PARTS" in cfg.MODEL.AMD else 5
    lab = torch.zeros(4, 128, 64, dtype=torch.long)
    rows = torch.linspace(0, k - 0.001, 128).long() + 1          # part 1 (head) on the top rows ... part k at the feet
    lab[:, :, 16:48] = rows[:, None]
    batch = {"images": images, "targets": torch.tensor([0, 0, 1, 1]), "parsing": lab}
    with EventStorage(0):
        losses = model({key: v.clone() for key, v in batch.items()})
    with torch.no_grad():
        out = model.features((images - model.pixel_mean) / model.pixel_std)
        size = out["P_logits"].shape[-2:]
        expected = model.parsing_weight * part_attention_loss(out["P_logits"], parsing_targets(lab, size),
                                                              model.parsing_sigma)
        flipped = model.parsing_weight * part_attention_loss(out["P_logits"], parsing_targets(lab.flip(1), size),
                                                             model.parsing_sigma)
    assert losses["loss_part_attention"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert abs(flipped.item() - expected.item()) > 1e-3 * abs(expected.item())
