"""Index benchmark: embedtool's index (auto) vs scikit-learn NearestNeighbors vs Annoy (10 trees).

The seed's setting: 80,000 x 1024 float32 vectors (clustered Gaussian data, L2-normalised, so cosine =
inner product and Euclidean ranks agree). Measured side by side in one run: build time, single-query latency
for 30-NN and 1000-NN (median over queries), recall@30 and recall@1000 against exact search, on held-out
queries drawn from the same distribution (not in the index).

    .venv/bin/python bench/bench_index.py                      # the seed's setting
    .venv/bin/python bench/bench_index.py --embeddings WS/embeddings   # also embedtool's own embeddings

Annoy is a bench-only dependency (`.venv/bin/pip install annoy`). Writes bench/results/bench_index.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import faiss
import numpy as np
from _common import result_path, write_json

from embedtool.embedding.pooling import l2_normalise
from embedtool.indexing.build import build_index
from embedtool.indexing.options import IndexOptions
from embedtool.indexing.search import recall_at_k


def clustered(n: int, dim: int, n_clusters: int, spread: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    which = rng.integers(0, n_clusters, n)
    x = centres[which] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return l2_normalise(x)


def latency_ms(fn, queries: np.ndarray) -> tuple[float, list]:  # noqa: ANN001
    times, results = [], []
    for q in queries:
        t0 = time.perf_counter()
        results.append(fn(q))
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000), results


def run(x: np.ndarray, queries: np.ndarray, name: str, ks: tuple[int, ...], skip_sklearn: bool, target: float) -> dict:
    n, dim = x.shape
    print(f"\n== {name}: {n} x {dim}, {len(queries)} held-out queries, threads={faiss.omp_get_max_threads()}")
    exact = faiss.IndexFlatIP(dim)
    exact.add(x)
    truth = {k: exact.search(queries, k)[1] for k in ks}
    rows: dict[str, dict] = {}

    # --- embedtool (auto) ----------------------------------------------------------------------------------
    t0 = time.perf_counter()
    built = build_index(x, IndexOptions(kind="auto", recall_k=ks[0], target_recall=target))
    build_s = time.perf_counter() - t0
    row = {"build_s": build_s, "kind": built.kind, "params": built.params, "tuned_recall": built.recall}
    for k in ks:
        lat, res = latency_ms(lambda q, k=k: built.index.search(q[None, :], k)[1][0], queries)
        row[f"query_ms@{k}"] = lat
        row[f"recall@{k}"] = recall_at_k(np.stack(res), truth[k])
    rows["embedtool auto"] = row

    # --- Annoy, 10 trees -----------------------------------------------------------------------------------
    try:
        from annoy import AnnoyIndex
    except ImportError:
        print("annoy not installed (.venv/bin/pip install annoy): skipped")
    else:
        t0 = time.perf_counter()
        ann = AnnoyIndex(dim, "angular")
        for i, v in enumerate(x):
            ann.add_item(i, v)
        ann.build(10, n_jobs=-1)
        row = {"build_s": time.perf_counter() - t0, "kind": "annoy", "params": {"n_trees": 10}}
        for k in ks:
            lat, res = latency_ms(lambda q, k=k: np.array(ann.get_nns_by_vector(q, k)), queries)
            row[f"query_ms@{k}"] = lat
            padded = np.stack([np.pad(r, (0, k - len(r)), constant_values=-1) for r in res])
            row[f"recall@{k}"] = recall_at_k(padded, truth[k])
        rows["annoy (10 trees)"] = row
        del ann

    # --- scikit-learn NearestNeighbors (defaults, as the seed used it) -----------------------------------------
    if not skip_sklearn:
        from sklearn.neighbors import NearestNeighbors

        t0 = time.perf_counter()
        nn = NearestNeighbors().fit(x)
        row = {"build_s": time.perf_counter() - t0, "kind": "sklearn", "params": {"algorithm": nn._fit_method}}
        for k in ks:
            lat, res = latency_ms(lambda q, k=k: nn.kneighbors(q[None, :], k, return_distance=False)[0], queries)
            row[f"query_ms@{k}"] = lat
            row[f"recall@{k}"] = recall_at_k(np.stack(res), truth[k])
        rows["scikit-learn NearestNeighbors"] = row

    header = f"{'method':32s} {'build s':>9s} " + " ".join(f"{'q ms@' + str(k):>10s} {'rec@' + str(k):>8s}" for k in ks)
    print(header)
    for method, r in rows.items():
        cells = " ".join(f"{r[f'query_ms@{k}']:10.3f} {r[f'recall@{k}']:8.3f}" for k in ks)
        print(f"{method:32s} {r['build_s']:9.2f} {cells}")
    base = rows.get("annoy (10 trees)")
    ours = rows["embedtool auto"]
    ratios = {}
    if base:
        ratios = {
            "build_speedup_vs_annoy": base["build_s"] / ours["build_s"],
            **{f"query_speedup_vs_annoy@{k}": base[f"query_ms@{k}"] / ours[f"query_ms@{k}"] for k in ks},
        }
        print("embedtool vs annoy: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    return {"name": name, "n": n, "dim": dim, "queries": len(queries), "results": rows, "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=80_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--clusters", type=int, default=100)
    parser.add_argument(
        "--spreads", default="0.5,1.0", help="within-cluster std per dimension, one run each (centres: std 1)"
    )
    parser.add_argument(
        "--target-recall", type=float, default=0.997, help="embedtool's recall@30 tuning target (Annoy: ~0.996)"
    )
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--embeddings", type=Path, help="an embeddings folder to benchmark as well")
    parser.add_argument("--skip-sklearn", action="store_true")
    args = parser.parse_args()

    runs = []
    for spread in (float(s) for s in args.spreads.split(",")):
        data = clustered(args.n + args.queries, args.dim, args.clusters, spread, seed=0)
        name = f"synthetic {args.n}x{args.dim}, {args.clusters} clusters, spread {spread}"
        runs.append(run(data[: args.n], data[args.n :], name, (30, 1000), args.skip_sklearn, args.target_recall))
        del data
    if args.embeddings:
        from embedtool.embedding.store import EmbeddingStore

        vectors = np.asarray(EmbeddingStore(args.embeddings).segment_vectors(), dtype=np.float32)
        rng = np.random.default_rng(1)
        perm = rng.permutation(len(vectors))
        nq = min(args.queries, len(vectors) // 10)
        runs.append(
            run(vectors[perm[nq:]], vectors[perm[:nq]], f"embedtool embeddings ({args.embeddings})", (30, 1000),
                args.skip_sklearn, args.target_recall)
        )  # fmt: skip
    out = write_json(result_path("bench_index"), {"argv": sys.argv, "cpus": os.cpu_count(), "runs": runs}, default=str)
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
