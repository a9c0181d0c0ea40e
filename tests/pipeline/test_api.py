"""The public API: every exported name resolves, and importing the package does not load torch."""

from __future__ import annotations

import subprocess
import sys

import embedtool


def test_every_public_name_resolves_to_what_its_module_defines() -> None:
    for name in embedtool.__all__:
        value = getattr(embedtool, name)
        assert value is not None, name
        if name != "__version__":
            module = embedtool._EXPORTS[name]
            assert getattr(sys.modules[module], name) is value


def test_importing_the_package_stays_cheap() -> None:
    code = "import sys, embedtool; w = embedtool.Workspace; print('torch' in sys.modules, 'faiss' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_unknown_names_raise_attribute_error() -> None:
    try:
        embedtool.no_such_stage  # noqa: B018
    except AttributeError as exc:
        assert "no_such_stage" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_help_version_info_and_config_run_without_torch_faiss_or_sklearn(tmp_path) -> None:
    """`embedtool --help` (and every command's), --version, info and config must start fast: torch, FAISS and
    scikit-learn are made unimportable, and each must still succeed."""
    code = r"""
import sys, importlib.abc

class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchaudio", "faiss", "sklearn"):
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, Block())
import typer
from typer.testing import CliRunner
from embedtool.cli.app import app

commands = sorted(typer.main.get_command(app).commands)
runs = [["--help"], ["--version"], ["-w", sys.argv[1], "info"], ["config"]] + [[c, "--help"] for c in commands]
for args in runs:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (args, result.output, result.exception)
missing = CliRunner().invoke(app, ["-w", sys.argv[1] + "-missing", "info"])
assert missing.exit_code == 4, missing.output  # not a workspace: said without loading anything heavy
print(len(commands), "commands")
"""
    (tmp_path / "ws" / "features").mkdir(parents=True)
    (tmp_path / "ws" / "features" / "meta.json").write_text("{}")  # a workspace (a damaged one: info says so)
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ws")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split()[0]) >= 10


def test_queries_expand_as_neighbours_takes_them(tmp_path) -> None:
    from pathlib import Path

    import pytest
    from factories import write_tone

    from embedtool.errors import InputError

    folder = tmp_path / "clips"
    for name in ("b.wav", "a.wav", "sub/c.flac"):
        write_tone(folder / name, 440.0, 0.5)
    (folder / "notes.txt").write_text("not audio")
    listed = tmp_path / "queries.txt"
    listed.write_text(f"\n{folder / 'a.wav'}\ntrack-id-prefix\n\n")
    expanded = embedtool.expand_queries(["first.wav", folder], listed)
    assert expanded == ["first.wav", *(str(folder / n) for n in ("a.wav", "b.wav", "sub/c.flac")),
                        str(folder / "a.wav"), "track-id-prefix"]  # fmt: skip
    with pytest.raises(InputError, match="no such file"):
        embedtool.expand_queries([], tmp_path / "missing.txt")
    with pytest.raises(InputError, match="No query given"):
        embedtool.expand_queries([])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no audio files"):
        embedtool.expand_queries([Path(tmp_path / "empty")])


def test_answers_as_audacity_label_tracks(tmp_path) -> None:
    from embedtool.query.searcher import Match, QueryInfo

    none = embedtool.QueryResult("identify", [], True, 0.5, QueryInfo(2.5, 3, source="q.wav"))
    assert embedtool.audacity_labels(none) == "0.000000\t2.500000\tno match\n"
    kick = Match(1, "abc123", 0.9, 3, 0.25, 1.5, 10.0, 11.25, path="/lib/drums/kick.wav")
    found = embedtool.QueryResult("similar", [kick], False, None, QueryInfo(1.5, 3, source="q.wav"))
    line = "0.250000\t1.500000\t1. drums/kick.wav abc123 @ 10.0-11.2 s (score 0.900)\n"
    assert embedtool.audacity_labels(found, ["/lib"]) == line
    writer = embedtool.LabelTrackWriter(tmp_path / "labels", ["/lib"])
    first, second = writer.write("x/q.wav", found), writer.write("y/q.mp3", none)
    assert (first.name, second.name) == ("q.txt", "q-2.txt") and first.read_text() == line


def test_project_config_loads_as_the_cli_reads_it(tmp_path) -> None:
    from factories import write_config

    write_config(tmp_path, "preset: thesis\nindex:\n  calibration_tracks: 7\n")
    config = embedtool.load_project_config()  # found from the current folder, as the CLI finds it
    assert isinstance(config, embedtool.ProjectConfig)
    assert config.settings("index").calibration_tracks == 7 and config.settings("features").n_mels == 128
