#!/usr/bin/env python
"""Test-time variants of one checkpoint from one feature extraction (the test set is read once).

- OCNet: Eq. 4, D = ||F_final^q - F_final^g|| + alpha ||F_BB^q - F_BB^g||, for several alpha
  (``--alphas``; 0 = F_final alone), and F_BB alone.
- SGR: the test features of one checkpoint: z (the GeM feature, ME off), z / |z| - mu (Eq. 6, ME on,
  the paper's), and the BNNeck output BN(z) (FastReID's strong-baseline test feature), all computed
  from the same z with the checkpoint's own momentum mean and BNNeck.
- ``--features`` (every meta-architecture): the test-feature table of issue "Evidence v2" item 0: pre-BN vs
  BNNeck feature (where the head has a BNNeck), cosine vs Euclidean, and the method's own test distance vs its
  global feature; the row the config evaluates is marked "(config)". Two extractions at most (pre-BN / BNNeck).

    FASTREID_DATASETS=~/.cache/occreid/data .venv/bin/python benchmarks/eval_sweep.py \\
        --config-file projects/OCNet/configs/occluded_duke_osnet_x0_25_cpu.yml \\
        --weights logs/compare/occluded_duke_cpu/OCNet/seed0/model_final.pth --out sweep.md [KEY VALUE ...]

Prints (and with ``--out`` writes) a Markdown table of Rank-1/5/10, mAP, mINP per variant, on the
config's first test set (full query / gallery unless ``DATASETS.SUBSET.TEST_IDS`` is given).
"""

import argparse
import contextlib
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
    if weights:   # "" = the config's starting weights, untouched (the floor)
        cfg.MODEL.BACKBONE.PRETRAIN = False
        cfg.MODEL.WEIGHTS = weights
    cfg.MODEL.DEVICE = "cpu"
    expand_config_paths(cfg)
    model = OccReIDTrainer.build_model(cfg)
    if weights:
        load_checked_weights(model, cfg.MODEL.WEIGHTS)
    return cfg, model.eval()


def extract(cfg, model):
    """(evaluator with its predictions, features (N, D)) for the config's first test set."""
    from fastreid.evaluation import inference_on_dataset
    from occreid.fastreid import OccReIDTrainer
    from occreid.fastreid.trainer import (channels_last_enabled, frozen_backbone, frozen_backbone_enabled,
                                          frozen_backbone_engine)
    loader, evaluator = OccReIDTrainer.build_evaluator(cfg, cfg.DATASETS.TESTS[0])
    frozen = frozen_backbone(model, tuple(cfg.INPUT.SIZE_TEST), channels_last_enabled(cfg),
                             frozen_backbone_engine(cfg)) if frozen_backbone_enabled(cfg) else contextlib.nullcontext()
    with frozen:   # what OccReIDTrainer.test does (the same features up to float rounding, faster on the CPU)
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


def cosine(q, g):
    return 1 - F.normalize(q, dim=1) @ F.normalize(g, dim=1).t()


def euclidean(q, g):
    return torch.cdist(q, g)


def _both_metrics(rows, evaluator, label, feats, config_metric=None):
    for name, fn in (("cosine", cosine), ("Euclidean", euclidean)):
        mark = " (config)" if config_metric == name.lower() else ""
        rows.append((f"{label}, {name}{mark}", evaluate(evaluator, feats, fn)))


def _extract_with_neck(cfg, model, neck):
    """Features with the model's ``neck_feat`` (OCNet, PAN: on the meta-architecture) set to ``neck`` ("before" |
    "after") for this extraction."""
    head = model if hasattr(model, "neck_feat") else model.heads
    old = head.neck_feat
    head.neck_feat = neck
    try:
        return extract(cfg, model)
    finally:
        head.neck_feat = old


