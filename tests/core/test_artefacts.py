"""Artefact contracts: provenance, compatibility messages, atomic replacement, workspace resolution."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from factories import run_cli, write_config, write_tone

from embedtool.artefacts import (
    atomic_save_npy,
    check_compatible,
    read_meta,
    recover_replaced_dir,
    staged_dir,
    write_meta,
)
from embedtool.config import load_project_config
from embedtool.errors import IncompatibleArtefactError, MissingArtefactError
from embedtool.workspace import Workspace


def test_meta_round_trip_and_kind_check(tmp_path: Path) -> None:
    meta = write_meta(tmp_path, "model", 1, {"width": 0.5}, inputs={"features": "abc"}, extra={"epochs": 3})
    again = read_meta(tmp_path, "model", 1)
    assert again.fingerprint == meta.fingerprint and again.config == {"width": 0.5}
    assert again.inputs == {"features": "abc"} and again.extra["epochs"] == 3
    with pytest.raises(IncompatibleArtefactError, match="holds a 'model' artefact"):
        read_meta(tmp_path, "index")
    with pytest.raises(IncompatibleArtefactError, match="format version 1"):
        read_meta(tmp_path, "model", 2)


def test_missing_artefact_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(MissingArtefactError, match="embedtool index"):
        read_meta(tmp_path / "index", "index")


def test_check_compatible_names_each_difference() -> None:
    check_compatible({"sample_rate": 16000, "n_mels": 64}, {"sample_rate": 16000.0, "n_mels": 64}, "x")
    with pytest.raises(IncompatibleArtefactError) as info:
        check_compatible({"sample_rate": 16000, "n_mels": 64}, {"sample_rate": 22050, "n_mels": 128}, "model vs query")
    message = str(info.value)
    assert "sample_rate: 16000 != 22050" in message and "n_mels: 64 != 128" in message


def test_staged_dir_keeps_previous_artefact_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "index"
    with staged_dir(final) as stage:
        (stage / "data.txt").write_text("good")
        write_meta(stage, "index", 1, {})
    with pytest.raises(RuntimeError), staged_dir(final) as stage:
        (stage / "data.txt").write_text("half")
        raise RuntimeError("crash mid-build")
    assert (final / "data.txt").read_text() == "good"
    assert not list(tmp_path.glob(".index.*"))


def test_interrupted_swap_is_recovered(tmp_path: Path) -> None:
    final = tmp_path / "model"
    old = tmp_path / ".model.old"
    old.mkdir()
    write_meta(old, "model", 1, {"width": 1})
    # A crash between the two renames of a swap leaves only the previous folder, moved aside.
    recover_replaced_dir(final)
    assert read_meta(final, "model").config == {"width": 1}


def test_atomic_npy_leaves_no_temporary(tmp_path: Path) -> None:
    atomic_save_npy(tmp_path / "a.npy", np.arange(5))
    assert np.load(tmp_path / "a.npy").tolist() == [0, 1, 2, 3, 4]
    assert [p.name for p in tmp_path.iterdir()] == ["a.npy"]


def test_workspace_resolution(tmp_path: Path) -> None:
    assert Workspace.resolve(None, load_project_config()).root == tmp_path / "embedtool-workspace"
    write_config(tmp_path, "workspace: lib\n")
    assert Workspace.resolve(None, load_project_config()).root == tmp_path / "lib"
    assert Workspace.resolve(tmp_path / "other", load_project_config()).root == tmp_path / "other"


def test_info_on_a_workspace_without_artefacts_is_an_error_not_an_empty_table(tmp_path: Path) -> None:
    (tmp_path / "ws").mkdir()
    result = run_cli("--workspace", tmp_path / "ws", "info", "--json")
    assert result.exit_code == 4, result.output
    assert "is not an embedtool workspace" in result.output
    assert set(json.loads(result.stdout)) == {"error", "exit_code"}  # the error as JSON, no empty library


def test_written_files_follow_the_umask_not_mkstemps_owner_only_mode(tmp_path: Path) -> None:
    import os
    import stat

    from embedtool.artefacts import atomic_save_npy, atomic_write_json

    old = os.umask(0o027)
    try:
        atomic_write_json(tmp_path / "a.json", {"x": 1})
        atomic_save_npy(tmp_path / "a.npy", np.zeros(3))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "a.npy").stat().st_mode) == 0o640


def test_a_workspace_is_readable_by_others_under_the_usual_umask(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        root = write_tone(tmp_path / "audio" / "a" / "t.wav", 330.0, 1.0).parents[1]
        result = run_cli("-w", tmp_path / "ws", "-q", "extract", root)
        assert result.exit_code == 0, result.output
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "ws").rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in files), [
        (p.name, oct(p.stat().st_mode)) for p in files
    ]


def test_writing_stages_keep_a_log_in_the_workspace(trained_workspace_copy: Workspace, tmp_path: Path) -> None:
    ws = trained_workspace_copy
    log = ws.root / "logs" / "embedtool.log"
    log.unlink(missing_ok=True)
    assert run_cli("-w", ws.root, "-q", "cluster", "-k", "2").exit_code == 0
    bad = run_cli("-w", ws.root, "-q", "classify", "--cv", "50")  # more folds than groups: fails
    assert bad.exit_code == 1
    lines = log.read_text().splitlines()
    assert any("embedtool.cluster INFO: started:" in line for line in lines)
    assert any("embedtool.cluster INFO: finished in" in line for line in lines)
    assert any("embedtool.classify INFO: failed after" in line and "InputError" in line for line in lines)
    # a first run that fails leaves no workspace behind, log included
    empty = tmp_path / "nothing"
    empty.mkdir()
    fresh = tmp_path / "fresh-ws"
    assert run_cli("-w", fresh, "-q", "extract", empty).exit_code == 1
    assert not fresh.exists()
