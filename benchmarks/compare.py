#!/usr/bin/env python
"""The comparison protocol: configs x seeds trained under one budget of images seen, then evaluated.

Every run is ``train_net.py --config-file CONFIG SEED s SOLVER.BUDGET_IMAGES N OUTPUT_DIR ... OVERRIDES``
(so a method that doubles the batch its network sees, SGR with Compound Batch Erasing, gets half the
steps: :func:`occreid.fastreid.trainer.budget_iterations`), from the starting weights its config names,
evaluated on the full query / gallery of its config's test set. Evaluation-only rows (``eval_of``) re-test
another row's checkpoint with other overrides (ME on / off, an alpha sweep of OCNet's Eq. 4).

    # train and evaluate every row of a protocol that has no result yet (resumable: finished runs are kept)
    python benchmarks/compare.py run --protocol benchmarks/protocols/occluded_duke_cpu.yml
    # only some rows / seeds
    python benchmarks/compare.py run --protocol P --only BoT OCNet --seeds 0
    # the Markdown table (mean +- sample std over seeds), a PNG chart, and the README block
    python benchmarks/compare.py table --protocol P --readme README.md

A protocol is a YAML file::

    name: occluded_duke_cpu
    budget_images: 7808          # images seen by the network, the same for every row
    seeds: [0, 1, 2]             # default seeds of a row
    results: benchmarks/results/compare_occluded_duke_cpu   # one JSON per run, table.md, chart.png
    logs: logs/compare/occluded_duke_cpu                     # OUTPUT_DIR of the runs (checkpoints)
    rows:
      - name: BoT
        config: projects/BoT/configs/occluded_duke_osnet_x0_25_cpu.yml
        group: headline          # rows are tabled per group
        overrides: []            # trailing KEY VALUE pairs
      - name: SGR, ME off
        eval_of: SGR             # re-test that row's checkpoints (each seed) with these overrides
      - name: Floor (no training)
        config: projects/BoT/configs/occluded_duke_osnet_x0_25_cpu.yml
        eval_only: true          # the starting weights evaluated as they are
        overrides: [MODEL.SGR.ME.ENABLED, "False"]

Each run's JSON holds: row name, config, overrides, commit, seed, images seen, iterations, wall time,
training seconds, images / s, Rank-1/5/10, mAP, mINP. Datasets are read from ``$FASTREID_DATASETS``.
"""

import argparse
import json
import math
import os
import re
import subprocess
import sys
import time

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METRICS = ("Rank-1", "Rank-5", "Rank-10", "mAP", "mINP")
README_BEGIN = "<!-- compare:{name}:begin -->"
README_END = "<!-- compare:{name}:end -->"


def load_protocol(path):
    """The protocol at ``path`` with defaults filled in. Raises ValueError naming the file and the key."""
    with open(path) as f:
        proto = yaml.safe_load(f)
    for key in ("name", "budget_images", "rows"):
        if key not in proto:
            raise ValueError(f"{path}: protocol has no {key!r}")
    proto.setdefault("seeds", [0])
    proto.setdefault("results", os.path.join("benchmarks", "results", f"compare_{proto['name']}"))
    proto.setdefault("logs", os.path.join("logs", "compare", proto["name"]))
    names = set()
    for i, row in enumerate(proto["rows"]):
        if "name" not in row or ("config" not in row and "eval_of" not in row):
            raise ValueError(f"{path}: row {i} needs 'name' and 'config' (or 'eval_of')")
        if row["name"] in names:
            raise ValueError(f"{path}: row name {row['name']!r} appears twice")
        names.add(row["name"])
        row.setdefault("overrides", [])
        row.setdefault("group", "headline")
        row.setdefault("seeds", proto["seeds"])
        if "eval_of" in row:
            base = next((r for r in proto["rows"] if r["name"] == row["eval_of"]), None)
            if base is None:
                raise ValueError(f"{path}: row {row['name']!r}: eval_of {row['eval_of']!r} is not a row")
            row.setdefault("config", base["config"])
            row["base_overrides"] = base.get("overrides", [])
    return proto


def slug(name):
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")


def run_dir(proto, row_name, seed):
    return os.path.join(proto["logs"], slug(row_name), f"seed{seed}")


def result_path(proto, row_name, seed):
    return os.path.join(proto["results"], "runs", f"{slug(row_name)}__seed{seed}.json")


