"""A workspace: one library's artefacts under one folder, so everyday commands need no paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from embedtool.config import DEFAULT_WORKSPACE, ProjectConfig
from embedtool.errors import ConfigError


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
