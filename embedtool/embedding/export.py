"""The embed stage: run the trained encoder over every track's features and write the embeddings artefact.

Windows are cut with THE segment rule (``features.windows``): every ``hop`` frames, one more window ending at
the track's last frame, short tracks padded to one window. Windows of many tracks are batched together (a
library of one-shots would otherwise run the network one window at a time) and long tracks are cut in
bounded chunks, so memory does not grow with a track's length.

The tracks to embed are cut into tasks of consecutive tracks in features order (about ``TASK_BATCHES`` batches of
windows each) that run on an engine (:mod:`embedtool.engine`: this process, or Ray workers — CPU tasks, or an
actor per GPU that loads the model once). Results come back in task order and go to the writer task by task, so
memory holds a few tasks' vectors, not the library's, and the export is the same whichever engine ran it.

Incremental: when the model and the segment settings are those of the existing export, only tracks that are
new (a changed file is a new content id) are embedded; vectors of the others are copied, and tracks no longer
in the features are dropped. Any other difference means a full export, and the report says which happened
and why.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedtool.artefacts import check_free_space, fingerprint_of, staged_dir
from embedtool.config import settings_dict
from embedtool.embedding.options import EmbedOptions
from embedtool.embedding.pooling import track_descriptor, track_descriptor_dim
from embedtool.embedding.store import EmbeddingStore, EmbeddingWriter
from embedtool.engine import Engine, EngineOptions, TaskFailure, open_engine
from embedtool.errors import ConfigError, EmbedtoolError, InputError
from embedtool.features.store import FeatureStore
from embedtool.features.windows import crop_many, silence_floor, window_starts
from embedtool.model.device import resolve_device_name
from embedtool.progress import Progress
from embedtool.threads import CpuBudget

if TYPE_CHECKING:
    from embedtool.model.encoder import Encoder

# Track-table columns copied from the features table; a difference in any of them rewrites the tables.
TRACK_FIELDS = ("track_id", "path", "label", "group", "duration_s")
# A task embeds consecutive tracks holding about this many batches of windows (at least one track): seconds of
# work on a CPU, a few MB of results, and progress reported as each finishes.
TASK_BATCHES = 16


@dataclass
class EmbedReport:
    """What an export did. ``mode``: "full", "incremental" or "unchanged"; ``reason`` says why."""

    mode: str
    reason: str
    tracks: int
    segments: int
    embedded_tracks: int
    reused_tracks: int
    removed_tracks: int
    dim: int
    seconds: float
    device: str
    fingerprint: str
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def load_encoder(model_dir_or_encoder: Path | str | Encoder, device: str = "cpu") -> Encoder:
    from embedtool.model.encoder import Encoder

    if isinstance(model_dir_or_encoder, Encoder):
        return model_dir_or_encoder
    return Encoder.load(Path(model_dir_or_encoder), device=device)


def hop_frames_for(encoder: Encoder, hop_seconds: float) -> int:
    """Segment hop in frames: ``hop_seconds`` at the encoder's frame rate, or half a segment when 0."""
    if hop_seconds <= 0:
        return max(1, int(encoder.segment_frames) // 2)
    return max(1, encoder.feature_settings.seconds_to_frames(hop_seconds))


def export_config(encoder: Encoder, options: EmbedOptions, hop_frames: int) -> dict[str, Any]:
    """The provenance config of an export: what decides the vectors (not batch size or device)."""
    fs = encoder.feature_settings
    return {
        "hop_seconds": options.hop_seconds,
        "hop_frames": hop_frames,
        "segment_frames": int(encoder.segment_frames),
        "segment_seconds": fs.frames_to_seconds(encoder.segment_frames),
        "hop_s": fs.frames_to_seconds(hop_frames),
        "features": settings_dict(fs),
        "model": {
            "fingerprint": encoder.fingerprint,
            "embedding_dim": int(encoder.embedding_dim),
            "config": _jsonable(getattr(encoder, "config", {})),
        },
    }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "__dataclass_fields__"):
        return _jsonable(settings_dict(value))
    return str(value)


