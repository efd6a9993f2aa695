"""torch.distributed through FastReID's own launcher (``train_net.py --num-gpus N``), on CPU processes with the gloo
backend (third_party_patches/fastreid-0007-launch-gloo-cpu.patch), on a small real Occluded-Duke subset.

``--num-gpus`` is FastReID's name for the number of processes per machine; without CUDA each one is a CPU process.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU_CONFIGS = {m: os.path.join(REPO, "projects", m, "configs", "occluded_duke_osnet_x0_25_cpu.yml")
               for m in ("BoT", "OCNet", "SGR", "PAN", "AlignedReID", "AMDNet")}
SMALL = ["SEED", "3", "DATASETS.SUBSET.TRAIN_IDS", "8", "DATASETS.SUBSET.TEST_IDS", "6", "DATASETS.SUBSET.MODE",
         "random", "SOLVER.IMS_PER_BATCH", "16", "SOLVER.BUDGET_IMAGES", "128", "SOLVER.WARMUP_ITERS", "0",
         "SOLVER.FREEZE_ITERS", "0", "DATALOADER.NUM_WORKERS", "0", "TEST.IMS_PER_BATCH", "32",
         "SOLVER.LOG_PERIOD", "1"]
# NUM_WORKERS 0: the processes of FastReID's launcher are started by spawn, and so are their loader workers, each of
# which re-imports torch and fastreid (~8 s per loader here); the sampler shards per rank all the same.


def _train_net(data_root, out_dir, config_file, processes, *opts, eval_only=False):
    """Run train_net.py with ``processes`` processes (gloo on localhost); returns its occreid_run.json."""
    env = dict(os.environ, FASTREID_DATASETS=data_root, OMP_NUM_THREADS="1")
    cmd = [sys.executable, os.path.join(REPO, "train_net.py"), "--config-file", config_file,
           "--num-gpus", str(processes), "--dist-url", "auto"] + (["--eval-only"] if eval_only else []) \
        + list(opts) + ["OUTPUT_DIR", str(out_dir)]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    with open(os.path.join(out_dir, "occreid_run.json")) as f:
        return json.load(f), proc.stdout + proc.stderr


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(set(CPU_CONFIGS) - {"SGR"}))  # SGR: the next test
def test_two_gloo_processes_train_and_evaluate(real_data_root, tmp_path, method):
    """Each method trains 128 images (8 steps of 8 images per process; 4 for SGR and AlignedReID, which double the batch) (P x K shard per rank) and evaluates with features
    gathered from both processes; the log names the world size."""
    opts = SMALL + (["DATASETS.PARSING.ROOT", ""] if method == "AMDNet" else [])
    record, log = _train_net(real_data_root, tmp_path, CPU_CONFIGS[method], 2, *opts)
    assert "World size: 2" in log
    metrics = record["metrics"]["OccludedDuke"]
    assert 0 < metrics["mAP"] <= 100 and record["images_seen"] == 128
    assert os.path.isfile(tmp_path / "model_final.pth")


@pytest.mark.realdata
@pytest.mark.slow
def test_two_process_checkpoint_evaluates_the_same_in_one_and_two_processes(real_data_root, tmp_path):
    """SGR (buffers that must agree across ranks: BatchNorm statistics and the momentum mean feature): the
    checkpoint of a 2-process run loads in one process; evaluating it with 1 and with 2 processes gives exactly
    the metrics the 2-process run printed at its end (2 processes: each extracts its contiguous shard of the test
    set and rank 0 gathers them in dataset order; rank 0's buffers are broadcast before evaluating)."""
    cfg = CPU_CONFIGS["SGR"]
    record, log = _train_net(real_data_root, tmp_path / "train", cfg, 2, *SMALL)
    assert "World size: 2" in log and record["images_seen"] == 128
    weights = str(tmp_path / "train" / "model_final.pth")
    one, _ = _train_net(real_data_root, tmp_path / "eval1", cfg, 1, *SMALL, "MODEL.WEIGHTS", weights, eval_only=True)
    two, _ = _train_net(real_data_root, tmp_path / "eval2", cfg, 2, *SMALL, "MODEL.WEIGHTS", weights, eval_only=True)
    trained = record["metrics"]["OccludedDuke"]
    for m in ("Rank-1", "Rank-5", "mAP", "mINP"):
        assert one["metrics"]["OccludedDuke"][m] == two["metrics"]["OccludedDuke"][m] == trained[m], m
