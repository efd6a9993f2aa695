"""The comparison protocol: SEED, SOLVER.BUDGET_IMAGES (images seen by the network), the run record and
benchmarks/compare.py's tables."""

import json
import os
import sys

import numpy as np
import pytest

from conftest import tiny_osnet_cfg, train_on_real_subset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
BOT_CPU = os.path.join(REPO, "projects", "BoT", "configs", "occluded_duke_osnet_x0_25_cpu.yml")
SGR_CPU = os.path.join(REPO, "projects", "SGR", "configs", "occluded_duke_osnet_x0_25_cpu.yml")


def test_images_per_step_and_budget_iterations():
    from occreid.fastreid.trainer import _budget_config, budget_iterations, images_per_step
    bot = tiny_osnet_cfg(BOT_CPU)
    sgr = tiny_osnet_cfg(SGR_CPU)
    assert images_per_step(bot) == 64 and images_per_step(sgr) == 128  # CBE: [RE(X); BcE(X)]
    sgr.INPUT.CBE.ENABLED = False
    assert images_per_step(sgr) == 64
    sgr.INPUT.CBE.ENABLED = True
    for cfg in (bot, sgr):
        cfg.SOLVER.BUDGET_IMAGES = 7808
    assert budget_iterations(bot) == 122 and budget_iterations(sgr) == 61  # equal images seen
    # warm-up and freezing cover the same number of images: half the steps for SGR
    sgr.SOLVER.WARMUP_ITERS, sgr.SOLVER.FREEZE_ITERS = 50, 25
    b = _budget_config(sgr)
    assert (b.SOLVER.WARMUP_ITERS, b.SOLVER.FREEZE_ITERS, b.SOLVER.MAX_EPOCH) == (25, 13, 1)
    sgr.SOLVER.BUDGET_IMAGES = 100
    with pytest.raises(ValueError, match="less than one step"):
        budget_iterations(sgr)


def test_seed_and_budget_keys_exist_and_unknown_keys_fail():
    from fastreid.config import get_cfg
    from occreid.fastreid import add_occreid_config
    cfg = add_occreid_config(get_cfg())
    assert cfg.SEED == -1 and cfg.SOLVER.BUDGET_IMAGES == 0
    cfg.merge_from_list(["SEED", 3, "SOLVER.BUDGET_IMAGES", 640])
    assert cfg.SEED == 3
    with pytest.raises(AssertionError, match="Non-existent key: SOLVER.BUDGET_IMAGE"):  # yacs
        cfg.merge_from_list(["SOLVER.BUDGET_IMAGE", 640])


def _record(tmp, row, seed, r1, m):
    from compare import result_path
    proto = {"results": str(tmp)}
    path = result_path(proto, row, seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"row": row, "seed": seed, "commit": "abc", "images_seen": 7808, "iterations": 122,
                   "images_per_step": 64, "images_per_second": 30.0 + seed,
                   "metrics": {"OccludedDuke": {"Rank-1": r1, "Rank-5": r1 + 10, "Rank-10": r1 + 15,
                                                "mAP": m, "mINP": m / 4}}}, f)


def test_compare_table_mean_and_sample_std(tmp_path):
    from compare import load_protocol, mean_std, table, update_readme
    proto_file = tmp_path / "p.yml"
    proto_file.write_text(
        "name: t\nbudget_images: 7808\nseeds: [0, 1, 2]\nresults: " + str(tmp_path / "res") + "\nrows:\n"
        "  - {name: BoT, config: a.yml}\n"
        "  - {name: X, config: b.yml, group: ablation, seeds: [0]}\n"
        "  - {name: X ME off, eval_of: X, overrides: [K, V], group: ablation, seeds: [0]}\n")
    proto = load_protocol(str(proto_file))
    assert proto["rows"][2]["config"] == "b.yml"
    for s, r1 in zip((0, 1, 2), (20.0, 22.0, 27.0)):
        _record(tmp_path / "res", "BoT", s, r1, 10.0)
    _record(tmp_path / "res", "X", 0, 30.0, 12.0)
    mean, std = mean_std([20.0, 22.0, 27.0])
    assert mean == pytest.approx(23.0) and std == pytest.approx(np.std([20, 22, 27], ddof=1))
    text = table(proto)
    assert f"| BoT | 0,1,2 | 23.00 ± {std:.2f} |" in text
    assert "| X | 0 | 30.00 |" in text and "X ME off" not in text  # no run of that row yet
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- compare:t:begin -->\nold\n<!-- compare:t:end -->\nb\n")
    update_readme(str(readme), "t", text)
    content = readme.read_text()
    assert "old" not in content and "23.00 ±" in content and content.endswith("b\n")
    with pytest.raises(ValueError, match="compare:u:begin"):
        update_readme(str(readme), "u", text)
    bad = tmp_path / "bad.yml"
    bad.write_text("name: b\nbudget_images: 1\nrows:\n  - {name: A, eval_of: Z}\n")
    with pytest.raises(ValueError, match="eval_of 'Z' is not a row"):
        load_protocol(str(bad))


@pytest.mark.slow
def test_same_seed_same_loss_curve_other_seed_other_curve(real_data_root, tmp_path, monkeypatch):
    """Two runs with SEED 7 on real Occluded-Duke images give the same loss curve, to the last bit; SEED 8
    another. The run stops at SOLVER.BUDGET_IMAGES."""
    monkeypatch.setenv("FASTREID_DATASETS", real_data_root)
    curves = []
    for i, seed in enumerate((7, 7, 8)):
        (tmp_path / str(i)).mkdir()
        trainer, _, losses = train_on_real_subset(BOT_CPU, real_data_root, tmp_path / str(i), overrides=(
            "SEED", seed, "SOLVER.BUDGET_IMAGES", 128, "DATASETS.SUBSET.TEST_IDS", 5, "SOLVER.LOG_PERIOD", 1))
        assert trainer.max_iter == 4 and trainer.throughput["images_seen"] == 128
        from fastreid.utils.events import CommonMetricPrinter   # the console ETA counts the budget's steps
        printers = [w for h in trainer._hooks for w in getattr(h, "_writers", []) if isinstance(w, CommonMetricPrinter)]
        assert printers and all(p._max_iter == 4 for p in printers)
        curves.append(losses)
    assert len(curves[0]) == 4 and curves[0] == curves[1]
    assert curves[0] != curves[2]
