"""The embeddings artefact: segment and pooled track embeddings with their tables.

Layout of ``<workspace>/embeddings/``::

    meta.json              provenance (written last): kind "embeddings", config = EmbedOptions + model summary,
                           inputs = {"features": fp, "model": fp}, extra = dim, counts, table and shard names
    segments.parquet       track_row (int32: the segment's track, a row of tracks.parquet), start_s, end_s, by
                           segment row; a segment's id (f"{track_id}@{start_ms}") is computed from them, so the
                           table holds no string per segment
    segments-NNNN.npy      float32 (rows, dim) segment vectors, L2-normalised; shards of bounded size, laid end
                           to end in ``row`` order
    tracks.parquet         track_id, path, label, group, duration_s, n_segments, row
    tracks.npy             float32 (n_tracks, dim) pooled track vectors (see ``embedding.pooling``: the mean of
                           the track's segment vectors, re-L2-normalised)
    track_descriptors.npy  float32 (n_tracks, descriptor_dim) the track's pooled window descriptors (the
                           network's stage activations, see ``model.network`` and ``pooling.pool_descriptors``):
                           what classifiers read

A track's segments occupy consecutive rows, in time order. Vectors are unit length, so inner product is cosine
similarity. The folder is written aside and swapped into place by the export (``staged_dir``), so a reader
never sees a half-written store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedtool.artefacts import (
    ArtefactMeta,
    ArtefactStore,
    atomic_save_npy,
    fingerprint_of,
    read_member,
    remake_hint,
    write_meta,
)
from embedtool.embedding.pooling import DESCRIPTOR_KIND, pool_track
from embedtool.embedding.vectors import ShardedVectors
from embedtool.errors import DamagedArtefactError, InputError, MissingArtefactError
from embedtool.tracktable import TrackTable

KIND = "embeddings"
FORMAT_VERSION = 2
SEGMENT_TABLE = "segments.parquet"
TRACK_TABLE = "tracks.parquet"
TRACK_VECTORS = "tracks.npy"
TRACK_DESCRIPTORS = "track_descriptors.npy"
# 64 MiB of float32 per shard at most: large collections stay in files a reader can memory-map piecewise.
DEFAULT_SHARD_BYTES = 64 * 1024 * 1024

SEGMENT_SCHEMA = pa.schema([("track_row", pa.int32()), ("start_s", pa.float64()), ("end_s", pa.float64())])
TRACK_SCHEMA = pa.schema(
    [
        ("track_id", pa.string()),
        ("path", pa.string()),
        ("label", pa.string()),
        ("group", pa.string()),
        ("duration_s", pa.float64()),
        ("n_segments", pa.int64()),
        ("row", pa.int64()),
    ]
)


class EmbeddedTrack(TypedDict):
    """One row of the embeddings' track table (``TRACK_SCHEMA``): its segments are rows ``row``'s first segment
    on, ``n_segments`` of them."""

    track_id: str
    path: str | None
    label: str | None
    group: str | None
    duration_s: float
    n_segments: int
    row: int


def segment_id(track_id: str, start_s: float) -> str:
    """A segment's stable id: the track's content id and the start time in whole milliseconds."""
    return f"{track_id}@{int(round(start_s * 1000))}"


def shard_name(index: int) -> str:
    return f"segments-{index:04d}.npy"


@dataclass(frozen=True)
class SegmentGrid:
    """Where an export's segments start and how long they are, as its config records them: frames decide, the
    seconds are the same values at the features' frame rate."""

    hop_frames: int
    segment_frames: int
    hop_s: float
    segment_seconds: float

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SegmentGrid:
        return cls(
            hop_frames=int(config["hop_frames"]),
            segment_frames=int(config["segment_frames"]),
            hop_s=float(config["hop_s"]),
            segment_seconds=float(config["segment_seconds"]),
        )


