#!/usr/bin/env python
"""Mechanism probes (issue 29, item 4): one number per method that says whether its mechanism does what its paper
says, measured on real Occluded-Duke test images with a trained checkpoint.

- ``obc`` (AlignedReID + OBC, Chakraborty et al. Sec. 4): accuracy of the occlusion classifier on query images and
  their simulated occlusions (the model's own simulator, the training labels: 1 clean, 0 occluded), and the share
  of real query / gallery images it calls occluded (every Occluded-Duke query is occluded by construction; most
  gallery images are not).
- ``ocnet`` (OCNet Sec. 2.1-2.2): RAM's weight F_w of each horizontal part against how much of that stripe the
  person covers (parsing labels: person = label > 0; the most and least covered thirds of the stripes, and the
  correlation), i.e. does RAM weigh occluded parts down; and the CFM's
  probability mass on person cells of its centre crop against their share of the crop's area.
- ``pan`` (PAN Sec. 3.1-3.2): share of each part mask's positive mass on person pixels against the person's share
  of the image, and how many masks are alive (positive mass on at least 1 % of the images).
- ``amdnet`` (AMD-Net Sec. 3.2): IoU, over the query images' feature-map cells, of each part where the PAGB's
  prediction (argmax over background and the K part maps) says that part with where the parsing label (majority of
  the cell's pixels) says it (head, arms, trunk, legs, feet).
- ``sgr``: not here: each loss term's share of the backbone gradient at the start and the end of training is
  ``benchmarks/grad_norms.py`` (without and with ``MODEL.WEIGHTS``).

Parsing labels (``ocnet``, ``pan``, ``amdnet``): ``occreid parse $FASTREID_DATASETS/Occluded_Duke/query --image-root
$FASTREID_DATASETS --out $FASTREID_DATASETS/parsing`` (MediaPipe; images without a person are skipped).

    FASTREID_DATASETS=~/.cache/occreid/data .venv/bin/python benchmarks/probes.py --probe obc \\
        --config-file projects/AlignedReID/configs/occluded_duke_osnet_x0_25_cpu.yml --weights MODEL.pth \\
        [--num 512] [--out benchmarks/results/probes_cpu.md]

Prints a Markdown block (the numbers, the command, the commit); ``--out`` appends it to the file.
"""

import argparse
import os
import subprocess
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F

warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eval_sweep import build  # noqa: E402  (benchmarks/eval_sweep.py: config + checked weights -> model)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_items(cfg, split, num, seed=0):
    """``num`` (path, pid, camid) items of the config's first test set's ``split`` ("query" | "gallery"), drawn
    at random with ``seed`` (all of them when ``num`` >= the split's size)."""
    from fastreid.data.datasets import DATASET_REGISTRY
    data = DATASET_REGISTRY.get(cfg.DATASETS.TESTS[0])(root=os.environ.get("FASTREID_DATASETS", "datasets"))
    items = getattr(data, split)
    if num < len(items):
        items = [items[i] for i in sorted(np.random.default_rng(seed).choice(len(items), num, replace=False))]
    return items


def load_batch(cfg, paths):
    """(B, 3, H, W) float 0-255 images through the config's test transforms (what evaluation sees)."""
    from fastreid.data.data_utils import read_image
    from occreid.fastreid.trainer import build_test_transforms
    t = build_test_transforms(cfg)
    return torch.stack([t(read_image(p)) for p in paths])


def batches(items, size=64):
    for s in range(0, len(items), size):
        yield items[s:s + size]


def person_masks(labels, paths, shape):
    """(B, h, w) float person masks (label > 0) resized to ``shape`` by area, and the index of the images that
    have a label (the others are dropped)."""
    keep, masks = [], []
    for i, p in enumerate(paths):
        lab = labels.load(p, check_size=False)
        if lab is None:
            continue
        keep.append(i)
        m = torch.from_numpy((lab > 0).astype(np.float32))[None, None]
        masks.append(F.adaptive_avg_pool2d(m, shape)[0, 0])
    return keep, (torch.stack(masks) if masks else torch.zeros(0, *shape))


