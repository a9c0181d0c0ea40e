"""`embedtool info`: what a workspace holds."""

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
    human_bytes,
    print_json,
    write_table_rows,
)


@app.command(epilog="Example: `embedtool info --json`, or `embedtool -w ~/lib-ws info` for another workspace")
@handle_errors
def info(
    ctx: typer.Context,
    output: TableFormat = format_option("csv/tsv: one row per stage."),
    as_json: bool = JSON_FORMAT,
) -> None:
    """Show what the workspace holds: tracks, hours, labels, settings, sizes, and which stages exist."""
    actx = app_context(ctx)
    from embedtool.inspect import summarise_workspace  # deferred: numpy only when the command runs

    summary = summarise_workspace(actx.workspace)
    if output in ("csv", "tsv"):
        stages = [{**vars(st), "status": st.problem or ("ready" if st.exists else "not made")} for st in summary.stages]
        write_table_rows(output, ("stage", "status", "size_bytes", "created", "fingerprint"),
                         ({**st, "stage": st["name"]} for st in stages))  # fmt: skip
        return
    if as_json or output == "json":
        print_json(summary.to_dict())
        return
    console.print(f"[bold]Workspace[/] {summary.root}")
    if summary.tracks:
        console.print(f"{summary.tracks} tracks, {summary.hours:.2f} hours of audio")
    if summary.labels:
        console.print("labels: " + ", ".join(f"{k} ({v})" for k, v in summary.labels.items()))
    if summary.feature_settings:
        fs = summary.feature_settings
        console.print(
            f"features: {fs.get('sample_rate')} Hz, {fs.get('n_mels')} mels "
            f"{fs.get('f_min'):g}-{fs.get('f_max'):g} Hz, "
            f"FFT {fs.get('n_fft')}, window {fs.get('win_length')}, hop {fs.get('hop_length')}"
        )
    table = Table("stage", "status", "size", "made", "details")
    for stage in summary.stages:
        if stage.problem:
            status = f"[red]{stage.problem}[/]"
        else:
            status = "[green]ready[/]" if stage.exists else "[dim]not made[/]"
        details = ", ".join(f"{k}={v}" for k, v in list(stage.summary.items())[:5] if k != "table")
        table.add_row(
            stage.name,
            status,
            human_bytes(stage.size_bytes) if stage.size_bytes else "",
            stage.created,
            details,
        )
    console.print(table)
