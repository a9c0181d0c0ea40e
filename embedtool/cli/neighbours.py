"""`embedtool neighbours QUERY...`: similar tracks, or which track an excerpt is from, with time ranges.

Many queries run in one process (the model and the index are loaded once): files, folders (every audio file
under them), library tracks, or a list file. Results print as a table, or as JSON, JSON lines, CSV or TSV for
scripts and spreadsheets (one row per query and matched track), or as an M3U8 playlist of the answers' files.
With ``--combine`` the queries are seeds of one answer, "more like these" (``embedtool.query.seeds``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import typer
from rich.table import Table

from embedtool.cli.app import app
from embedtool.cli.common import (
    JSON_FORMAT,
    app_context,
    console,
    csv_writer,
    err_console,
    format_option,
    handle_errors,
    items_argument,
    print_json,
)
from embedtool.cli.flags import Flags, takes
from embedtool.errors import EmbedtoolError, NoMatchError

if TYPE_CHECKING:
    from embedtool import LabelTrackWriter, QueryResult, Searcher

FORMATS = ("table", "json", "jsonl", "csv", "tsv", "m3u")
# The columns of --format csv/tsv: the query, then one matched track per row.
COLUMNS = (
    "query", "mode", "rank", "track_id", "path", "label", "score", "windows", "query_start_s", "query_end_s",
    "ref_start_s", "ref_end_s", "no_match", "confidence", "decided_by", "fingerprint_hits", "error",
)  # fmt: skip


@app.command(
    epilog="Examples: `embedtool neighbours song.mp3 queries/ --mode identify -k 3 --format csv > matches.csv`; "
    "`embedtool neighbours a.mp3 b.mp3 c.mp3 --combine -k 20 --format m3u > more.m3u8`"
)
@handle_errors
@takes("neighbours")
def neighbours(
    ctx: typer.Context,
    queries: list[str] = items_argument(
        "QUERY...", "Audio files, folders of audio, or library tracks (id, id prefix or path)."
    ),
    query_list: Path | None = typer.Option(None, "--list", help="A file of queries, one per line."),
    segments: bool = typer.Option(False, "--segments", help="Also list each query window's nearest segment."),
    combine: bool = typer.Option(
        False, "--combine", help="One answer for all the queries together: tracks like these seeds (similar mode)."
    ),
    exclude_seeds: bool = typer.Option(
        False,
        "--exclude-seeds",
        help="similar: leave every query's own library track out of every answer (always so with --combine, "
        "unless --include-self).",
    ),
    output: Literal["table", "json", "jsonl", "csv", "tsv", "m3u"] = format_option(
        "How to print the results (m3u: an M3U8 playlist of the answers' files)."
    ),
    as_json: bool = JSON_FORMAT,
    labels_dir: Path | None = typer.Option(
        None,
        "--labels-dir",
        help="Also write each query's matches as an Audacity label track, DIR/<query name>.txt "
        "(File > Import > Labels, beside the query's audio): one label per match over the query's matched range.",
    ),
    *,
    flags: Flags,
) -> None:
    """Find the library tracks nearest each query, with the matching time ranges.

    Exit 3 when a single identify query finds no match; with several queries, no-match is a column and the exit
    status is 1 when a query could not be answered (the others still are).
    """
    from embedtool import LabelTrackWriter, Searcher, expand_queries

    output = "json" if as_json else output
    if output not in FORMATS:
        raise typer.BadParameter(f"--format must be one of {', '.join(FORMATS)}, not {output!r}")
    sources = expand_queries(list(queries or []), query_list)
    actx = app_context(ctx)
    options = flags.settings(actx.config, "neighbours")
    combine = combine or "combine" in flags.given("neighbours")  # --combine-by implies --combine
    if (combine or exclude_seeds) and options.mode != "similar":
        raise typer.BadParameter("--combine and --exclude-seeds answer similar-mode queries, not identify")
    if combine and (labels_dir is not None or segments):
        raise typer.BadParameter("--labels-dir and --segments describe each query's own answer: not with --combine")
    searcher = Searcher.open(actx.workspace, options)
    if combine:
        _combined(searcher, sources, options.combine, not options.include_self, output)
        return
    ask = _asking(searcher, sources, segments, exclude_seeds)
    if output == "m3u":
        _playlist(searcher, sources, ask)
        return
    labels = LabelTrackWriter(labels_dir, searcher.roots) if labels_dir is not None else None
    if len(sources) == 1:  # one query: its errors and no-match end the run (exit 1 or 3), JSON is the result itself
        result = ask(sources[0])
        if labels is not None:
            labels.write(sources[0], result)
        if output == "json":
            print_json(result.to_dict())
        else:
            _Output(output, searcher.roots).write(sources[0], result)
        _raise_no_match(searcher, result)
        return
    answered = _answer_all(searcher, sources, ask, output, labels)
    failed = [s for s, r in answered if not hasattr(r, "matches")]
    if failed:
        err_console.print(f"[bold red]error:[/] {len(failed)} of {len(sources)} queries could not be answered")
        raise typer.Exit(code=1)


def _asking(searcher: Searcher, sources: list[str], segments: bool, exclude_seeds: bool) -> Any:
    """How each query is asked: as it is, or (``--exclude-seeds``) with every query's own track left out."""
    if not exclude_seeds:
        return lambda source: searcher.query(source, segments=segments)
    from embedtool import leave_out, seed_tracks

    own: set[str] = set()
    for source in sources:
        try:
            own |= seed_tracks(searcher, [source])
        except EmbedtoolError:
            pass  # a query that names nothing fails in its own place, the others are still answered
    k = searcher.options.k
    return lambda source: leave_out(searcher.query(source, k=k + len(own), segments=segments), own, k)


