"""`embedtool verify`: check every artefact against its meta.json and inputs; `--repair` re-makes what is damaged."""

from __future__ import annotations

import typer
from rich.table import Table

from embedtool.cli.app import app
from embedtool.cli.common import app_context, console, handle_errors, make_progress, print_json, stage_progress
from embedtool.errors import DamagedArtefactError

STYLE = {"ok": "green", "stale": "yellow", "damaged": "bold red", "missing": "dim"}


@app.command(epilog="Example: `embedtool verify --repair`")
@handle_errors
def verify(
    ctx: typer.Context,
    repair: bool = typer.Option(False, "--repair", help="Re-make what is damaged or stale, reusing the rest."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Check every artefact (sizes, checksums, readability, inputs): ok, stale, damaged or missing, with the
    command that re-makes each. Exit status 5 when anything is damaged."""
    from embedtool.verify import repair_workspace, verify_workspace

    actx = app_context(ctx)
    if repair:
        with make_progress(actx.quiet or as_json) as progress:
            report = repair_workspace(actx.workspace, actx.config, stage_progress(progress))
    else:
        report = verify_workspace(actx.workspace)
    if as_json:
        print_json(report.to_dict())
    else:
        for line in report.repaired:
            console.print(f"re-made {line}", highlight=False)
        console.print(f"[bold]Workspace[/] {report.workspace}", highlight=False)
        table = Table("artefact", "status", "details (paths in the workspace)", "re-made by")
        inside = f"{report.workspace}/"
        for check in report.artefacts:
            style = STYLE.get(check.status, "")
            table.add_row(
                check.kind, f"[{style}]{check.status}[/]", check.detail.replace(inside, ""), f"`{check.remake}`"
            )
        console.print(table)
    if report.damaged:
        damaged = [a for a in report.artefacts if a.status == "damaged"]
        names = "; ".join(
            f"{a.kind}" + (f" ({', '.join(a.damaged_files)})" if a.damaged_files else "") for a in damaged
        )
        raise DamagedArtefactError(f"Damaged: {names}. `embedtool verify --repair` re-makes what is damaged.")
