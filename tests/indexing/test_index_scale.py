"""Indexing at scale: sharded vectors read without concatenation, the exact ground truth by a sharded scan, and
the on-disk ivf-pq index (filled in blocks, merged, moved, loaded) answering as the in-memory one does."""

from __future__ import annotations

import shutil
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
import pytest

from embedtool.embedding.pooling import l2_normalise
from embedtool.embedding.vectors import ShardedVectors
from embedtool.indexing.build import build_index, exact_top_k
from embedtool.indexing.options import IndexOptions
from embedtool.indexing.search import VectorIndex
from embedtool.indexing.store import IdTables


def _clustered(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, dim))
    return l2_normalise(centres[rng.integers(0, 20, n)] + 0.6 * rng.standard_normal((n, dim))).astype(np.float32)


def _shards(x: np.ndarray, sizes: list[int], directory: Path) -> ShardedVectors:
    """``x`` split into memory-mapped .npy shards of the given sizes (as an embeddings export stores them)."""
    shards, at = [], 0
    for i, size in enumerate(sizes):
        np.save(directory / f"segments-{i:04d}.npy", x[at : at + size])
        shards.append(np.load(directory / f"segments-{i:04d}.npy", mmap_mode="r"))
        at += size
    assert at == len(x)
    return ShardedVectors(shards)


def test_sharded_vectors_gather_and_blocks(tmp_path: Path) -> None:
    x = _clustered(1000, 8)
    source = _shards(x, [300, 1, 450, 249], tmp_path)
    assert source.shape == (1000, 8)
    rows = np.array([999, 0, 300, 301, 5, 5, 750])  # any order, repeats, shard boundaries
    assert np.array_equal(source[rows], x[rows])
    firsts = [first for first, _ in source.blocks(100)]
    assert np.array_equal(np.concatenate([b for _, b in source.blocks(100)]), x)
    assert firsts[:4] == [0, 100, 200, 300]  # blocks never straddle shards
    assert np.array_equal(source.span(250, 760), x[250:760]) and source.span(5, 5).shape == (0, 8)
    with pytest.raises(IndexError):
        source[[1000]]


def test_sharded_exact_search_equals_flat_and_leaves_out_the_query(tmp_path: Path) -> None:
    x = _clustered(3000, 16)
    source = _shards(x, [1000, 1500, 500], tmp_path)
    own = np.array([3, 1200, 2999, 1800])
    truth = exact_top_k(source, x[own], 10, query_rows=own, block_rows=700)
    flat = faiss.IndexFlatIP(16)
    flat.add(x)
    _, expected = flat.search(x[own], 11)
    for found, want, row in zip(truth, expected, own, strict=True):
        assert row not in found
        assert set(found) == set(want[want != row][:10])


def test_on_disk_ivf_pq_in_8_blocks_moved_answers_like_in_memory(tmp_path: Path) -> None:
    x = _clustered(16_000, 32)
    queries = _clustered(50, 32, seed=1)
    source = _shards(x, [4000, 4000, 4000, 4000], tmp_path)
    common = {"kind": "ivf-pq", "target_recall": 0.9, "eval_queries": 100, "ivf_nlist": 64}
    in_memory = build_index(source, IndexOptions(**common, on_disk="off"))
    built_dir = tmp_path / "stage"
    built_dir.mkdir()
    on_disk = build_index(source, IndexOptions(**common, on_disk="on", block_vectors=2000), directory=built_dir)
    assert on_disk.params["on_disk"] and not in_memory.params.get("on_disk")
    assert on_disk.params["nprobe"] == in_memory.params["nprobe"] and on_disk.recall == in_memory.recall
    assert (built_dir / "segments.ivfdata").is_file() and not list(built_dir.glob(".*blocks*"))
    faiss.write_index(on_disk.index.index, str(built_dir / "segments.faiss"))
    del on_disk

    moved = tmp_path / "elsewhere" / "index"  # as a staged folder is swapped into place
    moved.parent.mkdir()
    shutil.move(str(built_dir), moved)
    params = {"on_disk": True, "nprobe": in_memory.params["nprobe"], "refine": in_memory.params["refine"]}
    loaded = VectorIndex.load(moved / "segments.faiss", "ivf-pq", params)
    loaded.refine_vectors = source
    assert loaded.ntotal == len(x)
    got_scores, got_rows = loaded.search(queries, 10)
    want_scores, want_rows = in_memory.index.search(queries, 10)
    assert np.array_equal(got_rows, want_rows)
    assert np.allclose(got_scores, want_scores)
    _, rows = loaded.search(x[:20], 10, exclude_rows=(0, 10))
    assert not np.any((rows >= 0) & (rows < 10))


