"""Pooling segment embeddings into one track embedding.

The rule, documented once: a track's embedding is the **mean of its segment embeddings, re-L2-normalised**.
Segment embeddings are unit vectors, so the mean points towards where most of the track's segments lie; the
re-normalisation puts track vectors on the same unit sphere, so inner product is cosine similarity for tracks
exactly as for segments. A track whose segments cancel out (a zero mean, practically impossible) keeps a zero
vector rather than a division by zero.
"""

from __future__ import annotations

import numpy as np


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
