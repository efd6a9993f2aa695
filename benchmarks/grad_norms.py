#!/usr/bin/env python
"""Each loss term's gradient at the backbone output, on real training batches: is any term inert?

For a config (any occreid or FastReID meta-architecture whose training forward returns FastReID's loss
dict), builds the model as train_net.py does (starting weights included), draws real batches from its
training loader (seeded), and for every loss term L_k computes g_k = dL_k / dF, F the backbone's output
map (B, C, h, w). Reported per term, averaged over the batches:

- ``|g|``: the Frobenius norm of g_k over the batch;
- ``per image``: the mean over images of the norm of image i's slice of g_k;
- ``cos(rest)``: the cosine between g_k and the gradient of the sum of the other terms (does the term
  pull the backbone along or across the rest of the objective);
- the term's value.

    FASTREID_DATASETS=~/.cache/occreid/data .venv/bin/python benchmarks/grad_norms.py \\
        --config-file projects/SGR/configs/occluded_duke_osnet_x0_25_cpu.yml --batches 3 [KEY VALUE ...]

The gradient is taken at initialisation (the config's starting weights, new modules random), or of a
checkpoint with ``MODEL.WEIGHTS``. Prints a Markdown table; ``--out FILE`` also writes it.
"""

import argparse
import os
import sys
import warnings

warnings.filterwarnings("ignore", message="TypedStorage is deprecated")

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build(config_file, opts, seed):
    import occreid.fastreid  # noqa: F401
    from fastreid.config import get_cfg
    from occreid.fastreid import OccReIDTrainer, add_occreid_config
    from occreid.fastreid.config import expand_config_paths
    from occreid.fastreid.trainer import load_checked_weights, seed_everything

    cfg = add_occreid_config(get_cfg())
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.MODEL.DEVICE = "cpu"
    expand_config_paths(cfg)
    seed_everything(seed)
    loader = OccReIDTrainer.build_train_loader(cfg)
    cfg.MODEL.HEADS.NUM_CLASSES = loader.dataset.num_classes  # what FastReID's auto_scale_hyperparams sets
    model = OccReIDTrainer.build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        load_checked_weights(model, cfg.MODEL.WEIGHTS)
    return cfg, model, loader


def term_gradients(model, batch, at="backbone"):
    """({term: gradient at the output of module ``at`` (B, C, h, w)}, {term: value}) for one batch.

    ``at``: dotted module name, "backbone" by default; PAN runs its backbone in pieces, so for PAN give the
    unit its global and local branches share (``backbone.conv4`` = Conv40 for OSNet, ``backbone.layer3``
    for ResNet)."""
    captured = {}
    handle = model.get_submodule(at).register_forward_hook(lambda m, i, o: captured.setdefault("F", o))
    try:
        losses = model(batch)
    finally:
        handle.remove()
    if "F" not in captured:
        raise ValueError(f"module {at!r} did not run in the training forward; give --at another module")
    fmap = captured["F"]
    grads, values = {}, {}
    for name, value in losses.items():
        (g,) = torch.autograd.grad(value, fmap, retain_graph=True, allow_unused=True)
        grads[name] = torch.zeros_like(fmap) if g is None else g
        values[name] = float(value.detach())
    return grads, values


def summarise(grads):
    """Per term: (|g|, mean per-image |g_i|, cos(g, sum of the other terms' g))."""
    total = sum(grads.values())
    out = {}
    for name, g in grads.items():
        rest = (total - g).flatten()
        flat = g.flatten()
        denom = flat.norm() * rest.norm()
        cos = float(flat @ rest / denom) if denom > 0 else float("nan")
        per_image = float(g.flatten(1).norm(dim=1).mean())
        out[name] = (float(flat.norm()), per_image, cos)
    return out


from report import emit  # noqa: E402  (benchmarks/report.py, beside this script)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out")
    parser.add_argument("--at", default="backbone", help="module whose output the gradients are taken at "
                        "(default: backbone; PAN: backbone.conv4 = Conv40)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides")
    args = parser.parse_args(argv)
    cfg, model, loader = build(args.config_file, args.opts, args.seed)
    model.train()
    sums, vals = {}, {}
    from fastreid.utils.events import EventStorage
    it = iter(loader)
    for _ in range(args.batches):
        with EventStorage(0):  # FastReID's losses log their accuracy into one
            grads, values = term_gradients(model, next(it), args.at)
        for name, stats in summarise(grads).items():
            sums.setdefault(name, []).append(stats)
            vals.setdefault(name, []).append(values[name])
    where = "the backbone output" if args.at == "backbone" else f"the output of `{args.at}`"
    lines = [f"Gradient of each loss term at {where}: `{args.config_file}` "
             f"{' '.join(args.opts)} (seed {args.seed}, mean of {args.batches} real batches of "
             f"{cfg.SOLVER.IMS_PER_BATCH} sampled images)", "",
             "| term | value | grad norm (batch) | grad norm per image | cos with the other terms |",
             "| --- | --- | --- | --- | --- |"]
    for name, stats in sums.items():
        n = len(stats)
        mean = [sum(s[k] for s in stats) / n for k in range(3)]
        lines.append(f"| {name} | {sum(vals[name]) / n:.4g} | {mean[0]:.3g} | {mean[1]:.3g} | {mean[2]:+.2f} |")
    text = "\n".join(lines) + "\n"
    emit(text, args.out)


if __name__ == "__main__":
    main()
