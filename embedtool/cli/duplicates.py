"""`embedtool duplicates`: exact copies, near-copies and shared material in the library, grouped."""

from __future__ import annotations

import typer
from rich.table import Table

from embedtool.cli.app import app
from embedtool.cli.common import (
    JSON_FORMAT,
    TableFormat,
    app_context,
    console,
    format_option,
    handle_errors,
    make_progress,
    print_json,
    stage_progress,
    write_table_rows,
)
from embedtool.cli.flags import Flags, takes

# --format csv/tsv: one row per shared passage of a related pair (an exact copy: the whole file), grouped.
CSV_COLUMNS = (
    "group", "kind", "track_a", "path_a", "a_start_s", "a_end_s", "track_b", "path_b", "b_start_s", "b_end_s",
    "coverage_a", "coverage_b",
)  # fmt: skip


@app.command(epilog="Example: `embedtool duplicates --format csv > duplicates.csv`")
@handle_errors
@takes("duplicates")
def duplicates(
    ctx: typer.Context,
    output: TableFormat = format_option("table: the groups; csv/tsv: one row per shared passage, grouped."),
    as_json: bool = JSON_FORMAT,
    *,
    flags: Flags,
) -> None:
    """Find exact copies (same bytes), near-copies (re-encodes, trimmed or gain-changed copies: the fingerprints
    agree on most of both tracks) and shared material (one track holding another's passage, with the time ranges),
    from the features' fingerprint peaks. Reads the features only."""
    from embedtool import pipeline

    actx = app_context(ctx)
    options = flags.settings(actx.config, "duplicates")
    output = "json" if as_json else output
    with make_progress(actx.quiet or output != "table") as progress:
        result = pipeline.duplicates(actx.workspace, options, stage_progress(progress))
    from embedtool.features.naming import library_roots, relative_path

    roots = library_roots(actx.workspace.features)

    def shown(path: str) -> str:
        return relative_path(path, roots) or path

    if output == "json":
        print_json(result.to_dict())
        return
    if output in ("csv", "tsv"):
        rows = ({**row, "path_a": shown(row["path_a"]), "path_b": shown(row["path_b"])} for row in result.rows())
        write_table_rows(output, CSV_COLUMNS, rows)
        return
    counts = result.counts()
    console.print(
        f"[bold]{len(result.groups)} group(s)[/] among {result.tracks} tracks: {counts['exact']} exact copies, "
        f"{counts['near-copy']} near-copies, {counts['shared']} shared passages (fingerprints: {result.source})"
    )
    if not result.groups:
        return
    table = Table("group", "kind", "files", "how")
    for g in result.groups:
        how = []
        for r in g.relations:
            if r.kind == "shared":
                how += [
                    f"{p.a_start_s:.1f}-{p.a_end_s:.1f} s of the first = {p.b_start_s:.1f}-{p.b_end_s:.1f} s of the "
                    "second"
                    for p in r.passages
                ]
            else:
                how.append(
                    f"{r.kind}: {_short(shown(r.b['path']))} ({r.coverage_a:.0%} / {r.coverage_b:.0%}"
                    + (f", offset {r.offset_s:+.1f} s)" if abs(r.offset_s) >= 0.05 else ")")
                )
        table.add_row(str(g.group), g.kind, "\n".join(_short(shown(f["path"])) for f in g.files), "\n".join(how))
    console.print(table)


def _short(path: str, width: int = 48) -> str:
    return path if len(path) <= width else "…" + path[-(width - 1) :]
