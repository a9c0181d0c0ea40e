"""`embedtool remove`: tracks taken out of the features, embeddings, index and fingerprints as one change; never
in an answer afterwards (neighbours, identify, the web app's API); clusters and a classifier made with them stale;
a kill -9 at any point leaves the library old or new, nothing between."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from factories import copy_workspace, flat, kill_9_when_marked, run_cli
from fastapi.testclient import TestClient

from embedtool import pipeline
from embedtool.artefacts import SWAP_JOURNAL
from embedtool.embedding.store import EmbeddingStore
from embedtool.errors import InputError
from embedtool.features.store import FeatureStore
from embedtool.indexing.store import IndexStore
from embedtool.query.searcher import Searcher
from embedtool.serve.app import create_app
from embedtool.verify import verify_workspace
from embedtool.workspace import Workspace


def _state(ws: Workspace) -> dict[str, str]:
    """What a reader sees of the library: the features' meta.json and current table, every file of the
    embeddings and the index, by content hash."""
    meta = json.loads((ws.features / "meta.json").read_text())
    files = [ws.features / "meta.json", ws.features / meta["extra"]["table"]]
    for folder in (ws.embeddings, ws.index):
        files += sorted(p for p in folder.rglob("*") if p.is_file())
    return {str(p.relative_to(ws.root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _statuses(ws: Workspace) -> dict[str, str]:
    return {c.kind: c.status for c in verify_workspace(ws).artefacts}


def _gone_everywhere(ws: Workspace, ids: set[str], left: int) -> None:
    features = FeatureStore(ws.features)
    assert len(features) == left and not ids & set(features.track_ids())
    store = EmbeddingStore(ws.embeddings)
    assert len(store) == left and not ids & set(store.track_ids())
    index = IndexStore(ws.index)
    tables = index.id_tables()
    assert len(tables.tracks) == left and not ids & set(tables.tracks.ids())
    assert index.segment_index().ntotal == store.n_segments == len(tables.segment_track)
    fingerprints = index.fingerprint_index()
    assert fingerprints is not None and int(fingerprints.tracks.max()) < left


def test_removed_tracks_are_in_no_answer_and_later_artefacts_go_stale(
    served_workspace: Workspace, tmp_path: Path
) -> None:
    ws = copy_workspace(served_workspace, tmp_path / "ws")
    features = FeatureStore(ws.features)
    tracks = list(features.tracks)
    by_path, by_prefix = tracks[0], tracks[5]
    before = _state(ws)
    dry = pipeline.remove(ws, [by_path["path"], by_prefix["track_id"][:10]], dry_run=True)
    assert dry.dry_run and dry.count == 2 and dry.tracks_left == 16
    assert {t["track_id"] for t in dry.removed} == {by_path["track_id"], by_prefix["track_id"]}
    assert _state(ws) == before, "a dry run changed the workspace"

    report = pipeline.remove(ws, [by_path["path"], by_prefix["track_id"][:10]])
    gone = {by_path["track_id"], by_prefix["track_id"]}
    assert report.count == 2 and report.tracks_left == 16
    assert report.artefacts["index"].startswith("updated")
    _gone_everywhere(ws, gone, 16)
    statuses = _statuses(ws)
    assert {k: statuses[k] for k in ("features", "split", "model", "embeddings", "index")} == dict.fromkeys(
        ("features", "split", "model", "embeddings", "index"), "ok"
    )
    assert statuses["clusters"] == statuses["classifier"] == "stale"
    assert not list(ws.root.glob(".*.removing")) and not (ws.root / SWAP_JOURNAL).exists()

    searcher = Searcher.open(ws)
    for t in searcher.tables.tracks:
        answer = searcher.query_track(t["track_id"], k=20)
        assert not gone & {m.track_id for m in answer.matches}
    for t in (by_path, by_prefix):  # the removed files' own audio: identify names another track or none
        answer = searcher.query_file(t["path"], mode="identify", k=20)
        assert not gone & {m.track_id for m in answer.matches}
        assert answer.query.library_track is None

    client = TestClient(create_app(ws), base_url="http://127.0.0.1:8000")
    listed = client.get("/api/tracks", params={"limit": 200}).json()["tracks"]
    assert len(listed) == 16 and not gone & {t["track_id"] for t in listed}
    for tid in gone:
        assert client.get("/api/search", params={"track": tid}).status_code == 404
    answer = client.get("/api/search", params={"track": listed[0]["track_id"], "k": 20}).json()
    assert answer["matches"] and not gone & {m["track_id"] for m in answer["matches"]}
    upload = Path(by_path["path"]).read_bytes()
    answer = client.post("/api/search", files={"file": ("x.wav", upload)}, params={"k": 20}).json()
    assert not gone & {m["track_id"] for m in answer["matches"]}

    # undo: extracting again brings the track back, and index adds it
    pipeline.extract(ws, [])
    back = pipeline.index(ws)
    assert back.change["mode"] in ("incremental", "full") and len(IndexStore(ws.index).id_tables().tracks) == 18


def test_remove_a_folder_from_the_command_line(trained_workspace_copy: Workspace) -> None:
    ws = trained_workspace_copy
    features = FeatureStore(ws.features)
    label = features.tracks[0]["label"]
    folder = Path(features.tracks[0]["path"]).parent
    in_folder = {t["track_id"] for t in features.tracks if Path(t["path"]).parent == folder}
    assert len(in_folder) == 6
    dry = run_cli("-w", ws.root, "remove", str(folder), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would remove 6 track(s)" in flat(dry.output) and "nothing was changed" in flat(dry.output)
    result = run_cli("-w", ws.root, "remove", label, "--json")  # relative to the library folder
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["count"] == 6 and data["tracks_left"] == 12 and not data["dry_run"]
    assert {t["track_id"] for t in data["removed"]} == in_folder
    _gone_everywhere(ws, in_folder, 12)


def test_names_that_name_nothing_or_everything_are_refused(trained_workspace_copy: Workspace) -> None:
    ws = trained_workspace_copy
    before = _state(ws)
    result = run_cli("-w", ws.root, "remove", "no-such-track.wav")
    assert result.exit_code == InputError.exit_code
    assert "'no-such-track.wav' names no track" in flat(result.output) and "nothing was removed" in flat(result.output)
    root = FeatureStore(ws.features).roots[0]
    with pytest.raises(InputError, match="every track of the library"):
        pipeline.remove(ws, [root])
    result = run_cli("-w", ws.root, "remove")
    assert result.exit_code == 2  # a missing argument is a usage error
    assert _state(ws) == before


DRIVER = """
import sys, time
from pathlib import Path
from embedtool import pipeline
from embedtool.workspace import Workspace

