"""`--help` that helps: every command has an example, choices are listed, defaults shown, `--c` spelt so."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from factories import run_cli

from embedtool.cli.app import app
from embedtool.cli.flags import uses
from embedtool.config import load_project_config

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


# --- options built from the settings' declarations (embedtool/flag.py, cli/flags.py) ------------------------------


def _command_options() -> dict[str, dict[str, bool]]:
    """Each command's option flags -> whether --help hides it."""
    out: dict[str, dict[str, bool]] = {}
    for name, command in typer.main.get_command(app).commands.items():  # type: ignore[attr-defined]
        out[name] = {
            opt: bool(getattr(param, "hidden", False))
            for param in command.params
            for opt in (*param.opts, *getattr(param, "secondary_opts", ()))
        }
    return out


def test_every_flagged_setting_is_a_shown_option_and_its_old_spellings_hidden_ones() -> None:
    from embedtool.config import SECTIONS, section_class
    from embedtool.flag import flags_of

    options = _command_options()
    renamed = {}
    for section in SECTIONS:
        for key, declared in flags_of(section_class(section)).items():
            flag = declared.flag(key)
            shown = [c for c, opts in options.items() if opts.get(flag) is False]
            assert shown, f"{section}.{key}: {flag} is no command's option"
            for old in declared.old:
                assert all(options[c].get(old) is True for c in shown), (section, key, old)
            if flag != "--" + key.lower().replace("_", "-"):
                renamed[f"{section}.{key}"] = flag
    # a YAML key and its flag are the same name, but for these two
    assert renamed == {"neighbours.combine": "--combine-by", "engine.name": "--engine"}


def test_preset_choices_come_from_the_one_registry() -> None:
    from embedtool.config import PRESETS

    for command in ("train", "extract", "config"):
        assert "<" + "|".join(PRESETS) + ">" in help_of(command), command


def test_an_old_spelling_sets_the_same_setting_and_warns() -> None:
    from typer.testing import CliRunner

    from embedtool.cli.flags import Flags, takes

    seen: dict[str, Flags] = {}
    tiny = typer.Typer()

    @tiny.command()
    @takes("train", uses("evaluate", "untrained_baseline", "seed"), preset="train")
    def command(*, flags: Flags) -> None:
        seen["flags"] = flags

    def run(*args: str) -> tuple[Flags, str]:
        result = CliRunner().invoke(tiny, list(args))
        assert result.exit_code == 0, result.output
        return seen["flags"], " ".join(result.stderr.split())

    flags, said = run("--radius", "3", "--no-untrained", "--seed", "7", "--preset", "thesis")
    assert flags["train"]["neighbour_radius_s"] == 3.0 and flags["evaluate"]["untrained_baseline"] is False
    assert "--radius is deprecated: use --neighbour-radius-s" in said and "--untrained is deprecated" in said
    assert flags["train"]["seed"] == flags["evaluate"]["seed"] == 7  # one --seed sets both sections
    assert flags.given("train") == {"neighbour_radius_s", "seed"} and flags["train"]["preset"] == "thesis"
    flags, said = run("--neighbour-radius-s", "4", "--radius", "3")
    assert flags["train"]["neighbour_radius_s"] == 4.0  # the current flag wins
    flags, said = run("--neighbour-radius-s", "4")
    assert flags["train"]["epochs"] is None and "deprecated" not in said
    settings = flags.settings(load_project_config(search_dir=Path("/")), "train")
    assert settings.neighbour_radius_s == 4.0 and settings.epochs == 20
