"""`extract`: audio files -> the features artefact (log-Mel matrices + track table), incremental and resumable.

A run:

1. finds the audio under the given roots (:mod:`embedtool.audio.discover`) and their labels;
2. reuses every track whose file is unchanged (same path, size and mtime; no re-hashing) from the current
   table or from complete shards a killed run left behind;
3. plans the other files as tasks (largest first; each about ``flush_every_s`` seconds of work and at most
   ``max_shard_mb`` of features) and runs them on an engine (:mod:`embedtool.engine`: local worker processes or
   Ray). A task hashes each file (the hash is the stable track id), skips content already extracted, decodes and
   featurises the rest (one torch thread each) and writes its own shards, then returns small records: the track
   descriptions, the files it could not use and why, the CPU time. A task that fails or whose worker dies fails
   its files (listed, and tried again by the next run); the run goes on;
4. settles every file in path order: content seen under an earlier path is a duplicate (the first path in sorted
   order is kept), content seen before under a since-renamed path is reused;
5. publishes the new table and ``meta.json`` (the swap that makes the run visible), then deletes shards that
   nothing references. Files that failed are listed in ``errors.json`` with the reason.

Only the driver commits. Killed at any point before step 5, the previous artefact stays as it was; the next run
picks up the complete shards of the finished tasks. The plan depends only on the files, the options and the number
of workers, so both engines write the same shards and tables for the same input.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedtool.artefacts import META_FILE, atomic_write_json, check_free_space, dir_size_bytes, settings_differences
from embedtool.audio.decode import declared_duration_s
from embedtool.audio.discover import FoundFile, discover_audio
from embedtool.audio.peaks import PeakTracker
from embedtool.audio.settings import PEAKS_VERSION, FeatureSettings
from embedtool.config import settings_dict
from embedtool.engine import Engine, EngineOptions, TaskFailure, open_engine
from embedtool.errors import DiskSpaceError, InputError
from embedtool.features import store
from embedtool.features.frontend import featurise_file
from embedtool.features.labels import LabelTable, read_labels_file
from embedtool.features.options import ExtractOptions
from embedtool.threads import fixed_threads, threads_now, usable_cpus
from embedtool.workspace import held_lock_file, remove_empty_tree

ERRORS_FILE = "errors.json"
LOCK_FILE = ".extract.lock"
HASH_CHUNK = 1 << 20
# For the space estimate of a file whose header gives no duration: compressed audio at 128 kbit/s or more.
COMPRESSED_BYTES_PER_S = 16_000
# Planning tasks: decoding and featurising run at about 250x real time on one core (docs/benchmarks.md), plus a
# fixed cost per file; a task holds about ``flush_every_s`` seconds of that work, so a killed run loses at most
# about that much per worker. With several workers a small run is cut into at least TASKS_PER_WORKER tasks each.
NOMINAL_SPEED = 200.0
PER_FILE_S = 0.01
FILES_PER_TASK = 256
TASKS_PER_WORKER = 4


@dataclass
class ExtractProgress:
    """What the progress callback sees after each file (and once at the start, with ``files_total``)."""

    files_total: int
    files_seen: int = 0  # done + unchanged + skipped + failed so far
    done: int = 0
    unchanged: int = 0
    skipped: int = 0
    failed: int = 0
    audio_seconds: float = 0.0  # audio newly extracted so far
    bytes_written: int = 0
    last_path: str = ""
    phase: str = "scan"  # "scan", "extract", "commit"


@dataclass
class ExtractReport:
    done: int = 0  # files newly extracted
    unchanged: int = 0  # files reused from earlier runs (incl. renamed content and resumed shards)
    skipped: int = 0  # duplicates, silent and too-short files
    failed: int = 0  # files that could not be decoded
    removed: int = 0  # tracks dropped because their file is gone
    removed_paths: list[str] = field(default_factory=list)  # ... and their paths
    roots: list[str] = field(default_factory=list)  # the library's roots after this run
    missing_roots: list[str] = field(default_factory=list)  # remembered roots not found: their tracks kept
    kept_unscanned: int = 0  # tracks kept from missing roots (dropped with prune)
    tracks: int = 0  # tracks in the published artefact
    hours: float = 0.0  # audio newly extracted in this run
    total_hours: float = 0.0  # audio in the published artefact
    bytes_written: int = 0  # feature bytes written by this run
    total_bytes: int = 0  # size of the features folder afterwards
    elapsed_s: float = 0.0
    featurise_cpu_s: float = 0.0  # CPU seconds spent decoding and featurising, summed over workers
    jobs: int = 1  # workers the engine ran tasks on
    engine: str = "local"  # where the tasks ran (see embedtool.engine)
    tasks: int = 0  # tasks run
    tasks_failed: int = 0  # tasks that raised or whose worker died (their files are counted as failed)
    full_rebuild_reason: str | None = None  # why earlier results could not be reused, if so
    labelled: int = 0  # published tracks with a label
    labels_unmatched: list[str] = field(default_factory=list)  # labels-file paths that matched no file found
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): skipped and failed files
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (duplicate path, kept path)
    fingerprint: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["errors"] = [{"path": p, "reason": r} for p, r in self.errors]
        out["duplicates"] = [{"path": p, "kept": k} for p, k in self.duplicates]
        return out


def file_hash(path: Path) -> str:
    """The stable track id: blake2b (64 bits, hex) of the file's bytes."""
    digest = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


