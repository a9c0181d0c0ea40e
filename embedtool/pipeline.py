"""The stages as a user runs them, on a workspace: ``verb(workspace, options, progress=None) -> report``.

Each function reads the artefacts its stage needs from the workspace and writes its own, exactly as the command of
the same name does (the CLI is a thin adapter over these). Where a stage needs an earlier artefact that is missing
or stale, it says so in its report rather than silently: ``index`` exports embeddings first when they are stale by
:func:`embeddings_staleness` — the one rule for "the embeddings no longer match the model and features".

    ws = Workspace.at("my-library")
    extract(ws, ["~/Music"])
    train(ws)                     # or adopt(ws, "general")
    index(ws)                     # exports embeddings first when stale, builds, calibrates identify
    Searcher.open(ws).query_file("clip.mp3", mode="identify")
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from embedtool.analysis.classifier import uses_descriptors
from embedtool.analysis.classifier_store import FilePrediction, predict_files
from embedtool.analysis.classify import ClassifyReport, run_classify
from embedtool.analysis.cluster import ClusterReport, run_cluster
from embedtool.analysis.duplicates import DuplicatesReport, find_duplicates
from embedtool.analysis.evaluate import EvaluateReport, run_evaluate
from embedtool.analysis.options import ClassifyOptions, ClusterOptions, DuplicatesOptions, EvaluateOptions
from embedtool.artefacts import ArtefactMeta, check_free_space, staged_dir
from embedtool.audio.settings import FeatureSettings
from embedtool.embedding.export import (
    EmbedReport,
    export_config,
    export_embeddings,
    export_staleness,
    hop_frames_for,
    load_encoder,
    open_export,
)
from embedtool.embedding.options import EmbedOptions
from embedtool.embedding.store import EmbeddingStore
from embedtool.engine import EngineOptions, open_engine
from embedtool.errors import EmbedtoolError, MissingArtefactError
from embedtool.features.extract import ExtractProgress, ExtractReport, run_extract
from embedtool.features.options import ExtractOptions
from embedtool.features.store import FeatureStore
from embedtool.indexing.build import IndexSummary, build_index, index_bytes, write_id_tables, write_index_files
from embedtool.indexing.fingerprint_build import build_fingerprints
from embedtool.indexing.options import IndexOptions
from embedtool.indexing.store import IdentifyThresholds, IndexStore
from embedtool.indexing.update import IndexUpdate, open_index, recorded_options, track_changes, update_index
from embedtool.library_edit import RemoveReport, plan_removal, remove_tracks
from embedtool.model.device import resolve_device_name
from embedtool.model.encoder import Encoder
from embedtool.model.settings import TrainSettings
from embedtool.model.teachers import teacher_of
from embedtool.progress import Progress, TrainProgress
from embedtool.query.calibrate import CALIBRATION_SAMPLES, calibrate_identify, update_calibration
from embedtool.query.decision import STATISTIC
from embedtool.query.searcher import Searcher
from embedtool.training.launch import Launch, train_here
from embedtool.training.launch import launch as launch_training
from embedtool.training.launch import writes_here as writes_here  # the CLI reports only where this is true
from embedtool.training.pretrained import adopt_model
from embedtool.training.trainer import TrainReport
from embedtool.training.trainer import resume_settings as resume_settings  # train --resume's settings, for the CLI
from embedtool.workspace import Workspace

F = TypeVar("F", bound=Callable[..., Any])


def _writes(stage: F) -> F:
    """A stage that writes to its workspace holds the workspace's lock while it runs: a second run on the same
    workspace is refused naming the first (``Workspace.lock``); its start and end go to the workspace's log
    (``Workspace.run_log``)."""

    @functools.wraps(stage)
    def locked(workspace: Workspace, *args: Any, **kwargs: Any) -> Any:
        with workspace.lock(stage.__name__), workspace.run_log(stage.__name__):
            return stage(workspace, *args, **kwargs)

    return cast(F, locked)


@_writes
def extract(
    workspace: Workspace,
    roots: Sequence[Path | str],
    settings: FeatureSettings | None = None,
    options: ExtractOptions | None = None,
    progress: Callable[[ExtractProgress], None] | None = None,
    engine: EngineOptions | None = None,
) -> ExtractReport:
    """Decode and featurise the audio under ``roots`` into the workspace's features (incremental, resumable).
    ``progress`` receives an :class:`ExtractProgress` after each file; ``engine``: where the work runs (local
    worker processes by default, or a Ray cluster: docs/engine.md)."""
    folders = [Path(root).expanduser() for root in roots]
    return run_extract(
        folders, workspace.features, settings or FeatureSettings(), options or ExtractOptions(), progress, engine
    )


def train(
    workspace: Workspace,
    settings: TrainSettings | None = None,
    resume: bool = False,
    progress: TrainProgress | None = None,
    nproc_per_node: int = 1,
    nnodes: int = 1,
    rdzv: str | None = None,
) -> TrainReport:
    """Train the workspace's model on its features (self-supervised); ``progress`` receives one dict per event.

    ``nproc_per_node`` above 1 trains with that many processes here (DDP under torchrun, one per GPU on CUDA),
    ``nnodes`` machines meeting at ``rdzv`` (HOST:PORT) with each running the same call; the report is rank 0's
    (None on a machine that did not run rank 0). Started by torchrun itself, each process trains with the others
    and rank 0 alone writes (docs/distributed-training.md)."""
    settings = settings or TrainSettings()
    plan = Launch(nproc_per_node, nnodes, rdzv)
    if plan.needed:
        return launch_training(workspace, settings, plan, resume, progress)
    return train_here(workspace, settings, resume, progress)


@_writes
def adopt(workspace: Workspace, model: str = "general", settings: TrainSettings | None = None) -> Encoder:
    """Make a bundled model (``general``) or another model folder this workspace's model, unchanged."""
    return adopt_model(model, workspace.features, workspace.split, workspace.model, settings or TrainSettings())


