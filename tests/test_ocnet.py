"""OCNet (Kim et al., ICASSP 2022): modules against hand-computed values, gradients to every branch,
the meta-architecture's losses and Eq. 4 distance, every paper / ablation config, and an end-to-end
run on real Occluded-Duke."""

import glob
import math
import os

import numpy as np
import pytest
import torch

from occreid.layers import (CenterFocusModule, ConverterModule, OCNetBranches, RelationAdaptiveModule,
                            RelationNetwork, center_crop, horizontal_parts)
from conftest import tiny_osnet_cfg, train_on_real_subset
from occreid.losses import separation_loss

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(REPO, "projects", "OCNet", "configs", "**", "*.yml"), recursive=True))


def test_separation_loss_hand_values():
    f_g = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    f_t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])    # cos 1, cos 0
    f_b = torch.tensor([[-1.0, 0.0], [1.0, 1.0]])   # cos -1, cos 1/sqrt(2)
    per = separation_loss(f_g, [f_t, f_b], reduction="none")
    np.testing.assert_allclose(per.numpy(), [2.0 + 0.0, 1.0 + 1.0 + 1 / math.sqrt(2)], rtol=1e-6)
    assert separation_loss(f_g, [f_t, f_b]).item() == pytest.approx(per.mean().item())
    with pytest.raises(ValueError, match="at least one part"):
        separation_loss(f_g, [])
    with pytest.raises(ValueError, match="differ"):
        separation_loss(f_g, [torch.zeros(2, 3)])


def test_center_crop_and_parts_geometry():
    x = torch.arange(16 * 8, dtype=torch.float32).view(1, 1, 16, 8)
    c = center_crop(x, 6)
    assert c.shape == (1, 1, 6, 6) and c[0, 0, 0, 0].item() == 5 * 8 + 1  # rows 5..10, cols 1..6
    assert center_crop(x, 2)[0, 0].tolist() == [[59.0, 60.0], [67.0, 68.0]]  # rows 7-8, cols 3-4
    assert [p.shape[2] for p in horizontal_parts(x, 3)] == [5, 5, 6]
    top, bottom = horizontal_parts(x, 2)
    assert torch.equal(torch.cat([top, bottom], 2), x)
    with pytest.raises(ValueError, match="num_parts"):
        horizontal_parts(x, 17)


def test_cfm_softmax_multiply_add_on_a_tiny_map():
    x = torch.zeros(1, 2, 4, 4)
    x[0, 0, 1, 2] = 2 * math.log(3.0)  # inside the central 2x2 (rows 1-2, cols 1-2)
    x[0, 1, 0, 0] = 100.0              # outside the crop: ignored
    # "mean": one map from the channel means [[0, ln 3], [0, 0]] -> softmax [[1, 3], [1, 1]] / 6
    cfm = CenterFocusModule(2, score="mean")
    p = cfm.probability_map(center_crop(x, 2))
    assert p.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(p[0, 0].numpy(), [[1 / 6, 3 / 6], [1 / 6, 1 / 6]], rtol=1e-6)
    out = cfm(x)
    assert out.shape == (1, 2, 2, 2)
    np.testing.assert_allclose(out[0, 0].numpy(), [[0, 2 * math.log(3) * 1.5], [0, 0]], rtol=1e-6)
    assert torch.all(out[0, 1] == 0)
    # "channel" (default): a map per channel; channel 0's cells [[0, 2 ln 3], [0, 0]] -> [[1, 9], [1, 1]] / 12,
    # channel 1 (zeros in the crop) uniform
    cfm = CenterFocusModule(2)
    assert cfm.score == "channel"
    p = cfm.probability_map(center_crop(x, 2))
    assert p.shape == (1, 2, 2, 2)
    np.testing.assert_allclose(p[0, 0].numpy(), [[1 / 12, 9 / 12], [1 / 12, 1 / 12]], rtol=1e-6)
    np.testing.assert_allclose(p[0, 1].numpy(), 0.25, rtol=1e-6)
    np.testing.assert_allclose(cfm(x)[0, 0].numpy(), [[0, 2 * math.log(3) * (1 + 9 / 12)], [0, 0]], rtol=1e-6)
    with pytest.raises(ValueError, match="score"):
        CenterFocusModule(2, score="max")


