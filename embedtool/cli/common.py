"""What every command shares: the consoles, the global context, and turning errors into exit codes."""

from __future__ import annotations

import functools
import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from embedtool.config import ProjectConfig, load_project_config
from embedtool.errors import EmbedtoolError, ResourceLimitError
from embedtool.workspace import Workspace

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppContext:
    config: ProjectConfig
    workspace: Workspace
    quiet: bool = False
    verbose: bool = False


def init_context(
    ctx: typer.Context, workspace: Path | None, config_path: Path | None, quiet: bool, verbose: bool = False
) -> None:
    _RUN["verbose"] = verbose
    _RUN["printed_json"] = False
    # -v: embedtool's own log messages (e.g. embedtool.serve) on stderr, not other libraries'. One handler per
    # process, added or removed by each invocation (tests run many in one process).
    logger = logging.getLogger("embedtool")
    for old in [h for h in logger.handlers if isinstance(h, _VerboseHandler)]:
        logger.removeHandler(old)
    logger.setLevel(logging.INFO if verbose else logging.NOTSET)
    if verbose:
        handler = _VerboseHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    try:
        config = load_project_config(config_path)
        ctx.obj = AppContext(
            config=config, workspace=Workspace.resolve(workspace, config), quiet=quiet, verbose=verbose
        )
    except EmbedtoolError as exc:
        fail(exc)


# --format and --json of the commands that print a table unless asked for another format
TableFormat = Literal["table", "json", "csv", "tsv"]
JSON_FORMAT = typer.Option(False, "--json", help="Same as --format json.")


def format_option(help: str) -> Any:
    """``--format/-f``, a table by default; its choices are the parameter's ``Literal`` type (``TableFormat``)."""
    return typer.Option("table", "--format", "-f", help=help)


# --threads of train, embed, extract and evaluate (embedtool.threads)
THREADS_HELP = (
    "Threads (extract: worker processes) to use. Default: the CPUs actually free (affinity, cgroup quota, other "
    "work), looked at again during the run."
)


THREADS_OPTION = typer.Option(None, "--threads", min=1, help=THREADS_HELP)


def items_argument(metavar: str, help: str, required: bool = False) -> Any:
    """The values a command takes in order (files, folders, tracks, queries): none or more, or with ``required``
    one or more, shown as ``metavar``."""
    return typer.Argument(... if required else None, metavar=metavar, help=help, show_default=False)


def use_threads(threads: int | None) -> None:
    """``--threads N``: every stage of this run uses N threads (None: chosen from the free CPUs)."""
    from embedtool.threads import fix_threads

    fix_threads(threads)