@_writes
def embed(
    workspace: Workspace,
    options: EmbedOptions | None = None,
    progress: Progress | None = None,
    engine: EngineOptions | None = None,
) -> EmbedReport:
    """Export segment and track embeddings (and track descriptors) with the workspace's model (incremental), on
    ``engine`` (this process by default, or a Ray cluster: docs/engine.md)."""
    return export_embeddings(workspace.features, workspace.model, workspace.embeddings, options, progress, engine)


def embeddings_staleness(
    workspace: Workspace, encoder: Encoder, features: FeatureStore, options: EmbedOptions
) -> str | None:
    """Why the workspace's embeddings must be (re-)exported before they are indexed, or None when they are current:
    the export's own reuse rule (``embedding.export.export_staleness``: model, segment grid, descriptors), and the
    same features."""
    store = open_export(workspace.embeddings)
    config = export_config(encoder, options, hop_frames_for(encoder, options.hop_seconds))
    why = export_staleness(store, encoder, config)
    if why is None and store is not None and store.features_fingerprint != features.fingerprint:
        why = "the features changed (tracks added, removed or re-extracted)"
    return why


@dataclass
class IndexReport:
    """What `embedtool index` did: the export it ran first (if any) and both indexes' facts."""

    export: dict[str, Any] | None
    segments: IndexSummary
    tracks: IndexSummary
    identify: IdentifyThresholds
    bytes: int
    seconds: float
    fingerprint: str
    # how the index was made: "incremental" (tracks added and removed) or "full" (and why), with the counts
    change: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.__dict__,
            "segments": self.segments.to_dict(),
            "tracks": self.tracks.to_dict(),
            "identify": self.identify.to_dict(),
        }


@_writes
def index(
    workspace: Workspace,
    options: IndexOptions | None = None,
    embed_options: EmbedOptions | None = None,
    progress: Progress | None = None,
    engine: EngineOptions | None = None,
    rebuild: bool = False,
) -> IndexReport:
    """Export embeddings when missing or stale, then update the index for the tracks added and removed, or (when
    the drift calls for it, or ``rebuild``) build and tune both indexes and calibrate identify; written atomically.
    ``engine``: where a stale export's embedding and an on-disk index's blocks run (docs/engine.md)."""
    options = options or IndexOptions()
    options.validate()
    embed_options = embed_options or EmbedOptions()
    started = time.perf_counter()
    if not (workspace.model / "meta.json").is_file():
        raise MissingArtefactError(f"No model at {workspace.model} (make it with `embedtool train`).")
    encoder = load_encoder(workspace.model, resolve_device_name(embed_options.device))
    features = FeatureStore(workspace.features)
    export: dict[str, Any] | None = None
    stale = embeddings_staleness(workspace, encoder, features, embed_options)
    if stale:
        model = workspace.model if engine is not None and engine.name == "ray" else encoder  # workers load it
        report = export_embeddings(workspace.features, model, workspace.embeddings, embed_options, progress, engine)
        export = {**report.to_dict(), "why": stale}
    store = EmbeddingStore(workspace.embeddings)
    check_free_space(workspace.index.parent, index_bytes(store, options), "the index")
    with staged_dir(workspace.index) as stage:
        summaries, meta, identify, change = index_into(
            stage, workspace, store, features, encoder, options, progress, engine, "--rebuild" if rebuild else None
        )
    return IndexReport(
        export=export,
        segments=IndexSummary.from_dict(summaries["segments"]),
        tracks=IndexSummary.from_dict(summaries["tracks"]),
        identify=IdentifyThresholds.from_dict(identify),
        bytes=int(meta.extra["bytes"]),
        seconds=time.perf_counter() - started,
        fingerprint=meta.fingerprint,
        change=change,
    )


