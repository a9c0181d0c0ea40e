"""Scale benchmark: a synthetic library of 100k tracks and 20M segment vectors, indexed within a memory budget.

No audio: the embeddings artefact is generated (clustered vectors of the bundled model's width, 200 segments a
track, unit length) and written by embedtool's own EmbeddingWriter, beside a copy of the bundled model, so the
index and the CLI read a real workspace. Measured in one run:

1. ``index``: the segment index built as ``embedtool index`` builds it (auto kind under ``--memory-mb``: on this
   size ivf-pq with on-disk inverted lists), in a child process: build time, peak resident memory (VmHWM) and
   peak anonymous memory (RssAnon, sampled), recall@10 after tuning.
2. queries: warm single-query latency (loaded index, one thread) and a cold process (open the index, one query).
3. ``embedtool neighbours`` whole-CLI cold time next to ``python -c "import torch"`` (medians of 3).
4. the track table at 1M tracks (no audio): reading it as the stores do, the id -> row map, name lookups.

    ./dev bench bench_scale                                  # 100k tracks x 200 segments, 2048 MB budget
    ./dev bench bench_scale --tracks 2000 --table-tracks 20000   # a quick look

The generated workspace (~11 GB at full size) stays in --workdir for reruns (--regenerate to rebuild).
Writes bench/results/bench_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from _common import log, print_table, result_path, write_json

BENCH = Path(__file__).resolve()
PRETRAINED = BENCH.parent.parent / "embedtool" / "pretrained" / "general"


def generate(ws_root: Path, tracks: int, per_track: int, seed: int) -> None:
    """The embeddings artefact of ``tracks`` synthetic tracks (clustered: 1000 styles, each track near one), and
    the bundled model as the workspace's model."""
    import numpy as np

    from embedtool.artefacts import staged_dir
    from embedtool.embedding.export import export_config, load_encoder
    from embedtool.embedding.options import EmbedOptions
    from embedtool.embedding.store import EmbeddingWriter
    from embedtool.workspace import Workspace

    ws = Workspace.at(ws_root)
    ws.root.mkdir(parents=True, exist_ok=True)
    if ws.model.exists():
        shutil.rmtree(ws.model)
    shutil.copytree(PRETRAINED, ws.model)
    encoder = load_encoder(ws.model)
    dim = int(encoder.embedding_dim)
    options = EmbedOptions()
    hop_frames = max(1, round(options.hop_seconds * encoder.feature_settings.frames_per_second))
    config = export_config(encoder, options, hop_frames)
    hop_s, seg_s = config["hop_s"], config["segment_seconds"]
    rng = np.random.default_rng(seed)
    styles = rng.standard_normal((1000, dim)).astype(np.float32)
    chunk = 500
    with staged_dir(ws.embeddings) as stage:
        writer = EmbeddingWriter(stage, dim)
        for first in range(0, tracks, chunk):
            n = min(chunk, tracks - first)
            centres = styles[rng.integers(0, 1000, n)] + 0.7 * rng.standard_normal((n, dim)).astype(np.float32)
            x = centres[:, None, :] + 0.5 * rng.standard_normal((n, per_track, dim)).astype(np.float32)
            x /= np.linalg.norm(x, axis=2, keepdims=True)
            starts = np.arange(per_track) * hop_s
            for i in range(n):
                track = {"track_id": f"{first + i:016x}", "path": f"/library/album{(first + i) // 12}/{first + i}.flac",
                         "duration_s": per_track * hop_s + seg_s}  # fmt: skip
                writer.add_track(track, starts, starts + seg_s, x[i])
            if first % 20_000 == 0:
                log(f"generated {first + n} of {tracks} tracks")
        writer.finish(config, {"features": "synthetic", "model": encoder.fingerprint}, extra={"synthetic": True})


