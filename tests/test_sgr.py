"""SGR (Yan et al., ICCV 2021) in FastReID: DNL placement, the head, Compound Batch Erasing in the
training step, the loss of Eq. 5 and its Table 5 switches, momentum-effect elimination at test, every
paper / ablation config, and an end-to-end run on real Occluded-Duke."""

import glob
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_osnet_cfg, train_on_real_subset
from occreid.layers import DNLBlock
from occreid.losses import bed_loss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SGR_CONFIGS = os.path.join(REPO, "projects", "SGR", "configs")
CONFIGS = sorted(p for p in glob.glob(os.path.join(SGR_CONFIGS, "**", "*.yml"), recursive=True)
                 if not os.path.basename(p).startswith("Base-"))
CPU_CONFIG = os.path.join(SGR_CONFIGS, "occluded_duke_osnet_x0_25_cpu.yml")


def _cfg(path=CPU_CONFIG, **over):
    """A config of ``path`` on a randomly initialised OSNet x0.25, 4 classes, CPU."""
    cfg = tiny_osnet_cfg(path)
    if cfg.MODEL.META_ARCHITECTURE == "SGR":
        cfg.MODEL.SGR.DNL.LAYERS = [0, 0, 2, 0]  # OSNet's conv4 has two blocks
    cfg.merge_from_list([x for kv in over.items() for x in kv])
    return cfg


def _build(**over):
    from fastreid.modeling import build_model
    return build_model(_cfg(**over))


def _batch(b=8):
    g = torch.Generator().manual_seed(1)
    return {"images": torch.rand(b, 3, 128, 64, generator=g) * 255, "targets": torch.arange(b // 2).repeat_interleave(2)}


def _losses(model, batch):
    from fastreid.utils.events import EventStorage
    with EventStorage(0):
        return model({k: v.clone() for k, v in batch.items()})


# ----------------------------------------------------------------------------------------------
# DNL-enabled backbone

def test_dnl_blocks_replace_fastreid_non_local_blocks_in_resnet50():
    from fastreid.layers import Non_local
    from fastreid.modeling.backbones import build_backbone
    from occreid.fastreid.sgr import insert_dnl_blocks
    cfg = _cfg(os.path.join(SGR_CONFIGS, "occluded_duke_r50.yml"))
    cfg.MODEL.BACKBONE.NAME, cfg.MODEL.BACKBONE.DEPTH, cfg.MODEL.BACKBONE.FEAT_DIM = "build_resnet_backbone", "50x", 2048
    torch.manual_seed(0)
    backbone = build_backbone(cfg).eval()
    assert len(backbone.NL_2) == 2 and len(backbone.NL_3) == 3  # FastReID's placement, WITH_NL
    x = torch.rand(2, 3, 64, 32)
    with torch.no_grad():
        before = backbone(x)
    insert_dnl_blocks(backbone, [0, 2, 3, 0])
    assert not any(isinstance(m, Non_local) for m in backbone.modules())
    assert [type(m) for m in backbone.NL_2] == [DNLBlock] * 2 and backbone.NL_2_idx == [2, 3]
    assert [type(m) for m in backbone.NL_3] == [DNLBlock] * 3 and backbone.NL_3_idx == [3, 4, 5]
    assert backbone.NL_2[0].query.in_channels == 512 and backbone.NL_3[0].query.in_channels == 1024
    # FastReID's Non_local and our DNL both start as the identity
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), before)
    with pytest.raises(ValueError, match="4 DNL blocks in layer4, which has 3"):
        insert_dnl_blocks(build_backbone(cfg), [0, 0, 0, 4])


