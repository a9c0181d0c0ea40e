"""The `embedtool` command: a thin Typer layer over the library. Each command lives in its own module."""

from __future__ import annotations

import importlib
from pathlib import Path

import typer

from embedtool import __version__
from embedtool.cli.common import init_context

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
    "neighbours",
    "cluster",
    "classify",
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


def main() -> None:
    app()
