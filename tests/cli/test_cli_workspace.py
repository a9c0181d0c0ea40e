"""Which workspace a command works on: embedtool.yaml found upward like git's .git, a wrong --workspace named as
an error (exit 4), and lock files that live inside the workspace and go away after a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import flat, make_class_corpus, run_cli, write_config

from embedtool.artefacts import META_FILE as ARTEFACTS_META_FILE
from embedtool.config import find_config_file, load_project_config
from embedtool.workspace import LOCK_FILE, META_FILE, Workspace

# Every command that reads a workspace; `extract` (which makes one), `config` and `demo` are exempt.
READING = [
    ["info"],
    ["train"],
    ["embed"],
    ["index"],
    ["neighbours", "x.wav"],
    ["cluster"],
    ["classify"],
    ["evaluate"],
    ["verify"],
    ["serve"],
]


def said(text: str, output: str) -> bool:
    """``text`` is in ``output`` whatever rich's wrapping (which may break a long path anywhere)."""
    return "".join(text.split()) in "".join(output.split())


def test_the_workspace_marker_is_the_artefacts_meta_file() -> None:
    assert META_FILE == ARTEFACTS_META_FILE


@pytest.mark.parametrize("args", READING, ids=lambda a: a[0])
def test_a_missing_workspace_is_an_error_naming_its_path(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "no-such-ws"
    result = run_cli("-w", missing, *args)
    assert result.exit_code == 4, result.output
    assert said(f"The workspace {missing} (--workspace or EMBEDTOOL_WORKSPACE) does not exist", result.output)
    assert not missing.exists()  # nothing was made there


def test_an_audio_folder_given_as_workspace_is_not_an_empty_library(tmp_path: Path) -> None:
    audio = make_class_corpus(tmp_path / "audio", classes=1, per_class=1, seconds=0.5)
    for args in (["info"], ["info", "--json"], ["neighbours", "x.wav"]):
        result = run_cli("-w", audio, *args)
        output = flat(result.output)
        assert result.exit_code == 4, (args, output)
        assert said(f"{audio} (--workspace or EMBEDTOOL_WORKSPACE) is not an embedtool workspace", output)
        assert "embedtool index" not in output  # not the fix of a later stage


def test_the_default_and_configured_workspaces_are_checked_too(tmp_path: Path) -> None:
    result = run_cli("info")
    assert result.exit_code == 4
    assert said(f"{tmp_path / 'embedtool-workspace'} (the default workspace) does not exist", result.output)
    write_config(tmp_path, "workspace: lib\n")
    result = run_cli("cluster")
    assert result.exit_code == 4
    assert said(f"{tmp_path / 'lib'} (workspace: in {tmp_path / 'embedtool.yaml'}) does not exist", result.output)


def test_config_and_extract_work_without_a_workspace(tmp_path: Path) -> None:
    assert run_cli("-w", tmp_path / "new", "config").exit_code == 0
    audio = make_class_corpus(tmp_path / "audio", classes=1, per_class=2, seconds=1.0)
    assert run_cli("-w", tmp_path / "new", "-q", "extract", audio).exit_code == 0
    result = run_cli("-w", tmp_path / "new", "info", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["tracks"] == 2


def test_a_workspace_with_only_a_finished_report_is_a_workspace(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path / "ws")
    assert not ws.has_artefacts()
    (ws.reports / "r1").mkdir(parents=True)
    assert not ws.has_artefacts()  # an unfinished report is not an artefact
    (ws.reports / "r1" / META_FILE).write_text("{}")
    assert ws.has_artefacts()
    assert ws.require() is ws


def test_embedtool_yaml_is_found_in_a_folder_above(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_config(tmp_path, "workspace: lib\nextract: {labels: labels.csv}\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert find_config_file() == tmp_path / "embedtool.yaml"
    config = load_project_config()
    assert config.path == tmp_path / "embedtool.yaml"
    assert config.sections["extract"]["labels"] == str(tmp_path / "labels.csv")  # relative to the file, not cwd
    result = run_cli("config")
    assert result.exit_code == 0
    assert f"workspace: {tmp_path / 'lib'}" in result.stdout  # not ./a/b/embedtool-workspace
    nearer = write_config(tmp_path / "a", "workspace: other\n")
    assert find_config_file() == nearer  # the nearest one wins


def test_no_config_above_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert load_project_config().path is None


def test_a_failed_first_run_leaves_no_workspace_or_lock_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    result = run_cli("-q", "extract", tmp_path / "empty")
    assert result.exit_code == 1 and "No audio files found" in flat(result.output)
    assert not (tmp_path / "embedtool-workspace").exists()


def test_lock_files_are_removed_after_a_run(tmp_path: Path) -> None:
    audio = make_class_corpus(tmp_path / "audio", classes=1, per_class=1, seconds=0.5)
    ws = Workspace.at(tmp_path / "ws")
    assert run_cli("-w", ws.root, "-q", "extract", audio).exit_code == 0
    assert run_cli("-w", ws.root, "-q", "extract", tmp_path / "missing").exit_code != 0  # a failed later run
    left = [p.name for p in ws.root.rglob("*.lock")]
    assert left == []
    assert ws.has_artefacts()  # a failed later run keeps what was there
    with ws.lock("train"):
        assert (ws.root / LOCK_FILE).is_file()
    assert not (ws.root / LOCK_FILE).exists()
