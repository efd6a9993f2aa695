"""Parameters and FLOPs of PAN-ResNet-50 at 256 x 128 (paper, Sec. 4: 5.98 GFLOPs, 46.9 M parameters; PCB
5.97 / 42.7), and of the same model under each reading of "Conv40" / "Conv50" (MODEL.PAN.UNIT).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (PyTorch's own counter: one multiply-add
= 2 FLOPs); "GMACs" = FLOPs / 2, the unit most re-ID papers (thop, fvcore) call "FLOPs". One image, eval mode.

    .venv/bin/python benchmarks/pan_cost.py [--classes 702] [--out benchmarks/results/pan_cost.md]
"""

import argparse
import os
import sys

import torch
from torch.utils.flop_counter import FlopCounterMode


def build(config, opts, classes):
    import occreid.fastreid  # noqa: F401
    from fastreid.config import get_cfg
    from fastreid.modeling import build_model
    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.merge_from_list(opts)
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.HEADS.NUM_CLASSES = classes
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg).eval()


def count(model):
    params = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
    x = {"images": torch.zeros(1, 3, 256, 128)}
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        model(x)
    return params, fc.get_total_flops()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classes", type=int, default=702, help="training identities (Occluded-Duke 702, Market 751)")
    ap.add_argument("--out", default=None, help="also write the Markdown table here")
    args = ap.parse_args(argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pan = os.path.join(root, "projects", "PAN", "configs", "occluded_duke_r50.yml")
    bot = os.path.join(root, "projects", "BoT", "configs", "occluded_duke_r50.yml")
    rows = [("BoT ResNet-50 (last stride 1), FastReID Baseline", bot, []),
            ("PAN-R50, Conv40/Conv50 = stages conv4_x/conv5_x (ours, default)", pan, []),
            ("PAN-R50, Conv40/Conv50 = last two bottleneck blocks (MODEL.PAN.UNIT block)", pan,
             ["MODEL.PAN.UNIT", "block"]),
            ("PAN-R50, no buffer layer (Table 3 row 5: F_g^2 = Conv50)", pan, ["MODEL.PAN.LOCAL_SOURCE", "conv50"])]
    lines = [f"PAN cost at 256 x 128, {args.classes} identities (`.venv/bin/python benchmarks/pan_cost.py "
             f"--classes {args.classes}`; torch {torch.__version__}). Paper: PAN-ResNet-50 46.9 M parameters, "
             "5.98 GFLOPs; PCB 42.7 M, 5.97 GFLOPs.", "",
             "| model | parameters (M) | backbone / buffer / heads (M) | GFLOPs (2 x MAC) | GMACs |",
             "|---|---|---|---|---|"]
    for name, cfg, opts in rows:
        params, flops = count(build(cfg, opts, args.classes))
        parts = " / ".join(f"{params.get(k, 0) / 1e6:.2f}" for k in ("backbone", "buffer", "heads"))
        lines.append(f"| {name} | {sum(params.values()) / 1e6:.2f} | {parts} | {flops / 1e9:.2f} | {flops / 2e9:.2f} |")
    fc = 2048 * 1000 + 1000
    lines += ["", f"torchvision's ResNet-50 keeps its ImageNet classifier (fc, {fc / 1e6:.2f} M parameters, "
              "0.002 GMACs); a count of the model with that layer left in adds it to every row above."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    sys.exit(main())
