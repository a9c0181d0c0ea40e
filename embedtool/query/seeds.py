"""Several seeds, one answer: "more like these" (``embedtool neighbours A B C --combine``).

Two ways to combine the seeds (``combine=``):

- ``mean`` (the default, measured: docs/benchmarks.md "Several seeds"): each seed's windows are pooled into one
  vector (the library's rule for track vectors, mean then L2-normalised), the seeds' vectors averaged and
  re-normalised, and that one vector is searched as a query window: a track's score is its best segment's cosine
  with the centroid. Of 3 seeds of one label, more of the 10 answers share it than by ``rrf`` (music-dev 86% vs
  84%, drums 62% vs 56%), in a third of the time (one search instead of one per seed).
- ``rrf``: each seed is asked its own ``similar`` question, ``depth`` tracks deep, and the lists are fused by
  reciprocal rank: a track scores ``sum over seeds of 1 / (RRF_K + rank)``. A track near any one seed can come
  up; one near every seed comes first.

A seed is what a single query may be: an audio file, or a library track (id, id prefix or path). With
``exclude_seeds`` (the default, as a single query leaves out its own track) no seed's own track is in the answer.
The answer holds ``k`` distinct tracks whenever the library has that many besides the seeds left out.

The answer is a :class:`~embedtool.query.searcher.QueryResult` in ``similar`` mode whose ``query`` lists the seeds;
each match's query range is where in its best-supporting seed it matched (for ``mean``, the centroid is no audio:
0-0). :func:`m3u` writes answers as an M3U8 playlist.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedtool.embedding.pooling import l2_normalise, pool_track
from embedtool.errors import ConfigError, InputError
from embedtool.features.frontend import featurise_query
from embedtool.query.searcher import Match, QueryInfo, QueryResult

if TYPE_CHECKING:
    from embedtool.query.searcher import Searcher

COMBINE_METHODS = ("mean", "rrf")
DEFAULT_COMBINE = "mean"
RRF_K = 60  # the usual constant of reciprocal-rank fusion (Cormack et al. 2009): flattens the head of each list
MIN_DEPTH = 50  # RRF: tracks asked of each seed, at least (a track far down one seed's list still counts)


@dataclass
class Seed:
    """One seed as given, resolved: a library track or an audio file."""

    given: str
    source: str | None
    library_track: str | None
    duration_s: float = 0.0
    windows: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"given": self.given, "source": self.source, "library_track": self.library_track,
                "duration_s": round(self.duration_s, 3), "windows": self.windows}  # fmt: skip


def check_combine(method: str) -> str:
    if method not in COMBINE_METHODS:
        raise ConfigError(f"combine must be one of {', '.join(COMBINE_METHODS)}, not {method!r}")
    return method


def more_like_these(
    searcher: Searcher,
    seeds: Sequence[str | Path],
    k: int | None = None,
    combine: str = DEFAULT_COMBINE,
    exclude_seeds: bool = True,
    depth: int | None = None,
) -> QueryResult:
    """One ``similar`` answer for all ``seeds`` together (audio files or library tracks), combined by ``combine``
    (``mean`` or ``rrf``); with ``exclude_seeds`` no seed's own track is in it. ``depth``: RRF's list per seed
    (default ``max(2k, MIN_DEPTH)``)."""
    check_combine(combine)
    if not seeds:
        raise InputError("No seed given: name audio files or library tracks.")
    k = int(k or searcher.options.k)
    if k < 1:
        raise ConfigError("k must be at least 1")
    resolved = [_resolve(searcher, str(s)) for s in seeds]
    own = {s.library_track for s in resolved if s.library_track is not None}
    leave_out = own if exclude_seeds else set()
    t0 = time.perf_counter()
    if combine == "rrf":
        matches = _rrf(searcher, resolved, k, leave_out, depth or max(2 * k, MIN_DEPTH))
    else:
        matches = _mean(searcher, resolved, k, leave_out)
    return QueryResult(
        mode="similar",
        matches=matches,
        no_match=False,
        threshold=searcher.threshold,
        query=QueryInfo(
            duration_s=round(sum(s.duration_s for s in resolved), 3),
            windows=sum(s.windows for s in resolved),
            combine=combine,
            seeds=[s.to_dict() for s in resolved],
            excluded_tracks=sorted(leave_out),
        ),
        timings={"combined": time.perf_counter() - t0},
    )


def seed_tracks(searcher: Searcher, seeds: Iterable[str | Path]) -> set[str]:
    """The library tracks the seeds are (a file by its content or path; a track by id, id prefix or path); a seed
    that is neither a file nor a library track is an :class:`InputError`."""
    return {t for s in seeds if (t := _resolve(searcher, str(s)).library_track) is not None}


def leave_out(result: QueryResult, track_ids: set[str], k: int) -> QueryResult:
    """``result`` without the tracks ``track_ids``, its first ``k`` matches ranked again from 1 (ask for ``k`` plus
    as many as may be left out)."""
    kept = [m for m in result.matches if m.track_id not in track_ids][:k]
    return replace(result, matches=[replace(m, rank=i) for i, m in enumerate(kept, start=1)])


def _resolve(searcher: Searcher, given: str) -> Seed:
    path = Path(given).expanduser()
    if path.is_file():
        return Seed(given, str(path), searcher._library_track_of_file(path))
    track = searcher.find_track(given)
    if track is None:
        raise InputError(f"{given!r} is neither an audio file nor a library track (id, id prefix or path).")
    return Seed(given, track.get("path"), track["track_id"])


def _rrf(searcher: Searcher, seeds: list[Seed], k: int, leave_out: set[str], depth: int) -> list[Match]:
    """Each seed's own similar answer (``depth`` tracks besides those left out), fused by reciprocal rank."""
    fused: dict[str, float] = {}
    best: dict[str, Match] = {}  # the match as the seed ranking it highest found it
    for seed in seeds:
        result = _ask(searcher, seed, depth + len(leave_out), include_self=seed.library_track not in leave_out)
        seed.duration_s, seed.windows = float(result.query.duration_s), int(result.query.windows)
        kept = [m for m in result.matches if m.track_id not in leave_out][:depth]
        for rank, m in enumerate(kept, start=1):
            fused[m.track_id] = fused.get(m.track_id, 0.0) + 1.0 / (RRF_K + rank)
            if m.track_id not in best or rank < best[m.track_id].rank:
                best[m.track_id] = replace(m, rank=rank)
    order = sorted(fused, key=lambda t: (-fused[t], -best[t].score, t))[:k]
    return [replace(best[t], rank=i, score=round(fused[t], 6)) for i, t in enumerate(order, start=1)]


