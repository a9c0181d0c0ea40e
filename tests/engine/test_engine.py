"""Engines without a Ray running: the local default never imports ray, and asking for ray where it cannot run
(not installed, no cluster at the address, a bad name) is a clear error, not a traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from factories import flat, make_class_corpus, run_cli, write_config

from embedtool.engine.base import Delivery

REPO = Path(__file__).resolve().parents[2]


def small_corpus(tmp_path: Path) -> Path:
    return make_class_corpus(tmp_path / "audio", classes=1, per_class=2, seconds=0.5, sr=16000)


def test_the_local_engine_never_imports_ray(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from embedtool.cli.app import app
        try:
            app(["-q", "-w", sys.argv[2], "extract", sys.argv[1], "-j", "1", "--json"])
        except SystemExit as exc:
            assert not exc.code, exc.code
        assert "ray" not in sys.modules, "the local engine imported ray"
        print("ok")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(small_corpus(tmp_path)), str(tmp_path / "ws")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": ""},
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr


def test_ray_not_installed_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    root = small_corpus(tmp_path)
    result = run_cli("-w", tmp_path / "ws", "extract", root, "--engine", "ray")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "pip install 'embedtool[ray]'" in flat(result.output)
    write_config(tmp_path, "engine: ray\n")  # the same from embedtool.yaml (short form)
    result = run_cli("-w", tmp_path / "ws", "extract", root)
    assert result.exit_code == 2 and "pip install 'embedtool[ray]'" in flat(result.output)
    assert run_cli("-w", tmp_path / "ws", "-q", "extract", root, "--engine", "local").exit_code == 0  # flag wins


def test_a_cluster_address_nothing_answers_at_is_refused_at_once(tmp_path: Path) -> None:
    root = small_corpus(tmp_path)
    result = run_cli("-w", tmp_path / "ws", "extract", root, "--engine", "ray", "--cluster", "127.0.0.1:1")
    assert result.exit_code == 2 and "No Ray cluster answers at 127.0.0.1:1" in flat(result.output), result.output
    result = run_cli("-w", tmp_path / "ws", "extract", root, "--engine", "ray", "--cluster", "head-node")
    assert result.exit_code == 2 and "is not a Ray address" in flat(result.output)
    write_config(tmp_path, "engine: {name: dask}\n")
    result = run_cli("-w", tmp_path / "ws", "extract", root)
    assert result.exit_code == 2 and "'engine'.name must be one of 'local', 'ray'" in flat(result.output)
    assert not (tmp_path / "ws" / "features" / "meta.json").exists()


def test_ordered_delivery_holds_early_results_until_their_turn() -> None:
    seen: list[int] = []
    delivery = Delivery(lambda index, result: seen.append(result), ordered=True)
    for index in (2, 0, 3, 1):
        delivery.put(index, index * 10)
        assert delivery.held == {2: 1, 0: 1, 3: 2, 1: 0}[index]
    assert seen == [0, 10, 20, 30]