def test_id_tables_read_older_segment_tables_without_their_strings() -> None:
    old = pa.table(
        {
            "segment_id": ["a@0", "a@500", "b@0"],
            "track_id": ["a", "a", "b"],
            "start_s": [0.0, 0.5, 0.0],
            "end_s": [1.0, 1.5, 1.0],
            "row": [0, 1, 2],
        }
    )
    tracks = pa.table({"track_id": ["a", "b"], "n_segments": [2, 1], "row": [0, 1]})
    tables = IdTables.from_tables(old, tracks)
    assert list(tables.segment_track) == [0, 0, 1]
    assert [tables.segment_id(r) for r in range(3)] == ["a@0", "a@500", "b@0"]
    assert tables.position("b") == 1 and tables.position("zz") is None


def test_on_disk_index_through_the_pipeline_survives_a_moved_workspace(trained_workspace_copy, tmp_path: Path) -> None:
    from embedtool import pipeline
    from embedtool.indexing.store import IndexStore
    from embedtool.query.searcher import Searcher
    from embedtool.verify import verify_workspace
    from embedtool.workspace import Workspace

    ws = trained_workspace_copy
    options = {"kind": "ivf-pq", "calibration_tracks": 6, "eval_queries": 20, "fingerprints": "off"}
    pipeline.index(ws, IndexOptions(**options, on_disk="off"))
    track = Searcher.open(ws).tables.tracks[3]
    want = Searcher.open(ws).query_file(track["path"], mode="similar", k=5, segments=True)

    pipeline.index(ws, IndexOptions(**options, on_disk="on"))
    assert IndexStore(ws.index).meta.extra["segments"]["params"]["on_disk"]
    assert (ws.index / "segments.ivfdata").is_file() and (ws.index / "segment_track.npy").is_file()
    assert not (ws.index / "segments.parquet").exists()  # per-segment ids are arrays now
    moved = Workspace.at(tmp_path / "moved")
    shutil.move(str(ws.root), moved.root)
    got = Searcher.open(moved).query_file(track["path"], mode="similar", k=5, segments=True)
    assert [(m.track_id, m.score) for m in got.matches] == [(m.track_id, m.score) for m in want.matches]
    assert [h.segment_id for h in got.segments] == [h.segment_id for h in want.segments]
    assert got.segments[0].segment_id.split("@")[0] == got.segments[0].track_id
    index_check = [a for a in verify_workspace(moved).artefacts if a.kind == "index"]
    assert [a.status for a in index_check] == ["ok"], index_check


def test_an_on_disk_index_whose_lists_were_overwritten_is_refused_as_damaged(tmp_path: Path) -> None:
    from embedtool.errors import DamagedArtefactError

    x = _clustered(4000, 16)
    options = IndexOptions(kind="ivf-pq", on_disk="on", ivf_nlist=16, eval_queries=50)
    built = build_index(x, options, directory=tmp_path)
    faiss.write_index(built.index.index, str(tmp_path / "segments.faiss"))
    data = tmp_path / "segments.ivfdata"
    data.write_bytes(np.random.default_rng(0).integers(0, 256, data.stat().st_size, dtype=np.uint8).tobytes())
    loaded = VectorIndex.load(tmp_path / "segments.faiss", "ivf-pq", {"on_disk": True, "nprobe": 16})
    with pytest.raises(DamagedArtefactError, match="segments.faiss .or its .ivfdata. answered row"):
        loaded.search(x[:5], 10)
