#!/usr/bin/env python
"""CPU throughput of training and evaluation, per config and per lever, in one process.

For each config and each lever set (a row), four numbers in images per second:

  (a) model step   forward + backward + optimiser step of the built model on one fixed synthetic batch
                   (SOLVER.IMS_PER_BATCH images, P x K targets), after warm-up;
  (b) train loop   the real training loop of ``train_net.py`` (``OccReIDTrainer``: real Occluded-Duke images,
                   P x K sampler, loader workers, hooks, optimiser) for ``--steps`` steps after ``--warmup``
                   steps, evaluation and checkpoints off; images counted as the network sees them
                   (SGR's and AlignedReID + OBC's doubled batch count twice);
  (c) evaluation   FastReID's ``inference_on_dataset`` over the real test loader of a query / gallery subset
                   (``--eval-ids`` query identities), loader workers included;
  (d) forward      the model's forward alone in eval mode on a fixed batch of TEST.IMS_PER_BATCH images.

Rows of one run are levers set by config keys (``--levers``), each compared with the ``baseline`` row of the
same run and process (ratios are the result; absolute times differ between machines):

    FASTREID_DATASETS=~/.cache/occreid/data OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/throughput.py \\
        --configs projects/BoT/configs/occluded_duke_osnet_x0_25_cpu.yml --out benchmarks/results/throughput_cpu.md

The header records torch threads, loader workers, the CPU model, the commit (``+dirty`` for an uncommitted
tree) and the load average before the run (run it alone on the cores: a contended run is not a speed).
"""

import argparse
import contextlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
import warnings

warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import busy_cpu_seconds  # noqa: E402  (the same /proc/stat reading as the protocol runner)

#: lever name -> config overrides; "baseline" is the configuration before the CPU-throughput change
LEVERS = {
    "baseline": ["MODEL.CHANNELS_LAST", "off", "TEST.FROZEN_BACKBONE", "off"],
    "channels_last": ["MODEL.CHANNELS_LAST", "on", "TEST.FROZEN_BACKBONE", "off"],
    "channels_last+frozen": ["MODEL.CHANNELS_LAST", "on", "TEST.FROZEN_BACKBONE", "on",
                             "TEST.FROZEN_BACKBONE_ENGINE", "torchscript"],
    "channels_last+frozen_ort": ["MODEL.CHANNELS_LAST", "on", "TEST.FROZEN_BACKBONE", "on",
                                 "TEST.FROZEN_BACKBONE_ENGINE", "onnxruntime"],
    "channels_last+frozen+cache": ["MODEL.CHANNELS_LAST", "on", "TEST.FROZEN_BACKBONE", "on",
                                   "TEST.FROZEN_BACKBONE_ENGINE", "torchscript",
                                   "DATALOADER.CACHE_DIR", "~/.cache/occreid/decoded"],

}

DEFAULT_CONFIGS = [
    "projects/BoT/configs/occluded_duke_osnet_x0_25_cpu.yml",
    "projects/OCNet/configs/occluded_duke_osnet_x0_25_cpu.yml",
    "projects/SGR/configs/occluded_duke_osnet_x0_25_cpu.yml",
    "projects/PAN/configs/occluded_duke_osnet_x0_25_cpu.yml",
    "projects/AlignedReID/configs/occluded_duke_osnet_x0_25_cpu.yml",
    "projects/AMDNet/configs/occluded_duke_osnet_x0_25_cpu.yml",
]


def git_commit():
    try:
        c = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                           check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return c + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def own_cpu_seconds():
    import resource
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def build_cfg(config, opts):
    from fastreid.config import get_cfg
    from occreid.fastreid import add_occreid_config
    from occreid.fastreid.config import expand_config_paths
    cfg = get_cfg()
    add_occreid_config(cfg)
    cfg.merge_from_file(config)
    cfg.merge_from_list(opts)
    expand_config_paths(cfg)
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    return cfg


