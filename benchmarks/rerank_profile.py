#!/usr/bin/env python
"""Stage breakdown of occreid's exact k-reciprocal re-ranking against the exact k-NN floor.

One process, the same real features (full Occluded-Duke, N = 19,871: OSNet x0.25 MSMT17 features, the
cache of benchmarks/rerank.py), the same threads for everything (torch, OpenBLAS and faiss's OpenMP pool
set to one number). Per repetition, in turn: the floor (faiss ``IndexFlatL2`` exact search of all N for
k = k1 + 1 = 21 neighbours), then ``re_ranking(q, g, search="exact")`` (zhong mode, the dense q x g output)
of each implementation: the current one and, with ``--before REV``, the module as it was at git revision
REV (loaded from ``git show``, so both run in the same process on the same features). Each number is the
best of ``--repeat`` runs (the machine is shared; the best is the least disturbed).

Stages are timed by wrapping the module's stage functions (``exact_neighbour_pass``, ``reciprocal_sets``,
``expanded_sets``, ``encode_v``, ``query_expansion``, ``jaccard_min_sum``, and ``mix`` where the module has
it); "rest" is the total minus the stages (mixing, output, glue). Also reported: Rank-1 / mAP of each
output and the largest difference between the two outputs.

    python benchmarks/rerank_profile.py --before 83aed76 --out benchmarks/results/rerank_profile_cpu.md
"""

import argparse
import functools
import importlib.util
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rerank import metrics, real_features  # noqa: E402  (benchmarks/rerank.py)
from report import emit  # noqa: E402

STAGES = ("exact_neighbour_pass", "reciprocal_sets", "expanded_sets", "encode_v", "query_expansion",
          "jaccard_min_sum", "mix")
LABELS = {"exact_neighbour_pass": "neighbour pass (k-NN, row maxima, q x g block)",
          "reciprocal_sets": "k-reciprocal sets R(i, k1), R(i, k1/2) (Eq. 3)",
          "expanded_sets": "expanded sets R* (Eq. 6)",
          "encode_v": "V encoding (Eq. 7)",
          "query_expansion": "query expansion (Eq. 11)",
          "jaccard_min_sum": "Jaccard numerator (Eq. 10)",
          "mix": "Jaccard distance + mixing (Eq. 12)"}


def set_threads(n):
    import faiss
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    threadpool_limits(n)  # NumPy's (and faiss's) OpenBLAS


def load_module_at(rev, path="plugins/occreid/evaluation/rerank.py"):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, check=True, capture_output=True, text=True).stdout
    f = tempfile.NamedTemporaryFile("w", suffix=".py", delete=False)
    f.write(src)
    f.close()
    spec = importlib.util.spec_from_file_location(f"rerank_at_{rev}", f.name)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # (dataclasses look their module up)
    spec.loader.exec_module(mod)
    return mod


def instrument(mod):
    """Wrap the module's stage functions; returns the dict their seconds accumulate in."""
    acc = {}
    for name in STAGES:
        fn = getattr(mod, name, None)
        if fn is None or getattr(fn, "_timed", False):
            continue

        def timed(*a, _fn=fn, _name=name, **kw):
            t = time.perf_counter()
            try:
                return _fn(*a, **kw)
            finally:
                acc[_name] = acc.get(_name, 0.0) + time.perf_counter() - t
        timed._timed = True
        setattr(mod, name, functools.wraps(fn)(timed))
    return acc


