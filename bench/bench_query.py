"""Cold query benchmark: `embedtool neighbours song.mp3` on a 4-minute mp3, CPU, stage by stage.

Each run is a fresh process (cold: nothing imported or loaded). Two kinds of runs, alternated:

- the real command, ``embedtool -q -w WS neighbours song.mp3 --json`` (wall time of the whole process);
- a driver process doing the same steps with a clock around each: importing torch, importing the rest of
  embedtool's CLI, opening the index (model, FAISS index, id tables), then the query's own stages (features:
  decoded and featurised block by block; embedding, search, voting) as ``QueryResult.timings`` reports them.

Target: at most 1.5 s beyond importing torch. The song is generated (a 4-minute stereo 44.1 kHz mp3 of random
notes over a noise bed). Needs a workspace with a model and an index (default: the one bench_reid prepares).

    .venv/bin/python bench/bench_query.py [--workspace WS] [--runs 3]

Writes bench/results/bench_query.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from _common import WS_MUSIC, result_path, write_json

DRIVER = r"""
import json, sys, time
t0 = time.perf_counter(); c0 = time.process_time()
import torch
t1 = time.perf_counter(); c1 = time.process_time()
import embedtool.cli.app  # everything the command imports
from embedtool.query.searcher import Searcher
from embedtool.workspace import Workspace
t2 = time.perf_counter(); c2 = time.process_time()
from pathlib import Path
searcher = Searcher.open(Workspace(Path(sys.argv[1])))
t3 = time.perf_counter(); c3 = time.process_time()
result = searcher.query_file(sys.argv[2])
t4 = time.perf_counter(); c4 = time.process_time()
print(json.dumps({"import torch": t1 - t0, "import embedtool": t2 - t1, "open index": t3 - t2,
                  **{k: v for k, v in result.timings.items()}, "query total": t4 - t3, "total": t4 - t0,
                  "cpu import torch": c1 - c0, "cpu import embedtool": c2 - c1, "cpu open index": c3 - c2,
                  "cpu query": c4 - c3, "cpu total": c4 - c0, "windows": result.query.windows,
                  "top": result.matches[0].track_id if result.matches else None}))
"""


def make_song(path: Path, seconds: float = 240.0, sr: int = 44100, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    out = np.zeros(n, dtype=np.float32)
    at = 0
    while at < n:
        length = int(rng.uniform(0.12, 0.6) * sr)
        f = 110 * 2 ** (rng.integers(0, 48) / 12)
        t = np.arange(min(length, n - at)) / sr
        note = sum(np.sin(2 * np.pi * f * h * t) / h for h in range(1, 4)) * np.exp(-3 * t)
        out[at : at + len(t)] += 0.3 * note.astype(np.float32)
        at += len(t)
    out += 0.02 * rng.standard_normal(n).astype(np.float32)
    stereo = np.stack([out, np.roll(out, 200)], axis=1)
    sf.write(path, stereo, sr, format="MP3")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=WS_MUSIC)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="OMP/MKL threads of the measured processes")
    args = parser.parse_args()
    ws = args.workspace.resolve()
    if not (ws / "index" / "meta.json").is_file():
        sys.exit(f"no index in {ws}: run bench/bench_reid.py --prepare first (or give --workspace)")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    embedtool = shutil.which("embedtool", path=str(Path(sys.executable).parent)) or "embedtool"
    runs: dict[str, list] = {"cli": [], "driver": [], "torch": []}
    with tempfile.TemporaryDirectory() as tmp:
        song = make_song(Path(tmp) / "song.mp3")
        print(f"song: {song.stat().st_size / 1e6:.1f} MB mp3, {sf.info(song).duration:.0f} s; workspace {ws}")
        for _ in range(args.runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import torch"], check=True, env=env)
            runs["torch"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            out = subprocess.run(
                [embedtool, "-q", "-w", str(ws), "neighbours", str(song), "--json"],
                check=True, env=env, capture_output=True, text=True, cwd=tmp,
            )  # fmt: skip
            runs["cli"].append(time.perf_counter() - t0)
            json.loads(out.stdout)
            out = subprocess.run(
                [sys.executable, "-c", DRIVER, str(ws), str(song)], check=True, env=env, capture_output=True, text=True
            )
            runs["driver"].append(json.loads(out.stdout.strip().splitlines()[-1]))
    stages = ["import torch", "import embedtool", "open index", "features", "embedding", "search", "voting"]
    cpu = ["cpu import torch", "cpu import embedtool", "cpu open index", "cpu query", "cpu total"]
    median = {s: float(np.median([r[s] for r in runs["driver"]])) for s in stages + ["total"] + cpu}
    torch_s = float(np.median(runs["torch"]))
    cli_s = float(np.median(runs["cli"]))
    print(f"\n{'stage':20s} {'median s':>9s}")
    for s in stages:
        print(f"{s:20s} {median[s]:9.3f}")
    print(f"{'driver total':20s} {median['total']:9.3f}")
    print("CPU time (process_time; wall times above are inflated when the machine is shared):")
    for s in cpu:
        print(f"{s:20s} {median[s]:9.3f}")
    print(f"CPU beyond importing torch {median['cpu total'] - median['cpu import torch']:.2f} s")
    print(f"\ncold CLI wall {cli_s:.2f} s; `python -c 'import torch'` {torch_s:.2f} s")
    print(f"CLI beyond importing torch {cli_s - torch_s:.2f} s")
    beyond_driver = median["total"] - median["import torch"]
    print(f"driver: beyond importing torch {beyond_driver:.2f} s (target <= 1.5 s)")
    out_path = write_json(
        result_path("bench_query"),
        {
            "argv": sys.argv,
            "workspace": str(ws),
            "threads": args.threads,
            "median_stages_s": median,
            "cli_wall_s": runs["cli"],
            "torch_import_s": runs["torch"],
            "cli_beyond_torch_s": cli_s - torch_s,
            "driver_beyond_torch_s": beyond_driver,
            "driver_cpu_beyond_torch_s": median["cpu total"] - median["cpu import torch"],
            "driver_runs": runs["driver"],
        },
    )
    print(f"written {out_path}")


if __name__ == "__main__":
    main()
