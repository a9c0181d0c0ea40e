"""Answering queries: "what sounds like this?" (``similar``) and "which track is this from?" (``identify``).

A query (audio samples, an audio file, or a library track) is featurised and cut into windows with the
library's own settings and segment rule, embedded with the index's model, and every window is searched in the
segment index. Hits become a ranked track list by time-consistent voting (``query.voting``).

``similar`` leaves the query's own track out when the query is in the library (found by content id or path).
``identify`` first asks the index's landmark fingerprints (``indexing.fingerprint``), when it has them: enough
spectral-peak pairs agreeing on one alignment name the track and where the excerpt sits in it, exactly, through
background sound and lossy codecs. Otherwise the embeddings answer, and "no match" is given when the query's
confidence — how much nearer the best track is than the runner-up (``query.calibrate``) — is below the threshold
calibrated at index time.

:class:`Searcher` loads the index, its id tables and the encoder once; use it for many queries::

    searcher = Searcher.open(workspace)
    result = searcher.query_file("excerpt.mp3", mode="identify")
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from embedtool.artefacts import check_compatible
from embedtool.audio.peaks import PeakSpectrum, PeakTracker
from embedtool.config import settings_dict
from embedtool.embedding.vectors import ShardedVectors
from embedtool.errors import ConfigError, IncompatibleArtefactError, InputError, MissingArtefactError
from embedtool.features.frontend import featurise_query, featurise_samples
from embedtool.features.naming import find_track
from embedtool.features.windows import crop_many, silence_floor, window_starts
from embedtool.indexing.fingerprint import FingerprintIndex, accept, mel_landmarks, peak_landmarks
from embedtool.indexing.search import VectorIndex
from embedtool.indexing.store import IdTables, IndexStore
from embedtool.query.decision import STATISTIC, match_confidence, threshold_for
from embedtool.query.options import NeighbourOptions
from embedtool.query.voting import TrackVote, vote

if TYPE_CHECKING:
    from embedtool.audio.settings import FeatureSettings
    from embedtool.embedding.store import EmbeddedTrack
    from embedtool.features.store import FeatureStore
    from embedtool.model.encoder import Encoder
    from embedtool.workspace import Workspace

Mode = Literal["similar", "identify"]
DENSE_QUERY_SECONDS = 30.0
# A long query (a whole song, an hour-long set) is sampled at most this many windows, at a whole multiple of the
# library's hop so the windows stay on its grid: 240 windows give voting plenty of support, and embedding and
# search time stop growing with the query's length.
MAX_QUERY_WINDOWS = 240
# The most segment hits one query fetches (windows x hits per window) while widening its search to find k distinct
# tracks: 4M hits are ~50 MB of scores and rows.
MAX_HITS = 4_000_000


@dataclass
class Match:
    """One ranked track of a query's answer."""

    rank: int
    track_id: str
    score: float
    windows: int  # query windows supporting the match (same offset)
    query_start_s: float
    query_end_s: float
    ref_start_s: float
    ref_end_s: float
    path: str | None = None
    label: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SegmentHit:
    """One query window's nearest library segment (``--segments``)."""

    query_start_s: float
    segment_id: str
    track_id: str
    ref_start_s: float
    ref_end_s: float
    score: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class QueryInfo:
    """What was asked: the query's length, where it came from (a file, a library track; neither for samples), or,
    for several seeds answered together (``query.seeds``), the seeds and how their answers were combined."""

    duration_s: float
    windows: int
    source: str | None = None  # the file, or the library track's path
    library_track: str | None = None  # the library track the query is (its id), when it is one
    combine: str | None = None  # several seeds: "mean" or "rrf"
    seeds: list[dict[str, Any]] = field(default_factory=list)  # several seeds: each one's given name, path, id...
    excluded_tracks: list[str] = field(default_factory=list)  # several seeds: library tracks left out of the answer

    def located(self, source: str | None, library_track: str | None) -> QueryInfo:
        """The same query, come from ``source`` (and the library track ``library_track``, if it is one)."""
        return replace(self, source=source, library_track=library_track)

    def to_dict(self) -> dict[str, Any]:
        if self.combine is not None:
            return {"combine": self.combine, "seeds": self.seeds, "duration_s": self.duration_s,
                    "windows": self.windows, "excluded_tracks": self.excluded_tracks}  # fmt: skip
        out: dict[str, Any] = {"duration_s": self.duration_s, "windows": self.windows}
        if self.source is not None or self.library_track is not None:
            out.update(source=self.source, library_track=self.library_track)
        return out


