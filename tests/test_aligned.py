"""AlignedReID + OBC (Chakraborty, Pan, Mishra): Eq. 1 and the shortest-path local distance against a
brute-force enumeration of paths, the occlusion simulator (fills, sizes, determinism), the OBC loss and the
multi-task weighting (Eq. 3) against an independent reference, the ablation switches from their configs as
written (ResNet-50), and the test distances."""

import glob
import itertools
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import build_cfg_and_model as _build
from occreid.data.occlusion import OcclusionSimulator
from occreid.layers import AlignedLocalBranch, aligned_local_distance, shortest_path, stripe_distance

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AL_DIR = os.path.join(REPO, "projects", "AlignedReID", "configs")
CONFIGS = sorted(glob.glob(os.path.join(AL_DIR, "**", "*.yml"), recursive=True))


def brute_force_shortest_path(d):
    """Minimum over every monotone path (H - 1 downs and H' - 1 rights, in any order) of the sum of d."""
    h, w = d.shape
    best = math.inf
    for downs in itertools.combinations(range(h + w - 2), h - 1):
        i = j = 0
        total = float(d[0, 0])
        for step in range(h + w - 2):
            if step in downs:
                i += 1
            else:
                j += 1
            total += float(d[i, j])
        best = min(best, total)
    return best


def test_eq1_hand_values():
    f = torch.tensor([[[0.0, 0.0], [3.0, 4.0]]])
    g = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    d = stripe_distance(f, g)[0]
    e5 = math.exp(5.0)
    expected = torch.tensor([[0.0, 0.0], [(e5 - 1) / (e5 + 1)] * 2])
    torch.testing.assert_close(d, expected, atol=1e-6, rtol=1e-6)
    # huge distances stay finite (the formula as written overflows e^||.|| in float32 beyond ~88)
    assert stripe_distance(torch.tensor([[[1e3]]]), torch.tensor([[[0.0]]])).item() == pytest.approx(1.0)


@pytest.mark.parametrize("h,w", [(1, 1), (2, 3), (3, 3), (4, 4), (5, 3)])
def test_shortest_path_matches_brute_force(h, w):
    g = torch.Generator().manual_seed(h * 10 + w)
    d = torch.rand(6, h, w, generator=g)
    got = shortest_path(d)
    for k in range(6):
        assert got[k].item() == pytest.approx(brute_force_shortest_path(d[k]), rel=1e-6)


def test_shortest_path_hand_case_and_gradient_on_the_path():
    d = torch.tensor([[0.1, 0.9, 0.9],
                      [0.1, 0.1, 0.9],
                      [0.9, 0.1, 0.1]], requires_grad=True)
    s = shortest_path(d)
    assert s.item() == pytest.approx(0.5)   # (0,0) (1,0) (1,1) (2,1) (2,2)
    s.backward()
    on_path = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 1]], dtype=torch.float32)
    torch.testing.assert_close(d.grad, on_path)


def test_aligned_local_distance_all_pairs_and_paired_agree():
    torch.manual_seed(0)
    f, g = torch.randn(5, 4, 3), torch.randn(7, 4, 3)
    full = aligned_local_distance(f, g, chunk=8)   # several chunks
    for i in range(5):
        for j in range(7):
            ref = brute_force_shortest_path(stripe_distance(f[i:i + 1], g[j:j + 1])[0])
            assert full[i, j].item() == pytest.approx(ref, rel=1e-5)
    paired = aligned_local_distance(f, g[:5], paired=True)
    torch.testing.assert_close(paired, full[torch.arange(5), torch.arange(5)], rtol=1e-5, atol=1e-6)
    # a part shifted down by one stripe is cheap to align: distance to itself shifted < to a random other
    x = torch.randn(1, 6, 8) * 3
    shifted = torch.cat([x[:, :1], x[:, :-1]], dim=1)
    assert aligned_local_distance(x, shifted).item() < aligned_local_distance(x, torch.randn(1, 6, 8) * 3).item()
    with pytest.raises(ValueError, match="want"):
        aligned_local_distance(torch.randn(2, 3), g)


