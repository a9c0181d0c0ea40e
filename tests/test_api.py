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