def part_labels(labels, paths, shape, num_parts):
    """(B, num_parts, h, w) one-hot parsing parts (1..num_parts) resized to ``shape`` by area, and the kept index."""
    keep, out = [], []
    for i, p in enumerate(paths):
        lab = labels.load(p, check_size=False)
        if lab is None:
            continue
        keep.append(i)
        oh = torch.from_numpy(np.stack([(lab == k + 1) for k in range(num_parts)]).astype(np.float32))[None]
        out.append(F.adaptive_avg_pool2d(oh, shape)[0])
    return keep, (torch.stack(out) if out else torch.zeros(0, num_parts, *shape))


@torch.no_grad()
def probe_obc(cfg, model, args):
    if model.simulator is None or model.heads.obc is None:
        raise SystemExit("obc: this model has no occlusion classifier (MODEL.ALIGNED.OBC.ENABLED False)")
    model.simulator.rng = np.random.default_rng(args.seed)
    correct = {"clean": [], "simulated occlusion": []}
    called = {"query": [], "gallery": []}

    def predict(x):   # 1 = clean, 0 = occluded (the training labels, aligned.py)
        glob, _, _ = model.features((x - model.pixel_mean) / model.pixel_std)
        return model.heads.obc(glob).argmax(1)

    for chunk in batches(test_items(cfg, "query", args.num, args.seed)):
        x = load_batch(cfg, [p for p, _, _ in chunk])
        correct["clean"].append((predict(x) == 1).float())
        correct["simulated occlusion"].append((predict(model.simulator.occlude_batch(x)) == 0).float())
    for split in ("query", "gallery"):
        for chunk in batches(test_items(cfg, split, args.num, args.seed + 1)):
            called[split].append((predict(load_batch(cfg, [p for p, _, _ in chunk])) == 0).float())
    acc = {k: 100 * torch.cat(v).mean().item() for k, v in correct.items()}
    occ = {k: 100 * torch.cat(v).mean().item() for k, v in called.items()}
    rows = [("OBC accuracy, clean query images (called clean)", f"{acc['clean']:.1f} %"),
            ("OBC accuracy, the same images with simulated occlusion (called occluded)",
             f"{acc['simulated occlusion']:.1f} %"),
            ("balanced accuracy on simulated occlusion", f"{(acc['clean'] + acc['simulated occlusion']) / 2:.1f} %"),
            ("real images called occluded: query (all occluded)", f"{occ['query']:.1f} %"),
            ("real images called occluded: gallery", f"{occ['gallery']:.1f} %")]
    return rows, (f"{(acc['clean'] + acc['simulated occlusion']) / 2:.1f} % balanced accuracy on simulated "
                  f"occlusion; real query {occ['query']:.1f} % vs gallery {occ['gallery']:.1f} % called occluded")


