"""`embedtool neighbours QUERY`: similar tracks, or which track an excerpt is from, with time ranges."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from embedtool.cli.app import app
from embedtool.cli.common import app_context, console, err_console, handle_errors, print_json
from embedtool.errors import InputError, NoMatchError

if TYPE_CHECKING:
    from embedtool.query.searcher import QueryResult


@app.command()
@handle_errors
def neighbours(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="An audio file, or a library track (id, id prefix or path)."),
    mode: str | None = typer.Option(None, "--mode", "-m", help="similar (default) or identify."),
    k: int | None = typer.Option(None, "-k", "--k", help="Number of tracks to return."),
    segments: bool = typer.Option(False, "--segments", help="Also list each query window's nearest segment."),
    include_self: bool = typer.Option(False, "--include-self", help="similar: keep the query's own track."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Find the library tracks nearest a query, with the matching time ranges (exit 3: identify found none)."""
    from embedtool.query.searcher import Searcher

    actx = app_context(ctx)
    options = actx.config.settings("neighbours", {"mode": mode, "k": k, "include_self": include_self or None})
    searcher = Searcher.open(actx.workspace, options)
    path = Path(query).expanduser()
    if path.is_file():
        result = searcher.query_file(path, segments=segments)
    elif searcher.find_track(query) is not None:
        result = searcher.query_track(query, segments=segments)
    else:
        raise InputError(f"{query!r} is neither an audio file nor a library track (id, id prefix or path).")
    if as_json:
        print_json(result.to_dict())
    else:
        _print(result)
    if result.mode == "identify" and result.no_match:
        if result.best is None or result.threshold is None:
            raise NoMatchError("no match: no candidate track")
        if searcher.threshold_statistic == "best_score":  # an index built before the confidence rule
            raise NoMatchError(
                f"no match: best score {result.best.score:.3f} is below the identify threshold {result.threshold:.3f}"
            )
        raise NoMatchError(
            f"no match: confidence {result.confidence:.2f} (how much nearer the best track is than the runner-up) "
            f"is below the identify threshold {result.threshold:.2f}"
        )


def _print(result: QueryResult) -> None:
    q = result.query
    where = f" (library track {q['library_track']})" if q.get("library_track") else ""
    console.print(
        f"[bold]{result.mode}[/] query {q.get('source', '<samples>')}{where}: {q['duration_s']:.1f} s, "
        f"{q['windows']} windows" + (f"; left out {result.excluded_track}" if result.excluded_track else "")
    )
    if result.mode == "identify" and result.no_match:
        err_console.print("[yellow]no match[/] above the calibrated threshold; closest candidates:")
    table = Table("#", "track", "label", "score", "windows", "query (s)", "reference (s)")
    table.columns[1].overflow = "fold"  # keep the whole name readable on a narrow terminal
    for m in result.matches:
        table.add_row(
            str(m.rank),
            _display_name(m.path, m.track_id),
            m.label or "",
            f"{m.score:.3f}",
            str(m.windows),
            f"{m.query_start_s:.1f}-{m.query_end_s:.1f}",
            f"{m.ref_start_s:.1f}-{m.ref_end_s:.1f}",
        )
    console.print(table)
    if result.mode == "identify" and result.confidence is not None and result.threshold is not None:
        console.print(
            f"confidence {result.confidence:.2f}: the best track is that much nearer than the runner-up "
            f"(identify threshold {result.threshold:.2f})"
        )
    if result.segments:
        seg = Table("query window (s)", "segment", "reference (s)", "score", title="nearest segment per window")
        for h in result.segments:
            seg.add_row(f"{h.query_start_s:.1f}", h.segment_id, f"{h.ref_start_s:.1f}-{h.ref_end_s:.1f}",
                        f"{h.score:.3f}")  # fmt: skip
        console.print(seg)


def _display_name(path: str | None, track_id: str) -> str:
    """The file with its folder (which often names the album or class), and the id for scripts to reuse."""
    if not path:
        return track_id
    parts = Path(path).parts
    return f"{'/'.join(parts[-2:])} [dim]{track_id[:8]}[/]"
