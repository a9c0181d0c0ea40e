"""Retrieval quality of track vectors: precision@k of same-label neighbours (cosine), the query's own track always
left out (optionally its whole group)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def precision_at_k(
    vectors: np.ndarray,
    labels: Sequence[str],
    ks: Sequence[int],
    groups: Sequence[str] | None = None,
    block: int = 1024,
) -> dict[str, float]:
    """Mean fraction of each track's k nearest tracks (cosine) that share its label.

    The query itself is always excluded; with ``groups``, every track of the query's group is excluded too.
    k larger than the candidates available is capped (and so reported for what it is). Computed in blocks of
    queries, so memory stays at ``block`` x tracks.
    """
    x = np.asarray(vectors, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    labels_arr = np.asarray([str(v) for v in labels])
    g = np.asarray([str(v) for v in groups]) if groups is not None else None
    max_k = min(max(ks), max(n - 1, 1))
    hits: dict[int, list[float]] = {k: [] for k in ks}
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        sims = x[lo:hi] @ x.T
        sims[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf
        if g is not None:
            sims[g[lo:hi, None] == g[None, :]] = -np.inf
        top = np.argpartition(-sims, max_k - 1, axis=1)[:, :max_k] if max_k < n else np.argsort(-sims, axis=1)
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        top, top_sims = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sims, order, axis=1)
        same = labels_arr[top] == labels_arr[lo:hi, None]
        valid = np.isfinite(top_sims)
        for i in range(hi - lo):
            n_valid = int(valid[i].sum())
            for k in ks:
                kk = min(k, n_valid)
                if kk:
                    hits[k].append(float(same[i, :kk].mean()))
    return {f"p@{k}": float(np.mean(hits[k])) if hits[k] else float("nan") for k in ks}


def standardise(vectors: np.ndarray) -> np.ndarray:
    """Column z-scores: hand-crafted statistics live on very different scales (energy vs. higher MFCCs)."""
    x = np.asarray(vectors, dtype=np.float64)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    return ((x - x.mean(axis=0)) / scale).astype(np.float32)


def balanced_fusion(blocks: Sequence[np.ndarray]) -> np.ndarray:
    """Blocks of vectors of the same items side by side, each standardised and scaled by 1/sqrt(its dim) so every
    block weighs the same in a cosine, then L2-normalised (float32)."""
    joined = np.hstack([standardise(b) / np.sqrt(max(1, b.shape[1])) for b in blocks])
    return (joined / np.maximum(np.linalg.norm(joined, axis=1, keepdims=True), 1e-12)).astype(np.float32)