def _combined(searcher: Searcher, sources: list[str], method: str, exclude: bool, output: str) -> None:
    """All the queries as seeds of one answer, in the chosen format."""
    from embedtool import m3u, more_like_these

    result = more_like_these(searcher, sources, combine=method, exclude_seeds=exclude)
    title = " + ".join(sources)
    if output == "m3u":
        sys.stdout.write(m3u(searcher, [(f"more like {title} ({method})", result)]))
    elif output in ("json", "jsonl"):
        answer = result.to_dict()
        answer["query"] = {"given": list(sources), **answer["query"]}
        if output == "json":
            print_json(answer)
        else:
            print(json.dumps(answer, ensure_ascii=False), flush=True)
    elif output == "table":
        q = result.query
        left_out = f"; left out their {len(q.excluded_tracks)} library tracks" if q.excluded_tracks else ""
        console.print(
            f"[bold]similar[/] to {len(sources)} seeds together ({method}): {', '.join(sources)}{left_out}",
            highlight=False,
        )
        _print_matches(result, searcher.roots)
    else:
        _Output(output, searcher.roots).write(title, result)


def _playlist(searcher: Searcher, sources: list[str], ask: Any) -> None:
    """--format m3u of separate queries: every answer's tracks in order, each answer under a comment naming its
    query; a query that cannot be answered is reported on stderr (exit 1) and the others are still listed."""
    from embedtool import m3u

    answered, failed = [], 0
    for source in sources:
        try:
            answered.append((f"neighbours of {source}" if len(sources) > 1 else None, ask(source)))
        except EmbedtoolError as exc:
            if len(sources) == 1:
                raise
            failed += 1
            err_console.print(f"[bold]{source}[/]: [red]not answered[/] {exc}", highlight=False)
    sys.stdout.write(m3u(searcher, answered))
    if failed:
        err_console.print(f"[bold red]error:[/] {failed} of {len(sources)} queries could not be answered")
        raise typer.Exit(code=1)


def _answer_all(
    searcher: Searcher, sources: list[str], ask: Any, output: str, labels: LabelTrackWriter | None = None
) -> list[tuple[str, Any]]:
    """Every query, written out as it is answered (a JSON list once all are in); a failed query is reported in
    its place and the others are still answered."""
    answered: list[tuple[str, Any]] = []
    out = _Output(output, searcher.roots)
    for source in sources:
        try:
            result: Any = ask(source)
        except EmbedtoolError as exc:
            result = exc
        answered.append((source, result))
        out.write(source, result)
        if labels is not None and not isinstance(result, EmbedtoolError):
            labels.write(source, result)
    if output == "json":
        print_json([_as_dict(source, result) for source, result in answered])
    return answered


