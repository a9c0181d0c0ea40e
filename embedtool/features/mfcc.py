"""MFCCs and their statistics over frames, from the cached log-Mels.

An MFCC here is the orthonormal DCT-II of a frame's log-Mel vector, the textbook definition (Davis &
Mermelstein); the first ``n_mfcc`` coefficients are kept. A stretch of audio is summarised by the mean and the
standard deviation of each coefficient over its frames: the classic "bag of frames" description. It is both the
baseline a learnt embedding must beat (``analysis.baselines``) and a part of every track descriptor
(``embedding.pooling``): the network's stage activations, pooled in two frequency bands, keep the spectral
envelope only coarsely, and speech (a language, a voice) is told apart by just that envelope
(docs/decisions/0013-descriptors-carry-mfcc-statistics.md).
"""

from __future__ import annotations

import numpy as np
from scipy.fft import dct

N_MFCC = 20
# Frames summarised at a time: a long track's log-Mels (a memory-mapped shard) are never loaded whole.
BLOCK_FRAMES = 1 << 16


def mfcc(mel: np.ndarray, n_mfcc: int = N_MFCC) -> np.ndarray:
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


def mfcc_statistics(mel: np.ndarray, n_mfcc: int = N_MFCC) -> np.ndarray:
    """``frame_statistics(mfcc(mel))`` (float32, 2 x n_mfcc), read ``BLOCK_FRAMES`` frames at a time."""
    if mel.ndim != 2 or mel.shape[0] == 0:
        raise ValueError(f"expected a non-empty (frames, n_mels) matrix, got shape {mel.shape}")
    if mel.shape[0] <= BLOCK_FRAMES:
        return frame_statistics(mfcc(mel, n_mfcc))
    total = np.zeros(min(n_mfcc, mel.shape[1]))
    squares = np.zeros_like(total)
    for start in range(0, mel.shape[0], BLOCK_FRAMES):
        coefficients = mfcc(mel[start : start + BLOCK_FRAMES], n_mfcc).astype(np.float64)
        total += coefficients.sum(axis=0)
        squares += (coefficients**2).sum(axis=0)
    mean = total / mel.shape[0]
    std = np.sqrt(np.maximum(squares / mel.shape[0] - mean**2, 0.0))
    return np.concatenate([mean, std]).astype(np.float32)
