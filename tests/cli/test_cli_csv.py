"""Spreadsheet output: `cluster` and `classify QUERY...` write CSV/TSV that csv.DictReader (and so any
spreadsheet) reads back, one row per track or file, with the track named as the tables name it."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from factories import run_cli, write_corrupt, write_tone

from embedtool import pipeline
from embedtool.analysis.options import ClassifyOptions
from embedtool.features.store import FeatureStore
from embedtool.workspace import Workspace


def rows(text: str, delimiter: str = ",") -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text), delimiter=delimiter))


def test_cluster_csv_has_one_row_per_track_that_names_it_back(trained_workspace_copy: Workspace) -> None:
    ws = trained_workspace_copy
    result = run_cli("-w", ws.root, "-q", "cluster", "-k", "3", "--format", "csv")
    assert result.exit_code == 0, result.output
    table = rows(result.stdout)
    store = FeatureStore(ws.features)
    assert sorted(r["track_id"] for r in table) == sorted(store.track_ids())
    assert {r["cluster"] for r in table} == {"0", "1", "2"}
    for r in table:
        assert not Path(r["track"]).is_absolute() and r["path"].endswith(r["track"])
        assert store.find(r["track"])["track_id"] == r["track_id"]  # the shown name names the track back
        assert r["label"] and float(r["distance"]) >= 0
    tsv = run_cli("-w", ws.root, "-q", "cluster", "-k", "3", "--format", "tsv")
    assert tsv.exit_code == 0 and rows(tsv.stdout, "\t") == table
    as_json = run_cli("-w", ws.root, "-q", "cluster", "-k", "3", "--format", "json")
    assert json.loads(as_json.stdout)["k"] == 3


def test_classify_predictions_as_csv(trained_workspace_copy: Workspace, tmp_path: Path) -> None:
    ws = trained_workspace_copy
    pipeline.classify(ws, ClassifyOptions(cv=2, plots=False))
    good = write_tone(tmp_path / "good, with comma.wav", 440.0, 2.5)
    bad = write_corrupt(tmp_path / "bad.mp3")
    result = run_cli("-w", ws.root, "-q", "classify", good, bad, "--format", "csv")
    assert result.exit_code == 1  # one file could not be classified; the others are still written
    first, second = rows(result.stdout)
    assert first["file"] == str(good) and first["label"] and not first["error"]
    classes = [c for c in first if c.startswith("p_")]
    assert len(classes) == 3 and abs(sum(float(first[c]) for c in classes) - 1) < 1e-3
    assert float(first["probability"]) == float(first[f"p_{first['label']}"])
    assert second["file"] == str(bad) and second["error"] and not second["label"]
    per_segment = run_cli("-w", ws.root, "-q", "classify", good, "--segments", "--format", "tsv")
    assert per_segment.exit_code == 0, per_segment.output
    segments = rows(per_segment.stdout, "\t")
    assert len(segments) > 1 and all(float(s["end_s"]) > float(s["start_s"]) for s in segments)


def test_classify_csv_needs_query_files(trained_workspace: Workspace) -> None:
    result = run_cli("-w", trained_workspace.root, "classify", "--format", "csv")
    assert result.exit_code == 2 and "QUERY" in result.output


def test_info_csv_has_one_row_per_stage(trained_workspace: Workspace) -> None:
    result = run_cli("-w", trained_workspace.root, "info", "--format", "csv")
    assert result.exit_code == 0, result.output
    stages = {r["stage"]: r for r in rows(result.stdout)}
    assert stages["features"]["status"] == "ready" and int(stages["features"]["size_bytes"]) > 0
    assert stages["clusters"]["status"] == "not made" and stages["features"]["fingerprint"]
