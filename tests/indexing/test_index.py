"""Index building and tuning (FAISS kinds, auto choice, recall measurement, id ranges, persistence)."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import pytest

from embedtool.embedding.pooling import l2_normalise
from embedtool.errors import ConfigError, InputError
from embedtool.indexing.build import build_index, choose_kind, default_pq_m
from embedtool.indexing.options import IndexOptions
from embedtool.indexing.search import VectorIndex, recall_at_k


def _clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    return l2_normalise(centres[rng.integers(0, 20, n)] + 0.6 * rng.standard_normal((n, dim)))


def test_auto_chooses_by_cost_and_memory() -> None:
    opts = IndexOptions()
    assert choose_kind(1000, 1024, opts) == "flat"  # tiny: always exact
    assert choose_kind(100_000, 128, opts) == "flat"  # 1.3e7 multiply-adds a query: cheap
    assert choose_kind(80_000, 1024, opts) == "ivf"  # 8e7: approximate, fits memory
    assert choose_kind(80_000, 1024, IndexOptions(memory_budget_mb=100)) == "ivf-pq"  # 328 MB > budget
    assert choose_kind(10, 8, IndexOptions(kind="hnsw")) == "hnsw"
    assert default_pq_m(128) == 32 and default_pq_m(1024) == 64 and 96 % default_pq_m(96) == 0
    assert choose_kind(100_000, 128, IndexOptions(on_disk="on")) == "ivf-pq"  # only ivf-pq lives on disk
    assert choose_kind(1000, 128, IndexOptions(on_disk="on")) == "flat"
    with pytest.raises(ConfigError, match="on_disk"):
        IndexOptions(kind="hnsw", on_disk="on").validate()


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivf-pq"])
def test_approximate_kinds_reach_target_recall(kind: str) -> None:
    data = _clustered(12_300, 32)
    x, q = data[:12_000], data[12_000:]  # fresh queries from the same distribution, never indexed
    built = build_index(x, IndexOptions(kind=kind, target_recall=0.9, eval_queries=200))
    assert built.kind == kind and built.index.ntotal == len(x)
    assert built.recall is not None and built.recall >= 0.9 and built.reached_target
    name = "nprobe" if kind.startswith("ivf") else "efSearch"
    assert name in built.params and built.tuning[-1][name] == built.params[name]
    # Independent check on fresh queries against exact search.
    exact = faiss.IndexFlatIP(32)
    exact.add(x)
    truth = exact.search(q, 10)[1]
    assert recall_at_k(built.index.search(q, 10)[1], truth) >= 0.85
    # Every vector is findable by its own row id (ids are rows, even for held-out vectors added last).
    rows = built.index.search(x[:50], 1)[1][:, 0]
    assert np.mean(rows == np.arange(50)) >= 0.9


def test_flat_is_exact_and_excludes_row_ranges(tmp_path: Path) -> None:
    x = _clustered(500, 16)
    built = build_index(x, IndexOptions())
    assert built.kind == "flat" and built.summary()["recall"] == 1.0
    scores, rows = built.index.search(x[10], 5)
    assert rows[0, 0] == 10 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    _, rows = built.index.search(x[10], 5, exclude_rows=(5, 15))
    assert not np.any((rows >= 5) & (rows < 15))
    path = tmp_path / "i.faiss"
    faiss.write_index(built.index.index, str(path))
    loaded = VectorIndex.load(path, "flat")
    assert np.array_equal(loaded.search(x[:3], 4)[1], built.index.search(x[:3], 4)[1])


def test_recall_at_k_counts_overlap() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    found = np.array([[4, 3, 9, -1], [5, 6, 7, 8]])
    assert recall_at_k(found, truth) == pytest.approx((2 / 4 + 1) / 2)


def test_bad_options_and_input() -> None:
    with pytest.raises(ConfigError, match="index.kind"):
        IndexOptions(kind="annoy").validate()
    with pytest.raises(ConfigError, match="target_recall"):
        IndexOptions(target_recall=1.5).validate()
    with pytest.raises(InputError, match="Nothing to index"):
        build_index(np.zeros((0, 8), dtype=np.float32), IndexOptions())
