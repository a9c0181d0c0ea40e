"""A workspace: one library's artefacts under one folder, so everyday commands need no paths."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from embedtool.config import DEFAULT_WORKSPACE, ProjectConfig
from embedtool.errors import ConfigError, WorkspaceBusyError

LOCK_FILE = ".embedtool.lock"
_held: dict[Path, int] = {}  # workspaces this process holds the lock of -> nesting depth (repair runs stages)


@dataclass(frozen=True)
class Workspace:
    root: Path

    @classmethod
    def at(cls, path: Path | str) -> Workspace:
        """The workspace in folder ``path`` (``~`` expanded, made absolute)."""
        return cls(Path(path).expanduser().resolve())

    @classmethod
    def resolve(cls, explicit: Path | str | None, config: ProjectConfig) -> Workspace:
        """``--workspace`` wins; else ``workspace:`` in embedtool.yaml (relative to that file); else the default.
        A path that exists but is not a folder is refused (ConfigError)."""
        if explicit:
            root, source = Path(explicit).expanduser().resolve(), "--workspace"
        elif config.workspace:
            base = config.path.parent if config.path else Path.cwd()
            root, source = (base / Path(config.workspace).expanduser()).resolve(), f"workspace: in {config.path}"
        else:
            root, source = (Path.cwd() / DEFAULT_WORKSPACE).resolve(), "the default workspace"
        if root.exists() and not root.is_dir():
            raise ConfigError(f"The workspace {root} ({source}) is a file, not a folder: name a folder.")
        return cls(root)

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
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.seek(0)
                raise WorkspaceBusyError(f"The workspace {self.root} is busy: {_holder(fh.read())} is writing to it; "
                                         "run again when it has finished.") from None  # fmt: skip
            try:
                fh.truncate(0)
                fh.write(json.dumps({"pid": os.getpid(), "command": command, "since": time.strftime("%H:%M:%S")}))
                fh.flush()
                _held[self.root] = 1
                yield
            finally:
                _held.pop(self.root, None)
                fh.truncate(0)
                fcntl.flock(fh, fcntl.LOCK_UN)

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


def _holder(text: str) -> str:
    """Who holds a workspace lock, from what the holder wrote in the lock file."""
    try:
        info = json.loads(text)
        return f"`embedtool {info['command']}` (process {info['pid']}, since {info['since']})"
    except (ValueError, KeyError, TypeError):
        return "another embedtool process"
