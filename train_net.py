#!/usr/bin/env python
"""Train and evaluate a re-identification model: FastReID's train_net with occreid registered.

    python train_net.py --config-file projects/BoT/configs/occluded_duke_osnet_x0_25_cpu.yml
    python train_net.py --config-file CFG --eval-only MODEL.WEIGHTS path/to/model_final.pth
    python train_net.py --config-file CFG --resume            # continue from OUTPUT_DIR/last_checkpoint
    python train_net.py --config-file CFG SOLVER.MAX_EPOCH 2  # trailing KEY VALUE overrides

Runs on the CPU when no GPU is present. Ends by printing Rank-1/5/10, mAP and mINP per test set.
Datasets are read from $FASTREID_DATASETS (see docs/datasets.md).
"""

import json
import logging
import os
import subprocess
import sys
import time
import warnings

# fastreid 1.4.0's ToTensor uses torch.ByteStorage.from_buffer, deprecated in torch 2 (harmless, once per worker)
warnings.filterwarnings("ignore", message="TypedStorage is deprecated")

import torch
from tabulate import tabulate

import occreid.fastreid  # noqa: F401  (registers occreid's datasets and config keys)
from fastreid.config import get_cfg
from fastreid.engine import default_argument_parser, default_setup, launch
from fastreid.utils import comm
from fastreid.utils.logger import setup_logger
from occreid.fastreid import OccReIDTrainer, add_occreid_config
from occreid.fastreid.trainer import images_per_step, load_checked_weights, seed_everything
from occreid.fastreid.config import expand_config_paths

logger = logging.getLogger("occreid.train_net")

SUMMARY_METRICS = ("Rank-1", "Rank-5", "Rank-10", "mAP", "mINP")


def setup(args):
    cfg = get_cfg()
    add_occreid_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    expand_config_paths(cfg)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        print(f"[train_net] MODEL.DEVICE={cfg.MODEL.DEVICE} but no CUDA device is available: using the CPU",
              file=sys.stderr)
        cfg.MODEL.DEVICE = "cpu"
    if cfg.MODEL.DEVICE == "cpu" and cfg.SOLVER.AMP.ENABLED:
        cfg.SOLVER.AMP.ENABLED = False  # FastReID's AMPTrainer needs CUDA
    cfg.freeze()
    default_setup(cfg, args)
    # occreid's own messages (identity subsets, re-ranking settings) go to the same console and log file
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="occreid")
    return cfg


def summary_table(results, test_names):
    """A table of Rank-1/5/10, mAP, mINP (%) per test set from FastReID's ``test`` results
    (a dict of metrics when there is one test set, else a dict of them by dataset name)."""
    if results and all(m in results for m in SUMMARY_METRICS):
        results = {test_names[0]: results}
    rows = [[name] + [f"{res[m]:.2f}" for m in SUMMARY_METRICS]
            for name, res in results.items() if isinstance(res, dict) and "mAP" in res]
    return tabulate(rows, headers=["dataset"] + [f"{m} (%)" for m in SUMMARY_METRICS], tablefmt="github")


def git_commit():
    """The commit of this checkout (with ``+dirty`` when it has uncommitted changes), or None."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def write_run_record(cfg, args, results, trainer, wall_seconds):
    """``OUTPUT_DIR/occreid_run.json``: config file, overrides, commit, seed, images seen, times, metrics
    per test set (what benchmarks/compare.py collects)."""
    if not comm.is_main_process():
        return None
    if results and all(m in results for m in SUMMARY_METRICS):
        results = {cfg.DATASETS.TESTS[0]: results}
    record = {
        "config_file": args.config_file, "overrides": list(args.opts), "eval_only": bool(args.eval_only),
        "commit": git_commit(), "seed": cfg.SEED, "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "images_per_step": images_per_step(cfg), "budget_images": cfg.SOLVER.BUDGET_IMAGES,
        "wall_seconds": round(wall_seconds, 1),
        "metrics": {name: {k: float(v) for k, v in res.items()} for name, res in (results or {}).items()
                    if isinstance(res, dict)},
    }
    if trainer is not None:
        record.update(trainer.throughput, iterations=trainer.max_iter)
    path = os.path.join(cfg.OUTPUT_DIR, "occreid_run.json")
    with open(path, "w") as f:
        json.dump(record, f, indent=1)
    logger.info(f"Run record written to {path}")
    return path


def main(args):
    start = time.time()
    cfg = setup(args)
    trainer = None
    if args.eval_only:
        if seed_everything(cfg.SEED):
            logger.info(f"Seeded python, numpy and torch with SEED {cfg.SEED}")
        cfg.defrost()
        if cfg.MODEL.WEIGHTS:
            cfg.MODEL.BACKBONE.PRETRAIN = False  # the checkpoint holds the whole model
        else:
            logger.info("--eval-only without MODEL.WEIGHTS: evaluating the backbone's pretrained "
                        "weights (MODEL.BACKBONE.PRETRAIN_PATH) as they are")
        cfg.freeze()
        model = OccReIDTrainer.build_model(cfg)
        if cfg.MODEL.WEIGHTS:
            load_checked_weights(model, cfg.MODEL.WEIGHTS)
        results = OccReIDTrainer.test(cfg, model)
    else:
        trainer = OccReIDTrainer(cfg)
        trainer.resume_or_load(resume=args.resume)
        results = trainer.train()
    write_run_record(cfg, args, results, trainer, time.time() - start)
    if comm.is_main_process():  # the other ranks hold no metrics (features are gathered on rank 0)
        print("\nFinal evaluation:\n" + summary_table(results, cfg.DATASETS.TESTS) + "\n", flush=True)
    return results


def _fail(message):
    print(f"train_net.py: error: {message}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    from occreid.fastreid.trainer import UnknownDatasetError

    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    if not os.path.isfile(args.config_file):
        _fail(f"config file not found: {args.config_file} (--config-file)")
    try:
        launch(main, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
               dist_url=args.dist_url, args=(args,))
    except UnknownDatasetError as e:   # a typo in DATASETS.NAMES / TESTS: the registered names, not a traceback
        _fail(str(e))
    except (KeyError, AssertionError) as e:
        msg = str(e.args[0]) if e.args else ""
        if "Non-existent config key" in msg or "Non-existent key" in msg:   # yacs: from the file / from KEY VALUE
            _fail(f"{msg} (a typo? see the keys of configs/ and projects/<Method>/configs/)")
        raise
