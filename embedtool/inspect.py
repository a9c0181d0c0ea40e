"""What a workspace holds: each stage's artefact, its size, and the headline facts of its metadata."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedtool.artefacts import META_FILE, dir_size_bytes, read_meta
from embedtool.errors import EmbedtoolError
from embedtool.workspace import Workspace


@dataclass
class StageStatus:
    name: str
    exists: bool
    size_bytes: int = 0
    created: str = ""
    fingerprint: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    problem: str = ""  # set when the folder exists but its metadata cannot be trusted


@dataclass
class WorkspaceSummary:
    root: str
    stages: list[StageStatus]
    tracks: int = 0
    hours: float = 0.0
    labels: dict[str, int] = field(default_factory=dict)
    feature_settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workspace": self.root,
            "tracks": self.tracks,
            "hours": round(self.hours, 4),
            "labels": self.labels,
            "feature_settings": self.feature_settings,
            "stages": [s.__dict__ for s in self.stages],
        }


def summarise_workspace(workspace: Workspace) -> WorkspaceSummary:
    summary = WorkspaceSummary(root=str(workspace.root), stages=[])
    for kind, directory in workspace.stages().items():
        size_of = directory
        if kind == "report":  # reports/ holds one folder per evaluate run: the newest stands for the stage
            directory = latest_report(directory) or directory
        status = StageStatus(name=kind, exists=(directory / META_FILE).is_file())
        if size_of.exists():
            status.size_bytes = dir_size_bytes(size_of)
        if status.exists:
            try:
                meta = read_meta(directory, kind)
                status.created, status.fingerprint = meta.created, meta.fingerprint
                status.summary = {k: v for k, v in meta.extra.items() if isinstance(v, (int, float, str))}
                if isinstance(meta.extra.get("companion"), dict):  # shown first: it changes what the model is
                    status.summary = {"companion": meta.extra["companion"].get("fingerprint"), **status.summary}
                if "adopted_from" in status.summary:
                    status.summary = {"adopted_from": status.summary.pop("adopted_from"), **status.summary}
            except EmbedtoolError as exc:
                status.problem = str(exc)
        elif directory.exists():
            status.problem = "incomplete (no meta.json): an interrupted run; the next run resumes or rebuilds it"
        summary.stages.append(status)
    features = summary.stages[0]
    if features.exists and not features.problem:
        from embedtool.features.store import FeatureStore  # deferred: pulls in pyarrow

        try:
            store = FeatureStore(workspace.features)
        except EmbedtoolError as exc:  # a damaged table: shown as the stage's problem
            features.problem = str(exc)
            return summary
        summary.tracks = len(store)
        summary.hours = sum(t["duration_s"] for t in store.tracks) / 3600
        summary.labels = dict(Counter(t["label"] for t in store.tracks if t["label"]).most_common())
        summary.feature_settings = dict(store.meta.config)
    return summary


def latest_report(reports: Path) -> Path | None:
    """The newest finished evaluate report under ``reports/`` (one with its meta.json), or None."""
    if not reports.is_dir():
        return None
    finished = [d for d in reports.iterdir() if not d.name.startswith(".") and (d / META_FILE).is_file()]
    return max(finished, key=lambda d: (d / META_FILE).stat().st_mtime_ns, default=None)