class EmbeddingStore(ArtefactStore):
    """Read access to an embeddings artefact (tables eagerly, vectors on demand, memory-mapped)."""

    KIND = KIND
    FORMAT_VERSION = FORMAT_VERSION

    def __init__(self, directory: Path):
        super().__init__(directory)
        self.dim: int = int(self.meta.extra["dim"])
        track_table = read_member(self.meta, self.directory, TRACK_TABLE, pq.read_table)
        # Columns, not a dict per track (see tracktable); rows become dicts when read.
        self.tracks: TrackTable = TrackTable(track_table)
        # A track's segments are consecutive rows, tracks in table order: a row's track is arithmetic.
        self._counts = np.asarray(self.tracks.column("n_segments"), dtype=np.int64)
        self.first_rows: np.ndarray = np.concatenate([[0], np.cumsum(self._counts)[:-1]]).astype(np.int64)

    @cached_property
    def _segment_times(self) -> tuple[np.ndarray, np.ndarray]:
        # Only the numeric columns are read (on first use): no Python object per segment (10^7-10^8 at scale).
        times = read_member(
            self.meta, self.directory, SEGMENT_TABLE, lambda p: pq.read_table(p, columns=["start_s", "end_s"])
        )
        if times.num_rows != self.n_segments:
            raise DamagedArtefactError(
                f"{self.directory / SEGMENT_TABLE} has {times.num_rows} segments; the track table counts "
                f"{self.n_segments}. " + remake_hint(KIND)
            )
        return (
            times.column("start_s").to_numpy().astype(np.float64),
            times.column("end_s").to_numpy().astype(np.float64),
        )

    @property
    def segment_starts(self) -> np.ndarray:
        """Start time in seconds of every segment, by row."""
        return self._segment_times[0]

    @property
    def segment_ends(self) -> np.ndarray:
        return self._segment_times[1]

    def track_row_of(self, rows: np.ndarray | int) -> np.ndarray:
        """The track row (into ``tracks``) of segment rows, by binary search over the tracks' first rows."""
        return np.searchsorted(self.first_rows, rows, side="right") - 1

    def segment_id_of(self, row: int) -> str:
        """The stable id of the segment at ``row`` (its track's id and start in whole milliseconds)."""
        return segment_id(self.tracks[int(self.track_row_of(row))]["track_id"], float(self.segment_starts[row]))

    def use_current_labels(self, features_dir: Path | None) -> int:
        """Take labels and groups from the features' track table, by track id: they are metadata of the features
        (`extract --labels` changes them without changing a vector), so a relabelled library is classified,
        clustered and evaluated by its current labels without re-embedding. Returns how many tracks changed;
        a track the features no longer hold keeps its own. Without a features artefact nothing changes."""
        if features_dir is None or not (Path(features_dir) / "meta.json").is_file():
            return 0
        from embedtool.features.store import FeatureStore

        return FeatureStore(Path(features_dir)).relabel(self.tracks)

    def _upgrade(self, meta: ArtefactMeta) -> ArtefactMeta:
        """Format 1: the segment table may hold segment_id, track_id and row columns as well (never read), and the
        export may have no track descriptors or ones of another kind (``descriptors_current`` says so)."""
        meta.extra.setdefault("descriptor_dim", None)
        meta.extra.setdefault("descriptor_kind", None)
        return meta

    # --- provenance (fingerprint, model_fingerprint: ArtefactStore) ------------------------------------------
    @property
    def features_fingerprint(self) -> str:
        return self.input_fingerprint("features")

    # --- the segment grid (what the export's config decided) -----------------------------------------------
    @cached_property
    def grid(self) -> SegmentGrid:
        return SegmentGrid.from_config(self.meta.config)

    @property
    def hop_s(self) -> float:
        """Seconds between consecutive segment starts (the hop actually used, in whole frames)."""
        return self.grid.hop_s

    @property
    def segment_seconds(self) -> float:
        return self.grid.segment_seconds

    @property
    def feature_settings(self) -> dict[str, Any]:
        """The settings of the features the export was made from (``FeatureSettings`` as a dict)."""
        return dict(self.meta.config["features"])

    @property
    def config(self) -> dict[str, Any]:
        """The export's provenance config (options, segment grid, features, model summary), for copies."""
        return dict(self.meta.config)

    def __len__(self) -> int:
        return len(self.tracks)

    def duration_s(self) -> float:
        """Seconds of audio in all tracks (from the duration column: no row made)."""
        return float(np.sum(self.tracks.column("duration_s")))

    @property
    def n_segments(self) -> int:
        return int(self._counts.sum())

    # --- tables ----------------------------------------------------------------------------------------
    def segment_ids(self) -> list[str]:
        """Every segment's id, by row: one string each, so for small collections and tests."""
        return [self.segment_id_of(r) for r in range(self.n_segments)]

    def track_ids(self) -> list[str]:
        return self.tracks.ids()

    def track(self, track_id: str) -> EmbeddedTrack:
        found = self.tracks.get(track_id)
        if found is None:
            raise InputError(f"No track with id {track_id!r} in {self.directory}")
        return found  # type: ignore[return-value]

    def segments_of(self, track_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The track's segment rows (into ``segment_vectors()``) and their start times in seconds."""
        t = self.track(track_id)
        first = int(self.first_rows[self.tracks.index_of(track_id)])
        rows = np.arange(first, first + int(t["n_segments"]), dtype=np.int64)
        return rows, self.segment_starts[rows]

    # --- vectors ---------------------------------------------------------------------------------------
    def segment_shards(self, check_finite: bool = True) -> list[np.ndarray]:
        """The segment vectors as their shards, float32 (rows, dim) each, memory-mapped (read-only) and laid end
        to end in row order. A NaN or infinite value is refused naming its track (``check_finite``: one pass)."""
        names = list(self.meta.extra["segment_shards"])
        shards = [self._load_shard(name) for name in names]
        self._check_rows(sum(len(s) for s in shards), self.n_segments, "segment vectors", names[-1] if names else "")
        first = 0
        for name, shard in zip(names, shards, strict=True):
            if check_finite:  # scanned through a mapping of its own, dropped after: resident memory stays bounded
                scanned = self._load_shard(name)
                self._check_finite(scanned, name, lambda row, first=first: self._track_id_of_segment(first + row))
                del scanned
            first += len(shard)
        return shards

    def segment_source(self, check_finite: bool = True, remap_gathers: bool = False) -> ShardedVectors:
        """The segment vectors as one :class:`ShardedVectors` over the memory-mapped shards (never concatenated):
        what indexing (``remap_gathers``: bounded resident memory), re-scoring and a re-export read."""
        return ShardedVectors(self.segment_shards(check_finite), self.dim, remap_gathers)

    def track_segment_vectors(self, track_id: str) -> np.ndarray:
        """One track's segment vectors (float32 (n_segments, dim)), read from the shard(s) holding its rows; the
        other shards are not read (so reusing tracks of a large export costs their rows, not the export)."""
        rows, _ = self.segments_of(track_id)
        if not hasattr(self, "_source"):
            self._source = self.segment_source(check_finite=False)
        return self._source.span(int(rows[0]), int(rows[-1]) + 1)

    def segment_vectors(self, check_finite: bool = True) -> np.ndarray:
        """All segment vectors, float32 (n_segments, dim), in one array: memory-mapped when in one shard, else
        concatenated in memory (large collections: read ``segment_shards`` instead)."""
        shards = self.segment_shards(check_finite)
        if not shards:
            return np.zeros((0, self.dim), dtype=np.float32)
        return shards[0] if len(shards) == 1 else np.concatenate(shards)

    def track_vectors(self) -> np.ndarray:
        """Pooled track vectors, float32 (n_tracks, dim), in ``tracks`` order (NaN or inf refused, the track named)."""
        return self._track_array(TRACK_VECTORS, self.dim, "track vectors")

    def _track_array(self, name: str, width: int, what: str) -> np.ndarray:
        """A float32 (n_tracks, width) file of per-track rows, checked for shape and finite values."""
        array = read_member(self.meta, self.directory, name, lambda p: np.load(p, mmap_mode="r"))
        if array.ndim != 2 or array.shape[1] != width or array.dtype != np.float32:
            raise DamagedArtefactError(
                f"{self.directory / name} holds {array.dtype} {array.shape}, expected float32 (tracks, {width}). "
                + remake_hint(KIND)
            )
        self._check_rows(len(array), len(self.tracks), what, name)
        self._check_finite(array, name, lambda row: self.tracks[row]["track_id"])
        return array

    def _track_id_of_segment(self, row: int) -> str:
        return str(self.tracks[int(self.track_row_of(row))]["track_id"])

    def _check_rows(self, found: int, rows: int, what: str, name: str) -> None:
        if found != rows:
            raise DamagedArtefactError(
                f"{self.directory / name}: {found} {what} for {rows} rows of the tables. " + remake_hint(KIND)
            )

    def _check_finite(self, array: np.ndarray, name: str, track_of_row: Any) -> None:
        """Refuse NaN or infinite values in the file ``name``, naming the first track that holds one (scanned in
        blocks, so a memory-mapped file is not read into memory whole)."""
        block = max(1, (64 << 20) // max(1, array.shape[1] * 4))
        for start in range(0, array.shape[0], block):
            bad = ~np.isfinite(array[start : start + block]).all(axis=1)
            if bad.any():
                track_id = track_of_row(start + int(np.argmax(bad)))
                path = (self.tracks.get(track_id) or {}).get("path")
                raise DamagedArtefactError(
                    f"{self.directory / name} holds NaN or infinite values (first: track {track_id}"
                    f"{f' {path}' if path else ''}). " + remake_hint(KIND)
                )

    @property
    def descriptor_dim(self) -> int | None:
        """Width of the track descriptors, or None for an export made without them."""
        dim = self.meta.extra.get("descriptor_dim")
        return int(dim) if dim else None

    @property
    def descriptors_current(self) -> bool:
        """Whether this export holds track descriptors made the way this version makes them."""
        return self.descriptor_dim is not None and self.meta.extra.get("descriptor_kind") == DESCRIPTOR_KIND

    def track_descriptors(self) -> np.ndarray:
        """Track descriptors, float32 (n_tracks, descriptor_dim), in ``tracks`` order."""
        if not self.descriptors_current:
            state = "no" if self.descriptor_dim is None else "outdated"
            raise MissingArtefactError(
                f"{self.directory} holds {state} track descriptors (made by another version): re-run `embedtool embed`"
            )
        return self._track_array(TRACK_DESCRIPTORS, int(self.descriptor_dim or 0), "track descriptors")

    def write_without(self, stage: Path, track_ids: set[str], features_fingerprint: str) -> ArtefactMeta:
        """This export less ``track_ids``, written into the folder ``stage`` (swapped into place by the caller):
        the other tracks' vectors, segments and descriptors copied shard by shard, nothing embedded again.
        ``features_fingerprint``: the features the result belongs to (what it records as its input)."""
        descriptors = self.track_descriptors() if self.descriptors_current else None
        writer = EmbeddingWriter(stage, self.dim, _shard_bytes(self))
        for position, track in enumerate(self.tracks):
            if track["track_id"] in track_ids:
                continue
            rows, starts = self.segments_of(track["track_id"])
            writer.add_track(
                track,
                starts,
                self.segment_ends[rows],
                self.track_segment_vectors(track["track_id"]),
                None if descriptors is None else descriptors[position],
            )  # (the writer pools the track vector from the same segments, as the export did)
        extra = {k: v for k, v in self.meta.extra.items() if k in ("export", "reason")}
        inputs = {**self.meta.inputs, "features": features_fingerprint}
        return writer.finish(self.meta.config, inputs, extra=extra)

    def _load_shard(self, name: str) -> np.ndarray:
        array = read_member(self.meta, self.directory, name, lambda p: np.load(p, mmap_mode="r"))
        if array.ndim != 2 or array.shape[1] != self.dim or array.dtype != np.float32:
            raise DamagedArtefactError(
                f"{self.directory / name} holds {array.dtype} {array.shape}, expected float32 (rows, {self.dim}). "
                + remake_hint(KIND)
            )
        return array


def _shard_bytes(store: EmbeddingStore) -> int:
    """The shard size an export was written with (its first shard's rows), so a copy of it shards alike."""
    names = list(store.meta.extra.get("segment_shards") or [])
    if len(names) < 2:
        return DEFAULT_SHARD_BYTES
    return int(store._load_shard(names[0]).shape[0]) * 4 * store.dim


class EmbeddingWriter:
    """Streams tracks' segment vectors into bounded shards, then writes tables, pooled vectors and meta.

    Write into a staging folder (``artefacts.staged_dir``) and call :meth:`finish` last.
    """

    def __init__(self, directory: Path, dim: int, max_shard_bytes: int = DEFAULT_SHARD_BYTES):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.dim = int(dim)
        self.shard_rows = max(1, max_shard_bytes // (4 * self.dim))
        self._pending: list[np.ndarray] = []
        self._pending_rows = 0
        self._shards: list[str] = []
        self._starts: list[np.ndarray] = []  # per track: numeric arrays, no Python object per segment
        self._ends: list[np.ndarray] = []
        self._tracks: dict[str, list[Any]] = {name: [] for name in TRACK_SCHEMA.names}
        self._track_vectors: list[np.ndarray] = []
        self._track_descriptors: list[np.ndarray] = []
        self._rows = 0
        self._seen: set[str] = set()

    @property
    def n_tracks(self) -> int:
        return len(self._track_vectors)

    @property
    def n_segments(self) -> int:
        return self._rows

    def add_track(
        self,
        track: Mapping[str, Any],
        starts_s: np.ndarray,
        ends_s: np.ndarray,
        vectors: np.ndarray,
        descriptor: np.ndarray | None = None,
    ) -> None:
        """Append one track: its row (track_id, path, label, group, duration_s), its segments in time order
        and its descriptor (give one for every track or for none)."""
        track_id = str(track["track_id"])
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        starts_s = np.asarray(starts_s, dtype=np.float64)
        ends_s = np.asarray(ends_s, dtype=np.float64)
        n = vectors.shape[0] if vectors.ndim == 2 else -1
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or n == 0:
            raise ValueError(f"track {track_id}: expected (n>0, {self.dim}) vectors, got {vectors.shape}")
        if starts_s.shape != (n,) or ends_s.shape != (n,):
            raise ValueError(f"track {track_id}: {n} vectors but {starts_s.shape} starts / {ends_s.shape} ends")
        if track_id in self._seen:
            raise ValueError(f"track {track_id} added twice")
        if not np.isfinite(vectors).all() or (descriptor is not None and not np.isfinite(descriptor).all()):
            raise DamagedArtefactError(
                f"Track {track_id} ({track.get('path')}) embeds to NaN or infinite values: its features are damaged "
                "(see `embedtool verify`; `embedtool verify --repair` re-extracts them) or the model is."
            )
        if (descriptor is None) != (not self._track_descriptors) and self._track_vectors:
            raise ValueError(f"track {track_id}: give a descriptor for every track or for none")
        if descriptor is not None:
            self._track_descriptors.append(np.asarray(descriptor, dtype=np.float32).reshape(-1))
        self._seen.add(track_id)
        if len(np.unique(np.round(starts_s * 1000).astype(np.int64))) != n:  # segment ids must be unique
            raise ValueError(f"track {track_id}: segment start times collide at millisecond resolution")
        self._starts.append(starts_s)
        self._ends.append(ends_s)
        self._tracks["track_id"].append(track_id)
        self._tracks["path"].append(track.get("path"))
        self._tracks["label"].append(track.get("label"))
        self._tracks["group"].append(track.get("group"))
        self._tracks["duration_s"].append(float(track.get("duration_s") or 0.0))
        self._tracks["n_segments"].append(n)
        self._tracks["row"].append(len(self._track_vectors))
        self._track_vectors.append(pool_track(vectors))
        self._rows += n
        self._pending.append(vectors)
        self._pending_rows += n
        while self._pending_rows >= self.shard_rows:
            self._flush(self.shard_rows)

    def _flush(self, rows: int) -> None:
        block = np.concatenate(self._pending) if len(self._pending) > 1 else self._pending[0]
        head, tail = block[:rows], block[rows:]
        name = shard_name(len(self._shards))
        atomic_save_npy(self.directory / name, np.ascontiguousarray(head))
        self._shards.append(name)
        self._pending = [tail] if len(tail) else []
        self._pending_rows = len(tail)

    def finish(
        self,
        config: Mapping[str, Any],
        inputs: Mapping[str, str],
        extra: Mapping[str, Any] | None = None,
    ) -> ArtefactMeta:
        """Write the last shard, the tables, the pooled vectors, then ``meta.json`` (last)."""
        if self._pending_rows:
            self._flush(self._pending_rows)
        counts = np.asarray(self._tracks["n_segments"], dtype=np.int64)
        segments = {
            "track_row": np.repeat(np.arange(len(counts), dtype=np.int32), counts),
            "start_s": np.concatenate(self._starts) if self._starts else np.zeros(0),
            "end_s": np.concatenate(self._ends) if self._ends else np.zeros(0),
        }
        pq.write_table(pa.Table.from_pydict(segments, schema=SEGMENT_SCHEMA), self.directory / SEGMENT_TABLE)
        pq.write_table(pa.Table.from_pydict(self._tracks, schema=TRACK_SCHEMA), self.directory / TRACK_TABLE)
        track_vectors = (
            np.stack(self._track_vectors) if self._track_vectors else np.zeros((0, self.dim), dtype=np.float32)
        )
        atomic_save_npy(self.directory / TRACK_VECTORS, track_vectors.astype(np.float32))
        descriptors: dict[str, Any] = {}
        if self._track_descriptors:
            atomic_save_npy(self.directory / TRACK_DESCRIPTORS, np.stack(self._track_descriptors))
            descriptors = {
                "descriptor_dim": int(self._track_descriptors[0].shape[0]),
                "descriptor_kind": DESCRIPTOR_KIND,
                "descriptors": "per window each network stage averaged over time and 2 frequency bands, "
                "concatenated; per track their energy-weighted mean, square-rooted",
            }
        # Deterministic: the same model, features, options and tracks give the same fingerprint, so a
        # consumer (the index) can tell a re-export that changed nothing from one that did.
        fingerprint = fingerprint_of(
            dict(config), dict(inputs), list(zip(self._tracks["track_id"], self._tracks["n_segments"], strict=True))
        )
        return write_meta(
            self.directory,
            KIND,
            FORMAT_VERSION,
            config,
            inputs=inputs,
            extra={
                "dim": self.dim,
                "tracks": self.n_tracks,
                "segments": self.n_segments,
                "tables": {"segments": SEGMENT_TABLE, "tracks": TRACK_TABLE, "track_vectors": TRACK_VECTORS},
                "segment_shards": list(self._shards),
                "pooling": "mean of segment vectors, re-L2-normalised",
                **descriptors,
                **dict(extra or {}),
            },
            fingerprint=fingerprint,
        )