def test_local_branch_pools_horizontally_then_1x1_conv():
    torch.manual_seed(0)
    br = AlignedLocalBranch(4, 3, pool="avg").eval()
    x = torch.randn(2, 4, 5, 6)
    out = br(x)
    assert out.shape == (2, 5, 3)
    ref = torch.relu(br.bn(torch.einsum("oc,bch->boh", br.conv.weight[:, :, 0], x.mean(3)))).transpose(1, 2)
    torch.testing.assert_close(out, ref)
    assert AlignedLocalBranch(4, 3, pool="max").pool(x).equal(x.amax(3))


# ----------------------------------------------------------------------------------------------
# Occlusion simulator

def _image(seed=0, h=128, w=64):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))


def test_simulator_mean_colour_patch_of_the_papers_size():
    img = _image()
    sim = OcclusionSimulator(50, fill="mean", seed=0)
    out = np.asarray(sim(img)).astype(int)
    src = np.asarray(img).astype(int)
    changed = np.any(out != src, axis=2)
    ys, xs = np.nonzero(changed)
    assert ys.max() - ys.min() + 1 <= 50 and xs.max() - xs.min() + 1 <= 50
    assert changed.sum() > 0.9 * 50 * 50          # (a pixel equal to the mean colour is unchanged)
    mean = np.round(src.reshape(-1, 3).mean(0))
    np.testing.assert_array_equal(out[ys[0], xs[0]], mean)      # Algorithm 1, line 2


def test_simulator_fills_area_fraction_and_bad_input():
    img = _image(1)
    out = np.asarray(OcclusionSimulator(0.25, fill="black", seed=0)(img))
    assert (np.all(out == 0, axis=2)).sum() == pytest.approx(0.25 * 128 * 64, rel=0.05)
    noise = np.asarray(OcclusionSimulator(0.2, fill="noise", seed=0)(Image.new("RGB", (64, 128), (7, 7, 7))))
    assert (np.any(noise != 7, axis=2)).sum() > 0.15 * 128 * 64
    for bad in ({"fill": "blur"}, {"size": 0}, {"size": 1.5}):
        with pytest.raises(ValueError):
            OcclusionSimulator(**{"size": 50, "fill": "mean", **bad})


def test_simulator_is_deterministic():
    img = _image(2)
    a = np.asarray(OcclusionSimulator(30, seed=5)(img))
    b = np.asarray(OcclusionSimulator(30, seed=5)(img))
    c = np.asarray(OcclusionSimulator(30, seed=6)(img))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    sim = OcclusionSimulator(30, seed=5)
    p1 = np.asarray(sim.occlude_path_deterministic("x/0001_c1.jpg", img))
    _ = sim(img)  # other draws in between do not change a path's occlusion
    p2 = np.asarray(OcclusionSimulator(30, seed=5).occlude_path_deterministic("x/0001_c1.jpg", img))
    assert np.array_equal(p1, p2)
    assert not np.array_equal(p1, np.asarray(sim.occlude_path_deterministic("x/0002_c1.jpg", img)))


def test_simulator_on_a_batch_uses_each_images_mean():
    imgs = torch.stack([torch.full((3, 16, 8), 10.0), torch.full((3, 16, 8), 200.0)])
    imgs[0, :, 0, 0] = 100.0
    out = OcclusionSimulator(4, fill="mean").occlude_batch(imgs, torch.Generator().manual_seed(0))
    diff = (out != imgs).any(1)
    assert diff[0].sum() >= 15 and diff[1].sum() == 0     # image 1 is constant: its mean changes nothing
    assert torch.isclose(out[0][out[0] != imgs[0]], imgs[0].mean((1, 2))[0]).all()


# ----------------------------------------------------------------------------------------------
# The meta-architecture