def export_embeddings(
    features_dir: Path,
    model_dir_or_encoder: Path | str | Encoder,
    embeddings_dir: Path,
    options: EmbedOptions | None = None,
    progress: Progress | None = None,
    engine: EngineOptions | None = None,
) -> EmbedReport:
    """Embed every track of ``features_dir`` with a model folder or an :class:`Encoder` into ``embeddings_dir``, on
    ``engine`` (default: this process, on ``options.device``)."""
    options = options or EmbedOptions()
    options.validate()
    engine = engine or EngineOptions()
    engine.validate()
    started = time.perf_counter()
    features = FeatureStore(Path(features_dir))
    # With ray the workers load the model on their own devices: here it is only read (settings, fingerprint).
    device = "cpu" if engine.name == "ray" else resolve_device_name(options.device)
    encoder = load_encoder(model_dir_or_encoder, device)
    encoder.check_features(features.settings)
    if len(features) == 0:
        raise InputError(f"The features at {features_dir} hold no tracks; run `embedtool extract PATH` on audio.")
    hop_frames = hop_frames_for(encoder, options.hop_seconds)
    config = export_config(encoder, options, hop_frames)
    embeddings_dir = Path(embeddings_dir)
    previous, mode, reason = _previous_export(embeddings_dir, encoder, config, options)
    plan = _ExportPlan.of(features, previous, hop_frames, config, mode, reason)
    plan.inputs = {"features": features.fingerprint, "model": encoder.fingerprint}
    if plan.unchanged:  # same model, settings, tracks and track facts: nothing to do
        assert previous is not None
        return EmbedReport(
            mode="unchanged", reason="same model, settings and tracks as the existing export",
            tracks=len(previous), segments=previous.n_segments, embedded_tracks=0,
            reused_tracks=len(previous), removed_tracks=0, dim=previous.dim,
            seconds=time.perf_counter() - started, device=device, fingerprint=previous.fingerprint,
        )  # fmt: skip
    check_free_space(embeddings_dir.parent, export_bytes(features, encoder, hop_frames), "the embeddings")
    writer, meta, device = _write_export(
        embeddings_dir, plan, features, model_dir_or_encoder, encoder, options, engine, progress, device
    )
    return EmbedReport(
        mode=plan.mode,
        reason=plan.reason,
        tracks=writer.n_tracks,
        segments=writer.n_segments,
        embedded_tracks=len(plan.to_embed),
        reused_tracks=len(plan.reusable),
        removed_tracks=plan.removed,
        dim=int(encoder.embedding_dim),
        seconds=time.perf_counter() - started,
        device=device,
        fingerprint=meta.fingerprint,
    )


@dataclass
class _ExportPlan:
    """What an export writes: every track of the features in their order (``wanted``), which of them the previous
    export already holds with the same facts (``reusable``) and which are embedded (``to_embed``)."""

    wanted: list[dict[str, Any]]
    previous: EmbeddingStore | None
    reusable: set[str]
    removed: int
    unchanged: bool
    hop_frames: int
    config: dict[str, Any]
    mode: str
    reason: str
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def to_embed(self) -> list[dict[str, Any]]:
        return [t for t in self.wanted if t["track_id"] not in self.reusable]

    @classmethod
    def of(
        cls,
        features: FeatureStore,
        previous: EmbeddingStore | None,
        hop_frames: int,
        config: dict[str, Any],
        mode: str,
        reason: str,
    ) -> _ExportPlan:
        wanted = [{k: t.get(k) for k in TRACK_FIELDS} for t in features.tracks]
        if previous is None:
            return cls(wanted, None, set(), 0, False, hop_frames, config, mode, reason)
        wanted_ids = {t["track_id"] for t in wanted}
        reusable = {tid for tid in previous.track_ids() if tid in wanted_ids}
        removed = len(previous) - len(reusable)
        old_rows = [
            {k: previous.track(t["track_id"]).get(k) for k in TRACK_FIELDS} for t in wanted if t["track_id"] in reusable
        ]
        unchanged = len(reusable) == len(wanted) and removed == 0 and old_rows == wanted
        reason = (
            f"same model and settings: {len(wanted) - len(reusable)} new or changed track(s) embedded, "
            f"{len(reusable)} reused, {removed} removed"
        )
        return cls(wanted, previous, reusable, removed, unchanged, hop_frames, config, "incremental", reason)


