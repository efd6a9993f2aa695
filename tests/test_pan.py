"""PAN (Ye et al., "Part-aware network"): Eq. 1-3 against hand-computed values, the buffer layers, the
shared FC, gradients to the mask generator and the buffer branch, Eq. 5 against an independent reference,
every paper / ablation config (ResNet-50 as written for the ablations), the cost figures, and an end-to-end
run on real Occluded-Duke."""

import glob
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import build_cfg_and_model as _build, train_on_real_subset
from occreid.layers import LocalEmbedding, MaskGenerator, PANBranches, PANBuffer, weighted_mask_pooling

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAN_DIR = os.path.join(REPO, "projects", "PAN", "configs")
CONFIGS = sorted(glob.glob(os.path.join(PAN_DIR, "**", "*.yml"), recursive=True))
ABL = os.path.join(PAN_DIR, "ablation")


# ----------------------------------------------------------------------------------------------
# Eq. 1-3 and the building blocks

def test_weighted_pooling_hand_case_with_negative_masks():
    # one channel, 2 x 2 map; mask 0 positive, mask 1 with negative values summing to 0
    feat = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])                 # (1, 1, 2, 2)
    masks = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]],                 # sum F m = 1 + 4 = 5, sum |m| = 2
                           [[1.0, -1.0], [2.0, -2.0]]]])             # sum F m = 1 - 2 + 6 - 8 = -3, sum |m| = 6
    out = weighted_mask_pooling(feat, masks)
    assert out.shape == (1, 2, 1)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([5 / 2, -3 / 6]))
    # a mask that is 0 everywhere gives 0 (eps in the denominator), not NaN
    assert weighted_mask_pooling(feat, torch.zeros(1, 1, 2, 2)).item() == 0.0
    # two channels: each channel pooled with the same weights
    feat2 = torch.cat([feat, 10 * feat], dim=1)
    torch.testing.assert_close(weighted_mask_pooling(feat2, masks)[0, 0], torch.tensor([2.5, 25.0]))
    with pytest.raises(ValueError, match="spatial"):
        weighted_mask_pooling(feat, torch.ones(1, 2, 3, 2))


def test_weighted_pooling_with_softmax_masks_is_the_usual_weighted_mean():
    torch.manual_seed(0)
    feat, logits = torch.randn(2, 3, 4, 2), torch.randn(2, 5, 4, 2)
    m = torch.softmax(logits, dim=1)  # non-negative: sum |m| = sum m
    ref = (feat.unsqueeze(1) * m.unsqueeze(2)).sum((3, 4)) / m.sum((2, 3)).unsqueeze(2)
    torch.testing.assert_close(weighted_mask_pooling(feat, m), ref)


def test_mask_generator_is_a_1x1_conv_with_optional_softmax():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 4, 3)
    g = MaskGenerator(6, 5)
    m = g(x)
    torch.testing.assert_close(m, F.conv2d(x, g.conv.weight, g.conv.bias))   # Eq. 1, no softmax
    assert (m < 0).any()                                                     # masks take any sign
    g.softmax = "parts"
    torch.testing.assert_close(g(x).sum(1), torch.ones(2, 4, 3))             # a distribution over the p masks
    g.softmax = "spatial"
    torch.testing.assert_close(g(x).sum((2, 3)), torch.ones(2, 5))           # a distribution over positions
    with pytest.raises(ValueError, match="softmax"):
        MaskGenerator(6, 5, softmax="sigmoid")


def test_local_embedding_shared_and_not_shared():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 8)
    shared = LocalEmbedding(8, 5, num_parts=4, shared=True)
    assert len(shared.fcs) == 1
    torch.testing.assert_close(shared(x), x @ shared.fcs[0].weight.t())
    separate = LocalEmbedding(8, 5, num_parts=4, shared=False)
    assert len(separate.fcs) == 4
    out = separate(x)
    for i in range(4):
        torch.testing.assert_close(out[:, i], x[:, i] @ separate.fcs[i].weight.t())