def _batch(b=8, h=128, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.rand(b, 3, h, w, generator=g) * 255, "targets": torch.arange(b // 2).repeat_interleave(2)}


def test_losses_against_an_independent_reference():
    from fastreid.utils.events import EventStorage
    cfg, model = _build(os.path.join(AL_DIR, "occluded_duke_osnet_x0_25_cpu.yml"))
    model.train()
    b = _batch()
    torch.manual_seed(3)
    with EventStorage(0):
        losses = model({k: v.clone() for k, v in b.items()})
    # the same occluded copy: same RNG state
    torch.manual_seed(3)
    occ = model.simulator.occlude_batch(b["images"])
    images = torch.cat([b["images"], occ])
    y = torch.cat([b["targets"]] * 2)
    occ_label = torch.tensor([1] * 8 + [0] * 8)
    with torch.no_grad():
        glob, local, _ = model.features((images - model.pixel_mean) / model.pixel_std)
        d = torch.cdist(glob, glob)
        same = y[:, None] == y[None, :]
        pos = torch.where(same, d, torch.full_like(d, -1)).argmax(1)
        neg = torch.where(~same, d, torch.full_like(d, 1e9)).argmin(1)
        i = torch.arange(16)
        l_g = F.relu(d[i, pos] - d[i, neg] + 0.3).mean()
        lp = torch.stack([torch.tensor(brute_force_shortest_path(stripe_distance(local[k:k + 1], local[pos[k]:pos[k] + 1])[0]))
                          for k in range(16)])
        ln = torch.stack([torch.tensor(brute_force_shortest_path(stripe_distance(local[k:k + 1], local[neg[k]:neg[k] + 1])[0]))
                          for k in range(16)]) if local.shape[1] <= 4 else aligned_local_distance(local, local[neg], paired=True)
        if local.shape[1] > 4:   # 8 stripes at 128 x 64: C(14, 7) paths each is too many, use the DP (tested above)
            lp = aligned_local_distance(local, local[pos], paired=True)
        l_l = F.relu(lp - ln + 0.3).mean()
        logits = model.heads.obc(glob)
        p = torch.softmax(logits, 1)[torch.arange(16), occ_label]
        l_o = -(p.log()).mean()                                         # Eq. 2: CE on the occlusion label
    assert set(losses) == {"loss_triplet_global", "loss_triplet_local", "loss_obc"}
    assert losses["loss_triplet_global"].item() == pytest.approx(0.8 * l_g.item(), rel=1e-4, abs=1e-6)
    assert losses["loss_triplet_local"].item() == pytest.approx(0.8 * l_l.item(), rel=1e-4, abs=1e-6)
    assert losses["loss_obc"].item() == pytest.approx(0.2 * l_o.item(), rel=1e-4)     # Eq. 3, alpha = 0.8


def test_every_term_reaches_the_backbone():
    from fastreid.utils.events import EventStorage
    cfg, model = _build(os.path.join(AL_DIR, "occluded_duke_osnet_x0_25_cpu.yml"))
    model.train()
    rec = {}
    h = model.backbone.register_forward_hook(lambda m, i, o: rec.setdefault("F", o))
    with EventStorage(0):
        losses = model(_batch())
    h.remove()
    assert rec["F"].shape[0] == 16                         # [X; Occ(X)]
    for k, v in losses.items():
        (g,) = torch.autograd.grad(v, rec["F"], retain_graph=True)
        assert g.norm() > 0, k


@pytest.mark.parametrize("name,obc,alpha,fill,neck", [
    ("market1501_r50.yml", True, 0.8, "mean", "none"), ("market1501_r50_no_obc.yml", False, 1.0, None, None),
    ("ablation/alpha_0.5.yml", True, 0.5, "mean", "none"), ("ablation/alpha_0.9.yml", True, 0.9, "mean", "none"),
    ("ablation/black_patch.yml", True, 0.8, "black", "none"), ("ablation/obc_bn_neck.yml", True, 0.8, "mean", "bn")])
def test_obc_switches_from_configs_as_written(name, obc, alpha, fill, neck):
    from fastreid.utils.events import EventStorage
    cfg, model = _build(os.path.join(AL_DIR, name), resnet=True)
    assert (model.heads.obc is not None) == obc and model.alpha == alpha
    if obc:
        bn = [m for m in model.heads.obc.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        assert len(bn) == (1 if neck == "bn" else 0)
    assert (model.simulator is not None) == obc
    if fill:
        assert model.simulator.fill == fill
    model.train()
    rec = {}
    h = model.backbone.register_forward_hook(lambda m, i, o: rec.setdefault("F", o))
    b = _batch(4, 64, 32)
    torch.manual_seed(1)
    with EventStorage(0):
        losses = model({k: v.clone() for k, v in b.items()})
    h.remove()
    assert rec["F"].shape[0] == (8 if obc else 4)
    assert ("loss_obc" in losses) == obc
    if obc:
        (g,) = torch.autograd.grad(losses["loss_obc"], rec["F"], retain_graph=True)
        assert g.norm() > 0
        if neck == "bn":   # the BN's batch statistics are in the loss: it is used, and it moved its running mean
            (gw,) = torch.autograd.grad(losses["loss_obc"], bn[0].weight, retain_graph=True)
            assert gw.norm() > 0 and bn[0].running_mean.abs().sum() > 0
        # the occluded half really carries the fill: black patches are 0 in the raw images
        occ = model.simulator.occlude_batch(b["images"], torch.Generator().manual_seed(0))
        if fill == "black":
            assert (occ == 0).all(1).sum() > 0.25 * 64 * 32
        if alpha == 0.8:
            return
        # Eq. 3: the triplet terms carry alpha (against the alpha = 0.8 config on the same weights and batch)
        base = _build(os.path.join(AL_DIR, "market1501_r50.yml"), resnet=True)[1].train()
        base.load_state_dict(model.state_dict())
        torch.manual_seed(1)
        with EventStorage(0):
            l0 = base({k: v.clone() for k, v in b.items()})
        if fill == "mean":
            assert losses["loss_triplet_global"].item() == pytest.approx(l0["loss_triplet_global"].item() * alpha / 0.8, rel=1e-4, abs=1e-6)
            assert losses["loss_obc"].item() == pytest.approx(l0["loss_obc"].item() * (1 - alpha) / 0.2, rel=1e-4)


@pytest.mark.parametrize("mode", ["global", "local", "sum"])
def test_test_distances(mode):
    from occreid.fastreid.aligned import aligned_distance, aligned_distance_from_cfg
    torch.manual_seed(0)
    q, g = torch.randn(3, 4 + 2 * 3), torch.randn(5, 4 + 2 * 3)
    d = aligned_distance(q, g, feat_dim=4, stripes=2, mode=mode)
    dg = torch.cdist(q[:, :4], g[:, :4]).numpy()
    dl = aligned_local_distance(q[:, 4:].reshape(3, 2, 3), g[:, 4:].reshape(5, 2, 3)).numpy()
    np.testing.assert_allclose(d, {"global": dg, "local": dl, "sum": dg + dl}[mode], rtol=1e-5, atol=1e-6)
    cfg, model = _build(os.path.join(AL_DIR, "occluded_duke_osnet_x0_25_cpu.yml"), ["MODEL.ALIGNED.TEST_DISTANCE", mode])
    model.eval()
    with torch.no_grad():
        feats = model(_batch(4))
    assert feats.shape == (4, 128 + 8 * 128)   # 128 x 64 input: 8 stripes of 128
    np.testing.assert_allclose(aligned_distance_from_cfg(cfg)(feats, feats[:2]),
                               aligned_distance(feats, feats[:2], 128, 8, mode), rtol=1e-5)
    with pytest.raises(ValueError, match="TEST_DISTANCE"):
        aligned_distance(q, g, 4, 2, "max")


def test_obc_doubles_the_images_per_step_in_the_budget():
    from occreid.fastreid.trainer import images_per_step
    cfg, _ = _build(os.path.join(AL_DIR, "occluded_duke_osnet_x0_25_cpu.yml"))
    assert images_per_step(cfg) == 2 * cfg.SOLVER.IMS_PER_BATCH
    cfg2, _ = _build(os.path.join(AL_DIR, "occluded_duke_osnet_x0_25_cpu_no_obc.yml"))
    assert images_per_step(cfg2) == cfg2.SOLVER.IMS_PER_BATCH


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, AL_DIR) for p in CONFIGS])
def test_every_config_builds_trains_and_tests(path):
    from fastreid.utils.events import EventStorage
    cfg, model = _build(path)
    model.train()
    with EventStorage(0):
        losses = model(_batch())
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        assert model(_batch()).shape[0] == 8


