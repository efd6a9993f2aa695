"""Galleries of millions: FAISS index types at 1M and 10M x 512 on synthetic features with real cluster structure.

    .venv/bin/python benchmarks/faiss_scale.py --sizes 1000000 10000000 --out benchmarks/results/faiss_scale_cpu.md

For each gallery size N: build time (train + add), index bytes (``faiss.serialize_index``) and bytes per vector,
peak extra resident memory of the build, queries per second (``--queries`` real-structured queries, top-10, all
threads), recall@10 against exact search (the true 10 nearest of each query, from a chunked exact scan, so the
exact index need not fit in memory), and, at the first size, ``re_ranking_topk`` over the gallery with an
approximate neighbour search. Index types (FAISS factory strings):

- ``Flat``: exact, 4 D bytes per vector (the reference; built only when it fits ``--max-flat-gib``);
- ``IVF{nlist},PQ{m}np``: inverted lists + product quantisation, m bytes per vector (+ 8 for the id); ``np``: no
  polysemous training (see below);
- ``HNSW32``: graph over the full vectors, 4 D + 2 x 32 x 4 bytes per vector (built up to ``--hnsw-max``);
- ``IndexShards`` of ``--shards`` IVF-PQ sub-indices (as one shards a gallery over several GPUs / machines):
  the same codes split by id, searched in parallel and merged.

Features: ``synthetic_chunks`` draws identities around the real Occluded-Duke identity means (OSNet x0.25 MSMT17
features, ``benchmarks/rerank.py``'s cache) with real within-identity residuals, ~18 images per identity, chunk by
chunk, so 10M x 512 (20 GB as float32) is never held at once. Queries are drawn the same way from the same identities.
"""

import argparse
import math
import os
import platform
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rerank import measure, real_features  # noqa: E402


class SyntheticGallery:
    """N features of dimension D in chunks: identity centres around real identity means, images = centre + a real
    within-identity residual (as ``benchmarks/rerank.py``'s ``synthetic``). Deterministic per (seed, chunk)."""

    def __init__(self, f, n, seed=0, images_per_id=18):
        rng = np.random.default_rng(seed)
        feats = np.concatenate([f["qf"], f["gf"]]).astype(np.float32)
        pids = np.concatenate([f["qp"], f["gp"]])
        uniq, inv = np.unique(pids, return_inverse=True)
        means = np.zeros((len(uniq), feats.shape[1]), np.float64)
        np.add.at(means, inv, feats)
        means /= np.bincount(inv)[:, None]
        self.resid = (feats - means[inv]).astype(np.float32)
        spread = means.std(0).astype(np.float32)
        self.n, self.seed = n, seed
        self.n_ids = max(1, n // images_per_id)
        self.centers = means[rng.integers(0, len(uniq), self.n_ids)].astype(np.float32)
        self.centers += 0.3 * spread * rng.standard_normal(self.centers.shape, dtype=np.float32)
        self.dim = feats.shape[1]

    def chunk(self, start, end, stream=0, with_ids=False):
        """Features ``start:end`` of ``stream`` (0 gallery, 1 queries, 2 IVF training); with ``with_ids``,
        ``(features, synthetic identity of each)``."""
        rng = np.random.default_rng([self.seed, stream, start])
        ids = rng.integers(0, self.n_ids, end - start)
        x = self.centers[ids] + self.resid[rng.integers(0, len(self.resid), end - start)]
        return (x, ids) if with_ids else x

    def chunks(self, size=250_000, with_ids=False):
        for s in range(0, self.n, size):
            yield s, self.chunk(s, min(s + size, self.n), with_ids=with_ids)

    def queries(self, nq):
        return self.chunk(0, nq, stream=1)


def exact_topk(gallery, q, k=10):
    """(nq, k) ids and squared distances of the true k nearest gallery vectors, by a chunked flat scan."""
    import faiss
    best_d = np.full((len(q), k), np.inf, np.float32)
    best_i = np.full((len(q), k), -1, np.int64)
    for s, x in gallery.chunks():
        d, i = faiss.knn(q, x, k)
        d_all, i_all = np.concatenate([best_d, d], 1), np.concatenate([best_i, i + s], 1)
        order = np.argsort(d_all, axis=1, kind="stable")[:, :k]
        best_d, best_i = np.take_along_axis(d_all, order, 1), np.take_along_axis(i_all, order, 1)
    return best_i, best_d


def recall_at(found, truth):
    """Mean fraction of the true top-k found in the returned top-k."""
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, truth)]))


