"""The features artefact: per-track float16 log-Mel matrices in sharded, memory-mappable ``.npy`` files.

Layout of ``<workspace>/features/``::

    meta.json                 provenance (written last; names the current track table)
    tracks-<run>.parquet      one row per track (see TRACK_COLUMNS)
    shards/<id>.npy           float16 [frames, n_mels]: tracks' matrices laid end to end
    shards/<id>.peaks.npy     int32 [peaks, 2]: the tracks' fingerprint peaks (frame, bin; embedtool.audio.peaks)
    shards/<id>.json          sidecar: which tracks a shard holds (lets an interrupted run resume)
    errors.json               files skipped by the last run, with reasons

Shards are immutable once written: a re-run appends new shards and writes a new table, then swaps
``meta.json``; only after that are shards no table references deleted. A run killed at any point therefore
leaves the previous table valid, and the shards it completed are picked up by the next run.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from embedtool.artefacts import (
    ArtefactMeta,
    ArtefactStore,
    atomic_save_npy,
    atomic_write_json,
    checksum_files,
    config_fingerprints,
    fingerprint_of,
    read_member,
    recorded_checksums,
    remake_hint,
    write_meta,
)
from embedtool.audio.settings import PEAKS_VERSION, FeatureSettings
from embedtool.config import settings_dict
from embedtool.errors import DamagedArtefactError, IncompatibleArtefactError, InputError
from embedtool.features.naming import find_track
from embedtool.tracktable import TrackTable

KIND = "features"
FORMAT_VERSION = 2
DEFAULT_SHARD_BYTES = 256 * 1024 * 1024
PENDING_META = ".meta.json.pending"  # a removal's meta.json, staged until it is swapped in

TRACK_SCHEMA = pa.schema(
    [
        ("track_id", pa.string()),  # blake2b of the file's bytes: stable across renames and re-runs
        ("path", pa.string()),  # absolute path when extracted
        ("root", pa.string()),  # the folder given to `extract` that the file was found under
        ("label", pa.string()),  # nullable
        ("group", pa.string()),  # nullable: tracks of one group are never split across train/validation
        ("duration_s", pa.float64()),
        ("native_sample_rate", pa.int64()),
        ("channels", pa.int64()),
        ("frames", pa.int64()),
        ("shard", pa.string()),
        ("offset", pa.int64()),  # first row of this track in its shard
        ("file_size", pa.int64()),
        ("file_mtime_ns", pa.int64()),
        # fingerprint peaks (embedtool.audio.peaks) in the shard's .peaks.npy; null for a track stored without them
        ("peaks_offset", pa.int64()),
        ("peaks", pa.int64()),
    ]
)
TRACK_COLUMNS = [f.name for f in TRACK_SCHEMA]


class Track(TypedDict):
    """One row of the track table (the columns of ``TABLE_SCHEMA``): a track's identity, origin and features."""

    track_id: str
    path: str
    root: str
    label: str | None
    group: str | None
    duration_s: float
    native_sample_rate: int
    channels: int
    frames: int
    shard: str
    offset: int
    file_size: int
    file_mtime_ns: int
    peaks_offset: int | None
    peaks: int | None


def settings_fingerprint(settings: FeatureSettings) -> str:
    return fingerprint_of(settings_dict(settings))


