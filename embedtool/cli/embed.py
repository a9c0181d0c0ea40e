"""`embedtool embed`: run the trained model over every track's features and export the embeddings."""

from __future__ import annotations

from typing import Literal

import typer

from embedtool.cli.app import app
from embedtool.cli.common import (
    THREADS_HELP,
    app_context,
    console,
    default_of,
    handle_errors,
    make_progress,
    print_json,
    stage_progress,
    use_threads,
)


@app.command(epilog="Example: `embedtool embed --device cpu` (after `embedtool train`)")
@handle_errors
def embed(
    ctx: typer.Context,
    hop: float | None = typer.Option(None, "--hop", help="Seconds between segment windows (0 = half a segment)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Windows per forward pass."),
    device: Literal["auto", "cpu", "cuda"] | None = typer.Option(
        None, "--device", help="Where the model runs.", show_default=default_of("embed", "device")
    ),
    full: bool = typer.Option(False, "--full", help="Re-embed every track, even when the last export fits."),
    engine: Literal["local", "ray"] | None = typer.Option(
        None, "--engine", help="Where the model runs: this process, or Ray workers (docs/engine.md)."
    ),
    cluster: str | None = typer.Option(
        None, "--cluster", metavar="ADDRESS", help="Ray cluster address with --engine ray (default: a local Ray)."
    ),
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Embed every track (segments + pooled track vectors); only new tracks when the model is unchanged."""
    from embedtool import pipeline

    actx = app_context(ctx)
    use_threads(threads)
    options = actx.config.settings(
        "embed", {"hop_seconds": hop, "batch_size": batch_size, "device": device, "full": full or None}
    )
    engine_options = actx.config.settings("engine", {"name": engine, "cluster": cluster})
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