ws, marker, at, name = Workspace.at(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]

def progress(step, done, total):
    if step.startswith(at) and done >= max(1, total // 2) and not marker.exists():
        marker.write_text(step)
        time.sleep(120)  # wait here to be killed

pipeline.remove(ws, [name], progress=progress)
"""


@pytest.mark.parametrize("at", ["remove: index", "remove: swapping"])
def test_kill_9_leaves_the_old_library_or_the_new(at: str, trained_workspace: Workspace, tmp_path: Path) -> None:
    ws = copy_workspace(trained_workspace, tmp_path / "killed")
    name = FeatureStore(ws.features).tracks[3]["track_id"]
    before = _state(ws)
    marker, driver = tmp_path / "marker", tmp_path / "driver.py"
    driver.write_text(DRIVER)
    kill_9_when_marked(driver, [ws.root, marker, at, name], marker)

    clean = copy_workspace(trained_workspace, tmp_path / "clean")
    pipeline.remove(clean, [name])
    if at == "remove: index":  # killed while staging: nothing a reader sees has changed
        assert _state(ws) == before
        assert _statuses(ws)["index"] == "ok"
        pipeline.remove(ws, [name])  # and the removal runs again from the start
    else:  # killed between the moves: the next reader finishes them
        assert (ws.root / SWAP_JOURNAL).exists()
        assert _statuses(ws) == _statuses(clean)
        assert not (ws.root / SWAP_JOURNAL).exists()
    _gone_everywhere(ws, {name}, 17)
    new, expected = _state(ws), _state(clean)
    data = {k for k in expected if not k.endswith("meta.json") and "tracks-" not in k}
    assert {k: new[k] for k in data} == {k: expected[k] for k in data}
    assert not list(ws.root.glob(".*.removing"))