def _ask(searcher: Searcher, seed: Seed, k: int, include_self: bool) -> QueryResult:
    if seed.library_track is not None and not Path(seed.given).expanduser().is_file():
        return searcher.query_track(seed.library_track, mode="similar", k=k, include_self=include_self)
    assert seed.source is not None
    return searcher.query_file(seed.source, mode="similar", k=k, include_self=include_self)


def _mean(searcher: Searcher, seeds: list[Seed], k: int, leave_out: set[str]) -> list[Match]:
    """The seeds' pooled vectors averaged into one unit vector, searched as one query window."""
    pooled = []
    for seed in seeds:
        mel = _mel(searcher, seed)
        seed.duration_s = searcher.settings.frames_to_seconds(mel.shape[0])
        if mel.shape[0] == 0 or seed.duration_s + 1e-9 < searcher.options.min_query_seconds:
            raise InputError(
                f"{seed.given}: {seed.duration_s:.2f} s long; the shortest usable excerpt is "
                f"{searcher.options.min_query_seconds:g} s (neighbours.min_query_seconds)."
            )
        vectors = searcher.embed(mel, searcher.window_starts(mel.shape[0]))
        seed.windows = len(vectors)
        pooled.append(pool_track(vectors))
    centroid = l2_normalise(np.mean(pooled, axis=0))
    seconds = searcher.segment_frames / searcher.settings.frames_per_second
    # The centroid is one window: asked for k tracks besides those left out, which are then dropped.
    result = searcher.search_vectors(centroid[None, :], np.zeros(1), seconds, "similar", k + len(leave_out))
    kept = [m for m in result.matches if m.track_id not in leave_out][:k]
    return [replace(m, rank=i, query_start_s=0.0, query_end_s=0.0) for i, m in enumerate(kept, start=1)]


def _mel(searcher: Searcher, seed: Seed) -> np.ndarray:
    """The seed's log-Mel frames: a library track's stored features, else its audio through the front end."""
    tid = seed.library_track
    from_file = Path(seed.given).expanduser().is_file()
    if not from_file and tid is not None and searcher.features is not None:
        if searcher.features.tracks.index_of(tid) is not None:
            return searcher.features.mel(tid)
    if seed.source is None:
        raise InputError(f"{seed.given}: the library track has neither stored features nor a file to read.")
    mel, _ = featurise_query(seed.source, searcher.settings)
    return mel


# --- playlists -------------------------------------------------------------------------------------------------
def m3u(searcher: Searcher, results: Iterable[tuple[str | None, QueryResult]]) -> str:
    """An extended M3U8 playlist of the answers' tracks, in order: ``#EXTINF:<seconds>,<name>`` then the track's
    absolute path. Each ``(title, result)``'s title, when given, is a comment line before its tracks; a track
    without a file path is left out."""
    lines = ["#EXTM3U"]
    for title, result in results:
        if title:
            lines.append(f"# {_one_line(title)}")
        for m in result.matches:
            if not m.path:
                continue
            pos = searcher.tables.position(m.track_id)
            duration = searcher.tables.tracks[pos].get("duration_s") if pos is not None else None
            seconds = math.floor(float(duration) + 0.5) if duration is not None else -1  # as the page rounds
            name = Path(m.path).stem
            lines.append(f"#EXTINF:{seconds},{_one_line(name)}")
            lines.append(os.path.abspath(m.path))
    return "\n".join(lines) + "\n"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