def synthetic_batch(n, cfg, k=4, seed=0):
    """(images (n, 3, H, W) in 0-255, targets (n,) P x K) for the model step."""
    g = torch.Generator().manual_seed(seed)
    h, w = cfg.INPUT.SIZE_TRAIN
    images = torch.rand(n, 3, h, w, generator=g) * 255
    targets = torch.arange(n // k).repeat_interleave(k)
    return images, targets


def time_model_step(cfg, steps, warmup):
    """(a): images/s of forward + backward + optimiser step on a fixed batch."""
    from fastreid.utils.events import EventStorage
    from occreid.fastreid import OccReIDTrainer
    from occreid.fastreid.trainer import images_per_step
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.HEADS.NUM_CLASSES = 702
    cfg.SOLVER.FREEZE_ITERS = 0
    torch.manual_seed(0)
    model = OccReIDTrainer.build_model(cfg)
    optimizer, _ = OccReIDTrainer.build_optimizer(cfg, model)
    images, targets = synthetic_batch(cfg.SOLVER.IMS_PER_BATCH, cfg)
    batch = {"images": images, "targets": targets}
    if cfg.MODEL.META_ARCHITECTURE == "AMDNet":
        h, w = cfg.INPUT.SIZE_TRAIN
        batch["parsing"] = torch.zeros(len(images), h // 4, w // 4, dtype=torch.long)
    model.train()
    times = []
    with EventStorage(0):
        for _ in range(warmup + steps):
            t = time.perf_counter()
            loss = sum(model(dict(batch)).values())
            optimizer.zero_grad(set_to_none=False)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - t)
    return images_per_step(cfg) / (sum(times[warmup:]) / steps)


def time_forward(cfg, steps, warmup):
    """(d): images/s of the eval-mode forward on a fixed batch of TEST.IMS_PER_BATCH images."""
    from occreid.fastreid import OccReIDTrainer
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.HEADS.NUM_CLASSES = 702
    model = OccReIDTrainer.build_model(cfg).eval()
    images, _ = synthetic_batch(cfg.TEST.IMS_PER_BATCH, cfg)
    times = []
    with _test_context(cfg, model), torch.no_grad():
        for _ in range(warmup + steps):
            t = time.perf_counter()
            model({"images": images})
            times.append(time.perf_counter() - t)
    return len(images) / (sum(times[warmup:]) / steps)


class _StepTimes:
    """A hook collecting the wall time of each training step (data loading included)."""

    def __init__(self):
        from fastreid.engine import hooks
        self.times = []

        class Hook(hooks.HookBase):
            def before_step(hook):
                hook._t = time.perf_counter()

            def after_step(hook):
                self.times.append(time.perf_counter() - hook._t)
        self.hook = Hook()


def time_train_loop(cfg, steps, warmup, out_dir):
    """(b): images/s of OccReIDTrainer's loop over real images (evaluation and checkpoints off).
    Returns (images/s, the losses of every step)."""
    from fastreid.engine import hooks
    from fastreid.engine.train_loop import TrainerBase
    from occreid.fastreid import OccReIDTrainer
    from occreid.fastreid.trainer import images_per_step
    cfg = cfg.clone()
    cfg.defrost()
    per_step = images_per_step(cfg)
    cfg.SOLVER.BUDGET_IMAGES = (warmup + steps) * per_step
    cfg.OUTPUT_DIR = out_dir
    os.makedirs(out_dir, exist_ok=True)
    cfg.SEED = 0 if cfg.SEED < 0 else cfg.SEED
    cfg.freeze()
    trainer = OccReIDTrainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer._hooks = [h for h in trainer._hooks
                      if not isinstance(h, (hooks.EvalHook, hooks.PeriodicCheckpointer, hooks.PreciseBN))]
    timer = _StepTimes()
    trainer.register_hooks([timer.hook])
    losses = []

    class LossHook(hooks.HookBase):
        def after_step(hook):
            losses.append(float(trainer.storage.history("total_loss").latest()))
    trainer.register_hooks([LossHook()])
    # DefaultTrainer.train asserts that an evaluation ran: the loop itself is TrainerBase.train
    TrainerBase.train(trainer, trainer.start_epoch, trainer.max_epoch, trainer.iters_per_epoch)
    trainer._trainer._data_loader_iter = None   # its loader workers end here, not at the end of the benchmark
    import gc
    gc.collect()
    t = timer.times[warmup:]
    return per_step / (sum(t) / len(t)), losses


class _CountEvaluator:
    def __init__(self):
        self.n = 0

    def reset(self):
        self.n = 0

    def process(self, inputs, outputs):
        self.n += len(outputs)

    def evaluate(self):
        return {}


def time_evaluation(cfg, eval_ids):
    """(c): images/s of FastReID's inference_on_dataset over the real test loader of ``eval_ids`` query ids
    (first batch excluded: worker start-up). Returns (images/s, images)."""
    from fastreid.evaluation import inference_on_dataset
    from occreid.fastreid import OccReIDTrainer
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.HEADS.NUM_CLASSES = 702
    cfg.DATASETS.SUBSET.TEST_IDS = eval_ids
    cfg.freeze()
    model = OccReIDTrainer.build_model(cfg)
    t0 = time.perf_counter()
    loader, _ = OccReIDTrainer.build_test_loader(cfg, cfg.DATASETS.TESTS[0])   # builds a decoded cache if asked
    first = {"loader_seconds": time.perf_counter() - t0}

    class Timed(_CountEvaluator):
        def process(self, inputs, outputs):
            super().process(inputs, outputs)
            if "t" not in first:
                first["t"], first["n"] = time.perf_counter(), self.n

    ev = Timed()
    t = time.perf_counter()
    with _test_context(cfg, model):
        trace_seconds = time.perf_counter() - t
        inference_on_dataset(model, loader, ev, flip_test=cfg.TEST.FLIP.ENABLED)
    seconds = time.perf_counter() - first["t"]
    return (ev.n - first["n"]) / seconds, ev.n, trace_seconds, first["loader_seconds"]


def _test_context(cfg, model):
    """What OccReIDTrainer.test does around the evaluation: the frozen backbone when TEST.FROZEN_BACKBONE is on."""
    from occreid.fastreid.trainer import (channels_last_enabled, frozen_backbone, frozen_backbone_enabled,
                                          frozen_backbone_engine)
    if frozen_backbone_enabled(cfg):
        return frozen_backbone(model, tuple(cfg.INPUT.SIZE_TEST), channels_last_enabled(cfg),
                               frozen_backbone_engine(cfg))
    return contextlib.nullcontext(model)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS)
    p.add_argument("--levers", nargs="+", default=list(LEVERS), choices=list(LEVERS))
    p.add_argument("--parts", default="abcd", help="which of (a)-(d) to measure")
    p.add_argument("--steps", type=int, default=50, help="timed training-loop steps (b)")
    p.add_argument("--warmup", type=int, default=5, help="untimed training-loop steps before (b)")
    p.add_argument("--model-steps", type=int, default=5, help="timed steps of (a) and (d)")
    p.add_argument("--eval-ids", type=int, default=120, help="query identities of (c)'s subset")
    p.add_argument("--opts", nargs="*", default=[], help="KEY VALUE overrides for every row")
    p.add_argument("--out", help="append the Markdown table to this file")
    p.add_argument("--json", help="write the raw results (and (b)'s losses) to this JSON file")
    p.add_argument("--note", default="", help="a line for the header (e.g. what else ran)")
    args = p.parse_args(argv)
    if "b" in args.parts or "c" in args.parts:
        if not os.environ.get("FASTREID_DATASETS"):
            p.error("set FASTREID_DATASETS to the data root (parts b and c read real images)")
    import occreid.fastreid  # noqa: F401
    logging.basicConfig(level=logging.WARNING)

    header = (f"commit {git_commit()} · {cpu_model()} · {os.cpu_count()} cores · torch {torch.__version__} · "
              f"{torch.get_num_threads()} torch threads · load average before {os.getloadavg()[0]:.2f} · "
              f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(header, flush=True)
    results = []
    for config in args.configs:
        for lever in args.levers:
            cfg = build_cfg(config, LEVERS[lever] + list(args.opts))
            row = {"config": config, "lever": lever, "workers": cfg.DATALOADER.NUM_WORKERS}
            busy0, own0, t0 = busy_cpu_seconds(), own_cpu_seconds(), time.time()
            if "a" in args.parts:
                row["a"] = time_model_step(cfg, args.model_steps, 2)
            if "b" in args.parts:
                row["b"], row["losses"] = time_train_loop(cfg, args.steps, args.warmup,
                                                          os.path.join(ROOT, "logs", "throughput", lever))
            if "c" in args.parts:
                row["c"], row["eval_images"], row["trace_seconds"], row["loader_seconds"] = time_evaluation(cfg, args.eval_ids)
            if "d" in args.parts:
                row["d"] = time_forward(cfg, args.model_steps, 1)
            if busy0 is not None:   # CPU time of other processes while this row ran (0 when alone)
                row["other_cpu_seconds"] = round(max(0.0, busy_cpu_seconds() - busy0 - (own_cpu_seconds() - own0)), 1)
                row["wall_seconds"] = round(time.time() - t0, 1)
            results.append(row)
            print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()
                              if k != "losses"}), flush=True)

    lines = [f"### {time.strftime('%Y-%m-%d')}: {header}", ""]
    if args.note:
        lines += [args.note, ""]
    cmd = "benchmarks/throughput.py " + " ".join(a if " " not in a else repr(a) for a in (argv or sys.argv[1:]))
    lines += [f"Command: `OMP_WAIT_POLICY=PASSIVE .venv/bin/python {cmd}` ({args.steps} timed loop steps after "
              f"{args.warmup}; (c) on {args.eval_ids} query ids' query + gallery images).", "",
              "| config | lever | workers | (a) model step | (b) train loop | (c) evaluation | (d) forward | "
              "(b) / baseline | (c) / baseline | (c) / (d) | other CPU s / row s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in results:
        base = next(r for r in results if r["config"] == row["config"] and r["lever"] == results[0]["lever"])

        def cell(k):
            return f"{row[k]:.1f}" if k in row else ""

        def ratio(k, ref):
            return f"{row[k] / ref[k]:.2f}x" if k in row and k in ref else ""
        lines.append(f"| {os.path.basename(os.path.dirname(os.path.dirname(row['config'])))}/"
                     f"{os.path.basename(row['config'])} | {row['lever']} | {row['workers']} | {cell('a')} | "
                     f"{cell('b')} | {cell('c')} | {cell('d')} | {ratio('b', base)} | {ratio('c', base)} | "
                     f"{ratio('c', {'c': row['d']}) if 'd' in row else ''} | "
                     f"{row.get('other_cpu_seconds', '')} / {row.get('wall_seconds', '')} |")
    lines += ["", "Images per second; (c) / (d): evaluation over the model's forward alone (1.0 = no loader cost); "
              "other CPU s: CPU seconds other processes used while the row ran (/proc/stat minus this process and "
              "its workers; near 0 when alone).", ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "a") as f:
            f.write(text + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "rows": results}, f, indent=1)


if __name__ == "__main__":
    main()
