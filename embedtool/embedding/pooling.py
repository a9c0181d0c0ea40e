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
"""

from __future__ import annotations

import numpy as np

# Written into the embeddings' meta: an export whose descriptors were pooled another way is re-made.
DESCRIPTOR_KIND = "stage-activations-2-bands/energy-weighted-mean/sqrt"


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
