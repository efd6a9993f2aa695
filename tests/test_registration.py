"""Registration into FastReID: registries, config keys, test-only sets, checkpoint checks."""

import subprocess
import sys

import pytest
import torch

from conftest import write_jpeg
from fastreid.config import get_cfg
from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.modeling import build_model
from occreid.fastreid import (OccReIDTrainer, TestOnlyDatasetError, add_occreid_config,
                              check_checkpoint_matches)
from occreid.fastreid.config import expand_config_paths

NAMES = ["OccludedDuke", "OccludedREID", "PartialREID", "PartialREIDOccluded", "PartialiLIDS",
         "PDukeMTMC", "OPReID"]


def test_datasets_registered_once_and_reimport_is_harmless():
    for name in NAMES:
        assert name in DATASET_REGISTRY._obj_map
    # in a fresh interpreter (a reload here would swap classes under the other tests)
    code = (
        "import importlib, occreid.fastreid\n"
        "from fastreid.data.datasets import DATASET_REGISTRY as R\n"
        "from fastreid.config import get_cfg\n"
        "n, cls = len(R._obj_map), R.get('OccludedDuke')\n"
        "import occreid.fastreid\n"
        "importlib.reload(occreid.fastreid.datasets); importlib.reload(occreid.fastreid)\n"
        "occreid.fastreid.register_datasets()\n"
        "assert len(R._obj_map) == n and R.get('OccludedDuke') is cls\n"
        "assert get_cfg().DATASETS.SUBSET.TRAIN_IDS == 0\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_config_keys_in_fastreid_defaults_and_unknown_keys_fail(tmp_path):
    cfg = get_cfg()  # import occreid.fastreid extended FastReID's defaults
    assert cfg.DATASETS.SUBSET.TRAIN_IDS == 0 and cfg.DATASETS.SUBSET.MODE == "first"
    cfg.DATASETS.SUBSET.TRAIN_IDS = 5
    add_occreid_config(cfg)  # idempotent: keeps values
    assert cfg.DATASETS.SUBSET.TRAIN_IDS == 5
    bad = tmp_path / "bad.yml"
    bad.write_text("DATASETS:\n  SUBSET:\n    TRAIN_ID: 3\n")
    with pytest.raises(KeyError, match="TRAIN_ID"):
        cfg.merge_from_file(str(bad))


def test_expand_config_paths(monkeypatch):
    cfg = get_cfg()
    monkeypatch.setenv("FASTREID_DATASETS", "/data/reid")
    cfg.MODEL.BACKBONE.PRETRAIN_PATH = "${FASTREID_DATASETS}/weights/w.pth"
    assert expand_config_paths(cfg).MODEL.BACKBONE.PRETRAIN_PATH == "/data/reid/weights/w.pth"
    cfg.MODEL.WEIGHTS = "$OCCREID_UNSET_VAR/x.pth"
    with pytest.raises(KeyError, match="MODEL.WEIGHTS.*OCCREID_UNSET_VAR"):
        expand_config_paths(cfg)


def _tiny_cfg(**overrides):
    cfg = get_cfg()
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.BACKBONE.NAME = "build_osnet_backbone"
    cfg.MODEL.BACKBONE.DEPTH = "x0_25"
    cfg.MODEL.BACKBONE.FEAT_DIM = 128
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.HEADS.WITH_BNNECK = True
    cfg.MODEL.HEADS.NUM_CLASSES = 4
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.merge_from_list([x for kv in overrides.items() for x in kv])
    return cfg


def test_test_only_dataset_in_names_is_a_clear_error(tmp_path, monkeypatch):
    base = tmp_path / "Occluded_REID"
    for folder in ("occluded_body_images", "whole_body_images"):
        write_jpeg(str(base / folder / "001" / "a.jpg"))
    monkeypatch.setenv("FASTREID_DATASETS", str(tmp_path))
    cfg = _tiny_cfg(**{"DATASETS.NAMES": ("OccludedREID",)})
    with pytest.raises(TestOnlyDatasetError, match="OccludedREID is a test-only dataset.*DATASETS.TESTS"):
        OccReIDTrainer.build_train_loader(cfg)
    # as a test set it works
    loader, num_query = OccReIDTrainer.build_test_loader(cfg, "OccludedREID")
    assert num_query == 1 and len(loader.dataset) == 2


def test_corrupt_image_error_names_the_file(tmp_path, monkeypatch):
    base = tmp_path / "Occluded_REID"
    write_jpeg(str(base / "occluded_body_images" / "001" / "a.jpg"))
    bad = base / "whole_body_images" / "001" / "b.jpg"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a jpeg")
    monkeypatch.setenv("FASTREID_DATASETS", str(tmp_path))
    loader, _ = OccReIDTrainer.build_test_loader(_tiny_cfg(**{"DATALOADER.NUM_WORKERS": 0}), "OccludedREID")
    with pytest.raises(RuntimeError, match=r"cannot read image .*whole_body_images/001/b\.jpg"):
        loader.dataset[1]


def test_checkpoint_of_another_model_is_rejected(tmp_path):
    model = build_model(_tiny_cfg())
    good = tmp_path / "good.pth"
    torch.save({"model": model.state_dict()}, good)
    check_checkpoint_matches(model, str(good))
    # another number of classes (fine-tuning) is fine: only the classifier differs
    other_classes = build_model(_tiny_cfg(**{"MODEL.HEADS.NUM_CLASSES": 7}))
    check_checkpoint_matches(other_classes, str(good))
    # another backbone is not
    resnet = build_model(_tiny_cfg(**{"MODEL.BACKBONE.NAME": "build_resnet_backbone",
                                      "MODEL.BACKBONE.DEPTH": "18x", "MODEL.BACKBONE.FEAT_DIM": 512}))
    with pytest.raises(ValueError, match=r"good\.pth does not match the model"):
        check_checkpoint_matches(resnet, str(good))
    with pytest.raises(FileNotFoundError, match="nothere"):
        check_checkpoint_matches(model, str(tmp_path / "nothere.pth"))
