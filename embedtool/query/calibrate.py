"""Calibrating the identify-mode "no match" decision at index time.

The decision reads a query's **confidence**: how much nearer the best track is than the runner-up,
``(1 - runner-up score) / (1 - best score)`` — the ratio test of feature matching (Lowe) on cosine distances. A
query from a library track sits far nearer its own track than any other; a query from elsewhere sits about as
near its two closest tracks, however high both scores are (soundtracks reuse their themes, a genre shares its
sound). Unlike the best score, this ratio does not sink when noise or a level change pulls every score down,
nor rise for a short query whose few windows all score high. Measured against the best score, and its price:
docs/decisions/0005-identify-confidence-rule.md (``bench/bench_identify.py``).

Each of the excerpt lengths ``calibration_lengths_s`` (1, 3 and 10 s) gets its own threshold, and a query's
threshold is interpolated by its duration: a 1 s query sets its true track less far apart than a 10 s one, and
one bar for all lengths is too strict for one and too lax for the other (``bench/bench_identify.py``). For a
length, for up to ``calibration_tracks`` library tracks at least one excerpt long (seeded choice) we cut an excerpt
of that length at a random offset that is *not* on the segment grid, mix in background ``calibration_snr_db`` below
it, and query it twice through the real query path. The background (``calibration_background``) is by default an
excerpt of another library track: what queries meet is other sound with structure (music, voices, a room), not
white noise. It is mixed in the Mel domain (magnitudes of incoherent sources add in power); ``noise`` mixes
Mel-domain noise instead, as indexes made before did. Each excerpt is queried:

- with its track in the index: the true track's score against the best other track's is a *matching*
  confidence (below 1 when another track ranks first);
- with its track left out (as if it were a held-out track the library does not hold): the best two tracks'
  confidence is a *non-matching* one.

The threshold is the cut between the two distributions with the largest Youden's J (true-accept rate minus
false-accept rate), placed midway between neighbouring values. With fewer than two tracks there are no
non-matching queries and a fixed fallback threshold is used (recorded as uncalibrated). A library of fewer than
``MIN_QUERIES`` tracks gets several excerpts (at different offsets) per track.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from embedtool.progress import Progress
from embedtool.query.decision import STATISTIC, match_confidence
from embedtool.threads import single_threaded
from embedtool.training.augment import mix_linear_mel

if TYPE_CHECKING:
    from embedtool.features.store import FeatureStore
    from embedtool.query.searcher import Searcher

FALLBACK_THRESHOLD = 2.0  # the best track twice as near as the runner-up
MIN_QUERIES = 60  # excerpts drawn at least (several per track when the library is small)


def add_mel_noise(
    mel: np.ndarray, snr_db: float, rng: np.random.Generator, log_offset: float, power: float = 1.0
) -> np.ndarray:
    """A log-Mel matrix with white-ish noise at ``snr_db`` below the excerpt's mean Mel power."""
    lin = np.maximum(np.exp(mel.astype(np.float64)) - log_offset, 0.0)
    signal_power = lin**2 if power == 1.0 else lin
    noise_power = signal_power.mean() / (10 ** (snr_db / 10))
    # Per-bin noise power fluctuates like a chi-square with 2 degrees of freedom (an exponential).
    noise = rng.exponential(noise_power, size=mel.shape)
    noisy_power = signal_power + noise
    noisy = np.sqrt(noisy_power) if power == 1.0 else noisy_power
    return np.log(noisy + log_offset).astype(np.float32)


def add_mel_background(
    mel: np.ndarray, background: np.ndarray, snr_db: float, log_offset: float, power: float = 1.0
) -> np.ndarray:
    """A log-Mel matrix with another recording's log-Mel ``background`` (same shape) mixed in ``snr_db`` below the
    excerpt's mean Mel power (as training mixes other tracks' sound in: ``mix_linear_mel``)."""

    def linear(x: np.ndarray) -> np.ndarray:
        return np.maximum(np.exp(x.astype(np.float64)) - log_offset, 0.0)

    mixed = mix_linear_mel(linear(mel), linear(background), snr_db, power)
    return np.log(mixed + log_offset).astype(np.float32)


