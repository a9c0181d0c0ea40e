"""The `embedtool` command: a thin Typer layer over the library. Each command lives in its own module."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import typer

from embedtool import __version__
from embedtool.cli.common import init_context
from embedtool.torchrun import end_after, launched_world_size


def _flag_type_shown_as_none() -> None:
    """Boolean flags take no value, so ``--help`` shows no type after them (typer 0.29 with click 8.2+ shows
    ``<bool>``, as if ``--json`` wanted one)."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: typer.Context) -> str | None:  # type: ignore[name-defined]
        if self.is_flag and self.metavar is None:
            return None
        return shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flag_type_shown_as_none()

app = typer.Typer(
    name="embedtool",
    help=(
        "Learn an embedding space from your own audio without labels, index it with FAISS, and query it.\n\n"
        "Typical use: `embedtool extract ~/Music`, `embedtool train`, `embedtool index`, "
        "`embedtool neighbours song.mp3`."
    ),
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode="markdown",  # help paragraphs are re-flowed to the terminal, `code` is shown as code
    context_settings={"show_default": True},
    pretty_exceptions_show_locals=False,
)

# One module per command, in pipeline order; each registers itself on `app`.
COMMAND_MODULES = [
    "info",
    "config",
    "extract",
    "train",
    "embed",
    "index",
    "remove",
    "neighbours",
    "cluster",
    "classify",
    "duplicates",
    "evaluate",
    "serve",
    "demo",
    "verify",
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"embedtool {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    workspace: Path | None = typer.Option(
        None,
        "--workspace",
        "-w",
        help="Workspace folder holding the artefacts (default: from embedtool.yaml, else ./embedtool-workspace).",
        envvar="EMBEDTOOL_WORKSPACE",
    ),
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Configuration file (default: embedtool.yaml here or in the nearest folder above)."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
    verbose: bool = typer.Option(
        False,
        "--verbose",
        "-v",
        help="More detail on stderr: progress lines every 2 s when not on a terminal, library log messages, and "
        "the underlying cause of an error.",
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    init_context(ctx, workspace, config, quiet, verbose)


for _name in COMMAND_MODULES:
    importlib.import_module(f"embedtool.cli.{_name}")


def _usage_errors_as_json_too() -> None:
    """A command line that cannot be parsed (an unknown option or command, a value outside its choices: exit 2)
    given ``--json`` also prints its error as JSON on stdout, as every other outcome does (typer shows such
    errors itself, before any command runs)."""
    from typer import rich_utils

    from embedtool.cli.common import json_requested, print_json_error

    shown = rich_utils.rich_format_error

    def rich_format_error(exc: typer.Exit | Exception) -> None:
        shown(exc)  # type: ignore[arg-type]
        if json_requested(sys.argv[1:]):
            print_json_error(exc.format_message(), exc.exit_code)  # type: ignore[union-attr]

    rich_utils.rich_format_error = rich_format_error  # type: ignore[assignment]


def main() -> None:
    _usage_errors_as_json_too()
    if launched_world_size() > 1:  # `torchrun -m embedtool train`: see end_after for why it ends this way
        end_after(app)
    app()
