"""Combining per-window segment hits into a ranked track list by time-consistent voting.

Each query window (starting at ``q`` seconds) is searched in the segment index; every hit is a reference
segment (track ``t``, starting at ``r`` seconds) with a cosine score. If the query is an excerpt of ``t``
starting at ``δ``, its windows' best hits satisfy ``r - q ≈ δ`` — all windows agree on one offset, give or
take the reference hop. Like an audio fingerprinter, we histogram the offsets of each track's hits in bins one
reference hop wide and keep the best bin ± ``tolerance`` bins; each query window counts once (its best hit
there).

Scores, both in [0, 1] for unit vectors with non-negative similarity:

- ``identify``: the sum of the supporting windows' best scores, divided by the number of query windows — high
  only when most windows agree on one offset in one track with high similarity;
- ``similar``: every window's best score for the track, wherever in the track it lies, summed and divided by
  the number of windows — similar material need not line up in time. The time ranges reported are still those
  of the best offset bin.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Mode = Literal["identify", "similar"]


@dataclass
class TrackVote:
    """One ranked track: ``track`` indexes the caller's track table."""

    track: int
    score: float
    windows: int  # query windows supporting the best offset
    query_start_s: float
    query_end_s: float
    ref_start_s: float
    ref_end_s: float
    offset_s: float  # reference time minus query time of the supporting hits (median)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def vote(
    scores: np.ndarray,
    rows: np.ndarray,
    query_starts: np.ndarray,
    segment_seconds: float,
    query_duration_s: float,
    row_track: np.ndarray,
    row_start: np.ndarray,
    row_end: np.ndarray,
    bin_seconds: float,
    mode: Mode = "identify",
    tolerance_bins: int = 1,
    top: int | None = None,
) -> list[TrackVote]:
    """Rank tracks from segment hits.

    ``scores``/``rows``: (n_windows, K) search results (row -1 = no hit); ``query_starts``: (n_windows,) start
    of each query window in seconds; ``row_track``/``row_start``/``row_end``: per segment row, its track's
    index and time range. Returns tracks best first (at most ``top``).
    """
    n_windows = len(query_starts)
    if n_windows == 0 or rows.size == 0:
        return []
    if bin_seconds <= 0:
        raise ValueError("bin_seconds must be positive")
    valid = rows >= 0
    qi = np.broadcast_to(np.arange(n_windows)[:, None], rows.shape)[valid]
    hit_rows = rows[valid]
    sims = np.maximum(scores[valid].astype(np.float64), 0.0)
    tracks = row_track[hit_rows]
    ref_starts = row_start[hit_rows]
    offsets = ref_starts - query_starts[qi]
    bins = np.round(offsets / bin_seconds).astype(np.int64)

    order = np.argsort(tracks, kind="stable")
    bounds = np.flatnonzero(np.diff(tracks[order])) + 1
    votes: list[TrackVote] = []
    for group in np.split(order, bounds):
        votes.append(
            _vote_track(
                group, tracks, qi, sims, bins, offsets, ref_starts, row_end[hit_rows], query_starts,
                segment_seconds, query_duration_s, n_windows, mode, tolerance_bins,
            )
        )  # fmt: skip
    votes.sort(key=lambda v: (-v.score, -v.windows, v.track))
    return votes[:top] if top else votes


def _vote_track(
    idx: np.ndarray,
    tracks: np.ndarray,
    qi: np.ndarray,
    sims: np.ndarray,
    bins: np.ndarray,
    offsets: np.ndarray,
    ref_starts: np.ndarray,
    ref_ends: np.ndarray,
    query_starts: np.ndarray,
    segment_seconds: float,
    query_duration_s: float,
    n_windows: int,
    mode: Mode,
    tolerance: int,
) -> TrackVote:
    # Per (window, bin) only the best hit counts, so a window cannot vote twice for one offset.
    b = bins[idx]
    lo = b.min()
    width = int(b.max() - lo) + 1
    best = np.zeros((n_windows, width), dtype=np.float64)
    np.maximum.at(best, (qi[idx], b - lo), sims[idx])
    # Sum each window's best score within ± tolerance bins of every candidate centre bin.
    padded = np.pad(best, ((0, 0), (tolerance, tolerance)))
    windowed = np.max(
        np.stack([padded[:, i : i + width] for i in range(2 * tolerance + 1)]), axis=0
    )  # (n_windows, width): the window's best hit within the tolerance of each centre
    totals = windowed.sum(axis=0)
    centre = int(np.argmax(totals)) + lo
    # Each supporting window's best hit within the tolerance of the best offset gives the time ranges.
    near = idx[np.abs(b - centre) <= tolerance]
    near = near[np.lexsort((-sims[near], qi[near]))]  # by window, best hit first
    support = near[np.concatenate([[True], qi[near][1:] != qi[near][:-1]])]
    supporting_windows = qi[support]
    q_first = float(query_starts[supporting_windows].min())
    q_last = float(query_starts[supporting_windows].max())
    if mode == "identify":
        score = float(totals.max()) / n_windows
    else:
        per_window = np.zeros(n_windows, dtype=np.float64)
        np.maximum.at(per_window, qi[idx], sims[idx])
        score = float(per_window.sum()) / n_windows
    return TrackVote(
        track=int(tracks[idx[0]]),
        score=score,
        windows=int(len(supporting_windows)),
        query_start_s=q_first,
        query_end_s=min(q_last + segment_seconds, query_duration_s),
        ref_start_s=float(ref_starts[support].min()),
        ref_end_s=float(ref_ends[support].max()),
        offset_s=float(np.median(offsets[support])),
    )