def build(factory, gallery, train_n, shards=0):
    import faiss
    d = gallery.dim
    train = gallery.chunk(0, min(train_n, gallery.n), stream=2) if "IVF" in factory else None
    if shards:
        index = faiss.IndexShards(d, True, True)  # threaded, successive ids
        subs = []
        first = faiss.index_factory(d, factory)
        first.train(train)
        for _ in range(shards):
            sub = faiss.clone_index(first)
            subs.append(sub)
        per = math.ceil(gallery.n / shards)
        for s, x in gallery.chunks():
            for j in range(s // per, min(shards, (s + len(x) - 1) // per + 1)):  # split a chunk across shards
                lo, hi = max(s, j * per), min(s + len(x), (j + 1) * per)
                subs[j].add(x[lo - s:hi - s])
        for sub in subs:
            index.add_shard(sub)
        return index, subs  # the Python objects of the shards must stay alive

    index = faiss.index_factory(d, factory)
    if train is not None:
        index.train(train)
    for _, x in gallery.chunks():
        index.add(x)
    return index, [index]


def index_bytes(parts):
    """Serialised size of an index (the sum over its shards)."""
    import faiss
    return sum(int(faiss.serialize_index(p).nbytes) for p in parts)


def main():
    import faiss
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("OCCREID_DATA", os.path.expanduser("~/.cache/occreid/data")))
    ap.add_argument("--cache", default=os.path.expanduser("~/.cache/occreid/features/osnet_x0_25_msmt17_occluded_duke.npz"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--nlist", type=int, default=0, help="IVF cells (default 4 sqrt(N), rounded to a power of 2)")
    ap.add_argument("--pq-m", type=int, default=64, help="PQ bytes per vector")
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--hnsw-max", type=int, default=1_000_000, help="build HNSW32 only up to this N")
    ap.add_argument("--max-flat-gib", type=float, default=6.0, help="build the Flat index only up to this size")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--rerank-n", type=int, default=1_000_000, help="re_ranking_topk (ivf) at this N (0: skip)")
    ap.add_argument("--rerank-queries", type=int, default=1000)
    ap.add_argument("--indexes", nargs="+", default=["flat", "ivfpq", "shards", "hnsw"],
                    choices=["flat", "ivfpq", "shards", "hnsw", "none"],
                    help="index types to build ('none': only the re-ranking row)")
    ap.add_argument("--out", default="benchmarks/results/faiss_scale_cpu.md")
    ap.add_argument("--note", default="", help="said after the command in --out (e.g. what else ran on the machine)")
    ap.add_argument("--append", action="store_true",
                    help="keep the rows and commands already in --out and add this run's (rows sorted by N)")
    args = ap.parse_args()

    threads = torch.get_num_threads()
    faiss.omp_set_num_threads(threads)
    f = real_features(args.data, args.cache)
    rows = []

    def row(n, what, build_s, nbytes, mib, qps="", recall="", note=""):
        rows.append(f"| {n:,} | {what} | {build_s} | {nbytes} | {mib} | {qps} | {recall} | {note} |")
        print(rows[-1], flush=True)

    for n in args.sizes:
        gal = SyntheticGallery(f, n, seed=0)
        q = gal.queries(args.queries)
        if args.indexes != ["none"]:
            (truth, _), sec, _ = measure(lambda: exact_topk(gal, q))
            print(f"[N={n:,}] exact top-10 of {len(q)} queries by a chunked scan: {sec:.1f} s", flush=True)
        nlist = args.nlist or 2 ** int(round(math.log2(4 * math.sqrt(n))))
        specs = []
        if "flat" in args.indexes and n * gal.dim * 4 <= args.max_flat_gib * 2**30:
            specs.append(("Flat", "Flat", 0, [None]))
        # "np": no polysemous training (FAISS's factory default for PQ: a code re-ordering by simulated annealing that
        # only the polysemous Hamming filter uses; it dominated the build time here and changes no search result)
        pq = f"IVF{nlist},PQ{args.pq_m}np"
        if "ivfpq" in args.indexes:
            specs.append((pq, pq, 0, args.nprobe))
        if "shards" in args.indexes:
            specs.append((f"IndexShards {args.shards} x {pq}", pq, args.shards, args.nprobe))
        if "hnsw" in args.indexes and n <= args.hnsw_max:
            specs.append(("HNSW32", "HNSW32", 0, [64, 128]))
        for name, factory, shards, params in specs:
            (index, parts), build_s, mib = measure(
                lambda: build(factory, gal, train_n=max(40 * nlist, 100_000), shards=shards))
            nbytes = index_bytes(parts)
            for p in params:
                label = name
                if p is not None and "IVF" in factory:
                    for sub in parts:
                        faiss.extract_index_ivf(sub).nprobe = p
                    label += f", nprobe {p}"
                elif p is not None:
                    faiss.downcast_index(index).hnsw.efSearch = p
                    label += f", efSearch {p}"
                t = time.perf_counter()
                _, found = index.search(q, 10)
                qps = len(q) / (time.perf_counter() - t)
                row(n, label, f"{build_s:.1f}", f"{nbytes / 2**20:,.0f} MiB ({nbytes / n:.0f} B/vector)",
                    f"{mib:,.0f}", f"{qps:,.0f}", f"{recall_at(found, truth):.3f}")
            del index, parts
        if n == args.rerank_n:
            from occreid.evaluation.rerank import re_ranking_topk
            x, gid = (np.concatenate(part) for part in zip(*(c for _, c in gal.chunks(with_ids=True))))
            qr, qid = gal.chunk(0, args.rerank_queries, stream=1, with_ids=True)
            exact_idx = faiss.knn(qr, x, 10)[1]  # the gallery is in memory here: one exact pass
            (idx, _), sec, mib = measure(lambda: re_ranking_topk(qr, x, topk=10, search="ivf"))

            def precision(top):  # fraction of the top-10 of the query's synthetic identity
                return float((gid[top] == qid[:, None]).mean())
            row(n, f"re_ranking_topk (zhong, ivf k-NN of all N + {len(qr):,} queries), top-10", "", "",
                f"{mib:,.0f}", f"{len(qr) / sec:.1f}", "",
                f"{sec:.0f} s in all; same-identity precision@10 {precision(idx):.3f} re-ranked vs "
                f"{precision(exact_idx):.3f} exact Euclidean top-10")
            del x

    commit = os.popen("git rev-parse --short HEAD").read().strip()
    argv = sys.argv[1:]
    shown_args = [a for i, a in enumerate(argv) if a != "--note" and (i == 0 or argv[i - 1] != "--note")]
    command = (f"`{os.environ.get('OMP_WAIT_POLICY') and 'OMP_WAIT_POLICY=' + os.environ['OMP_WAIT_POLICY'] + ' ' or ''}"
               f".venv/bin/python benchmarks/faiss_scale.py {' '.join(shown_args)}`; commit {commit}; "
               f"{platform.machine()}, {os.cpu_count()} CPU cores ({threads} threads), faiss {faiss.__version__}"
               + (f"; {args.note}" if args.note else ""))
    old_rows, old_commands = [], []
    if args.append and os.path.isfile(args.out):
        with open(args.out) as fh:
            for line in fh.read().splitlines():
                if line.startswith("| ") and line[2:3].isdigit():
                    old_rows.append(line)
                elif line.startswith("- Command: "):
                    old_commands.append(line)
    rows = sorted(old_rows + rows, key=lambda r: int(r.split("|")[1].replace(",", "")))  # stable: run order kept
    lines = ["# Galleries of millions: FAISS index types (synthetic features with real cluster structure, D = 512)", "",
             "Recall@10: fraction of the true 10 nearest (chunked exact scan) returned. Memory: peak extra resident "
             "memory while building (MiB); index bytes from `faiss.serialize_index`. Queries: top-10 of "
             "`--queries` queries, all threads. Runs:", ""] + old_commands + [f"- Command: {command}", "",
             "| N | index | build s | index size | build peak MiB | queries/s | recall@10 | note |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"] + rows
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
