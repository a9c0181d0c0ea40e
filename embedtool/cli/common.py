"""What every command shares: the consoles, the global context, and turning errors into exit codes."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from embedtool.config import ProjectConfig, load_project_config
from embedtool.errors import EmbedtoolError
from embedtool.workspace import Workspace

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppContext:
    config: ProjectConfig
    workspace: Workspace
    quiet: bool = False


def init_context(ctx: typer.Context, workspace: Path | None, config_path: Path | None, quiet: bool) -> None:
    try:
        config = load_project_config(config_path)
        ctx.obj = AppContext(config=config, workspace=Workspace.resolve(workspace, config), quiet=quiet)
    except EmbedtoolError as exc:
        fail(exc)


def default_of(section: str, key: str) -> str:
    """What an option left unset means: the section's built-in default (``embedtool.yaml`` may set another), for
    ``show_default`` in ``--help``. Reads only the section's options dataclass (no torch)."""
    from embedtool.config import section_class

    cls = section_class(section)
    value = getattr(cls.from_preset("default") if hasattr(cls, "from_preset") else cls(), key)
    return "none" if value in ("", None) else str(value)


def app_context(ctx: typer.Context, existing: bool = True) -> AppContext:
    """The global context; commands invoked without the callback (tests) get one from the cwd. With
    ``existing`` (every command but those that make a workspace or need none), a workspace that does not exist or
    holds no artefact is an error naming its path (exit 4), not an empty library."""
    root = ctx.find_root()
    if root.obj is None:
        config = load_project_config()
        root.obj = AppContext(config=config, workspace=Workspace.resolve(None, config))
    if existing:
        root.obj.workspace.require()
    return root.obj


def fail(exc: EmbedtoolError) -> None:
    from rich.markup import escape  # a message is text: "embedtool[serve]" must not be read as markup

    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
    raise typer.Exit(code=exc.exit_code)


def handle_errors(func: F) -> F:
    """Show an EmbedtoolError as one clear line with its exit status, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EmbedtoolError as exc:
            fail(exc)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: earlier finished output is kept")
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def csv_writer(output: str, columns: Sequence[str]) -> Any:
    """A CSV (``output`` 'csv') or TSV ('tsv') writer on stdout with its header row written: spreadsheets open
    what it writes. None (a blank cell) is written for a missing value."""
    import csv

    writer = csv.writer(sys.stdout, delimiter="\t" if output == "tsv" else ",", lineterminator="\n")
    writer.writerow(columns)
    return writer


def write_table_rows(output: str, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> None:
    """``rows`` (dicts) as CSV/TSV with ``columns`` in that order; a column a row lacks is left empty."""
    writer = csv_writer(output, columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])


def make_progress(quiet: bool = False, *extra_columns: Any) -> Progress:
    """A rich progress bar; ``extra_columns`` add rate/ETA-style fields a stage reports."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra_columns,
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet,
        transient=False,
    )


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def stage_progress(progress: Progress) -> Callable[[str, int, int], None]:
    """The library's ``progress(stage, done, total)`` drawn as one rich task per stage (the part before ':')."""
    tasks: dict[str, Any] = {}

    def report(stage: str, done: int, total: int) -> None:
        key = stage.split(":")[0]
        if key not in tasks:
            tasks[key] = progress.add_task(stage, total=total)
        progress.update(tasks[key], description=stage, completed=done, total=total)

    return report
