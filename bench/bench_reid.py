"""Re-identification benchmark: which track is a short, noisy, re-encoded excerpt from?

On music-dev (``~/.cache/embedtool-corpora/music-dev``, fetched by ../shared/corpora/fetch): for every track,
``--excerpts`` excerpts of ``--seconds`` at random offsets, white noise at ``--snr`` dB SNR, re-encoded to mp3
(libsndfile's LAME, at the file's own sample rate), queried with ``Searcher.query_file(mode="identify")``.
Reports top-1 / top-5 track accuracy, how often the matched reference range is where the excerpt was cut
(±1 s), the no-match rate, and the query latency. Target: top-1 >= 95 % with the default preset.

    .venv/bin/python bench/bench_reid.py --prepare --epochs 6    # extract + train (default preset) + index
    .venv/bin/python bench/bench_reid.py                         # the measurement

``--prepare`` works in ``--workspace`` (default bench/results/ws-music) and skips stages already done.
Writes bench/results/bench_reid.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from _common import MUSIC_DEV, WS_MUSIC, result_path, write_json


def prepare(ws_root: Path, corpus: Path, epochs: int | None, steps: int | None) -> None:
    import torch

    from embedtool import pipeline
    from embedtool.audio.settings import FeatureSettings
    from embedtool.features.extract import run_extract
    from embedtool.features.options import ExtractOptions
    from embedtool.indexing.options import IndexOptions
    from embedtool.model.settings import TrainSettings
    from embedtool.training.trainer import train
    from embedtool.workspace import Workspace

    ws = Workspace(ws_root.resolve())
    if not (ws.features / "meta.json").is_file():
        t0 = time.perf_counter()
        run_extract([corpus], ws.features, FeatureSettings(), ExtractOptions())
        print(f"extract: {time.perf_counter() - t0:.0f} s")
    if not (ws.model / "meta.json").is_file():
        settings = TrainSettings.from_preset("default")
        changes = {k: v for k, v in {"epochs": epochs, "steps_per_epoch": steps}.items() if v}
        settings = settings.replace(**changes)
        print(f"training (default preset{', ' + str(changes) if changes else ''}), {torch.get_num_threads()} threads")
        t0 = time.perf_counter()
        train(ws.features, ws.split, ws.model, settings)
        print(f"train: {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    report = pipeline.index(ws, IndexOptions())
    print(f"index: {time.perf_counter() - t0:.1f} s; identify calibration: {report.identify}")


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    power = float(np.mean(x**2)) or 1e-12
    return (x + rng.standard_normal(len(x)).astype(np.float32) * np.sqrt(power / 10 ** (snr_db / 10))).astype(
        np.float32
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=WS_MUSIC)
    parser.add_argument("--corpus", type=Path, default=MUSIC_DEV)
    parser.add_argument("--prepare", action="store_true", help="extract, train and index first where missing")
    parser.add_argument("--epochs", type=int, help="--prepare: time-box training to this many epochs")
    parser.add_argument("--steps-per-epoch", type=int)
    parser.add_argument("--excerpts", type=int, default=3, help="excerpts per track")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--snr", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    if args.prepare:
        prepare(args.workspace, args.corpus, args.epochs, args.steps_per_epoch)
    torch.set_num_threads(1)  # queries are measured as a single-threaded CLI would run them

    from embedtool.query.searcher import Searcher
    from embedtool.workspace import Workspace

    searcher = Searcher.open(Workspace(args.workspace.resolve()))
    rng = np.random.default_rng(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for t in searcher.tables.tracks:
            info = sf.info(t["path"])
            span = info.duration - args.seconds
            for _ in range(args.excerpts if span > 0 else 0):
                start = float(rng.uniform(0, span))
                # Read only the excerpt (seeking), downmix, add noise, write mp3 at the file's own rate.
                x, sr = sf.read(
                    t["path"], start=int(start * info.samplerate), frames=int(args.seconds * info.samplerate),
                    dtype="float32", always_2d=True,
                )  # fmt: skip
                path = Path(tmp) / "excerpt.mp3"
                sf.write(path, add_noise(x.mean(axis=1), args.snr, rng), sr, format="MP3")
                t0 = time.perf_counter()
                result = searcher.query_file(path, mode="identify", k=5)
                latency = time.perf_counter() - t0
                ranked = [m.track_id for m in result.matches]
                best = result.best
                rows.append(
                    {
                        "track_id": t["track_id"],
                        "label": t.get("label"),
                        "start_s": start,
                        "top1": bool(ranked and ranked[0] == t["track_id"]),
                        "top5": t["track_id"] in ranked,
                        "time_ok": bool(ranked and ranked[0] == t["track_id"] and abs(best.ref_start_s - start) <= 1.0),
                        "no_match": result.no_match,
                        "score": best.score if best else None,
                        "latency_s": latency,
                    }
                )
    n = len(rows)
    summary = {
        "queries": n,
        "tracks": len(searcher.tables.tracks),
        "top1": sum(r["top1"] for r in rows) / n,
        "top5": sum(r["top5"] for r in rows) / n,
        "time_range_ok": sum(r["time_ok"] for r in rows) / n,
        "no_match_rate": sum(r["no_match"] for r in rows) / n,
        "accepted_and_correct": sum(r["top1"] and not r["no_match"] for r in rows) / n,
        "median_latency_s": float(np.median([r["latency_s"] for r in rows])),
        "threshold": searcher.threshold,
        "seconds": args.seconds,
        "snr_db": args.snr,
        "segment_index": searcher.segment_index.kind,
        "model": searcher.encoder.fingerprint,
    }
    print(f"{'queries':>8s} {'top-1':>7s} {'top-5':>7s} {'time ok':>8s} {'no-match':>9s} {'latency':>9s}")
    print(
        f"{n:8d} {summary['top1']:7.1%} {summary['top5']:7.1%} {summary['time_range_ok']:8.1%} "
        f"{summary['no_match_rate']:9.1%} {summary['median_latency_s'] * 1000:7.0f}ms"
    )
    out = write_json(result_path("bench_reid"), {"argv": sys.argv, "summary": summary, "queries": rows})
    print(f"written {out}")


if __name__ == "__main__":
    main()
