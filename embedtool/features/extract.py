"""`extract`: audio files -> the features artefact (log-Mel matrices + track table), incremental and resumable.

A run:

1. finds the audio under the given roots (:mod:`embedtool.audio.discover`) and their labels;
2. reuses every track whose file is unchanged (same path, size and mtime; no re-hashing) from the current
   table or from complete shards a killed run left behind;
3. hashes the other files (the hash is the stable track id); content already seen under another path is a
   duplicate (the first path in sorted order is kept), content seen before under a since-renamed path is
   reused without decoding;
4. decodes and featurises the rest in worker processes (one torch thread each), writing shards as it goes
   (at least every ``flush_every_s`` seconds, so a killed run keeps most of its work);
5. publishes the new table and ``meta.json`` (the swap that makes the run visible), then deletes shards that
   nothing references. Files that failed are listed in ``errors.json`` with the reason.

Killed at any point before step 5, the previous artefact stays as it was; the next run picks up the shards.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import errno
import hashlib
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedtool.artefacts import META_FILE, atomic_write_json, check_free_space, dir_size_bytes, settings_differences
from embedtool.audio.decode import declared_duration_s
from embedtool.audio.discover import FoundFile, discover_audio
from embedtool.audio.settings import FeatureSettings
from embedtool.config import settings_dict
from embedtool.errors import DiskSpaceError, InputError
from embedtool.features import store
from embedtool.features.frontend import featurise_file
from embedtool.features.labels import LabelTable, read_labels_file
from embedtool.features.options import ExtractOptions
from embedtool.workspace import held_lock_file, remove_empty_tree

ERRORS_FILE = "errors.json"
LOCK_FILE = ".extract.lock"
HASH_CHUNK = 1 << 20
# For the space estimate of a file whose header gives no duration: compressed audio at 128 kbit/s or more.
COMPRESSED_BYTES_PER_S = 16_000


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
    jobs: int = 1
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


def _worker_init(parent_pid: int) -> None:
    # Ctrl-C goes to the whole process group: only the parent handles it (and stops the workers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    torch.set_num_threads(1)
    # Workers are children of the forkserver, not of the run: if the run is killed (kill -9), nothing tells
    # them, so each watches the run's process and leaves when it is gone.
    threading.Thread(target=_exit_with, args=(parent_pid,), daemon=True).start()


def _exit_with(pid: int) -> None:
    while True:
        time.sleep(1.0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass


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
    """("ok", (mel float16, info)) | ("skipped", reason) | ("failed", reason) for one file. A file cut short
    fails ("truncated (decoded X s of Y s)") unless ``keep_truncated``."""
    peak = [0.0]

    def watch(block: np.ndarray) -> None:
        if len(block):
            peak[0] = max(peak[0], float(np.max(np.abs(block))))

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
    return "ok", (mel, info)


def _reason(message: str, path: str) -> str:
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


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
    return current.tracks, current.meta.extra, None


def run_extract(
    roots: list[Path],
    features_dir: Path,
    settings: FeatureSettings,
    options: ExtractOptions,
    progress: Callable[[ExtractProgress], None] | None = None,
) -> ExtractReport:
    """Extract log-Mel features of the audio under ``roots`` into ``features_dir`` (see the module docstring).

    Raises :class:`InputError` when nothing usable came out, or when a file failed under ``options.strict``.
    """
    settings.validate()
    options.validate()
    features_dir = Path(features_dir)
    features_dir.mkdir(parents=True, exist_ok=True)
    # Two runs on one workspace would delete each other's new shards when publishing: one at a time.
    created = not any(features_dir.iterdir())
    try:
        with held_lock_file(features_dir / LOCK_FILE) as lock:
            if lock is None:
                raise InputError(f"Another `embedtool extract` is writing to {features_dir}; wait for it to finish.")
            return _run_extract(roots, features_dir, settings, options, progress)
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
) -> ExtractReport:
    """The three steps of a run (see the module docstring): plan, featurise, publish."""
    run = _ExtractRun(features_dir, settings, options, progress)
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
    ):
        self.started = time.perf_counter()
        self.features_dir, self.settings, self.options, self.progress = features_dir, settings, options, progress
        self.report = ExtractReport(jobs=options.resolved_jobs())
        self.previous, self.previous_extra, self.rebuild_reason = _previous_records(features_dir, settings)
        self.label_table: LabelTable | None = None  # read in plan(), once the roots hold audio
        self.missing_roots: list[Path] = []
        self.state = ExtractProgress(files_total=0)
        self.kept: dict[str, dict] = {}  # track_id -> final record
        self.kept_path: dict[str, str] = {}  # track_id -> path that claimed it
        self.todo: list[tuple[str, dict[str, Any]]] = []  # (track id, description) to decode
        self.errors: list[tuple[str, str]] = []
        self.failed_paths: list[str] = []

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
        """Settle every file that needs no decoding and queue the rest, in path order (so which copy of
        duplicate content is kept does not depend on timing). ``unusable`` (path, reason) entries that discovery
        could not look at are reported as skipped."""
        self.label_table = read_labels_file(self.options.labels) if self.options.labels else None
        # Earlier work worth keeping: the published table, then complete shards left by a killed run.
        if self.options.overwrite:
            reusable: list[dict] = []
            self.report.full_rebuild_reason = "--overwrite"
        else:
            reusable = list(self.previous) + store.completed_shard_records(self.features_dir, self.settings)
            self.report.full_rebuild_reason = self.rebuild_reason
        by_stat = {(r["path"], r["file_size"], r["file_mtime_ns"]): r for r in reusable}
        by_id = {r["track_id"]: r for r in reusable}
        self.state.files_total = len(files) + len(unusable)
        _notify(self.progress, self.state)
        for path, reason in unusable:
            self.errors.append((path, reason))
            self.seen(path, "skipped")
        for found in files:
            path = str(found.path)
            try:
                st = found.path.stat()
            except OSError as exc:
                self.fail(path, f"cannot stat: {exc.strerror or exc}")
                continue
            desc = self.describe(found, st)
            old = by_stat.get((path, desc["file_size"], desc["file_mtime_ns"]))
            if old is not None:
                track_id = old["track_id"]
            else:
                try:
                    track_id = file_hash(found.path)
                except OSError as exc:
                    self.fail(path, "unreadable (permission denied)" if isinstance(exc, PermissionError) else str(exc))
                    continue
            if track_id in self.kept_path:
                self.errors.append((path, f"duplicate of {self.kept_path[track_id]} (same content)"))
                self.report.duplicates.append((path, self.kept_path[track_id]))
                self.seen(path, "skipped")
                continue
            self.kept_path[track_id] = path
            reuse = old if old is not None else by_id.get(track_id)
            if reuse is not None:
                self.kept[track_id] = {**reuse, **desc, "track_id": track_id}
                self.seen(path, "unchanged")
            else:
                self.todo.append((track_id, desc))
        self.keep_unscanned()

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
        seconds = sum(declared_duration_s(d["path"]) or d["file_size"] / COMPRESSED_BYTES_PER_S for _, d in self.todo)
        per_second = self.settings.frames_per_second * self.settings.n_mels * 2
        what = f"the features of {len(self.todo)} audio file(s) (about {seconds / 3600:.2f} h of audio)"
        check_free_space(self.features_dir, int(seconds * per_second), what)

    def out_of_space(self) -> DiskSpaceError:
        """The error for a disk that filled up during the run: what was kept, and how to go on."""
        kept = getattr(self, "writer", None)
        tracks = len(kept.completed) if kept is not None else 0
        written = kept.bytes_written if kept is not None else 0
        return DiskSpaceError(
            f"The disk holding {self.features_dir} is full: extraction stopped. Kept: {tracks} newly extracted "
            f"track(s) in finished shards ({written / 1e6:,.1f} MB); the file being written was removed and the "
            "published features are as before. Free some space and run `embedtool extract` again: it resumes "
            "from the kept shards."
        )

    # --- 2. featurise --------------------------------------------------------------------------------------
    def featurise(self) -> None:
        """Decode and featurise what is new or changed (in worker processes), writing shards as it goes."""
        options, settings = self.options, self.settings
        self.state.phase = "extract"
        _notify(self.progress, self.state)
        self.writer = store.ShardWriter(self.features_dir, settings, max_shard_bytes=options.max_shard_mb * 1024 * 1024)
        self.last_flush = time.monotonic()
        args = (options.min_duration_s, options.silence_db, options.block_seconds, options.keep_truncated)
        try:
            if self.report.jobs <= 1 or len(self.todo) <= 1:
                import torch

                threads = torch.get_num_threads()
                torch.set_num_threads(1)  # as in a worker: one file on one core
                try:
                    for track_id, desc in self.todo:
                        self.finish(track_id, desc, _featurise_timed(desc["path"], settings, *args))
                finally:
                    torch.set_num_threads(threads)
            else:
                _run_parallel(self.todo, settings, args, min(self.report.jobs, len(self.todo)), self.finish)
        except BaseException:
            # Keep what is finished (Ctrl-C, an exception from the callback): the next run resumes from it.
            try:
                self.writer.flush()
            except Exception:
                pass
            raise
        self.writer.flush()
        for record in self.writer.completed:
            self.kept[record["track_id"]] = record

    def finish(self, track_id: str, desc: dict[str, Any], timed: tuple[tuple[str, Any], float]) -> None:
        """One file's outcome (in the parent process): a record and its features for the shard writer, or the
        reason it was skipped or failed."""
        (status, payload), cpu_s = timed
        self.report.featurise_cpu_s += cpu_s
        if status != "ok":
            self.errors.append((desc["path"], payload))
            if status == "failed":
                self.failed_paths.append(desc["path"])
            self.kept_path.pop(track_id, None)
            self.seen(desc["path"], status)
            return
        mel, info = payload
        if info.truncated:  # kept under --keep-truncated: still said
            self.errors.append((desc["path"], f"{info.truncated}: the decoded part kept (--keep-truncated)"))
        record = {
            **desc,
            "track_id": track_id,
            "duration_s": float(info.duration_s),
            "native_sample_rate": int(info.native_sample_rate),
            "channels": int(info.channels),
        }
        writer = self.writer
        writer.add(record, mel)
        if time.monotonic() - self.last_flush >= self.options.flush_every_s:
            writer.flush()
            self.last_flush = time.monotonic()
        self.state.audio_seconds += float(info.duration_s)
        self.state.bytes_written = writer.bytes_written + writer.pending_bytes
        self.seen(desc["path"], "done")

    # --- 3. publish ----------------------------------------------------------------------------------------
    def publish(self) -> ExtractReport:
        """The report, errors.json, then the new table and meta.json (the swap that makes the run visible)."""
        report, state, label_table, features_dir = self.report, self.state, self.label_table, self.features_dir
        self.errors.sort()
        report.errors = self.errors
        report.failed, report.skipped = state.failed, state.skipped
        report.done, report.unchanged = state.done, state.unchanged
        report.hours = state.audio_seconds / 3600
        report.bytes_written = self.writer.bytes_written
        records = list(self.kept.values())
        report.tracks = len(records)
        report.labelled = sum(1 for r in records if r["label"] is not None)
        report.labels_unmatched = label_table.unmatched() if label_table is not None else []
        report.total_hours = sum(r["duration_s"] for r in records) / 3600
        removed = [r for r in self.previous if r["track_id"] not in self.kept]
        report.removed = len(removed)
        report.removed_paths = sorted(r["path"] for r in removed)

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


def _run_parallel(
    todo: list[tuple[str, dict[str, Any]]],
    settings: FeatureSettings,
    args: tuple,
    jobs: int,
    finish: Callable[[str, dict[str, Any], tuple[tuple[str, Any], float]], None],
) -> None:
    """Featurise ``todo`` on ``jobs`` processes, handing each outcome to ``finish`` in the parent."""
    # forkserver: workers fork from a clean server that has imported torch once (fast start, no inherited
    # threads), rather than from this process (which may hold OpenMP threads) or from scratch (slow).
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["embedtool.audio.melspec"])
    with _workers_skip_main_module():
        _pool_loop(todo, settings, args, jobs, finish, ctx)


@contextmanager
def _workers_skip_main_module() -> Iterator[None]:
    """Start workers without re-running the caller's ``__main__`` (spawn/forkserver do that by default).

    Workers only need :func:`_featurise_timed`, found by module name. Re-running ``__main__`` in each of
    them costs the start-up of whatever the main script imports and, in a script without an
    ``if __name__ == "__main__"`` guard, would start the extraction again in every worker.
    """
    main = sys.modules["__main__"]
    saved = {name: getattr(main, name) for name in ("__file__", "__spec__") if hasattr(main, name)}
    main.__spec__ = None  # type: ignore[assignment]
    if "__file__" in saved:
        del main.__file__
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(main, name, value)


def _pool_loop(
    todo: list[tuple[str, dict[str, Any]]],
    settings: FeatureSettings,
    args: tuple,
    jobs: int,
    finish: Callable[[str, dict[str, Any], tuple[tuple[str, Any], float]], None],
    ctx: Any,
) -> None:
    pool = cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(),))
    pending: dict[cf.Future, tuple[str, dict[str, Any]]] = {}
    # Largest files first, so that no worker is left with a long file while the others are idle at the end.
    queue = iter(sorted(todo, key=lambda item: -item[1]["file_size"]))
    try:
        while True:
            while len(pending) < 2 * jobs:  # a short queue per worker keeps them busy and memory bounded
                item = next(queue, None)
                if item is None:
                    break
                pending[pool.submit(_featurise_timed, item[1]["path"], settings, *args)] = item
            if not pending:
                break
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in done:
                track_id, desc = pending.pop(future)
                try:
                    outcome = future.result()
                except cf.process.BrokenProcessPool:
                    raise
                except Exception as exc:
                    outcome = (("failed", f"worker error {type(exc).__name__}: {exc}"), 0.0)
                finish(track_id, desc, outcome)
    except BaseException:
        # Stop at once: running workers are killed (their files are simply not done yet).
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _notify(progress: Callable[[ExtractProgress], None] | None, state: ExtractProgress) -> None:
    if progress is not None:
        progress(state)