def test_dnl_blocks_in_osnet_after_the_last_blocks_of_a_stage():
    from fastreid.modeling.backbones import build_backbone
    from occreid.fastreid.sgr import insert_dnl_blocks
    torch.manual_seed(0)
    backbone = build_backbone(_cfg()).eval()
    x = torch.rand(2, 3, 64, 32)
    with torch.no_grad():
        before = backbone(x)
    insert_dnl_blocks(backbone, [0, 1, 2, 0])
    kinds = lambda stage: [type(m).__name__ for m in stage]  # noqa: E731
    assert kinds(backbone.conv3) == ["OSBlock", "OSBlock", "DNLBlock", "Sequential"]
    assert kinds(backbone.conv4) == ["OSBlock", "DNLBlock", "OSBlock", "DNLBlock"]
    assert backbone.conv3[2].query.in_channels == 96 and backbone.conv4[1].query.in_channels == 128
    with torch.no_grad():
        torch.testing.assert_close(backbone(x), before)
    with pytest.raises(ValueError, match="4 counts"):
        insert_dnl_blocks(backbone, [0, 2, 3])
    with pytest.raises(ValueError, match="cannot place DNL blocks in a Linear"):
        insert_dnl_blocks(torch.nn.Linear(2, 2), [0, 2, 3, 0])


