"""ONNX export of every method (occreid export): onnxruntime against torch on real Occluded-Duke images, features
and Rank-1 (with each method's own test distance); AMD-Net's FFT through its real-DFT twin."""

import os

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = {
    "BoT": "projects/BoT/configs/occluded_duke_osnet_x0_25_cpu.yml",
    "OCNet": "projects/OCNet/configs/occluded_duke_osnet_x0_25_cpu.yml",
    "SGR": "projects/SGR/configs/occluded_duke_osnet_x0_25_cpu.yml",
    "PAN": "projects/PAN/configs/occluded_duke_osnet_x0_25_cpu.yml",
    "AlignedReID": "projects/AlignedReID/configs/occluded_duke_osnet_x0_25_cpu.yml",
    "AMDNet": "projects/AMDNet/configs/occluded_duke_osnet_x0_25_cpu.yml",
}


@pytest.fixture(scope="module")
def real_batch(real_data_root):
    """FastReID test-transformed real Occluded-Duke images: the queries of 4 query identities, their gallery
    images and 24 other gallery images; (images (n, 3, 256, 128) 0-255, pids, camids, number of queries)."""
    from fastreid.config import get_cfg
    from fastreid.data.transforms import build_transforms
    from PIL import Image
    from occreid.data.parsers import parse_occluded_duke
    _, query, gallery = parse_occluded_duke(real_data_root)
    qpids = sorted({p for _, p, _ in query})[:4]
    q = [x for x in query if x[1] in qpids]
    g = [x for x in gallery if x[1] in qpids] + [x for x in gallery if x[1] not in qpids][::700][:24]
    tf = build_transforms(get_cfg(), is_train=False)
    items = q + g
    imgs = torch.stack([tf(Image.open(p).convert("RGB")) for p, _, _ in items]).float()
    return imgs, np.array([x[1] for x in items]), np.array([x[2] for x in items]), len(q)


def _rank1(dist, pids, camids, nq):
    from fastreid.evaluation.rank import evaluate_rank
    cmc, _, _ = evaluate_rank(dist, pids[:nq], pids[nq:], camids[:nq], camids[nq:], max_rank=5)
    return float(cmc[0])


@pytest.mark.parametrize("name", list(CONFIGS))
def test_export_every_method_matches_torch_on_real_images(name, real_data_root, real_batch, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTREID_DATASETS", real_data_root)
    from fastreid.config import get_cfg
    from fastreid.utils.compute_dist import build_dist
    from occreid.fastreid import OccReIDTrainer, add_occreid_config
    from occreid.fastreid.config import expand_config_paths
    from occreid.fastreid.export import FeatureGraph, export_onnx, run_onnx, torch_features
    from occreid.fastreid.trainer import TEST_DISTANCES

    torch.manual_seed(0)
    cfg = add_occreid_config(get_cfg())
    cfg.merge_from_file(os.path.join(REPO, CONFIGS[name]))
    cfg.MODEL.HEADS.NUM_CLASSES = 16
    expand_config_paths(cfg)
    model = OccReIDTrainer.build_model(cfg)  # the MSMT17 OSNet x0.25 start, new modules random
    out = str(tmp_path / f"{name}.onnx")
    info = export_onnx(model, out)  # raises when onnxruntime and torch differ by more than 1e-4
    assert info["max_abs_diff"] < 1e-4
    imgs, pids, camids, nq = real_batch
    ref = torch_features(FeatureGraph(model).eval(), imgs)
    got = np.concatenate([run_onnx(out, imgs[s:s + 7].numpy()) for s in range(0, len(imgs), 7)])  # dynamic batch
    assert got.shape == ref.shape == (len(imgs), info["dim"])
    assert np.abs(got - ref).max() < 1e-4, np.abs(got - ref).max()
    fn = TEST_DISTANCES.get(cfg.MODEL.META_ARCHITECTURE)

    def dist(f):
        f = torch.from_numpy(f)
        return np.asarray(fn(cfg)(f[:nq], f[nq:]) if fn else build_dist(f[:nq], f[nq:], cfg.TEST.METRIC))
    assert _rank1(dist(got), pids, camids, nq) == _rank1(dist(ref), pids, camids, nq)


def test_sim_real_dft_twin_equals_the_fft_path():
    """AMD-Net's SIM written with real DFT matrices (what ONNX gets) equals torch.fft's, for even and odd map sizes,
    with a non-identity phase convolution (away from the phase's +-pi branch cut, where any two FFTs may differ)."""
    from occreid.layers.amdnet import SpatialFrequencyInteraction
    torch.manual_seed(0)
    for h, w in ((16, 8), (16, 7), (5, 9), (64, 32)):
        sim = SpatialFrequencyInteraction(6, alpha=0.35, kernel_size=3, identity_init=False)
        with torch.no_grad():
            sim.phase_conv.weight.mul_(0.1)
            g = torch.randn(2, 6, h, w)
            a = sim(g)
            sim.real_dft = True
            b = sim(g)
        assert (a - b).abs().max() < 1e-4, (h, w, (a - b).abs().max())


def test_export_refuses_a_checkpoint_of_another_model(real_data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTREID_DATASETS", real_data_root)
    from occreid.fastreid.cli import main
    from fastreid.config import get_cfg
    from fastreid.modeling import build_model
    import occreid.fastreid  # noqa: F401
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, CONFIGS["BoT"]))
    cfg.MODEL.BACKBONE.PRETRAIN = False
    torch.save({"model": build_model(cfg).state_dict()}, tmp_path / "bot.pth")
    with pytest.raises(ValueError, match="does not match the model OCNet"):
        main(["--debug", "export", "--config-file", os.path.join(REPO, CONFIGS["OCNet"]), "--weights", str(tmp_path / "bot.pth"),
              "--out", str(tmp_path / "x.onnx")])
