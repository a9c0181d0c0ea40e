"""`embedtool neighbours` with many queries in one process, and its spreadsheet and script formats."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from factories import run_cli, write_corrupt

from embedtool.features.store import FeatureStore
from embedtool.workspace import Workspace


def _library_files(ws: Workspace, n: int) -> list[Path]:
    return [Path(t["path"]) for t in FeatureStore(ws.features).tracks[:n]]


def test_many_queries_in_one_run_as_csv_with_a_bad_one_reported(trained_workspace: Workspace, tmp_path: Path) -> None:
    ws = trained_workspace
    files = _library_files(ws, 2)
    track_id = FeatureStore(ws.features).tracks[2]["track_id"]
    bad = write_corrupt(tmp_path / "bad.mp3")
    result = run_cli("-w", ws.root, "-q", "neighbours", *files, track_id[:8], bad, "-k", "3", "--format", "csv")
    assert result.exit_code == 1  # one query could not be answered; the others were
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert {r["query"] for r in rows} == {str(files[0]), str(files[1]), track_id[:8], str(bad)}
    answered = [r for r in rows if not r["error"]]
    assert len(answered) == 3 * 3 and all(r["rank"] in ("1", "2", "3") and float(r["score"]) > 0 for r in answered)
    assert [r for r in rows if r["query"] == str(bad)][0]["error"]
    assert "1 of 4 queries could not be answered" in result.output


def test_a_folder_and_a_list_file_expand_to_their_queries(trained_workspace: Workspace, tmp_path: Path) -> None:
    ws = trained_workspace
    files = _library_files(ws, 3)
    folder = files[0].parent
    in_folder = sorted(p for p in folder.iterdir() if p.suffix == ".wav")
    listed = tmp_path / "queries.txt"
    listed.write_text(f"{files[1]}\n\n{files[2]}\n")
    result = run_cli("-w", ws.root, "-q", "neighbours", folder, "--list", listed, "--format", "jsonl", "-k", "2")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [x["query"]["given"] for x in lines] == [str(p) for p in in_folder] + [str(files[1]), str(files[2])]
    assert all(len(x["matches"]) == 2 for x in lines)

    as_tsv = run_cli("-w", ws.root, "-q", "neighbours", files[0], "--format", "tsv", "-k", "2")
    assert as_tsv.exit_code == 0
    header, *rows = [line.split("\t") for line in as_tsv.stdout.splitlines()]
    assert header[:4] == ["query", "mode", "rank", "track_id"] and len(rows) == 2
    as_json = run_cli("-w", ws.root, "-q", "neighbours", files[0], files[1], "--json")
    assert [x["query"]["given"] for x in json.loads(as_json.stdout)] == [str(files[0]), str(files[1])]
    assert run_cli("-w", ws.root, "neighbours", files[0], "--format", "xml").exit_code == 2


def test_labels_dir_writes_an_audacity_label_track_per_query(trained_workspace: Workspace, tmp_path: Path) -> None:
    ws = trained_workspace
    files = _library_files(ws, 2)
    out = tmp_path / "labels"
    result = run_cli("-w", ws.root, "-q", "neighbours", *files, "-k", "2", "--format", "jsonl", "--labels-dir", out)
    assert result.exit_code == 0, result.output
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    for path, answer in zip(files, answers, strict=True):
        lines = (out / f"{path.stem}.txt").read_text().splitlines()
        assert len(lines) == len(answer["matches"]) == 2
        for line, match in zip(lines, answer["matches"], strict=True):
            start, end, text = line.split("\t")
            assert float(start) == match["query_start_s"] and float(end) == match["query_end_s"]
            assert text.startswith(f"{match['rank']}. ") and match["track_id"][:8] in text
    # the same query twice: a second file, not an overwrite
    again = run_cli("-w", ws.root, "-q", "neighbours", files[0], files[0], "--format", "csv", "--labels-dir", out)
    assert again.exit_code == 0 and (out / f"{files[0].stem}-2.txt").is_file()