def test_dnl_forward_is_eq1_explicitly():
    """The fused forward equals x + BN(W_o sum_j w(f_i, f_j) W_v f_j) with the explicit Eq. 1 attention."""
    torch.manual_seed(0)
    blk = DNLBlock(8)
    torch.nn.init.normal_(blk.bn.weight)
    blk.eval()
    x = torch.randn(2, 8, 5, 3)
    v = blk.value(x).flatten(2)
    ref = x + blk.bn(blk.out(torch.bmm(v, blk.attention(x).transpose(1, 2)).view(2, -1, 5, 3)))
    torch.testing.assert_close(blk(x), ref, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# The meta-architecture

def test_sgr_with_every_component_off_is_fastreids_baseline():
    """Table 5 row 1 (FastReID's Baseline, SBS) and SGR with CBE, BED, DNL, RP, ME off and FastReID's
    classifier give the same losses for the same weights and batch: the rows differ only by their switches."""
    torch.manual_seed(0)
    off = {"INPUT.CBE.ENABLED": False, "MODEL.SGR.DNL.ENABLED": False, "MODEL.SGR.RP.ENABLED": False,
           "MODEL.SGR.BED.ENABLED": False, "MODEL.SGR.CLS.NAME": "fastreid", "MODEL.SGR.ME.ENABLED": False}
    from fastreid.modeling import build_model
    sgr = build_model(_cfg(os.path.join(SGR_CONFIGS, "ablation", "row2_cbe.yml"), **off)).train()
    base = build_model(_cfg(os.path.join(SGR_CONFIGS, "ablation", "row1_baseline.yml"))).train()
    assert type(base).__name__ == "Baseline" and type(sgr).__name__ == "SGR"
    state = {k.replace("heads.bottleneck.", "heads.bottleneck.0.").replace("heads.classifier.", "heads."): v
             for k, v in sgr.state_dict().items() if "momentum_mean" not in k}
    base.load_state_dict(state)
    b = _batch()
    ls, lb = _losses(sgr, b), _losses(base, b)
    assert set(ls) == {"loss_cls", "loss_triplet_gf"} and set(lb) == {"loss_cls", "loss_triplet"}
    assert ls["loss_cls"].item() == pytest.approx(lb["loss_cls"].item(), rel=1e-5)
    assert ls["loss_triplet_gf"].item() == pytest.approx(lb["loss_triplet"].item(), rel=1e-5)
    sgr.eval(), base.eval()
    with torch.no_grad():
        torch.testing.assert_close(sgr(_batch()["images"]), base(_batch()["images"]))


def test_compound_batch_erasing_in_the_training_step():
    """The backbone sees [RE(X); BcE(X)]: with RE probability 0 the first half is X; the second half has
    one stripe (a sixth, seventh or eighth of the height) at the pixel mean (0 after normalisation) in
    every image, the rest equal to X; labels are repeated."""
    torch.manual_seed(0)
    model = _build(**{"INPUT.CBE.RE_PROB": 0.0}).train()
    seen = {}
    model.backbone.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0].detach().clone()))
    model.heads.register_forward_hook(lambda m, inp, out: seen.update(t=inp[1].clone()))
    b = _batch()
    _losses(model, b)
    x = (b["images"] - model.pixel_mean) / model.pixel_std
    full = seen["x"]
    assert full.shape == (16, 3, 128, 64)
    assert seen["t"].tolist() == b["targets"].tolist() * 2
    torch.testing.assert_close(full[:8], x)
    erased_rows = (full[8:] != x).any(dim=(0, 1, 3)).nonzero().flatten()
    top, bottom = erased_rows.min().item(), erased_rows.max().item() + 1
    assert bottom - top in {128 // s for s in (6, 7, 8)} | {128 // s + 1 for s in (6, 7, 8)}
    assert torch.all(full[8:, :, top:bottom].abs() < 1e-5)  # the same stripe in every image
    torch.testing.assert_close(full[8:, :, :top], x[:, :, :top])
    torch.testing.assert_close(full[8:, :, bottom:], x[:, :, bottom:])


def test_cbe_refuses_pipeline_random_erasing_and_head_must_be_sgrhead():
    with pytest.raises(ValueError, match="INPUT.REA.ENABLED False"):
        _build(**{"INPUT.REA.ENABLED": True})
    with pytest.raises(ValueError, match="MODEL.HEADS.NAME SGRHead"):
        _build(**{"MODEL.HEADS.NAME": "EmbeddingHead"})
    with pytest.raises(ValueError, match="MODEL.SGR.CLS.NAME"):
        _build(**{"MODEL.SGR.CLS.NAME": "softmax"})
    with pytest.raises(AssertionError, match="Non-existent key: MODEL.SGR.BED.BETA"):
        _cfg(**{"MODEL.SGR.BED.BETA": 0.5})  # unknown keys fail (yacs)


def _bed_reference(z, y, alpha, reduction="pairs"):
    """Eq. 3 pair by pair in numpy (float64), then the batch reduction: an independent reference."""
    z, y = z.detach().double().numpy(), y.numpy()
    b = len(z)
    per_anchor, pairs = [], []
    for i in range(b):
        pos, neg = [], []
        for j in range(b):
            if i == j:
                continue
            e = math.exp(-alpha * np.linalg.norm(z[i] - z[j]))
            (pos if y[i] == y[j] else neg).append(1 - e if y[i] == y[j] else e)
        pairs += pos + neg
        per_anchor.append((sum(pos) + sum(neg), np.mean(pos) + np.mean(neg) if pos and neg else None))
    if reduction == "sum":
        return np.mean([a for a, _ in per_anchor])
    if reduction == "balanced":
        return np.mean([b_ for _, b_ in per_anchor if b_ is not None])
    return np.mean(pairs)


def _ce_reference(logits, y, eps=0.1):
    """Label-smoothing CE as FastReID defines it: (1 - eps) on the target, eps / (N - 1) on the others."""
    logp = torch.log_softmax(logits.double(), 1)
    n = logits.shape[1]
    q = torch.full_like(logp, eps / (n - 1))
    q[torch.arange(len(y)), y] = 1 - eps
    return float(-(q * logp).sum(1).mean().detach())


def test_eq5_loss_terms_by_hand():
    """L = L_bed^rpf + L_bed^gf + L_c (Eq. 5). References are computed from the backbone map F by the
    formulas, not by the head: z = GeM(F) (the pooled feature, not the BNNeck output), f_r = (W_v F)
    softmax(W_m F)^T (Eq. 2), Eq. 3 pair by pair on the l2-normalised features, mean over the pairs;
    L_c = sum over the H = 2 heads of label-smoothing CE on tau <b / |b|, w / (|w| + gamma)>."""
    torch.manual_seed(0)
    model = _build(**{"INPUT.CBE.ENABLED": False}).train()
    b = _batch()
    losses = _losses(model, b)
    assert set(losses) == {"loss_cls", "loss_bed_gf", "loss_bed_rpf"}  # Eq. 5: no CE on f_r by default
    y = b["targets"]
    with torch.no_grad():
        fmap = model.backbone((b["images"] - model.pixel_mean) / model.pixel_std)
        p = float(model.heads.pool_layer.p)
        z = fmap.clamp(min=1e-6).pow(p).mean((2, 3)).pow(1 / p)          # GeM
        rp = model.heads.rp
        v = torch.einsum("oc,bchw->bohw", rp.value.weight[:, :, 0, 0], fmap).flatten(2)
        m = torch.softmax(torch.einsum("c,bchw->bhw", rp.mask.weight[0, :, 0, 0], fmap).flatten(1), 1)
        f_r = (v * m[:, None]).sum(2)                                      # Eq. 2
        # the BNNeck in training mode: batch statistics, FastReID's frozen zero bias
        bn = model.heads.bottleneck
        bnz = (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + bn.eps) * bn.weight
        ws = model.heads.classifier.multihead.weight.chunk(2, dim=1)  # H = 2 heads of D / 2 channels
    norm = lambda t: t / t.norm(dim=1, keepdim=True)
    assert losses["loss_bed_gf"].item() == pytest.approx(_bed_reference(norm(z), y, 0.3), rel=1e-4)
    assert losses["loss_bed_rpf"].item() == pytest.approx(_bed_reference(norm(f_r), y, 0.3), rel=1e-4)
    heads = bnz.chunk(2, dim=1)
    expected = sum(_ce_reference(16.0 * norm(h) @ (w / (w.norm(dim=1, keepdim=True) + 1 / 32)).t(), y)
                   for h, w in zip(heads, ws))
    assert losses["loss_cls"].item() == pytest.approx(expected, rel=1e-4)
    # the f_r identity loss (the Fig. 2 caption's reading) is an option
    assert set(_losses(_build(**{"MODEL.SGR.RP.CLS": True}).train(), b)) == {
        "loss_cls", "loss_cls_rpf", "loss_bed_gf", "loss_bed_rpf"}
    # Table 5 switches change the terms
    assert set(_losses(_build(**{"MODEL.SGR.RP.ENABLED": False}).train(), b)) == {"loss_cls", "loss_bed_gf"}
    assert set(_losses(_build(**{"MODEL.SGR.BED.ENABLED": False}).train(), b)) == {
        "loss_cls", "loss_triplet_gf", "loss_triplet_rpf"}
    # alpha scales the exponent (Eq. 3); the reductions
    for over, alpha, red in (({"MODEL.SGR.BED.ALPHA": 1.0}, 1.0, "pairs"),
                             ({"MODEL.SGR.BED.REDUCTION": "sum"}, 0.3, "sum"),
                             ({"MODEL.SGR.BED.REDUCTION": "balanced"}, 0.3, "balanced")):
        m2 = _build(**{"INPUT.CBE.ENABLED": False, **over}).train()
        m2.load_state_dict(model.state_dict())
        assert _losses(m2, b)["loss_bed_gf"].item() == pytest.approx(_bed_reference(norm(z), y, alpha, red), rel=1e-4)


def test_gradients_reach_every_sgr_parameter():
    """Heads (GeM p, BNNeck, multi-head classifier, RP) and DNL blocks all learn from Eq. 5."""
    torch.manual_seed(0)
    model = _build(**{"MODEL.SGR.RP.CLS": True}).train()

    def no_grad():
        sum(_losses(model, _batch()).values()).backward()
        own = {n: p for n, p in model.named_parameters() if p.requires_grad
               and (not n.startswith("backbone.") or n.startswith(("backbone.conv4.1.", "backbone.conv4.3.")))}
        assert any("conv4.1.query" in n for n in own) and any("heads.rp." in n for n in own)
        assert any("heads.classifier." in n for n in own) and "heads.pool_layer.p" in own
        assert any("heads.rp_classifier." in n for n in own) and "heads.rp_bottleneck.weight" in own
        return [n for n, p in own.items() if p.grad is None or p.grad.abs().sum() == 0]

    # a DNL block's output BN starts at zero: its weight gets a gradient, the convolutions before it not yet
    missing = no_grad()
    assert missing and all(n.startswith("backbone.conv4.") and ".bn." not in n for n in missing), missing
    with torch.no_grad():
        for blk in (model.backbone.conv4[1], model.backbone.conv4[3]):
            torch.nn.init.ones_(blk.bn.weight)
    model.zero_grad()
    assert no_grad() == []


def test_momentum_mean_is_tracked_in_training_and_subtracted_at_test(tmp_path):
    torch.manual_seed(0)
    model = _build(**{"INPUT.CBE.ENABLED": False}).train()
    b = _batch()
    z = {}
    model.heads.register_forward_hook(lambda m, inp, out: z.update(z=out["features"].detach().clone())
                                      if isinstance(out, dict) and "z" not in z else None)
    _losses(model, b)
    mu = model.heads.momentum_mean.mean
    torch.testing.assert_close(mu, 0.1 * F.normalize(z["z"]).mean(0))  # Eq. 6 from mu_0 = 0, beta = 0.9
    with torch.no_grad():  # FastReID's PreciseBN runs training-mode forwards without gradients
        _losses(model, b)
    torch.testing.assert_close(model.heads.momentum_mean.mean, mu)
    model.eval()
    with torch.no_grad():
        feats = model(b["images"].clone())
        model.heads.me = False
        plain = model(b["images"].clone())
    torch.testing.assert_close(feats, F.normalize(plain) - mu)
    # the mean is part of the checkpoint and comes back
    path = tmp_path / "sgr.pth"
    torch.save({"model": model.state_dict()}, path)
    from occreid.fastreid import check_checkpoint_matches
    from occreid.fastreid.trainer import load_checked_weights
    fresh = _build(**{"MODEL.HEADS.NUM_CLASSES": 0})
    check_checkpoint_matches(fresh, str(path))
    load_checked_weights(fresh, str(path))
    torch.testing.assert_close(fresh.heads.momentum_mean.mean, mu)


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, REPO) for p in CONFIGS])
def test_every_paper_and_ablation_config_builds_trains_and_tests(path):
    from fastreid.modeling import build_model
    torch.manual_seed(0)
    cfg = _cfg(path)
    model = build_model(cfg).train()
    losses = _losses(model, _batch())
    assert losses and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    feats = model.eval()(_batch()["images"])
    assert feats.shape == (8, 128) and torch.isfinite(feats).all()