def test_converter_module_is_grouped_and_rejects_bad_groups():
    cm = ConverterModule(8, 4, groups=2)
    assert cm.conv.weight.shape == (4, 4, 1, 1)  # each output sees in/groups = 4 channels
    assert cm(torch.randn(2, 8, 5, 3)).shape == (2, 4, 5, 3)
    with pytest.raises(ValueError, match="divisible"):
        ConverterModule(10, 4, groups=4)


def test_ram_weights_and_relation_network_shapes():
    torch.manual_seed(0)
    feats = torch.randn(3, 4, 6)
    ram = RelationAdaptiveModule(6, reduction=2)
    final, w = ram(feats)
    assert final.shape == w.shape == (3, 24) and torch.all((w > 0) & (w < 1))
    torch.testing.assert_close(final, feats.flatten(1) * w)
    # the weight of feature k depends on the others (relations), not on f_k alone
    other = feats.clone()
    other[:, 3] += 5.0
    assert not torch.allclose(ram(other)[1][:, :6], w[:, :6])
    rn_final, none = RelationNetwork(6)(feats)
    assert rn_final.shape == (3, 24) and none is None


@pytest.mark.parametrize("fusion", ["ram", "concat", "rn"])
def test_branches_gradients_reach_every_branch(fusion):
    torch.manual_seed(0)
    br = OCNetBranches(16, 8, num_parts=3, center_size=2, fusion=fusion, groups=4)
    fmap = torch.randn(4, 16, 16, 8, requires_grad=True)
    out = br(fmap)
    assert out["F_BB"].shape == (4, 16) and out["F_final"].shape == (4, 5 * 8) and len(out["parts"]) == 3
    (out["F_final"].pow(2).sum() + separation_loss(out["f_g"], out["parts"])).backward()
    for name, p in br.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert fmap.grad.abs().sum() > 0


def test_branch_switches():
    assert OCNetBranches(16, 8, num_parts=0, use_global=False).out_dim == 8  # Table 2 row 2: f_c only
    assert OCNetBranches(16, 8, use_cfm=False).out_dim == 24
    with pytest.raises(ValueError, match="at least one"):
        OCNetBranches(16, 8, num_parts=0, use_global=False, use_cfm=False)
    with pytest.raises(ValueError, match="fusion"):
        OCNetBranches(16, 8, fusion="attention")


def _cfg(path=None, **over):
    cfg = tiny_osnet_cfg(path or os.path.join(REPO, "projects", "OCNet", "configs", "occluded_duke_osnet_x0_25_cpu.yml"))
    if cfg.MODEL.META_ARCHITECTURE == "OCNet":
        cfg.MODEL.OCNET.DIM = 32
    cfg.merge_from_list([x for kv in over.items() for x in kv])
    return cfg


def _batch():
    return {"images": torch.rand(8, 3, 128, 64) * 255, "targets": torch.arange(4).repeat_interleave(2)}


