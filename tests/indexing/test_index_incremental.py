"""`embedtool index` on a library that changed: the index is updated for the tracks added and removed (FAISS
``remove_ids``/``add_with_ids``, ids renumbered to the new export's rows, fingerprints merged), and answers as a
full build of the same export would; a full build only when asked (``--rebuild``) or when the drift calls for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from factories import copy_workspace, index_landmarks, make_class_corpus, run_cli

from embedtool import pipeline
from embedtool.artefacts import staged_dir
from embedtool.embedding.store import EmbeddingStore, EmbeddingWriter
from embedtool.features.options import ExtractOptions
from embedtool.indexing.build import build_index, exact_top_k, write_id_tables, write_index_files
from embedtool.indexing.options import IndexOptions
from embedtool.indexing.store import IndexStore
from embedtool.indexing.update import id_remap, rebuild_reason, update_index
from embedtool.query.calibrate import CALIBRATION_SAMPLES
from embedtool.query.searcher import Searcher
from embedtool.tracktable import TrackTable
from embedtool.verify import verify_workspace
from embedtool.workspace import Workspace

OPTIONS = IndexOptions(calibration_tracks=12, eval_queries=20)  # the session's trained_workspace's


def test_new_and_removed_tracks_update_the_index_as_a_rebuild_would(
    trained_workspace_copy: Workspace, tmp_path: Path
) -> None:
    ws = trained_workspace_copy
    same = pipeline.index(ws, OPTIONS)
    assert same.change == {"mode": "incremental", "added": 0, "removed": 0, "kept": 18}

    more = make_class_corpus(tmp_path / "more", classes=3, per_class=1, seconds=4.0, seed=11)
    pipeline.extract(ws, [more], options=ExtractOptions(jobs=1))
    added = pipeline.index(ws, OPTIONS)
    assert added.change == {"mode": "incremental", "added": 3, "removed": 0, "kept": 18}
    # the fingerprints were kept and the new tracks' merged in, not built again
    assert IndexStore(ws.index).fingerprints["updated"] == {"added_tracks": 3, "removed_tracks": 0}
    # identify re-calibrated by querying new tracks only (12 of 18 drawn: at that rate 2 or 3 of the 3 new,
    # 5 excerpts each, at each of the 3 lengths)
    identify = IndexStore(ws.index).meta.extra["identify"]
    assert identify["calibrated"] and "kept" not in identify
    assert identify["updated"]["kept_queries"] == 3 * 60 and identify["updated"]["new_queries"] in (30, 45)
    assert identify["queries"] == 60 + identify["updated"]["new_queries"] // 3
    gone = sorted(more.rglob("*.wav"))[0]
    gone_id = IndexStore(ws.index).id_tables().tracks.ids()
    gone.unlink()  # the next extract drops its track
    pipeline.extract(ws, [], options=ExtractOptions(jobs=1))
    report = pipeline.index(ws, OPTIONS)
    assert report.change == {"mode": "incremental", "added": 0, "removed": 1, "kept": 20}
    assert report.segments.vectors == EmbeddingStore(ws.embeddings).n_segments
    gone_id = (set(gone_id) - set(IndexStore(ws.index).id_tables().tracks.ids())).pop()
    samples = np.load(ws.index / CALIBRATION_SAMPLES)
    assert set(samples["track_ids"]) <= set(IndexStore(ws.index).id_tables().tracks.ids())
    assert IndexStore(ws.index).meta.extra["identify"]["calibrated"]

    # every new track is found by its own audio, identified by embeddings and fingerprints
    searcher = Searcher.open(ws)
    for path in sorted(more.rglob("*.wav")):
        answer = searcher.query_file(path, mode="identify", k=3)
        assert not answer.no_match and answer.matches[0].path == str(path)
        assert gone_id not in [m.track_id for m in answer.matches]

    rebuilt = copy_workspace(ws, tmp_path / "rebuilt")
    full = pipeline.index(rebuilt, OPTIONS, rebuild=True)
    assert full.change["mode"] == "full" and full.change["why"] == "--rebuild"
    # the same vectors under the same ids: a flat index answers the same rows with the same scores
    queries = EmbeddingStore(ws.embeddings).segment_vectors()[::7]
    a = IndexStore(ws.index).segment_index().search(queries, 5)
    b = IndexStore(rebuilt.index).segment_index().search(queries, 5)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], rtol=1e-6)
    assert index_landmarks(ws) == index_landmarks(rebuilt)
    assert {c.kind: c.status for c in verify_workspace(ws).artefacts}["index"] == "ok"


def test_index_rebuild_flag_and_report(trained_workspace_copy: Workspace) -> None:
    ws = trained_workspace_copy
    result = run_cli("-w", ws.root, "index", "--rebuild", "--json")
    assert result.exit_code == 0, result.output
    assert '"mode": "full"' in result.output and '"why": "--rebuild"' in result.output
    result = run_cli("-w", ws.root, "index")
    assert result.exit_code == 0, result.output
    assert "updated: 0 track(s) added, 0 removed" in " ".join(result.output.split())


# --- the approximate kinds, on a synthetic export (no audio) ----------------------------------------------------


def _export(ws: Workspace, ids: list[str], per_track: int = 40, dim: int = 32, seed: int = 0) -> EmbeddingStore:
    """An embeddings artefact of tracks ``ids`` (sorted, as an export keeps them), each track's vectors drawn
    around a centre of its own, derived from its id (the same vectors whichever export holds it)."""
    config = {"hop_s": 0.5, "segment_seconds": 1.0, "hop_frames": 50, "segment_frames": 100, "features": {}}
    with staged_dir(ws.embeddings) as stage:
        writer = EmbeddingWriter(stage, dim, max_shard_bytes=64 * 1024)  # several shards
        for tid in sorted(ids):
            rng = np.random.default_rng([seed, int(tid, 16)])
            x = rng.standard_normal(dim) + 0.6 * rng.standard_normal((per_track, dim))
            x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
            starts = np.arange(per_track) * 0.5
            writer.add_track({"track_id": tid, "path": f"/lib/{tid}.wav", "duration_s": 20.0}, starts, starts + 1, x)
        writer.finish(config, {"features": "synthetic", "model": "synthetic"})
    return EmbeddingStore(ws.embeddings)


def _build(ws: Workspace, store: EmbeddingStore, options: IndexOptions) -> None:
    with staged_dir(ws.index) as stage:
        segments = build_index(store.segment_source(), options, None, "segment index", stage)
        tracks = build_index(store.track_vectors(), options, None, "track index")
        write_id_tables(stage, store)
        identify = {"statistic": "confidence", "threshold": 0.5, "calibrated": False}
        write_index_files(stage, segments, tracks, store, options, identify, {"built": False})


def _update(ws: Workspace, store: EmbeddingStore, options: IndexOptions) -> dict:
    with staged_dir(ws.index) as stage:
        updated = update_index(IndexStore(ws.index), stage, store, None, options)
        assert not isinstance(updated, str), updated
        write_id_tables(stage, store)
        write_index_files(stage, updated.segments, updated.tracks, store, options, updated.identify, {"built": False})
    return updated.change


@pytest.mark.parametrize("kind", ["ivf", "ivf-pq", "ivf-pq-on-disk", "flat"])
def test_approximate_index_updated_keeps_recall_and_ids(kind: str, tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path / "ws")
    on_disk = {"on_disk": "on", "block_vectors": 3000} if kind == "ivf-pq-on-disk" else {}
    kind = kind.removesuffix("-on-disk")
    options = IndexOptions(
        kind=kind, ivf_nlist=16, eval_queries=100, identify_threshold=0.5, fingerprints="off", **on_disk
    )
    ids = [f"{i * 7:016x}" for i in range(300)]
    store = _export(ws, ids)
    _build(ws, store, options)
    built = IndexStore(ws.index).meta.extra["segments"]
    # 3 tracks added among the others (their rows fall between the old ones'), 2 removed
    new_ids = sorted([*ids[2:], *(f"{i * 7 + 3:016x}" for i in (10, 150, 299))])
    store = _export(ws, new_ids)
    change = _update(ws, store, options)
    assert (change["added"], change["removed"], change["kept"]) == (3, 2, 298)
    index = IndexStore(ws.index)
    summary = index.meta.extra["segments"]
    assert summary["vectors"] == store.n_segments == 301 * 40
    assert summary["recall"] >= options.target_recall or kind == "flat"
    assert summary.get("trained_vectors") == built.get("trained_vectors")
    assert summary["params"].get("on_disk", False) == bool(on_disk)
    if on_disk:  # a new .ivfdata: the old entries once (the removed tracks' slots left empty) and the added ones
        entry = summary["params"]["pq_m"] + 8
        assert (ws.index / "segments.ivfdata").stat().st_size == (store.n_segments + 2 * 40) * entry
    searcher_index = index.segment_index()
    if kind == "ivf-pq":
        searcher_index.refine_vectors = store.segment_source()
    # every row answers for itself: the ids were renumbered to the new export's rows
    vectors = store.segment_source()
    rows = np.arange(0, store.n_segments, 97)
    _, found = searcher_index.search(vectors[rows], 1)
    assert (found[:, 0] == rows).mean() > 0.97
    # recall against exact search, measured on the updated index
    truth = exact_top_k(vectors, vectors[rows], 10)
    _, top = searcher_index.search(vectors[rows], 10)
    recall = np.mean([len(np.intersect1d(a, b)) / 10 for a, b in zip(top, truth, strict=True)])
    assert recall >= 0.9
    if kind != "flat":  # the recall probe carried over: its exact neighbours are a fresh scan's
        probe = np.load(ws.index / "segments-probe.npz")
        assert len(probe["rows"]) >= 50
        fresh = exact_top_k(vectors, vectors[probe["rows"]], probe["truth"].shape[1], query_rows=probe["rows"])
        np.testing.assert_array_equal(probe["truth"], fresh)
    tables = index.id_tables()
    removed = set(ids[:2])
    assert not removed & set(tables.tracks.ids())
    assert len(searcher_index.search(vectors[rows], 50)[1][0]) == 50


def test_an_index_grown_past_the_budget_moves_its_codes_to_disk_without_a_rebuild(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path / "ws")
    # 0.65 MB: a quarter holds 11,359 entries of 15 bytes (7-byte PQ code + id), so 200 tracks of 40 segments fit
    # in memory and 290 do not
    options = IndexOptions(
        kind="ivf-pq", ivf_nlist=16, eval_queries=100, identify_threshold=0.5, fingerprints="off",
        memory_budget_mb=0.65,
    )  # fmt: skip
    ids = [f"{i * 7:016x}" for i in range(200)]
    _build(ws, _export(ws, ids), options)
    assert not IndexStore(ws.index).meta.extra["segments"]["params"].get("on_disk")
    store = _export(ws, sorted([*ids[1:], *(f"{i * 7 + 3:016x}" for i in range(91))]))
    assert rebuild_reason(IndexStore(ws.index), store, options) is None
    change = _update(ws, store, options)
    assert (change["added"], change["removed"]) == (91, 1)
    index = IndexStore(ws.index)
    assert index.meta.extra["segments"]["params"]["on_disk"] and (ws.index / "segments.ivfdata").is_file()
    searcher_index = index.segment_index()
    searcher_index.refine_vectors = vectors = store.segment_source()
    rows = np.arange(0, store.n_segments, 61)
    assert (searcher_index.search(vectors[rows], 1)[1][:, 0] == rows).mean() > 0.97
    # and back under the budget: the codes would fit in memory again, which a full build would do
    small = _export(ws, ids[:150])
    assert "now fit in memory" in rebuild_reason(IndexStore(ws.index), small, options)


def test_drift_and_option_changes_call_for_a_rebuild(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path / "ws")
    options = IndexOptions(kind="ivf", ivf_nlist=16, eval_queries=50, identify_threshold=0.5, fingerprints="off")
    ids = [f"{i:016x}" for i in range(100)]
    _build(ws, _export(ws, ids), options)
    doubled = _export(ws, [f"{i:016x}" for i in range(250)])
    why = rebuild_reason(IndexStore(ws.index), doubled, options)
    assert why is not None and "trained on 4000 vectors" in why
    half_more = _export(ws, [f"{i:016x}" for i in range(150)])
    assert rebuild_reason(IndexStore(ws.index), half_more, options) is None
    other = IndexOptions(kind="ivf", ivf_nlist=32, eval_queries=50, identify_threshold=0.5, fingerprints="off")
    assert rebuild_reason(IndexStore(ws.index), half_more, other) == "the index options changed"


def test_id_remap_maps_tracks_and_segments_by_content_id() -> None:
    import pyarrow as pa

    def table(rows: list[tuple[str, int]]) -> TrackTable:
        return TrackTable(pa.table({"track_id": [r[0] for r in rows], "n_segments": [r[1] for r in rows]}))

    old = table([("a", 2), ("b", 3), ("c", 1)])
    new = table([("a", 2), ("ab", 4), ("c", 1), ("d", 2)])
    remap = id_remap(old, new)
    assert remap.tracks.tolist() == [0, -1, 2]
    assert remap.segments.tolist() == [0, 1, -1, -1, -1, 6]
    assert remap.added_tracks.tolist() == [1, 3]


def test_an_on_disk_update_that_fails_midway_leaves_the_old_index_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    from embedtool.indexing import ondisk_update

    ws = Workspace.at(tmp_path / "ws")
    options = IndexOptions(
        kind="ivf-pq", ivf_nlist=16, eval_queries=100, identify_threshold=0.5, fingerprints="off", on_disk="on",
        block_vectors=3000,
    )  # fmt: skip
    ids = [f"{i * 7:016x}" for i in range(200)]
    _build(ws, _export(ws, ids), options)

    def digest() -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(ws.index.iterdir()) if p.is_file()}

    before = digest()
    store = _export(ws, sorted([*ids[5:], *(f"{i * 7 + 3:016x}" for i in range(20))]))

    def crash(*args: object) -> int:  # the new file's lists half renumbered, then the process dies
        raise RuntimeError("killed")

    monkeypatch.setattr(ondisk_update, "_drop_and_renumber", crash)
    with pytest.raises(RuntimeError, match="killed"):
        _update(ws, store, options)
    assert digest() == before  # the old lists were only read
    monkeypatch.undo()
    assert _update(ws, store, options)["added"] == 20
    assert IndexStore(ws.index).meta.extra["segments"]["vectors"] == store.n_segments


@pytest.mark.parametrize("on_disk", ["off", "on"])
def test_added_vectors_that_are_not_finite_call_for_a_full_build(on_disk: str, tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path / "ws")
    options = IndexOptions(
        kind="ivf-pq", ivf_nlist=16, eval_queries=100, identify_threshold=0.5, fingerprints="off", on_disk=on_disk
    )
    ids = [f"{i * 7:016x}" for i in range(200)]
    _build(ws, _export(ws, ids), options)
    bad = f"{5 * 7 + 3:016x}"
    store = _export(ws, sorted([*ids, bad]))
    # the new track's first vector damaged on disk after it was written (the writer refuses NaN)
    row = int(store.first_rows[store.tracks.rows_of([bad])[0]])
    for shard in sorted(ws.embeddings.glob("segments-*.npy")):
        vectors = np.load(shard, mmap_mode="r+")
        if row < len(vectors):
            vectors[row, 0] = np.nan
            vectors.flush()
            break
        row -= len(vectors)
    with staged_dir(ws.index) as stage:
        why = update_index(IndexStore(ws.index), stage, store, None, options)
        assert why == "the segment index's new vectors hold NaN or infinite values"
        assert not list(stage.glob(".*blocks"))  # a full build starts from a clean stage
