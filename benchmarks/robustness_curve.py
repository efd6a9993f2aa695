#!/usr/bin/env python
"""Occlusion-robustness curve: Rank-1 / mAP / mINP of one or more trained models as the simulated occlusion of the
query images grows (Chakraborty et al.'s simulator, Algorithm 1; ``DATASETS.OCCLUSION``). Works for every occreid /
FastReID model and registered dataset.

    FASTREID_DATASETS=~/.cache/occreid/data .venv/bin/python benchmarks/robustness_curve.py \\
        --config-file CONFIG --weights MODEL.pth [--areas 0 0.1 0.2 0.3 0.4] [--fill mean] [--splits query] \\
        [--out DIR] [KEY VALUE ...]

Several models in one table and plot: repeat ``--config-file`` and ``--weights`` (paired in order) and give
``--labels``; the KEY VALUE overrides apply to all of them.

Writes DIR/robustness.md (a table) and DIR/robustness.png (the curves). Area = fraction of the image covered
by the patch; 0 = the clean split. The occluded copies are cached (deterministic per image path and seed).
"""

import argparse
import os
import sys
import warnings

warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config-file", required=True, action="append")
    ap.add_argument("--weights", action="append",
                    help="trained checkpoint (MODEL.WEIGHTS), one per --config-file; omitted: the PRETRAIN_PATH backbone")
    ap.add_argument("--labels", nargs="+", help="one name per --config-file (default: the config file names)")
    ap.add_argument("--areas", type=float, nargs="+", default=[0.0, 0.1, 0.2, 0.3, 0.4])
    ap.add_argument("--fill", default="mean", choices=["mean", "black", "noise"])
    ap.add_argument("--splits", nargs="+", default=["query"], choices=["query", "gallery"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="logs/robustness")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    args = ap.parse_args(argv)

    import torch
    import occreid.fastreid  # noqa: F401
    from fastreid.config import get_cfg
    from fastreid.utils.logger import setup_logger
    from occreid.fastreid import OccReIDTrainer, add_occreid_config, expand_config_paths
    from occreid.fastreid.trainer import load_checked_weights

    configs, weights = args.config_file, args.weights or [""] * len(args.config_file)
    labels = args.labels or [os.path.splitext(os.path.basename(c))[0] for c in configs]
    if not (len(configs) == len(weights) == len(labels)):
        ap.error(f"{len(configs)} --config-file, {len(weights)} --weights and {len(labels)} --labels: give one of each per model")
    setup_logger(name="fastreid")
    rows = []
    for config_file, weight, label in zip(configs, weights, labels):
        cfg = add_occreid_config(get_cfg())
        cfg.merge_from_file(config_file)
        cfg.merge_from_list(args.opts)
        if weight:
            cfg.MODEL.WEIGHTS = weight
            cfg.MODEL.BACKBONE.PRETRAIN = False
        if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
            cfg.MODEL.DEVICE = "cpu"
        expand_config_paths(cfg)
        model = OccReIDTrainer.build_model(cfg)
        if cfg.MODEL.WEIGHTS:
            load_checked_weights(model, cfg.MODEL.WEIGHTS)
        for area in args.areas:
            c = cfg.clone()
            c.DATASETS.OCCLUSION.ENABLED = area > 0
            c.DATASETS.OCCLUSION.AREA = float(area)
            c.DATASETS.OCCLUSION.FILL = args.fill
            c.DATASETS.OCCLUSION.SPLITS = list(args.splits)
            c.DATASETS.OCCLUSION.SEED = args.seed
            c.freeze()
            results = OccReIDTrainer.test(c, model)
            for name in c.DATASETS.TESTS:
                r = results[name] if name in results else results
                key = f"{label} / {name}" if len(configs) > 1 else name
                rows.append((key, area, r["Rank-1"], r["mAP"], r["mINP"]))
                print(f"[robustness] {key} area {area:.2f}: Rank-1 {r['Rank-1']:.2f} mAP {r['mAP']:.2f} "
                      f"mINP {r['mINP']:.2f}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    models = "; ".join(f"{lab}: `{c}` (weights `{w or 'PRETRAIN_PATH'}`)" for c, w, lab in zip(configs, weights, labels))
    lines = [f"Occlusion robustness of {models}, overrides `{' '.join(args.opts)}`: "
             f"{args.fill} patch on the {' and '.join(args.splits)} images, seed {args.seed}.", "",
             "| model / test set | occluded area | Rank-1 | mAP | mINP |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {n} | {a:.0%} | {r1:.2f} | {m:.2f} | {mi:.2f} |" for n, a, r1, m, mi in rows]
    with open(os.path.join(args.out, "robustness.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name in dict.fromkeys(r[0] for r in rows):
        pts = [r for r in rows if r[0] == name]
        ax.plot([100 * r[1] for r in pts], [r[2] for r in pts], "o-", label=f"{name} Rank-1")
        ax.plot([100 * r[1] for r in pts], [r[3] for r in pts], "s--", label=f"{name} mAP")
    ax.set_xlabel(f"occluded area of each {'/'.join(args.splits)} image (%)")
    ax.set_ylabel("%")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "robustness.png"), dpi=120)
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    main()
