"""Every ablation row of every method, built from its config *as written* (ResNet-50 included, random
weights, a tiny batch): which modules exist, which run, and which reach the loss. A switch that the code
ignores (a CFM / RAM / SL / CBE / BED / DNL / RP / ME flag read but not acted on) makes one of these fail.

Only ``MODEL.BACKBONE.PRETRAIN`` (no ImageNet weights here), ``MODEL.HEADS.NUM_CLASSES`` and the device are
changed from the files."""

import os

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OCNET_ABL = os.path.join(REPO, "projects", "OCNet", "configs", "ablation")
SGR_ABL = os.path.join(REPO, "projects", "SGR", "configs", "ablation")


def build_as_written(path, num_classes=4):
    import occreid.fastreid  # noqa: F401
    from fastreid.config import get_cfg
    from fastreid.modeling import build_model
    cfg = get_cfg()
    cfg.merge_from_file(path)
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.HEADS.NUM_CLASSES = num_classes
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def batch(b=8):
    g = torch.Generator().manual_seed(0)
    return {"images": torch.rand(b, 3, 128, 64, generator=g) * 255, "targets": torch.arange(b // 2).repeat_interleave(2)}


class Calls:
    """Forward hooks that record each watched module's output (kept in the graph for gradients)."""

    def __init__(self, modules):
        self.outputs = {}
        self.handles = [m.register_forward_hook(self._hook(k)) for k, m in modules.items() if m is not None]

    def _hook(self, key):
        def hook(module, inputs, output):
            self.outputs.setdefault(key, output)  # returns None: the output is left as it is
        return hook

    def remove(self):
        for h in self.handles:
            h.remove()


def train_forward(model, watch):
    from fastreid.utils.events import EventStorage
    model.train()
    calls = Calls(watch)
    try:
        with EventStorage(0):
            losses = model(batch())
    finally:
        calls.remove()
    return losses, calls.outputs


def grad_norm(loss, tensor):
    (g,) = torch.autograd.grad(loss, tensor, retain_graph=True, allow_unused=True)
    return 0.0 if g is None else float(g.norm())


# ----------------------------------------------------------------------------------------------
# OCNet, Table 2 (our reading of the check marks, projects/OCNet/README.md)

OCNET_ROWS = {  # file: (fusion, CFM, SL, global branch, parts)
    "row2_cfm.yml": ("concat", True, False, False, 0),
    "row3_concat.yml": ("concat", False, False, True, 2),
    "row4_concat_sl.yml": ("concat", False, True, True, 2),
    "row5_rn_cfm.yml": ("rn", True, False, True, 2),
    "row6_rn_cfm_sl.yml": ("rn", True, True, True, 2),
    "row7_ram_cfm.yml": ("ram", True, False, True, 2),
    "row8_ram_sl.yml": ("ram", False, True, True, 2),
    "row9_ocnet.yml": ("ram", True, True, True, 2),
}


def test_ocnet_row1_is_fastreid_bot():
    cfg, model = build_as_written(os.path.join(OCNET_ABL, "row1_bot.yml"))
    assert type(model).__name__ == "Baseline" and cfg.MODEL.HEADS.NAME == "EmbeddingHead"


@pytest.mark.parametrize("row", sorted(OCNET_ROWS))
def test_ocnet_ablation_row_uses_exactly_its_modules(row):
    from occreid.layers import RelationAdaptiveModule, RelationNetwork
    fusion, cfm, sl, use_global, parts = OCNET_ROWS[row]
    cfg, model = build_as_written(os.path.join(OCNET_ABL, row))
    br = model.branches
    # which modules exist
    assert (br.cfm is not None) == cfm
    assert isinstance(br.fusion, RelationAdaptiveModule) == (fusion == "ram")
    assert isinstance(br.fusion, RelationNetwork) == (fusion == "rn")
    assert (br.fusion is None) == (fusion == "concat")
    assert (br.cm_global is not None) == use_global and br.num_parts == parts
    # which run in a training step, and reach the loss
    losses, out = train_forward(model, {"backbone": model.backbone, "cfm": br.cfm, "fusion": br.fusion})
    total = sum(losses.values())
    fmap = out["backbone"]
    assert ("cfm" in out) == cfm and ("fusion" in out) == (fusion != "concat")
    if cfm:
        assert grad_norm(total, out["cfm"]) > 0
    if fusion != "concat":
        fused = out["fusion"][0]
        assert grad_norm(total, fused) > 0
    assert ("loss_sl" in losses) == sl
    if sl:
        assert grad_norm(losses["loss_sl"], fmap) > 0  # the Separation Loss trains the backbone
    # the test feature is [F_final, F_BB] of the sizes the enabled branches give (Eq. 4)
    model.eval()
    with torch.no_grad():
        feats = model(batch())
    k = int(use_global) + parts + int(cfm)
    assert feats.shape == (8, k * cfg.MODEL.OCNET.DIM + cfg.MODEL.BACKBONE.FEAT_DIM)


def test_ocnet_new_modules_are_heads_for_fastreid_lr_factor_and_freezing():
    """FastReID applies SOLVER.HEADS_LR_FACTOR to parameters under the top-level module ``heads``:
    every OCNet parameter that is not the backbone's must be there."""
    from fastreid.solver.build import get_default_optimizer_params
    cfg, model = build_as_written(os.path.join(OCNET_ABL, "row9_ocnet.yml"))
    names = {n.split(".")[0] for n, _ in model.named_parameters()}
    assert names == {"backbone", "heads"}
    groups = get_default_optimizer_params(model, base_lr=1.0, heads_lr_factor=10.0)
    head_params = {id(p) for p in model.heads.parameters()}
    for g in groups:
        assert g["lr"] == (10.0 if id(g["params"][0]) in head_params else 1.0)


# ----------------------------------------------------------------------------------------------
# SGR, Table 5

SGR_ROWS = {  # file: (CBE, BED, DNL blocks, RP, ME)
    "row2_cbe.yml": (True, False, 0, False, False),
    "row3_cbe_bed.yml": (True, True, 0, False, False),
    "row4_cbe_bed_dnl.yml": (True, True, 5, False, False),
    "row5_cbe_bed_dnl_rp.yml": (True, True, 5, True, False),
    "row6_sgr.yml": (True, True, 5, True, True),
}


def test_sgr_row1_is_fastreid_sbs_without_dnl():
    from occreid.layers import DNLBlock
    cfg, model = build_as_written(os.path.join(SGR_ABL, "row1_baseline.yml"))
    assert type(model).__name__ == "Baseline" and cfg.MODEL.BACKBONE.WITH_NL
    assert not any(isinstance(m, DNLBlock) for m in model.modules())


@pytest.mark.parametrize("row", sorted(SGR_ROWS))
def test_sgr_ablation_row_uses_exactly_its_modules(row):
    from occreid.layers import DNLBlock
    cbe, bed, dnl, rp, me = SGR_ROWS[row]
    cfg, model = build_as_written(os.path.join(SGR_ABL, row))
    blocks = {f"dnl{i}": m for i, m in enumerate(m for m in model.modules() if isinstance(m, DNLBlock))}
    assert len(blocks) == dnl
    if dnl:  # Sec. 3.2: two in the second stage, three in the third
        assert len(model.backbone.NL_2) == 2 and len(model.backbone.NL_3) == 3
    assert (model.heads.rp is not None) == rp
    watch = {"backbone": model.backbone, "rp": model.heads.rp, **blocks}
    losses, out = train_forward(model, watch)
    # CBE: the network sees [RE(X); BcE(X)], twice the sampled batch
    assert out["backbone"].shape[0] == (16 if cbe else 8)
    # every DNL block and the RP run, and the loss reaches them
    total = sum(losses.values())
    for k in blocks:
        assert k in out and grad_norm(total, out[k]) > 0, k
    assert ("rp" in out) == rp
    # BED replaces the triplet loss (Eq. 5)
    assert ("loss_bed_gf" in losses) == bed and ("loss_triplet_gf" in losses) == (not bed)
    assert ("loss_bed_rpf" in losses) == (bed and rp)
    if bed:
        assert grad_norm(losses["loss_bed_gf"], out["backbone"]) > 0
    # ME: the test feature is z / |z| - mu with ME, z (the GeM feature) without
    model.eval()
    with torch.no_grad():
        model.heads.momentum_mean.mean.fill_(0.01)
        feats = model(batch())
        fmap = model.backbone(model.preprocess_image(batch()))
        p = float(model.heads.pool_layer.p)
        z = fmap.clamp(min=1e-6).pow(p).mean((2, 3)).pow(1 / p)
        if cfg.MODEL.HEADS.NECK_FEAT == "after":  # row 2 keeps the baseline's BNNeck test feature
            z = model.heads.bottleneck(z[:, :, None, None])[:, :, 0, 0]
    expected = torch.nn.functional.normalize(z, dim=1) - 0.01 if me else z
    torch.testing.assert_close(feats, expected, rtol=1e-4, atol=1e-5)