def index_into(
    stage: Path,
    workspace: Workspace,
    store: EmbeddingStore,
    features: FeatureStore,
    encoder: Encoder,
    options: IndexOptions,
    progress: Progress | None = None,
    engine: EngineOptions | None = None,
    rebuild: str | None = None,
) -> tuple[dict[str, dict[str, Any]], ArtefactMeta, dict[str, Any], dict[str, Any]]:
    """Make the index of the export ``store`` in the staged folder ``stage``: the workspace's index updated for the
    tracks added and removed (``indexing.update``), or built whole when it cannot be (``rebuild``: why a full build
    was asked for). Returns the indexes' summaries, the meta, the identify facts and what changed."""
    why = rebuild
    if why is None:
        old, why = open_index(workspace.index)
        if old is not None:
            updated = update_index(old, stage, store, features, options, progress)
            if isinstance(updated, IndexUpdate):
                fingerprints = updated.fingerprints
                if fingerprints is None:
                    fingerprints = build_fingerprints(stage, features, store, options, progress)
                tables = write_id_tables(stage, store)
                identify = _recalibrated(stage, old, updated, Searcher(encoder, updated.segments.index, tables,
                                         store.hop_s, None), features, options, progress)  # fmt: skip
                summaries, meta = write_index_files(
                    stage, updated.segments, updated.tracks, store, options, identify, fingerprints, updated.change
                )
                return summaries, meta, identify, updated.change
            why = updated
    change = {"mode": "full", "why": why, **track_changes(workspace.index, store)}
    with ExitStack() as stack:
        vectors = store.segment_source(remap_gathers=True)  # memory-mapped, never concatenated
        runner = stack.enter_context(open_engine(engine, 0)) if engine is not None and engine.name == "ray" else None
        segments = build_index(vectors, options, progress, "segment index", stage, "segments", runner)
        # on-disk fingerprints' blocks: Ray tasks too (a Ray started for the blocks is stopped before calibration)
        fingerprints = build_fingerprints(stage, features, store, options, progress, runner)
    tracks = build_index(store.track_vectors(), options, progress, "track index")
    tables = write_id_tables(stage, store)
    if options.identify_threshold is not None:
        identify: dict[str, Any] = {"statistic": STATISTIC, "threshold": options.identify_threshold,
                                    "calibrated": False, "reason": "fixed by index.identify_threshold"}  # fmt: skip
    else:
        searcher = Searcher(encoder, segments.index, tables, store.hop_s, None)
        identify = calibrate_identify(
            searcher, features, options.calibration_tracks, options.calibration_lengths_s,
            options.calibration_snr_db, options.seed, progress, options.calibration_background,
            stage / CALIBRATION_SAMPLES,
        )  # fmt: skip
    summaries, meta = write_index_files(stage, segments, tracks, store, options, identify, fingerprints, change)
    return summaries, meta, identify, change


def _recalibrated(
    stage: Path,
    old: IndexStore,
    updated: IndexUpdate,
    searcher: Searcher,
    features: FeatureStore,
    options: IndexOptions,
    progress: Progress | None,
) -> dict[str, Any]:
    """The identify calibration of an updated index: the old one's queries of kept tracks with new queries of the
    added tracks (``update_calibration``), or the old one as it was (said so) when its queries were not kept."""
    identify = updated.identify
    samples = old.directory / CALIBRATION_SAMPLES
    if not identify.get("calibrated") or options.identify_threshold is not None or not samples.is_file():
        return identify
    again = update_calibration(
        searcher, features, identify, samples, set(updated.added_tracks), options.seed, progress,
        stage / CALIBRATION_SAMPLES,
    )  # fmt: skip
    return identify if again is None else again


@_writes
def remove(
    workspace: Workspace,
    names: Sequence[str],
    dry_run: bool = False,
    progress: Progress | None = None,
    options: IndexOptions | None = None,
) -> RemoveReport:
    """Take the tracks ``names`` name (track ids, id prefixes, paths, folders) out of the library — features,
    embeddings, the index and its fingerprints — as one change (:mod:`embedtool.library_edit`); clusters and a
    classifier made with them become stale. ``dry_run``: only say which tracks would go. The index keeps the
    options it was made with (``options`` where they cannot be read). Undo: extract the files again."""
    features, tracks = plan_removal(workspace, names)
    if dry_run:
        removed = [{"track_id": t["track_id"], "path": t["path"]} for t in tracks]
        return RemoveReport(removed=removed, dry_run=True, tracks_left=len(features) - len(tracks))
    fallback = options or IndexOptions()

    def make_index(stage: Path, store: EmbeddingStore) -> dict[str, Any]:
        old, _ = open_index(workspace.index)
        index_options = fallback if old is None else recorded_options(old, fallback)
        encoder = load_encoder(workspace.model)  # (queries calibrate identify when the index is built whole)
        return index_into(stage, workspace, store, features, encoder, index_options, progress)[3]

    return remove_tracks(workspace, features, tracks, make_index, progress)


