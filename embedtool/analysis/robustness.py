"""Re-identification robustness: degraded excerpts of library tracks queried through the real query stage
(``Searcher.query_samples``), top-1 / top-5 per excerpt length x degradation (see ``options.DEGRADATIONS``)."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedtool.analysis.options import EvaluateOptions
from embedtool.errors import InputError
from embedtool.progress import Progress

if TYPE_CHECKING:
    from embedtool.embedding.store import EmbeddingStore
    from embedtool.query.searcher import Searcher
    from embedtool.workspace import Workspace


MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)

# The test's size follows the library: at each length one excerpt per TRACKS_PER_EXCERPT tracks long enough (at
# least MIN_EXCERPTS), never more than ``EvaluateOptions.excerpts``. A library of 2 x excerpts tracks or more is
# not affected; on a dozen tracks every figure rests on a handful of excerpts whatever their number, and the test
# should not outlast the rest of evaluate (12 tracks once took 739 s of a 14 min run).
TRACKS_PER_EXCERPT = 2
MIN_EXCERPTS = 4


def excerpts_per_length(long_enough: int, configured: int) -> int:
    """How many excerpts of one length to draw, without replacement, from ``long_enough`` tracks."""
    return min(configured, long_enough, max(MIN_EXCERPTS, -(-long_enough // TRACKS_PER_EXCERPT)))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def degrade(
    samples: np.ndarray, sample_rate: int, kind: str, rng: np.random.Generator, options: EvaluateOptions
) -> np.ndarray:
    """One degraded copy of a mono float32 excerpt (see ``DEGRADATIONS``)."""
    x = np.asarray(samples, dtype=np.float32)
    if kind == "clean":
        return x
    if kind.startswith("noise"):
        snr_db = float(kind[len("noise") :])
        power = float(np.mean(x.astype(np.float64) ** 2)) or 1e-12
        noise = rng.standard_normal(len(x)) * np.sqrt(power / 10 ** (snr_db / 10))
        return (x + noise).astype(np.float32)
    if kind == "gain":
        return (x * 10 ** (options.gain_db / 20)).astype(np.float32)
    if kind.startswith("speed"):
        from scipy.signal import resample_poly

        # Played back faster by s percent: the same content in 100/(100+s) of the samples (pitch moves too).
        percent = int(kind[len("speed") :])
        return resample_poly(x, 100, 100 + percent).astype(np.float32)
    if kind == "mp3":
        import soundfile as sf
        from scipy.signal import resample_poly

        # MP3 knows a fixed set of rates: encode anything else at 44.1 kHz and resample back afterwards.
        rate = sample_rate if sample_rate in MP3_RATES else 44100
        y = x if rate == sample_rate else resample_poly(x, rate, sample_rate).astype(np.float32)
        buf = io.BytesIO()
        sf.write(
            buf,
            np.clip(y, -1, 1),
            rate,
            format="MP3",
            bitrate_mode="CONSTANT",
            compression_level=options.mp3_compression,
        )
        buf.seek(0)
        y, _ = sf.read(buf, dtype="float32")
        y = y if y.ndim == 1 else y.mean(axis=1)
        return y if rate == sample_rate else resample_poly(y, sample_rate, rate).astype(np.float32)
    raise ValueError(f"unknown degradation {kind!r}")


def _match_track(match: Any) -> str:
    return str(match["track_id"] if isinstance(match, dict) else match.track_id)


def reidentification(
    searcher: Searcher,
    tracks: Sequence[dict[str, Any]],
    options: EvaluateOptions,
    read: Callable[[str, float, float], tuple[np.ndarray, int]],
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Top-1 / top-5 re-identification of degraded excerpts of library tracks, per length x degradation.

    For each excerpt length, ``excerpts_per_length`` tracks at least that long are drawn (seeded: up to
    ``options.excerpts``, fewer on a small library) with a random offset each; the same excerpts go through every
    degradation, so the columns differ only by the degradation. A "no match" answer counts as a miss.
    ``read(path, start_s, seconds)`` returns the excerpt's mono samples and their rate (the file's own:
    degradations such as MP3 re-encoding then happen where a user's would, and the query stage resamples).
    ``progress`` names the number of queries before the first one and their estimated time after it.
    """
    rng = np.random.default_rng(options.seed)
    lengths = sorted(options.excerpt_seconds)
    plan, planned = _plan_excerpts(tracks, lengths, options.excerpts, rng)
    by_id = {t["track_id"]: t for t in tracks}
    results: dict[tuple[float, str], list[tuple[bool, bool, bool, bool]]] = {}
    total = sum(planned.values()) * len(options.degradations)
    stage = (
        f"re-identification: {total} queries ({sum(planned.values())} excerpts over {len(lengths)} length(s) x "
        f"{len(options.degradations)} degradation(s))"
    )
    if progress is not None:
        progress(stage, 0, total)
    done = 0
    started = time.perf_counter()
    for track_id, excerpts in plan.items():
        for length, start in excerpts:
            excerpt, sample_rate = read(by_id[track_id]["path"], start, length)
            for kind in options.degradations:
                noisy = degrade(excerpt, sample_rate, kind, rng, options)
                try:
                    result = searcher.query_samples(noisy, sample_rate, mode="identify", k=5)
                    ranked = [_match_track(m) for m in result.matches]
                    no_match = bool(getattr(result, "no_match", False))
                except InputError:  # e.g. shorter than the query stage accepts: a miss, not a crash
                    ranked, no_match = [], True
                ranked_first = bool(ranked) and ranked[0] == track_id
                results.setdefault((length, kind), []).append(
                    (ranked_first and not no_match, track_id in ranked[:5], no_match, ranked_first)
                )
                done += 1
                if done == 1:  # the first query, timed, tells how long the rest will take
                    first = time.perf_counter() - started
                    stage += f", about {_duration(first * total)} at {first:.2f} s a query"
                if progress is not None:
                    progress(stage, done, total)
    return {
        "lengths": lengths,
        "degradations": list(options.degradations),
        "excerpts_per_length": {str(k): v for k, v in planned.items()},
        "queries": total,
        "gain_db": options.gain_db,
        "mp3": f"constant bit rate, compression level {options.mp3_compression}, at the file's own sample rate",
        "cells": _cells(results, lengths, options.degradations),
    }


