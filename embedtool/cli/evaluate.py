"""`embedtool evaluate`: one report (Markdown + JSON + PNGs) on the embeddings, with baselines."""

from __future__ import annotations

from typing import Literal

import typer
from rich.table import Table

from embedtool.cli.app import app
from embedtool.cli.common import (
    CV_BY_HELP,
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


@app.command(epilog="Example: `embedtool evaluate --name first --cv 5 --no-robustness`")
@handle_errors
def evaluate(
    ctx: typer.Context,
    name: str | None = typer.Option(None, "--name", help="Report folder name under reports/ (default: timestamp)."),
    excerpts: int | None = typer.Option(
        None,
        "--excerpts",
        help="Re-identification excerpts per excerpt length, at most (a small library gets one per two tracks).",
        show_default=default_of("evaluate", "excerpts"),
    ),
    robustness: bool | None = typer.Option(
        None,
        "--robustness/--no-robustness",
        help="Run the re-identification test.",
        show_default=default_of("evaluate", "robustness"),
    ),
    baselines: bool | None = typer.Option(
        None,
        "--baselines/--no-baselines",
        help="Compute the MFCC baseline.",
        show_default=default_of("evaluate", "baselines"),
    ),
    untrained: bool | None = typer.Option(
        None,
        "--untrained/--no-untrained",
        help="Compute the untrained-network baseline.",
        show_default=default_of("evaluate", "untrained_baseline"),
    ),
    pretrained: str | None = typer.Option(
        None,
        "--pretrained",
        help="Bundled model to compare with, applied as it is (general; '' = none).",
        show_default=default_of("evaluate", "pretrained_baseline"),
    ),
    cv: int | None = typer.Option(None, "--cv", help="Grouped N-fold CV instead of the persisted split."),
    cv_by: Literal["group", "track"] | None = typer.Option(
        None, "--cv-by", help=CV_BY_HELP, show_default=default_of("classify", "cv_by")
    ),
    level: Literal["track", "segment"] | None = typer.Option(
        None, "--level", help="Classifier on track or segment embeddings.", show_default=default_of("classify", "level")
    ),
    features: Literal["descriptors", "embeddings", "descriptors+aisfx"] | None = typer.Option(
        None,
        "--features",
        help="Track level: what the classifiers read (descriptors+aisfx: with the bundled aisfx network's vectors, "
        "which are then scored alone too).",
        show_default=default_of("classify", "features"),
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed of excerpts, folds, clusters and the map."),
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print report.json to stdout too."),
) -> None:
    """Evaluate the embeddings: retrieval, classification, clustering, re-identification, vs baselines."""
    from embedtool import pipeline

    actx = app_context(ctx)
    use_threads(threads)
    options = actx.config.settings(
        "evaluate",
        {
            "name": name,
            "excerpts": excerpts,
            "robustness": robustness,
            "baselines": baselines,
            "untrained_baseline": untrained,
            "pretrained_baseline": pretrained,
            "seed": seed,
        },
    )
    classify_options = actx.config.settings(
        "classify", {"cv": cv, "cv_by": cv_by, "level": level, "features": features, "seed": seed}
    )
    cluster_options = actx.config.settings("cluster", {"seed": seed})
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