# --- the per-file work (runs in worker processes) ---------------------------------------------------------


def _featurise_timed(*args: Any) -> tuple[tuple[str, Any], float]:
    """:func:`extract_one` and the CPU seconds it took in its process (for the report)."""
    c0 = time.process_time()
    outcome = extract_one(*args)
    return outcome, time.process_time() - c0


def extract_one(
    path: str,
    settings: FeatureSettings,
    min_duration_s: float,
    silence_db: float,
    block_seconds: float,
    keep_truncated: bool = False,
) -> tuple[str, Any]:
    """("ok", (mel float16, info, fingerprint peaks)) | ("skipped", reason) | ("failed", reason) for one file. A
    file cut short fails ("truncated (decoded X s of Y s)") unless ``keep_truncated``. The fingerprint peaks
    (``embedtool.audio.peaks``) come from the same decoded blocks as the features: no second decode."""
    peak = [0.0]
    fingerprint_peaks = PeakTracker(settings.sample_rate)

    def watch(block: np.ndarray) -> None:
        if len(block):
            peak[0] = max(peak[0], float(np.max(np.abs(block))))
        fingerprint_peaks.push(block)

    try:
        mel, info = featurise_file(
            path, settings, block_seconds=block_seconds, on_block=watch, allow_truncated=keep_truncated
        )
    except InputError as exc:
        return "failed", _reason(str(exc), path)
    except MemoryError:
        return "failed", "out of memory while decoding"
    except Exception as exc:  # a decoder bug on one odd file must not end the run; report it instead
        return "failed", f"unexpected {type(exc).__name__}: {exc}"
    if info.duration_s < min_duration_s or len(mel) == 0:
        return "skipped", f"too short ({info.duration_s:.3f} s; minimum {min_duration_s:g} s)"
    level_db = 20 * np.log10(peak[0]) if peak[0] > 0 else -np.inf
    if level_db < silence_db:
        return "skipped", f"silent (peak {level_db:.0f} dBFS, threshold {silence_db:g} dBFS)"
    return "ok", (mel, info, fingerprint_peaks.finish())


def _reason(message: str, path: str) -> str:
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


@dataclass
class _ExtractJob:
    """What every task of a run shares (sent once to each worker)."""

    features_dir: Path
    settings: FeatureSettings
    args: tuple  # extract_one's (min_duration_s, silence_db, block_seconds, keep_truncated)
    known_ids: np.ndarray  # sorted uint64 track ids already extracted: such content is reused, not decoded
    max_shard_bytes: int
    shard_per_file: bool  # every file its own shard (flush_every_s 0)


def _id_number(track_id: str) -> int | None:
    try:
        return int(track_id, 16) if len(track_id) == 16 else None
    except ValueError:
        return None