def feature_variants(cfg, model):
    """[(label, metrics)] of the test-feature variants of one checkpoint (see the module docstring)."""
    arch, metric, rows = cfg.MODEL.META_ARCHITECTURE, cfg.TEST.METRIC, []
    if arch == "Baseline":   # FastReID's EmbeddingHead: the BNNeck output at test, whatever NECK_FEAT says
        captured = []
        hook = model.heads.bottleneck.register_forward_hook(lambda m, i, o: captured.append(i[0].flatten(1)))
        try:
            evaluator, bn = extract(cfg, model)
        finally:
            hook.remove()
        pre = torch.cat(captured)
        _both_metrics(rows, evaluator, "BNNeck feature", bn, metric)
        _both_metrics(rows, evaluator, "pre-BN feature", pre)
    elif arch == "SGR":
        for label, res in sgr_variants(cfg, model):
            rows.append((label + (" (config)" if "ME on" in label and model.heads.me else ""), res))
        heads = model.heads
        me, test_feat = heads.me, heads.test_feat
        heads.me, heads.test_feat = False, "auto"
        try:
            evaluator, z = extract(cfg, model)
        finally:
            heads.me, heads.test_feat = me, test_feat
        with torch.no_grad():
            bn = heads.bottleneck(z[:, :, None, None])[:, :, 0, 0]
        rows.append(("z (GeM feature), Euclidean", evaluate(evaluator, z, euclidean)))
        rows.append(("BNNeck output BN(z), Euclidean", evaluate(evaluator, bn, euclidean)))
    elif arch in ("OCNet", "PAN"):
        for neck in ("after", "before"):
            evaluator, feats = _extract_with_neck(cfg, model, neck)
            where = "BNNeck" if neck == "after" else "pre-BN"
            is_config = neck == (model if hasattr(model, "neck_feat") else model.heads).neck_feat
            if arch == "OCNet":
                from occreid.fastreid.ocnet import ocnet_distance, ocnet_feature_split
                split, alpha = ocnet_feature_split(cfg), cfg.MODEL.OCNET.ALPHA
                rows.append((f"{where} F_final, F_BB: Eq. 4 (alpha {alpha:g})" + (" (config)" if is_config else ""),
                             evaluate(evaluator, feats, lambda q, g: ocnet_distance(q, g, split, alpha))))
                _both_metrics(rows, evaluator, f"{where} F_final alone", feats[:, :split])
                _both_metrics(rows, evaluator, f"{where} [F_final, F_BB]", feats)
            else:
                _both_metrics(rows, evaluator, f"{where} f_cat", feats, metric if is_config else None)
    elif arch == "AlignedReID":
        from occreid.fastreid.aligned import aligned_distance
        evaluator, feats = extract(cfg, model)
        c, mode = cfg.MODEL.BACKBONE.FEAT_DIM, cfg.MODEL.ALIGNED.TEST_DISTANCE
        stripes = (feats.shape[1] - c) // cfg.MODEL.ALIGNED.LOCAL_DIM
        _both_metrics(rows, evaluator, "global feature", feats[:, :c], "euclidean" if mode == "global" else None)
        for m in ("local", "sum"):
            rows.append((f"AlignedReID {m} distance" + (" (config)" if mode == m else ""),
                         evaluate(evaluator, feats, lambda q, g, m=m: aligned_distance(q, g, c, stripes, m))))
    elif arch == "AMDNet":
        from occreid.fastreid.amdnet import amd_distance
        a = cfg.MODEL.AMD
        evaluator, feats = extract(cfg, model)
        for m in ("visible_parts", "global"):
            rows.append((f"AMD-Net {m} distance" + (" (config)" if a.TEST_DISTANCE == m else ""),
                         evaluate(evaluator, feats, lambda q, g, m=m: amd_distance(q, g, a.NUM_PARTS, m, a.BETA_HEAD,
                                                                                   a.PART_ATTENTION))))
        if a.PART_ATTENTION:
            c = cfg.MODEL.BACKBONE.FEAT_DIM
            _both_metrics(rows, evaluator, "BNNeck f_t alone", feats[:, :c])
            _both_metrics(rows, evaluator, "BNNeck f_g alone", feats[:, c:2 * c])
    else:
        raise ValueError(f"no test-feature variants for META_ARCHITECTURE {arch}")
    return rows


from report import emit  # noqa: E402  (benchmarks/report.py, beside this script)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--weights", required=True, help='checkpoint; "" = the config\'s starting weights')
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--features", action="store_true",
                        help="the test-feature table (pre-BN / BNNeck, cosine / Euclidean, own distance / global)")
    parser.add_argument("--out")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    args = parser.parse_args(argv)
    cfg, model = build(args.config_file, args.weights, args.opts)
    arch = cfg.MODEL.META_ARCHITECTURE
    if args.features:
        rows = feature_variants(cfg, model)
    elif arch == "OCNet":
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
