"""Taking tracks out of a library (`embedtool remove`): from the features, the embeddings, the index and its
fingerprints, as one change.

Each artefact is made anew beside the current one, without the tracks: the features get a new track table (their
shards stay until the next extract drops what no table references), the embeddings a copy less the tracks' rows,
and the index is updated (``indexing.update``: their vectors and landmarks removed, the others renumbered) or,
when it cannot be, built whole. Only then are they moved into place together (``artefacts.swap_together``): a
run killed before that leaves the library as it was, one killed during it is finished by whatever reads the
workspace next, so every reader sees all of the old library or all of the new. Clusters and a classifier are
left as they are: made from the old embeddings, `verify` reports them stale and their commands re-make them.
Undo is a re-extract of the files.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedtool.artefacts import META_FILE, swap_together
from embedtool.embedding.store import EmbeddingStore
from embedtool.errors import InputError, MissingArtefactError
from embedtool.features.store import PENDING_META, FeatureStore, Track, collect_garbage
from embedtool.progress import Progress
from embedtool.workspace import Workspace

# Makes the index of an export into a staged folder: (stage, the export) -> what changed (``pipeline.index_into``).
IndexMaker = Callable[[Path, EmbeddingStore], dict[str, Any]]


@dataclass
class RemoveReport:
    """What `embedtool remove` took out (or, ``dry_run``, would), and what became of each artefact."""

    removed: list[dict[str, Any]]  # track_id, path
    dry_run: bool
    tracks_left: int
    artefacts: dict[str, str] = field(default_factory=dict)  # kind -> what happened to it
    seconds: float = 0.0

    @property
    def count(self) -> int:
        return len(self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "dry_run": self.dry_run,
            "tracks_left": self.tracks_left,
            "removed": self.removed,
            "artefacts": self.artefacts,
            "seconds": round(self.seconds, 3),
        }


def tracks_named(features: FeatureStore, names: Sequence[str]) -> list[Track]:
    """The tracks ``names`` name: each a track id, an id prefix, a path (also relative to a library folder) or the
    end of one — as `neighbours` takes a library track — or a folder, naming every track under it. A name that
    names nothing is an :class:`InputError` (nothing is removed then)."""
    found: dict[str, Track] = {}
    for name in names:
        track = features.find(name)
        matches = [track] if track is not None else _under_folder(features, name)
        if not matches:
            raise InputError(
                f"{name!r} names no track of the library (give a track id, id prefix, path or folder as `embedtool "
                "info` lists them); nothing was removed."
            )
        found.update((t["track_id"], t) for t in matches)
    return sorted(found.values(), key=lambda t: t["path"] or t["track_id"])


def _under_folder(features: FeatureStore, name: str) -> list[Track]:
    """Tracks whose recorded path lies under the folder ``name`` (absolute, or relative to a library folder)."""
    import pyarrow.compute as pc

    given = Path(name).expanduser()
    folders = [os.path.normpath(os.path.abspath(given))]
    if not given.is_absolute():
        folders += [os.path.normpath(os.path.join(root, given)) for root in features.roots if root]
    column = features.tracks.table.column("path")
    rows: set[int] = set()
    for folder in folders:
        prefix = folder.rstrip("/") + "/"
        mask = pc.fill_null(pc.starts_with(column, pattern=prefix), False)
        rows.update(int(i) for i in pc.indices_nonzero(mask).to_pylist())
    return [features.tracks[i] for i in sorted(rows)]  # type: ignore[misc]


def plan_removal(workspace: Workspace, names: Sequence[str]) -> tuple[FeatureStore, list[Track]]:
    """The workspace's features and the tracks ``names`` name; refuses to empty the library."""
    if not (workspace.features / META_FILE).is_file():
        raise MissingArtefactError(f"No features at {workspace.features}: there is no library to remove tracks from.")
    features = FeatureStore(workspace.features)
    if not names:
        raise InputError("Name the tracks to remove: track ids, id prefixes, paths or folders.")
    tracks = tracks_named(features, names)
    if len(tracks) == len(features):
        raise InputError(
            f"That is every track of the library ({len(tracks)}): nothing would be left to search. Start a new "
            "library instead (`embedtool extract --replace PATH`, or another --workspace)."
        )
    return features, tracks