def _known_ids(track_ids: Sequence[str]) -> np.ndarray:
    numbers = {n for n in map(_id_number, track_ids) if n is not None}
    return np.array(sorted(numbers), dtype=np.uint64)


def _is_known(known: np.ndarray, track_id: str) -> bool:
    number = _id_number(track_id)
    if number is None or not len(known):
        return False
    at = int(np.searchsorted(known, np.uint64(number)))
    return at < len(known) and int(known[at]) == number


def _extract_task(job: _ExtractJob, files: list[dict[str, Any]]) -> dict[str, Any]:
    """One task (in a worker): hash, decode and featurise ``files`` (descriptions from the plan), writing their
    matrices as this task's own shards. Returns per file, in order, ``(status, track_id, payload)``: "ok" with the
    full record (shard and offset included), "known" (content already extracted: not decoded), "skipped" or
    "failed" with the reason; and the CPU seconds and feature bytes the task spent and wrote. A bad file is a
    record, never an exception; an exception (a full disk) leaves the shards written so far complete."""
    writer = store.ShardWriter(job.features_dir, job.settings, max_shard_bytes=job.max_shard_bytes)
    outcomes: list[tuple[str, str | None, Any]] = []
    added: list[int] = []  # positions in outcomes of the tracks given to the writer, in order
    seen: set[str] = set()
    cpu_s = 0.0
    for desc in files:
        path = desc["path"]
        c0 = time.process_time()
        try:
            track_id = file_hash(Path(path))
        except OSError as exc:
            reason = "unreadable (permission denied)" if isinstance(exc, PermissionError) else str(exc)
            outcomes.append(("failed", None, reason))
            continue
        finally:
            cpu_s += time.process_time() - c0
        if track_id in seen or _is_known(job.known_ids, track_id):
            outcomes.append(("known", track_id, None))  # the driver settles it: reused or a duplicate
            seen.add(track_id)
            continue
        seen.add(track_id)
        (status, payload), spent = _featurise_timed(path, job.settings, *job.args)
        cpu_s += spent
        if status != "ok":
            outcomes.append((status, track_id, payload))
            continue
        mel, info, peaks = payload
        record = {
            **desc,
            "track_id": track_id,
            "duration_s": float(info.duration_s),
            "native_sample_rate": int(info.native_sample_rate),
            "channels": int(info.channels),
        }
        writer.add(record, mel, peaks)
        added.append(len(outcomes))
        # kept under --keep-truncated: still said
        note = f"{info.truncated}: the decoded part kept (--keep-truncated)" if info.truncated else None
        if note is None and info.warnings:  # decoded whole, but the decoder complained (libmpg123 on an mp3)
            note = f"decoded, with the decoder's warnings: {info.warnings}"
        outcomes.append(("ok", track_id, note))
        if job.shard_per_file:
            writer.flush()
    writer.flush()
    for position, record in zip(added, writer.completed, strict=True):
        outcomes[position] = ("ok", record["track_id"], (record, outcomes[position][2]))
    return {"files": outcomes, "cpu_s": cpu_s, "bytes": writer.bytes_written}


# --- the run ---------------------------------------------------------------------------------------------


def _previous_records(features_dir: Path, settings: FeatureSettings) -> tuple[list[dict], dict | None, str | None]:
    """Records of the current artefact if made with these settings, its meta extra, and why not if not."""
    if not (features_dir / META_FILE).is_file():
        return [], None, None
    try:
        current = store.FeatureStore(features_dir)
    except Exception as exc:  # an unreadable old artefact is rebuilt, not fatal
        return [], None, f"the existing features artefact is unreadable ({exc})"
    if store.settings_fingerprint(current.settings) != store.settings_fingerprint(settings):
        diffs = settings_differences(settings_dict(current.settings), settings_dict(settings))
        return [], current.meta.extra, "feature settings changed (" + "; ".join(diffs) + ")"
    if len(current) and not current.has_peaks():
        old = current.peaks_version  # 1 where not recorded, so features from before the peaks land below
        why = f"the fingerprint peaks were picked by another version (v{old}, now v{PEAKS_VERSION})"
        if old == PEAKS_VERSION:
            why = "the features were made before fingerprint peaks were stored with them"
        return [], current.meta.extra, why
    return current.tracks, current.meta.extra, None


