"""`embedtool embed`: run the trained model over every track's features and export the embeddings."""

from __future__ import annotations

import typer

from embedtool.cli.app import app
from embedtool.cli.common import (
    app_context,
    console,
    handle_errors,
    make_progress,
    print_json,
    stage_progress,
)
from embedtool.cli.flags import Flags, takes


@app.command(epilog="Example: `embedtool embed --device cpu` (after `embedtool train`)")
@handle_errors
@takes("embed", "engine", threads=True)
def embed(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    *,
    flags: Flags,
) -> None:
    """Embed every track (segments + pooled track vectors); only new tracks when the model is unchanged."""
    from embedtool import pipeline

    actx = app_context(ctx)
    options = flags.settings(actx.config, "embed")
    engine_options = flags.settings(actx.config, "engine")
    ws = actx.workspace
    with make_progress(actx.quiet or as_json) as progress:
        report = pipeline.embed(ws, options, stage_progress(progress), engine=engine_options)
    if as_json:
        print_json({"directory": str(ws.embeddings), **report.to_dict()})
        return
    console.print(f"[bold]{report.mode} export[/]: {report.reason}")
    console.print(
        f"{report.tracks} tracks, {report.segments} segments, {report.dim}-d "
        f"({report.embedded_tracks} embedded, {report.reused_tracks} reused, {report.removed_tracks} removed) "
        f"on {report.device} in {report.seconds:.1f} s -> {ws.embeddings}"
    )
