"""`embedtool evaluate`: one report (Markdown + JSON + PNGs) on the embeddings, with baselines."""

from __future__ import annotations

import typer
from rich.table import Table

from embedtool.cli.app import app
from embedtool.cli.common import (
    app_context,
    console,
    handle_errors,
    make_progress,
    print_json,
    stage_progress,
)
from embedtool.cli.flags import Flags, takes, uses


@app.command(epilog="Example: `embedtool evaluate --name first --cv 5 --no-robustness`")
@handle_errors
@takes("evaluate", uses("classify", "level", "features", "cv", "cv_by", "seed"), uses("cluster", "seed"), threads=True)
def evaluate(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print report.json to stdout too."),
    *,
    flags: Flags,
) -> None:
    """Evaluate the embeddings: retrieval, classification, clustering, re-identification, vs baselines."""
    from embedtool import pipeline

    actx = app_context(ctx)
    options = flags.settings(actx.config, "evaluate")
    classify_options = flags.settings(actx.config, "classify")
    cluster_options = flags.settings(actx.config, "cluster")
    with make_progress(actx.quiet or as_json) as progress:
        result = pipeline.evaluate(actx.workspace, options, classify_options, cluster_options, stage_progress(progress))
    if as_json:
        print_json(result.report)
        return
    report = result.report
    ks = list(next(iter(report["systems"].values()))["retrieval"])
    table = Table(
        "system", "accuracy", "macro-F1", *ks, "purity", "NMI", title=f"evaluation ({report['classification_scheme']})"
    )
    for sys_name, r in report["systems"].items():
        c, cl = r["classification"], r["clustering"]
        table.add_row(
            sys_name, f"{c['accuracy']:.3f}", f"{c['macro_f1']:.3f}", *[f"{r['retrieval'][k]:.3f}" for k in ks],
            f"{cl['purity']:.3f}", f"{cl['nmi']:.3f}",
        )  # fmt: skip
    console.print(table)
    rob = report.get("robustness")
    if rob:
        rt = Table("length", *rob["degradations"], title="re-identification top-1 / top-5")
        for g in rob["lengths"]:
            cells = [c for c in rob["cells"] if c["seconds"] == g]
            rt.add_row(f"{g:g} s", *[f"{c['top1']:.2f}/{c['top5']:.2f}" if c["n"] else "-" for c in cells])
        console.print(rt)
    console.print(f"report written to {result.directory}/report.md")
