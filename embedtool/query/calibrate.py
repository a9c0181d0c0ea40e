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

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedtool.progress import Progress
from embedtool.query.decision import STATISTIC, match_confidence
from embedtool.threads import single_threaded
from embedtool.training.augment import mix_linear_mel

if TYPE_CHECKING:
    from embedtool.features.store import FeatureStore
    from embedtool.query.searcher import Searcher

CALIBRATION_SAMPLES = "identify-samples.npz"  # the calibration queries' statistics, in the index folder
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
    samples_file: Path | None = None,
) -> dict[str, Any]:
    """One threshold per excerpt length (``calibrate_threshold`` at each), since how far apart true and false
    matches lie depends on how much of a recording the query holds; queries in between interpolate
    (``threshold_for``). The meta-ready dict carries the middle length's calibration at its top level. With
    ``samples_file``, every query's statistics are saved there, so that an index update can re-calibrate by
    querying its new tracks only (:func:`update_calibration`)."""
    lengths = sorted(set(float(x) for x in lengths_s))
    results = [
        calibrate_threshold(
            searcher, features, n_tracks, length, snr_db, seed, progress, background=background, keep_samples=True
        )
        for length in lengths
    ]
    samples = [r.pop("samples", None) for r in results]
    if samples_file is not None and all(samples):
        CalibrationSamples.save_all(samples_file, samples)
    return _by_length(results)


