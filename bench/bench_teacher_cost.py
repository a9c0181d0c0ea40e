"""Benchmark: what the opt-in aisfx teacher costs beside the default path.

On the same audio files, in one process, one torch thread each, CPU seconds (user + system, so another job on the
machine does not count): (a) embedtool's default path, `extract` + `embed` of a fresh workspace with the bundled
`general` model; (b) the aisfx teacher's vectors (`model.teachers.ensure_teacher_outputs`: a second decode at
44.1 kHz and the network). Prints both and their ratio, per audio hour.

    ./dev bench bench_teacher_cost [--corpus DIR] [--files N]     # default: 12 files of music-unseen
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from _common import CORPORA, log, result_path, timestamp, write_json


def cpu_seconds() -> float:
    """This process's CPU time and its finished children's (extract's worker processes)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=CORPORA / "music-unseen")
    parser.add_argument("--files", type=int, default=12)
    args = parser.parse_args()
    import torch

    from embedtool import pipeline
    from embedtool.embedding.store import EmbeddingStore
    from embedtool.features.options import ExtractOptions
    from embedtool.model.teachers import ensure_teacher_outputs, teacher_dir
    from embedtool.workspace import Workspace

    torch.set_num_threads(1)
    files = sorted(p for p in args.corpus.rglob("*") if p.suffix.lower() in (".ogg", ".wav", ".flac", ".mp3"))
    files = files[:: max(1, len(files) // args.files)][: args.files]
    with tempfile.TemporaryDirectory() as tmp:
        audio = Path(tmp) / "audio"
        audio.mkdir()
        for i, f in enumerate(files):
            (audio / f"{i:03d}{f.suffix}").symlink_to(f.resolve())
        ws = Workspace(Path(tmp) / "ws")
        clock, wall = cpu_seconds(), time.perf_counter()
        report = pipeline.extract(ws, [audio], options=ExtractOptions(jobs=1))
        pipeline.adopt(ws, "general")
        pipeline.embed(ws)
        default_cpu, default_wall = cpu_seconds() - clock, time.perf_counter() - wall
        store = EmbeddingStore(ws.embeddings)
        tracks = {t["track_id"]: t["path"] for t in store.tracks}
        clock, wall = cpu_seconds(), time.perf_counter()
        ensure_teacher_outputs(teacher_dir(ws.root, "aisfx"), tracks, "aisfx")
        teacher_cpu, teacher_wall = cpu_seconds() - clock, time.perf_counter() - wall
    hours = report.total_hours
    figures = {
        "files": len(files),
        "audio_hours": round(hours, 3),
        "default_cpu_s": round(default_cpu, 1),
        "default_wall_s": round(default_wall, 1),
        "aisfx_cpu_s": round(teacher_cpu, 1),
        "aisfx_wall_s": round(teacher_wall, 1),
        "default_cpu_s_per_audio_hour": round(default_cpu / hours, 1),
        "aisfx_cpu_s_per_audio_hour": round(teacher_cpu / hours, 1),
        "aisfx_vs_default": round(teacher_cpu / default_cpu, 2),
    }
    for key, value in figures.items():
        log(f"{key}: {value}")
    log(f"wrote {write_json(result_path('bench_teacher_cost', timestamp()), figures)}")


if __name__ == "__main__":
    main()
