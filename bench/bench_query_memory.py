"""Peak memory of a cold `embedtool neighbours` on a long query file, beside the same command on a 2-second one.

A query goes through the library's front end (``features/frontend.py``), decoded and featurised block by block
like an extracted track, and its windows are sampled (at most ``MAX_QUERY_WINDOWS``): what a long query costs
beyond the process itself should be its float16 features only. The script generates a HOURS-long 16 kHz mono
FLAC (tones and a little noise), makes a workspace of the bundled audio with the bundled model (`extract`,
`train --pretrained general`, `index`), then runs each query in its own process and reads that process's peak
RSS. Both runs pay the same start-up (torch, FAISS, the model), so the difference is what the long query adds.

    ./dev bench bench_query_memory [--hours 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _common import log, result_path, timestamp, write_json

ROOT = Path(__file__).resolve().parents[1]
EMBEDTOOL = [sys.executable, "-m", "embedtool"]
# Runs a command and prints the peak RSS (KiB on Linux) of the processes it waited for.
PEAK_RSS = (
    "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
)


def write_long_file(path: Path, hours: float, sr: int = 16000) -> None:
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    total, block = int(hours * 3600 * sr), 60 * sr
    with sf.SoundFile(str(path), "w", sr, 1, format="FLAC", subtype="PCM_16") as out:
        for start in range(0, total, block):
            n = min(block, total - start)
            t = (np.arange(n) + start) / sr
            freq = 220 * 2 ** ((start // block) % 12 / 12)  # a new note every minute
            tone = 0.3 * np.sin(2 * np.pi * freq * t) * (0.5 + 0.5 * np.sin(np.pi * t))
            out.write((tone + 0.01 * rng.standard_normal(n)).astype(np.float32))


def peak_rss_mb(args: list[str]) -> tuple[float, float]:
    """(peak RSS in MiB, wall seconds) of ``embedtool ARGS`` run in a fresh process."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", PEAK_RSS, *EMBEDTOOL, *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"embedtool {' '.join(args)} failed:\n{out.stderr}")
    return int(out.stdout.split()[-1]) / 1024, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=3.0, help="length of the long query file")
    parser.add_argument("--work", type=Path, default=Path("/tmp/embedtool-bench-query-memory"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    long_file = args.work / f"long-{args.hours:g}h.flac"
    if not long_file.is_file():
        log(f"writing a {args.hours:g}-hour query file")
        write_long_file(long_file, args.hours)
    ws = args.work / "ws"
    shutil.rmtree(ws, ignore_errors=True)
    audio = ROOT / "embedtool" / "sample_audio" / "sonicpi-cc0"
    for step in (["extract", str(audio)], ["train", "--pretrained", "general"], ["index"]):
        subprocess.run([*EMBEDTOOL, "-q", "-w", str(ws), *step], check=True, stdout=subprocess.DEVNULL)
    short_file = audio / "loop" / "loop_amen.flac"
    rows = {}
    for name, query in (("short (1.8 s)", short_file), (f"long ({args.hours:g} h)", long_file)):
        mb, seconds = peak_rss_mb(["-q", "-w", str(ws), "neighbours", str(query), "--json"])
        rows[name] = {"peak_rss_mb": round(mb), "seconds": round(seconds, 1)}
        log(f"{name}: peak RSS {mb:.0f} MiB in {seconds:.1f} s")
    short, long = rows.values()
    result = {
        "hours": args.hours,
        "runs": rows,
        "long_query_adds_mb": long["peak_rss_mb"] - short["peak_rss_mb"],
        "ratio_long_to_short": round(long["peak_rss_mb"] / short["peak_rss_mb"], 2),
    }
    print(f"the {args.hours:g}-hour query adds {result['long_query_adds_mb']} MiB to the process's peak")
    write_json(result_path("bench_query_memory", timestamp()), result)


if __name__ == "__main__":
    main()
