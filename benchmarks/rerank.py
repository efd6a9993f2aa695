#!/usr/bin/env python
"""Re-ranking benchmark: occreid vs FastReID's and TorchReID's dense k-reciprocal re-ranking.

All in one process on the same features: real 512-d features of full Occluded-Duke (2,210 query +
17,661 gallery) from the MSMT17-trained OSNet x0.25 of ../shared/data (TorchReID model), subsets of
them for N = 2k / 5k, and synthetic features with the real features' dimension and neighbour
structure for N >= 100k (real identity means, jittered, plus real within-identity residuals).

For each run: wall time, peak memory (the largest resident set sampled every 5 ms by a thread
while the run lasts, minus the resident set before it; the output array included), and Rank-1 /
mAP. Ratios
are against the references run in the same process. Timings on a shared machine vary by ~10%.

    python benchmarks/rerank.py --data $OCCREID_DATA --out benchmarks/results/rerank_cpu.md
"""

import argparse
import gc
import os
import platform
import sys
import threading
import time

import numpy as np
import torch

from occreid.evaluation.rerank import APPROX_MIN_POINTS, re_ranking, re_ranking_topk


def _rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(fn, interval=0.005):
    """(result, seconds, peak extra resident memory in MiB) of ``fn()``: a thread samples the
    process's resident set every ``interval`` seconds while ``fn`` runs; the peak is measured
    against the resident set just before the call (so it includes ``fn``'s output)."""
    gc.collect()
    before = _rss_mib()
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(interval)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t = time.perf_counter()
    out = fn()
    sec = time.perf_counter() - t
    done.set()
    th.join()
    peak[0] = max(peak[0], _rss_mib())
    return out, sec, peak[0] - before


def real_features(data, cache):
    from occreid.data import parse_occluded_duke
    from occreid.torchreid.features import build_torchreid_model, extract_features

    if os.path.isfile(cache):
        z = np.load(cache)
        return {k: z[k] for k in z.files}
    _, query, gallery = parse_occluded_duke(data)
    model = build_torchreid_model("osnet_x0_25", os.path.join(data, "weights", "osnet_x0_25_msmt17.pth"))
    out = {"qf": extract_features(model, [q[0] for q in query], progress=True),
           "gf": extract_features(model, [g[0] for g in gallery], progress=True)}
    for name, items in (("q", query), ("g", gallery)):
        out[name + "p"] = np.array([it[1] for it in items])
        out[name + "c"] = np.array([it[2] for it in items])
    os.makedirs(os.path.dirname(os.path.abspath(cache)), exist_ok=True)
    np.savez(cache, **out)
    return out


def subset(f, n, seed=0):
    """A random subset of n points with the full set's query share (deterministic)."""
    total = len(f["qf"]) + len(f["gf"])
    nq = max(1, round(n * len(f["qf"]) / total))
    rng = np.random.default_rng(seed)
    qi = np.sort(rng.choice(len(f["qf"]), nq, replace=False))
    gi = np.sort(rng.choice(len(f["gf"]), n - nq, replace=False))
    return {"qf": f["qf"][qi], "gf": f["gf"][gi], "qp": f["qp"][qi], "gp": f["gp"][gi],
            "qc": f["qc"][qi], "gc": f["gc"][gi]}


