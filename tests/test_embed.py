"""Embeddings artefact and the embed stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedtool.artefacts import staged_dir
from embedtool.embedding.pooling import l2_normalise, pool_track
from embedtool.embedding.store import EmbeddingStore, EmbeddingWriter, segment_id
from embedtool.errors import MissingArtefactError


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    return l2_normalise(rng.standard_normal((n, dim)).astype(np.float32))


def test_pool_track_is_normalised_mean() -> None:
    v = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    pooled = pool_track(v)
    assert np.allclose(pooled, [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)
    with pytest.raises(ValueError):
        pool_track(np.zeros((0, 2), dtype=np.float32))


def test_store_roundtrip_with_small_shards(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    dim = 8
    tracks = [("a" * 16, 5), ("b" * 16, 1), ("c" * 16, 7)]
    vectors = {tid: _unit(rng, n, dim) for tid, n in tracks}
    out = tmp_path / "emb"
    with staged_dir(out) as stage:
        writer = EmbeddingWriter(stage, dim, max_shard_bytes=4 * dim * 4)  # 4 rows per shard
        for tid, n in tracks:
            starts = np.arange(n) * 0.5
            writer.add_track(
                {"track_id": tid, "path": f"/x/{tid}.wav", "label": "L", "group": None, "duration_s": n * 0.5},
                starts,
                starts + 1.0,
                vectors[tid],
            )
        writer.finish({"hop_s": 0.5}, {"features": "f1", "model": "m1"})
    store = EmbeddingStore(out)
    assert store.dim == dim and store.model_fingerprint == "m1"
    assert len(store.meta.extra["segment_shards"]) == 4  # 13 rows in shards of 4
    seg = store.segment_vectors()
    assert seg.shape == (13, dim)
    assert np.array_equal(seg, np.concatenate([vectors[t] for t, _ in tracks]))
    rows, starts = store.segments_of("c" * 16)
    assert np.array_equal(seg[rows], vectors["c" * 16])
    assert np.allclose(starts, np.arange(7) * 0.5)
    assert store.segments[6]["segment_id"] == segment_id("c" * 16, 0.0) == "c" * 16 + "@0"
    assert store.segments[7]["segment_id"] == "c" * 16 + "@500"
    assert store.track_ids() == [t for t, _ in tracks]
    tv = store.track_vectors()
    assert tv.shape == (3, dim)
    assert np.allclose(tv[0], pool_track(vectors["a" * 16]))
    assert store.tracks[2]["n_segments"] == 7 and store.tracks[2]["row"] == 2


def test_store_missing_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(MissingArtefactError, match="embedtool embed"):
        EmbeddingStore(tmp_path / "nothing")
