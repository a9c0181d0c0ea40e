"""`embedtool verify`: every artefact of a workspace checked against its meta.json and its inputs, and (``repair``)
what is damaged or stale re-made, reusing the rest.

An artefact is

- **missing** when its folder holds no ``meta.json`` (never made, or a run was interrupted);
- **damaged** when its ``meta.json`` cannot be read or was edited, a file it lists is missing or differs in size
  or checksum from when it was written, or its store cannot read a file (a truncated index, NaN in vectors);
- **stale** when it was made from other inputs than the workspace now holds (embeddings of other features or
  another model, an index of other embeddings, clusters or a classifier of other embeddings);
- **ok** otherwise (artefacts whose meta.json records no checksums are read whole instead: "no checksums recorded").

Repair re-makes, in pipeline order, each damaged or stale artefact with the settings its ``meta.json`` records
(the project's configuration where it cannot be read): for features, only the tracks of damaged shards are
decoded again (intact shards are reused through their sidecars); the model is re-adopted or re-trained; the
others are re-made by their stage in :mod:`embedtool.pipeline`. Reports are checked, not re-made.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedtool import pipeline
from embedtool.analysis.classifier_store import SavedClassifier
from embedtool.analysis.cluster_store import ClusterStore
from embedtool.analysis.options import ClassifyOptions, ClusterOptions
from embedtool.artefacts import (
    MADE_BY,
    META_FILE,
    ArtefactMeta,
    changed_settings,
    damaged_files,
    file_checksum,
    read_meta,
)
from embedtool.audio.settings import FeatureSettings
from embedtool.config import ProjectConfig, coerce, settings_dict
from embedtool.embedding.options import EmbedOptions
from embedtool.embedding.store import EmbeddingStore
from embedtool.errors import ConfigError, EmbedtoolError, InputError
from embedtool.features.store import FeatureStore
from embedtool.indexing.options import IndexOptions
from embedtool.indexing.store import IndexStore
from embedtool.model.encoder import COMPANION_DIR, WEIGHTS_FILE, Encoder
from embedtool.model.settings import TrainSettings
from embedtool.model.store import BUNDLED, PRETRAINED_ROOT
from embedtool.training.splits import ensure_split, load_split
from embedtool.workspace import Workspace

OK, STALE, DAMAGED, MISSING = "ok", "stale", "damaged", "missing"
# The artefacts verify checks and repair re-makes, in pipeline order (reports are checked only).
KINDS = ("features", "split", "model", "embeddings", "index", "clusters", "classifier")
# An artefact is stale when the fingerprint it records for one of these inputs is no longer the input's.
STALE_INPUTS = {
    "embeddings": ("features", "model"),
    "index": ("embeddings", "model"),
    "clusters": ("embeddings",),
    "classifier": ("embeddings",),
}


@dataclass
class ArtefactCheck:
    """One artefact's state: ``status`` is ok, stale, damaged or missing; ``remake`` the command that re-makes it."""

    kind: str
    path: str
    status: str
    detail: str = ""
    remake: str = ""
    damaged_files: list[str] = field(default_factory=list)  # relative to the artefact's folder

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class VerifyReport:
    workspace: str
    artefacts: list[ArtefactCheck]
    repaired: list[str] = field(default_factory=list)  # "kind: why", for what --repair re-made

    @property
    def damaged(self) -> bool:
        return any(a.status == DAMAGED for a in self.artefacts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "workspace": self.workspace,
            "damaged": self.damaged,
            "artefacts": [a.to_dict() for a in self.artefacts],
            "repaired": self.repaired,
        }


def verify_workspace(workspace: Workspace) -> VerifyReport:
    """Check every artefact of ``workspace`` (reading every byte of the files its meta.json lists)."""
    fingerprints: dict[str, str] = {}
    checks = [check_artefact(workspace, kind, fingerprints) for kind in KINDS]
    checks += [_check_report(folder) for folder in _report_folders(workspace)]
    return VerifyReport(str(workspace.root), checks)


