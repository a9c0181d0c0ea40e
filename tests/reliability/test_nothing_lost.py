"""Nothing lost, nothing silent — bad configuration values, partly bad batches, ..."""

from __future__ import annotations

import json
from pathlib import Path

from factories import flat, run_cli, write_config, write_corrupt, write_noise, write_tone

from embedtool import pipeline
from embedtool.analysis.options import ClassifyOptions
from embedtool.workspace import Workspace

# --- configuration values that used to crash with exit 1 ---------------------------------------------------------


def test_a_workspace_that_is_a_list_is_a_usage_error(tmp_path: Path) -> None:
    write_config(tmp_path, "workspace: [a, b]\n")
    result = run_cli("info")
    assert result.exit_code == 2, result.output
    assert "'workspace' must be a single name or path" in result.output


def test_a_workspace_path_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    write_config(tmp_path, "workspace: afile\n")
    result = run_cli("info")
    assert result.exit_code == 2, result.output
    assert "is a file, not a folder" in result.output
    result = run_cli("-w", tmp_path / "afile", "extract", tmp_path)
    assert result.exit_code == 2, result.output


def test_a_configuration_file_that_is_not_utf8_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "embedtool.yaml").write_bytes(b"workspace: ws\n# \xff\xfe latin-1 here\n")
    result = run_cli("info")
    assert result.exit_code == 2, result.output
    assert "not UTF-8" in result.output


# --- classify A B: the good files are classified, the bad one reported -------------------------------------------


def test_classify_labels_the_good_files_and_reports_the_bad_one(
    trained_workspace_copy: Workspace, tmp_path: Path
) -> None:
    ws = trained_workspace_copy
    pipeline.classify(ws, ClassifyOptions(cv=2, plots=False))
    good = write_tone(tmp_path / "good.wav", 440.0, 1.5)
    bad = write_corrupt(tmp_path / "bad.mp3")
    result = run_cli("-w", ws.root, "-q", "classify", good, bad, "--json")
    assert result.exit_code == 1, result.output
    entries = json.loads(result.stdout)
    assert [e["path"] for e in entries] == [str(good), str(bad)]
    assert entries[0]["label"] and abs(sum(entries[0]["probabilities"].values()) - 1) < 1e-6
    assert "error" not in entries[0] and entries[1]["error"]
    result = run_cli("-w", ws.root, "-q", "classify", good, bad)
    assert result.exit_code == 1
    assert "good.wav" in result.stdout and "bad.mp3" in result.output and "1 of 2 file(s)" in result.output


# --- discovery reports what it cannot look at ---------------------------------------------------------------------