@torch.no_grad()
def probe_ocnet(cfg, model, args):
    from occreid.data.parsing import ParsingLabels
    from occreid.layers.center_focus_module import center_crop
    head = model.branches
    if head.fusion is None or not hasattr(head.fusion, "fc1") or not head.num_parts:
        raise SystemExit("ocnet: the probe needs RAM (MODEL.OCNET fusion 'ram') and horizontal parts")
    labels = ParsingLabels(args.parsing, os.environ.get("FASTREID_DATASETS", "datasets"))
    k0 = int(head.cm_global is not None)
    w_parts, vis_parts, cfm_mass, cfm_area = [], [], [], []
    for chunk in batches(test_items(cfg, "query", args.num, args.seed)):
        paths = [p for p, _, _ in chunk]
        x = model.preprocess_image({"images": load_batch(cfg, paths)})
        fmap = model.backbone(x)
        out = head(fmap)
        keep, person = person_masks(labels, paths, fmap.shape[2:])
        if not keep:
            continue
        b, d = len(paths), head.dim
        w = out["F_w"].view(b, head.num_branches, d).mean(2)[keep]            # (b', K) mean RAM weight per branch
        h = fmap.shape[2]
        bounds = np.linspace(0, h, head.num_parts + 1).round().astype(int)   # horizontal_parts' stripes
        vis = torch.stack([person[:, s:e].mean((1, 2)) for s, e in zip(bounds[:-1], bounds[1:])], 1)
        w_parts.append(w[:, k0:k0 + head.num_parts])
        vis_parts.append(vis)
        if head.cfm is not None:
            z = center_crop(fmap[keep], head.cfm.size)
            p = head.cfm.probability_map(z)                                    # (b', C or 1, s, s), sums to 1
            cell = center_crop(person[:, None], head.cfm.size)                 # (b', 1, s, s) person share
            cfm_mass.append((p * cell).sum((2, 3)).mean(1))
            cfm_area.append(cell.mean((1, 2, 3)))
    if not w_parts:
        raise SystemExit(f"ocnet: no query image has a parsing label under {args.parsing}")
    w, v = torch.cat(w_parts).flatten().numpy(), torch.cat(vis_parts).flatten().numpy()
    lo, hi = np.quantile(v, [1 / 3, 2 / 3])            # terciles of the stripes' person coverage
    visible, hidden = v >= hi, v <= lo
    corr = float(np.corrcoef(w, v)[0, 1])
    rows = [("images with a parsing label", f"{len(torch.cat(vis_parts))}"),
            (f"RAM weight of the stripes the person covers most (top third, coverage >= {100 * hi:.0f} %)",
             f"{w[visible].mean():.4f} (n {visible.sum()})"),
            (f"RAM weight of the stripes the person covers least (bottom third, coverage <= {100 * lo:.0f} %)",
             f"{w[hidden].mean():.4f} (n {hidden.sum()})"),
            ("Pearson correlation of RAM weight and person coverage over (image, part)", f"{corr:+.3f}")]
    summary = (f"RAM weight {w[visible].mean():.4f} on the most vs {w[hidden].mean():.4f} on the least covered "
               f"stripes, r = {corr:+.3f}")
    if cfm_mass:
        m, a = torch.cat(cfm_mass).mean().item(), torch.cat(cfm_area).mean().item()
        rows.append(("CFM probability mass on person cells of the centre crop vs their area share",
                     f"{100 * m:.1f} % vs {100 * a:.1f} %"))
        summary += f"; CFM mass on person {100 * m:.1f} % vs area {100 * a:.1f} %"
    return rows, summary


@torch.no_grad()
def probe_pan(cfg, model, args):
    from occreid.data.parsing import ParsingLabels
    labels = ParsingLabels(args.parsing, os.environ.get("FASTREID_DATASETS", "datasets"))
    on_person, area, alive = [], [], []
    for chunk in batches(test_items(cfg, "query", args.num, args.seed)):
        paths = [p for p, _, _ in chunk]
        masks = model.masks({"images": load_batch(cfg, paths)})                 # (B, p, h, w), any sign (Eq. 1)
        keep, person = person_masks(labels, paths, masks.shape[2:])
        pos = masks.clamp(min=0)
        alive.append(pos.sum((2, 3)) > 1e-6)                                    # (B, p)
        if keep:
            pm = pos[keep]
            on_person.append((pm * person[:, None]).sum((2, 3)) / pm.sum((2, 3)).clamp(min=1e-12))
            area.append(person.mean((1, 2)))
    if not on_person:
        raise SystemExit(f"pan: no query image has a parsing label under {args.parsing}")
    share = torch.cat(on_person)                                              # (b', p)
    alive_rate = torch.cat(alive).float().mean(0)                             # (p,)
    n_alive = int((alive_rate >= 0.01).sum())
    a = 100 * torch.cat(area).mean().item()
    rows = [("images with a parsing label", f"{len(share)}"),
            ("person pixels' share of the image", f"{a:.1f} %")]
    rows += [(f"mask {k + 1}: positive mass on person pixels (alive on {100 * alive_rate[k]:.0f} % of images)",
              f"{100 * share[:, k].mean():.1f} %") for k in range(share.shape[1])]
    rows.append(("masks alive (positive mass on >= 1 % of the images)", f"{n_alive} of {share.shape[1]}"))
    return rows, (f"masks put {100 * share.mean():.1f} % of their mass on person pixels (area {a:.1f} %); "
                  f"{n_alive} of {share.shape[1]} alive")


