"""One checkpoint, two toolboxes: Rank-1 / mAP of the same weights evaluated through FastReID (occreid's
OccReIDTrainer evaluator) and through TorchReID (ImageDataManager + occreid's engine evaluation), on the full
Occluded-Duke query / gallery; and TorchReID's model-zoo OSNet x0.25 through TorchReID's own evaluation and through
occreid's FastReID side (``build_torchreid_osnet_backbone``, 512-d).

    FASTREID_DATASETS=~/.cache/occreid/data python benchmarks/torchreid_equivalence.py \\
        --row bot_osnet_x0_25=logs/compare/occluded_duke_cpu/BoT/seed1/model_final.pth \\
        --row ocnet_osnet_x0_25=logs/compare/occluded_duke_cpu/OCNet/seed1/model_final.pth --zoo \\
        --out benchmarks/results/torchreid_equivalence_cpu.md

Each evaluation extracts the features of all 19,871 images in its own toolbox's data pipeline (about 3-5 minutes
per evaluation for OSNet x0.25 on 2 CPU cores).
"""

import argparse
import json
import os
import platform
import subprocess
import time

import torch


def fastreid_eval(cfg):
    from fastreid.evaluation import inference_on_dataset
    from occreid.fastreid import OccReIDTrainer
    from occreid.fastreid.trainer import load_checked_weights
    model = OccReIDTrainer.build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        load_checked_weights(model, cfg.MODEL.WEIGHTS)
    loader, evaluator = OccReIDTrainer.build_evaluator(cfg, "OccludedDuke")
    res = inference_on_dataset(model, loader, evaluator)
    return {k: float(res[k]) for k in ("Rank-1", "mAP", "mINP")}


def torchreid_dm(root, interpolation, workers):
    import occreid.torchreid as ot
    from torchvision import transforms as T
    tr = ot.torchreid_modules()
    dm = tr.data.ImageDataManager(root=root, sources="occluded_duke", targets="occluded_duke", batch_size_test=128,
                                  workers=workers, use_gpu=False)
    dm.transform_te.transforms[0].interpolation = getattr(T.InterpolationMode, interpolation.upper())
    return tr, dm


def torchreid_eval_occreid(name, weights, root, workers):
    import occreid.torchreid as ot
    tr, dm = torchreid_dm(root, "bicubic", workers)
    model = tr.models.build_model(name, num_classes=dm.num_train_pids, loss="occreid", pretrained=False, use_gpu=False)
    ot.load_weights(model, weights)
    engine = ot.OccReIDEngine(dm, model, optimizer=None, use_gpu=False)
    loaders = dm.test_loader["occluded_duke"]
    engine.set_model_mode("eval")
    engine._evaluate("occluded_duke", loaders["query"], loaders["gallery"])
    return {k: engine.last_results[k] for k in ("Rank-1", "mAP", "mINP")}