@_writes
def cluster(
    workspace: Workspace, options: ClusterOptions | None = None, progress: Progress | None = None
) -> ClusterReport:
    """k-Means clusters of the workspace's track embeddings, with exemplars and a 2-D map; with
    ``options.features`` naming a teacher (``embeddings+aisfx``), its vectors are computed first where missing."""
    options = options or ClusterOptions()
    name = teacher_of(options.features)
    teacher = None if name is None else prepare_teacher_vectors(workspace, name, False, progress)
    return run_cluster(
        workspace.embeddings,
        workspace.clusters,
        options,
        progress,
        features_dir=workspace.features,
        teacher_dir=teacher,
    )


@_writes
def classify(
    workspace: Workspace, options: ClassifyOptions | None = None, progress: Progress | None = None
) -> ClassifyReport:
    """Fit and save a logistic classifier on the labelled tracks; held-out scores by the workspace's split. With
    ``options.features`` naming a teacher (``descriptors+aisfx``), its vectors are computed first for labelled
    tracks that lack one (cached under ``teachers/``)."""
    options = options or ClassifyOptions()
    teacher = _classify_teacher(workspace, options, progress)
    return run_classify(
        workspace.embeddings, workspace.classifier, options, progress,
        split_dir=workspace.split, features_dir=workspace.features, teacher_dir=teacher,
    )  # fmt: skip


def _classify_teacher(workspace: Workspace, options: ClassifyOptions, progress: Progress | None) -> Path | None:
    name = teacher_of(options.features)
    if name is None or not uses_descriptors(options):
        return None
    return prepare_teacher_vectors(workspace, name, True, progress)


def prepare_teacher_vectors(workspace: Workspace, name: str, labelled_only: bool, progress: Progress | None) -> Path:
    """The cache folder of teacher ``name``, filled for every track of the export (``labelled_only``: every
    labelled one) that lacks a vector. Files that cannot be decoded are left out; the stage reading the cache
    then names how many tracks have none."""
    from embedtool.model.teachers import ensure_teacher_outputs, teacher_dir

    store = EmbeddingStore(workspace.embeddings)
    store.use_current_labels(workspace.features)
    tracks = {
        t["track_id"]: t["path"]
        for t in store.tracks
        if t.get("path") and (not labelled_only or t.get("label") not in (None, ""))
    }
    step = (lambda d, t: progress(f"{name} vectors", d, t)) if progress else None
    directory = teacher_dir(workspace.root, name)
    ensure_teacher_outputs(directory, tracks, name, step)
    return directory


def predict(
    workspace: Workspace, paths: Sequence[Path | str], segments: bool = False, progress: Progress | None = None
) -> list[FilePrediction]:
    """Label audio files with the workspace's saved classifier (``embedtool classify QUERY...``); a file that
    cannot be read is reported in its entry (``error``) and the others are still labelled."""
    files = [Path(p).expanduser() for p in paths]
    return predict_files(
        workspace.classifier, workspace.model, files, segments=segments, progress=progress, errors="report"
    )


@_writes
def evaluate(
    workspace: Workspace,
    options: EvaluateOptions | None = None,
    classify_options: ClassifyOptions | None = None,
    cluster_options: ClusterOptions | None = None,
    progress: Progress | None = None,
) -> EvaluateReport:
    """An honest report on the workspace's embeddings against baselines (no leakage across the split); with
    ``classify_options.features`` naming a teacher, its vectors are computed first where missing."""
    classify_options = classify_options or ClassifyOptions()
    teacher = _classify_teacher(workspace, classify_options, progress)
    return run_evaluate(workspace, options or EvaluateOptions(), classify_options, cluster_options, progress, teacher)


def duplicates(
    workspace: Workspace, options: DuplicatesOptions | None = None, progress: Progress | None = None
) -> DuplicatesReport:
    """Exact copies, near-copies and shared material among the library's tracks, from their fingerprint peaks
    (:mod:`embedtool.analysis.duplicates`), looked up in the index's fingerprint files when it has them for every
    track. Reads only: no lock is taken."""
    features = FeatureStore(workspace.features)
    index, _ = open_index(workspace.index)
    fingerprints = None
    if index is not None:
        try:
            table = index.fingerprint_index()
            fingerprints = None if table is None else (table, list(index.id_tables().tracks.ids()))
        except EmbedtoolError:  # a damaged index: the landmarks are made from the features instead
            fingerprints = None
    return find_duplicates(features, options or DuplicatesOptions(), progress, fingerprints)