def test_extract_reports_dangling_and_looping_symlinks_fifos_and_repeated_folders(tmp_path: Path) -> None:
    import os

    audio = tmp_path / "audio"
    write_tone(audio / "a" / "tone.wav", 330.0, 1.0)
    (audio / "a" / "gone.wav").symlink_to(audio / "nowhere.wav")  # dangling
    (audio / "a" / "self.wav").symlink_to(audio / "a" / "self.wav")  # a loop
    os.mkfifo(audio / "a" / "pipe.wav")
    (audio / "a" / "back").symlink_to(audio)  # a folder scanned already
    result = run_cli("-w", tmp_path / "ws", "-q", "extract", audio, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    reasons = {Path(e["path"]).name: e["reason"] for e in report["errors"]}
    assert reasons["gone.wav"].startswith("dangling symlink")
    assert reasons["self.wav"] == "symlink loop"
    assert reasons["pipe.wav"] == "a FIFO (named pipe), not a regular file"
    assert reasons["back"].startswith("symlink to a folder scanned already")
    assert report["tracks"] == 1 and report["skipped"] == 4
    written = {Path(e["path"]).name for e in json.loads((tmp_path / "ws" / "features" / "errors.json").read_text())}
    assert {"gone.wav", "self.wav", "pipe.wav", "back"} <= written


def test_a_fifo_given_as_the_path_is_named_for_what_it_is(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "pipe.wav")
    result = run_cli("-w", tmp_path / "ws", "extract", tmp_path / "pipe.wav")
    assert result.exit_code == 1
    assert "a FIFO (named pipe), not an audio file or folder" in flat(result.output)


# --- tampered provenance is caught ---------------------------------------------------------------------------------


def test_an_edited_setting_in_features_meta_is_named_by_every_command_that_reads_it(
    trained_workspace_copy: Workspace, tmp_path: Path
) -> None:
    ws = trained_workspace_copy
    meta_path = ws.features / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["n_mels"] = 128
    meta_path.write_text(json.dumps(meta))
    query = write_tone(tmp_path / "q.wav", 330.0, 2.0)
    for args in (["index"], ["neighbours", query], ["embed"], ["train", "--epochs", "1"]):
        result = run_cli("-w", ws.root, "-q", *args)
        assert result.exit_code == 5, (args, result.output)
        assert "n_mels (now 128)" in flat(result.output), args
    info = run_cli("-w", ws.root, "info", "--json")
    assert info.exit_code == 0
    features = next(s for s in json.loads(info.stdout)["stages"] if s["name"] == "features")
    assert "n_mels (now 128)" in features["problem"]


def test_a_track_table_swapped_under_the_meta_is_refused(trained_workspace_copy: Workspace, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    ws = trained_workspace_copy
    meta = json.loads((ws.features / "meta.json").read_text())
    table_path = ws.features / meta["extra"]["table"]
    table = pq.read_table(table_path)
    pq.write_table(table.slice(1), table_path)  # one track fewer, the meta untouched
    result = run_cli("-w", ws.root, "-q", "index")
    assert result.exit_code == 5, result.output
    assert table_path.name in "".join(result.output.split()) and "damaged" in result.output  # its recorded size
    del meta["files"]  # a workspace made before checksums: the fingerprint still catches the swap
    (ws.features / "meta.json").write_text(json.dumps(meta))
    result = run_cli("-w", ws.root, "-q", "index")
    assert result.exit_code == 5, result.output
    assert "no longer belong together" in flat(result.output)


# --- files cut short are reported, not indexed as shorter tracks ---------------------------------------------------


def _cut_in_half(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_truncated_ogg_and_mp3_fail_with_what_was_decoded_unless_kept(tmp_path: Path) -> None:
    audio = tmp_path / "audio"
    whole = write_tone(audio / "whole.ogg", 330.0, 6.0)
    ogg = _cut_in_half(write_noise(audio / "cut.ogg", 6.0))  # noise: a tone compresses into the first pages
    mp3 = _cut_in_half(write_tone(audio / "cut.mp3", 550.0, 6.0))
    result = run_cli("-w", tmp_path / "ws", "-q", "extract", audio, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    reasons = {Path(e["path"]).name: e["reason"] for e in report["errors"]}
    assert reasons["cut.mp3"].startswith("truncated (decoded ") and "of 6.00 s)" in reasons["cut.mp3"]
    assert reasons["cut.ogg"].startswith("truncated (decoded ") and "end-of-stream" in reasons["cut.ogg"]
    assert "whole.ogg" not in reasons and report["tracks"] == 1 and report["failed"] == 2

    kept = run_cli("-w", tmp_path / "ws2", "-q", "extract", audio, "--keep-truncated", "--json")
    assert kept.exit_code == 0, kept.output
    report = json.loads(kept.stdout)
    assert report["tracks"] == 3 and report["failed"] == 0
    notes = {Path(e["path"]).name: e["reason"] for e in report["errors"]}
    assert notes[ogg.name].endswith("the decoded part kept (--keep-truncated)")
    assert notes[mp3.name].endswith("the decoded part kept (--keep-truncated)")
    assert whole.name not in notes


def test_a_truncated_query_is_still_an_excerpt(trained_workspace: Workspace, tmp_path: Path) -> None:
    query = _cut_in_half(write_tone(tmp_path / "q.mp3", 440.0, 4.0))
    result = run_cli("-w", trained_workspace.root, "-q", "neighbours", query, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["query"]["duration_s"] < 3.0


# --- extract adds to a library ---------------------------------------------------------------------------------------


def _extract(ws: Path, *args: str | Path) -> dict:
    result = run_cli("-w", ws, "-q", "extract", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_extract_adds_a_folder_to_the_library_and_remembers_every_folder(tmp_path: Path) -> None:
    import shutil

    first, second = tmp_path / "first", tmp_path / "second"
    for i in range(3):
        write_tone(first / "a" / f"t{i}.wav", 200.0 + 50 * i, 1.0)
    write_tone(second / "b" / "u.wav", 700.0, 1.0)
    ws = tmp_path / "ws"
    assert _extract(ws, first)["tracks"] == 3
    added = _extract(ws, second)  # used to replace the library: "tracks removed 3"
    assert (added["tracks"], added["removed"], added["done"], added["unchanged"]) == (4, 0, 1, 3)
    assert added["roots"] == [str(first), str(second)]

    (first / "a" / "t0.wav").unlink()
    rescan = _extract(ws)  # every remembered folder again; the gone file is removed and listed
    assert (rescan["tracks"], rescan["removed"]) == (3, 1)
    assert rescan["removed_paths"] == [str(first / "a" / "t0.wav")]

    shutil.move(first, tmp_path / "unplugged")
    kept = _extract(ws)
    assert (kept["tracks"], kept["removed"], kept["kept_unscanned"]) == (3, 0, 2)
    assert kept["missing_roots"] == [str(first)]
    printed = run_cli("-w", ws, "-q", "extract")
    assert "folder missing" in flat(printed.output) and "--prune drops them" in flat(printed.output)
    pruned = _extract(ws, "--prune")
    assert (pruned["tracks"], pruned["removed"], pruned["roots"]) == (1, 2, [str(second)])

    shutil.move(tmp_path / "unplugged", first)
    replaced = _extract(ws, first, "--replace")  # today's behaviour, asked for
    assert (replaced["tracks"], replaced["removed"], replaced["roots"]) == (2, 1, [str(first)])
    assert replaced["removed_paths"] == [str(second / "b" / "u.wav")]


def test_a_folder_inside_a_remembered_one_is_covered_by_it(tmp_path: Path) -> None:
    root = tmp_path / "music"
    write_tone(root / "jazz" / "a.wav", 300.0, 1.0)
    write_tone(root / "rock" / "b.wav", 500.0, 1.0)
    ws = tmp_path / "ws"
    _extract(ws, root / "jazz")
    both = _extract(ws, root)  # the outer folder takes the inner one in
    assert (both["tracks"], both["roots"]) == (2, [str(root)])
    again = _extract(ws, root / "rock")  # already covered
    assert (again["tracks"], again["roots"], again["done"]) == (2, [str(root)], 0)
