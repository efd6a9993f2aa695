#!/usr/bin/env python
"""Test-time variants of one checkpoint from one feature extraction (the test set is read once).

- OCNet: Eq. 4, D = ||F_final^q - F_final^g|| + alpha ||F_BB^q - F_BB^g||, for several alpha
  (``--alphas``; 0 = F_final alone), and F_BB alone.
- SGR: the test features of one checkpoint: z (the GeM feature, ME off), z / |z| - mu (Eq. 6, ME on,
  the paper's), and the BNNeck output BN(z) (FastReID's strong-baseline test feature), all computed
  from the same z with the checkpoint's own momentum mean and BNNeck.

    FASTREID_DATASETS=~/.cache/occreid/data .venv/bin/python benchmarks/eval_sweep.py \\
        --config-file projects/OCNet/configs/occluded_duke_osnet_x0_25_cpu.yml \\
        --weights logs/compare/occluded_duke_cpu/OCNet/seed0/model_final.pth --out sweep.md [KEY VALUE ...]

Prints (and with ``--out`` writes) a Markdown table of Rank-1/5/10, mAP, mINP per variant, on the
config's first test set (full query / gallery unless ``DATASETS.SUBSET.TEST_IDS`` is given).
"""

import argparse
import copy
import os
import sys
import warnings

warnings.filterwarnings("ignore", message="TypedStorage is deprecated")

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

METRICS = ("Rank-1", "Rank-5", "Rank-10", "mAP", "mINP")


def build(config_file, weights, opts):
    import occreid.fastreid  # noqa: F401
    from fastreid.config import get_cfg
    from occreid.fastreid import OccReIDTrainer, add_occreid_config
    from occreid.fastreid.config import expand_config_paths
    from occreid.fastreid.trainer import load_checked_weights

    cfg = add_occreid_config(get_cfg())
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.WEIGHTS = weights
    cfg.MODEL.DEVICE = "cpu"
    expand_config_paths(cfg)
    model = OccReIDTrainer.build_model(cfg)
    load_checked_weights(model, cfg.MODEL.WEIGHTS)
    return cfg, model.eval()


def extract(cfg, model):
    """(evaluator with its predictions, features (N, D)) for the config's first test set."""
    from fastreid.evaluation import inference_on_dataset
    from occreid.fastreid import OccReIDTrainer
    loader, evaluator = OccReIDTrainer.build_evaluator(cfg, cfg.DATASETS.TESTS[0])
    inference_on_dataset(model, loader, evaluator)
    feats = torch.cat([p["feats"] for p in evaluator._predictions])
    return evaluator, feats


def evaluate(evaluator, feats, distance_fn=None):
    """Metrics of ``feats`` (N, D) in the evaluator's query / gallery order, with ``distance_fn``."""
    ev = copy.copy(evaluator)
    ev.distance_fn = distance_fn
    preds, start = [], 0
    for p in evaluator._predictions:
        n = len(p["feats"])
        preds.append({**p, "feats": feats[start:start + n]})
        start += n
    ev._predictions = preds
    return ev.evaluate()


def ocnet_variants(cfg, model, evaluator, feats, alphas):
    from occreid.fastreid.ocnet import ocnet_distance, ocnet_feature_split, pairwise_l2
    split = ocnet_feature_split(cfg)
    rows = []
    for a in alphas:
        label = f"Eq. 4, alpha {a:g}" + (" (F_final alone)" if a == 0 else "")
        rows.append((label, evaluate(evaluator, feats, lambda q, g, a=a: ocnet_distance(q, g, split, a))))
    rows.append(("F_BB alone", evaluate(evaluator, feats, lambda q, g: pairwise_l2(q[:, split:], g[:, split:]))))
    return rows


def sgr_variants(cfg, model, evaluator_unused=None, feats_unused=None, alphas=None):
    """Re-extract z (ME off) once, then derive the other two from it."""
    heads = model.heads
    me, test_feat = heads.me, heads.test_feat
    heads.me, heads.test_feat = False, "auto"
    try:
        evaluator, z = extract(cfg, model)
    finally:
        heads.me, heads.test_feat = me, test_feat
    with torch.no_grad():
        me_feat = heads.momentum_mean(z)
        bn = heads.bottleneck(z[:, :, None, None])[:, :, 0, 0]
    mu = float(heads.momentum_mean.mean.norm())
    return [(f"z (GeM feature, ME off), metric {cfg.TEST.METRIC}", evaluate(evaluator, z)),
            (f"z / ‖z‖ - mu (Eq. 6, ME on; ‖mu‖ = {mu:.3f})", evaluate(evaluator, me_feat)),
            ("BNNeck output BN(z)", evaluate(evaluator, bn))]


from report import emit  # noqa: E402  (benchmarks/report.py, beside this script)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--out")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    args = parser.parse_args(argv)
    cfg, model = build(args.config_file, args.weights, args.opts)
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch == "OCNet":
        evaluator, feats = extract(cfg, model)
        rows = ocnet_variants(cfg, model, evaluator, feats, args.alphas)
    elif arch == "SGR":
        rows = sgr_variants(cfg, model)
    else:
        parser.error(f"no test-time variants for META_ARCHITECTURE {arch} (OCNet, SGR)")
    lines = [f"Test-time variants of `{args.weights}` (`{args.config_file}` {' '.join(args.opts)}), "
             f"{cfg.DATASETS.TESTS[0]}, one feature extraction:", "",
             "| variant | " + " | ".join(METRICS) + " |", "| --- | " + " | ".join("---" for _ in METRICS) + " |"]
    for label, res in rows:
        lines.append(f"| {label} | " + " | ".join(f"{res[m]:.2f}" for m in METRICS) + " |")
    text = "\n".join(lines) + "\n"
    emit(text, args.out)


if __name__ == "__main__":
    main()