@pytest.mark.slow
def test_sgr_trains_and_evaluates_on_real_occluded_duke_with_and_without_reranking(real_data_root, tmp_path, monkeypatch):
    from fastreid.evaluation import inference_on_dataset
    from occreid.fastreid import OccReIDTrainer

    monkeypatch.setenv("FASTREID_DATASETS", real_data_root)
    trainer, results, losses = train_on_real_subset(CPU_CONFIG, real_data_root, tmp_path)
    assert np.mean(losses[-4:]) < np.mean(losses[:4]), losses
    for key in ("Rank-1", "mAP", "mINP"):
        assert math.isfinite(results[key]) and 0 <= results[key] <= 100
    mu = trainer.model.heads.momentum_mean.mean
    assert mu.norm() > 0.1  # tracked over the run (unit-norm features, beta = 0.9)
    # the evaluation features are the de-biased ones; re-ranking runs on them
    cfg = trainer.cfg.clone()
    cfg.defrost()
    cfg.TEST.RERANK.ENABLED = True
    cfg.DATASETS.SUBSET.TEST_IDS = 12  # a smaller test set for the two extra evaluations
    loader, evaluator = OccReIDTrainer.build_evaluator(cfg, "OccludedDuke")
    reranked = inference_on_dataset(trainer.model, loader, evaluator)
    feats = torch.cat([p["feats"] for p in evaluator._predictions])
    assert feats.shape[1] == 128
    trainer.model.heads.me = False
    loader, evaluator = OccReIDTrainer.build_evaluator(cfg, "OccludedDuke")
    inference_on_dataset(trainer.model, loader, evaluator)
    plain = torch.cat([p["feats"] for p in evaluator._predictions])
    torch.testing.assert_close(feats, F.normalize(plain) - mu, rtol=1e-4, atol=1e-5)
    for key in ("Rank-1", "mAP"):
        assert math.isfinite(reranked[key]) and 0 <= reranked[key] <= 100


