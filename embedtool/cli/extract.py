"""`embedtool extract [PATH...]`: audio folders -> log-Mel features in the workspace."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.progress import TextColumn
from rich.table import Table

from embedtool.cli.app import app
from embedtool.cli.common import (
    app_context,
    console,
    err_console,
    handle_errors,
    human_bytes,
    items_argument,
    make_progress,
    print_json,
)
from embedtool.cli.flags import Flags, takes

if TYPE_CHECKING:
    from embedtool.pipeline import ExtractProgress, ExtractReport

SHOW_ERRORS = 10


@app.command(epilog="Example: `embedtool extract ~/Music/library --labels labels.csv -j 4`")
@handle_errors
@takes("extract", "features", "engine", preset="features", threads=True)
def extract(
    ctx: typer.Context,
    paths: list[Path] = items_argument(
        "PATH", "Audio folders or files to add to the library (its remembered folders are re-scanned too)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the run's report as JSON."),
    *,
    flags: Flags,
) -> None:
    """Find audio under PATH (recursively), decode it and store log-Mel features in the workspace.

    The workspace remembers its folders: PATH is added to them and all are scanned again; only new or changed
    files are processed, and files gone from a folder are removed (listed). A remembered folder that is missing
    keeps its tracks (--prune drops them); --replace makes PATH the whole library. Files that cannot be used are
    listed in features/errors.json and skipped. Labels come from the first folder level under each PATH, or
    --labels.
    """
    from embedtool import pipeline  # deferred: `embedtool --help` must not import torch

    actx = app_context(ctx, existing=False)  # extract makes the workspace
    settings = flags.settings(actx.config, "features")
    options = flags.settings(actx.config, "extract")
    engine_options = flags.settings(actx.config, "engine")
    features_dir = actx.workspace.features
    progress = make_progress(
        actx.quiet or as_json,
        TextColumn("{task.fields[files_rate]} files/s"),
        TextColumn("{task.fields[audio_rate]} audio h/s"),
    )
    started = time.perf_counter()
    with progress:
        task = progress.add_task("extract", total=None, files_rate="-", audio_rate="-")

        def on_progress(state: ExtractProgress) -> None:
            elapsed = max(time.perf_counter() - started, 1e-9)
            progress.update(
                task,
                total=state.files_total,
                completed=state.files_seen,
                description={"scan": "scan", "extract": "extract", "commit": "publish"}[state.phase],
                files_rate=f"{state.files_seen / elapsed:.1f}",
                audio_rate=f"{state.audio_seconds / 3600 / elapsed:.3f}",
            )

        report = pipeline.extract(
            actx.workspace, list(paths or []), settings, options, progress=on_progress, engine=engine_options
        )
    if as_json:
        print_json(report.to_dict())
        return
    _print_summary(report, features_dir)


def _print_summary(report: ExtractReport, features_dir: Path) -> None:
    from embedtool.features.extract import ERRORS_FILE

    table = Table(title=f"extract → {features_dir}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("files done", str(report.done)),
        ("files unchanged", str(report.unchanged)),
        ("files skipped", str(report.skipped)),
        ("files failed", str(report.failed)),
        ("tracks removed", str(report.removed)),
        ("tracks in features", f"{report.tracks} ({report.labelled} labelled)"),
        ("audio hours extracted", f"{report.hours:.3f}"),
        ("audio hours in features", f"{report.total_hours:.3f}"),
        ("bytes written", human_bytes(report.bytes_written)),
        ("features size", human_bytes(report.total_bytes)),
        ("time", f"{report.elapsed_s:.1f} s, {report.jobs} job(s)" + ("" if report.engine == "local" else " on ray")),
    ]
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)
    if report.full_rebuild_reason:
        console.print(f"full re-extraction: {report.full_rebuild_reason}", highlight=False)
    if report.removed_paths:
        shown = "\n  ".join(report.removed_paths[:SHOW_ERRORS])
        more = len(report.removed_paths) - SHOW_ERRORS
        console.print(
            f"removed {len(report.removed_paths)} track(s) whose file is gone"
            f"{' or outside the library (--replace)' if report.removed_paths else ''}:\n  {shown}"
            + (f"\n  ({more} more)" if more > 0 else ""),
            highlight=False,
        )
    for root in report.missing_roots:
        action = "dropped (--prune)" if root not in report.roots else "kept (--prune drops them)"
        err_console.print(f"[yellow]folder missing[/] {root}: its tracks {action}", highlight=False)
    if report.labels_unmatched:
        shown = ", ".join(report.labels_unmatched[:3])
        err_console.print(
            f"[yellow]{len(report.labels_unmatched)} path(s) in the labels file matched no audio file found[/] "
            f"(e.g. {shown}); paths are relative to the labels file's folder",
            highlight=False,
        )
    if report.errors:
        for path, reason in report.errors[:SHOW_ERRORS]:
            err_console.print(f"[yellow]not used[/] {path}: {reason}", highlight=False)
        more = len(report.errors) - SHOW_ERRORS
        tail = f" ({more} more)" if more > 0 else ""
        err_console.print(f"{len(report.errors)} file(s) not used{tail}: see {features_dir / ERRORS_FILE}")
