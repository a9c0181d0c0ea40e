"""Incremental index benchmark: 1% new tracks added to an indexed synthetic library, the index updated
(``indexing.update``) against a full build of the same export, time and recall side by side.

No audio: two embeddings exports are generated (clustered vectors of the bundled model's width, ``--per-track``
segments a track, unit length; each track's vectors derived from its id, so a track has the same vectors in both)
and written by embedtool's own EmbeddingWriter. The second holds the first's tracks and ``--new`` percent more,
whose ids fall between the old ones' (every row after the first new track moves, as in a real re-export). Then:

1. the index of the first export is built (as ``embedtool index`` builds it: auto kind under ``--memory-mb``,
   tuned to recall@10 >= 0.95; no calibration or fingerprints, there is no audio);
2. ``update``: that index updated to the second export (removed/renumbered/added, recall probe) and written
   with its id tables and meta.json, timed;
3. ``full``: the second export indexed from scratch, timed;
4. recall@10 of both against exact search on the same held-out rows (their own row left out), at the search
   parameters each chose.

    ./dev bench bench_incremental                        # 10k tracks x 100 segments (1M vectors), 2048 MB: ivf
    ./dev bench bench_incremental --memory-mb 256        # the same as ivf-pq (codes in memory)
    ./dev bench bench_incremental --tracks 2000          # a quick look

Runs on one thread (OMP_NUM_THREADS=1), so the two timings are comparable on a shared machine. The generated
exports stay in --workdir (--regenerate to remake them). Writes
bench/results/bench_incremental-<kind>-<tracks>x<per-track>.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import RESULTS, log, print_table, result_path, write_json  # noqa: E402

DIM = 128  # the bundled model's embedding width


def generate(folder: Path, ids: list[int], per_track: int, seed: int) -> None:
    """An embeddings export of tracks ``ids`` (clustered: 1000 styles; a track's vectors from its id alone)."""
    import numpy as np

    from embedtool.artefacts import staged_dir
    from embedtool.embedding.store import EmbeddingWriter

    styles = np.random.default_rng(seed).standard_normal((1000, DIM)).astype(np.float32)
    config = {"hop_s": 0.5, "segment_seconds": 1.0, "hop_frames": 50, "segment_frames": 100, "features": {}}
    starts = np.arange(per_track) * 0.5
    with staged_dir(folder) as stage:
        writer = EmbeddingWriter(stage, DIM)
        for n, track in enumerate(sorted(ids)):
            rng = np.random.default_rng([seed, track])
            centre = styles[rng.integers(0, 1000)] + 0.7 * rng.standard_normal(DIM).astype(np.float32)
            x = centre + 0.5 * rng.standard_normal((per_track, DIM)).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            row = {"track_id": f"{track:016x}", "path": f"/library/{track}.flac", "duration_s": per_track * 0.5 + 0.5}
            writer.add_track(row, starts, starts + 1.0, x)
            if n and n % 5000 == 0:
                log(f"{folder.name}: generated {n} of {len(ids)} tracks")
        writer.finish(config, {"features": "synthetic", "model": "synthetic"}, extra={"synthetic": True})


def build(index_dir: Path, embeddings: Path, options: object) -> tuple[float, dict]:
    """A full build of ``embeddings`` into ``index_dir``: (seconds, the segment index's summary)."""
    from embedtool.artefacts import staged_dir
    from embedtool.embedding.store import EmbeddingStore
    from embedtool.indexing.build import build_index, write_id_tables, write_index_files

    started = time.perf_counter()
    store = EmbeddingStore(embeddings)
    with staged_dir(index_dir) as stage:
        segments = build_index(store.segment_source(remap_gathers=True), options, None, "segments", stage)
        tracks = build_index(store.track_vectors(), options, None, "tracks")
        write_id_tables(stage, store)
        identify = {"statistic": "confidence", "threshold": 0.5, "calibrated": False, "reason": "synthetic"}
        summaries, _ = write_index_files(stage, segments, tracks, store, options, identify, {"built": False})
    return time.perf_counter() - started, summaries["segments"]


def update(index_dir: Path, embeddings: Path, options: object) -> tuple[float, dict, dict]:
    """The index in ``index_dir`` updated to ``embeddings``: (seconds, the segment summary, what changed)."""
    from embedtool.artefacts import staged_dir
    from embedtool.embedding.store import EmbeddingStore
    from embedtool.indexing.build import write_id_tables, write_index_files
    from embedtool.indexing.store import IndexStore
    from embedtool.indexing.update import update_index

    started = time.perf_counter()
    store = EmbeddingStore(embeddings)
    with staged_dir(index_dir) as stage:
        updated = update_index(IndexStore(index_dir), stage, store, None, options)
        if isinstance(updated, str):
            raise SystemExit(f"the update asked for a full build: {updated}")
        write_id_tables(stage, store)
        summaries, _ = write_index_files(
            stage, updated.segments, updated.tracks, store, options, updated.identify, {"built": False}, updated.change
        )
    return time.perf_counter() - started, summaries["segments"], updated.change


def recall(index_dir: Path, embeddings: Path, queries: int, seed: int) -> float:
    """recall@10 of the index against exact search on ``queries`` rows of the export (each row's own left out)."""
    import numpy as np

    from embedtool.embedding.store import EmbeddingStore
    from embedtool.indexing.build import exact_top_k, search_excluding_self
    from embedtool.indexing.search import recall_at_k
    from embedtool.indexing.store import IndexStore

    store = EmbeddingStore(embeddings)
    source = store.segment_source()
    index = IndexStore(index_dir).segment_index()
    if index.kind == "ivf-pq":
        index.refine_vectors = source
    rows = np.sort(np.random.default_rng(seed).choice(len(source), queries, replace=False))
    truth = exact_top_k(source, source[rows], 10, query_rows=rows)
    return recall_at_k(search_excluding_self(index, source[rows], rows, 10), truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=10_000)
    parser.add_argument("--per-track", type=int, default=100)
    parser.add_argument("--new", type=float, default=1.0, help="percent of new tracks in the second export")
    parser.add_argument("--memory-mb", type=float, default=2048.0)
    parser.add_argument("--queries", type=int, default=500, help="held-out rows of the recall comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=RESULTS / "incremental-work")
    parser.add_argument("--regenerate", action="store_true")
    args = parser.parse_args()

    from embedtool.indexing.options import IndexOptions

    work = args.workdir / f"{args.tracks}x{args.per_track}-{args.new:g}"
    before, after = work / "embeddings-before", work / "embeddings-after"
    old_ids = [3 * i for i in range(args.tracks)]
    added = max(1, round(args.tracks * args.new / 100))
    new_ids = old_ids + [3 * (i * args.tracks // added) + 1 for i in range(added)]  # between the old ones
    if args.regenerate or not (after / "meta.json").is_file():
        shutil.rmtree(work, ignore_errors=True)
        generate(before, old_ids, args.per_track, args.seed)
        generate(after, new_ids, args.per_track, args.seed)
    options = IndexOptions(memory_budget_mb=args.memory_mb, fingerprints="off", identify_threshold=0.5)

    log("building the index of the first export")
    first_s, first = build(work / "index-updated", before, options)
    log(f"updating it to the second export ({added} new tracks)")
    update_s, updated, change = update(work / "index-updated", after, options)
    log("building the second export's index from scratch")
    full_s, full = build(work / "index-full", after, options)
    log("measuring recall of both on the same rows")
    rows = [
        {"index": "full build", "seconds": round(full_s, 2), "nprobe": full["params"].get("nprobe"),
         "recall_at_10": round(recall(work / "index-full", after, args.queries, args.seed + 7), 4),
         "tuned_recall": full["recall"]},
        {"index": "update", "seconds": round(update_s, 2), "nprobe": updated["params"].get("nprobe"),
         "recall_at_10": round(recall(work / "index-updated", after, args.queries, args.seed + 7), 4),
         "tuned_recall": updated["recall"]},
    ]  # fmt: skip
    result = {
        "tracks_before": args.tracks,
        "tracks_added": added,
        "segments_after": full["vectors"],
        "dim": DIM,
        "kind": full["kind"],
        "params": full["params"],
        "memory_budget_mb": args.memory_mb,
        "first_build_s": round(first_s, 2),
        "change": change,
        "rows": rows,
        "update_share_of_full": round(update_s / full_s, 4),
        "threads": os.environ.get("OMP_NUM_THREADS"),
    }
    print_table(f"{added} new tracks on {args.tracks} ({full['vectors']} vectors, {full['kind']})", rows)
    log(f"update: {update_s / full_s:.1%} of the full build's time")
    write_json(result_path(f"bench_incremental-{full['kind']}-{args.tracks}x{args.per_track}"), result)


if __name__ == "__main__":
    main()