def repair_workspace(
    workspace: Workspace,
    config: ProjectConfig | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> VerifyReport:
    """Re-make what is damaged or stale, in pipeline order (see the module doc), then verify the whole workspace.
    ``progress`` is the stages' ``progress(stage, done, total)``."""
    config = config or ProjectConfig()
    fingerprints: dict[str, str] = {}
    repaired = []
    with workspace.lock("verify --repair"):
        for kind in KINDS:
            check = check_artefact(workspace, kind, fingerprints)
            if check.status in (DAMAGED, STALE):
                REMAKE[kind](workspace, check, config, progress)
                repaired.append(f"{kind}: {check.status} ({check.detail})")
                check_artefact(workspace, kind, fingerprints)  # the re-made one's fingerprint, for those after it
    report = verify_workspace(workspace)
    report.repaired = repaired
    return report


def check_artefact(workspace: Workspace, kind: str, fingerprints: dict[str, str]) -> ArtefactCheck:
    """The state of the workspace's ``kind`` artefact; records its fingerprint in ``fingerprints`` when usable
    (the inputs of the artefacts after it are compared with those)."""
    directory = workspace.stages()[kind]
    check = ArtefactCheck(kind, str(directory), OK, remake=MADE_BY[kind])
    if not (directory / META_FILE).is_file():
        check.status = MISSING
        check.detail = "incomplete (no meta.json)" if directory.exists() else "not made"
        return check
    try:
        meta = read_meta(directory, kind, small_hashes=False)  # every file is hashed next
    except EmbedtoolError as exc:
        _damaged(check, directory, exc)
        return check
    problems = _damaged_files(kind, directory, meta)
    if problems:
        check.status, check.damaged_files = DAMAGED, sorted(problems)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        check.detail = next(iter(problems.values())) + more
        return check
    try:
        OPEN[kind](directory)
    except EmbedtoolError as exc:
        _damaged(check, directory, exc)
        return check
    fingerprints[kind] = meta.fingerprint
    for name in STALE_INPUTS.get(kind, ()):
        made_from, now = meta.inputs.get(name), fingerprints.get(name)
        if made_from and now and made_from != now:
            check.status = STALE
            check.detail = f"made from other {name} ({made_from}; now {now})"
            return check
    check.detail = f"{len(meta.files)} files checked" if meta.files else "no checksums recorded"
    return check


def _damaged(check: ArtefactCheck, directory: Path, exc: EmbedtoolError) -> None:
    """Mark ``check`` damaged by ``exc``, with the files its meta.json (if readable) finds damaged."""
    check.status, check.detail = DAMAGED, str(exc)
    meta = _lenient_meta(directory)
    if meta is not None:
        check.damaged_files = sorted(damaged_files(directory, meta))


def _damaged_files(kind: str, directory: Path, meta: ArtefactMeta) -> dict[str, str]:
    """Files whose size or checksum differ from meta.json's (a model's companion checked against its own)."""
    problems = damaged_files(directory, meta, hashes=True)
    companion = directory / COMPANION_DIR
    if kind == "model" and (companion / META_FILE).is_file():
        own = _lenient_meta(companion)
        if own is not None:
            found = damaged_files(companion, own, hashes=True)
            problems.update({f"{COMPANION_DIR}/{name}": why for name, why in found.items()})
    return problems


def _lenient_meta(directory: Path) -> ArtefactMeta | None:
    """meta.json as written, unchecked (to learn what a damaged artefact held), or None when unreadable."""
    try:
        return ArtefactMeta.from_dict(json.loads((directory / META_FILE).read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


# --- reading an artefact whole (what the stages after it would read) ------------------------------------------


def _open_embeddings(directory: Path) -> None:
    store = EmbeddingStore(directory)
    store.segment_shards()  # each shard scanned for NaN, none concatenated
    store.segment_starts  # noqa: B018 - reads (and checks) the segment table
    store.track_vectors()
    if store.descriptors_current:
        store.track_descriptors()


def _open_clusters(directory: Path) -> None:
    clusters = ClusterStore(directory)
    clusters.summary()
    clusters.centroids()
    clusters.track_clusters()


def _open_index(directory: Path) -> None:
    store = IndexStore(directory)
    store.segment_index()
    store.track_index()
    store.id_tables()


OPEN: dict[str, Callable[[Path], Any]] = {
    "features": lambda directory: FeatureStore(directory).check_shards(),
    "split": load_split,
    "model": Encoder.load,
    "embeddings": _open_embeddings,
    "index": _open_index,
    "clusters": _open_clusters,
    "classifier": SavedClassifier,
}


def _report_folders(workspace: Workspace) -> list[Path]:
    reports = workspace.reports
    if not reports.is_dir():
        return []
    return sorted(
        d for d in reports.iterdir() if d.is_dir() and not d.name.startswith(".") and (d / META_FILE).is_file()
    )


def _check_report(folder: Path) -> ArtefactCheck:
    check = ArtefactCheck(f"report {folder.name}", str(folder), OK, remake=f"embedtool evaluate --name {folder.name}")
    try:
        meta = read_meta(folder, "report", small_hashes=False)
    except EmbedtoolError as exc:
        _damaged(check, folder, exc)
        return check
    problems = damaged_files(folder, meta, hashes=True)
    if problems:
        check.status, check.damaged_files = DAMAGED, sorted(problems)
        check.detail = next(iter(problems.values()))
    else:
        check.detail = f"{len(meta.files)} files checked" if meta.files else "no checksums recorded"
    return check


# --- re-making ------------------------------------------------------------------------------------------------


def _recorded(cls: type, recorded: dict[str, Any] | None, fallback: Any) -> Any:
    """``cls`` built from the settings an artefact's meta.json records (its fields only), each value checked as a
    configuration value is (type, then the options' own ``validate``): a value no configuration could hold (a
    classifier's ``cv: 1``, a wrong type) is not used; ``fallback``'s (the project's configuration) stands for
    it. ``fallback`` when nothing is recorded."""
    if not isinstance(recorded, dict) or not recorded:
        return fallback
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    known = {k: v for k, v in recorded.items() if k in names}
    try:  # all together (values that must agree with each other change at once)
        whole = dataclasses.replace(
            fallback, **{k: coerce(v, hints[k], f"{cls.__name__}.{k}") for k, v in known.items()}
        )
        if callable(getattr(whole, "validate", None)):
            whole.validate()
        return whole
    except (ConfigError, TypeError, ValueError):
        pass
    settings = fallback
    for key, value in known.items():
        try:
            candidate = dataclasses.replace(settings, **{key: coerce(value, hints[key], f"{cls.__name__}.{key}")})
            validate = getattr(candidate, "validate", None)
            if callable(validate):
                validate()
        except (ConfigError, TypeError, ValueError):
            continue  # a value the meta should not hold: the configuration's stands
        settings = candidate
    return settings


def _config_of(workspace: Workspace, kind: str) -> dict[str, Any] | None:
    meta = _lenient_meta(workspace.stages()[kind])
    return meta.config if meta is not None else None


def _trusted_meta(directory: Path) -> ArtefactMeta | None:
    """meta.json when it reads and no setting in it was edited after it was written (a known-good record of the
    settings that made the artefact), else None."""
    meta = _lenient_meta(directory)
    return meta if meta is not None and not changed_settings(meta) else None


def known_good_feature_settings(workspace: Workspace, config: ProjectConfig) -> FeatureSettings:
    """The feature settings a repair re-makes the features with: those the model and the embeddings record
    having been made from (their metas unedited), else those of the features' own meta.json that still match
    the fingerprints recorded when it was written, over the project's configuration. Never a value edited into
    a damaged meta.json."""
    values = settings_dict(config.settings("features"))
    own = _lenient_meta(workspace.features)
    if own is not None and isinstance(own.config, dict):
        edited = {c.split(" ")[0] for c in changed_settings(own)}
        values.update({k: v for k, v in own.config.items() if k in values and k not in edited})
    for kind, key in (("embeddings", "features"), ("model", "features")):  # the model's record wins
        meta = _trusted_meta(workspace.stages()[kind])
        recorded = meta.config.get(key) if meta is not None else None
        if isinstance(recorded, dict):
            values.update({k: v for k, v in recorded.items() if k in values})
    return _recorded(FeatureSettings, values, config.settings("features"))


def roots_from_tracks(features_dir: Path) -> list[str]:
    """The folders a features artefact was made from, read back from its track tables (or its shards' sidecars)
    when its meta.json cannot say: for a labelled track the folder holding its label folder, else its own
    folder; the outermost of those."""
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    for table in sorted(features_dir.glob("tracks-*.parquet"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            rows = pq.read_table(table, columns=["path", "label"]).to_pylist()
            break
        except Exception:  # a damaged table: try the next, then the sidecars
            continue
    if not rows:
        for sidecar in sorted((features_dir / "shards").glob("*.json")):
            try:
                rows += [t for t in json.loads(sidecar.read_text()).get("tracks", []) if isinstance(t, dict)]
            except (OSError, ValueError, AttributeError):
                continue
    roots: set[Path] = set()
    for row in rows:
        if not isinstance(row.get("path"), str):
            continue
        path, label = Path(row["path"]), row.get("label")
        folder = next((p.parent for p in path.parents if label and p.name == label), path.parent)
        roots.add(folder)
    return [str(r) for r in sorted(roots) if not any(o != r and r.is_relative_to(o) for o in roots)]


def _remake_features(workspace: Workspace, check: ArtefactCheck, config: ProjectConfig, progress: Any) -> None:
    """Delete the damaged shards (and their sidecars), then extract again with the last known-good settings
    (:func:`known_good_feature_settings`): intact shards made with them are reused, so only the tracks of damaged
    shards are decoded; the table and meta.json are written anew. The folders come from meta.json, else from
    the track table (:func:`roots_from_tracks`)."""
    meta = _lenient_meta(workspace.features)
    recorded_roots = meta.extra.get("roots") if meta is not None and isinstance(meta.extra, dict) else None
    roots = [r for r in recorded_roots or [] if isinstance(r, str)] or roots_from_tracks(workspace.features)
    if not roots:
        raise InputError(
            f"Cannot repair {workspace.features}: neither its meta.json nor its track table says which folders it "
            "was made from; run `embedtool extract --overwrite PATH`."
        )
    for name in check.damaged_files:
        if name.startswith("shards/") and name.endswith(".npy"):
            # a shard is its matrices, its fingerprint peaks and its sidecar: damage to either array drops all three
            shard_id = name.removeprefix("shards/").split(".")[0]
            for part in (f"{shard_id}.npy", f"{shard_id}.peaks.npy", f"{shard_id}.json"):
                (workspace.features / "shards" / part).unlink(missing_ok=True)
    settings = known_good_feature_settings(workspace, config)
    options = config.settings("extract")
    labels_file = meta.extra.get("labels_file") if meta is not None and isinstance(meta.extra, dict) else None
    if options.labels is None and isinstance(labels_file, str):
        options = dataclasses.replace(options, labels=labels_file)
    pipeline.extract(workspace, roots, settings, options)


def _remake_split(workspace: Workspace, check: ArtefactCheck, config: ProjectConfig, progress: Any) -> None:
    recorded = _config_of(workspace, "split") or (_config_of(workspace, "model") or {}).get("train")
    settings = _recorded(TrainSettings, recorded, config.settings("train"))
    features = FeatureStore(workspace.features)
    workspace.split.joinpath(META_FILE).unlink(missing_ok=True)  # drawn afresh (seeded: the same assignments)
    ensure_split(
        workspace.split, features.tracks, features.fingerprint, settings.seed, settings.val_fraction, settings.split_by
    )


def known_good_model_source(workspace: Workspace) -> tuple[str | None, dict[str, Any] | None]:
    """(the bundled model the workspace's model was adopted from, or None; the training settings it was made
    with, or None), from the model's meta.json when it is intact, else from what the other artefacts recorded:
    the model fingerprint the embeddings and index were made from (a bundled model's own fingerprint), or
    model.pt being byte for byte a bundled model's."""
    meta = _trusted_meta(workspace.model)
    if meta is not None:
        adopted = meta.extra.get("adopted_from") if isinstance(meta.extra, dict) else None
        train = meta.config.get("train") if isinstance(meta.config, dict) else None
        return (adopted if isinstance(adopted, str) else None), (train if isinstance(train, dict) else None)
    used = set()
    train = None
    for kind in ("embeddings", "index"):
        other = _trusted_meta(workspace.stages()[kind])
        if other is not None:
            used.add(other.inputs.get("model"))
            recorded = other.config.get("model", {}).get("config", {}).get("train") if kind == "embeddings" else None
            train = recorded if isinstance(recorded, dict) else train
    weights = workspace.model / WEIGHTS_FILE
    for name in BUNDLED:
        bundled = _lenient_meta(PRETRAINED_ROOT / name)
        if bundled is None:
            continue
        same_weights = weights.is_file() and file_checksum(weights) == bundled.files.get(WEIGHTS_FILE)
        if bundled.fingerprint in used or same_weights:
            return name, bundled.config.get("train") if isinstance(bundled.config, dict) else train
    return None, train


def _remake_model(workspace: Workspace, check: ArtefactCheck, config: ProjectConfig, progress: Any) -> None:
    adopted, recorded = known_good_model_source(workspace)
    settings = _recorded(TrainSettings, recorded, config.settings("train"))
    if adopted:
        pipeline.adopt(workspace, adopted, settings)
    else:
        pipeline.train(workspace, settings)


def _remake_embeddings(workspace: Workspace, check: ArtefactCheck, config: ProjectConfig, progress: Any) -> None:
    options = _recorded(EmbedOptions, _config_of(workspace, "embeddings"), config.settings("embed"))
    # damaged: nothing of it is trusted (a full export); stale: the export reuses what it can
    pipeline.embed(workspace, dataclasses.replace(options, full=check.status == DAMAGED), progress)


def _remake_index(workspace: Workspace, check: ArtefactCheck, config: ProjectConfig, progress: Any) -> None:
    options = _recorded(IndexOptions, _config_of(workspace, "index"), config.settings("index"))
    pipeline.index(workspace, options, config.settings("embed"), progress)


def _remake_clusters(workspace: Workspace, check: ArtefactCheck, config: ProjectConfig, progress: Any) -> None:
    options = _recorded(ClusterOptions, _config_of(workspace, "clusters"), config.settings("cluster"))
    pipeline.cluster(workspace, options, progress)


def _remake_classifier(workspace: Workspace, check: ArtefactCheck, config: ProjectConfig, progress: Any) -> None:
    options = _recorded(ClassifyOptions, _config_of(workspace, "classifier"), config.settings("classify"))
    pipeline.classify(workspace, options, progress)


REMAKE: dict[str, Callable[[Workspace, ArtefactCheck, ProjectConfig, Any], None]] = {
    "features": _remake_features,
    "split": _remake_split,
    "model": _remake_model,
    "embeddings": _remake_embeddings,
    "index": _remake_index,
    "clusters": _remake_clusters,
    "classifier": _remake_classifier,
}