def _write_export(
    embeddings_dir: Path,
    plan: _ExportPlan,
    features: FeatureStore,
    model_dir_or_encoder: Path | str | Encoder,
    encoder: Encoder,
    options: EmbedOptions,
    engine: EngineOptions,
    progress: Progress | None,
    device: str,
) -> tuple[EmbeddingWriter, Any, str]:
    """Write the export aside, reused tracks copied from their shards and new ones embedded on ``engine``, in the
    features' order, and swap it into place; the writer, the meta written and the device the model ran on."""
    wanted, previous = plan.wanted, plan.previous
    tasks, windows = _plan_tasks(features, encoder, plan.to_embed, plan.hop_frames, options.batch_size)
    old_descriptors = previous.track_descriptors() if previous is not None and plan.reusable else None
    total, done = sum(windows), 0
    with staged_dir(embeddings_dir) as stage, contextlib.ExitStack() as stack:
        writer = EmbeddingWriter(stage, int(encoder.embedding_dim), options.shard_mb * 1024 * 1024)
        at = 0  # the next track of ``wanted`` to write: features order (sorted by content id), the same every run

        def write_reused(until: str | None) -> None:
            """Copy the reused tracks before ``until`` (a track to embed; None: to the end) to the writer."""
            nonlocal at
            while at < len(wanted) and wanted[at]["track_id"] != until:
                tid = wanted[at]["track_id"]
                assert previous is not None and old_descriptors is not None, tid
                rows, starts = previous.segments_of(tid)
                old_descriptor = old_descriptors[previous.track(tid)["row"]]
                vectors = previous.track_segment_vectors(tid)  # from its shard: the old export is never loaded whole
                writer.add_track(wanted[at], starts, previous.segment_ends[rows], vectors, old_descriptor)
                at += 1

        def on_result(index: int, result: list[Any] | TaskFailure) -> None:
            nonlocal at, done
            if isinstance(result, TaskFailure):
                _raise_failure(result)
            assert not isinstance(result, TaskFailure)
            for tid, starts_s, ends_s, vectors, descriptor in result:
                write_reused(tid)
                writer.add_track(wanted[at], starts_s, ends_s, vectors, descriptor)
                at += 1
            done += windows[index]
            if progress:
                progress("embedding", done, total)

        if tasks:
            runner = stack.enter_context(open_engine(engine, 1 if engine.name == "local" else 0))
            device = _run_tasks(
                runner, tasks, on_result, features, model_dir_or_encoder, encoder, plan.hop_frames, options
            )
        write_reused(None)
        meta = writer.finish(plan.config, plan.inputs, extra={"export": plan.mode, "reason": plan.reason})
    return writer, meta, device


SEGMENT_ROW_BYTES = 96  # a segment's row in the tables (ids, times) beside its vector, generously