def command(proto, row, seed):
    """The train_net.py command line of one run."""
    out = run_dir(proto, row["name"], seed)
    cmd = [sys.executable, os.path.join(ROOT, "train_net.py"), "--config-file", row["config"]]
    if "eval_of" in row:
        weights = os.path.join(run_dir(proto, row["eval_of"], seed), "model_final.pth")
        cmd += ["--eval-only"]
        opts = list(row["base_overrides"]) + list(row["overrides"]) + ["MODEL.WEIGHTS", weights]
    elif row.get("eval_only"):   # the starting weights as they are (the floor row): no training
        cmd += ["--eval-only"]
        opts = list(row["overrides"])
    else:
        opts = list(row["overrides"])
    cmd += ["SEED", str(seed), "SOLVER.BUDGET_IMAGES", str(proto["budget_images"]), "OUTPUT_DIR", out]
    return cmd + [str(o) for o in opts], out


def tree_state():
    """(commit, dirty): the checkout's commit and whether tracked files differ from it."""
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    return commit, dirty


def machine():
    """The CPU model and core count, for the run's JSON."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores"


def busy_cpu_seconds():
    """CPU seconds the whole machine has spent busy (not idle / iowait) since boot, from /proc/stat (None elsewhere)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds():
    import resource
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(proto, only=None, seeds=None, dry_run=False, allow_dirty=False):
    """Run every (row, seed) of ``proto`` without a result JSON yet; rows in file order, training rows
    before the evaluation-only rows that need their checkpoints.

    Refuses to run from a tree with uncommitted changes to tracked files (a run must be re-creatable from its
    commit) unless ``allow_dirty``, which marks the JSON ``"dirty": true``. Each JSON records the machine and
    ``other_cpu_seconds``: CPU time the machine spent on anything but the run while it ran (from /proc/stat minus
    the run's own processes); ``contended`` is true when that exceeds 5 % of the run's wall time x cores."""
    commit, dirty = tree_state()
    if dirty and not allow_dirty and not dry_run:
        raise SystemExit("[compare] the tree has uncommitted changes: commit them first (a run must be re-creatable "
                         "from its commit), or pass --allow-dirty to run anyway with the JSON marked dirty")
    rows = [r for r in proto["rows"] if not only or r["name"] in only]
    todo = [(r, s) for r in rows for s in r["seeds"] if seeds is None or s in seeds]
    # seed-major: every row's first seed before any row's second (a partial protocol is a whole table);
    # evaluation-only rows after the training run they need
    order = {r["name"]: i for i, r in enumerate(rows)}
    todo.sort(key=lambda rs: (rs[0]["seeds"].index(rs[1]), "eval_of" in rs[0], order[rs[0]["name"]]))
    for i, (row, seed) in enumerate(todo):
        dest = result_path(proto, row["name"], seed)
        if os.path.exists(dest):
            print(f"[compare] {i + 1}/{len(todo)} {row['name']} seed {seed}: done ({dest})")
            continue
        cmd, out = command(proto, row, seed)
        print(f"[compare] {i + 1}/{len(todo)} {row['name']} seed {seed}: {' '.join(cmd)}", flush=True)
        if dry_run:
            continue
        os.makedirs(out, exist_ok=True)
        start = time.time()
        busy0, own0 = busy_cpu_seconds(), children_cpu_seconds()
        with open(os.path.join(out, "compare_stdout.log"), "w") as log:
            rc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
        busy1, own1 = busy_cpu_seconds(), children_cpu_seconds()
        if rc != 0:
            print(f"[compare] FAILED (exit {rc}); see {os.path.join(out, 'compare_stdout.log')}", flush=True)
            continue
        with open(os.path.join(out, "occreid_run.json")) as f:
            record = json.load(f)
        wall = time.time() - start
        other = None if busy0 is None else max(0.0, (busy1 - busy0) - (own1 - own0))
        record.update(row=row["name"], group=row["group"], protocol=proto["name"], runner_seconds=round(wall, 1),
                      dirty=dirty, machine=machine(),
                      other_cpu_seconds=None if other is None else round(other, 1),
                      contended=None if other is None else other > 0.05 * wall * (os.cpu_count() or 1))
        if "eval_of" in row:
            record["eval_of"] = row["eval_of"]
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(dest, "w") as f:
            json.dump(record, f, indent=1)
        m = next(iter(record["metrics"].values()))
        print(f"[compare]   Rank-1 {m['Rank-1']:.2f} mAP {m['mAP']:.2f} mINP {m['mINP']:.2f} "
              f"({record['runner_seconds']:.0f} s)", flush=True)