@torch.no_grad()
def probe_amdnet(cfg, model, args):
    from occreid.data.parsing import PART_NAMES, ParsingLabels
    labels = ParsingLabels(args.parsing, os.environ.get("FASTREID_DATASETS", "datasets"))
    inter, union = None, None
    n = 0
    for chunk in batches(test_items(cfg, "query", args.num, args.seed)):
        paths = [p for p, _, _ in chunk]
        maps = model.attention_maps({"images": load_batch(cfg, paths)})["parts"]   # (B, K, h, w)
        keep, parts = part_labels(labels, paths, maps.shape[2:], maps.shape[1])
        if not keep:
            continue
        m = maps[keep]                                           # part probabilities; background = 1 - their sum
        k = m.shape[1]
        pred = torch.cat([1 - m.sum(1, keepdim=True), m], 1).argmax(1)          # (b', h, w) in 0..K
        gt = torch.cat([1 - parts.sum(1, keepdim=True), parts], 1).argmax(1)     # majority label of each cell
        onehot = torch.arange(1, k + 1)[None, :, None, None]
        pk, gk = pred[:, None] == onehot, gt[:, None] == onehot
        i, u = (pk & gk).sum((0, 2, 3)).double(), (pk | gk).sum((0, 2, 3)).double()
        inter, union = (i, u) if inter is None else (inter + i, union + u)
        n += len(keep)
    if inter is None:
        raise SystemExit(f"amdnet: no query image has a parsing label under {args.parsing}")
    iou = (inter / union.clamp(min=1)).numpy()
    rows = [("images with a parsing label", f"{n}")]
    rows += [(f"IoU of part map {k + 1} ({PART_NAMES[k]}) with its parsing part", f"{iou[k]:.3f}")
             for k in range(len(iou))]
    return rows, f"mean IoU of the part maps with their parsing parts {iou.mean():.3f}"


PROBES = {"obc": probe_obc, "ocnet": probe_ocnet, "pan": probe_pan, "amdnet": probe_amdnet}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probe", required=True, choices=sorted(PROBES))
    ap.add_argument("--config-file", required=True)
    ap.add_argument("--weights", required=True, help="the trained checkpoint (\"\" = the starting weights)")
    ap.add_argument("--num", type=int, default=512, help="query (and gallery) images drawn at random")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--parsing", default=os.path.join(os.environ.get("FASTREID_DATASETS", "datasets"), "parsing"))
    ap.add_argument("--label", default="", help="row name (default: the probe)")
    ap.add_argument("--out")
    ap.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    cfg, model = build(args.config_file, args.weights, args.opts)
    rows, summary = PROBES[args.probe](cfg, model, args)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    cmd = " ".join(["benchmarks/probes.py", "--probe", args.probe, "--config-file", args.config_file, "--weights",
                    args.weights or '""', "--num", str(args.num), *args.opts])
    lines = [f"### {args.label or args.probe}: {summary}", "",
             f"`{cmd}` (commit {commit}{'+dirty' if dirty else ''}, seed {args.seed})", "",
             "| measure | value |", "| --- | --- |"] + [f"| {k} | {v} |" for k, v in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n" + text)


if __name__ == "__main__":
    main()
