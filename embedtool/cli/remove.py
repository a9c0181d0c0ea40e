"""`embedtool remove TRACK...`: take tracks out of the library (features, embeddings, index, fingerprints)."""

from __future__ import annotations

import typer
from rich.table import Table

from embedtool.cli.app import app
from embedtool.cli.common import (
    app_context,
    console,
    handle_errors,
    items_argument,
    make_progress,
    print_json,
    stage_progress,
)


@app.command(epilog="Example: `embedtool remove ~/Music/library/old-album --dry-run`")
@handle_errors
def remove(
    ctx: typer.Context,
    names: list[str] = items_argument(
        "TRACK...",
        "Track ids, id prefixes, paths (also relative to the library folder) or folders (every track under).",
        required=True,
    ),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="List what would be removed; change nothing."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Remove tracks from the library: their features, embeddings, index vectors and fingerprints, all at once
    (a run interrupted at any point leaves the library as it was, or as it is after). Clusters and a
    classifier made with them become stale (`embedtool verify` says so; their commands re-make them). The audio
    files are not touched: `embedtool extract` of a file brings its track back."""
    from embedtool import pipeline
    from embedtool.features.naming import library_roots, relative_path

    actx = app_context(ctx)
    ws = actx.workspace
    with make_progress(actx.quiet or as_json or dry_run) as progress:
        report = pipeline.remove(ws, names, dry_run=dry_run, progress=stage_progress(progress))
    if as_json:
        print_json(report.to_dict())
        return
    roots = library_roots(ws.features)
    table = Table("track", "id", title=f"{'would remove' if dry_run else 'removed'} {report.count} track(s)")
    for t in report.removed:
        table.add_row(relative_path(t["path"], roots) or "-", t["track_id"][:12])
    console.print(table)
    for kind, what in report.artefacts.items():
        console.print(f"{kind}: {what}", highlight=False)
    if dry_run:
        console.print(f"{report.tracks_left} track(s) would be left; nothing was changed.")
    else:
        console.print(f"{report.tracks_left} track(s) left ({report.seconds:.1f} s)")
