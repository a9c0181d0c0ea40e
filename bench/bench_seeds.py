"""Several seeds, one answer: reciprocal-rank fusion against the mean of the seeds' vectors, side by side.

On a labelled workspace with an index, draw random sets of ``--seeds`` library tracks of one label (the same sets
for both methods), ask ``more_like_these`` for the ``k`` combined neighbours with the seeds left out, and score
the share of the answers that carry the seeds' label (precision@k). For context, the same share for each seed's
own single answer (the other seeds left out too) is reported as "one seed".

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/bench_seeds.py WS [WS ...] \
        [--sets-per-label 12] [--seeds 3] [--k 10]

The workspaces are only read (the index must exist: copy a suite workspace and run `embedtool index` on the copy).
Writes bench/results/bench_seeds.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _common import log, result_path, write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspaces", nargs="+", type=Path)
    ap.add_argument("--sets-per-label", type=int, default=12)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import numpy as np
    import torch

    from embedtool.query.searcher import Searcher
    from embedtool.query.seeds import COMBINE_METHODS, more_like_these
    from embedtool.workspace import Workspace

    torch.set_num_threads(1)
    out = {"k": args.k, "seeds": args.seeds, "sets_per_label": args.sets_per_label, "workspaces": {}}
    for root in args.workspaces:
        searcher = Searcher.open(Workspace(root))
        rng = np.random.default_rng(args.seed)
        by_label: dict[str, list[str]] = {}
        for t in searcher.tables.tracks:
            frames = searcher.features.track(t["track_id"])["frames"] if searcher.features is not None else 0
            usable = searcher.settings.frames_to_seconds(frames) >= searcher.options.min_query_seconds
            if t.get("label") and usable:  # a seed shorter than the shortest usable query is refused
                by_label.setdefault(t["label"], []).append(t["track_id"])
        sets = [
            (label, [str(x) for x in rng.choice(ids, args.seeds, replace=False)])
            for label, ids in sorted(by_label.items())
            if len(ids) > args.seeds
            for _ in range(args.sets_per_label)
        ]
        label_of = {t["track_id"]: t.get("label") for t in searcher.tables.tracks}
        scores: dict[str, list[float]] = {m: [] for m in (*COMBINE_METHODS, "one seed")}
        seconds: dict[str, float] = {m: 0.0 for m in scores}
        single: dict[tuple[str, frozenset[str]], float] = {}
        for i, (label, seeds) in enumerate(sets, start=1):
            for method in COMBINE_METHODS:
                t0 = time.perf_counter()
                result = more_like_these(searcher, seeds, k=args.k, combine=method)
                seconds[method] += time.perf_counter() - t0
                got = [m.track_id for m in result.matches]
                assert len(got) == len(set(got)) == args.k and not set(got) & set(seeds), (method, got)
                scores[method].append(sum(label_of[t] == label for t in got) / args.k)
            t0 = time.perf_counter()
            for s in seeds:  # each seed alone, the other seeds left out too
                answer = searcher.query_track(s, mode="similar", k=args.k + args.seeds)
                got = [m.track_id for m in answer.matches if m.track_id not in seeds][: args.k]
                single[(s, frozenset(seeds))] = sum(label_of[t] == label for t in got) / args.k
                scores["one seed"].append(single[(s, frozenset(seeds))])
            seconds["one seed"] += time.perf_counter() - t0
            if i % 6 == 0 or i == len(sets):
                shown = ", ".join(f"{m} {np.mean(v):.3f}" for m, v in scores.items())
                log(f"{root.parent.name}: {i}/{len(sets)} sets: {shown}")
        rows = {}
        for method, values in scores.items():
            v = np.asarray(values)
            rows[method] = {
                "precision_at_k": round(float(v.mean()), 4),
                # a 95% interval over the sets (normal approximation of the mean's spread)
                "ci95": round(float(1.96 * v.std(ddof=1) / np.sqrt(len(v))), 4) if len(v) > 1 else None,
                "sets": len(v) if method != "one seed" else len(v) // args.seeds,
                "seconds_per_answer": round(seconds[method] / max(1, len(sets)), 3),
            }
        wins = {
            "rrf_better": int(sum(a > b for a, b in zip(scores["rrf"], scores["mean"], strict=True))),
            "mean_better": int(sum(a < b for a, b in zip(scores["rrf"], scores["mean"], strict=True))),
        }
        out["workspaces"][str(root)] = {"tracks": len(searcher.tables.tracks), "labels": len(by_label),
                                        "methods": rows, "paired": wins}  # fmt: skip
        log(f"{root}: {rows} {wins}")
    path = write_json(result_path("bench_seeds"), out, final_newline=True)
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