def _toy_backbone():
    stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    b40 = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
    b50 = nn.Sequential(nn.Conv2d(6, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
    return stem, b40, b50


def test_buffer_layers_are_trained_copies_of_the_pretrained_units():
    stem, b40, b50 = _toy_backbone()
    buf = PANBuffer(b40, b50, mask_source="conv41", local_source="conv51")
    assert buf.conv41 is not b40 and buf.conv51 is not b50
    torch.testing.assert_close(buf.conv51[0].weight, b50[0].weight)  # same start
    assert buf.conv51[0].weight.data_ptr() != b50[0].weight.data_ptr()  # own parameters
    assert PANBuffer(b40, b50, "conv50", "conv50").conv51 is None
    with pytest.raises(ValueError, match="mask source"):
        PANBuffer(b40, b50, "conv60", "conv51")


def test_gradients_reach_mask_generator_buffer_and_backbone():
    torch.manual_seed(0)
    stem, b40, b50 = _toy_backbone()
    pan = PANBranches(stem, b40, b50, 6, 8, num_masks=3, global_dim=4, local_dim=2)
    out = pan(torch.randn(4, 3, 8, 4))
    assert out["global"].shape == (4, 4) and out["local"].shape == (4, 3, 2) and out["masks"].shape == (4, 3, 8, 4)
    # local features only: mask generator and buffer Conv51 learn, and Conv40 (which feeds Conv51)
    out["local"].sum().backward()
    for name, mod in {"mask generator": pan.head.mask_generator, "Conv51": pan.buffer.conv51, "Conv40": b40,
                      "Conv50 (masks come from it)": b50}.items():
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mod.parameters() if p.requires_grad), name
    # the global feature does not reach the buffer layer
    pan.zero_grad(set_to_none=True)
    out = pan(torch.randn(4, 3, 8, 4))
    out["global"].sum().backward()
    assert all(p.grad is None for p in pan.buffer.conv51.parameters())


# ----------------------------------------------------------------------------------------------
# The meta-architecture


def _batch(b=8, h=128, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.rand(b, 3, h, w, generator=g) * 255, "targets": torch.arange(b // 2).repeat_interleave(2)}


@pytest.mark.parametrize("name,unit", [("resnet", "stage"), ("resnet", "block"), ("osnet", "stage"), ("osnet", "block")])
def test_cut_backbone_reproduces_the_backbone(name, unit):
    from occreid.fastreid.pan import cut_backbone
    path = os.path.join(PAN_DIR, "occluded_duke_r50.yml")
    cfg, model = _build(path, resnet=(name == "resnet"))
    model.eval()
    stem, b40, b50 = cut_backbone(model.backbone, unit)
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        torch.testing.assert_close(b50(b40(stem(x))), model.backbone(x))
    if name == "resnet":
        assert (b40, b50) == ((model.backbone.layer3, model.backbone.layer4) if unit == "stage"
                              else (model.backbone.layer4[-2], model.backbone.layer4[-1]))
    # nothing is registered twice: every parameter appears once, under backbone / buffer / heads
    assert {n.split(".")[0] for n, _ in model.named_parameters()} == {"backbone", "buffer", "heads"}


def test_unknown_backbone_and_non_local_are_refused():
    from occreid.fastreid.pan import cut_backbone
    with pytest.raises(ValueError, match="MODEL.PAN.UNIT"):
        cut_backbone(nn.Identity(), "stages")
    with pytest.raises(ValueError, match="Identity"):
        cut_backbone(nn.Identity())
    with pytest.raises(ValueError, match="WITH_NL"):
        _build(os.path.join(PAN_DIR, "occluded_duke_r50.yml"), ["MODEL.BACKBONE.WITH_NL", True], resnet=True)


def _smoothed_ce(logits, y, eps=0.1):
    """Label-smoothing CE written out as FastReID defines it: 1 - eps on the target class, eps / (C - 1) on
    each other class."""
    logp = torch.log_softmax(logits, dim=1)
    c = logits.shape[1]
    q = torch.full_like(logp, eps / (c - 1))
    q[torch.arange(len(y)), y] = 1 - eps
    return -(q * logp).sum(1).mean()


def _soft_margin_batch_hard(f, y):
    """log(1 + exp(d_ap - d_an)) with the hardest positive / negative per anchor (Euclidean)."""
    d = torch.cdist(f, f)
    same = y[:, None] == y[None, :]
    d_ap = torch.where(same, d, torch.full_like(d, -1e9)).amax(1)
    d_an = torch.where(~same, d, torch.full_like(d, 1e9)).amin(1)
    return F.softplus(d_ap - d_an).mean()


def test_eq5_losses_against_an_independent_reference():
    from fastreid.utils.events import EventStorage
    cfg, model = _build(os.path.join(PAN_DIR, "occluded_duke_osnet_x0_25_cpu.yml"))
    model.train()
    b = _batch()
    with EventStorage(0):
        losses = model({k: v.clone() for k, v in b.items()})
    # the reference: the features from the modules, then Eq. 5 written out here
    h = model.heads
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.features(model.preprocess_image({k: v.clone() for k, v in b.items()}))
        g, l = out["global"], out["local"]
        p, n = l.shape[1:]
        g_bn = F.batch_norm(g, None, None, h.global_neck.weight, h.global_neck.bias, training=True, eps=h.global_neck.eps)
        l_bn = F.batch_norm(l.reshape(-1, p * n), None, None, h.local_neck.weight, h.local_neck.bias, training=True,
                            eps=h.local_neck.eps).view(-1, p, n)   # statistics per part and channel
        y = b["targets"]
        l_g = _smoothed_ce(g_bn @ h.global_classifier.weight.t(), y)
        l_l = torch.stack([_smoothed_ce(l_bn[:, i] @ c.weight.t(), y) for i, c in enumerate(h.local_classifiers)]).mean()
        tri = _soft_margin_batch_hard(torch.cat([g, l.flatten(1)], 1), y)
    assert set(losses) == {"loss_cls_global", "loss_cls_local", "loss_triplet"}
    assert losses["loss_cls_global"].item() == pytest.approx(0.5 * l_g.item(), rel=1e-4)
    assert losses["loss_cls_local"].item() == pytest.approx(0.5 * l_l.item(), rel=1e-4)
    assert losses["loss_triplet"].item() == pytest.approx(tri.item(), rel=1e-4)


def test_every_loss_term_reaches_the_backbone_and_every_new_parameter_learns():
    from fastreid.utils.events import EventStorage
    cfg, model = _build(os.path.join(PAN_DIR, "occluded_duke_osnet_x0_25_cpu.yml"))
    model.train()
    fmaps = {}
    hook = model.backbone.conv4.register_forward_hook(lambda m, i, o: fmaps.setdefault("conv40", o))
    with EventStorage(0):
        losses = model(_batch())
    hook.remove()
    for k, v in losses.items():
        (gr,) = torch.autograd.grad(v, fmaps["conv40"], retain_graph=True)
        assert gr.norm() > 0, k
    sum(losses.values()).backward()
    dead = [n for n, p in model.named_parameters()
            if p.requires_grad and not n.startswith("backbone.") and (p.grad is None or p.grad.abs().sum() == 0)]
    assert dead == []


def test_test_feature_is_f_cat_of_the_bnneck_features():
    cfg, model = _build(os.path.join(PAN_DIR, "occluded_duke_osnet_x0_25_cpu.yml"))
    model.eval()
    b = _batch()
    with torch.no_grad():
        feats = model({k: v.clone() for k, v in b.items()})   # preprocess_image normalises in place
        out = model.features(model.preprocess_image(b))
        g, l = model.heads.necks(out["global"], out["local"])
    p, n_g, n_l = cfg.MODEL.PAN.NUM_MASKS, cfg.MODEL.PAN.GLOBAL_DIM, cfg.MODEL.PAN.LOCAL_DIM
    assert feats.shape == (8, n_g + p * n_l)                 # gamma = p n_l / N_g = 7
    assert p * n_l / n_g == 7
    torch.testing.assert_close(feats, torch.cat([g, l.flatten(1)], 1))


# ----------------------------------------------------------------------------------------------
# Every ablation switch, from its config as written (ResNet-50)

TABLE3 = {  # file: (F_g^1, F_g^2)
    "table3_row1_conv40_conv50.yml": ("conv40", "conv50"),
    "table3_row2_conv40_conv51.yml": ("conv40", "conv51"),
    "table3_row3_conv41_conv50.yml": ("conv41", "conv50"),
    "table3_row4_conv41_conv51.yml": ("conv41", "conv51"),
    "table3_row5_conv50_conv50.yml": ("conv50", "conv50"),
    "table3_row6_conv50_conv51.yml": ("conv50", "conv51"),
}


def _watch(model):
    """Record the outputs of Conv40 / Conv50 / the buffers and the inputs of the mask generator and of the
    weighted pooling's feature map (via PANHead's forward)."""
    rec = {}
    mods = {"conv40": model.backbone.layer3, "conv50": model.backbone.layer4,
            "conv41": model.buffer.conv41, "conv51": model.buffer.conv51}
    def hook(key):
        def record(module, inputs, output):
            rec.setdefault(key, output)   # returns None: the output is left as it is
        return record

    hs = [m.register_forward_hook(hook(k)) for k, m in mods.items() if m is not None]
    def masks_hook(module, inputs, output):
        rec.setdefault("mask_in", inputs[0])
        rec.setdefault("masks", output)

    def head_hook(module, inputs, output):
        rec.setdefault("local_map", output["local_map"])

    hs.append(model.heads.pan.mask_generator.register_forward_hook(masks_hook))
    hs.append(model.heads.pan.register_forward_hook(head_hook))
    return rec, hs


@pytest.mark.parametrize("row", sorted(TABLE3))
def test_table3_row_uses_its_mask_and_local_sources(row):
    from fastreid.utils.events import EventStorage
    src1, src2 = TABLE3[row]
    cfg, model = _build(os.path.join(ABL, row), resnet=True)
    assert (model.buffer.conv41 is not None) == (src1 == "conv41")
    assert (model.buffer.conv51 is not None) == (src2 == "conv51")
    assert model.heads.pan.mask_generator.conv.in_channels == (1024 if src1 in ("conv40", "conv41") else 2048)
    model.train()
    rec, hs = _watch(model)
    with EventStorage(0):
        losses = model(_batch(4, 64, 32))
    for h in hs:
        h.remove()
    assert rec["mask_in"] is rec[src1]          # F_g^1
    assert rec["local_map"] is rec[src2]        # F_g^2
    total = sum(losses.values())
    for buf in ("conv41", "conv51"):            # a buffer layer that exists is used and trained
        if buf in rec:
            (g,) = torch.autograd.grad(total, rec[buf], retain_graph=True)
            assert g.norm() > 0, buf


@pytest.mark.parametrize("row,shared", [("table2_not_shared_r50.yml", False), ("table2_not_shared_osnet.yml", False),
                                        ("../occluded_duke_r50.yml", True)])
def test_table2_shared_fc_switch(row, shared):
    from fastreid.utils.events import EventStorage
    cfg, model = _build(os.path.join(ABL, row), resnet=True)
    fc = model.heads.pan.local_fc
    assert len(fc.fcs) == (1 if shared else cfg.MODEL.PAN.NUM_MASKS)
    model.train()
    with EventStorage(0):
        sum(model(_batch(4, 64, 32)).values()).backward()
    for i, lin in enumerate(fc.fcs):             # every FC that exists is used
        assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0, i


@pytest.mark.parametrize("row,softmax", [("table4_softmax.yml", "parts"), ("../occluded_duke_r50.yml", "none")])
def test_table4_softmax_switch(row, softmax):
    cfg, model = _build(os.path.join(ABL, row), resnet=True)
    model.eval()
    rec, hs = _watch(model)
    with torch.no_grad():
        model(_batch(2, 64, 32))
    for h in hs:
        h.remove()
    raw = F.conv2d(rec["mask_in"], model.heads.pan.mask_generator.conv.weight, model.heads.pan.mask_generator.conv.bias)
    expected = torch.softmax(raw, 1) if softmax == "parts" else raw
    torch.testing.assert_close(rec["masks"], expected)


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ABL, "fig*.yml"))), ids=os.path.basename)
def test_fig2_fig3_dimensions(path):
    cfg, model = _build(path, resnet=True)
    p, n_l = cfg.MODEL.PAN.NUM_MASKS, cfg.MODEL.PAN.LOCAL_DIM
    name = os.path.basename(path)
    if name.startswith("fig2"):
        gamma = float(name[len("fig2_gamma_"):-4])
        assert p == 14 and p * n_l / cfg.MODEL.PAN.GLOBAL_DIM == gamma
    else:
        assert p == 8 and n_l == 256
    model.eval()
    with torch.no_grad():
        assert model(_batch(2, 64, 32)).shape == (2, 512 + p * n_l)
    assert model.heads.pan.mask_generator.conv.out_channels == p and len(model.heads.local_classifiers) == p


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, PAN_DIR) for p in CONFIGS])
def test_every_pan_config_builds_trains_and_tests(path):
    from fastreid.utils.events import EventStorage
    cfg, model = _build(path)
    assert cfg.MODEL.META_ARCHITECTURE == "PAN"
    model.train()
    with EventStorage(0):
        losses = model(_batch())
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    with torch.no_grad():
        feats = model(_batch())
    assert feats.shape == (8, cfg.MODEL.PAN.GLOBAL_DIM + cfg.MODEL.PAN.NUM_MASKS * cfg.MODEL.PAN.LOCAL_DIM)


