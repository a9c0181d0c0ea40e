"""Hand-crafted baselines computed from the features artefact: MFCC (or log-Mel) statistics.

An MFCC here is the orthonormal DCT-II of a frame's log-Mel vector, the textbook definition (Davis &
Mermelstein); the first ``n_mfcc`` coefficients are kept. A track (or a time range of it) is summarised by the
mean and standard deviation of each coefficient over its frames, the classic "bag of frames" baseline that a
learnt embedding must beat. Computing it from the cached log-Mels means the baseline sees exactly the same
audio front end, tracks and splits as the embeddings it is compared with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy.fft import dct

from embedtool.errors import InputError

if TYPE_CHECKING:
    from embedtool.features.store import FeatureStore


BaselineKind = Literal["mfcc", "logmel"]


def mfcc(mel: np.ndarray, n_mfcc: int = 20) -> np.ndarray:
    """MFCCs (frames, n_mfcc) from a log-Mel matrix (frames, n_mels): orthonormal DCT-II over the mel axis."""
    mel = np.asarray(mel, dtype=np.float32)
    if mel.ndim != 2:
        raise ValueError(f"expected a (frames, n_mels) matrix, got shape {mel.shape}")
    n = min(n_mfcc, mel.shape[1])
    return dct(mel, type=2, axis=1, norm="ortho")[:, :n].astype(np.float32)


def frame_statistics(frames: np.ndarray) -> np.ndarray:
    """Mean and standard deviation of each column over the frames: one vector of 2 x columns."""
    frames = np.asarray(frames, dtype=np.float64)
    if frames.shape[0] == 0:
        raise ValueError("no frames to summarise")
    return np.concatenate([frames.mean(axis=0), frames.std(axis=0)]).astype(np.float32)


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
