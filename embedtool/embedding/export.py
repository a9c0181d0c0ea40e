"""The embed stage: run the trained encoder over every track's features and write the embeddings artefact.

Windows are cut with THE segment rule (``features.windows``): every ``hop`` frames, one more window ending at
the track's last frame, short tracks padded to one window. Windows of many tracks are batched together (a
library of one-shots would otherwise run the network one window at a time) and long tracks are cut in
bounded chunks, so memory does not grow with a track's length.

Incremental: when the model and the segment settings are those of the existing export, only tracks that are
new (a changed file is a new content id) are embedded; vectors of the others are copied, and tracks no longer
in the features are dropped. Any other difference means a full export, and the report says which happened
and why.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedtool.artefacts import check_free_space, fingerprint_of, staged_dir
from embedtool.config import settings_dict
from embedtool.embedding.options import EmbedOptions
from embedtool.embedding.pooling import pool_descriptors
from embedtool.embedding.store import EmbeddingStore, EmbeddingWriter
from embedtool.errors import EmbedtoolError, InputError
from embedtool.features.store import FeatureStore
from embedtool.features.windows import crop_many, silence_floor, window_starts
from embedtool.model.device import resolve_device_name
from embedtool.progress import Progress

if TYPE_CHECKING:
    from embedtool.model.encoder import Encoder

# Track-table columns copied from the features table; a difference in any of them rewrites the tables.
TRACK_FIELDS = ("track_id", "path", "label", "group", "duration_s")


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
) -> EmbedReport:
    """Embed every track of ``features_dir`` with a model folder or an :class:`Encoder` into ``embeddings_dir``."""
    options = options or EmbedOptions()
    options.validate()
    started = time.perf_counter()
    features = FeatureStore(Path(features_dir))
    device = resolve_device_name(options.device)
    encoder = load_encoder(model_dir_or_encoder, device)
    encoder.check_features(features.settings)
    if len(features) == 0:
        raise InputError(f"The features at {features_dir} hold no tracks; run `embedtool extract PATH` on audio.")
    hop_frames = hop_frames_for(encoder, options.hop_seconds)
    config = export_config(encoder, options, hop_frames)
    inputs = {"features": features.fingerprint, "model": encoder.fingerprint}
    embeddings_dir = Path(embeddings_dir)

    previous, mode, reason = _previous_export(embeddings_dir, encoder, config, options)
    wanted = [{k: t.get(k) for k in TRACK_FIELDS} for t in features.tracks]
    wanted_ids = {t["track_id"] for t in wanted}
    reusable: set[str] = set()
    removed = 0
    if previous is not None:
        reusable = {tid for tid in previous.track_ids() if tid in wanted_ids}
        removed = len(previous) - len(reusable)
        old_rows = [
            {k: previous.track(t["track_id"]).get(k) for k in TRACK_FIELDS} for t in wanted if t["track_id"] in reusable
        ]
        if len(reusable) == len(wanted) and removed == 0 and old_rows == wanted:
            # Nothing to do: same model, settings, tracks and track facts.
            return EmbedReport(
                mode="unchanged", reason="same model, settings and tracks as the existing export",
                tracks=len(previous), segments=previous.n_segments, embedded_tracks=0,
                reused_tracks=len(previous), removed_tracks=0, dim=previous.dim,
                seconds=time.perf_counter() - started, device=device, fingerprint=previous.fingerprint,
            )  # fmt: skip
        mode = "incremental"
        reason = (
            f"same model and settings: {len(wanted) - len(reusable)} new or changed track(s) embedded, "
            f"{len(reusable)} reused, {removed} removed"
        )

    to_embed = [t for t in wanted if t["track_id"] not in reusable]
    check_free_space(embeddings_dir.parent, export_bytes(features, encoder, hop_frames), "the embeddings")
    embedded = _embed_tracks(features, encoder, to_embed, hop_frames, options.batch_size, progress)
    old_vectors = previous.segment_vectors() if previous is not None and reusable else None
    old_descriptors = previous.track_descriptors() if previous is not None and reusable else None
    fps = encoder.feature_settings.frames_per_second

    with staged_dir(embeddings_dir) as stage:
        writer = EmbeddingWriter(stage, int(encoder.embedding_dim), options.shard_mb * 1024 * 1024)
        for track in wanted:  # features order (sorted by content id): the same order on every run
            tid = track["track_id"]
            if tid in reusable:
                assert previous is not None and old_vectors is not None
                rows, starts = previous.segments_of(tid)
                old_descriptor = old_descriptors[previous.track(tid)["row"]]
                writer.add_track(track, starts, previous.segment_ends[rows], old_vectors[rows], old_descriptor)
            else:
                starts_f, vectors, descriptors, energy, n_frames = embedded[tid]
                ends_f = np.minimum(starts_f + int(encoder.segment_frames), n_frames)
                descriptor = pool_descriptors(descriptors, energy)
                writer.add_track(track, starts_f / fps, ends_f / fps, vectors, descriptor)
        meta = writer.finish(config, inputs, extra={"export": mode, "reason": reason})
    return EmbedReport(
        mode=mode,
        reason=reason,
        tracks=writer.n_tracks,
        segments=writer.n_segments,
        embedded_tracks=len(to_embed),
        reused_tracks=len(reusable),
        removed_tracks=removed,
        dim=int(encoder.embedding_dim),
        seconds=time.perf_counter() - started,
        device=device,
        fingerprint=meta.fingerprint,
    )


SEGMENT_ROW_BYTES = 96  # a segment's row in the tables (ids, times) beside its vector, generously


def export_bytes(features: FeatureStore, encoder: Encoder, hop_frames: int) -> int:
    """About how much an export of ``features`` writes: every segment's float32 vector and table row (the whole
    export is written anew, reused vectors included), and each track's descriptor."""
    segments = sum(max(0, int(t["frames"]) - 1) // hop_frames + 1 for t in features.tracks)
    return segments * (4 * int(encoder.embedding_dim) + SEGMENT_ROW_BYTES) + len(features) * 4 * encoder.descriptor_dim


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