def remove_tracks(
    workspace: Workspace,
    features: FeatureStore,
    tracks: Sequence[Track],
    make_index: IndexMaker,
    progress: Progress | None = None,
) -> RemoveReport:
    """Take ``tracks`` out of the features, the embeddings and the index of ``workspace``, as one change (see the
    module doc). ``make_index`` makes the index of the reduced export into a staged folder."""
    started = time.perf_counter()
    root = workspace.root
    ids = {t["track_id"] for t in tracks}
    stages = {kind: root / f".{kind}.removing" for kind in ("embeddings", "index")}
    for stage in stages.values():
        shutil.rmtree(stage, ignore_errors=True)  # what a killed run left
    step = (lambda what, done, total: progress(f"remove: {what}", done, total)) if progress else None
    artefacts: dict[str, str] = {}
    moves: list[tuple[Path, Path]] = []
    try:
        if step:
            step("features", 0, 3)
        features_meta, pending = features.stage_without(ids)
        artefacts["features"] = f"{len(features) - len(ids)} tracks left"
        has_embeddings = (workspace.embeddings / META_FILE).is_file()
        has_index = (workspace.index / META_FILE).is_file()
        if has_index and not has_embeddings:
            raise MissingArtefactError(
                f"The index at {workspace.index} has no embeddings beside it; re-make them with `embedtool index`."
            )
        if has_embeddings:
            if step:
                step("embeddings", 1, 3)
            embeddings = EmbeddingStore(workspace.embeddings)
            # current embeddings stay current; stale ones (other features) stay stale
            current = embeddings.features_fingerprint == features.fingerprint
            made_from = features_meta.fingerprint if current else embeddings.features_fingerprint
            stages["embeddings"].mkdir()
            embeddings.write_without(stages["embeddings"], ids, made_from)
            gone = sum(1 for t in embeddings.tracks if t["track_id"] in ids)
            artefacts["embeddings"] = f"{gone} tracks' vectors taken out" + ("" if current else " (still stale)")
        if has_index:
            if step:
                step("index", 2, 3)
            stages["index"].mkdir()
            change = make_index(stages["index"], EmbeddingStore(stages["embeddings"]))
            artefacts["index"] = (
                f"updated ({change.get('removed', 0)} tracks taken out)"
                if change.get("mode") == "incremental"
                else f"built whole ({change.get('why')})"
            )
        if has_index:
            moves.append((stages["index"], workspace.index))  # first: from here on no answer names the tracks
        if has_embeddings:
            moves.append((stages["embeddings"], workspace.embeddings))
        moves.append((pending, workspace.features / META_FILE))
    except BaseException:
        for stage in stages.values():
            shutil.rmtree(stage, ignore_errors=True)
        (workspace.features / PENDING_META).unlink(missing_ok=True)
        raise
    swap_together(root, moves, (lambda done, total: step("swapping", done, total)) if step else None)
    collect_garbage(workspace.features)
    for kind in ("clusters", "classifier"):
        if (workspace.stages()[kind] / META_FILE).is_file():
            artefacts[kind] = f"stale: made with the removed tracks (`embedtool {_command(kind)}` re-makes it)"
    return RemoveReport(
        removed=[{"track_id": t["track_id"], "path": t["path"]} for t in tracks],
        dry_run=False,
        tracks_left=len(features) - len(ids),
        artefacts=artefacts,
        seconds=time.perf_counter() - started,
    )


def _command(kind: str) -> str:
    return {"clusters": "cluster", "classifier": "classify"}[kind]