def floor(x, k):
    import faiss
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    return index.search(x, k)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("OCCREID_DATA", os.path.expanduser("~/.cache/occreid/data")))
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/occreid/features/osnet_x0_25_msmt17_occluded_duke.npz"))
    p.add_argument("--before", default="", help="git revision of the implementation to compare with")
    p.add_argument("--before-only", action="store_true", help="profile only the --before revision")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", default="")
    p.add_argument("--append", action="store_true", help="append to --out instead of replacing it")
    p.add_argument("--title", default="", help="a heading above this run's table")
    args = p.parse_args()

    torch.set_grad_enabled(False)
    set_threads(args.threads)
    f = real_features(args.data, args.cache)
    qf, gf = f["qf"], f["gf"]
    x = np.ascontiguousarray(np.concatenate([qf, gf]))
    n = len(x)

    import occreid.evaluation.rerank as after
    impls = ([("before", load_module_at(args.before))] if args.before else []) + \
        ([] if args.before_only else [("after", after)])
    acc = {name: instrument(mod) for name, mod in impls}
    best = {name: {} for name, _ in impls}
    outs, t_floor = {}, []
    for rep in range(args.repeat):
        t = time.perf_counter()
        floor(x, 21)
        t_floor.append(time.perf_counter() - t)
        for name, mod in impls:
            acc[name].clear()
            t = time.perf_counter()
            outs[name] = mod.re_ranking(qf, gf, search="exact")
            total = time.perf_counter() - t
            times = dict(acc[name], total=total)
            times["rest"] = total - sum(acc[name].values())
            for key, sec in times.items():
                best[name][key] = min(best[name].get(key, np.inf), sec)
            print(f"rep {rep}: floor {t_floor[-1]:.2f} s, {name} {total:.2f} s "
                  + ", ".join(f"{k} {v:.2f}" for k, v in acc[name].items()), flush=True)

    fl = min(t_floor)
    names = [name for name, _ in impls]
    lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with another job), "
             f"torch {torch.__version__}, {args.threads} threads for torch, OpenBLAS and faiss. "
             f"Command: `{shlex.join(sys.argv)}`", "",
             f"Real features, N = {n:,} ({len(qf):,} query + {len(gf):,} gallery, 512-d); k1 = 20, k2 = 6, "
             f"lambda = 0.3, zhong mode, `search=\"exact\"`, dense q x g output. Best of {args.repeat} runs each, "
             f"interleaved (floor, then each implementation, per repetition).", "",
             "| stage | " + " | ".join(f"{nm} (s)" for nm in names) + " |",
             "| --- | " + " | ".join("---" for _ in names) + " |"]
    for key in STAGES + ("rest",):
        if any(key in best[nm] for nm in names):
            label = LABELS.get(key, "rest (input checks, sparse slicing, glue; before: also the mixing of Eq. 12)")
            cells = [f"{best[nm][key]:.2f}" if key in best[nm] else "-" for nm in names]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("| **total** | " + " | ".join(f"**{best[nm]['total']:.2f}**" for nm in names) + " |")
    lines.append(f"| faiss IndexFlatL2 k-NN floor (k = 21) | {fl:.2f} |" + " |" * (len(names) - 1))
    lines.append("| **total / floor** | " + " | ".join(f"**{best[nm]['total'] / fl:.2f}x**" for nm in names) + " |")
    lines.append("")
    for nm in names:
        r1, mAP = metrics(outs[nm], f)
        lines.append(f"- {nm}: Rank-1 {r1:.2f} / mAP {mAP:.2f}")
    if len(names) == 2:
        a, b = outs[names[0]], outs[names[1]]
        diff = np.abs(a - b)
        lines.append(f"- max |after - before| = {diff.max():.2e} (distances in [0, {b.max():.2f}]); "
                     f"{int((diff > 1e-5).sum()):,} of {diff.size:,} entries differ by more than 1e-5, "
                     f"in {int((diff > 1e-5).any(1).sum()):,} of {len(qf):,} query rows")
        # Occluded-Duke's gallery holds exact copies of query images: their distances tie exactly, and a tie at
        # the k-th neighbour is broken by float rounding in both implementations. Without the copies:
        _, first = np.unique(x, axis=0, return_index=True)
        keep = np.zeros(n, bool)
        keep[first] = True
        gk = keep[len(qf):]
        a, b = (mod.re_ranking(qf, gf[gk], search="exact") for _, mod in impls)
        lines.append(f"- without the {int((~gk).sum()):,} gallery features that duplicate another feature exactly "
                     f"(no exact ties; N = {len(qf) + int(gk.sum()):,}): max |after - before| = "
                     f"{np.abs(a - b).max():.2e}")
    text = "\n".join(([f"## {args.title}", ""] if args.title else []) + lines) + "\n"
    if args.append and args.out and os.path.isfile(args.out):
        print(text)
        with open(args.out, "a") as fh:
            fh.write("\n" + text)
    else:
        emit(text, args.out)


if __name__ == "__main__":
    main()