def test_pan_r50_cost_matches_the_paper():
    """Sec. 4: 5.98 GFLOPs for PAN-ResNet-50 at 256 x 128 (the paper's GFLOPs are multiply-adds)."""
    import sys
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    import pan_cost
    model = pan_cost.build(os.path.join(PAN_DIR, "occluded_duke_r50.yml"), [], 702)
    params, flops = pan_cost.count(model)
    assert flops / 2e9 == pytest.approx(5.98, abs=0.03)
    # the buffer layer is a whole copy of conv5_x
    assert params["buffer"] == sum(p.numel() for p in model.backbone.layer4.parameters())


def test_pan_checkpoint_rules(tmp_path):
    from fastreid.modeling import build_model
    from occreid.fastreid import check_checkpoint_matches
    cfg, trained = _build(os.path.join(PAN_DIR, "occluded_duke_osnet_x0_25_cpu.yml"))
    path = tmp_path / "pan.pth"
    torch.save({"model": trained.state_dict()}, path)
    cfg.defrost()
    cfg.MODEL.HEADS.NUM_CLASSES = 0   # --eval-only: only the classifiers differ
    check_checkpoint_matches(build_model(cfg), str(path))
    # a checkpoint of PAN without the buffer layer lacks buffer.conv51.*: not a checkpoint of this PAN
    _, no_buffer = _build(os.path.join(PAN_DIR, "occluded_duke_osnet_x0_25_cpu.yml"), ["MODEL.PAN.LOCAL_SOURCE", "conv50"])
    torch.save({"model": no_buffer.state_dict()}, tmp_path / "no_buffer.pth")
    with pytest.raises(ValueError, match="does not match the model PAN"):
        check_checkpoint_matches(trained, str(tmp_path / "no_buffer.pth"))


# ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_pan_trains_and_evaluates_on_real_occluded_duke(real_data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTREID_DATASETS", real_data_root)
    trainer, results, losses = train_on_real_subset(
        os.path.join(PAN_DIR, "occluded_duke_osnet_x0_25_cpu.yml"), real_data_root, tmp_path)
    assert np.mean(losses[-4:]) < np.mean(losses[:4]), losses
    for key in ("Rank-1", "mAP", "mINP"):
        assert math.isfinite(results[key]) and 0 <= results[key] <= 100


def test_mask_grid_picture(tmp_path):
    from PIL import Image
    from occreid.evaluation.masks import draw_mask_grid, fuse_masks
    paths = []
    for i in range(3):   # plain grey images, so the heat map's colour is what differs
        paths.append(str(tmp_path / f"{i}.jpg"))
        Image.new("RGB", (64, 128), (128, 128, 128)).save(paths[-1])
    masks = np.zeros((3, 4, 16, 8), dtype=np.float32)
    masks[:, 0, :8] = 1.0          # mask 1: upper half
    masks[:, 1, 8:] = -2.0         # mask 2: lower half, negative
    np.testing.assert_allclose(fuse_masks(masks[0])[0, 0], 1.0)
    np.testing.assert_allclose(fuse_masks(masks[0])[15, 0], -2.0)
    out = draw_mask_grid(paths, masks, str(tmp_path / "grid.png"), num_masks=2, captions=["a", "b", "c"])
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    # 3 columns of 64 px after a 48 px label column; rows: image, fused, mask 1, mask 2 (+ caption line)
    assert img.shape[1] == 48 + 3 * 64 and img.shape[0] == 4 * 130 + 14
    # jet: high = red, low = blue. Mask 1 is high in the upper half, mask 2 (negative) high in the upper half
    # too (its upper half, 0, is its maximum); the fused mask (1 on top, -2 below) likewise
    for row in (1, 2, 3):
        tile = img[row * 130:row * 130 + 128, 48:112]
        top, bottom = tile[:56].mean((0, 1)), tile[72:].mean((0, 1))
        assert top[0] > bottom[0] + 40 and bottom[2] > top[2] + 40, (row, top, bottom)
    with pytest.raises(ValueError, match="3 images"):
        draw_mask_grid(paths, masks[:2], str(tmp_path / "bad.png"))
    with pytest.raises(OSError, match="missing.jpg"):
        draw_mask_grid([str(tmp_path / "missing.jpg")], masks[:1], str(tmp_path / "bad.png"))


