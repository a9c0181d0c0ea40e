"""A workspace: one library's artefacts under one folder, so everyday commands need no paths."""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from embedtool.config import DEFAULT_WORKSPACE, ProjectConfig
from embedtool.errors import ConfigError, MissingArtefactError, WorkspaceBusyError, WorkspaceUnwritableError

LOCK_FILE = ".embedtool.lock"
LOG_FILE = Path("logs") / "embedtool.log"  # every writing stage's start, end or failure, and embedtool's log
META_FILE = "meta.json"  # the file that makes a folder an artefact (artefacts.META_FILE; a sibling, not imported)
_held: dict[Path, int] = {}  # workspaces this process holds the lock of -> nesting depth (repair runs stages)


@dataclass(frozen=True)
class Workspace:
    root: Path
    source: str = field(default="", compare=False)  # where the path came from, for messages ("--workspace", ...)

    @classmethod
    def at(cls, path: Path | str) -> Workspace:
        """The workspace in folder ``path`` (``~`` expanded, made absolute)."""
        return cls(Path(path).expanduser().resolve())

    @classmethod
    def resolve(cls, explicit: Path | str | None, config: ProjectConfig) -> Workspace:
        """``--workspace`` wins; else ``workspace:`` in embedtool.yaml (relative to that file); else the default.
        A path that exists but is not a folder is refused (ConfigError)."""
        if explicit:
            root, source = Path(explicit).expanduser().resolve(), "--workspace or EMBEDTOOL_WORKSPACE"
        elif config.workspace:
            base = config.path.parent if config.path else Path.cwd()
            root, source = (base / Path(config.workspace).expanduser()).resolve(), f"workspace: in {config.path}"
        else:
            root, source = (Path.cwd() / DEFAULT_WORKSPACE).resolve(), "the default workspace"
        if root.exists() and not root.is_dir():
            raise ConfigError(f"The workspace {root} ({source}) is a file, not a folder: name a folder.")
        return cls(root, source)

    def has_artefacts(self) -> bool:
        """Whether any stage's artefact (a folder with its ``meta.json``) or a finished report is here."""
        if any((d / META_FILE).is_file() for name, d in self.stages().items() if name != "report"):
            return True
        return self.reports.is_dir() and any((d / META_FILE).is_file() for d in self.reports.iterdir())

    def require(self) -> Workspace:
        """This workspace if it holds an artefact; else a :class:`MissingArtefactError` naming the path (and
        where it came from), so a mistyped ``--workspace`` or an audio folder is not taken for an empty library."""
        if self.has_artefacts():
            return self
        where = f" ({self.source})" if self.source else ""
        what = "does not exist" if not self.root.exists() else "is not an embedtool workspace (no artefacts in it)"
        raise MissingArtefactError(
            f"The workspace {self.root}{where} {what}: name the right one with --workspace/-w, or make this one "
            "with `embedtool extract AUDIO_FOLDER`."
        )

    @property
    def features(self) -> Path:
        return self.root / "features"

    @property
    def split(self) -> Path:
        return self.root / "split"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def index(self) -> Path:
        return self.root / "index"

    @property
    def clusters(self) -> Path:
        return self.root / "clusters"

    @property
    def classifier(self) -> Path:
        return self.root / "classifier"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Hold the workspace's write lock while a stage writes to it: a second process that asks for it while
        it is held gets a :class:`WorkspaceBusyError` naming the holder's command and process id. The lock is
        the operating system's (``flock``), so a killed process never leaves it held. Nested use in one process
        (a repair running stages) is allowed."""
        if self.root in _held:
            _held[self.root] += 1
            try:
                yield
            finally:
                _held[self.root] -= 1
            return
        created = not self.root.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise unwritable(self.root, command, exc) from exc
        failed = True
        try:
            with held_lock_file(self.root / LOCK_FILE, command=command) as fh:
                if fh is None:
                    raise WorkspaceBusyError(f"The workspace {self.root} is busy: {_holder(self.root / LOCK_FILE)} "
                                             "is writing to it; run again when it has finished.")  # fmt: skip
                try:
                    info = {"pid": os.getpid(), "command": command, "since": time.strftime("%H:%M:%S")}
                    fh.write(json.dumps(info))
                    fh.flush()
                except OSError as exc:
                    raise unwritable(self.root, command, exc) from exc
                _held[self.root] = 1
                try:
                    yield
                finally:
                    _held.pop(self.root, None)
                failed = False
        finally:
            if failed and created:
                with suppress(OSError):  # a first run that failed leaves no workspace behind
                    shutil.rmtree(self.root / LOG_FILE.parent, ignore_errors=True)
                    remove_empty_tree(self.root)

    @contextmanager
    def run_log(self, stage: str) -> Iterator[None]:
        """Append a long stage's story to ``logs/embedtool.log`` in the workspace: when it started (the command
        line, the process), embedtool's own log messages meanwhile, and how it ended (finished after N s, failed
        with the error, interrupted). What scrolled past in a terminal, or never showed under nohup, stays."""
        path = self.root / LOG_FILE
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not inside(path.parent, self.root):
                raise OSError(errno.ELOOP, "logs/ leads outside the workspace", str(path.parent))
            stream = os.fdopen(open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a", encoding="utf-8")
            handler: logging.Handler | None = logging.StreamHandler(stream)
        except OSError:
            # a read-only or full disk (the stage itself says what is wrong), or a log that is a symlink: a file
            # out of the workspace is never appended to
            handler = None
        if handler is None:
            yield
            return
        handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(name)s %(levelname)s: %(message)s"))
        logger = logging.getLogger("embedtool")
        level = logger.level
        logger.addHandler(handler)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)
        run_logger = logging.getLogger(f"embedtool.{stage}")
        started = time.perf_counter()
        run_logger.info("started: %s", " ".join(sys.argv) or stage)
        try:
            yield
        except KeyboardInterrupt:
            run_logger.info("interrupted after %.1f s", time.perf_counter() - started)
            raise
        except BaseException as exc:
            run_logger.info("failed after %.1f s: %s: %s", time.perf_counter() - started, type(exc).__name__, exc)
            raise
        else:
            run_logger.info("finished in %.1f s", time.perf_counter() - started)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
            handler.close()
            stream.close()

    def stages(self) -> dict[str, Path]:
        return {
            "features": self.features,
            "split": self.split,
            "model": self.model,
            "embeddings": self.embeddings,
            "index": self.index,
            "clusters": self.clusters,
            "classifier": self.classifier,
            "report": self.reports,
        }


def open_no_follow(path: Path, flags: int, mode: int = 0o666) -> int:
    """``os.open`` that refuses a symlink at ``path`` itself (``O_NOFOLLOW``: ELOOP), for files embedtool appends
    to or truncates in place in a workspace (its log, its lock): a link planted there must not lead the write to
    a file outside the workspace."""
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), mode)


def inside(path: Path, root: Path) -> bool:
    """Whether ``path``, with every symlink resolved, lies in ``root`` (also resolved)."""
    try:
        return Path(path).resolve().is_relative_to(Path(root).resolve())
    except OSError:
        return False


def unwritable(root: Path, command: str, exc: OSError) -> WorkspaceUnwritableError:
    """The one-line error for a workspace whose lock cannot be taken because the disk refuses writes."""
    why = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is used up",
        errno.EROFS: "it is on a read-only file system",
        errno.EACCES: "no permission to write there",
        errno.EPERM: "no permission to write there",
        errno.EFBIG: "the file size limit (ulimit -f) refuses writes",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    then = {errno.ENOSPC: "Free some space", errno.EDQUOT: "Free some space", errno.EFBIG: "Raise the limit"}.get(
        exc.errno or 0, "Use a writable folder (-w)"
    )
    what = f"`embedtool {command}`" if command else "The command"
    return WorkspaceUnwritableError(
        f"Cannot write to the workspace {root}: {why}. {what} did not start; nothing in the workspace was "
        f"changed or damaged. {then} and run it again."
    )


@contextmanager
def held_lock_file(path: Path, mode: str = "a+", command: str = "") -> Iterator[IO[str] | None]:
    """An exclusive ``flock`` on ``path``, or None when another process holds it. The file is removed on release
    (so no lock file stays behind after a run, failed or not); a lock taken on a file another process removed
    meanwhile is retried on the new one."""
    while True:
        try:
            fd = open_no_follow(path, os.O_RDWR | os.O_CREAT | (os.O_APPEND if "a" in mode else 0))
            fh = open(fd, mode, closefd=True)
        except OSError as exc:
            if exc.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM):
                raise unwritable(path.parent, command, exc) from exc
            if exc.errno == errno.ELOOP:  # a symlink planted as the lock: never truncate what it leads to
                raise WorkspaceUnwritableError(
                    f"{path} is a symbolic link; embedtool will not write through it. Remove it and run again."
                ) from exc
            raise
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            yield None
            return
        try:
            same = os.fstat(fh.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        fh.close()  # the holder removed this file as we opened it: lock the one now at `path`
    try:
        fh.seek(0)
        fh.truncate(0)
        yield fh
    finally:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        fcntl.flock(fh, fcntl.LOCK_UN)
        with suppress(OSError):  # (a lock note the disk refused stays unwritten: closing must not raise it again)
            fh.close()


def remove_empty_tree(root: Path) -> None:
    """Remove ``root`` if it holds nothing but empty folders (what a failed first run leaves)."""
    if any(p.is_file() or p.is_symlink() for p in root.rglob("*")):
        return
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        folder.rmdir()
    root.rmdir()


def _holder(lock_file: Path) -> str:
    """Who holds a workspace lock, from what the holder wrote in the lock file."""
    try:
        info = json.loads(lock_file.read_text())
        return f"`embedtool {info['command']}` (process {info['pid']}, since {info['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another embedtool process"
