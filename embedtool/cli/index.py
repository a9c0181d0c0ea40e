"""`embedtool index`: FAISS indexes over segments and tracks, tuned to a recall target."""

from __future__ import annotations

from typing import Literal

import typer
from rich.table import Table

from embedtool.cli.app import app
from embedtool.cli.common import (
    app_context,
    console,
    default_of,
    handle_errors,
    human_bytes,
    make_progress,
    print_json,
    stage_progress,
)


@app.command(epilog="Example: `embedtool index --kind hnsw --target-recall 0.95`")
@handle_errors
def index(
    ctx: typer.Context,
    kind: Literal["auto", "flat", "hnsw", "ivf", "ivf-pq"] | None = typer.Option(
        None, "--kind", help="FAISS index kind (auto: by size and memory).", show_default=default_of("index", "kind")
    ),
    target_recall: float | None = typer.Option(None, "--target-recall", help="recall@k that tuning must reach."),
    recall_k: int | None = typer.Option(None, "--recall-k", help="k of the recall measurement."),
    memory_mb: float | None = typer.Option(
        None, "--memory-mb", help="Memory budget (MiB): auto's choice of kind, the training sample, on-disk blocks."
    ),
    on_disk: Literal["auto", "on", "off"] | None = typer.Option(
        None,
        "--on-disk",
        help="ivf-pq: inverted lists in a file beside the index (auto: when over a quarter of the budget).",
        show_default=default_of("index", "on_disk"),
    ),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Fixed identify confidence threshold (skip calibration)."
    ),
    engine: Literal["local", "ray"] | None = typer.Option(
        None, "--engine", help="Where a stale export and an on-disk index's blocks run (docs/engine.md)."
    ),
    cluster: str | None = typer.Option(
        None, "--cluster", metavar="ADDRESS", help="Ray cluster address with --engine ray (default: a local Ray)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Build the segment and track indexes (exporting embeddings first when missing or stale)."""
    from embedtool import pipeline

    actx = app_context(ctx)
    options = actx.config.settings(
        "index",
        {
            "kind": kind,
            "target_recall": target_recall,
            "recall_k": recall_k,
            "memory_budget_mb": memory_mb,
            "on_disk": on_disk,
            "identify_threshold": threshold,
        },
    )
    embed_options = actx.config.settings("embed")
    engine_options = actx.config.settings("engine", {"name": engine, "cluster": cluster})
    ws = actx.workspace
    with make_progress(actx.quiet or as_json) as progress:
        report = pipeline.index(ws, options, embed_options, stage_progress(progress), engine_options)
    if as_json:
        print_json({"directory": str(ws.index), **report.to_dict()})
        return
    if report.export:
        console.print(f"embeddings exported first ({report.export['why']}): {report.export['reason']}")
    table = Table("index", "kind", "vectors", "params", "recall", "latency", "size")
    for name, s in (("segments", report.segments), ("tracks", report.tracks)):
        recall = f"{s['recall']:.3f}@{s['recall_k']}" if s["recall_measured"] else "exact"
        if s["recall_measured"] and not s["reached_target"]:
            recall += " (below target)"
        params = ", ".join(f"{k}={v}" for k, v in s["params"].items()) or "-"
        table.add_row(
            name, s["kind"], str(s["vectors"]), params, recall, f"{s['latency_ms']:.2f} ms", human_bytes(s["bytes"])
        )
    console.print(table)
    for name, s in (("segments", report.segments), ("tracks", report.tracks)):
        if s.get("note"):
            console.print(f"[yellow]note[/]: {name} index: {s['note']}")
    ident = report.identify
    if ident.get("calibrated"):
        by_length = ident.get("by_length") or [ident]
        thresholds = " / ".join(f"{e['threshold']:.2f}" for e in by_length)
        lengths = " / ".join(f"{e['excerpt_s']:g}" for e in by_length)
        console.print(
            f"identify threshold: confidence {thresholds} for {lengths} s queries (at {ident['excerpt_s']:g} s: true "
            f"accepts {ident['true_accept_rate']:.0%}, false accepts {ident['false_accept_rate']:.0%} on "
            f"{ident['queries']} noisy library excerpts)"
        )
    else:
        console.print(
            f"identify threshold: confidence {ident['threshold']:.2f} (not calibrated: {ident.get('reason')})"
        )
    console.print(f"written to {ws.index} ({human_bytes(report.bytes)}) in {report.seconds:.1f} s")