def _by_length(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-length calibrations as one meta-ready dict (the middle length's at its top level)."""
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
    keep_samples: bool = False,
) -> dict[str, Any]:
    """Calibrate the identify threshold from library excerpts (see the module docstring); a meta-ready dict.
    ``statistic="best_score"`` calibrates the rule of earlier versions instead (kept for comparisons).
    ``keep_samples``: the queries' statistics come with it (``samples``: :class:`CalibrationSamples`)."""
    if statistic not in (STATISTIC, "best_score"):
        raise ValueError(f"unknown identify statistic {statistic!r}")
    rng = np.random.default_rng(seed)
    excerpt_frames = max(1, searcher.settings.seconds_to_frames(excerpt_s))
    ids = _eligible(searcher, features, excerpt_frames)
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
    repeats = max(1, -(-MIN_QUERIES // len(chosen)))
    with single_threaded():
        samples = _query(searcher, features, chosen * repeats, excerpt_frames, snr_db, rng, info, progress, ids)
    samples.excerpt_s, samples.eligible, samples.repeats = excerpt_s, len(ids), repeats
    result = {**info, **samples.summary()}
    return {**result, "samples": samples} if keep_samples else result


def _eligible(searcher: Searcher, features: FeatureStore, excerpt_frames: int) -> list[str]:
    """The indexed tracks a calibration draws its excerpts from: identification is about excerpts of longer
    recordings, so tracks at least one excerpt long (one-shots queried whole would set the bar by how alike short
    samples are), unless fewer than two are."""
    frames = {r["track_id"]: int(r["frames"]) for r in features.tracks}
    ids = [t["track_id"] for t in searcher.tables.tracks if t["track_id"] in frames]
    long_enough = [tid for tid in ids if frames[tid] >= excerpt_frames]
    return long_enough if len(long_enough) >= 2 else ids


@dataclass
class CalibrationSamples:
    """The statistics of one excerpt length's calibration queries, one row a query: the queried track, its
    matching and non-matching confidence, whether its track came first; and how they were drawn (``eligible``
    tracks to draw from, each drawn track queried ``repeats`` times)."""

    track_ids: list[str]
    matching: np.ndarray
    non_matching: np.ndarray
    correct: np.ndarray
    excerpt_s: float = 0.0
    eligible: int = 0
    repeats: int = 1

    def summary(self) -> dict[str, Any]:
        """The threshold with the largest Youden's J between the two distributions, and their figures."""
        m, n = self.matching, self.non_matching
        threshold, tar, far = youden_threshold(m, n)
        return {
            "threshold": round(threshold, 6),
            "calibrated": True,
            "queries": len(m),
            "true_accept_rate": round(tar, 4),
            "false_accept_rate": round(far, 4),
            "top1_accuracy": round(float(np.mean(self.correct)), 4),
            "matching": {"mean": round(float(m.mean()), 4), "p05": round(float(np.quantile(m, 0.05)), 4)},
            "non_matching": {"mean": round(float(n.mean()), 4), "p95": round(float(np.quantile(n, 0.95)), 4)},
        }

    def subset(self, keep: np.ndarray) -> CalibrationSamples:
        ids = [t for t, k in zip(self.track_ids, keep, strict=True) if k]
        return replace(
            self, track_ids=ids, matching=self.matching[keep], non_matching=self.non_matching[keep],
            correct=self.correct[keep],
        )  # fmt: skip

    def joined(self, other: CalibrationSamples) -> CalibrationSamples:
        return replace(
            self,
            track_ids=[*self.track_ids, *other.track_ids],
            matching=np.concatenate([self.matching, other.matching]),
            non_matching=np.concatenate([self.non_matching, other.non_matching]),
            correct=np.concatenate([self.correct, other.correct]),
        )

    @staticmethod
    def save_all(path: Path, per_length: list[CalibrationSamples]) -> None:
        """Every length's samples into one ``.npz`` (a column per field, plus the query's excerpt length)."""
        np.savez(
            path,
            excerpt_s=np.concatenate([np.full(len(s.matching), s.excerpt_s) for s in per_length]),
            track_ids=np.array([t for s in per_length for t in s.track_ids], dtype=str),
            matching=np.concatenate([s.matching for s in per_length]),
            non_matching=np.concatenate([s.non_matching for s in per_length]),
            correct=np.concatenate([s.correct for s in per_length]),
            lengths=np.array([s.excerpt_s for s in per_length]),
            eligible=np.array([s.eligible for s in per_length]),
            repeats=np.array([s.repeats for s in per_length]),
        )

    @staticmethod
    def load_all(path: Path) -> list[CalibrationSamples]:
        with np.load(path) as saved:
            columns = {k: saved[k] for k in saved.files}
        out = []
        for length, eligible, repeats in zip(columns["lengths"], columns["eligible"], columns["repeats"], strict=True):
            at = columns["excerpt_s"] == length
            out.append(
                CalibrationSamples(
                    [str(t) for t in columns["track_ids"][at]],
                    columns["matching"][at],
                    columns["non_matching"][at],
                    columns["correct"][at],
                    float(length),
                    int(eligible),
                    int(repeats),
                )  # fmt: skip
            )
        return out


def _query(
    searcher: Searcher,
    features: FeatureStore,
    chosen: list[str],
    excerpt_frames: int,
    snr_db: float,
    rng: np.random.Generator,
    info: dict[str, Any],
    progress: Progress | None,
    pool: list[str],
) -> CalibrationSamples:
    """One noisy excerpt of each track of ``chosen`` queried with its track in the index and left out; the
    background of each is another track of ``pool``."""
    settings = searcher.settings
    matching, non_matching, correct = [], [], []
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
        correct.append(bool(found.matches) and found.matches[0].track_id == tid)
        held_out = searcher.search_vectors(vectors, starts_s, duration, "identify", k=2, exclude_track=tid)
        if info["statistic"] == "best_score":
            matching.append(true_score)
            non_matching.append(held_out.matches[0].score if held_out.matches else 0.0)
        else:
            matching.append(match_confidence(true_score, other_scores[0] if other_scores else None))
            non_matching.append(held_out.confidence if held_out.confidence is not None else 0.0)
        if progress:
            progress("calibrating identify threshold", i + 1, len(chosen))
    return CalibrationSamples(
        list(chosen), np.array(matching, np.float64), np.array(non_matching, np.float64), np.array(correct, bool)
    )


def update_calibration(
    searcher: Searcher,
    features: FeatureStore,
    previous: dict[str, Any],
    samples_file: Path,
    added: set[str],
    seed: int = 0,
    progress: Progress | None = None,
    save_to: Path | None = None,
) -> dict[str, Any] | None:
    """The calibration ``previous`` (with its queries' statistics in ``samples_file``) brought up to the library
    ``searcher`` holds now, querying its ``added`` tracks only: the queries of tracks no longer in the library
    are dropped, and the added tracks that could be drawn are drawn at the rate the calibration drew (all of them
    while the library holds no more than ``calibration_tracks``), each queried as the others were, against
    today's index. The kept queries' statistics were measured against the index before the change; the
    thresholds are made again from old and new together. None when the samples cannot be read."""
    try:
        per_length = CalibrationSamples.load_all(samples_file)
    except (OSError, ValueError, KeyError):
        return None
    info = {k: previous[k] for k in ("statistic", "snr_db", "seed", "background") if k in previous}
    if info.get("statistic") != STATISTIC or not per_length:
        return None
    present = set(searcher.tables.tracks.ids())
    rng = np.random.default_rng([seed, len(present)])
    results, updated = [], []
    change = {"kept_queries": 0, "new_queries": 0, "dropped_queries": 0}
    for old in per_length:
        excerpt_frames = max(1, searcher.settings.seconds_to_frames(old.excerpt_s))
        pool = _eligible(searcher, features, excerpt_frames)
        kept = old.subset(np.array([t in present for t in old.track_ids], dtype=bool))
        fresh = [t for t in pool if t in added]
        rate = min(1.0, len(set(old.track_ids)) / max(1, old.eligible))
        take = min(len(fresh), int(rate * len(fresh) + rng.random()))  # in expectation: the rate
        chosen = [fresh[i] for i in sorted(rng.choice(len(fresh), take, replace=False))] if take else []
        if len(pool) < 2 or (not kept.track_ids and not chosen):
            return None
        with single_threaded():
            new = _query(searcher, features, chosen * old.repeats, excerpt_frames, info.get("snr_db", 15.0), rng,
                         {**info, "background": info.get("background", "library")}, progress, pool)  # fmt: skip
        samples = replace(kept.joined(new), eligible=len(pool))
        change["kept_queries"] += len(kept.matching)
        change["new_queries"] += len(new.matching)
        change["dropped_queries"] += len(old.matching) - len(kept.matching)
        updated.append(samples)
        results.append({**info, "excerpt_s": old.excerpt_s, **samples.summary()})
    if save_to is not None:
        CalibrationSamples.save_all(save_to, updated)
    return {**_by_length(results), "updated": change}


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
