"""Pooling window vectors into one vector per track: embeddings for search, descriptors for classifiers.

The rule, documented once: a track's embedding is the **mean of its segment embeddings, re-L2-normalised**.
Segment embeddings are unit vectors, so the mean points towards where most of the track's segments lie; the
re-normalisation puts track vectors on the same unit sphere, so inner product is cosine similarity for tracks
exactly as for segments. A track whose segments cancel out (a zero mean, practically impossible) keeps a zero
vector rather than a division by zero.

A track's *descriptor* (what classifiers read; see ``model.network``) is the **energy-weighted mean of its
window descriptors, square-rooted element-wise**. Weighting by each window's mean power lets the sounding part
of a track speak rather than its silence: a one-shot's decay windows, a fade-out, padding. The square root (the
power normalisation of pooled non-negative features, cf. Hellinger kernels) tames the few activations that are
large on every track so a linear classifier sees the rest. Measured: docs/decisions/0002-pooling-of-descriptors.md.
The track descriptor then carries the MFCC statistics of the track's frames (``features.mfcc``): the stage
activations keep the spectral envelope only in two bands, and a voice or a language is told apart by just that
envelope (docs/decisions/0013-descriptors-carry-mfcc-statistics.md). A classifier standardises every column, so
the two parts need no weighting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from embedtool.features.mfcc import N_MFCC, frame_statistics, mfcc, mfcc_statistics

if TYPE_CHECKING:
    from embedtool.model.encoder import Encoder

# Written into the embeddings' meta: an export whose descriptors were pooled another way is re-made.
DESCRIPTOR_KIND = "stage-activations-2-bands/energy-weighted-mean/sqrt+mfcc20-mean-std"
MFCC_PART = 2 * N_MFCC  # the MFCC statistics' share of a track descriptor


def l2_normalise(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (float32); zero rows stay zero."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, eps)).astype(np.float32, copy=False)


def pool_track(segment_vectors: np.ndarray) -> np.ndarray:
    """One track vector from its (n_segments, dim) segment vectors: mean, then L2-normalised."""
    segment_vectors = np.asarray(segment_vectors, dtype=np.float32)
    if segment_vectors.ndim != 2 or segment_vectors.shape[0] == 0:
        raise ValueError(f"expected a non-empty (n_segments, dim) array, got shape {segment_vectors.shape}")
    return l2_normalise(segment_vectors.mean(axis=0, dtype=np.float64).astype(np.float32))


def pool_descriptors(window_descriptors: np.ndarray, window_energy: np.ndarray) -> np.ndarray:
    """One track descriptor from its (n_windows, descriptor_dim) non-negative window descriptors and their
    (n_windows,) energies: the energy-weighted mean, square-rooted (float32). All-silent tracks weigh evenly."""
    window_descriptors = np.asarray(window_descriptors, dtype=np.float64)
    weights = np.asarray(window_energy, dtype=np.float64).reshape(-1)
    if window_descriptors.ndim != 2 or window_descriptors.shape[0] == 0 or len(weights) != len(window_descriptors):
        raise ValueError(
            f"expected (n_windows, dim) descriptors with one energy per window, got {window_descriptors.shape} "
            f"and {weights.shape}"
        )
    if not np.isfinite(weights).all() or weights.sum() <= 0:
        weights = np.ones(len(window_descriptors))
    mean = (weights[:, None] * window_descriptors).sum(axis=0) / weights.sum()
    return np.sqrt(np.maximum(mean, 0.0)).astype(np.float32)


def track_descriptor(window_descriptors: np.ndarray, window_energy: np.ndarray, mel: np.ndarray) -> np.ndarray:
    """A track's descriptor (float32): its pooled window descriptors, then the MFCC statistics of its log-Mel
    frames ``mel`` (frames, n_mels; a memory-mapped shard slice is read in blocks)."""
    return np.concatenate([pool_descriptors(window_descriptors, window_energy), mfcc_statistics(mel)])


def window_track_descriptors(
    window_descriptors: np.ndarray, window_energy: np.ndarray, mel: np.ndarray, starts: np.ndarray, window_frames: int
) -> np.ndarray:
    """Each window read as a track of that one window (``track_descriptor`` of its descriptor, energy and frames
    ``mel[start : start + window_frames]``), one row per window; the MFCCs of the overlapping windows are computed
    once, over all of ``mel``."""
    coefficients = mfcc(mel)
    rows = zip(np.asarray(starts).tolist(), window_descriptors, window_energy, strict=True)
    pooled = [(pool_descriptors(d[None, :], e[None]), coefficients[s : s + window_frames]) for s, d, e in rows]
    return np.stack([np.concatenate([network, frame_statistics(frames)]) for network, frames in pooled])


def track_descriptor_dim(encoder: Encoder) -> int:
    """How many numbers ``track_descriptor`` returns for this encoder's window descriptors."""
    return int(encoder.descriptor_dim) + MFCC_PART