def test_ocnet_losses_follow_eq2_eq3_and_reach_every_parameter():
    from fastreid.modeling import build_model
    from fastreid.utils.events import EventStorage
    torch.manual_seed(0)
    model = build_model(_cfg()).train()
    with EventStorage(0):
        losses = model(_batch())
    assert set(losses) == {f"loss_{k}_{n}" for k in ("cls", "triplet") for n in ("F_final", "F_BB", "f_g", "f_c")} | {"loss_sl"}
    sum(losses.values()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    # every OCNet parameter (branches, RAM, BNNecks but their frozen biases, classifiers) learns; in the
    # randomly initialised OSNet a gate whose ReLU is dead for this batch may get none
    assert [n for n in no_grad if not n.startswith("backbone.")] == []
    backbone = [n for n, p in model.named_parameters() if n.startswith("backbone.")]
    assert len([n for n in no_grad if n.startswith("backbone.")]) < 0.05 * len(backbone), no_grad
    # lambda weights: halving lambda_1 halves F_final's terms
    model2 = build_model(_cfg(**{"MODEL.OCNET.LAMBDAS": [0.4, 0.5, 0.25, 0.25]})).train()
    model2.load_state_dict(model.state_dict())
    torch.manual_seed(1)
    b = _batch()
    with EventStorage(0):
        l1 = model({k: v.clone() for k, v in b.items()})
        l2 = model2({k: v.clone() for k, v in b.items()})
    assert l2["loss_cls_F_final"].item() == pytest.approx(l1["loss_cls_F_final"].item() / 2, rel=1e-4)
    assert l2["loss_cls_F_BB"].item() == pytest.approx(l1["loss_cls_F_BB"].item(), rel=1e-4)


def test_eq4_distance_hand_values():
    from occreid.fastreid.ocnet import ocnet_distance
    q = torch.tensor([[0.0, 0.0, 1.0, 1.0]])        # F_final = (0, 0), F_BB = (1, 1)
    g = torch.tensor([[3.0, 4.0, 1.0, 1.0], [0.0, 0.0, 4.0, 5.0]])
    np.testing.assert_allclose(ocnet_distance(q, g, split=2, alpha=1.0), [[5.0, 5.0]], rtol=1e-6)
    np.testing.assert_allclose(ocnet_distance(q, g, split=2, alpha=0.5), [[5.0, 2.5]], rtol=1e-6)
    np.testing.assert_allclose(ocnet_distance(q, g, split=2, alpha=0.0), [[5.0, 0.0]], atol=1e-6)


def test_sl_needs_global_and_parts():
    from fastreid.modeling import build_model
    with pytest.raises(ValueError, match="SL needs"):
        build_model(_cfg(**{"MODEL.OCNET.NUM_PARTS": 0}))


@pytest.mark.parametrize("path", CONFIGS, ids=[os.path.relpath(p, REPO) for p in CONFIGS])
def test_every_paper_and_ablation_config_builds_trains_and_tests(path):
    from fastreid.modeling import build_model
    from fastreid.utils.events import EventStorage
    cfg = _cfg(path)
    model = build_model(cfg).train()
    with EventStorage(0):
        losses = model(_batch())
    assert all(torch.isfinite(v) for v in losses.values())
    feats = model.eval()(_batch())
    if cfg.MODEL.META_ARCHITECTURE == "OCNet":
        from occreid.fastreid.ocnet import ocnet_feature_split
        assert feats.shape[1] == ocnet_feature_split(cfg) + 128


@pytest.mark.slow
def test_ocnet_trains_and_evaluates_eq4_on_real_occluded_duke(real_data_root, tmp_path, monkeypatch):
    from occreid.fastreid import OccReIDTrainer
    from occreid.fastreid.ocnet import ocnet_distance_from_cfg

    monkeypatch.setenv("FASTREID_DATASETS", real_data_root)
    trainer, results, losses = train_on_real_subset(
        os.path.join(REPO, "projects", "OCNet", "configs", "occluded_duke_osnet_x0_25_cpu.yml"), real_data_root, tmp_path)
    assert np.mean(losses[-4:]) < np.mean(losses[:4]), losses
    for key in ("Rank-1", "mAP", "mINP"):
        assert math.isfinite(results[key]) and 0 <= results[key] <= 100
    # the evaluator used Eq. 4 on [F_final, F_BB]
    loader, evaluator = OccReIDTrainer.build_evaluator(trainer.cfg, "OccludedDuke")
    assert evaluator.distance_fn is not None
    from fastreid.evaluation import inference_on_dataset
    inference_on_dataset(trainer.model, loader, evaluator)
    feats = torch.cat([p["feats"] for p in evaluator._predictions])
    nq = evaluator._num_query
    np.testing.assert_allclose(evaluator.last_distance, ocnet_distance_from_cfg(trainer.cfg)(feats[:nq], feats[nq:]),
                               rtol=1e-5)


def test_ocnet_checkpoint_loads_for_eval_with_other_class_count(tmp_path):
    """--eval-only builds the model with NUM_CLASSES 0: only the classifiers differ, which is allowed;
    a Baseline checkpoint is not an OCNet checkpoint."""
    from fastreid.modeling import build_model
    from occreid.fastreid import check_checkpoint_matches
    trained = build_model(_cfg())
    path = tmp_path / "ocnet.pth"
    torch.save({"model": trained.state_dict()}, path)
    check_checkpoint_matches(build_model(_cfg(**{"MODEL.HEADS.NUM_CLASSES": 0})), str(path))
    baseline = build_model(_cfg(os.path.join(REPO, "projects", "OCNet", "configs", "ablation", "row1_bot.yml")))
    torch.save({"model": baseline.state_dict()}, tmp_path / "bot.pth")
    with pytest.raises(ValueError, match="does not match the model OCNet"):
        check_checkpoint_matches(trained, str(tmp_path / "bot.pth"))


def test_separation_loss_acts_on_the_signed_cm_outputs():
    """MODEL.OCNET.SL.FEAT pre_relu (default): L_SL of the training step equals Eq. 1 on f_g and the parts
    pooled from their CM's BN output before the ReLU, computed here from the backbone map by hand;
    post_relu: on the branch features (cos >= 0 there, so L_SL >= 2 with two parts)."""
    from fastreid.modeling import build_model
    from fastreid.utils.events import EventStorage
    torch.manual_seed(0)
    b = _batch()
    for feat in ("pre_relu", "post_relu"):
        model = build_model(_cfg(**{"MODEL.OCNET.SL.FEAT": feat})).train()
        with EventStorage(0):
            loss = model({k: v.clone() for k, v in b.items()})["loss_sl"].item()
        with torch.no_grad():
            fmap = model.backbone((b["images"] - model.pixel_mean) / model.pixel_std)
            br = model.branches
            h = fmap.shape[2] // 2
            pre = [cm.bn(cm.conv(x)).mean((2, 3)) for cm, x in
                   ((br.cm_global, fmap), (br.cm_parts[0], fmap[:, :, :h]), (br.cm_parts[1], fmap[:, :, h:]))]
            if feat == "post_relu":
                pre = [cm.bn(cm.conv(x)).clamp(min=0).mean((2, 3)) for cm, x in
                       ((br.cm_global, fmap), (br.cm_parts[0], fmap[:, :, :h]), (br.cm_parts[1], fmap[:, :, h:]))]
        g, t, bt = (p.double().numpy() for p in pre)
        cos = lambda a, c: (a * c).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(c, axis=1)
        expected = np.mean((1 + cos(g, t)) + (1 + cos(g, bt)))
        assert loss == pytest.approx(expected, rel=1e-4), feat
        if feat == "post_relu":
            assert loss >= 2.0 - 1e-6


def test_sl_gamma_weights_the_separation_loss():
    """Eq. 3: loss_sl = gamma * L_SL: with SL.GAMMA 0.25 the term is a quarter of gamma = 1's, on the same weights
    and batch, and equals gamma * separation_loss of the branches' pre-ReLU features (issue 29: the weight could be
    dropped without a test noticing)."""
    from fastreid.modeling import build_model
    from fastreid.utils.events import EventStorage
    torch.manual_seed(0)
    m1 = build_model(_cfg(**{"MODEL.OCNET.SL.GAMMA": 1.0})).train()
    m4 = build_model(_cfg(**{"MODEL.OCNET.SL.GAMMA": 0.25})).train()
    m4.load_state_dict(m1.state_dict())
    b = _batch()
    with EventStorage(0):
        l1 = m1({k: v.clone() for k, v in b.items()})["loss_sl"]
        l4 = m4({k: v.clone() for k, v in b.items()})["loss_sl"]
        out = m4.branches(m4.backbone((b["images"] - m4.pixel_mean) / m4.pixel_std))
    assert l1.item() > 0
    assert l4.item() == pytest.approx(0.25 * l1.item(), rel=1e-5)
    assert l4.item() == pytest.approx(0.25 * separation_loss(out["f_g_pre"], out["parts_pre"]).item(), rel=1e-4)


def test_eval_centre_feature_goes_through_the_cfm():
    """At test time f_c is CM(Z * P + Z) of the centre crop Z (the CFM, Sec. 2.1), not CM(Z): computed by hand on
    a feature map whose centre cells differ, in eval mode (issue 29: an eval path without the CFM passed)."""
    from occreid.layers.center_focus_module import center_crop
    torch.manual_seed(0)
    branches = OCNetBranches(16, 8, num_parts=2, use_cfm=True, center_size=2).eval()
    fmap = torch.randn(3, 16, 8, 4) * 3
    with torch.no_grad():
        out = branches(fmap)
        z = center_crop(fmap, 2)
        p = torch.softmax(z.reshape(3, 16, 4), dim=2).reshape(3, 16, 2, 2)   # per channel over the 2 x 2 cells
        expected = branches._pool(branches.cm_center(z * p + z))
        without = branches._pool(branches.cm_center(z))
    torch.testing.assert_close(out["f_c"], expected, rtol=1e-5, atol=1e-6)
    assert (out["f_c"] - without).abs().max() > 1e-3
