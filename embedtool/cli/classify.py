"""`embedtool classify`: train and evaluate a label classifier on the embeddings, or label new audio files."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from embedtool.cli.app import app
from embedtool.cli.common import (
    JSON_FORMAT,
    TableFormat,
    app_context,
    console,
    err_console,
    format_option,
    handle_errors,
    items_argument,
    make_progress,
    print_json,
    stage_progress,
    write_table_rows,
)
from embedtool.cli.flags import Flags, takes

if TYPE_CHECKING:
    from embedtool.pipeline import FilePrediction


@app.command(
    epilog="Examples: `embedtool classify --cv 5` (train and report), `embedtool classify --cv 5 --cv-by track` "
    "(folds by track), `embedtool classify new/*.wav --format csv`"
)
@handle_errors
@takes("classify")
def classify(
    ctx: typer.Context,
    queries: list[Path] | None = items_argument("QUERY", "Audio files to label (omit to train the classifier)."),
    segments: bool = typer.Option(False, "--segments", help="With QUERY files: a prediction per segment too."),
    output: TableFormat = format_option(
        "With QUERY files: csv/tsv give one row per file (per segment with --segments)."
    ),
    as_json: bool = JSON_FORMAT,
    *,
    flags: Flags,
) -> None:
    """Without QUERY: fit a logistic regression on labelled tracks, report held-out accuracy/macro-F1 and save it.
    With QUERY files: predict each file's label with probabilities."""
    actx = app_context(ctx)
    ws = actx.workspace
    output = "json" if as_json else output
    as_json = output == "json"
    if output in ("csv", "tsv") and not queries:
        raise typer.BadParameter("csv/tsv print predictions: name the QUERY files to label", param_hint="--format")
    if queries:
        from embedtool import pipeline

        with make_progress(actx.quiet or output != "table") as progress:
            task = progress.add_task("classifying", total=len(queries))
            predictions = pipeline.predict(
                ws, queries, segments=segments,
                progress=lambda _stage, d, t: progress.update(task, completed=d, total=t),
            )  # fmt: skip
        if output in ("csv", "tsv"):
            _write_predictions(predictions, output, segments)
        else:
            _print_predictions(predictions, as_json)
        failed = [p for p in predictions if p.error is not None]
        if failed:
            err_console.print(
                f"[bold red]error:[/] {len(failed)} of {len(predictions)} file(s) could not be classified",
                highlight=False,
            )
            raise typer.Exit(code=1)
        return

    from embedtool import pipeline

    options = flags.settings(actx.config, "classify")
    with make_progress(actx.quiet or as_json) as progress:
        result = pipeline.classify(ws, options, stage_progress(progress))
    ev = result.evaluation
    if as_json:
        print_json(
            {
                "directory": str(result.directory),
                "trained_on_tracks": result.trained_on,
                "classes": result.classifier.classes,
                **{k: v for k, v in ev.to_dict().items() if k != "predictions"},
            }
        )
        return
    m = ev.metrics
    scheme = (
        "persisted train/val split"
        if ev.scheme == "split"
        else f"{ev.scheme[3:]}-fold cross-validation by {options.cv_by}"
    )
    if ev.note:
        err_console.print(f"[yellow]note:[/] {ev.note}")
    console.print(
        f"[bold]held-out ({scheme}, {options.level} level, {m['n']} tracks):[/] accuracy {m['accuracy']:.3f}, "
        f"macro-F1 {m['macro_f1']:.3f}"
    )
    per_class = Table("label", "precision", "recall", "F1", "support")
    for row in m["per_class"]:
        per_class.add_row(
            row["label"], f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"])
        )
    console.print(per_class)
    confusion = Table("true \\ predicted", *m["labels"], title="confusion matrix")
    for lab, row in zip(m["labels"], m["confusion"], strict=True):
        confusion.add_row(lab, *[str(v) for v in row])
    console.print(confusion)
    console.print(
        f"classifier saved to {result.directory} (fitted on {result.trained_on} labelled tracks"
        + (f"; confusion matrix: {result.figures['confusion']}" if "confusion" in result.figures else "")
        + ")"
    )


def _write_predictions(predictions: list[FilePrediction], output: str, segments: bool) -> None:
    """One row per file (per segment with ``segments``): the label, its probability, then each class's."""
    classes = sorted({c for p in predictions for c in p.probabilities})
    columns = ["file", "start_s", "end_s", "label", "probability", *[f"p_{c}" for c in classes], "error"]
    rows = []
    for p in predictions:
        if p.error is not None:
            rows.append({"file": p.path, "error": p.error})
            continue
        whole = {"start_s": 0.0, "end_s": p.duration_s, "label": p.label, "probabilities": p.probabilities}
        parts = p.segments if segments and p.segments else [whole]
        for part in parts:
            probs = part["probabilities"]
            rows.append({"file": p.path, "start_s": part["start_s"], "end_s": part["end_s"], "label": part["label"],
                         "probability": round(probs[part["label"]], 4),
                         **{f"p_{c}": round(probs.get(c, 0.0), 4) for c in classes}})  # fmt: skip
    write_table_rows(output, columns, rows)


def _print_predictions(predictions: list[FilePrediction], as_json: bool) -> None:
    """Each file's label and top probabilities (and segments), or why it could not be classified."""
    if as_json:
        print_json([p.to_dict() for p in predictions])
        return
    for p in predictions:
        if p.error is not None:
            err_console.print(f"[bold]{p.path}[/]: [red]skipped[/] {p.error}", highlight=False)
            continue
        ranked = sorted(p.probabilities.items(), key=lambda kv: -kv[1])
        console.print(f"[bold]{p.path}[/]: {p.label}  (" + ", ".join(f"{k} {v:.2f}" for k, v in ranked[:5]) + ")")
        if p.segments:
            table = Table("start s", "end s", "label", "p")
            for s in p.segments:
                table.add_row(
                    f"{s['start_s']:.2f}", f"{s['end_s']:.2f}", s["label"], f"{s['probabilities'][s['label']]:.2f}"
                )
            console.print(table)