def run_extract(
    roots: list[Path],
    features_dir: Path,
    settings: FeatureSettings,
    options: ExtractOptions,
    progress: Callable[[ExtractProgress], None] | None = None,
    engine: EngineOptions | None = None,
) -> ExtractReport:
    """Extract log-Mel features of the audio under ``roots`` into ``features_dir`` (see the module docstring), with
    the tasks on ``engine`` (default: local worker processes, ``options.jobs`` of them).

    Raises :class:`InputError` when nothing usable came out, or when a file failed under ``options.strict``.
    """
    settings.validate()
    options.validate()
    features_dir = Path(features_dir)
    features_dir.mkdir(parents=True, exist_ok=True)
    # Two runs on one workspace would delete each other's new shards when publishing: one at a time.
    created = not any(features_dir.iterdir())
    try:
        with held_lock_file(features_dir / LOCK_FILE, command="extract") as lock:
            if lock is None:
                raise InputError(f"Another `embedtool extract` is writing to {features_dir}; wait for it to finish.")
            return _run_extract(roots, features_dir, settings, options, progress, engine)
    except BaseException:
        if created:  # a first run that failed leaves no empty features folder
            with contextlib.suppress(OSError):
                remove_empty_tree(features_dir)
        raise


def _run_extract(
    roots: list[Path],
    features_dir: Path,
    settings: FeatureSettings,
    options: ExtractOptions,
    progress: Callable[[ExtractProgress], None] | None,
    engine: EngineOptions | None = None,
) -> ExtractReport:
    """The steps of a run (see the module docstring): plan, featurise, settle, publish."""
    run = _ExtractRun(features_dir, settings, options, progress, engine)
    roots = run.resolve_roots([Path(os.path.abspath(os.path.expanduser(r))) for r in roots])
    unusable: list[tuple[str, str]] = []  # (path, reason): what discovery could not look at
    files = discover_audio(roots, follow_symlinks=options.follow_symlinks, skipped=unusable)
    if not files:
        listed = f" (skipped: {'; '.join(f'{p}: {r}' for p, r in unusable[:3])})" if unusable else ""
        raise InputError(f"No audio files found under {', '.join(str(r) for r in roots)}{listed}")
    run.plan(files, unusable)
    run.check_space()
    try:
        run.featurise()
        run.settle()
        return run.publish()
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise run.out_of_space() from exc