def build(ws_root: Path, memory_mb: float) -> dict:
    """Build the index artefact as ``embedtool index`` does (no calibration or fingerprints: there is no audio);
    runs in a child process, so its peak memory is its own."""
    from embedtool.artefacts import staged_dir
    from embedtool.embedding.store import EmbeddingStore
    from embedtool.indexing.build import build_index, write_id_tables, write_index_files
    from embedtool.indexing.options import IndexOptions
    from embedtool.workspace import Workspace

    peak_anon = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak_anon[0] = max(peak_anon[0], _status_kb("RssAnon"))

    threading.Thread(target=sample, daemon=True).start()
    ws = Workspace.at(ws_root)
    options = IndexOptions(memory_budget_mb=memory_mb, fingerprints="off", identify_threshold=0.5)
    started = time.perf_counter()
    store = EmbeddingStore(ws.embeddings)
    with staged_dir(ws.index) as stage:
        source = store.segment_source(remap_gathers=True)
        segments = build_index(source, options, None, "segments", directory=stage, stem="segments")
        tracks = build_index(store.track_vectors(), options, None, "tracks")
        write_id_tables(stage, store)
        identify = {"statistic": "confidence", "threshold": 0.5, "calibrated": False, "reason": "synthetic"}
        fingerprints = {"built": False, "reason": "synthetic vectors: no audio"}
        summaries, _ = write_index_files(stage, segments, tracks, store, options, identify, fingerprints)
    done.set()
    return {
        "segments": store.n_segments,
        "tracks": len(store),
        "dim": store.dim,
        "memory_budget_mb": memory_mb,
        "kind": summaries["segments"]["kind"],
        "params": summaries["segments"]["params"],
        "recall_at_10": summaries["segments"]["recall"],
        "build_s": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(_status_kb("VmHWM") / 1024, 1),
        "peak_anon_mb": round(max(peak_anon[0], _status_kb("RssAnon")) / 1024, 1),
        "index_bytes": sum(p.stat().st_size for p in ws.index.iterdir() if p.is_file()),
    }


def query(ws_root: Path, warm_queries: int) -> dict:
    """Open the index (cold: this is a fresh process) and query it: the open time, the first query, then the
    median of ``warm_queries`` more (one thread), each a stored vector plus noise."""
    import numpy as np

    from embedtool.indexing.store import IndexStore
    from embedtool.threads import single_threaded

    t0 = time.perf_counter()
    from embedtool.embedding.store import EmbeddingStore

    built = IndexStore(ws_root / "index")
    index = built.segment_index()
    store = EmbeddingStore(ws_root / "embeddings")
    index.refine_vectors = store.segment_source(check_finite=False)
    tables = built.id_tables()
    opened = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    rows = rng.choice(index.ntotal, warm_queries + 1, replace=False)
    q = index.refine_vectors[rows] + 0.05 * rng.standard_normal((len(rows), store.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    times = []
    with single_threaded():
        for vector in q:
            t = time.perf_counter()
            _, found = index.search(vector[None, :], 10)
            tables.segment_id(int(found[0, 0]))
            times.append(time.perf_counter() - t)
    return {
        "open_s": round(opened, 3),
        "first_query_ms": round(times[0] * 1000, 2),
        "warm_query_ms_p50": round(statistics.median(times[1:]) * 1000, 3),
        "warm_query_ms_p95": round(float(np.percentile(times[1:], 95)) * 1000, 3),
    }


def cli_cold(ws_root: Path, repeats: int) -> dict:
    """``embedtool neighbours`` on a 10 s generated clip (a fresh process each time) beside ``import torch``."""
    import numpy as np
    import soundfile as sf

    clip = ws_root / "query.wav"
    t = np.arange(10 * 22050) / 22050
    sf.write(clip, (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 2 * t))).astype(np.float32), 22050)
    exe = Path(sys.executable).parent / "embedtool"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def median_s(cmd: list[str]) -> float:
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env=env)
            runs.append(time.perf_counter() - t0)
        return statistics.median(runs)

    torch_s = median_s([sys.executable, "-c", "import torch"])
    cmd = [str(exe), "-w", str(ws_root), "neighbours", str(clip), "--mode", "similar", "--format", "json"]
    neighbours_s = median_s(cmd)
    return {"import_torch_s": round(torch_s, 2), "neighbours_s": round(neighbours_s, 2),
            "over_import_torch_s": round(neighbours_s - torch_s, 2)}  # fmt: skip


