"""`embedtool duplicates` (analysis.duplicates): on a small generated library of struck-note melodies holding an exact
copy, a quieter mp3 re-encode, a trimmed copy and one track with another's passage inside it, each relation is found
with its kind and time ranges and unrelated tracks are in none; the CLI's formats, its refusals, and serve's view."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from factories import extract_features, run_cli, struck_notes, write_signal
from fastapi.testclient import TestClient

from embedtool.analysis.duplicates import find_duplicates
from embedtool.analysis.options import DuplicatesOptions
from embedtool.errors import ConfigError
from embedtool.features.store import FeatureStore
from embedtool.serve.app import create_app
from embedtool.workspace import Workspace

SR = 16000


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """a.wav with an exact copy, an mp3 re-encode 6 dB down and a copy trimmed by 1 s at each end; b.wav, whose
    5-13 s are c.flac's 6-14 s; d.wav unrelated."""
    root = tmp_path_factory.mktemp("duplicates")
    audio = root / "audio"
    a, b, c, d = (struck_notes(20.0, seed, SR, (0.04, 0.15), 0.8) for seed in range(4))
    write_signal(audio / "a.wav", a, SR)
    (audio / "copies").mkdir()
    shutil.copy(audio / "a.wav", audio / "copies" / "a copy.wav")
    write_signal(audio / "copies" / "a.mp3", 0.5 * a, SR)
    write_signal(audio / "copies" / "a trimmed.flac", a[SR : 19 * SR], SR)
    write_signal(audio / "b.wav", b, SR)
    c[6 * SR : 14 * SR] = b[5 * SR : 13 * SR]
    write_signal(audio / "c.flac", c, SR)
    write_signal(audio / "d.wav", d, SR)
    ws = Workspace(root / "ws")
    report = extract_features(audio, ws.features)
    assert report.tracks == 6 and len(report.duplicates) == 1
    return ws


def names(files: list[dict]) -> set[str]:
    return {Path(f["path"]).name for f in files}


def test_copies_are_one_group_and_shared_material_has_its_time_ranges(library: Workspace) -> None:
    result = find_duplicates(FeatureStore(library.features))
    assert result.source == "peaks" and result.tracks == 6
    copies = [g for g in result.groups if g.kind == "copies"]
    assert len(copies) == 1
    assert names(copies[0].files) == {"a.wav", "a copy.wav", "a.mp3", "a trimmed.flac"}
    with_a = [r for r in copies[0].relations if "a.wav" in names([r.a, r.b])]
    kinds = {(names([r.a, r.b]) - {"a.wav"}).pop(): r for r in with_a}
    exact = kinds["a copy.wav"]
    assert exact.kind == "exact" and exact.a["track_id"] == exact.b["track_id"]
    assert kinds["a.mp3"].kind == "near-copy" and min(kinds["a.mp3"].coverage_a, kinds["a.mp3"].coverage_b) > 0.95
    trimmed = next(r for r in copies[0].relations if "a trimmed.flac" in names([r.a, r.b]))
    assert trimmed.kind == "near-copy" and abs(abs(trimmed.offset_s) - 1.0) < 0.1  # cut 1 s at the start
    shared = [g for g in result.groups if g.kind == "shared"]
    assert len(shared) == 1 and names(shared[0].files) == {"b.wav", "c.flac"}
    (relation,) = shared[0].relations
    (passage,) = relation.passages
    in_b, in_c = (
        ((passage.a_start_s, passage.a_end_s), (passage.b_start_s, passage.b_end_s))
        if Path(relation.a["path"]).name == "b.wav"
        else ((passage.b_start_s, passage.b_end_s), (passage.a_start_s, passage.a_end_s))
    )
    # within a second of the truth: landmarks anchor on peaks up to a second before the passage ends
    assert in_b[0] == pytest.approx(5.0, abs=0.5) and in_b[1] == pytest.approx(13.0, abs=1.0)
    assert in_c[0] == pytest.approx(6.0, abs=0.5) and in_c[1] == pytest.approx(14.0, abs=1.0)
    assert 0.3 < relation.coverage_a < 0.5 and 0.3 < relation.coverage_b < 0.5
    assert not any("d.wav" in names(g.files) for g in result.groups)


def test_thresholds_decide_the_kind(library: Workspace) -> None:
    strict = find_duplicates(FeatureStore(library.features), DuplicatesOptions(near_copy=0.95))
    trimmed = [r for g in strict.groups for r in g.relations if "a trimmed.flac" in names([r.a, r.b])]
    assert trimmed and all(r.kind == "shared" for r in trimmed)  # 18 s of 20 s: 90% of the longer
    long_only = find_duplicates(FeatureStore(library.features), DuplicatesOptions(min_shared_s=10.0))
    assert not any(g.kind == "shared" and "c.flac" in names(g.files) for g in long_only.groups)  # 8 s is shorter
    with pytest.raises(ConfigError, match="near_copy"):
        DuplicatesOptions(near_copy=0.0)