# ----------------------------------------------------------------------------------------------
# Occluded variants of any dataset, robustness, saliency

def test_occluded_splits_are_deterministic_cached_and_keep_labels(tmp_path):
    from fastreid.config import get_cfg
    from occreid.fastreid import add_occreid_config
    from occreid.fastreid.trainer import occluded_splits
    src = []
    for i in range(4):
        p = tmp_path / "src" / f"{i:04d}_c1s1_000001_00.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        _image(i).save(p)
        src.append((str(p), i, 1))
    cfg = add_occreid_config(get_cfg())
    cfg.DATASETS.OCCLUSION.ENABLED = True
    cfg.DATASETS.OCCLUSION.AREA = 0.2
    cfg.DATASETS.OCCLUSION.CACHE_DIR = str(tmp_path / "cache")
    q, g = occluded_splits(cfg, "Toy", src, src[:2])
    assert g == src[:2]                                             # the gallery stays clean by default
    assert [(pid, cam) for _, pid, cam in q] == [(pid, cam) for _, pid, cam in src]
    first = [np.asarray(Image.open(p)) for p, _, _ in q]
    for (p, _, _), (s, _, _) in zip(q, src):
        changed = np.any(np.asarray(Image.open(p)).astype(int) != np.asarray(Image.open(s)).astype(int), axis=2)
        assert changed.sum() == pytest.approx(0.2 * 128 * 64, rel=0.1)
    # a second call reuses the cache; a new cache dir redraws the same occlusions
    mtimes = [os.path.getmtime(p) for p, _, _ in q]
    q2, _ = occluded_splits(cfg, "Toy", src, src[:2])
    assert [os.path.getmtime(p) for p, _, _ in q2] == mtimes
    cfg.DATASETS.OCCLUSION.CACHE_DIR = str(tmp_path / "cache2")
    q3, _ = occluded_splits(cfg, "Toy", src, src[:2])
    assert all(np.array_equal(a, np.asarray(Image.open(p))) for a, (p, _, _) in zip(first, q3))
    cfg.DATASETS.OCCLUSION.SEED = 1
    q4, _ = occluded_splits(cfg, "Toy", src, src[:2])
    assert not all(np.array_equal(a, np.asarray(Image.open(p))) for a, (p, _, _) in zip(first, q4))
    cfg.DATASETS.OCCLUSION.SPLITS = ["query", "probe"]
    with pytest.raises(ValueError, match="probe"):
        occluded_splits(cfg, "Toy", src, src)
    (tmp_path / "src" / "bad.jpg").write_bytes(b"not a jpeg")
    cfg.DATASETS.OCCLUSION.SPLITS = ["query"]
    with pytest.raises(OSError, match="bad.jpg"):
        occluded_splits(cfg, "Toy", [(str(tmp_path / "src" / "bad.jpg"), 0, 0)], [])


