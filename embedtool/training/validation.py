"""Validation measures computed on held-out tracks each epoch.

- Same-track retrieval: up to N non-overlapping segments per validation track, spread evenly over it; each
  segment of a track with at least two segments queries all the other segments (itself excluded);
  ``recall_at_k`` is the share of queries with a segment of their own track among the k nearest (cosine).
- Collapse check: ``effective_rank`` (exp of the entropy of the normalised singular values of the centred
  embeddings; 1 means everything lies on one line) and ``dim_std`` (mean per-dimension standard deviation).
"""

from __future__ import annotations

import numpy as np

from embedtool.features.windows import crop, window_starts


def spread_starts(n_frames: int, segment_frames: int, per_track: int) -> np.ndarray:
    """Up to ``per_track`` non-overlapping window starts spread evenly over a track."""
    starts = window_starts(n_frames, segment_frames, segment_frames)
    if len(starts) <= per_track:
        return starts
    pick = np.round(np.linspace(0, len(starts) - 1, per_track)).astype(int)
    return starts[pick]


def validation_windows(
    mels: list[np.ndarray], segment_frames: int, per_track: int, pad_value: float
) -> tuple[np.ndarray, np.ndarray]:
    """(windows [N, frames, mels] float32, track index per window)."""
    windows, owners = [], []
    for i, mel in enumerate(mels):
        for s in spread_starts(mel.shape[0], segment_frames, per_track):
            windows.append(crop(mel, int(s), segment_frames, pad_value))
            owners.append(i)
    if not windows:
        return np.zeros((0, segment_frames, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.stack(windows), np.asarray(owners, dtype=np.int64)


def retrieval_recall(embeddings: np.ndarray, owners: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """Same-track recall@k over queries from tracks with >= 2 segments; empty when there are none."""
    counts = np.bincount(owners) if len(owners) else np.zeros(0, dtype=np.int64)
    queries = np.flatnonzero(counts[owners] >= 2) if len(owners) else np.zeros(0, dtype=np.int64)
    if len(queries) == 0 or len(np.unique(owners)) < 2:
        return {}
    sims = embeddings[queries] @ embeddings.T
    sims[np.arange(len(queries)), queries] = -np.inf  # a query never finds itself
    kmax = min(max(ks), len(owners) - 1)
    top = np.argsort(-sims, axis=1)[:, :kmax]
    hits = owners[top] == owners[queries][:, None]
    return {f"recall_at_{k}": float(hits[:, : min(k, kmax)].any(1).mean()) for k in ks}


def collapse_stats(embeddings: np.ndarray) -> dict[str, float]:
    embeddings = embeddings[np.isfinite(embeddings).all(1)]  # a broken input must not break validation
    if len(embeddings) < 2:
        return {}
    centred = embeddings - embeddings.mean(0, keepdims=True)
    s = np.linalg.svd(centred.astype(np.float64), compute_uv=False)
    energy = s**2
    if energy.sum() <= 0:
        return {"effective_rank": 1.0, "dim_std": 0.0}
    p = energy / energy.sum()
    p = p[p > 0]
    return {
        "effective_rank": float(np.exp(-(p * np.log(p)).sum())),
        "dim_std": float(embeddings.std(0).mean()),
    }