def _plan_excerpts(
    tracks: Sequence[dict[str, Any]], lengths: list[float], excerpts: int, rng: np.random.Generator
) -> tuple[dict[str, list[tuple[float, float]]], dict[float, int]]:
    """({track_id: [(length, start_s)]}, {length: excerpts drawn}): for each length, tracks at least that long
    drawn without replacement, each with a random offset."""
    plan: dict[str, list[tuple[float, float]]] = {}
    planned: dict[float, int] = {}
    for length in lengths:
        long_enough = [t for t in tracks if float(t.get("duration_s") or 0) >= length]
        if not long_enough:
            planned[length] = 0
            continue
        picks = rng.choice(len(long_enough), size=excerpts_per_length(len(long_enough), excerpts), replace=False)
        planned[length] = len(picks)
        for p in sorted(picks.tolist()):
            t = long_enough[p]
            start = float(rng.uniform(0, float(t["duration_s"]) - length))
            plan.setdefault(t["track_id"], []).append((length, start))
    return plan, planned


def _cells(
    results: dict[tuple[float, str], list[tuple[bool, bool, bool, bool]]],
    lengths: list[float],
    degradations: Sequence[str],
) -> list[dict[str, Any]]:
    """One table cell per length x degradation: top-1, top-5 and no-match rates of its queries."""
    cells = []
    for length in lengths:
        for kind in degradations:
            rows = results.get((length, kind), [])
            n = len(rows)
            cells.append(
                {
                    "seconds": length,
                    "degradation": kind,
                    "n": n,
                    "top1": float(np.mean([r[0] for r in rows])) if n else None,
                    "top5": float(np.mean([r[1] for r in rows])) if n else None,
                    "no_match": float(np.mean([r[2] for r in rows])) if n else None,
                    # top-1 of the ranking even where the identify threshold said "no match"
                    "top1_ranked": float(np.mean([r[3] for r in rows])) if n else None,
                }
            )
    return cells


def run_robustness(
    workspace: Workspace, store: EmbeddingStore, options: EvaluateOptions, progress: Progress | None
) -> dict[str, Any]:
    from embedtool.query.searcher import Searcher

    searcher = Searcher.open(workspace)
    tracks = [t for t in sorted(store.tracks, key=lambda t: t["row"]) if t.get("path") and Path(t["path"]).exists()]
    if not tracks:
        raise InputError("no library audio file is reachable on disk: re-identification needs the original audio")

    def read(path: str, start_s: float, seconds: float) -> tuple[np.ndarray, int]:
        return read_excerpt(Path(path), start_s, seconds, searcher.settings.sample_rate)

    return reidentification(searcher, tracks, options, read, progress)


def read_excerpt(path: Path, start_s: float, seconds: float, fallback_sr: int = 16000) -> tuple[np.ndarray, int]:
    """Mono float32 samples of ``seconds`` from ``start_s`` at the file's own rate, reading only that part
    (soundfile seeks); formats soundfile cannot read are decoded whole with the project's decoder."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        x, sr = sf.read(
            str(path),
            start=int(start_s * info.samplerate),
            frames=int(round(seconds * info.samplerate)),
            dtype="float32",
            always_2d=True,
        )
        return x.mean(axis=1), int(sr)
    except (sf.LibsndfileError, RuntimeError):
        from embedtool.audio.decode import decode_file

        audio = decode_file(path, fallback_sr)
        a = int(round(start_s * fallback_sr))
        return audio.samples[a : a + int(round(seconds * fallback_sr))], fallback_sr
