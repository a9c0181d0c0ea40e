"""Per-query cost of `embedtool neighbours`: N queries in one process (the model and index loaded once) against
the same N queries as N processes, side by side on one workspace.

The workspace is the bundled audio with the bundled model (`extract`, `train --pretrained general`, `index`);
the queries are the first N bundled files.

    ./dev bench bench_query_batch [--queries 20] [--work DIR]
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


def run(command: list[str]) -> None:
    done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command[:8])} ... failed ({done.returncode}):\n{done.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--work", type=Path, default=Path("/tmp/embedtool-bench-query-batch"))
    args = parser.parse_args()
    audio = ROOT / "embedtool" / "sample_audio" / "sonicpi-cc0"
    ws = args.work / "ws"
    shutil.rmtree(ws, ignore_errors=True)
    for step in (["extract", str(audio)], ["train", "--pretrained", "general"], ["index"]):
        subprocess.run([*EMBEDTOOL, "-q", "-w", str(ws), *step], check=True, stdout=subprocess.DEVNULL)
    queries = [str(p) for p in sorted(audio.rglob("*.flac"))[: args.queries]]
    base = [*EMBEDTOOL, "-q", "-w", str(ws), "neighbours", "--format", "csv"]
    # Exit 1 is fine: a one-shot shorter than the shortest usable query is reported, the others answered.
    t0 = time.perf_counter()
    run([*base, *queries])
    batch_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for query in queries:
        run([*base, query])
    separate_s = time.perf_counter() - t0
    n = len(queries)
    result = {
        "queries": n,
        "one_process_s": round(batch_s, 2),
        "one_process_per_query_s": round(batch_s / n, 3),
        "process_per_query_s": round(separate_s / n, 3),
        "ratio": round(separate_s / batch_s, 1),
    }
    log(f"{n} queries: one process {batch_s:.1f} s ({batch_s / n:.2f} s a query); {n} processes {separate_s:.1f} s "
        f"({separate_s / n:.2f} s a query): {result['ratio']}x")  # fmt: skip
    write_json(result_path("bench_query_batch", timestamp()), result)


if __name__ == "__main__":
    main()
