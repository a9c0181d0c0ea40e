"""`--help` that helps: every command has an example, choices are listed, defaults shown, `--c` spelt so."""

from __future__ import annotations

import pytest
import typer
from factories import run_cli

from embedtool.cli.app import app

COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


@pytest.fixture(autouse=True)
def _wide_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # no choice list folded across lines


def help_of(*args: str) -> str:
    result = run_cli(*args, "--help")
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def test_every_command_is_covered() -> None:
    assert len(COMMANDS) >= 13 and {"neighbours", "classify", "extract", "config"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_shows_an_example(command: str) -> None:
    text = help_of(command)
    assert "Example" in text and f"embedtool {command}" in text.split("Example", 1)[1], text


def test_choices_and_defaults_are_listed() -> None:
    neighbours = help_of("neighbours")
    assert "<similar|identify>" in neighbours and "<table|json|jsonl|csv|tsv|m3u>" in neighbours
    assert "<mean|rrf>" in neighbours and "[default: (mean)]" in neighbours  # --combine-by
    assert "[default: (similar)]" in neighbours and "[default: table]" in neighbours
    assert "<str>" not in neighbours  # no choice left as a bare string
    train = help_of("train")
    assert "<constant|step|cosine>" in train and "[default: (cosine)]" in train and "[default: (20)]" in train
    assert "<auto|flat|hnsw|ivf|ivf-pq>" in help_of("index")
    assert "<track|segment>" in help_of("cluster")


def test_classify_spells_c_lowercase_and_hides_the_old_spelling() -> None:
    text = help_of("classify")
    assert "--c " in text and "--C" not in text


def test_a_value_outside_the_choices_is_a_usage_error_listing_them() -> None:
    result = run_cli("neighbours", "--mode", "nearest", "x.wav")
    assert result.exit_code == 2
    assert "'similar', 'identify'" in " ".join(result.output.split())


def test_shell_completion_is_offered() -> None:
    assert "--install-completion" in help_of()
