"""Hand-crafted baselines computed from the features artefact: MFCC (or log-Mel) statistics.

A track (or a time range of it) is summarised by the mean and standard deviation of each MFCC (see
``features.mfcc``) over its frames, the classic "bag of frames" baseline that a learnt embedding must beat.
Computing it from the cached log-Mels means the baseline sees exactly the same audio front end, tracks and splits
as the embeddings it is compared with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from embedtool.errors import InputError
from embedtool.features.mfcc import frame_statistics, mfcc

if TYPE_CHECKING:
    from embedtool.features.store import FeatureStore


BaselineKind = Literal["mfcc", "logmel"]


def baseline_vector(mel: np.ndarray, kind: BaselineKind = "mfcc", n_mfcc: int = 20) -> np.ndarray:
    """The baseline's description of one log-Mel excerpt."""
    if kind == "mfcc":
        return frame_statistics(mfcc(mel, n_mfcc))
    if kind == "logmel":
        return frame_statistics(np.asarray(mel, dtype=np.float32))
    raise ValueError(f"unknown baseline kind {kind!r}; valid: mfcc, logmel")


def track_baseline_vectors(
    feature_store: FeatureStore,
    track_ids: Sequence[str],
    kind: BaselineKind = "mfcc",
    n_mfcc: int = 20,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """One baseline vector per track (rows in ``track_ids`` order), from a ``FeatureStore``."""
    rows = []
    for i, track_id in enumerate(track_ids):
        mel = feature_store.mel(track_id)
        if mel.shape[0] == 0:
            raise InputError(f"track {track_id} has no feature frames")
        rows.append(baseline_vector(mel, kind, n_mfcc))
        if progress is not None:
            progress(i + 1, len(track_ids))
    return np.stack(rows) if rows else np.zeros((0, 2 * n_mfcc), dtype=np.float32)


def segment_baseline_vectors(
    feature_store: FeatureStore,
    segments: Sequence[dict[str, Any]],
    kind: BaselineKind = "mfcc",
    n_mfcc: int = 20,
) -> np.ndarray:
    """One baseline vector per segment (dicts with track_id, start_s, end_s), over the same time ranges."""
    fps = feature_store.settings.frames_per_second
    rows = []
    for seg in segments:
        mel = feature_store.mel(seg["track_id"])
        start = max(0, int(round(seg["start_s"] * fps)))
        stop = min(mel.shape[0], max(start + 1, int(round(seg["end_s"] * fps))))
        start = min(start, max(0, stop - 1))
        rows.append(baseline_vector(mel[start:stop], kind, n_mfcc))
    return np.stack(rows) if rows else np.zeros((0, 2 * n_mfcc), dtype=np.float32)