class _VerboseHandler(logging.StreamHandler):
    """-v's handler: writes to whatever ``sys.stderr`` is when a message comes (not the stream of its birth)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it
        pass


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
    cause = exc.__cause__ or exc.__context__
    if cause is not None and _verbose():
        err_console.print(f"[dim]cause:[/] {escape(type(cause).__name__)}: {escape(str(cause))}", highlight=False)
    if json_requested() and not _RUN["printed_json"]:  # a result printed as JSON already carries the outcome
        print_json_error(str(exc), exc.exit_code)
    raise typer.Exit(code=exc.exit_code)


def json_requested(argv: Sequence[str] | None = None) -> bool:
    """Whether the running command was asked for JSON (``--json``, ``--format json``/``jsonl``): its errors then
    go to stdout as JSON too, so a script parses every outcome. Read from the command's parsed options, or from
    ``argv`` when the command line itself could not be parsed."""
    try:  # typer >= 0.2x carries its own click
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - typer on the installed click
        from click import get_current_context

    ctx = get_current_context(silent=True)
    if ctx is not None and argv is None:
        params = ctx.params
        if "as_json" in params or "output" in params:
            return bool(params.get("as_json")) or params.get("output") in ("json", "jsonl")
        # the global callback (a bad embedtool.yaml): the command's own options are not parsed yet
    args = list(sys.argv[1:] if argv is None else argv)
    pairs = zip(args, [*args[1:], ""], strict=True)
    return (
        "--json" in args
        or any(a in ("--format", "-f") and b in ("json", "jsonl") for a, b in pairs)
        or any(a in ("--format=json", "--format=jsonl") for a in args)
    )


def print_json_error(message: str, exit_code: int) -> None:
    """``{"error": ..., "exit_code": ...}`` on stdout (the one-line message is on stderr as well)."""
    sys.stdout.write(json.dumps({"error": message, "exit_code": exit_code}) + "\n")
    sys.stdout.flush()


def _verbose() -> bool:
    """Whether this run was given -v (set by :func:`init_context` for each invocation)."""
    return _RUN["verbose"]


_RUN = {
    "verbose": False,
    "printed_json": False,
}  # what the running invocation's global options ask of the shared helpers


def handle_errors(func: F) -> F:
    """Show an EmbedtoolError as one clear line with its exit status, not a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EmbedtoolError as exc:
            fail(exc)
        except MemoryError as exc:  # a resource limit (ulimit -v, a full machine) is said as one, not a traceback
            message = f"Ran out of memory ({exc or 'MemoryError'}); nothing finished was lost: free some memory"
            fail(ResourceLimitError(message + " or raise the limit (ulimit -v) and run the command again."))
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]: earlier finished output is kept")
            if json_requested() and not _RUN["printed_json"]:
                print_json_error("interrupted: earlier finished output is kept", 130)
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def print_json(data: Any) -> None:
    _RUN["printed_json"] = True
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
    """A rich progress bar; ``extra_columns`` add rate/ETA-style fields a stage reports. When stderr is not a
    terminal (a log file, CI, nohup) it is :class:`LineProgress`: plain lines, not a cut-off bar."""
    if not quiet and not err_console.is_terminal:
        return LineProgress(interval=VERBOSE_LINE_INTERVAL_S if _verbose() else LINE_INTERVAL_S)
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


LINE_INTERVAL_S = 15.0  # seconds between a task's progress lines when stderr is not a terminal
VERBOSE_LINE_INTERVAL_S = 2.0  # ... with -v


class LineProgress(Progress):
    """Progress for a log file, CI or nohup: no live bar, but one plain line per task when it starts, every
    ``interval`` seconds while it runs, and when it finishes, with counts, rate, elapsed time, ETA and the
    stage's own fields (loss, files/s, ...)."""

    def __init__(self, interval: float = LINE_INTERVAL_S) -> None:
        super().__init__(console=err_console, disable=True)
        self.interval = interval
        self._last: dict[TaskID, float] = {}
        self._done: set[TaskID] = set()

    def update(self, task_id: TaskID, **kwargs: Any) -> None:  # type: ignore[override]
        super().update(task_id, **kwargs)
        self._line(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._line(task_id)

    def stop(self) -> None:
        for task_id in list(self._tasks):
            if task_id not in self._done and task_id in self._last:
                self._line(task_id, force=True)
        super().stop()

    def _line(self, task_id: TaskID, force: bool = False) -> None:
        task = self._tasks[task_id]
        now = time.monotonic()
        finished = task.total is not None and task.completed >= task.total
        if task_id in self._done or not (force or finished or now - self._last.get(task_id, -1e9) >= self.interval):
            return
        self._last[task_id] = now
        if finished:
            self._done.add(task_id)
        total = f"/{task.total:.0f} ({100 * task.completed / task.total:.0f}%)" if task.total else ""
        parts = [f"{task.description}: {task.completed:.0f}{total}"]
        if task.speed:
            parts.append(f"{task.speed:.1f}/s")
        parts.append(f"elapsed {_clock(task.elapsed or 0.0)}")
        if task.time_remaining is not None and not finished:
            parts.append(f"eta {_clock(task.time_remaining)}")
        parts += [f"{key} {value}" for key, value in task.fields.items() if value not in ("", "-", None)]
        self.console.print(", ".join(parts), markup=False, highlight=False, soft_wrap=True)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


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
