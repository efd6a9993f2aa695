"""The CPU-throughput levers change speed, not results: MODEL.CHANNELS_LAST, TEST.FROZEN_BACKBONE and
INPUT.TEST_INTERPOLATION (benchmarks/throughput.py measures the speed; here the behaviour)."""

import os

import numpy as np
import pytest
import torch

from conftest import build_cfg_and_model as _build, tiny_osnet_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BOT = os.path.join(REPO, "projects", "BoT", "configs", "occluded_duke_osnet_x0_25_cpu.yml")
CONFIGS = {"BoT": BOT, **{m: os.path.join(REPO, "projects", m, "configs", "occluded_duke_osnet_x0_25_cpu.yml")
                          for m in ("OCNet", "SGR", "PAN", "AlignedReID", "AMDNet")}}


def _trainer_model(path, opts=()):
    from occreid.fastreid import OccReIDTrainer
    cfg = tiny_osnet_cfg(path)
    cfg.merge_from_list(list(opts))
    torch.manual_seed(0)
    return cfg, OccReIDTrainer.build_model(cfg)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_channels_last_feeds_the_backbone_nhwc_and_keeps_the_features(name):
    """Every method's CPU config: with MODEL.CHANNELS_LAST on, the first convolution sees channels-last input (the
    hook is on the meta-architecture, so PAN, which calls pieces of its backbone, gets it too); eval features and
    training losses equal the contiguous model's up to float rounding."""
    from fastreid.utils.events import EventStorage
    cfg, on = _trainer_model(CONFIGS[name], ["MODEL.CHANNELS_LAST", "on"])
    _, off = _trainer_model(CONFIGS[name], ["MODEL.CHANNELS_LAST", "off"])
    off.load_state_dict(on.state_dict())
    seen = {}
    conv = next(m for m in on.modules() if isinstance(m, torch.nn.Conv2d))

    def record(module, args):
        seen.setdefault("x", args[0])   # returns None: the input is not replaced
    conv.register_forward_pre_hook(record)
    g = torch.Generator().manual_seed(1)
    images = torch.rand(4, 3, 128, 64, generator=g) * 255
    on.eval(), off.eval()
    with torch.no_grad():
        a, b = on({"images": images.clone()}), off({"images": images.clone()})
    assert seen["x"].is_contiguous(memory_format=torch.channels_last) and not seen["x"].is_contiguous()
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    on.train(), off.train()
    batch = {"images": images, "targets": torch.tensor([0, 0, 1, 1])}
    if name == "AMDNet":
        batch["parsing"] = torch.randint(0, 6, (4, 128, 64))
    with EventStorage(0):
        torch.manual_seed(2)
        la = on({k: v.clone() for k, v in batch.items()})
        torch.manual_seed(2)
        lb = off({k: v.clone() for k, v in batch.items()})
    assert set(la) == set(lb)
    for k in la:
        assert la[k].item() == pytest.approx(lb[k].item(), rel=1e-3, abs=1e-5), k   # float rounding only


def test_channels_last_auto_is_on_for_the_cpu_only():
    from occreid.fastreid.trainer import channels_last_enabled, frozen_backbone_enabled
    cfg = tiny_osnet_cfg(BOT)
    assert cfg.MODEL.CHANNELS_LAST == "auto" and channels_last_enabled(cfg) and frozen_backbone_enabled(cfg)
    cfg.MODEL.DEVICE = "cuda"
    assert not channels_last_enabled(cfg) and not frozen_backbone_enabled(cfg)
    cfg.MODEL.CHANNELS_LAST = "yes"
    with pytest.raises(ValueError, match="MODEL.CHANNELS_LAST"):
        channels_last_enabled(cfg)


@pytest.mark.parametrize("engine", ["torchscript", "onnxruntime"])
@pytest.mark.parametrize("name", ["BoT", "OCNet", "SGR", "AlignedReID", "PAN", "AMDNet"])
def test_frozen_backbone_gives_the_same_features_and_puts_the_backbone_back(name, engine):
    from occreid.fastreid.trainer import OnnxRuntimeBackbone, frozen_backbone
    cfg, model = _trainer_model(CONFIGS[name])
    model.train()
    backbone = model.backbone
    images = torch.rand(3, 3, 256, 128) * 255   # 3 images: another batch size than the traced / exported 2
    model.eval()
    with torch.no_grad():
        ref = model({"images": images})
        with frozen_backbone(model, (256, 128), engine=engine):
            kind = torch.jit.ScriptModule if engine == "torchscript" else OnnxRuntimeBackbone
            assert isinstance(model.backbone, kind)
            out = model({"images": images})
    assert model.backbone is backbone
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_frozen_backbone_engine_key():
    from occreid.fastreid.trainer import frozen_backbone_engine
    cfg = tiny_osnet_cfg(BOT)
    assert cfg.TEST.FROZEN_BACKBONE_ENGINE == "auto" and frozen_backbone_engine(cfg) == "onnxruntime"
    cfg.TEST.FROZEN_BACKBONE_ENGINE = "torchscript"
    assert frozen_backbone_engine(cfg) == "torchscript"
    cfg.TEST.FROZEN_BACKBONE_ENGINE = "onnxruntime"
    cfg.MODEL.DEVICE = "cuda"
    assert frozen_backbone_engine(cfg) == "torchscript"   # onnxruntime's CPU provider only
    cfg.TEST.FROZEN_BACKBONE_ENGINE = "tensorrt"
    with pytest.raises(ValueError, match="TEST.FROZEN_BACKBONE_ENGINE"):
        frozen_backbone_engine(cfg)