def table_ops(folder: Path, n_tracks: int) -> dict:
    """A track table of ``n_tracks`` rows (as an embeddings export writes it), read and looked up as the stores
    and the CLI do."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from embedtool.embedding.store import TRACK_SCHEMA
    from embedtool.features.naming import find_track
    from embedtool.tracktable import TrackTable

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"tracks-{n_tracks}.parquet"
    ids = [f"{i:016x}" for i in range(n_tracks)]
    table = {
        "track_id": ids,
        "path": [f"/library/artist{i // 120}/album{i // 12}/{i:07d} a track title.flac" for i in range(n_tracks)],
        "label": [f"genre{i % 20}" for i in range(n_tracks)],
        "group": [f"album{i // 12}" for i in range(n_tracks)],
        "duration_s": np.full(n_tracks, 240.0),
        "n_segments": np.full(n_tracks, 200, dtype=np.int64),
        "row": np.arange(n_tracks, dtype=np.int64),
    }
    pq.write_table(pa.Table.from_pydict(table, schema=TRACK_SCHEMA), path)
    del table, ids
    probe = [f"{i:016x}" for i in np.random.default_rng(0).integers(0, n_tracks, 1000)]
    name = f"album{(n_tracks - 1) // 12}/{n_tracks - 1:07d} a track title.flac"
    out: dict = {"tracks": n_tracks}
    # before: a dict per track and a dict of every id; now: the columns (TrackTable), rows made when read
    rss0 = _status_kb("VmRSS")
    t0 = time.perf_counter()
    rows = pq.read_table(path).to_pylist()
    by_id = {t["track_id"]: t for t in rows}
    out["dicts_open_s"] = round(time.perf_counter() - t0, 2)
    out["dicts_memory_mb"] = round((_status_kb("VmRSS") - rss0) / 1024, 1)
    del rows, by_id
    rss0 = _status_kb("VmRSS")
    t0 = time.perf_counter()
    table = TrackTable(pq.read_table(path))
    table.index_of("")  # the sorted id column, built on the first lookup
    out["columns_open_s"] = round(time.perf_counter() - t0, 2)
    out["columns_memory_mb"] = round((_status_kb("VmRSS") - rss0) / 1024, 1)
    t0 = time.perf_counter()
    assert all(table.get(p) is not None for p in probe)
    out["lookup_by_id_us"] = round((time.perf_counter() - t0) / len(probe) * 1e6, 2)
    t0 = time.perf_counter()
    assert find_track(table, name) is not None
    out["lookup_by_name_s"] = round(time.perf_counter() - t0, 3)
    return out


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _child(step: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, str(BENCH), "_" + step, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):  # a child step: print its JSON on the last line
        step, args = sys.argv[1][1:], sys.argv[2:]
        result = {"build": lambda: build(Path(args[0]), float(args[1])),
                  "query": lambda: query(Path(args[0]), int(args[1])),
                  "table": lambda: table_ops(Path(args[0]), int(args[1]))}[step]()  # fmt: skip
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--segments-per-track", type=int, default=200)
    parser.add_argument("--memory-mb", type=float, default=2048.0, help="index.memory_budget_mb")
    parser.add_argument("--table-tracks", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "embedtool-bench" / "scale")
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    ws = args.workdir / f"ws-{args.tracks}x{args.segments_per_track}"
    if args.regenerate or not (ws / "embeddings" / "meta.json").is_file():
        log(f"generating {args.tracks} tracks x {args.segments_per_track} segments in {ws}")
        t0 = time.perf_counter()
        generate(ws, args.tracks, args.segments_per_track, seed=0)
        log(f"generated in {time.perf_counter() - t0:.0f} s")
    log("building the index (child process)")
    index = _child("build", str(ws), str(args.memory_mb))
    log(f"index: {index}")
    cold = _child("query", str(ws), "200")
    log(f"queries: {cold}")
    cli = cli_cold(ws, args.repeats)
    log(f"cli: {cli}")
    table = _child("table", str(args.workdir), str(args.table_tracks))
    log(f"table: {table}")
    print_table("index build", [index | {"params": json.dumps(index["params"])}])
    print_table("queries (fresh process)", [cold])
    print_table("CLI cold", [cli])
    print_table("track table", [table])
    write_json(result_path("bench_scale"), {"index": index, "queries": cold, "cli": cli, "table": table})


if __name__ == "__main__":
    main()
