"""Training speed side by side: an idle machine and one with a busy core, torch's default threads vs the threads
embedtool chooses from the CPUs actually free (embedtool.threads.CpuBudget).

Each case is a fresh process training the default preset's network for a few tens of steps on generated audio
(extracted once); the busy core is another process spinning in a loop. Reported: seconds per step (after two
warm-up steps), the threads each run used, and the ratio default / chosen.

    .venv/bin/python bench/bench_threads.py              # ~2 min on 2 cores
    .venv/bin/python bench/bench_threads.py --steps 60

Writes bench/results/bench_threads-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import RESULTS, log

WARMUP = 2


def make_features(root: Path) -> Path:
    """24 generated 4 s tracks (tones and noise bands), extracted with the default feature settings."""
    import numpy as np
    import soundfile as sf

    from embedtool.audio.settings import FeatureSettings
    from embedtool.features.extract import run_extract
    from embedtool.features.options import ExtractOptions

    sr, rng = 22050, np.random.default_rng(0)
    for i in range(24):
        t = np.arange(4 * sr) / sr
        tone = np.sin(2 * np.pi * (150 + 40 * i) * t) * (0.2 + 0.1 * np.sin(2 * np.pi * (0.5 + i % 3) * t))
        signal = (0.3 * tone + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
        folder = root / "audio" / f"c{i % 3}"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"t{i}.wav", signal, sr)
    run_extract([root / "audio"], root / "features", FeatureSettings(), ExtractOptions(jobs=1))
    return root / "features"


def one_run(features: Path, steps: int, out: Path) -> None:
    """(in a child process) Train ``steps`` steps; write seconds per step after the warm-up, and threads used."""
    import torch

    from embedtool.model.settings import TrainSettings
    from embedtool.training.trainer import train

    marks: dict[int, float] = {}
    used: list[int] = []

    def progress(event: dict) -> None:
        if event["event"] == "step":
            marks[event["step"]] = time.perf_counter()
            used.append(torch.get_num_threads())

    settings = TrainSettings(epochs=1, steps_per_epoch=steps, val_triplets=32, device="cpu", workers=0)
    train(features, out.parent / "split", out.parent / "model", settings, progress=progress)
    per_step = (marks[steps] - marks[WARMUP]) / (steps - WARMUP)
    out.write_text(json.dumps({"s_per_step": per_step, "threads": sorted(set(used))}))


def run_case(features: Path, steps: int, threads: str, busy: bool, work: Path) -> dict:
    """One case in a fresh process: ``threads`` 'default' (torch's own count, fixed) or 'chosen'."""
    import torch

    env = dict(os.environ)
    env.pop("EMBEDTOOL_THREADS", None)
    if threads == "default":
        env["EMBEDTOOL_THREADS"] = str(torch.get_num_threads())  # what torch starts with: one per core
    spinner = None
    if busy:
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(1.0)
    out = work / f"{threads}-{'busy' if busy else 'idle'}.json"
    load = os.getloadavg()[0]
    try:
        subprocess.run([sys.executable, __file__, "--child", str(features), str(steps), str(out)], env=env, check=True)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    result = {"threads_mode": threads, "busy_core": busy, "load_before": round(load, 2), **json.loads(out.read_text())}
    where = "one busy core" if busy else "idle"
    log(f"{where:13} {threads:8} {result['s_per_step']:.3f} s/step  threads {result['threads']}  load {load:.1f}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30, help="training steps per case")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        one_run(Path(args.child[0]), int(args.child[1]), Path(args.child[2]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        log("extracting 24 generated tracks")
        features = make_features(work)
        rows = [run_case(features, args.steps, t, busy, work) for busy in (False, True) for t in ("default", "chosen")]
    ratio = {
        ("busy" if busy else "idle"): round(
            next(r for r in rows if r["busy_core"] == busy and r["threads_mode"] == "default")["s_per_step"]
            / next(r for r in rows if r["busy_core"] == busy and r["threads_mode"] == "chosen")["s_per_step"],
            2,
        )
        for busy in (False, True)
    }
    log(f"default / chosen seconds per step: idle {ratio['idle']}x, one busy core {ratio['busy']}x")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"bench_threads-{time.strftime('%Y%m%d-%H%M%S')}.json"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    path.write_text(json.dumps({"steps": args.steps, "cpus": cpus, "rows": rows, "ratio": ratio}, indent=2))
    log(f"written to {path}")


if __name__ == "__main__":
    main()