def collect(proto):
    """{row name: [records]} of the finished runs, in protocol order."""
    out = {}
    for row in proto["rows"]:
        recs = []
        for seed in row["seeds"]:
            p = result_path(proto, row["name"], seed)
            if os.path.exists(p):
                with open(p) as f:
                    recs.append(json.load(f))
        if recs:
            out[row["name"]] = recs
    return out


def mean_std(values):
    """Mean and sample standard deviation (n - 1; 0 for one value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return mean, std


def fmt(values):
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f}" if len(values) > 1 else f"{mean:.2f}"


def table(proto):
    """Markdown tables (one per group) of mean ± sample std over seeds."""
    runs = collect(proto)
    rows_by_name = {r["name"]: r for r in proto["rows"]}
    lines = []
    groups = []
    for r in proto["rows"]:
        if r["group"] not in groups:
            groups.append(r["group"])
    for group in groups:
        names = [n for n in runs if rows_by_name[n]["group"] == group]
        if not names:
            continue
        lines += [f"**{group}**", "",
                  "| row | seeds | " + " | ".join(METRICS) + " | images seen | steps x images | images/s | command |",
                  "| --- | --- | " + " | ".join("---" for _ in METRICS) + " | --- | --- | --- | --- |"]
        for name in names:
            recs = runs[name]
            row = rows_by_name[name]
            ms = [next(iter(r["metrics"].values())) for r in recs]
            cells = [fmt([m[k] for m in ms]) for k in METRICS]
            base = rows_by_name[row["eval_of"]] if "eval_of" in row else row
            train = runs.get(base["name"], [])  # an eval-only row reports its training row's budget
            seen = train[0].get("images_seen", "") if train else ""
            steps = f"{train[0]['iterations']} x {train[0].get('images_per_step', '')}" \
                if train and train[0].get("iterations") else ""
            speeds = [r["images_per_second"] for r in train if r.get("images_per_second")]
            ips = fmt(speeds) if speeds else ""   # evaluation-only rows (the floor) have no training speed
            if speeds and any(r.get("contended") for r in train):
                ips += " (shared cores)"   # other jobs ran beside it: not a speed
            if any(r.get("dirty") or str(r.get("commit", "")).endswith("+dirty") for r in recs):
                name = name + " (uncommitted tree)"
            opts = " ".join(str(o) for o in row["overrides"])
            cmd = (f"`--eval-only` of {row['eval_of']}" + (f" + `{opts}`" if opts else "")) if "eval_of" in row \
                else f"`{row['config']}`" + (f" `{opts}`" if opts else "")
            lines.append(f"| {name} | {','.join(str(r['seed']) for r in recs)} | " + " | ".join(cells)
                         + f" | {seen} | {steps} | {ips} | {cmd} |")
        lines.append("")
    commits = sorted({r["commit"] for recs in runs.values() for r in recs if r.get("commit")})
    lines.append(f"Budget: {proto['budget_images']} images seen by the network per run; metrics in %, "
                 f"mean ± sample standard deviation over the seeds listed; commits: {', '.join(commits)}.")
    return "\n".join(lines) + "\n"


def chart(proto, path):
    """A PNG bar chart of Rank-1 and mAP (mean, error bar = sample std) per row."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = collect(proto)
    names = list(runs)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(names) + 2), 4.5))
    width = 0.38
    for j, metric in enumerate(("Rank-1", "mAP")):
        stats = [mean_std([next(iter(r["metrics"].values()))[metric] for r in runs[n]]) for n in names]
        xs = [i + (j - 0.5) * width for i in range(len(names))]
        ax.bar(xs, [s[0] for s in stats], width, yerr=[s[1] for s in stats], capsize=3, label=metric)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([f"{n}\n(n={len(runs[n])})" for n in names], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("%")
    ax.set_title(f"{proto['name']}: {proto['budget_images']} images seen per run (mean ± std over seeds)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ladder(protocols, out_png, out_md):
    """The budget ladder: headline rows of several protocols (one per budget) against images seen.

    Writes a PNG (Rank-1 and mAP against images seen, log axis, one line per row, the floor rows as horizontal
    lines) and a Markdown table (per row and budget: mean Rank-1 / mAP over the seeds run, and the difference
    to BoT at the same budget). Returns the table text."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points, floors = {}, {}
    for proto in protocols:
        runs = collect(proto)
        rows = {r["name"]: r for r in proto["rows"]}
        for name, recs in runs.items():
            ms = [next(iter(r["metrics"].values())) for r in recs]
            r1, mp = mean_std([m["Rank-1"] for m in ms]), mean_std([m["mAP"] for m in ms])
            if rows[name].get("group") == "floor":
                floors[name] = (r1[0], mp[0])
            elif rows[name].get("group", "headline") == "headline":
                points.setdefault(name, {})[proto["budget_images"]] = (r1, mp, len(recs))
    budgets = sorted({b for v in points.values() for b in v})
    lines = ["| row | " + " | ".join(f"{b:,} images: Rank-1 / mAP (n) | vs BoT" for b in budgets) + " |",
             "| --- | " + " | ".join("--- | ---" for _ in budgets) + " |"]
    for name, by_budget in points.items():
        cells = []
        for b in budgets:
            if b not in by_budget:
                cells += ["not run", ""]
                continue
            (r1, _), (mp, _), n = by_budget[b]
            bot = points.get("BoT", {}).get(b)
            diff = f"{r1 - bot[0][0]:+.2f} / {mp - bot[1][0]:+.2f}" if bot and name != "BoT" else ""
            cells += [f"{r1:.2f} / {mp:.2f} ({n})", diff]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, (r1, mp) in floors.items():
        lines.append(f"| {name} | " + " | ".join(f"{r1:.2f} / {mp:.2f} | " for _ in budgets) + " |")
    text = "\n".join(lines) + "\n"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, k, label in ((axes[0], 0, "Rank-1 (%)"), (axes[1], 1, "mAP (%)")):
        for name, by_budget in points.items():
            xs = sorted(by_budget)
            ax.plot(xs, [by_budget[x][k][0] for x in xs], marker="o", label=name)
        for name, vals in floors.items():
            ax.axhline(vals[k], linestyle="--", color="grey", linewidth=1)
            ax.text(budgets[0] if budgets else 1, vals[k], " " + name, fontsize=7, va="bottom", color="grey")
        ax.set_xscale("log")
        ax.set_xlabel("images seen by the network")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    with open(out_md, "w") as f:
        f.write(text)
    return text


def update_readme(readme, name, text):
    """Replace the block between ``<!-- compare:NAME:begin -->`` and ``<!-- compare:NAME:end -->`` of
    ``readme`` with ``text``. Raises ValueError when the markers are missing."""
    begin, end = README_BEGIN.format(name=name), README_END.format(name=name)
    with open(readme) as f:
        content = f.read()
    if begin not in content or end not in content:
        raise ValueError(f"{readme}: no {begin} ... {end} block to fill")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(readme, "w") as f:
        f.write(head + begin + "\n" + text + end + tail)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="train + evaluate the rows without a result")
    p_tab = sub.add_parser("table", help="write table.md and chart.png (and a README block)")
    p_lad = sub.add_parser("ladder", help="the budget ladder over several protocols: ladder.png and ladder.md")
    p_lad.add_argument("--protocols", nargs="+", required=True)
    p_lad.add_argument("--out", default="benchmarks/results/ladder_occluded_duke_cpu", help="folder to write")
    for p in (p_run, p_tab):
        p.add_argument("--protocol", required=True)
        p.add_argument("--budget-images", type=int, help="override the protocol's budget")
        p.add_argument("--results", help="override the protocol's results folder")
    p_run.add_argument("--only", nargs="+", help="row names")
    p_run.add_argument("--seeds", nargs="+", type=int)
    p_run.add_argument("--dry-run", action="store_true", help="print the commands only")
    p_run.add_argument("--allow-dirty", action="store_true",
                       help="run from a tree with uncommitted changes (the JSONs are marked dirty)")
    p_tab.add_argument("--readme", action="append", default=[], help="file(s) with a compare block to fill")
    args = parser.parse_args(argv)
    if args.cmd == "ladder":
        os.makedirs(args.out, exist_ok=True)
        print(ladder([load_protocol(p) for p in args.protocols], os.path.join(args.out, "ladder.png"),
                     os.path.join(args.out, "ladder.md")))
        return
    proto = load_protocol(args.protocol)
    if args.budget_images:
        proto["budget_images"] = args.budget_images
    if args.results:
        proto["results"] = args.results
    if args.cmd == "run":
        if not os.environ.get("FASTREID_DATASETS"):
            parser.error("set FASTREID_DATASETS to the data root (docs/datasets.md)")
        run(proto, args.only, args.seeds, args.dry_run, args.allow_dirty)
    else:
        text = table(proto)
        os.makedirs(proto["results"], exist_ok=True)
        with open(os.path.join(proto["results"], "table.md"), "w") as f:
            f.write(text)
        chart(proto, os.path.join(proto["results"], "chart.png"))
        for readme in args.readme:
            update_readme(readme, proto["name"], text)
        print(text)


if __name__ == "__main__":
    main()