def torchreid_eval_zoo(weights, root, workers):
    """TorchReID's own model, weights loader and evaluation (its defaults: bilinear resize, euclidean)."""
    from occreid.torchreid.features import build_torchreid_model
    tr, dm = torchreid_dm(root, "bilinear", workers)
    model = build_torchreid_model("osnet_x0_25", weights)
    engine = tr.engine.ImageSoftmaxEngine(dm, model, optimizer=None, use_gpu=False)
    loaders = dm.test_loader["occluded_duke"]
    engine.set_model_mode("eval")
    rank1, mAP = engine._evaluate("occluded_duke", loaders["query"], loaders["gallery"], dist_metric="euclidean")
    return {"Rank-1": float(rank1) * 100, "mAP": float(mAP) * 100}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", action="append", default=[], help="MODEL_NAME=CHECKPOINT (occreid TorchReID name)")
    ap.add_argument("--zoo", action="store_true", help="also the zoo OSNet x0.25 ($FASTREID_DATASETS/weights)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/torchreid_equivalence_cpu.md")
    args = ap.parse_args()
    import occreid.torchreid as ot
    root = os.environ["FASTREID_DATASETS"]
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    rows = []
    for spec in args.row:
        name, weights = spec.split("=", 1)
        t = time.time()
        cfg = ot.load_config(ot.MODELS[name], ["MODEL.WEIGHTS", weights, "DATALOADER.NUM_WORKERS", args.workers],
                             num_classes=0, pretrained=False, device="cpu")
        fr = fastreid_eval(cfg)
        t1 = time.time()
        trr = torchreid_eval_occreid(name, weights, root, args.workers)
        rows.append({"row": name, "weights": weights, "fastreid": fr, "torchreid": trr,
                     "seconds": [round(t1 - t), round(time.time() - t1)]})
        print(json.dumps(rows[-1]), flush=True)
    if args.zoo:
        weights = os.path.join(root, "weights", "osnet_x0_25_msmt17.pth")
        t = time.time()
        trr = torchreid_eval_zoo(weights, root, args.workers)
        t1 = time.time()
        cfg = ot.load_config("projects/BoT/configs/torchreid_zoo_osnet_x0_25.yml",
                             ["MODEL.BACKBONE.PRETRAIN_PATH", weights, "DATALOADER.NUM_WORKERS", args.workers],
                             num_classes=0, device="cpu")
        fr = fastreid_eval(cfg)
        rows.append({"row": "TorchReID zoo osnet_x0_25 (MSMT17), zero-shot", "weights": weights, "fastreid": fr,
                     "torchreid": trr, "seconds": [round(time.time() - t1), round(t1 - t)]})
        print(json.dumps(rows[-1]), flush=True)

    json_path = os.path.splitext(args.out)[0] + ".json"
    if os.path.exists(json_path):  # merge: rows of an earlier run stay unless this run measured them again
        with open(json_path) as fh:
            earlier = json.load(fh)
        names = {r["row"] for r in rows}
        rows = [r for r in earlier if r["row"] not in names] + rows
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = ["# One checkpoint through FastReID and through TorchReID (full Occluded-Duke: 2,210 query / 17,661 gallery)",
             "", "Command: `FASTREID_DATASETS=<data> python benchmarks/torchreid_equivalence.py [--row NAME=CKPT ...] "
             "[--zoo]`; rows of earlier runs are kept in the .json beside this file and merged (a row measured again "
             f"replaces its old one); last run: commit {commit}, {platform.node()} ({os.cpu_count()} CPU cores), "
             f"torch {torch.__version__}.", "",
             "FastReID side: occreid's `OccReIDTrainer.build_evaluator` (FastReID's data pipeline: bicubic resize, "
             "0-255 tensors, FastReID's Cython `evaluate_rank`). TorchReID side: TorchReID's `ImageDataManager` and "
             "`OccReIDEngine._evaluate` (TorchReID's feature loop and `evaluate_rank`, the model's own test distance; "
             "bicubic test resize as FastReID's). Zoo row: TorchReID's own model, loader (its default bilinear resize) "
             "and `Engine._evaluate` (euclidean) against occreid's FastReID side "
             "(`projects/BoT/configs/torchreid_zoo_osnet_x0_25.yml`, bicubic, 512-d feature); TorchReID's "
             "`_evaluate` returns no mINP.", "",
             "| model | weights | FastReID Rank-1 / mAP / mINP | TorchReID Rank-1 / mAP / mINP | "
             "difference Rank-1 / mAP | seconds (FastReID, TorchReID) |",
             "| --- | --- | --- | --- | --- | --- |"]

    def fmt(m):
        return " / ".join(f"{m[k]:.2f}" if k in m else "-" for k in ("Rank-1", "mAP", "mINP"))
    for r in rows:
        f, t = r["fastreid"], r["torchreid"]
        lines.append(f"| {r['row']} | `{r['weights']}` | {fmt(f)} | {fmt(t)} | {f['Rank-1'] - t['Rank-1']:+.2f} / "
                     f"{f['mAP'] - t['mAP']:+.2f} | {r['seconds'][0]}, {r['seconds'][1]} |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    with open(json_path, "w") as fh:
        json.dump(rows, fh, indent=1)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