def test_occreid_masks_command_on_real_queries(real_data_root, tmp_path, monkeypatch):
    """``occreid masks`` on 4 real Occluded-Duke queries with the PAN CPU config (MSMT17 OSNet start)."""
    from PIL import Image
    from occreid.fastreid.cli import main
    monkeypatch.setenv("FASTREID_DATASETS", real_data_root)
    out = tmp_path / "masks.png"
    main(["masks", "--config-file", os.path.join(PAN_DIR, "occluded_duke_osnet_x0_25_cpu.yml"),
          "--dataset", "OccludedDuke", "--num-queries", "4", "--out", str(out), "MODEL.DEVICE", "cpu"])
    w, h = Image.open(out).size
    assert w == 48 + 4 * 64 and h == 5 * 130 + 14
    with pytest.raises(ValueError, match="has no masks"):
        main(["--debug", "masks", "--config-file", os.path.join(REPO, "projects", "BoT", "configs", "occluded_duke_osnet_x0_25_cpu.yml"),
              "--dataset", "OccludedDuke", "--num-queries", "2", "--out", str(tmp_path / "x.png")])


@pytest.mark.parametrize("name,milestones", [("Base-PAN.yml", (60, 90))])
def test_learning_rate_schedule_drops_at_the_papers_epochs(name, milestones):
    """Sec. 3.1: 3.5e-5 -> 3.5e-4 over 20 epochs, x0.1 at epochs 60 and 90, with FastReID's own scheduler and
    its rule (engine/hooks.py LRScheduler: warm-up steps per iteration while iter <= WARMUP_ITERS, then the
    MultiStepLR steps after each epoch)."""
    from fastreid.config import get_cfg
    from fastreid.solver.build import build_lr_scheduler
    import occreid.fastreid  # noqa: F401
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(PAN_DIR, name))
    iters_per_epoch = cfg.SOLVER.WARMUP_ITERS // 20
    # (Base-PAN's 4,880 warm-up iterations are 20 epochs of 244)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.SOLVER.BASE_LR)
    sched = build_lr_scheduler(cfg, opt, iters_per_epoch)
    lr_at_epoch_start = {}
    it = 0
    for epoch in range(cfg.SOLVER.MAX_EPOCH):
        lr_at_epoch_start[epoch] = opt.param_groups[0]["lr"]
        for _ in range(iters_per_epoch):
            it += 1
            if it <= cfg.SOLVER.WARMUP_ITERS:
                sched["warmup_sched"].step()
        if it > cfg.SOLVER.WARMUP_ITERS:   # after_epoch: trainer.iter + 1 (= iterations done) > WARMUP_ITERS
            sched["lr_sched"].step()
    assert lr_at_epoch_start[0] == pytest.approx(3.5e-5, rel=1e-3)
    assert lr_at_epoch_start[21] == pytest.approx(3.5e-4, rel=1e-3)
    first, second = milestones
    assert lr_at_epoch_start[first - 1] == pytest.approx(3.5e-4, rel=1e-3)
    assert lr_at_epoch_start[first] == pytest.approx(3.5e-5, rel=1e-3)
    assert lr_at_epoch_start[second - 1] == pytest.approx(3.5e-5, rel=1e-3)
    assert lr_at_epoch_start[second] == pytest.approx(3.5e-6, rel=1e-3)


def test_global_branch_is_global_max_pooling_of_conv50():
    """PAN's global feature: FC(GMP(F_g^3)), global *max* pooling of Conv50's map (Sec. 3.2), computed by hand from
    the head's maps; average pooling gives another feature (issue 29: avg for max passed every test)."""
    from occreid.layers.pan import PANHead
    torch.manual_seed(0)
    head = PANHead(8, 16, num_masks=3, global_dim=6, local_dim=4).eval()
    maps = {"conv40": torch.randn(2, 8, 8, 4), "conv50": torch.randn(2, 16, 8, 4) * 2,
            "conv41": torch.randn(2, 8, 8, 4), "conv51": torch.randn(2, 16, 8, 4)}
    with torch.no_grad():
        out = head(maps)
        expected = maps["conv50"].flatten(2).max(dim=2).values @ head.global_fc.weight.t()
        avg = maps["conv50"].flatten(2).mean(dim=2) @ head.global_fc.weight.t()
    torch.testing.assert_close(out["global"], expected, rtol=1e-5, atol=1e-6)
    assert (out["global"] - avg).abs().max() > 1e-2