def export_bytes(features: FeatureStore, encoder: Encoder, hop_frames: int) -> int:
    """About how much an export of ``features`` writes: every segment's float32 vector and table row (the whole
    export is written anew, reused vectors included), and each track's descriptor."""
    segments = sum(max(0, int(t["frames"]) - 1) // hop_frames + 1 for t in features.tracks)
    descriptors = len(features) * 4 * track_descriptor_dim(encoder)
    return segments * (4 * int(encoder.embedding_dim) + SEGMENT_ROW_BYTES) + descriptors


@dataclass
class _EmbedJob:
    """What every embed task shares: the features and the model (the objects in this process; paths, or a CPU
    encoder, for workers elsewhere), where to load the model, and the segment settings."""

    features: FeatureStore | Path
    model: Encoder | Path
    device: str
    hop_frames: int
    batch_size: int


def _plan_tasks(
    features: FeatureStore, encoder: Encoder, tracks: list[dict[str, Any]], hop_frames: int, batch_size: int
) -> tuple[list[list[dict[str, Any]]], list[int]]:
    """``tracks`` cut into runs of consecutive tracks of about TASK_BATCHES batches of windows, and each run's
    number of windows."""
    seg = int(encoder.segment_frames)
    tasks: list[list[dict[str, Any]]] = []
    windows: list[int] = []
    empty = []
    for t in tracks:
        n = len(window_starts(int(features.track(t["track_id"])["frames"]), seg, hop_frames))
        if n == 0:
            empty.append(t["track_id"])
        if not tasks or windows[-1] >= TASK_BATCHES * batch_size:
            tasks.append([])
            windows.append(0)
        tasks[-1].append(t)
        windows[-1] += n
    if empty:
        raise InputError(f"{len(empty)} track(s) have no feature frames (e.g. {empty[0]}); re-run extract.")
    return tasks, windows


def _run_tasks(
    engine: Engine,
    tasks: list[list[dict[str, Any]]],
    on_result: Any,
    features: FeatureStore,
    model: Path | str | Encoder,
    encoder: Encoder,
    hop_frames: int,
    options: EmbedOptions,
) -> str:
    """Run the embed tasks on ``engine`` (results to ``on_result`` in task order); returns where they ran."""
    from embedtool.model.encoder import Encoder

    if engine.in_process:
        job = _EmbedJob(features, encoder, str(encoder.device.type), hop_frames, options.batch_size)
        # On a CPU, torch's threads follow the CPUs actually free, looked at again after each task (a block of
        # tracks) at most every few seconds.
        cpu = CpuBudget("embed") if encoder.device.type == "cpu" else None

        def checked(index: int, result: Any) -> None:
            on_result(index, result)
            if cpu is not None:
                cpu.recheck()

        with cpu.applied() if cpu is not None else contextlib.nullcontext():
            engine.run(_embed_task, tasks, checked, shared=job, setup=_embed_setup, threads=None, ordered=True)
        return str(encoder.device.type)
    gpus = options.device != "cpu" and getattr(engine, "gpus", 0) > 0
    if options.device == "cuda" and not gpus:
        raise ConfigError("embed.device is 'cuda', but the Ray cluster has no GPU (use cpu or auto)")
    shipped = model if isinstance(model, Encoder) else Path(model)
    engine.check_paths(readable=[features.directory] + ([] if isinstance(shipped, Encoder) else [shipped]))
    # On a GPU worker the model goes where options.device says (auto: the worker's GPU when torch sees one).
    job = _EmbedJob(features.directory, shipped, options.device if gpus else "cpu", hop_frames, options.batch_size)
    engine.run(_embed_task, tasks, on_result, shared=job, setup=_embed_setup, threads=1, ordered=True, gpus=gpus)
    workers = min(engine.gpus, len(tasks)) if gpus else min(engine.workers, len(tasks))  # type: ignore[attr-defined]
    return f"{engine.name}: {workers} {'GPU' if gpus else 'CPU'} worker(s)"


def _raise_failure(failure: TaskFailure) -> None:
    """An embed task that failed ends the export (nothing is written): its own error, or a plain one."""
    if isinstance(failure.error, EmbedtoolError):
        raise failure.error
    if failure.worker_died:
        raise EmbedtoolError(
            f"A worker died while embedding ({failure.error}); nothing was written: run `embedtool embed` again."
        ) from failure.error
    raise failure.error


def _embed_setup(job: _EmbedJob) -> tuple[_EmbedJob, FeatureStore, Encoder]:
    """A worker's context, made once: the features opened and the model loaded (onto the worker's GPU, if any)."""
    from embedtool.model.encoder import Encoder

    features = job.features if isinstance(job.features, FeatureStore) else FeatureStore(Path(job.features))
    if isinstance(job.model, Encoder):
        encoder = job.model if job.model.device.type == job.device else _moved(job.model, job.device)
    else:
        encoder = load_encoder(job.model, job.device)
    return job, features, encoder


def _moved(encoder: Encoder, device: str) -> Encoder:
    """The same network (and companion) as an Encoder on ``device``."""
    from embedtool.model.encoder import Encoder

    companion = _moved(encoder.companion, device) if encoder.companion is not None else None
    return Encoder(
        encoder.net, encoder.feature_settings, encoder.train_settings, encoder.fingerprint, encoder.config,
        device=device, batch_size=encoder.batch_size, companion=companion,
    )  # fmt: skip


def _embed_task(
    context: tuple[_EmbedJob, FeatureStore, Encoder], tracks: list[dict[str, Any]]
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """One task (in a worker): ``(track_id, start_s, end_s, vectors, descriptor)`` for each of ``tracks``, in order."""
    job, features, encoder = context
    embedded = _embed_tracks(features, encoder, tracks, job.hop_frames, job.batch_size, None)
    fps = encoder.feature_settings.frames_per_second
    out = []
    for t in tracks:
        starts_f, vectors, descriptors, energy, n_frames = embedded[t["track_id"]]
        ends_f = np.minimum(starts_f + int(encoder.segment_frames), n_frames)
        descriptor = track_descriptor(descriptors, energy, features.mel(t["track_id"]))
        out.append((t["track_id"], starts_f / fps, ends_f / fps, vectors, descriptor))
    return out


# The export settings that decide where segments start and what a window holds: vectors made with other values
# cannot be reused.
GRID_KEYS = ("hop_frames", "segment_frames", "features")


def export_staleness(previous: EmbeddingStore | None, encoder: Encoder, config: dict[str, Any]) -> str | None:
    """Why the vectors of an existing export cannot be reused with ``encoder`` and this export ``config`` (see
    :func:`export_config`), or None when they can (tracks may still be added or removed incrementally). The one
    rule, shared by the export itself and by ``pipeline.embeddings_staleness``."""
    if previous is None:
        return "no embeddings yet"
    if not previous.descriptors_current:
        return "the previous export's track descriptors are missing or outdated"
    if previous.model_fingerprint != encoder.fingerprint:
        return f"the model changed ({previous.model_fingerprint or 'unknown'} -> {encoder.fingerprint})"
    for key in GRID_KEYS:
        if fingerprint_of(previous.config.get(key)) != fingerprint_of(config[key]):
            return f"the segment setting {key!r} changed"
    return None


def open_export(directory: Path) -> EmbeddingStore | None:
    """The export in ``directory``, or None when there is none (or it cannot be read)."""
    try:
        return EmbeddingStore(directory)
    except EmbedtoolError:
        return None


def _previous_export(
    directory: Path, encoder: Encoder, config: dict[str, Any], options: EmbedOptions
) -> tuple[EmbeddingStore | None, str, str]:
    """The existing export if its vectors can be reused, else None with the reason for a full export."""
    if options.full:
        return None, "full", "full export requested"
    previous = open_export(directory)
    if previous is None:
        return None, "full", "no previous export"
    why = export_staleness(previous, encoder, config)
    if why is not None:
        return None, "full", f"{why}: every track is embedded again"
    return previous, "incremental", ""


def _embed_tracks(
    features: FeatureStore,
    encoder: Encoder,
    tracks: list[dict[str, Any]],
    hop_frames: int,
    batch_size: int,
    progress: Progress | None,
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]]:
    """{track_id: (window start frames, vectors, window descriptors, window energies, track frames)} for
    ``tracks``, batching windows across tracks."""
    seg = int(encoder.segment_frames)
    pad = silence_floor(encoder.feature_settings.log_offset)
    out_vectors: dict[str, list[np.ndarray]] = {}
    out_descriptors: dict[str, list[np.ndarray]] = {}
    out_energy: dict[str, list[np.ndarray]] = {}
    starts_of: dict[str, np.ndarray] = {}
    frames_of: dict[str, int] = {}
    skipped = []
    for t in tracks:
        n = int(features.track(t["track_id"])["frames"])
        starts = window_starts(n, seg, hop_frames)
        if len(starts) == 0:
            skipped.append(t["track_id"])
            continue
        starts_of[t["track_id"]], frames_of[t["track_id"]] = starts, n
        out_vectors[t["track_id"]] = []
        out_descriptors[t["track_id"]] = []
        out_energy[t["track_id"]] = []
    if skipped:
        raise InputError(f"{len(skipped)} track(s) have no feature frames (e.g. {skipped[0]}); re-run extract.")

    def windows() -> Iterator[tuple[str, np.ndarray]]:
        for tid, starts in starts_of.items():
            mel = features.mel(tid)
            for i in range(0, len(starts), batch_size):  # bounded chunks: long tracks never load whole
                yield tid, crop_many(mel, starts[i : i + batch_size], seg, pad)

    total = sum(len(s) for s in starts_of.values())
    done = 0
    pending: list[tuple[str, np.ndarray]] = []
    pending_n = 0

    def flush() -> None:
        nonlocal pending, pending_n, done
        batch = np.concatenate([w for _, w in pending])
        vectors, descriptors, energy = encoder.embed_windows(batch, descriptors=True)
        at = 0
        for tid, w in pending:
            out_vectors[tid].append(vectors[at : at + len(w)])
            out_descriptors[tid].append(descriptors[at : at + len(w)])
            out_energy[tid].append(energy[at : at + len(w)])
            at += len(w)
        done += len(batch)
        pending, pending_n = [], 0
        if progress:
            progress("embedding", done, total)

    for tid, w in windows():
        pending.append((tid, w))
        pending_n += len(w)
        if pending_n >= batch_size:
            flush()
    if pending:
        flush()
    return {
        tid: (
            starts_of[tid],
            np.concatenate(out_vectors[tid]),
            np.concatenate(out_descriptors[tid]),
            np.concatenate(out_energy[tid]),
            frames_of[tid],
        )
        for tid in starts_of
    }