def _as_dict(source: str, result: Any) -> dict[str, Any]:
    """A result as JSON, its ``query`` naming the query as given; a failed query as its reason."""
    if isinstance(result, EmbedtoolError):
        return {"query": {"given": source}, "error": str(result)}
    out = result.to_dict()
    out["query"] = {"given": source, **out["query"]}
    return out


class _Output:
    """One query's answer in the chosen format: a table, a JSON line, or CSV/TSV rows (a header first; one row
    per matched track, one for a failed query). JSON lists are written by the caller."""

    def __init__(self, output: str, roots: list[str] | None = None):
        self.output = output
        self.roots = roots or []
        self.rows = None
        if output in ("csv", "tsv"):
            self.rows = csv_writer(output, COLUMNS)

    def write(self, source: str, result: Any) -> None:
        failed = isinstance(result, EmbedtoolError)
        if self.rows is not None:
            self._write_rows(source, result)
        elif self.output == "jsonl":
            print(json.dumps(_as_dict(source, result), ensure_ascii=False), flush=True)
        elif self.output == "table" and failed:
            err_console.print(f"[bold]{source}[/]: [red]not answered[/] {result}", highlight=False)
        elif self.output == "table":
            _print(result, self.roots)

    def _write_rows(self, source: str, result: Any) -> None:
        assert self.rows is not None
        if isinstance(result, EmbedtoolError):
            self.rows.writerow([source] + [""] * (len(COLUMNS) - 2) + [str(result)])
            return
        head = {"query": source, "mode": result.mode, "no_match": result.no_match, "confidence": result.confidence,
                "decided_by": result.decided_by, "fingerprint_hits": result.fingerprint_hits}  # fmt: skip
        for m in result.matches or [None]:
            row = {**head, **(m.to_dict() if m is not None else {})}
            self.rows.writerow(["" if row.get(c) is None else row.get(c) for c in COLUMNS])


def _raise_no_match(searcher: Searcher, result: QueryResult) -> None:
    if not (result.mode == "identify" and result.no_match):
        return
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


def _print(result: QueryResult, roots: list[str]) -> None:
    q = result.query
    where = f" (library track {q.library_track})" if q.library_track else ""
    console.print(
        f"[bold]{result.mode}[/] query {q.source or '<samples>'}{where}: {q.duration_s:.1f} s, "
        f"{q.windows} windows" + (f"; left out {result.excluded_track}" if result.excluded_track else "")
    )
    if result.mode == "identify" and result.no_match:
        err_console.print("[yellow]no match[/] above the calibrated threshold; closest candidates:")
    _print_matches(result, roots)
    if result.decided_by == "fingerprint":
        console.print(
            f"identified by fingerprint: landmarks agree on this alignment at {result.fingerprint_hits} moments "
            "of the query"
        )
    elif result.mode == "identify" and result.confidence is not None and result.threshold is not None:
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


def _print_matches(result: QueryResult, roots: list[str]) -> None:
    table = Table("#", "track", "label", "score", "windows", "query (s)", "reference (s)")
    table.columns[1].overflow = "fold"  # keep the whole name readable on a narrow terminal
    for m in result.matches:
        table.add_row(
            str(m.rank),
            _shown(m.path, m.track_id, roots),
            m.label or "",
            f"{m.score:.3f}",
            str(m.windows),
            f"{m.query_start_s:.1f}-{m.query_end_s:.1f}",
            f"{m.ref_start_s:.1f}-{m.ref_end_s:.1f}",
        )
    console.print(table)


def _shown(path: str | None, track_id: str, roots: list[str]) -> str:
    """The path relative to the library folder and the start of the id, both of which name the track back."""
    from embedtool.features.naming import SHOWN_ID, relative_path

    rel = relative_path(path, roots)
    return f"{rel} [dim]{track_id[:SHOWN_ID]}[/]" if rel else track_id
