"""The index artefact's files and its row -> id tables.

index/
  meta.json          kind "index": the index options, inputs (embeddings, model, features fingerprints),
                     extra: each index's kind, parameters, recall and latency; the identify calibration;
                     hop_s, segment_seconds, feature_settings, dim
  segments.faiss     FAISS index over segment embeddings (ids = rows of segments.parquet)
  tracks.faiss       FAISS index over track embeddings (ids = rows of tracks.parquet)
  segments.parquet   copies of the embeddings' tables the index was built from
  tracks.parquet
  fingerprint_*.npy  landmark fingerprints of the tracks (indexing.fingerprint), when built
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedtool.artefacts import ArtefactMeta, read_member, read_meta

if TYPE_CHECKING:
    from embedtool.embedding.store import EmbeddedTrack
    from embedtool.indexing.fingerprint import FingerprintIndex
    from embedtool.indexing.search import VectorIndex

KIND = "index"
FORMAT_VERSION = 1
SEGMENT_INDEX = "segments.faiss"
TRACK_INDEX = "tracks.faiss"
SEGMENT_TABLE = "segments.parquet"
TRACK_TABLE = "tracks.parquet"


@dataclass
class IdTables:
    """Row -> stable id tables of an index (copies of the embeddings tables it was built from)."""

    segment_ids: np.ndarray  # object array of segment ids, by row
    segment_track: np.ndarray  # int64: row -> position in ``tracks``
    segment_start: np.ndarray
    segment_end: np.ndarray
    tracks: list[EmbeddedTrack]
    first_row: np.ndarray  # per track: its first segment row
    n_segments: np.ndarray  # per track

    @classmethod
    def read(cls, segments_path: Path, tracks_path: Path) -> IdTables:
        import pyarrow.parquet as pq

        return cls.from_tables(pq.read_table(segments_path), pq.read_table(tracks_path))

    @classmethod
    def from_tables(cls, seg: Any, track_table: Any) -> IdTables:
        """From the segment and track tables (pyarrow) of an embeddings export."""
        tracks = track_table.to_pylist()
        position = {t["track_id"]: i for i, t in enumerate(tracks)}
        seg_tracks = seg.column("track_id").to_pylist()
        n_segments = np.array([int(t["n_segments"]) for t in tracks], dtype=np.int64)
        return cls(
            segment_ids=np.asarray(seg.column("segment_id").to_pylist(), dtype=object),
            segment_track=np.fromiter((position[t] for t in seg_tracks), dtype=np.int64, count=len(seg_tracks)),
            segment_start=seg.column("start_s").to_numpy().astype(np.float64),
            segment_end=seg.column("end_s").to_numpy().astype(np.float64),
            tracks=tracks,
            first_row=np.concatenate([[0], np.cumsum(n_segments)[:-1]]).astype(np.int64),
            n_segments=n_segments,
        )

    def position(self, track_id: str) -> int | None:
        for i, t in enumerate(self.tracks):
            if t["track_id"] == track_id:
                return i
        return None


@dataclass(frozen=True)
class IdentifyThresholds:
    """The identify decision an index was calibrated for (see query.calibrate and query.decision)."""

    threshold: float | None
    statistic: str  # "confidence"; "best_score" for indexes built before the confidence rule
    by_length: list[dict[str, Any]] = field(default_factory=list)  # one threshold per calibrated excerpt length


class IndexStore:
    """Read access to an index artefact's facts (its meta.json, typed) and file paths; the FAISS indexes
    themselves are loaded by ``indexing.search.VectorIndex``."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.meta: ArtefactMeta = read_meta(self.directory, KIND, FORMAT_VERSION)

    @property
    def fingerprint(self) -> str:
        return self.meta.fingerprint

    @property
    def model_fingerprint(self) -> str:
        return self.meta.inputs.get("model", "")

    @property
    def embeddings_fingerprint(self) -> str:
        return self.meta.inputs.get("embeddings", "")

    @property
    def feature_settings(self) -> dict[str, Any] | None:
        """The feature settings the indexed embeddings were made from (None for indexes that predate it)."""
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
        identify = self.meta.extra.get("identify", {})
        return IdentifyThresholds(
            threshold=identify.get("threshold"),
            statistic=identify.get("statistic", "best_score"),
            by_length=identify.get("by_length") or [],
        )

    @property
    def fingerprints(self) -> dict[str, Any]:
        """How the landmark fingerprints were built (``built`` false, with a ``reason``, when they were not)."""
        return self.meta.extra.get("fingerprints") or {"built": False, "reason": "index made before fingerprints"}

    def fingerprint_index(self) -> FingerprintIndex | None:
        """The landmark fingerprints (memory-mapped), or None when the index was built without them."""
        from embedtool.indexing.fingerprint import FILES, FingerprintIndex, FingerprintSettings

        if not self.fingerprints.get("built"):
            return None
        hashes, tracks, frames = (
            read_member(self.meta, self.directory, name, lambda path: np.load(path, mmap_mode="r")) for name in FILES
        )
        settings = FingerprintSettings.from_dict(self.fingerprints.get("settings"))
        return FingerprintIndex(hashes, tracks, frames, settings)

    def id_tables(self) -> IdTables:
        import pyarrow.parquet as pq

        segments = read_member(self.meta, self.directory, SEGMENT_TABLE, pq.read_table)
        tracks = read_member(self.meta, self.directory, TRACK_TABLE, pq.read_table)
        return read_member(self.meta, self.directory, SEGMENT_TABLE, lambda _: IdTables.from_tables(segments, tracks))

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
