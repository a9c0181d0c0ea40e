"""Extract engines side by side: the local process pool vs Ray workers, on the same real files in one run.

Rows (each into a fresh features folder, same files, page cache warmed first):

- ``local``: ``run_extract`` with the local engine and ``--jobs`` worker processes (default 2);
- ``ray``: the same with ``engine=ray`` on a Ray started here beforehand with ``--jobs`` CPUs (its start-up is
  reported on its own line: a run started with ``--engine ray`` and no ``--cluster`` pays it once).

Both must make the same features (checked: same track table and shard arrays, shard names aside). Wall time,
files/s, audio hours/s and the ratio to the local row are printed as a table and written to
bench/results/bench_engine.json.

    .venv/bin/python bench/bench_engine.py                                  # 200 files of music-dev (all, if fewer)
    .venv/bin/python bench/bench_engine.py --corpus ~/.cache/embedtool-corpora/drums --limit 200
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import MUSIC_DEV, log, print_table, result_path, write_json

from embedtool.audio.discover import discover_audio
from embedtool.audio.settings import FeatureSettings
from embedtool.engine import EngineOptions
from embedtool.features.extract import ExtractReport, run_extract
from embedtool.features.options import ExtractOptions


def pick(corpus: Path, limit: int) -> list[Path]:
    """Every k-th audio file of ``corpus`` so that ``limit`` remain (all of them if fewer)."""
    found = [f.path for f in discover_audio([corpus])]
    if limit and len(found) > limit:
        step = len(found) / limit
        found = [found[int(i * step)] for i in range(limit)]
    return found


def layout(features: Path) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The track table with shard names by rank, and the shard arrays' bytes (names are random)."""
    import numpy as np
    import pyarrow.parquet as pq

    meta = json.loads((features / "meta.json").read_text())
    rows = pq.read_table(features / meta["extra"]["table"]).to_pylist()
    names = sorted({r["shard"] for r in rows}, key=lambda n: min(r["track_id"] for r in rows if r["shard"] == n))
    rank = {n: i for i, n in enumerate(names)}
    arrays = [np.load(features / "shards" / f"{n}.npy").tobytes() for n in names]
    return [{**r, "shard": rank[r["shard"]]} for r in rows], arrays


def row(name: str, report: ExtractReport, wall: float, files: int) -> dict[str, Any]:
    return {
        "engine": name,
        "files": files,
        "done": report.done,
        "tasks": report.tasks,
        "workers": report.jobs,
        "audio_h": report.hours,
        "wall_s": wall,
        "files_per_s": files / wall,
        "audio_h_per_s": report.hours / wall,
        "cpu_s": report.featurise_cpu_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=MUSIC_DEV, help="folder of audio (default: music-dev)")
    parser.add_argument("--limit", type=int, default=200, help="use every k-th file so that N files remain")
    parser.add_argument("--jobs", type=int, default=2, help="local worker processes = Ray CPUs (default 2)")
    args = parser.parse_args()

    files = pick(args.corpus.expanduser(), args.limit)
    log(f"{len(files)} files of {args.corpus}; warming the page cache")
    for path in files:
        path.read_bytes()
    settings, options = FeatureSettings(), ExtractOptions(jobs=args.jobs)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        log(f"local: {args.jobs} worker processes")
        t0 = time.perf_counter()
        local = run_extract(files, Path(tmp) / "local", settings, options)
        rows.append(row("local", local, time.perf_counter() - t0, len(files)))

        import ray

        log(f"ray: starting a local Ray with {args.jobs} CPUs")
        t0 = time.perf_counter()
        ray.init(num_cpus=args.jobs, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        ray.get(ray.remote(lambda: None).remote())  # a first task: a worker is up
        startup = time.perf_counter() - t0
        try:
            t0 = time.perf_counter()
            on_ray = run_extract(files, Path(tmp) / "ray", settings, options, engine=EngineOptions(name="ray"))
            rows.append(row("ray", on_ray, time.perf_counter() - t0, len(files)))
        finally:
            ray.shutdown()
        same = layout(Path(tmp) / "local") == layout(Path(tmp) / "ray")
    for r in rows:
        r["vs_local"] = rows[0]["wall_s"] / r["wall_s"]
    print_table(f"extract of {len(files)} files ({rows[0]['audio_h']:.2f} h of audio), {args.jobs} workers each", rows)
    print(f"\nRay start-up (not in the ray row): {startup:.1f} s; same features from both engines: {same}")
    out = write_json(
        result_path("bench_engine"),
        {
            "corpus": str(args.corpus),
            "files": len(files),
            "jobs": args.jobs,
            "rows": rows,
            "ray_startup_s": startup,
            "identical": same,
        },  # fmt: skip
    )
    log(f"wrote {out}")
    if not same:
        raise SystemExit("the engines made different features")


if __name__ == "__main__":
    main()