def test_an_exact_copy_deleted_since_extract_is_not_reported(library: Workspace, tmp_path: Path) -> None:
    copy = next(Path(e["path"]) for e in json.loads((library.features / "errors.json").read_text()))
    moved = tmp_path / "moved.wav"
    shutil.move(copy, moved)
    try:
        result = find_duplicates(FeatureStore(library.features))
        assert result.counts()["exact"] == 0 and result.counts()["near-copy"] >= 2
    finally:
        shutil.move(moved, copy)


def test_cli_formats_and_refusals(library: Workspace) -> None:
    ws = str(library.root)
    table = run_cli("-w", ws, "duplicates")
    assert table.exit_code == 0, table.output
    assert "1 exact copies" in table.output and "a copy.wav" in table.output
    as_csv = run_cli("-w", ws, "-q", "duplicates", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert {r["kind"] for r in rows} == {"exact", "near-copy", "shared"}
    shared = next(r for r in rows if r["kind"] == "shared")
    assert {shared["path_a"], shared["path_b"]} == {"b.wav", "c.flac"}  # relative to the library folder
    assert float(shared["a_end_s"]) > float(shared["a_start_s"])
    as_json = json.loads(run_cli("-w", ws, "duplicates", "--json").stdout)
    assert as_json["counts"] == {"exact": 1, "near-copy": 3, "shared": 1}
    assert [g["group"] for g in as_json["groups"]] == list(range(1, len(as_json["groups"]) + 1))
    bad = run_cli("-w", ws, "duplicates", "--near-copy", "1.5")
    assert bad.exit_code == 2 and "near_copy" in bad.output
    missing = run_cli("-w", str(library.root.parent / "nothing"), "duplicates")
    assert missing.exit_code == 4


def test_serve_shows_the_groups_and_plays_library_tracks(library: Workspace) -> None:
    client = TestClient(create_app(library), base_url="http://127.0.0.1:8000")
    found = client.get("/api/duplicates")
    assert found.status_code == 200
    body = found.json()
    assert body["counts"]["exact"] == 1 and body["counts"]["shared"] == 1
    files = [f for g in body["groups"] for f in g["files"]]
    assert all("path" not in f and f["name"] for f in files)
    copy = next(f for f in files if f["name"].endswith("a copy.wav"))
    assert copy["playable"] is False  # an exact copy's path is not a library track's: never streamed
    playable = next(f for f in files if f["playable"])
    assert client.get(f"/api/audio/{playable['track_id']}").status_code == 200
    page = client.get("/")
    assert 'data-view="duplicates"' in page.text and "/api/duplicates" in client.get("/static/app.js").text


def test_features_without_peaks_use_the_log_mel_landmarks(library: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FeatureStore, "has_peaks", lambda self, tracks=None: False)  # as features made before them
    result = find_duplicates(FeatureStore(library.features))
    assert result.source == "mel"
    copies = [g for g in result.groups if g.kind == "copies"]
    assert len(copies) == 1 and {"a.wav", "a.mp3"} <= names(copies[0].files)
    assert not any("d.wav" in names(g.files) for g in result.groups)


def test_the_index_fingerprints_give_the_same_answer_as_a_table_made_in_memory(library: Workspace) -> None:
    from embedtool.indexing.fingerprint import FingerprintSettings, fingerprint_library

    features = FeatureStore(library.features)
    ids = list(reversed(features.track_ids()))  # the index numbers its tracks in its own order
    table = fingerprint_library(features, [{"track_id": t} for t in ids], FingerprintSettings.for_source("peaks"))
    in_memory = find_duplicates(features)
    from_index = find_duplicates(features, index=(table, ids))
    assert (in_memory.table, from_index.table) == ("memory", "index")

    def pairs(report: object) -> set:
        return {
            (frozenset(names([r.a, r.b])), r.kind, round(min(r.coverage_a, r.coverage_b), 3))
            for g in report.groups  # type: ignore[attr-defined]
            for r in g.relations
        }

    assert pairs(from_index) == pairs(in_memory) and len(pairs(in_memory)) >= 5
    assert from_index.landmarks == in_memory.landmarks
    # fingerprints that do not hold every track (a stale index) are not used
    assert find_duplicates(features, index=(table, ids[:-1])).table == "memory"


def test_a_workspace_with_an_index_reads_its_fingerprint_files(trained_workspace: Workspace) -> None:
    from embedtool import pipeline

    report = pipeline.duplicates(trained_workspace)
    assert report.table == "index" and report.tracks == len(FeatureStore(trained_workspace.features))