class _ExtractRun:
    """One extract run's state: what is kept, what is queued, what failed, the report and the progress."""

    def __init__(
        self,
        features_dir: Path,
        settings: FeatureSettings,
        options: ExtractOptions,
        progress: Callable[[ExtractProgress], None] | None,
        engine: EngineOptions | None = None,
    ):
        self.started = time.perf_counter()
        self.features_dir, self.settings, self.options, self.progress = features_dir, settings, options, progress
        self.engine_options = engine or EngineOptions()
        self.report = ExtractReport(jobs=options.resolved_jobs(), engine=self.engine_options.name)
        self.previous, self.previous_extra, self.rebuild_reason = _previous_records(features_dir, settings)
        self.label_table: LabelTable | None = None  # read in plan(), once the roots hold audio
        self.missing_roots: list[Path] = []
        self.state = ExtractProgress(files_total=0)
        self.kept: dict[str, dict] = {}  # track_id -> final record
        self.kept_path: dict[str, str] = {}  # track_id -> path that claimed it
        # Every file found that could be stat'ed, in path order: (description, the reusable record its path, size
        # and mtime match, or None). Those without one are decoded (``todo``); settle() then walks them all.
        self.entries: list[tuple[dict[str, Any], dict | None]] = []
        self.todo: list[dict[str, Any]] = []  # descriptions of the files to hash and decode
        self.by_id: dict[str, dict] = {}  # reusable records by track id (renamed content)
        self.outcomes: dict[str, tuple[str, str | None, Any]] = {}  # path -> a task's (status, track id, payload)
        self.estimates: dict[str, float] = {}  # path -> estimated seconds of audio (space check, task sizes)
        self.new_records = 0  # tracks written to shards by this run's tasks
        self.bytes_written = 0
        self.errors: list[tuple[str, str]] = []
        self.failed_paths: list[str] = []
        self.planned = {"skipped": 0, "failed": 0}  # files plan() settled as such (unusable, cannot stat)
        self.scan_roots: list[Path] = []

    def resolve_roots(self, given: list[Path]) -> list[Path]:
        """The roots to scan: the remembered ones and those given (only those given with ``replace``). A
        remembered root that is missing is not scanned: its tracks are kept (dropped with ``prune``)."""
        remembered = [Path(r) for r in (self.previous_extra or {}).get("roots") or []]
        if self.options.replace:
            if not given:
                raise InputError("--replace needs the folders that are to make up the library.")
            wanted = given
        else:
            wanted = _outermost(remembered + [r for r in given if r not in remembered])
        if not wanted:
            raise InputError("No audio folder given (e.g. `embedtool extract ~/Music`).")
        self.missing_roots = [r for r in wanted if r not in given and not r.exists()]
        self.report.missing_roots = [str(r) for r in self.missing_roots]
        self.report.roots = [str(r) for r in wanted if not (self.options.prune and r in self.missing_roots)]
        scan = [r for r in wanted if r not in self.missing_roots]
        if not scan:
            missing = ", ".join(str(r) for r in self.missing_roots)
            raise InputError(f"None of the library's folders is there ({missing}): reconnect them, or give a folder.")
        self.scan_roots = scan
        return scan

    def describe(self, found: FoundFile, st: os.stat_result) -> dict[str, Any]:
        table = self.label_table
        entry = table.lookup(found.path) if table is not None else None
        label = entry.label if entry is not None else (None if table is not None else found.folder_label)
        return {
            "path": str(found.path),
            "root": str(found.root),
            "label": label,
            "group": entry.group if entry is not None else None,
            "file_size": int(st.st_size),
            "file_mtime_ns": int(st.st_mtime_ns),
        }

    def seen(self, path: str, kind: str) -> None:
        state = self.state
        setattr(state, kind, getattr(state, kind) + 1)
        state.files_seen += 1
        state.last_path = path
        _notify(self.progress, state)

    def fail(self, path: str, reason: str) -> None:
        self.errors.append((path, reason))
        self.failed_paths.append(path)
        self.seen(path, "failed")

    # --- 1. plan -------------------------------------------------------------------------------------------
    def plan(self, files: list[FoundFile], unusable: Sequence[tuple[str, str]] = ()) -> None:
        """Look at every file without reading it: those whose path, size and mtime match a reusable record are
        unchanged, the others are queued for the tasks (which hash them). ``unusable`` (path, reason) entries that
        discovery could not look at are reported as skipped."""
        self.label_table = read_labels_file(self.options.labels) if self.options.labels else None
        # Earlier work worth keeping: the published table, then complete shards left by a killed run.
        if self.options.overwrite:
            reusable: list[dict] = []
            self.report.full_rebuild_reason = "--overwrite"
        else:
            reusable = list(self.previous) + store.completed_shard_records(self.features_dir, self.settings)
            # (shards from before the fingerprint peaks lack them, and only a decode can add them)
            reusable = [r for r in reusable if r.get("peaks") is not None]
            self.report.full_rebuild_reason = self.rebuild_reason
        by_stat = {(r["path"], r["file_size"], r["file_mtime_ns"]): r for r in reusable}
        self.by_id = {r["track_id"]: r for r in reusable}
        self.state.files_total = len(files) + len(unusable)
        _notify(self.progress, self.state)
        for path, reason in unusable:
            self.errors.append((path, reason))
            self.planned["skipped"] += 1
            self.seen(path, "skipped")
        for found in files:
            path = str(found.path)
            try:
                st = found.path.stat()
            except OSError as exc:
                self.planned["failed"] += 1
                self.fail(path, f"cannot stat: {exc.strerror or exc}")
                continue
            desc = self.describe(found, st)
            old = by_stat.get((path, desc["file_size"], desc["file_mtime_ns"]))
            self.entries.append((desc, old))
            if old is not None:
                self.seen(path, "unchanged")  # (settle() counts again: in rare cases it is a duplicate after all)
            else:
                self.todo.append(desc)

    def keep_unscanned(self) -> None:
        """Tracks of remembered roots that are missing stay as they are, unless ``prune``."""
        if self.options.prune or not self.missing_roots:
            return
        missing = {str(r) for r in self.missing_roots}
        for record in self.previous:
            if record["root"] in missing and record["track_id"] not in self.kept_path:
                self.kept_path[record["track_id"]] = record["path"]
                self.kept[record["track_id"]] = record
                self.report.kept_unscanned += 1

    def check_space(self) -> None:
        """Refuse to start when the features of the files to decode would not fit on the disk (frames per
        second x mels x 2 bytes of float16 per second of audio: ~46 MB per hour with the default settings)."""
        if not self.todo:
            return
        for d in self.todo:
            self.estimates[d["path"]] = declared_duration_s(d["path"]) or d["file_size"] / COMPRESSED_BYTES_PER_S
        seconds = sum(self.estimates.values())
        per_second = self.settings.frames_per_second * self.settings.n_mels * 2
        what = f"the features of {len(self.todo)} audio file(s) (about {seconds / 3600:.2f} h of audio)"
        check_free_space(self.features_dir, int(seconds * per_second), what)

    def out_of_space(self) -> DiskSpaceError:
        """The error for a disk that filled up during the run: what was kept, and how to go on."""
        return DiskSpaceError(
            f"The disk holding {self.features_dir} is full: extraction stopped. Kept: {self.new_records} newly "
            f"extracted track(s) in finished shards ({self.bytes_written / 1e6:,.1f} MB); the file being written was "
            "removed and the published features are as before. Free some space and run `embedtool extract` again: "
            "it resumes from the kept shards."
        )

    # --- 2. featurise --------------------------------------------------------------------------------------
    def tasks(self, workers: int) -> list[list[dict[str, Any]]]:
        """The files to decode cut into tasks, largest first (so no worker is left with a long file while the others
        are idle at the end): each about ``flush_every_s`` seconds of work (one file each when 0) and at most
        ``max_shard_mb`` of features, and with several workers at least TASKS_PER_WORKER tasks each when there are
        files enough. Depends only on the files, the options and ``workers``: every engine makes the same plan."""
        options = self.options
        per_second = self.settings.frames_per_second * self.settings.n_mels * 2
        max_bytes = options.max_shard_mb * 1024 * 1024
        cap = FILES_PER_TASK
        if workers > 1:
            cap = min(cap, max(1, math.ceil(len(self.todo) / (workers * TASKS_PER_WORKER))))

        def seconds(desc: dict[str, Any]) -> float:
            return self.estimates.get(desc["path"]) or desc["file_size"] / COMPRESSED_BYTES_PER_S

        ordered = sorted(self.todo, key=lambda d: (-seconds(d), d["path"]))
        tasks: list[list[dict[str, Any]]] = []
        current: list[dict[str, Any]] = []
        work_s = size = 0.0
        for desc in ordered:
            file_work, file_bytes = seconds(desc) / NOMINAL_SPEED + PER_FILE_S, seconds(desc) * per_second
            full = len(current) >= cap or work_s + file_work > options.flush_every_s or size + file_bytes > max_bytes
            if current and full:
                tasks.append(current)
                current, work_s, size = [], 0.0, 0.0
            current.append(desc)
            work_s, size = work_s + file_work, size + file_bytes
        if current:
            tasks.append(current)
        return tasks

    def featurise(self) -> None:
        """Hash, decode and featurise what is new or changed: tasks on the engine, each writing its own shards."""
        options = self.options
        self.state.phase = "extract"
        _notify(self.progress, self.state)
        if not self.todo:
            return
        (self.features_dir / "shards").mkdir(parents=True, exist_ok=True)
        adaptive = self.engine_options.name != "ray" and not options.jobs and fixed_threads() is None
        if self.engine_options.name == "ray":
            jobs = options.jobs
        elif adaptive:  # workers for every usable CPU; as many busy at once as are free now, looked at again
            jobs = max(1, int(usable_cpus()))
        else:
            jobs = options.resolved_jobs()
        with open_engine(self.engine_options, jobs, preload=["embedtool.audio.melspec"]) as engine:
            if adaptive and hasattr(engine, "limit"):
                engine.limit = lambda: threads_now("extract")
            engine.check_paths(readable=self.scan_roots, writable=[self.features_dir / "shards"])
            self.run_tasks(engine)

    def run_tasks(self, engine: Engine) -> None:
        options = self.options
        tasks = self.tasks(engine.workers)
        self.report.jobs, self.report.tasks = engine.workers, len(tasks)
        job = _ExtractJob(
            features_dir=self.features_dir,
            settings=self.settings,
            args=(options.min_duration_s, options.silence_db, options.block_seconds, options.keep_truncated),
            # Content a task needs not decode: what earlier runs extracted (renamed files, duplicates of kept ones).
            known_ids=_known_ids(list(self.by_id)),
            max_shard_bytes=options.max_shard_mb * 1024 * 1024,
            shard_per_file=options.flush_every_s == 0,
        )

        def on_result(index: int, result: Any) -> None:
            self.finish(tasks[index], result)

        engine.run(_extract_task, tasks, on_result, shared=job, threads=1)

    def finish(self, files: list[dict[str, Any]], result: dict[str, Any] | TaskFailure) -> None:
        """One task's outcome (in the driver): note each file's outcome for settle() and count it for the progress.
        A failed task fails its files (a full disk ends the run: nothing after it could be written)."""
        if isinstance(result, TaskFailure):
            error = result.error
            if isinstance(error, OSError) and error.errno == errno.ENOSPC:
                raise error
            self.report.tasks_failed += 1
            reason = f"{result.describe()}; run extract again to retry"
            outcomes: list[tuple[str, str | None, Any]] = [("failed", None, reason)] * len(files)
        else:
            outcomes = result["files"]
            self.report.featurise_cpu_s += result["cpu_s"]
            self.bytes_written += result["bytes"]
        for desc, (status, track_id, payload) in zip(files, outcomes, strict=True):
            self.outcomes[desc["path"]] = (status, track_id, payload)
            if status == "ok":
                self.new_records += 1
                self.state.audio_seconds += float(payload[0]["duration_s"])
            self.state.bytes_written = self.bytes_written
            self.seen(desc["path"], {"ok": "done", "known": "unchanged"}.get(status, status))

    # --- 3. settle -----------------------------------------------------------------------------------------
    def settle(self) -> None:
        """Every file in path order, the paths the library already holds first: the first path with a content id
        claims it (a later one is a duplicate, even when the first could not be used; a copy of a library file
        elsewhere never takes over its track or label); its record is the new one, the unchanged one or the one of
        the same content under another path. The counts of the progress are set to what settling found."""
        state = self.state
        counts = {"done": 0, "unchanged": 0, **self.planned}
        claimed: dict[str, str] = {}
        settled = [
            (desc, old, ("unchanged", old["track_id"], None) if old else self.outcomes[desc["path"]])
            for desc, old in self.entries
        ]
        # A track the library already holds keeps its path (and so its label) while that file is still there:
        # the same content found elsewhere (a copied folder) is the duplicate, whatever the sort order says.
        incumbent = {r["track_id"]: r["path"] for r in self.previous}
        settled.sort(key=lambda e: 0 if e[2][1] is not None and incumbent.get(e[2][1]) == e[0]["path"] else 1)
        for desc, old, (status, track_id, payload) in settled:
            path = desc["path"]
            if track_id is None:  # failed before it was hashed
                self.errors.append((path, payload))
                self.failed_paths.append(path)
                counts["failed"] += 1
                continue
            if track_id in claimed:
                self.errors.append((path, f"duplicate of {claimed[track_id]} (same content)"))
                self.report.duplicates.append((path, claimed[track_id]))
                counts["skipped"] += 1
                continue
            claimed[track_id] = path
            if status in ("skipped", "failed"):
                self.errors.append((path, payload))
                if status == "failed":
                    self.failed_paths.append(path)
                counts[status] += 1
                continue
            if status == "ok":
                record, note = payload
                if note:
                    self.errors.append((path, note))
                counts["done"] += 1
            else:  # unchanged: by path, size and mtime (old), or by content (known)
                record = {**(old or self.by_id[track_id]), **desc, "track_id": track_id}
                counts["unchanged"] += 1
            self.kept_path[track_id] = path
            self.kept[track_id] = record
        for kind, count in counts.items():
            setattr(state, kind, count)
        self.keep_unscanned()

    # --- 3. publish ----------------------------------------------------------------------------------------
    def publish(self) -> ExtractReport:
        """The report, errors.json, then the new table and meta.json (the swap that makes the run visible)."""
        report, state, label_table, features_dir = self.report, self.state, self.label_table, self.features_dir
        self.errors.sort()
        report.errors = self.errors
        report.failed, report.skipped = state.failed, state.skipped
        report.done, report.unchanged = state.done, state.unchanged
        report.hours = state.audio_seconds / 3600
        report.bytes_written = self.bytes_written
        records = list(self.kept.values())
        report.tracks = len(records)
        report.labelled = sum(1 for r in records if r["label"] is not None)
        report.labels_unmatched = label_table.unmatched() if label_table is not None else []
        report.total_hours = sum(r["duration_s"] for r in records) / 3600
        removed = [r for r in self.previous if r["track_id"] not in self.kept]
        report.removed = len(removed)
        report.removed_paths = sorted(r["path"] for r in removed)

        if not records and not (features_dir / META_FILE).is_file():
            # A first run that found nothing usable leaves no features folder: the reasons are in the message.
            shown = "; ".join(f"{p}: {r}" for p, r in self.errors[:3]) or "none given"
            more = f" (and {len(self.errors) - 3} more)" if len(self.errors) > 3 else ""
            raise InputError(
                f"No usable audio: {report.failed} file(s) failed and {report.skipped} were skipped; nothing was "
                f"written. {shown}{more}"
            )
        atomic_write_json(features_dir / ERRORS_FILE, report.to_dict()["errors"])
        if not records:
            raise InputError(
                f"No usable audio: {report.failed} file(s) failed and {report.skipped} were skipped "
                f"(reasons in {features_dir / ERRORS_FILE})"
            )
        if self.options.strict and report.failed:
            first = next(f"{p}: {r}" for p, r in self.errors if p in self.failed_paths)
            raise InputError(
                f"{report.failed} file(s) failed under --strict (nothing published; reasons in "
                f"{features_dir / ERRORS_FILE}); first: {first}"
            )

        state.phase = "commit"
        _notify(self.progress, state)
        meta = store.commit(
            features_dir,
            records,
            self.settings,
            extra={
                "roots": report.roots,
                "labels_file": str(label_table.source) if label_table is not None else None,
                "hours": round(report.total_hours, 6),
                "labelled": report.labelled,
            },
        )
        report.fingerprint = meta.fingerprint
        report.total_bytes = dir_size_bytes(features_dir)
        report.elapsed_s = time.perf_counter() - self.started
        return report


def _outermost(roots: list[Path]) -> list[Path]:
    """The roots that lie inside no other root, in order: a folder given inside a remembered one is covered by it
    (and its files keep the labels the outer folder gives them); a folder around remembered ones takes them in."""
    return [r for r in roots if not any(other != r and r.is_relative_to(other) for other in roots)]


def _notify(progress: Callable[[ExtractProgress], None] | None, state: ExtractProgress) -> None:
    if progress is not None:
        progress(state)
