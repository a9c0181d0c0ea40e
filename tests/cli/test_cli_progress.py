"""Progress where there is no terminal (a log file, CI, nohup): plain lines with counts, rate and ETA instead of a
cut-off bar; -v for more of them and for an error's underlying cause."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from factories import make_class_corpus, run_cli

from embedtool.cli import common
from embedtool.cli.common import LineProgress


def test_a_line_per_task_when_it_starts_while_it_runs_and_when_it_finishes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = [0.0]
    monkeypatch.setattr(common.time, "monotonic", lambda: clock[0])
    with LineProgress(interval=10.0) as progress:
        task = progress.add_task("embed", total=100, loss="-")
        for step in range(1, 101):
            clock[0] = step * 0.5  # 50 s in all: a line at the start, every 10 s, and at the end
            progress.update(task, completed=step, loss=f"{1 / step:.2f}")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 6, lines  # at 0.5 s, 10.5, 20.5, 30.5, 40.5 and the finish
    assert lines[0].startswith("embed: 1/100 (1%)") and "loss 1.00" in lines[0]
    assert re.search(r"eta \d+:\d\d:\d\d", lines[2]), lines[2]
    assert lines[-1].startswith("embed: 100/100 (100%)") and "eta" not in lines[-1]
    assert not any("\x1b[" in line or "━" in line for line in lines)  # no terminal codes, no bar


def test_extract_into_a_log_file_prints_plain_progress_lines(tmp_path: Path) -> None:
    audio = make_class_corpus(tmp_path / "audio", classes=1, per_class=3, seconds=0.5)
    proc = subprocess.run(
        [sys.executable, "-m", "embedtool", "-w", str(tmp_path / "ws"), "extract", str(audio), "-j", "1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("extract: ")]
    assert lines and lines[-1].startswith("extract: 3/3 (100%)"), proc.stderr
    assert "━" not in proc.stderr and "…" not in proc.stderr


def test_quiet_prints_no_progress(tmp_path: Path) -> None:
    audio = make_class_corpus(tmp_path / "audio", classes=1, per_class=2, seconds=0.5)
    result = run_cli("-w", tmp_path / "ws", "-q", "extract", audio, "-j", "1")
    assert result.exit_code == 0 and "extract: " not in result.output


def test_verbose_shows_the_cause_of_an_error(tmp_path: Path) -> None:
    (tmp_path / "embedtool.yaml").write_text("workspace: [unclosed\n")
    plain = run_cli("info")
    verbose = run_cli("-v", "info")
    assert plain.exit_code == verbose.exit_code == 2
    assert not re.search(r"cause: \w+Error:", plain.output), plain.output
    assert re.search(r"cause: \w+Error:", verbose.output), verbose.output  # yaml's own exception, named