def calibrate_identify(
    searcher: Searcher,
    features: FeatureStore,
    n_tracks: int = 200,
    lengths_s: tuple[float, ...] = (1.0, 3.0, 10.0),
    snr_db: float = 15.0,
    seed: int = 0,
    progress: Progress | None = None,
    background: str = "library",
) -> dict[str, Any]:
    """One threshold per excerpt length (``calibrate_threshold`` at each), since how far apart true and false
    matches lie depends on how much of a recording the query holds; queries in between interpolate
    (``threshold_for``). The meta-ready dict carries the middle length's calibration at its top level."""
    lengths = sorted(set(float(x) for x in lengths_s))
    results = [
        calibrate_threshold(searcher, features, n_tracks, length, snr_db, seed, progress, background=background)
        for length in lengths
    ]
    main = results[len(results) // 2]
    by_length = [
        {k: r[k] for k in ("excerpt_s", "threshold", "true_accept_rate", "false_accept_rate") if k in r}
        for r in results
    ]
    return {**main, "by_length": by_length}


def youden_threshold(matching: np.ndarray, non_matching: np.ndarray) -> tuple[float, float, float]:
    """(threshold, true-accept rate, false-accept rate) maximising TAR - FAR, midway between scores."""
    matching = np.asarray(matching, dtype=np.float64)
    non_matching = np.asarray(non_matching, dtype=np.float64)
    values = np.unique(np.concatenate([matching, non_matching]))
    candidates = np.concatenate([[values[0] - 1e-6], (values[:-1] + values[1:]) / 2, [values[-1] + 1e-6]])
    best = (-2.0, 0.0, 0.0, 0.0)
    for t in candidates:
        tar = float(np.mean(matching >= t))
        far = float(np.mean(non_matching >= t))
        if tar - far > best[0] + 1e-12:
            best = (tar - far, float(t), tar, far)
    return best[1], best[2], best[3]


def calibrate_threshold(
    searcher: Searcher,
    features: FeatureStore,
    n_tracks: int = 200,
    excerpt_s: float = 3.0,
    snr_db: float = 15.0,
    seed: int = 0,
    progress: Progress | None = None,
    statistic: str = STATISTIC,
    background: str = "library",
) -> dict[str, Any]:
    """Calibrate the identify threshold from library excerpts (see the module docstring); a meta-ready dict.
    ``statistic="best_score"`` calibrates the rule of earlier versions instead (kept for comparisons)."""
    if statistic not in (STATISTIC, "best_score"):
        raise ValueError(f"unknown identify statistic {statistic!r}")
    rng = np.random.default_rng(seed)
    tables = searcher.tables
    settings = searcher.settings
    excerpt_frames = max(1, settings.seconds_to_frames(excerpt_s))
    frames = {r["track_id"]: int(r["frames"]) for r in features.tracks}
    ids = [t["track_id"] for t in tables.tracks if t["track_id"] in frames]
    # Identification is about excerpts of longer recordings: calibrate on tracks at least one excerpt long
    # (one-shots queried whole would set the bar by how alike short samples are), unless too few exist.
    long_enough = [tid for tid in ids if frames[tid] >= excerpt_frames]
    ids = long_enough if len(long_enough) >= 2 else ids
    info: dict[str, Any] = {
        "statistic": statistic, "excerpt_s": excerpt_s, "snr_db": snr_db, "seed": seed, "background": background
    }  # fmt: skip
    if len(ids) < 2:
        return {
            **info,
            "threshold": FALLBACK_THRESHOLD if statistic == STATISTIC else 0.5,
            "calibrated": False,
            "reason": "fewer than 2 tracks",
        }
    chosen = [ids[i] for i in sorted(rng.choice(len(ids), min(n_tracks, len(ids)), replace=False))]
    # A small library still gets enough queries for stable score distributions: several excerpts a track.
    chosen = chosen * max(1, -(-MIN_QUERIES // len(chosen)))
    with single_threaded():
        return _calibrate(searcher, features, chosen, excerpt_frames, snr_db, rng, info, progress, ids)


def _calibrate(
    searcher: Searcher,
    features: FeatureStore,
    chosen: list[str],
    excerpt_frames: int,
    snr_db: float,
    rng: np.random.Generator,
    info: dict[str, Any],
    progress: Progress | None,
    pool: list[str],
) -> dict[str, Any]:
    settings = searcher.settings
    matching, non_matching, correct = [], [], 0
    for i, tid in enumerate(chosen):
        mel = np.asarray(features.mel(tid), dtype=np.float32)
        if mel.shape[0] > excerpt_frames:
            start = int(rng.integers(0, mel.shape[0] - excerpt_frames + 1))
            mel = mel[start : start + excerpt_frames]
        if info["background"] == "library":
            other = _background_excerpt(features, pool, tid, mel.shape[0], rng)
            mel = add_mel_background(mel, other, snr_db, settings.log_offset, settings.power)
        else:
            mel = add_mel_noise(mel, snr_db, rng, settings.log_offset, settings.power)
        mel = mel.astype(np.float16).astype(np.float32)
        duration = settings.frames_to_seconds(mel.shape[0])
        starts = searcher.window_starts(mel.shape[0])
        vectors = searcher.embed(mel, starts)
        starts_s = starts / settings.frames_per_second
        found = searcher.search_vectors(vectors, starts_s, duration, "identify", k=10)
        true_scores = [m.score for m in found.matches if m.track_id == tid]
        other_scores = [m.score for m in found.matches if m.track_id != tid]
        true_score = true_scores[0] if true_scores else 0.0
        correct += bool(found.matches) and found.matches[0].track_id == tid
        held_out = searcher.search_vectors(vectors, starts_s, duration, "identify", k=2, exclude_track=tid)
        if info["statistic"] == "best_score":
            matching.append(true_score)
            non_matching.append(held_out.matches[0].score if held_out.matches else 0.0)
        else:
            matching.append(match_confidence(true_score, other_scores[0] if other_scores else None))
            non_matching.append(held_out.confidence if held_out.confidence is not None else 0.0)
        if progress:
            progress("calibrating identify threshold", i + 1, len(chosen))
    threshold, tar, far = youden_threshold(np.array(matching), np.array(non_matching))
    m, n = np.array(matching), np.array(non_matching)
    return {
        **info,
        "threshold": round(threshold, 6),
        "calibrated": True,
        "queries": len(chosen),
        "true_accept_rate": round(tar, 4),
        "false_accept_rate": round(far, 4),
        "top1_accuracy": round(correct / len(chosen), 4),
        "matching": {"mean": round(float(m.mean()), 4), "p05": round(float(np.quantile(m, 0.05)), 4)},
        "non_matching": {"mean": round(float(n.mean()), 4), "p95": round(float(np.quantile(n, 0.95)), 4)},
    }


def _background_excerpt(
    features: FeatureStore, pool: list[str], track_id: str, frames: int, rng: np.random.Generator
) -> np.ndarray:
    """``frames`` frames of another track of ``pool`` than ``track_id``, from a random offset (looped if shorter)."""
    others = [t for t in pool if t != track_id]
    mel = np.asarray(features.mel(others[int(rng.integers(len(others)))]), dtype=np.float32)
    if mel.shape[0] < frames:
        mel = np.concatenate([mel] * (frames // max(1, mel.shape[0]) + 1))
    start = int(rng.integers(0, mel.shape[0] - frames + 1))
    return mel[start : start + frames]
