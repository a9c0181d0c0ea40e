"""The index artefact's files and its row -> id tables.

index/
  meta.json          kind "index": the index options, inputs (embeddings, model, features fingerprints),
                     extra: each index's kind, parameters, recall and latency; the identify calibration;
                     hop_s, segment_seconds, feature_settings, dim
  segments.faiss     FAISS index over segment embeddings (ids = rows of segments.parquet)
  tracks.faiss       FAISS index over track embeddings (ids = rows of tracks.parquet)
  tracks.parquet     a copy of the embeddings' track table the index was built from
  segment_track.npy  int32 per segment row: its track's row in tracks.parquet  } memory-mapped at query time: no
  segment_times.npy  float64 (segments, 2): start and end in seconds           } per-segment Python objects
  fingerprint_*.npy  landmark fingerprints of the tracks (indexing.fingerprint), when built
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedtool.artefacts import ArtefactMeta, ArtefactStore, read_member
from embedtool.tracktable import TrackTable

if TYPE_CHECKING:
    from embedtool.indexing.fingerprint import FingerprintIndex
    from embedtool.indexing.search import VectorIndex

KIND = "index"
FORMAT_VERSION = 2
SEGMENT_INDEX = "segments.faiss"
TRACK_INDEX = "tracks.faiss"
SEGMENT_TABLE = "segments.parquet"  # format 1 only, in some: the segment table instead of the id arrays
TRACK_TABLE = "tracks.parquet"
SEGMENT_TRACK = "segment_track.npy"
SEGMENT_TIMES = "segment_times.npy"


@dataclass
class IdTables:
    """Row -> id tables of an index: per segment row its track (a position in ``tracks``) and time range, as
    arrays (memory-mapped from the index folder), and the track rows."""

    segment_track: np.ndarray  # int32: row -> position in ``tracks``
    segment_start: np.ndarray  # float64 seconds
    segment_end: np.ndarray
    tracks: TrackTable
    first_row: np.ndarray  # per track: its first segment row
    n_segments: np.ndarray  # per track

    @classmethod
    def from_arrays(cls, segment_track: np.ndarray, times: np.ndarray, tracks: TrackTable) -> IdTables:
        n_segments = np.asarray(tracks.column("n_segments"), dtype=np.int64)
        return cls(
            segment_track=segment_track,
            segment_start=times[:, 0],
            segment_end=times[:, 1],
            tracks=tracks,
            first_row=np.concatenate([[0], np.cumsum(n_segments)[:-1]]).astype(np.int64),
            n_segments=n_segments,
        )

    @classmethod
    def from_tables(cls, seg: Any, track_table: Any) -> IdTables:
        """From the segment and track tables (pyarrow) of an embeddings export (only the numeric columns are
        read)."""
        tracks = TrackTable(track_table)
        counts = np.asarray(tracks.column("n_segments"), dtype=np.int64)
        times = np.stack([seg.column("start_s").to_numpy(), seg.column("end_s").to_numpy()], axis=1)
        segment_track = np.repeat(np.arange(len(tracks), dtype=np.int32), counts)
        return cls.from_arrays(segment_track, times.astype(np.float64), tracks)

    def segment_id(self, row: int) -> str:
        """The stable id of the segment at ``row`` (as the embeddings' ``segment_id`` makes it)."""
        from embedtool.embedding.store import segment_id

        return segment_id(self.tracks[int(self.segment_track[row])]["track_id"], float(self.segment_start[row]))

    def position(self, track_id: str) -> int | None:
        """The track's position in ``tracks`` (a binary search over the sorted ids)."""
        return self.tracks.index_of(track_id)


def save_id_arrays(stage: Path, track_rows: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
    """The per-segment id arrays of an index (``SEGMENT_TRACK``, ``SEGMENT_TIMES``) into its staged folder."""
    from embedtool.artefacts import atomic_save_npy

    atomic_save_npy(stage / SEGMENT_TRACK, np.ascontiguousarray(track_rows, dtype=np.int32))
    atomic_save_npy(stage / SEGMENT_TIMES, np.ascontiguousarray(np.stack([starts, ends], axis=1), dtype=np.float64))


@dataclass(frozen=True)
class IdentifyThresholds:
    """The identify decision an index was calibrated for (see query.calibrate and query.decision), with the
    calibration's figures as the index records them."""

    threshold: float | None
    statistic: str  # what the threshold applies to: "confidence" or "best_score" (query.decision)
    by_length: list[dict[str, Any]] = field(default_factory=list)  # one threshold per calibrated excerpt length
    calibrated: bool = False
    reason: str | None = None  # why it was not calibrated (a fixed threshold, too few tracks)
    excerpt_s: float | None = None  # the excerpt length of the figures below (the middle of ``by_length``)
    queries: int | None = None  # library excerpts queried
    true_accept_rate: float | None = None
    false_accept_rate: float | None = None
    conditions: dict[str, Any] = field(default_factory=dict)  # the rest: SNR, seed, background, score summaries

    @classmethod
    def from_dict(cls, recorded: Mapping[str, Any]) -> IdentifyThresholds:
        named = {f.name for f in fields(cls)} - {"conditions", "by_length"}
        return cls(
            **{k: v for k, v in recorded.items() if k in named and k != "statistic"},
            statistic=str(recorded.get("statistic", "confidence")),
            by_length=list(recorded.get("by_length") or []),
            conditions={k: v for k, v in recorded.items() if k not in named and k != "by_length"},
        )

    def to_dict(self) -> dict[str, Any]:
        """As meta.json records it (``from_dict`` reads it back)."""
        out: dict[str, Any] = {"statistic": self.statistic, "threshold": self.threshold, "calibrated": self.calibrated}
        for name in ("reason", "excerpt_s", "queries", "true_accept_rate", "false_accept_rate"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        out.update(self.conditions)
        if self.by_length:
            out["by_length"] = self.by_length
        return out


class IndexStore(ArtefactStore):
    """Read access to an index artefact's facts (its meta.json, typed) and file paths; the FAISS indexes
    themselves are loaded by ``indexing.search.VectorIndex``."""

    KIND = KIND
    FORMAT_VERSION = FORMAT_VERSION
    ids_in_segment_table = False  # the per-segment ids are read from SEGMENT_TABLE (some format-1 indexes)

    def _upgrade(self, meta: ArtefactMeta) -> ArtefactMeta:
        """Format 1: the identify statistic, the feature settings and the fingerprints' facts may be missing (the
        threshold was on the best score; no settings recorded; no fingerprints), and the per-segment ids may be a
        copy of the embeddings' segment table instead of SEGMENT_TRACK and SEGMENT_TIMES."""
        identify = meta.extra.setdefault("identify", {})
        if isinstance(identify, dict):
            identify.setdefault("statistic", "best_score")
        meta.extra.setdefault("feature_settings", None)
        meta.extra.setdefault("fingerprints", {"built": False, "reason": "the index holds no fingerprints"})
        self.ids_in_segment_table = SEGMENT_TRACK not in meta.files and not (self.directory / SEGMENT_TRACK).exists()
        return meta

    @property
    def embeddings_fingerprint(self) -> str:
        return self.input_fingerprint("embeddings")

    @property
    def feature_settings(self) -> dict[str, Any] | None:
        """The feature settings the indexed embeddings were made from (None where the index records none)."""
        return self.meta.extra.get("feature_settings")

    @property
    def hop_s(self) -> float:
        """Seconds between consecutive segment starts of the indexed embeddings."""
        return float(self.meta.extra["hop_s"])

    @property
    def segment_kind(self) -> str:
        return str(self.meta.extra["segments"]["kind"])

    @property
    def segment_search_params(self) -> dict[str, Any] | None:
        return self.meta.extra["segments"].get("search_params")

    @property
    def identify(self) -> IdentifyThresholds:
        return IdentifyThresholds.from_dict(self.meta.extra.get("identify") or {})

    @property
    def fingerprints(self) -> dict[str, Any]:
        """How the landmark fingerprints were built (``built`` false, with a ``reason``, when they were not)."""
        return self.meta.extra.get("fingerprints") or {"built": False, "reason": "the index holds no fingerprints"}

    def fingerprint_index(self) -> FingerprintIndex | None:
        """The landmark fingerprints (memory-mapped), or None when the index was built without them, or from peaks
        that another version picked (a query's peaks would not meet them: identify answers by the embeddings until
        ``extract`` and ``index`` re-make them)."""
        from embedtool.audio.settings import PEAKS_VERSION
        from embedtool.indexing.fingerprint import FILES, FingerprintIndex, FingerprintSettings

        if not self.fingerprints.get("built"):
            return None
        settings = FingerprintSettings.from_dict(self.fingerprints.get("settings"))
        if settings.source == "peaks" and settings.peaks_version != PEAKS_VERSION:
            return None
        hashes, tracks, frames = (
            read_member(self.meta, self.directory, name, lambda path: np.load(path, mmap_mode="r")) for name in FILES
        )
        return FingerprintIndex(hashes, tracks, frames, settings)

    def id_tables(self) -> IdTables:
        import pyarrow.parquet as pq

        tracks = read_member(self.meta, self.directory, TRACK_TABLE, pq.read_table)
        if self.ids_in_segment_table:
            segments = read_member(self.meta, self.directory, SEGMENT_TABLE, pq.read_table)
            return read_member(
                self.meta, self.directory, SEGMENT_TABLE, lambda _: IdTables.from_tables(segments, tracks)
            )
        segment_track, times = (
            read_member(self.meta, self.directory, name, lambda path: np.load(path, mmap_mode="r"))
            for name in (SEGMENT_TRACK, SEGMENT_TIMES)
        )
        table = TrackTable(tracks)
        if (
            len(segment_track) != len(times)
            or times.ndim != 2
            or len(segment_track) != int(np.sum(table.column("n_segments")))
        ):
            from embedtool.artefacts import remake_hint
            from embedtool.errors import DamagedArtefactError

            raise DamagedArtefactError(
                f"{self.directory}: {SEGMENT_TRACK} and {SEGMENT_TIMES} do not match the track table. "
                + remake_hint(KIND)
            )
        return IdTables.from_arrays(segment_track, times, table)

    def segment_index(self) -> VectorIndex:
        """The segment index, loaded with its tuned search parameters."""
        from embedtool.indexing.search import VectorIndex

        return read_member(
            self.meta,
            self.directory,
            SEGMENT_INDEX,
            lambda path: VectorIndex.load(path, self.segment_kind, self.segment_search_params),
        )

    def track_index(self) -> VectorIndex:
        from embedtool.indexing.search import VectorIndex

        kind = str(self.meta.extra["tracks"]["kind"])
        params = self.meta.extra["tracks"].get("search_params")
        return read_member(self.meta, self.directory, TRACK_INDEX, lambda path: VectorIndex.load(path, kind, params))