@dataclass
class QueryResult:
    mode: str
    matches: list[Match]
    no_match: bool
    threshold: float | None
    query: QueryInfo
    excluded_track: str | None = None
    confidence: float | None = None  # identify: best vs runner-up (see query.calibrate); None in similar mode
    # identify: what decided the answer, "fingerprint" (aligned landmarks) or "embedding" (confidence threshold)
    decided_by: str | None = None
    fingerprint_hits: int | None = None  # identify: aligned landmarks of the best track by fingerprint
    segments: list[SegmentHit] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "no_match": self.no_match,
            "threshold": self.threshold,
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "decided_by": self.decided_by,
            "fingerprint_hits": self.fingerprint_hits,
            "query": self.query.to_dict(),
            "excluded_track": self.excluded_track,
            "matches": [m.to_dict() for m in self.matches],
            "segments": [s.to_dict() for s in self.segments],
            "timings_s": {k: round(v, 4) for k, v in self.timings.items()},
        }


class Searcher:
    """Everything a query needs, loaded once: encoder, segment index, id tables, identify threshold."""

    def __init__(
        self,
        encoder: Encoder,
        segment_index: VectorIndex,
        tables: IdTables,
        hop_seconds: float,
        threshold: float | None,
        options: NeighbourOptions | None = None,
        features: FeatureStore | None = None,
        threshold_statistic: str = STATISTIC,
        thresholds_by_length: list[dict[str, Any]] | None = None,
        fingerprints: FingerprintIndex | None = None,
    ):
        self.encoder = encoder
        self.segment_index = segment_index
        self.tables = tables
        self.hop_seconds = float(hop_seconds)
        self.threshold = threshold
        self.threshold_statistic = threshold_statistic  # "confidence" or "best_score": what the index was calibrated on
        self.thresholds_by_length = thresholds_by_length  # calibrated per excerpt length (query.calibrate)
        self.options = options or NeighbourOptions()
        self.features = features
        self.fingerprints = fingerprints
        self.settings: FeatureSettings = encoder.feature_settings
        self.segment_frames = int(encoder.segment_frames)

    # --- opening -------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, workspace: Workspace, options: NeighbourOptions | None = None, device: str = "cpu") -> Searcher:
        """Load the workspace's index, checking it against the model it was built with."""
        from embedtool.features.store import FeatureStore
        from embedtool.model.encoder import Encoder

        built = IndexStore(workspace.index)
        if not (workspace.model / "meta.json").is_file():
            raise MissingArtefactError(
                f"No model at {workspace.model} to embed queries with (make it with `embedtool train`)."
            )
        encoder = Encoder.load(workspace.model, device=device)
        if encoder.fingerprint != built.model_fingerprint:
            raise IncompatibleArtefactError(
                f"The index at {workspace.index} was built with model {built.model_fingerprint}, but the model "
                f"at {workspace.model} is {encoder.fingerprint}; re-run `embedtool index`."
            )
        if built.feature_settings:
            check_compatible(
                built.feature_settings, settings_dict(encoder.feature_settings), "index vs model feature settings"
            )
        index = built.segment_index()
        if built.segment_kind == "ivf-pq":
            index.refine_vectors = _refine_vectors(workspace, built.embeddings_fingerprint)
        tables = built.id_tables()
        features = None
        try:
            features = FeatureStore(workspace.features)
        except MissingArtefactError:
            features = None  # library lookups by id then go through the index's track table only
        if features is not None:  # labels and groups as the features have them now (`extract --labels NEW`)
            features.relabel(tables.tracks)
        identify = built.identify
        fingerprints = built.fingerprint_index()
        return cls(
            encoder, index, tables, built.hop_s, identify.threshold, options, features, identify.statistic,
            identify.by_length or None, fingerprints,
        )  # fmt: skip

    # --- queries -------------------------------------------------------------------------------------------
    def query_file(
        self,
        path: Path | str,
        mode: Mode | None = None,
        k: int | None = None,
        exclude_track: str | None = None,
        include_self: bool | None = None,
        segments: bool = False,
    ) -> QueryResult:
        """Query with an audio file of any supported format and length (featurised block by block, like a
        library file: memory stays bounded for a long query)."""
        path = Path(path)
        t0 = time.perf_counter()
        tracker = PeakTracker(self.settings.sample_rate) if self._wants_peaks else None
        mel, _ = featurise_query(path, self.settings, on_block=tracker.push if tracker else None)
        peaks = tracker.finish() if tracker else None
        features_s = time.perf_counter() - t0
        library = self._library_track_of_file(path)
        mode = mode or self.options.mode  # type: ignore[assignment]
        include = self.options.include_self if include_self is None else include_self
        if exclude_track is None and library is not None and mode == "similar" and not include:
            exclude_track = library
        # The features stay float16: windows are cut to float32 one batch at a time (a long query's frames exist once).
        result = self.query_mel(mel, mode=mode, k=k, exclude_track=exclude_track, segments=segments, peaks=peaks)
        result.query = result.query.located(str(path), library)
        result.timings = {"features": features_s, **result.timings}
        return result

    def query(self, source: str, mode: Mode | None = None, k: int | None = None, segments: bool = False) -> QueryResult:
        """Query with an audio file's path or a library track (id, unique id prefix, or path)."""
        path = Path(source).expanduser()
        if path.is_file():
            return self.query_file(path, mode=mode, k=k, segments=segments)
        if self.find_track(source) is not None:
            return self.query_track(source, mode=mode, k=k, segments=segments)
        raise InputError(f"{source!r} is neither an audio file nor a library track (id, id prefix or path).")

    def query_track(
        self,
        id_or_path: str,
        mode: Mode | None = None,
        k: int | None = None,
        include_self: bool | None = None,
        segments: bool = False,
    ) -> QueryResult:
        """Query with a library track (id, unique id prefix, or path), using its stored features."""
        track = self.find_track(id_or_path)
        if track is None:
            raise InputError(f"No library track matches {id_or_path!r} (give a track id, id prefix, or path).")
        tid = track["track_id"]
        mode = mode or self.options.mode  # type: ignore[assignment]
        include = self.options.include_self if include_self is None else include_self
        exclude = tid if mode == "similar" and not include else None
        if self.features is not None and self.features.tracks.index_of(tid) is not None:
            mel = self.features.mel(tid)  # memory-mapped float16; windows are cut to float32 batch by batch
            stored = self._wants_peaks and self.features.track(tid).get("peaks") is not None
            peaks = self.features.peaks(tid) if stored else None
            result = self.query_mel(mel, mode=mode, k=k, exclude_track=exclude, segments=segments, peaks=peaks)
        else:
            return self.query_file(track["path"], mode=mode, k=k, exclude_track=exclude, segments=segments)
        result.query = result.query.located(track.get("path"), tid)
        return result

    def query_samples(
        self,
        samples: np.ndarray,
        sample_rate: int,
        mode: Mode | None = None,
        k: int | None = None,
        exclude_track: str | None = None,
        segments: bool = False,
    ) -> QueryResult:
        """Query with mono (or (n, channels)) float samples at ``sample_rate``."""
        t0 = time.perf_counter()
        tracker = PeakTracker(self.settings.sample_rate) if self._wants_peaks else None
        mel = featurise_samples(samples, sample_rate, self.settings, on_block=tracker.push if tracker else None)
        mel = np.asarray(mel, dtype=np.float32)
        peaks = tracker.finish() if tracker else None
        features_s = time.perf_counter() - t0
        result = self.query_mel(mel, mode=mode, k=k, exclude_track=exclude_track, segments=segments, peaks=peaks)
        result.timings = {"features": features_s, **result.timings}
        return result

    def query_mel(
        self,
        mel: np.ndarray,
        mode: Mode | None = None,
        k: int | None = None,
        exclude_track: str | None = None,
        segments: bool = False,
        peaks: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> QueryResult:
        """Query with a log-Mel matrix (frames, n_mels; float16 as stored, or float32) made with the library's
        feature settings, and for identify the same audio's fingerprint peaks (``embedtool.audio.peaks``) when the
        index's fingerprints are made of peaks (without them those fingerprints are not asked)."""
        mode = mode or self.options.mode  # type: ignore[assignment]
        if mode not in ("similar", "identify"):
            raise ConfigError(f"mode must be 'similar' or 'identify', not {mode!r}")
        k = int(k or self.options.k)
        duration = self.settings.frames_to_seconds(mel.shape[0])
        if mel.shape[0] == 0 or duration + 1e-9 < self.options.min_query_seconds:
            raise InputError(
                f"The query is {duration:.2f} s long; the shortest usable excerpt is "
                f"{self.options.min_query_seconds:g} s (neighbours.min_query_seconds)."
            )
        t0 = time.perf_counter()
        starts_f = self.window_starts(mel.shape[0])
        vectors = self.embed(mel, starts_f)
        embed_s = time.perf_counter() - t0
        starts_s = starts_f / self.settings.frames_per_second
        result = self.search_vectors(vectors, starts_s, duration, mode, k, exclude_track, segments)
        result.timings = {"embedding": embed_s, **result.timings}
        if mode == "identify":
            self._identify_by_fingerprint(result, mel, duration, exclude_track, peaks)
        return result

    @property
    def _wants_peaks(self) -> bool:
        """Whether identify's fingerprints are made of fine-spectrogram peaks (queries then compute theirs)."""
        return self.fingerprints is not None and self.fingerprints.settings.source == "peaks"

    def _identify_by_fingerprint(
        self,
        result: QueryResult,
        mel: np.ndarray,
        duration_s: float,
        exclude_track: str | None,
        peaks: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Let the landmark fingerprints decide an identify query when they find its track: it goes first, with
        the time range the landmarks aligned on, and the answer is accepted; where the embeddings rank the same
        track first, a smaller fingerprint margin suffices. Otherwise the embeddings' answer stands only where the
        fingerprints' best track is the same one: two independent views agreeing (on the tuning corpus this kept
        every true accept of the embeddings and none of their false ones;
        docs/decisions/0010-landmark-fingerprints.md)."""
        result.decided_by = "embedding"
        if self.fingerprints is None or (self._wants_peaks and peaks is None):
            return
        t0 = time.perf_counter()
        fps = self.settings.frames_per_second
        if self._wants_peaks:
            hashes, frames = peak_landmarks(*peaks, self.fingerprints.settings)  # type: ignore[misc]
            fps = PeakSpectrum(self.settings.sample_rate).frames_per_second
        else:
            hashes, frames = mel_landmarks(mel, fps, self.fingerprints.settings)
        exclude = self.tables.position(exclude_track) if exclude_track is not None else None
        found = self.fingerprints.match(hashes, frames, duration_s, exclude_track=exclude)
        result.timings["fingerprints"] = time.perf_counter() - t0
        result.fingerprint_hits = found.ranked[0].hits if found.ranked else 0
        fingerprint_best = self.tables.tracks[found.ranked[0].track]["track_id"] if found.ranked else None
        agreed = result.best is not None and result.best.track_id == fingerprint_best
        # (agreeing never asks for more than not: this covers the match's own decision)
        if not accept(found.ranked, self.fingerprints.settings, duration_s, agreed=agreed):
            if found.ranked and not agreed:
                result.no_match = True  # the two views disagree: not sure enough to name a track
            return
        best = found.ranked[0]
        track = self.tables.tracks[best.track]
        ref_start = max(0.0, best.offset_frames / fps)
        others = [m for m in result.matches if m.track_id != track["track_id"]]
        embedded = next((m for m in result.matches if m.track_id == track["track_id"]), None)
        first = Match(
            rank=1,
            track_id=track["track_id"],
            score=embedded.score if embedded else 0.0,
            windows=embedded.windows if embedded else 0,
            query_start_s=0.0,
            query_end_s=round(duration_s, 3),
            ref_start_s=round(ref_start, 3),
            ref_end_s=round(min(ref_start + duration_s, float(track["duration_s"])), 3),
            path=track.get("path"),
            label=track.get("label"),
        )
        result.matches = [first] + [replace(m, rank=i) for i, m in enumerate(others[: len(result.matches) - 1], 2)]
        result.no_match, result.decided_by = False, "fingerprint"

    # --- the parts of a query ------------------------------------------------------------------------------
    def window_starts(self, n_frames: int) -> np.ndarray:
        dense = self.settings.frames_to_seconds(n_frames) < DENSE_QUERY_SECONDS
        hop_s = self.options.query_hop_seconds or (self.hop_seconds / 2 if dense else self.hop_seconds)
        hop = max(1, self.settings.seconds_to_frames(hop_s))
        if not self.options.query_hop_seconds:
            hop *= max(1, math.ceil(len(window_starts(n_frames, self.segment_frames, hop)) / MAX_QUERY_WINDOWS))
        return window_starts(n_frames, self.segment_frames, hop)

    def embed(self, mel: np.ndarray, starts: np.ndarray, batch_size: int = 256) -> np.ndarray:
        pad = silence_floor(self.settings.log_offset)
        parts = []
        for i in range(0, len(starts), batch_size):
            windows = crop_many(mel, starts[i : i + batch_size], self.segment_frames, pad)
            parts.append(np.asarray(self.encoder.embed_windows(windows), dtype=np.float32))
        return np.concatenate(parts) if parts else np.zeros((0, int(self.encoder.embedding_dim)), np.float32)

    def search_vectors(
        self,
        vectors: np.ndarray,
        starts_s: np.ndarray,
        duration_s: float,
        mode: Mode,
        k: int,
        exclude_track: str | None = None,
        segments: bool = False,
    ) -> QueryResult:
        """Search window vectors (starting at ``starts_s``) and vote them into a ranked track list."""
        exclude_rows = self._rows_of(exclude_track)
        top = max(k, 2) if mode == "identify" else k  # identify's confidence needs the runner-up
        t0 = time.perf_counter()
        scores, rows = self.segment_index.search(vectors, self.options.hits_per_window, exclude_rows=exclude_rows)
        search_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        votes = self._vote(scores, rows, starts_s, duration_s, mode, top)
        voting_s = time.perf_counter() - t1
        matches = [self._match(rank, v) for rank, v in enumerate(votes, start=1)]
        no_match, confidence, threshold = False, None, self.threshold
        if mode == "identify":  # decided on the usual hits, as the threshold was calibrated
            no_match, confidence, threshold = self._decide(matches, duration_s)
        # k means k distinct tracks whenever the library holds them: a long track's segments can fill every
        # window's hits. Then the hits per window are widened (x4 a round) until k tracks are found, every segment
        # was asked, or MAX_HITS (windows x hits, a bound on a query's memory) is reached; the tracks found so are
        # listed after those of the usual search, whose scores and ranks stay as they were.
        wanted = min(k, len(self.tables.tracks) - (exclude_rows is not None))
        hits = self.options.hits_per_window
        most = min(self.segment_index.ntotal, max(hits, MAX_HITS // max(1, len(starts_s))))
        while len(matches) < wanted and hits < most and len(starts_s):
            hits = min(most, hits * 4)
            t0 = time.perf_counter()
            wide_scores, wide_rows = self.segment_index.search(vectors, hits, exclude_rows=exclude_rows)
            t1 = time.perf_counter()
            found = {m.track_id for m in matches}
            more = [self._match(0, v) for v in self._vote(wide_scores, wide_rows, starts_s, duration_s, mode, None)]
            more = [m for m in more if m.track_id not in found][: wanted - len(matches)]
            matches += [replace(m, rank=len(matches) + i) for i, m in enumerate(more, start=1)]
            search_s, voting_s = search_s + t1 - t0, voting_s + time.perf_counter() - t1
        return QueryResult(
            mode=mode,
            matches=matches[:k],
            no_match=no_match,
            threshold=threshold,
            confidence=confidence,
            query=QueryInfo(round(duration_s, 3), int(len(starts_s))),
            excluded_track=exclude_track if exclude_rows is not None else None,
            segments=self._segment_hits(starts_s, scores, rows) if segments else [],
            timings={"search": search_s, "voting": voting_s},
        )

    def _vote(
        self, scores: np.ndarray, rows: np.ndarray, starts_s: np.ndarray, duration_s: float, mode: Mode, top: int | None
    ) -> list[TrackVote]:
        return vote(
            scores,
            rows,
            np.asarray(starts_s, dtype=np.float64),
            self.segment_frames / self.settings.frames_per_second,
            duration_s,
            self.tables.segment_track,
            self.tables.segment_start,
            self.tables.segment_end,
            bin_seconds=self.hop_seconds,
            mode=mode,
            tolerance_bins=self.options.tolerance_bins,
            top=top,
        )

    def _rows_of(self, track_id: str | None) -> tuple[int, int] | None:
        """The [first, last) segment rows of a library track (to leave out of a search), or None."""
        pos = self.tables.position(track_id) if track_id is not None else None
        if pos is None:
            return None
        first = int(self.tables.first_row[pos])
        return first, first + int(self.tables.n_segments[pos])

    def _match(self, rank: int, v: TrackVote) -> Match:
        t = self.tables.tracks[v.track]
        return Match(
            rank=rank,
            track_id=t["track_id"],
            score=round(v.score, 6),
            windows=v.windows,
            query_start_s=round(v.query_start_s, 3),
            query_end_s=round(v.query_end_s, 3),
            ref_start_s=round(v.ref_start_s, 3),
            ref_end_s=round(v.ref_end_s, 3),
            path=t.get("path"),
            label=t.get("label"),
        )

    def _decide(self, matches: list[Match], duration_s: float) -> tuple[bool, float, float | None]:
        """Identify mode: (no match?, the confidence, the threshold it was held to) — see query.decision."""
        best = matches[0].score if matches else 0.0
        confidence = match_confidence(best, matches[1].score if len(matches) > 1 else None)
        threshold = self.threshold
        if self.thresholds_by_length:
            threshold = threshold_for(self.thresholds_by_length, duration_s)
        measured = best if self.threshold_statistic == "best_score" else confidence
        no_match = threshold is not None and measured < threshold or not matches
        return no_match, confidence, threshold

    def _segment_hits(self, starts_s: np.ndarray, scores: np.ndarray, rows: np.ndarray) -> list[SegmentHit]:
        """Each query window's nearest library segment (``--segments``)."""
        hits = []
        for i, start in enumerate(starts_s):
            if rows[i, 0] < 0:
                continue
            r = int(rows[i, 0])
            hits.append(
                SegmentHit(
                    query_start_s=round(float(start), 3),
                    segment_id=self.tables.segment_id(r),
                    track_id=self.tables.tracks[int(self.tables.segment_track[r])]["track_id"],
                    ref_start_s=round(float(self.tables.segment_start[r]), 3),
                    ref_end_s=round(float(self.tables.segment_end[r]), 3),
                    score=round(float(scores[i, 0]), 6),
                )
            )
        return hits

    # --- library lookups -----------------------------------------------------------------------------------
    @property
    def roots(self) -> list[str]:
        """The library folders (from the features), which shown paths are relative to."""
        return self.features.roots if self.features is not None else []

    def find_track(self, name: str) -> EmbeddedTrack | None:
        """A library track by the shared naming rule (:func:`embedtool.features.naming.find_track`): id, path
        (also relative to the library folder), end of a path, or id prefix of 6+ characters; an ambiguous name is
        an :class:`InputError` listing the candidates."""
        return find_track(self.tables.tracks, name, self.roots)

    def _library_track_of_file(self, path: Path) -> str | None:
        """The library track a query file is, by content id (any copy of the file) or by path."""
        from embedtool.features.extract import file_hash

        try:
            tid = file_hash(path)
        except OSError:
            tid = None
        if tid is not None and self.tables.position(tid) is not None:
            return tid
        # by its absolute path only: a query file is not a library track because their names end alike
        found = self.find_track(os.path.abspath(Path(path).expanduser())) if Path(path).exists() else None
        return found["track_id"] if found else None


def _refine_vectors(workspace: Workspace, expected_fingerprint: str) -> ShardedVectors:
    """The exact segment vectors an ivf-pq index re-scores its candidates with (memory-mapped shards)."""
    from embedtool.embedding.store import EmbeddingStore

    store = EmbeddingStore(workspace.embeddings)
    if store.fingerprint != expected_fingerprint:
        raise IncompatibleArtefactError(
            f"The embeddings at {workspace.embeddings} changed since the index was built; re-run `embedtool index`."
        )
    return store.segment_source(check_finite=False)  # read piecewise, not scanned