def test_grad_cam_maps_of_an_embedding_model():
    from occreid.evaluation.saliency import draw_saliency_grid, grad_cam_maps, last_backbone_stage
    cfg, model = _build(os.path.join(AL_DIR, "occluded_duke_osnet_x0_25_cpu.yml"))
    assert last_backbone_stage(model) is model.backbone.conv5
    images = _batch(2)["images"]
    maps = grad_cam_maps(model, images)
    assert maps.shape == (2, 128, 64) and maps.min() >= 0 and maps.max() <= 1 and maps.std() > 0


@pytest.mark.slow
def test_robustness_curve_and_saliency_on_real_occluded_duke(real_data_root, tmp_path, monkeypatch):
    """The robustness curve of the MSMT17 OSNet x0.25 (zero-shot, AlignedReID features) on 20 real query
    identities: occluding the query images hurts; and the saliency command's grid."""
    import sys
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import robustness_curve
    from occreid.fastreid.cli import main
    monkeypatch.setenv("FASTREID_DATASETS", real_data_root)
    cfg = os.path.join(AL_DIR, "occluded_duke_osnet_x0_25_cpu.yml")
    rows = robustness_curve.main(["--config-file", cfg, "--areas", "0", "0.4", "--out", str(tmp_path / "rob"),
                                  "DATASETS.SUBSET.TEST_IDS", "20", "DATASETS.SUBSET.MODE", "random",
                                  "DATASETS.OCCLUSION.CACHE_DIR", str(tmp_path / "cache"), "DATALOADER.NUM_WORKERS", "1"])
    clean, occluded = rows[0], rows[1]
    assert occluded[3] < clean[3]                                    # mAP drops with 40 % of each query hidden
    assert (tmp_path / "rob" / "robustness.png").stat().st_size > 1000
    main(["saliency", "--config-file", cfg, "--dataset", "OccludedDuke", "--num-queries", "2",
          "--out", str(tmp_path / "sal.png"), "MODEL.DEVICE", "cpu"])
    assert Image.open(tmp_path / "sal.png").size == (60 + 4 * 64 + 6, 2 * 130 + 14)


