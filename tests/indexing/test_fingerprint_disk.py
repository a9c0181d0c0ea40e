"""Landmark fingerprints past the memory budget: built in sorted blocks on disk and merged by hash ranges into the
same memory-mapped files as an in-memory build, so identify reads them alike."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from factories import index_landmarks

from embedtool import pipeline
from embedtool.embedding.store import EmbeddingStore
from embedtool.features.store import FeatureStore
from embedtool.indexing.fingerprint import (
    FILES,
    FingerprintSettings,
    fingerprint_library,
    fingerprint_library_on_disk,
    merge_sorted,
)
from embedtool.indexing.options import IndexOptions
from embedtool.indexing.store import IndexStore
from embedtool.query.searcher import Searcher
from embedtool.workspace import Workspace


def test_blocks_merged_on_disk_equal_the_in_memory_build(trained_workspace: Workspace, tmp_path: Path) -> None:
    features = FeatureStore(trained_workspace.features)
    tracks = list(EmbeddingStore(trained_workspace.embeddings).tracks)
    settings = FingerprintSettings.for_source("peaks" if features.has_peaks(tracks) else "mel")
    whole = fingerprint_library(features, tracks, settings)
    assert len(whole) > 5000
    for block in (700, 5000, 10**9):  # many blocks, a few, one
        folder = tmp_path / f"b{block}"
        folder.mkdir()
        assert fingerprint_library_on_disk(features, tracks, settings, folder, block) == len(whole)
        written = [np.load(folder / name, mmap_mode="r") for name in FILES]
        for mine, theirs in zip(written, (whole.hashes, whole.tracks, whole.frames), strict=True):
            np.testing.assert_array_equal(mine, theirs)
        assert not (folder / ".fingerprint-blocks").exists()


def test_merge_sorted_keeps_the_earlier_block_first_among_equal_hashes(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    blocks = []
    for b in range(4):
        hashes = np.sort(rng.integers(0, 50, 300).astype(np.uint32))  # many equal hashes across blocks
        blocks.append((hashes, np.full(300, b, np.int32), np.arange(300, dtype=np.int32)))
    assert merge_sorted(blocks, tmp_path, chunk=64) == 1200
    hashes, tracks, frames = (np.load(tmp_path / name) for name in FILES)
    whole = [np.concatenate(parts) for parts in zip(*blocks, strict=True)]
    order = np.argsort(whole[0], kind="stable")
    np.testing.assert_array_equal(hashes, whole[0][order])
    np.testing.assert_array_equal(tracks, whole[1][order])
    np.testing.assert_array_equal(frames, whole[2][order])


def test_identify_over_the_memory_budget_builds_them_on_disk(trained_workspace_copy: Workspace) -> None:
    ws = trained_workspace_copy
    before = IndexStore(ws.index).fingerprint_index()
    assert before is not None
    # a budget a few landmarks' worth: the fingerprints go on disk (the tiny index stays flat)
    report = pipeline.index(ws, IndexOptions(calibration_tracks=12, eval_queries=20, memory_budget_mb=0.05))
    store = IndexStore(ws.index)
    assert store.fingerprints["built"] and store.fingerprints.get("on_disk")
    after = store.fingerprint_index()
    assert after is not None and report.change["mode"] == "full"
    np.testing.assert_array_equal(after.hashes, before.hashes)
    np.testing.assert_array_equal(after.tracks, before.tracks)
    searcher = Searcher.open(ws)
    track = searcher.tables.tracks[2]
    answer = searcher.query_file(track["path"], mode="identify", k=3)
    assert not answer.no_match and answer.matches[0].track_id == track["track_id"]


def test_an_update_past_the_budget_merges_the_new_tracks_on_disk(
    trained_workspace_copy: Workspace, tmp_path: Path
) -> None:
    from factories import copy_workspace, make_class_corpus

    from embedtool.features.options import ExtractOptions

    ws = trained_workspace_copy
    options = IndexOptions(calibration_tracks=12, eval_queries=20, memory_budget_mb=0.05)
    pipeline.index(ws, options)  # built whole, fingerprints on disk
    more = make_class_corpus(tmp_path / "more", classes=2, per_class=1, seconds=4.0, seed=5)
    pipeline.extract(ws, [more], options=ExtractOptions(jobs=1))
    gone = FeatureStore(ws.features).tracks[0]["track_id"]
    pipeline.remove(ws, [gone])
    report = pipeline.index(ws, options)
    assert report.change["mode"] == "incremental" and report.change["added"] == 2
    recorded = IndexStore(ws.index).fingerprints
    assert recorded.get("on_disk") and recorded["updated"] == {"added_tracks": 2, "removed_tracks": 0}
    assert not (ws.index / ".fingerprint-kept").exists()
    rebuilt = copy_workspace(ws, tmp_path / "rebuilt")
    pipeline.index(rebuilt, options, rebuild=True)

    assert index_landmarks(ws) == index_landmarks(rebuilt)
    searcher = Searcher.open(ws)
    for path in sorted(more.rglob("*.wav")):
        answer = searcher.query_file(path, mode="identify", k=3)
        assert not answer.no_match and answer.matches[0].path == str(path)