def test_frozen_backbone_during_training_evaluation_restores_train_mode(real_data_root, tmp_path, monkeypatch):
    """OccReIDTrainer.test with TEST.FROZEN_BACKBONE on: metrics equal the unfrozen evaluation's; the model keeps
    its own backbone (same parameters) and its training mode afterwards."""
    from fastreid.config import get_cfg
    from occreid.fastreid import OccReIDTrainer, add_occreid_config
    from occreid.fastreid.config import expand_config_paths
    monkeypatch.setenv("FASTREID_DATASETS", real_data_root)
    res = {}
    from occreid.fastreid.trainer import OnnxRuntimeBackbone
    for mode in ("onnxruntime", "torchscript", "off"):
        cfg = add_occreid_config(get_cfg())
        cfg.merge_from_file(BOT)
        cfg.merge_from_list(["DATASETS.SUBSET.TEST_IDS", 30, "DATALOADER.NUM_WORKERS", 0,
                             "TEST.FROZEN_BACKBONE", "off" if mode == "off" else "on",
                             "TEST.FROZEN_BACKBONE_ENGINE", "torchscript" if mode == "off" else mode,
                             "MODEL.HEADS.NUM_CLASSES", 1, "OUTPUT_DIR", str(tmp_path)])
        expand_config_paths(cfg)
        model = OccReIDTrainer.build_model(cfg).train()
        params = {k: v.clone() for k, v in model.state_dict().items()}
        r = OccReIDTrainer.test(cfg, model)
        res[mode] = r.get("OccludedDuke", r)
        assert model.training and not isinstance(model.backbone, (torch.jit.ScriptModule, OnnxRuntimeBackbone))
        assert all(torch.equal(params[k], v) for k, v in model.state_dict().items() if "running" not in k
                   and "num_batches" not in k)
    for k in ("Rank-1", "mAP"):
        for mode in ("onnxruntime", "torchscript"):
            assert res[mode][k] == pytest.approx(res["off"][k], abs=0.05), (mode, k)


def test_test_interpolation_switch():
    from fastreid.data.transforms import build_transforms  # noqa: F401
    from PIL import Image
    from torchvision.transforms import InterpolationMode, Resize
    from occreid.fastreid.trainer import build_test_transforms
    cfg = tiny_osnet_cfg(BOT)
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (97, 41, 3), dtype=np.uint8))
    bic = build_test_transforms(cfg)
    cfg.INPUT.TEST_INTERPOLATION = "bilinear"
    bil = build_test_transforms(cfg)
    resize = [t for t in bil.transforms if isinstance(t, Resize)][0]
    assert resize.interpolation == InterpolationMode.BILINEAR
    ref = np.asarray(img.resize((128, 256), Image.BILINEAR), dtype=np.float32).transpose(2, 0, 1)
    np.testing.assert_allclose(bil(img).numpy(), ref, atol=1.0)
    assert (bil(img) - bic(img)).abs().max() > 1
    cfg.INPUT.TEST_INTERPOLATION = "nearest"
    with pytest.raises(ValueError, match="INPUT.TEST_INTERPOLATION"):
        build_test_transforms(cfg)


def test_decoded_image_cache_gives_the_same_tensors_and_is_keyed(tmp_path):
    """DATALOADER.CACHE_DIR: the cached test set returns the same tensors as reading the JPEGs; a changed image
    gets a new cache file (key: paths, sizes, mtimes, size, resize), and a corrupt image is named."""
    from conftest import write_jpeg
    from occreid.fastreid.trainer import CachedReIDImageDataset, ReIDImageDataset, build_test_transforms
    paths = [write_jpeg(str(tmp_path / "img" / f"000{i}_c1_f00.jpg"), seed=i, size=(70 + i, 30 + i)) for i in range(5)]
    items = [(p, i, 0) for i, p in enumerate(paths)]
    cfg = tiny_osnet_cfg(BOT)
    tf = build_test_transforms(cfg)
    plain = ReIDImageDataset(items, tf, relabel=False)
    cached = CachedReIDImageDataset(items, build_test_transforms(cfg), str(tmp_path / "cache"))
    for i in range(5):
        torch.testing.assert_close(cached[i]["images"], plain[i]["images"], rtol=0, atol=0)
        assert cached[i]["img_paths"] == paths[i] and cached[i]["targets"] == i
    first = cached.cache.file
    again = CachedReIDImageDataset(items, build_test_transforms(cfg), str(tmp_path / "cache"))
    assert again.cache.file == first
    os.utime(paths[2], ns=(1, 1))
    assert CachedReIDImageDataset(items, build_test_transforms(cfg), str(tmp_path / "cache")).cache.file != first
    with open(paths[3], "wb") as f:
        f.write(b"broken")
    with pytest.raises(RuntimeError, match=os.path.basename(paths[3])):
        CachedReIDImageDataset(items, build_test_transforms(cfg), str(tmp_path / "cache2"))
