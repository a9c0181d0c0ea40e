"""`embedtool index`: FAISS indexes over segments and tracks, tuned to a recall target."""

from __future__ import annotations

import typer
from rich.table import Table

from embedtool.cli.app import app
from embedtool.cli.common import (
    app_context,
    console,
    handle_errors,
    human_bytes,
    make_progress,
    print_json,
    stage_progress,
)
from embedtool.cli.flags import Flags, takes


@app.command(epilog="Example: `embedtool index --kind hnsw --target-recall 0.95`")
@handle_errors
@takes("index", "engine")
def index(
    ctx: typer.Context,
    rebuild: bool = typer.Option(
        False, "--rebuild", help="Build both indexes whole (and calibrate identify again) instead of updating them."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    *,
    flags: Flags,
) -> None:
    """Build the segment and track indexes (exporting embeddings first when missing or stale).

    An existing index is updated for the tracks added and removed since it was made; it is built whole when it
    cannot be (another model or index options, cells trained on under half of today's vectors, recall under the
    target) or with --rebuild."""
    from embedtool import pipeline

    actx = app_context(ctx)
    options = flags.settings(actx.config, "index")
    embed_options = actx.config.settings("embed")
    engine_options = flags.settings(actx.config, "engine")
    ws = actx.workspace
    with make_progress(actx.quiet or as_json) as progress:
        report = pipeline.index(ws, options, embed_options, stage_progress(progress), engine_options, rebuild)
    if as_json:
        print_json({"directory": str(ws.index), **report.to_dict()})
        return
    if report.export:
        console.print(f"embeddings exported first ({report.export['why']}): {report.export['reason']}")
    change = report.change
    if change.get("mode") == "incremental":
        console.print(f"updated: {change['added']} track(s) added, {change['removed']} removed, {change['kept']} kept")
    elif change:
        counts = f" ({change['added']} track(s) new, {change['removed']} gone)" if "added" in change else ""
        console.print(f"built whole: {change.get('why')}{counts}")
    table = Table("index", "kind", "vectors", "params", "recall", "latency", "size")
    for name, s in (("segments", report.segments), ("tracks", report.tracks)):
        recall = f"{s.recall:.3f}@{s.recall_k}" if s.recall_measured else "exact"
        if s.recall_measured and not s.reached_target:
            recall += " (below target)"
        params = ", ".join(f"{k}={v}" for k, v in s.params.items()) or "-"
        table.add_row(name, s.kind, str(s.vectors), params, recall, f"{s.latency_ms:.2f} ms", human_bytes(s.bytes))
    console.print(table)
    for name, s in (("segments", report.segments), ("tracks", report.tracks)):
        if s.note:
            console.print(f"[yellow]note[/]: {name} index: {s.note}")
    ident = report.identify
    if ident.calibrated:
        by_length = ident.by_length or [ident.to_dict()]
        thresholds = " / ".join(f"{e['threshold']:.2f}" for e in by_length)
        lengths = " / ".join(f"{e['excerpt_s']:g}" for e in by_length)
        console.print(
            f"identify threshold: confidence {thresholds} for {lengths} s queries (at {ident.excerpt_s:g} s: true "
            f"accepts {ident.true_accept_rate:.0%}, false accepts {ident.false_accept_rate:.0%} on "
            f"{ident.queries} noisy library excerpts)"
        )
    else:
        console.print(f"identify threshold: confidence {ident.threshold:.2f} (not calibrated: {ident.reason})")
    console.print(f"written to {ws.index} ({human_bytes(report.bytes)}) in {report.seconds:.1f} s")