class FeatureStore(ArtefactStore):
    """Read access to a features artefact. ``mel(track_id)`` is a zero-copy memory-mapped view."""

    KIND = KIND
    FORMAT_VERSION = FORMAT_VERSION

    def __init__(self, directory: Path):
        super().__init__(directory)
        self.settings = FeatureSettings(**self.meta.config)
        table_name = self.meta.extra.get("table")
        if not isinstance(table_name, str):
            raise DamagedArtefactError(f"{self.directory}/meta.json names no track table. {remake_hint(KIND)}")
        table_path = self.directory / table_name
        table = read_member(self.meta, self.directory, table_name, pq.read_table)
        # Columns, not a dict per track: opening a library of 10^6 tracks stays well under a second.
        self.tracks: TrackTable = TrackTable(table)
        # Rows each shard must hold for the tracks in it (computed on the columns).
        ends = pc.add(table.column("offset"), table.column("frames"))
        needed = pa.table({"shard": table.column("shard"), "end": ends}).group_by("shard").aggregate([("end", "max")])
        self._shard_rows: dict[str, int] = dict(
            zip(needed.column("shard").to_pylist(), needed.column("end_max").to_pylist(), strict=True)
        )
        # The fingerprint covers the settings and the track ids (see commit): recomputed, it catches a table
        # swapped or a meta.json edited by hand, which later stages would otherwise believe.
        recomputed = fingerprint_of(self.meta.config, self.tracks.ids())
        if recomputed != self.meta.fingerprint:
            raise IncompatibleArtefactError(
                f"{self.directory}: meta.json and {table_path.name} no longer belong together (fingerprint "
                f"{self.meta.fingerprint} recorded, {recomputed} from their contents): they were edited or mixed up "
                "after `embedtool extract` wrote them. Re-make the features with `embedtool extract --overwrite`."
            )
        self._shards: dict[str, np.ndarray] = {}
        self._peak_shards: dict[str, np.ndarray] = {}

    def _upgrade(self, meta: ArtefactMeta) -> ArtefactMeta:
        """Format 1: the track table may lack the peaks columns, or hold tracks without peaks (``has_peaks``), and
        peaks stored without their ``peaks_version`` are of version 1."""
        if meta.extra.get("peaks_version") is None:
            meta.extra["peaks_version"] = 1
        return meta

    def __len__(self) -> int:
        return len(self.tracks)

    def track_ids(self) -> list[str]:
        return self.tracks.ids()

    def track(self, track_id: str) -> Track:
        found = self.tracks.get(track_id)
        if found is None:
            raise InputError(f"No track with id {track_id!r} in {self.directory}")
        return found  # type: ignore[return-value]

    @property
    def roots(self) -> list[str]:
        """The library folders the tracks were found under (what table paths are shown relative to)."""
        return [str(r) for r in self.meta.extra.get("roots") or []]

    def relabel(self, tracks: Iterable[Any]) -> int:
        """Give ``tracks`` (rows of a later artefact's track table, by ``track_id``) the labels and groups these
        features have now: they are metadata of the features (`extract --labels` changes them without changing
        a vector), so later artefacts need not be remade for them. Returns how many rows changed; a track the
        features no longer hold keeps its own."""
        if isinstance(tracks, TrackTable):  # column against column
            return tracks.relabel_from(self.tracks)
        current = self.tracks
        changed = 0
        for t in tracks:
            now = current.get(str(t["track_id"]))
            if now is not None and (t.get("label"), t.get("group")) != (now.get("label"), now.get("group")):
                t["label"], t["group"] = now.get("label"), now.get("group")
                changed += 1
        return changed

    def find(self, name: str) -> Track | None:
        """The track ``name`` names: id, path, end of a path or id prefix (:func:`naming.find_track`)."""
        return find_track(self.tracks, name, self.roots)

    def mel(self, track_id: str) -> np.ndarray:
        """The track's log-Mel matrix, float16, shape (frames, n_mels)."""
        t = self.track(track_id)
        shard = self._shard(t["shard"])
        return shard[t["offset"] : t["offset"] + t["frames"]]

    @property
    def peaks_version(self) -> int:
        """The peak picking (``audio.settings.PEAKS_VERSION``) the stored peaks come from; 1 where none is
        recorded."""
        return int(self.meta.extra.get("peaks_version", 1))

    def has_peaks(self, tracks: Iterable[Any] | None = None) -> bool:
        """Whether the fingerprint peaks of this version's peak picking are stored for every track (of ``tracks``,
        rows with a ``track_id``)."""
        if "peaks" not in self.tracks.table.column_names or self.peaks_version != PEAKS_VERSION:
            return False
        counts = self.tracks.column("peaks")
        if tracks is None:
            return all(c is not None for c in counts)
        ids = {str(t["track_id"]) for t in tracks}
        return all(c is not None for tid, c in zip(self.tracks.ids(), counts, strict=True) if tid in ids)

    def peaks(self, track_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The track's fingerprint peaks: (frames, bins), int32, sorted by frame."""
        t = self.track(track_id)
        if t.get("peaks") is None:
            raise IncompatibleArtefactError(
                f"{self.directory}: track {track_id} has no fingerprint peaks stored; re-run "
                "`embedtool extract --overwrite` to add them."
            )
        name = t["shard"]
        if name not in self._peak_shards:
            arr = read_member(self.meta, self.directory, peaks_file(name), lambda p: np.load(p, mmap_mode="r"))
            if arr.ndim != 2 or arr.shape[1] != 2 or arr.dtype != np.int32:
                raise DamagedArtefactError(
                    f"{self.directory / peaks_file(name)} holds {arr.dtype} {arr.shape}, not int32 (peaks, 2). "
                    f"{remake_hint(KIND)}"
                )
            self._peak_shards[name] = arr
        arr = self._peak_shards[name]
        start, count = int(t["peaks_offset"]), int(t["peaks"])
        if start + count > len(arr):
            raise DamagedArtefactError(
                f"{self.directory / peaks_file(name)} holds {len(arr)} peaks; track {track_id} needs "
                f"{start + count}. {remake_hint(KIND)}"
            )
        part = np.asarray(arr[start : start + count])
        return part[:, 0], part[:, 1]

    def stage_without(self, track_ids: Iterable[str]) -> tuple[ArtefactMeta, Path]:
        """These features less ``track_ids``, staged but not published: a new track table is written beside the
        current one and the meta.json naming it to ``.meta.json.pending`` (swapped onto ``meta.json`` by the
        caller, :func:`artefacts.swap_together`); returns that meta and the pending file. Shards stay as they are:
        the next commit deletes those no table references."""
        drop = set(track_ids)
        records = [dict(t) for t in self.tracks if t["track_id"] not in drop]
        extra = {k: v for k, v in self.meta.extra.items() if k not in ("table", "tracks")}
        table_name = _write_table(self.directory, records)
        live = {r["shard"] for r in records}
        with_peaks = {r["shard"] for r in records if r.get("peaks") is not None}
        names = [table_name, *(shard_file(n) for n in sorted(live)), *(peaks_file(n) for n in sorted(with_peaks))]
        config = dict(self.meta.config)
        meta = ArtefactMeta(
            kind=KIND,
            format_version=FORMAT_VERSION,
            config=config,
            inputs=dict(self.meta.inputs),
            extra={"table": table_name, "tracks": len(records), **extra},
            fingerprint=fingerprint_of(config, sorted(r["track_id"] for r in records)),
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            config_fingerprints=config_fingerprints(config),
            files=checksum_files(self.directory, names, recorded_checksums(self.directory)),
        )
        pending = self.directory / PENDING_META
        atomic_write_json(pending, meta.to_dict())
        return meta, pending

    def _shard(self, name: str) -> np.ndarray:
        if name not in self._shards:
            shard = read_member(self.meta, self.directory, shard_file(name), lambda p: np.load(p, mmap_mode="r"))
            rows = self._shard_rows.get(name, 0)
            if (
                shard.ndim != 2
                or shard.shape[1] != self.settings.n_mels
                or shard.dtype != np.float16
                or (shard.shape[0] < rows)
            ):
                raise DamagedArtefactError(
                    f"{self.directory / shard_file(name)} holds {shard.dtype} {shard.shape}, not the float16 "
                    f"({rows}+, {self.settings.n_mels}) its tracks need. {remake_hint(KIND)}"
                )
            self._shards[name] = shard
        return self._shards[name]

    def check_shards(self) -> None:
        """Open every shard the table names (what a stage reading all tracks would do): raises on damage."""
        for name in sorted(self._shard_rows):
            self._shard(name)

    def total_frames(self) -> int:
        return int(np.sum(self.tracks.column("frames")))

    def labels(self) -> dict[str, str | None]:
        return dict(zip(self.tracks.ids(), self.tracks.column("label"), strict=True))


class ShardWriter:
    """Collects tracks' matrices and writes them out as immutable shards of bounded size."""

    def __init__(self, directory: Path, settings: FeatureSettings, max_shard_bytes: int = DEFAULT_SHARD_BYTES):
        self.shard_dir = Path(directory) / "shards"
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        self.settings_fp = settings_fingerprint(settings)
        self.n_mels = settings.n_mels
        self.max_shard_bytes = max_shard_bytes
        self._pending: list[tuple[dict[str, Any], np.ndarray, np.ndarray | None]] = []
        self._pending_bytes = 0
        self.bytes_written = 0
        self.completed: list[dict[str, Any]] = []  # records of the shards written so far

    def add(self, record: dict[str, Any], mel: np.ndarray, peaks: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Queue one track (``record`` without shard/offset) and its fingerprint peaks ((frames, bins), or None);
        flushes a shard once enough has gathered."""
        if mel.ndim != 2 or mel.shape[1] != self.n_mels:
            raise ValueError(f"expected (frames, {self.n_mels}) matrix, got {mel.shape}")
        mel16 = np.asarray(mel, dtype=np.float16)
        pairs = None if peaks is None else np.column_stack(peaks).astype(np.int32)
        self._pending.append((dict(record), mel16, pairs))
        self._pending_bytes += mel16.nbytes + (0 if pairs is None else pairs.nbytes)
        if self._pending_bytes >= self.max_shard_bytes:
            self.flush()

    def flush(self) -> list[dict[str, Any]]:
        """Write the queued tracks as one shard (array first, then its sidecar); return their records."""
        if not self._pending:
            return []
        name = uuid.uuid4().hex[:16]
        records, offset, peak_offset = [], 0, 0
        for record, mel, pairs in self._pending:
            record = {**record, "frames": int(mel.shape[0]), "shard": name, "offset": offset}
            if pairs is not None:
                record.update(peaks_offset=peak_offset, peaks=len(pairs))
                peak_offset += len(pairs)
            records.append(record)
            offset += mel.shape[0]
        # A single (long) track is saved as it is: no concatenated copy of it in memory.
        data = self._pending[0][1] if len(self._pending) == 1 else np.concatenate([m for _, m, _ in self._pending])
        peak_parts = [p for _, _, p in self._pending if p is not None]
        written = [self.shard_dir / f"{name}.npy"]
        try:
            atomic_save_npy(written[0], data)
            if peak_parts:
                written.append(self.shard_dir / f"{name}.peaks.npy")
                atomic_save_npy(written[1], np.concatenate(peak_parts))
            # the sidecar last: a resumed run trusts a shard only with it
            atomic_write_json(
                self.shard_dir / f"{name}.json", {"settings_fingerprint": self.settings_fp, "tracks": records}
            )
        except BaseException:  # (a full disk) a shard without its sidecar is of no use to a resumed run
            for path in written:
                path.unlink(missing_ok=True)
            raise
        self.bytes_written += offset * self.n_mels * 2 + peak_offset * 8
        self._pending, self._pending_bytes = [], 0
        self.completed.extend(records)
        return records


def shard_file(name: str) -> str:
    """A shard's array file, relative to the features folder."""
    return f"shards/{name}.npy"


def peaks_file(name: str) -> str:
    """A shard's fingerprint peaks, relative to the features folder."""
    return f"shards/{name}.peaks.npy"


def completed_shard_records(directory: Path, settings: FeatureSettings) -> list[dict[str, Any]]:
    """Track records from every complete shard made with these settings, committed or left by a killed run."""
    shard_dir = Path(directory) / "shards"
    if not shard_dir.is_dir():
        return []
    fp = settings_fingerprint(settings)
    records = []
    for sidecar in sorted(shard_dir.glob("*.json")):
        try:
            data = json.loads(sidecar.read_text())
        except ValueError:
            continue
        if data.get("settings_fingerprint") == fp and (shard_dir / f"{sidecar.stem}.npy").is_file():
            records.extend(data["tracks"])
    return records


def commit(
    directory: Path,
    records: list[dict[str, Any]],
    settings: FeatureSettings,
    extra: dict[str, Any] | None = None,
) -> ArtefactMeta:
    """Publish ``records`` as the current table: write the table, then ``meta.json``, then drop dead shards."""
    directory = Path(directory)
    records = sorted(records, key=lambda r: r["track_id"])
    table_name = _write_table(directory, records)
    config = settings_dict(settings)
    live = {r["shard"] for r in records}
    with_peaks = {r["shard"] for r in records if r.get("peaks") is not None}
    meta = write_meta(
        directory,
        KIND,
        FORMAT_VERSION,
        config,
        extra={
            "table": table_name,
            "tracks": len(records),
            **(extra or {}),
            **({"peaks_version": PEAKS_VERSION} if with_peaks else {}),
        },
        fingerprint=fingerprint_of(config, [r["track_id"] for r in records]),
        # Shards never change once written: the checksums of those the last commit listed are kept.
        files=[table_name, *(shard_file(name) for name in live), *(peaks_file(name) for name in sorted(with_peaks))],
        known_checksums=recorded_checksums(directory),
    )
    _collect_garbage(directory, table_name, live)
    return meta


def _write_table(directory: Path, records: list[dict[str, Any]]) -> str:
    """Write ``records`` (sorted by id) as a new track table in ``directory``; returns its file name."""
    table_name = f"tracks-{uuid.uuid4().hex[:12]}.parquet"
    rows = {col: [r.get(col) for r in records] for col in TRACK_COLUMNS}
    table = pa.Table.from_pydict(rows, schema=TRACK_SCHEMA)
    tmp = directory / f".{table_name}.tmp"
    try:
        pq.write_table(table, tmp)
    except BaseException:  # (a full disk) no half-written table is left behind
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(directory / table_name)
    return table_name


def collect_garbage(directory: Path) -> None:
    """Delete the track tables and shards the published meta.json does not reference (what a removal left)."""
    store = FeatureStore(directory)
    _collect_garbage(store.directory, str(store.meta.extra["table"]), set(store._shard_rows))


def _collect_garbage(directory: Path, current_table: str, live_shards: set[str]) -> None:
    for old in directory.glob("tracks-*.parquet"):
        if old.name != current_table:
            old.unlink(missing_ok=True)
    for path in (directory / "shards").glob("*"):
        if path.name.split(".")[0] not in live_shards:  # <id>.npy, <id>.peaks.npy, <id>.json
            path.unlink(missing_ok=True)
