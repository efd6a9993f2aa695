#!/usr/bin/env python
"""Recall and time of the approximate k-NN passes of ``re_ranking(..., search="ivf" | "hnsw")`` (issue 26, item 7).

The k-reciprocal re-ranking needs, for every one of the N = query + gallery points, its k = k1 + 1 nearest
neighbours among all N. ``search="faiss"`` finds them exactly (``IndexFlatL2``); ``"ivf"`` (``IndexIVFFlat``,
``nlist`` cells, ``nprobe`` probed) and ``"hnsw"`` (``IndexHNSWFlat``, ``hnsw_m`` links, ``efSearch``) find them
approximately. This script measures, on the same synthetic features as ``benchmarks/faiss_scale.py`` (real
512-d OSNet x0.25 features of Occluded-Duke: real identity means, jittered, plus real within-identity residuals):

- recall@k: the mean fraction of each point's exact k nearest neighbours that the approximate pass returns;
- seconds to build the index (IVF: train + add; HNSW: add) and to search the queries.

Queries: every point for N <= ``--full-up-to``, else ``--queries`` points drawn at random (the search time of the
whole pass is then extrapolated from theirs, marked "est."). Run alone on the cores.

With ``--rerank-n N``, also the end-to-end effect on the re-ranking: ``re_ranking_topk`` (top-10, k1 20, k2 6,
lambda 0.3) of ``--rerank-queries`` synthetic queries against N synthetic gallery features with
``search="exact"`` and with each approximate search at its library defaults; seconds, Rank-1 (top-1 of the
query's synthetic identity), the share of queries whose top-1 equals the exact one's, and the mean top-10 overlap.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/knn_recall.py --sizes 20000 100000 \\
        --out benchmarks/results/knn_recall_cpu.md
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from faiss_scale import SyntheticGallery  # noqa: E402
from rerank import real_features  # noqa: E402


def recall(found, truth):
    k = truth.shape[1]
    return float(np.mean([len(np.intersect1d(a, b)) / k for a, b in zip(found, truth)]))


def rerank_rows(f, n, nq):
    """End-to-end rows: ``re_ranking_topk`` with each search at its defaults against ``search="exact"``."""

    import occreid.evaluation.rerank as rr
    from occreid.evaluation.rerank import approximate_defaults, re_ranking_topk
    rr.APPROX_MIN_POINTS = 0   # measure the approximate searches below the size where they refuse (that is the point)
    g = SyntheticGallery(f, n, seed=0)
    gf, gid = g.chunk(0, n, stream=0, with_ids=True)
    qf, qid = g.chunk(0, nq, stream=1, with_ids=True)
    out, ref = [], None
    for search in ("exact", "ivf", "hnsw"):
        t = time.perf_counter()
        idx, _ = re_ranking_topk(qf, gf, topk=10, search=search)
        sec = time.perf_counter() - t
        ref = idx if ref is None else ref
        settings = "-" if search == "exact" else ", ".join(
            f"{k} {v}" for k, v in approximate_defaults(search, n + nq).items())
        r = {"search": search, "settings": settings, "seconds": round(sec, 2),
             "rank1": float(np.mean(gid[idx[:, 0]] == qid)),
             "top1_agree": float(np.mean(idx[:, 0] == ref[:, 0])),
             "top10_overlap": float(np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(idx, ref)]))}
        out.append(r)
        print(json.dumps(r), flush=True)
    return out


def main(argv=None):
    import faiss
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=os.environ.get("OCCREID_DATA", os.path.expanduser("~/.cache/occreid/data")))
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/occreid/features/osnet_x0_25_msmt17_occluded_duke.npz"))
    ap.add_argument("--sizes", type=int, nargs="*", default=[20000, 100000])
    ap.add_argument("--k", type=int, default=21, help="neighbours per point (k1 + 1; k1 = 20 by default)")
    ap.add_argument("--nprobes", type=int, nargs="+", default=[16, 32, 64, 128, 256])
    ap.add_argument("--efs", type=int, nargs="+", default=[64, 128, 256, 512])
    ap.add_argument("--hnsw-m", type=int, default=32)
    ap.add_argument("--hnsw-up-to", type=int, default=100000, help="largest N with an HNSW row (its build is slow)")
    ap.add_argument("--full-up-to", type=int, default=20000)
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--rerank-n", type=int, default=0, help="gallery size of the end-to-end re-ranking rows (0: none)")
    ap.add_argument("--rerank-queries", type=int, default=2000)
    ap.add_argument("--out")
    ap.add_argument("--json")
    ap.add_argument("--note", default="")
    args = ap.parse_args(argv)
    f = real_features(args.data, args.cache)
    rows = []
    for n in args.sizes:
        g = SyntheticGallery(f, n, seed=0)
        x = np.ascontiguousarray(np.concatenate([c for _, c in g.chunks()]), dtype=np.float32)
        rng = np.random.default_rng(0)
        full = n <= args.full_up_to
        qi = np.arange(n) if full else np.sort(rng.choice(n, args.queries, replace=False))
        q = x[qi]
        scale = n / len(qi)

        def row(mode, setting, build_s, search_s, found):
            r = {"N": n, "mode": mode, "setting": setting, "build_s": round(build_s, 2),
                 "search_s": round(search_s * scale, 2), "estimated": not full,
                 "recall": None if found is None else round(recall(found, truth), 4)}
            rows.append(r)
            print(json.dumps(r), flush=True)

        t = time.perf_counter()
        flat = faiss.IndexFlatL2(x.shape[1])
        flat.add(x)
        b = time.perf_counter() - t
        t = time.perf_counter()
        _, truth = flat.search(q, args.k)
        row("exact (faiss)", "IndexFlatL2", b, time.perf_counter() - t, None)
        del flat

        nlist = max(1, int(4 * math.sqrt(n)))
        t = time.perf_counter()
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(x.shape[1]), x.shape[1], nlist)
        ivf.train(x[rng.choice(n, size=min(n, 40 * nlist), replace=False)])
        ivf.add(x)
        b = time.perf_counter() - t
        for nprobe in args.nprobes:
            ivf.nprobe = nprobe
            t = time.perf_counter()
            _, found = ivf.search(q, args.k)
            row("ivf", f"nlist {nlist}, nprobe {nprobe}", b, time.perf_counter() - t, found)
        del ivf

        if n > args.hnsw_up_to:
            continue
        t = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(x.shape[1], args.hnsw_m)
        hnsw.add(x)
        b = time.perf_counter() - t
        for ef in args.efs:
            hnsw.hnsw.efSearch = ef
            t = time.perf_counter()
            _, found = hnsw.search(q, args.k)
            row("hnsw", f"M {args.hnsw_m}, efSearch {ef}", b, time.perf_counter() - t, found)
        del hnsw

    rr_rows = rerank_rows(f, args.rerank_n, args.rerank_queries) if args.rerank_n else []

    lines = [f"### knn_recall.py: k = {args.k}, {faiss.omp_get_max_threads()} faiss threads, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}" + (f"; {args.note}" if args.note else ""), "",
             "| N | mode | setting | build s | search s (all N points) | recall@k |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        s = f"{r['search_s']:.1f}" + (" (est.)" if r["estimated"] else "")
        rec = "1 (reference)" if r["recall"] is None else f"{r['recall']:.4f}"
        lines.append(f"| {r['N']:,} | {r['mode']} | {r['setting']} | {r['build_s']:.1f} | {s} | {rec} |")
    if rr_rows:
        lines += ["", f"End to end: `re_ranking_topk` (top-10, k1 20, k2 6, lambda 0.3) of {args.rerank_queries:,} "
                      f"synthetic queries against {args.rerank_n:,} gallery features, each search at its defaults", "",
                  "| search | settings | seconds | Rank-1 | top-1 = exact's | top-10 overlap with exact |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in rr_rows:
            lines.append(f"| {r['search']} | {r['settings']} | {r['seconds']:.1f} | {100 * r['rank1']:.2f} | "
                         f"{100 * r['top1_agree']:.1f} % | {100 * r['top10_overlap']:.1f} % |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n" + text)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"args": vars(args), "rows": rows, "rerank_rows": rr_rows}, fh, indent=1)


if __name__ == "__main__":
    main()