def test_cbe_random_erasing_fills_the_pixel_mean():
    """The RE half of X_full is erased with the ImageNet mean (INPUT.CBE.VALUE, Zhong et al.), i.e. exactly
    0 after the model's normalisation; the BcE half erases one stripe of every image the same way."""
    torch.manual_seed(0)
    model = _build(**{"INPUT.CBE.RE_PROB": 1.0}).train()
    seen = {}
    h = model.backbone.register_forward_pre_hook(lambda m, i: seen.update(x=i[0]))
    b = _batch()
    try:
        _losses(model, b)
    finally:
        h.remove()
    x = seen["x"]                                             # normalised [RE(X); BcE(X)]
    ref = (b["images"] - model.pixel_mean) / model.pixel_std  # normalised X
    assert x.shape[0] == 16
    for half in (x[:8], x[8:]):
        changed = (half - ref).abs().amax(1) > 1e-4           # (B, H, W) erased positions
        assert changed.any(dim=(1, 2)).all()                   # every image erased (p = 1; BcE: always)
        assert torch.all(half.permute(1, 0, 2, 3)[:, changed].abs() < 1e-4)  # erased = the mean = 0


def test_cbe_second_half_is_bce_or_the_re_control():
    """INPUT.CBE.SECOND bce (paper): the second half erases the same full-width stripe in every image;
    re (the control): a second, independent random-erasing draw per image, [RE(X); RE(X)]."""
    b = _batch()
    ref = None
    for second in ("bce", "re"):
        torch.manual_seed(0)
        model = _build(**{"INPUT.CBE.RE_PROB": 1.0, "INPUT.CBE.SECOND": second}).train()
        seen = {}
        h = model.backbone.register_forward_pre_hook(lambda m, i: seen.update(x=i[0]))
        try:
            _losses(model, b)
        finally:
            h.remove()
        ref = (b["images"] - model.pixel_mean) / model.pixel_std
        changed = ((seen["x"][8:] - ref).abs().amax(1) > 1e-4)          # (B, H, W)
        same_in_all = bool((changed == changed[:1]).all())
        full_rows = bool((changed.all(2) == changed.any(2)).all())
        if second == "bce":
            assert same_in_all and full_rows
        else:
            assert not same_in_all and not full_rows


def test_test_feat_bnneck_gives_the_bnneck_output():
    """MODEL.SGR.TEST_FEAT bnneck: the test feature is BN(z) (eval-mode BNNeck of the GeM feature),
    whatever ME says; auto with ME: z / |z| - mu."""
    torch.manual_seed(0)
    auto = _build().eval()
    bnneck = _build(**{"MODEL.SGR.TEST_FEAT": "bnneck"}).eval()
    bnneck.load_state_dict(auto.state_dict())
    b = _batch()
    with torch.no_grad():
        auto.heads.momentum_mean.mean.fill_(0.02)
        bnneck.heads.momentum_mean.mean.fill_(0.02)
        fresh = lambda: {k: v.clone() for k, v in b.items()}  # FastReID normalises the images in place
        fmap = auto.backbone(auto.preprocess_image(fresh()))
        z = auto.heads.pool_layer(fmap)
        bn = auto.heads.bottleneck
        expected = ((z[..., 0, 0] - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps)) * bn.weight + bn.bias
        torch.testing.assert_close(bnneck(fresh()), expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(auto(fresh()), F.normalize(z[..., 0, 0], dim=1) - 0.02, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="TEST_FEAT"):
        _build(**{"MODEL.SGR.TEST_FEAT": "logits"})