def synthetic(f, n, nq, seed=0):
    """n synthetic features (nq of them queries) with the real features' structure: each synthetic
    identity is a real identity mean plus Gaussian jitter (0.3 x the spread of the real means),
    each image that mean plus a real within-identity residual."""
    rng = np.random.default_rng(seed)
    feats = np.concatenate([f["qf"], f["gf"]])
    pids = np.concatenate([f["qp"], f["gp"]])
    uniq, inv = np.unique(pids, return_inverse=True)
    means = np.zeros((len(uniq), feats.shape[1]), np.float64)
    np.add.at(means, inv, feats)
    means /= np.bincount(inv)[:, None]
    resid = (feats - means[inv]).astype(np.float32)
    spread = means.std(0).astype(np.float32)
    n_ids = max(1, n // 18)  # ~18 images per identity, as in Occluded-Duke
    centers = means[rng.integers(0, len(uniq), n_ids)].astype(np.float32)
    centers += 0.3 * spread * rng.standard_normal(centers.shape, dtype=np.float32)
    ids = rng.integers(0, n_ids, n)
    x = centers[ids] + resid[rng.integers(0, len(resid), n)]
    return x[:nq], x[nq:]


def metrics(dist, s):
    from fastreid.evaluation.rank import evaluate_rank
    cmc, ap, _ = evaluate_rank(dist, s["qp"], s["gp"], s["qc"], s["gc"])
    return 100 * cmc[0], 100 * float(np.mean(ap))


def l2(a, b):
    a, b = torch.from_numpy(a).double(), torch.from_numpy(b).double()
    return torch.cdist(a, b).float().numpy()


def torchreid_dense(s):
    from torchreid.reid.utils.rerank import re_ranking as ref
    return ref(l2(s["qf"], s["gf"]), l2(s["qf"], s["qf"]), l2(s["gf"], s["gf"]), 20, 6, 0.3)


def fastreid_dense(s):
    from fastreid.utils.compute_dist import build_dist, compute_jaccard_distance
    q, g = torch.from_numpy(s["qf"]), torch.from_numpy(s["gf"])
    dist = build_dist(q, g, "cosine")
    qn, gn = torch.nn.functional.normalize(q, dim=1), torch.nn.functional.normalize(g, dim=1)
    jac = compute_jaccard_distance(torch.cat([qn, gn]), k1=20, k2=6, search_option=3)[: len(q), len(q):]
    return jac * 0.7 + dist * 0.3


def knn_floor(s):
    import faiss
    x = np.ascontiguousarray(np.concatenate([s["qf"], s["gf"]]))
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    return index.search(x, 21)


from report import emit  # noqa: E402  (benchmarks/report.py, beside this script)


def msmt17_rows(feats, row, notes, n_query=11659, n_gallery=82161, with_floor=True):
    """MSMT17's test size (11,659 query + 82,161 gallery = 93,820 points; the case TorchReID users report
    running out of memory on) with synthetic features of the real features' structure: the full q x g
    result of the exact zhong mode (a 3.8 GB float32 array), and the top-10 per query of ``re_ranking_topk``
    in FastReID's mode and mixing a method's own base distance (OCNet's Eq. 4 on the two halves of the
    feature, as a callable: no q x g array)."""
    from occreid.fastreid.ocnet import ocnet_distance
    n = n_query + n_gallery
    qf, gf = synthetic(feats, n, n_query, seed=17)
    if with_floor:
        _, t_knn, m_knn = measure(lambda: knn_floor({"qf": qf, "gf": gf}))
        row(n, "faiss IndexFlatL2 k-NN of all N (floor), synthetic", t_knn, m_knn)
    dense, t, m = measure(lambda: re_ranking(qf, gf, search="exact"))
    row(n, f"occreid zhong, exact, dense q x g ({dense.nbytes / 2**30:.1f} GiB float32 output), synthetic", t, m,
        ratio_t=f"{t / t_knn:.2f}x floor" if with_floor else "")
    notes.append(f"N = {n:,} (MSMT17 test size, synthetic): dense output {dense.shape[0]:,} x {dense.shape[1]:,}, "
                 f"finite {bool(np.isfinite(dense).all())}, range [{dense.min():.3f}, {dense.max():.3f}]")
    del dense
    gc.collect()
    (idx, _), t, m = measure(lambda: re_ranking_topk(qf, gf, topk=10, metric="cosine", mode="fastreid"))
    row(n, "occreid fastreid mode (cosine), exact, top-10 per query, synthetic", t, m)
    del idx
    gc.collect()
    split = qf.shape[1] // 2

    def eq4(q, g):  # OCNet Eq. 4: ||F_final^q - F_final^g|| + alpha ||F_BB^q - F_BB^g||, per chunk of queries
        return ocnet_distance(q, g, split, alpha=1.0)
    (idx, _), t, m = measure(lambda: re_ranking_topk(qf, gf, topk=10, base_distance=eq4))
    row(n, "occreid zhong, exact, top-10 per query, base distance OCNet Eq. 4 (callable), synthetic", t, m)
    del idx, qf, gf
    gc.collect()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("OCCREID_DATA", os.path.expanduser("~/.cache/occreid/data")))
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/occreid/features/osnet_x0_25_msmt17_occluded_duke.npz"))
    p.add_argument("--sizes", type=int, nargs="*", default=[2000, 5000, 0], help="0 = full Occluded-Duke")
    p.add_argument("--large", type=int, nargs="*", default=[100000, 500000])
    p.add_argument("--large-queries", type=int, default=10000)
    p.add_argument("--no-reference", action="store_true", help="skip FastReID / TorchReID")
    p.add_argument("--msmt17", action="store_true", help="also the MSMT17-size rows (N = 93,820, synthetic)")
    p.add_argument("--out", default="")
    args = p.parse_args()

    torch.set_grad_enabled(False)
    feats = real_features(args.data, args.cache)
    rows, notes = [], []

    def row(n, what, sec, mib, r1="", mAP="", ratio_t="", ratio_m=""):
        rows.append(f"| {n:,} | {what} | {sec:.1f} | {mib:,.0f} | {r1} | {mAP} | {ratio_t} | {ratio_m} |")
        print(rows[-1], flush=True)

    for n in args.sizes:
        s = subset(feats, n) if n else feats
        n = len(s["qf"]) + len(s["gf"])
        base = metrics(l2(s["qf"], s["gf"]), s)
        notes.append(f"N = {n:,}: no re-ranking (plain l2) Rank-1 {base[0]:.2f} / mAP {base[1]:.2f}")
        _, t_knn, m_knn = measure(lambda: knn_floor(s))
        row(n, "faiss IndexFlatL2 k-NN of all N (floor)", t_knn, m_knn)
        ours, t_o, m_o = measure(lambda: re_ranking(s["qf"], s["gf"]))
        r_o = metrics(ours, s)
        row(n, "occreid zhong, exact", t_o, m_o, f"{r_o[0]:.2f}", f"{r_o[1]:.2f}", f"{t_o / t_knn:.2f}x floor")
        ours_f, t_of, m_of = measure(lambda: re_ranking(s["qf"], s["gf"], metric="cosine", mode="fastreid"))
        r_of = metrics(ours_f, s)
        row(n, "occreid fastreid mode, exact", t_of, m_of, f"{r_of[0]:.2f}", f"{r_of[1]:.2f}")
        r_a = None
        if len(s["qf"]) + len(s["gf"]) >= APPROX_MIN_POINTS:   # below it search="ivf" refuses (exact is faster)
            approx, t_a, m_a = measure(lambda: re_ranking(s["qf"], s["gf"], search="ivf"))
            r_a = metrics(approx, s)
            row(n, "occreid zhong, ivf (approximate)", t_a, m_a, f"{r_a[0]:.2f}", f"{r_a[1]:.2f}")
        if not args.no_reference:
            ref, t_r, m_r = measure(lambda: torchreid_dense(s))
            r_r = metrics(ref, s)
            row(n, "TorchReID re_ranking (dense)", t_r, m_r, f"{r_r[0]:.2f}", f"{r_r[1]:.2f}",
                f"occreid {t_r / t_o:.1f}x faster", f"{m_r / max(m_o, 1):.1f}x less memory")
            notes.append(f"N = {n:,}: max |occreid zhong - TorchReID| = {np.abs(ours - ref).max():.2e}")
            del ref
            fr, t_f, m_f = measure(lambda: fastreid_dense(s))
            r_f = metrics(fr, s)
            row(n, "FastReID compute_jaccard_distance (CPU) + mixing", t_f, m_f, f"{r_f[0]:.2f}", f"{r_f[1]:.2f}",
                f"occreid {t_f / t_of:.1f}x faster", f"{m_f / max(m_of, 1):.1f}x less memory")
            notes.append(f"N = {n:,}: max |occreid fastreid mode - FastReID| = {np.abs(ours_f - fr).max():.2e}")
            del fr
        if r_a is not None:
            notes.append(f"N = {n:,}: ivf (approximate) vs exact: Rank-1 {r_a[0] - r_o[0]:+.2f}, "
                         f"mAP {r_a[1] - r_o[1]:+.2f}")
            del approx
        del ours, ours_f
        gc.collect()

    for n in args.large:
        qf, gf = synthetic(feats, n, args.large_queries)
        search = "exact" if n <= 200000 else "ivf"
        (idx, _), t, m = measure(lambda: re_ranking_topk(qf, gf, topk=10, search=search, progress=True))
        row(n, f"occreid zhong, {search}, top-10 per query (synthetic, {len(qf):,} queries)", t, m)
        del qf, gf, idx
        gc.collect()

    if args.msmt17:
        msmt17_rows(feats, row, notes)
        import resource
        notes.append(f"process peak resident set over the whole run (ru_maxrss): "
                     f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB")

    header = ["| N | method | seconds | peak MiB | Rank-1 | mAP | time ratio | memory ratio |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    text = "\n".join([f"Machine: {machine}. Command: `{' '.join(sys.argv)}`", ""] + header + rows + [""]
                     + [f"- {x}" for x in notes]) + "\n"
    emit(text, args.out)


if __name__ == "__main__":
    main()
