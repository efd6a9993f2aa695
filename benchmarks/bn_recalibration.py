#!/usr/bin/env python
"""Probe: is a checkpoint's test accuracy limited by its backbone's BatchNorm statistics? (issue "Evidence v2",
root causes: "BatchNorm statistics of the clean vs occluded halves").

AlignedReID + OBC trains on [X; Occ(X)]: half of every batch carries a simulated occluder, and the backbone's
BatchNorm running statistics are the average over both halves, while every test image is a real, clean-or-really-
occluded image. If those statistics are what hurts, re-estimating them on clean training images alone (no weight
changes) must raise the test metrics; re-estimating them on [X; Occ(X)] (the training distribution) must not.

For one checkpoint, on the config's test set (full query / gallery unless ``DATASETS.SUBSET.TEST_IDS``):

1. the checkpoint as trained;
2. the backbone's BatchNorm running statistics reset and re-estimated (cumulative average, ``momentum=None``) on
   ``--images`` training images, test transform, no augmentation, in batches of 64, weights untouched;
3. the same on [X; Occ(X)] (the model's own occlusion simulator), when the model has one.

Training images only (never the test set). The method's own test distance is used (``TEST_DISTANCES``).

    FASTREID_DATASETS=~/.cache/occreid/data .venv/bin/python benchmarks/bn_recalibration.py \\
        --config-file projects/AlignedReID/configs/occluded_duke_osnet_x0_25_cpu.yml \\
        --weights logs/compare/occluded_duke_cpu_2ep/AlignedReID_OBC/seed0/model_final.pth --out probe.md
"""

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_sweep import METRICS, build, evaluate, extract  # noqa: E402
from report import emit  # noqa: E402


def training_images(cfg, n, seed=0):
    """(n, 3, H, W) float 0-255: ``n`` Occluded-Duke training images drawn at random, test transform."""
    from PIL import Image
    from occreid.data import parse_occluded_duke
    from occreid.fastreid.trainer import build_test_transforms
    splits = parse_occluded_duke(os.environ["FASTREID_DATASETS"])
    rng = np.random.default_rng(seed)
    items = [splits.train[i] for i in rng.choice(len(splits.train), size=min(n, len(splits.train)), replace=False)]
    tf = build_test_transforms(cfg)
    return torch.stack([tf(Image.open(it[0]).convert("RGB")) for it in items])


def recalibrate(model, images, occlude=False, batch=64):
    """Reset the backbone's BatchNorm running statistics and re-estimate them on ``images`` (optionally
    [X; Occ(X)] with the model's simulator); weights untouched; the model is left in eval mode."""
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None          # cumulative average over every batch below
    model.backbone.train()
    with torch.no_grad():
        for s in range(0, len(images), batch):
            x = images[s:s + batch]
            if occlude:
                x = torch.cat([x, model.simulator.occlude_batch(x)])
            model.backbone((x - model.pixel_mean) / model.pixel_std)
    model.eval()
    return len(bns)


def main(argv=None):
    from occreid.fastreid.trainer import TEST_DISTANCES
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config-file", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--images", type=int, default=2048, help="training images for the re-estimation")
    ap.add_argument("--out")
    ap.add_argument("opts", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    cfg, model = build(args.config_file, args.weights, args.opts)
    fn = TEST_DISTANCES.get(cfg.MODEL.META_ARCHITECTURE)
    dist = fn(cfg) if fn else None
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rows = []
    evaluator, feats = extract(cfg, model)
    rows.append(("checkpoint as trained", evaluate(evaluator, feats, dist)))
    images = training_images(cfg, args.images)
    variants = [("clean training images", False)]
    if getattr(model, "simulator", None) is not None:
        variants.append(("[X; Occ(X)] (the training distribution)", True))
    for label, occlude in variants:
        model.load_state_dict(state)
        n_bn = recalibrate(model, images, occlude)
        evaluator, feats = extract(cfg, model)
        rows.append((f"backbone BN statistics ({n_bn} layers) re-estimated on {len(images)} {label}",
                     evaluate(evaluator, feats, dist)))
    lines = [f"BatchNorm re-estimation probe of `{args.weights}` (`{args.config_file}` {' '.join(args.opts)}), "
             f"{cfg.DATASETS.TESTS[0]}, the method's test distance:", "",
             "| variant | " + " | ".join(METRICS) + " |", "| --- | " + " | ".join("---" for _ in METRICS) + " |"]
    for label, res in rows:
        lines.append(f"| {label} | " + " | ".join(f"{res[m]:.2f}" for m in METRICS) + " |")
    emit("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