@pytest.mark.parametrize("norm", [True, False])
def test_local_norm_switch_unit_stripes_and_no_saturation(norm):
    """MODEL.ALIGNED.LOCAL_NORM: each stripe L2-normalised (AlignedReID's reference code), so Eq. 1 cannot saturate.
    Without it (the defect of issue 29: median ||f_i - g_j|| 8.8, 91 % of the cells above 0.99) the stripes are
    not unit vectors and, on OSNet's un-normalised features, most cells of Eq. 1's matrix sit near 1."""
    cfg, model = _build(os.path.join(AL_DIR, "occluded_duke_osnet_x0_25_cpu.yml"),
                        ["MODEL.ALIGNED.LOCAL_NORM", str(norm)])
    assert model.local_norm is norm
    model.eval()
    with torch.no_grad():
        feats = model(_batch(6, 256, 128))
    local = feats[:, 128:].reshape(6, 16, 128)
    norms = local.norm(dim=-1)
    d = stripe_distance(local[:3], local[3:])
    if norm:
        torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-5)
        assert d.max() <= math.tanh(1.0) + 1e-6        # ||f_i - g_j|| <= 2
    else:
        assert (norms - 1).abs().max() > 0.1


def test_local_norm_keeps_the_local_triplet_informative_on_real_images(real_data_root):
    """On 16 real Occluded-Duke training images with the MSMT17 OSNet x0.25 (the CPU config's starting weights), in
    training mode (the local branch's BatchNorm on batch statistics, as the local triplet sees it), the local
    distances of the batch spread out with normalised stripes: no cell of Eq. 1 near 1 and a range of pair
    distances (coefficient of variation) larger than without; without, most cells saturate (issue 29)."""
    from occreid.data import parse_occluded_duke
    from fastreid.data.transforms import build_transforms
    from fastreid.data.data_utils import read_image
    train, _, _ = parse_occluded_duke(real_data_root)
    items = train[:16]
    out = {}
    for norm in (True, False):
        cfg, model = _build(os.path.join(AL_DIR, "occluded_duke_osnet_x0_25_cpu.yml"),
                            ["MODEL.ALIGNED.LOCAL_NORM", str(norm), "MODEL.BACKBONE.PRETRAIN", "True",
                             "MODEL.BACKBONE.PRETRAIN_PATH",
                             os.path.join(real_data_root, "weights", "osnet_x0_25_msmt17.pth")])
        from fastreid.modeling import build_model
        torch.manual_seed(0)
        model = build_model(cfg).train()
        tf = build_transforms(cfg, is_train=False)
        images = torch.stack([tf(read_image(p)) for p, _, _ in items])
        with torch.no_grad():
            _, local, _ = model.features((images - model.pixel_mean) / model.pixel_std)
        cells = stripe_distance(local[:, None], local[None, :])
        dist = aligned_local_distance(local, local)
        off = dist[~torch.eye(16, dtype=torch.bool)]
        out[norm] = ((cells > 0.99).float().mean().item(), (off.std() / off.mean()).item())
    print(out)
    saturated_on, spread_on = out[True]
    saturated_off, spread_off = out[False]
    assert saturated_on < 0.01 and saturated_off > 0.5
    assert spread_on > 2 * spread_off
