"""`embedtool train`: features -> split + model, by self-supervised temporal-proximity triplets."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import TextColumn
from rich.table import Table

from embedtool.cli.app import app
from embedtool.cli.common import (
    app_context,
    console,
    err_console,
    handle_errors,
    make_progress,
    print_json,
)
from embedtool.cli.flags import Flags, takes
from embedtool.errors import ConfigError

if TYPE_CHECKING:
    from rich.progress import Progress

    from embedtool import TrainSettings
    from embedtool.pipeline import TrainReport
    from embedtool.progress import TrainEvent
    from embedtool.workspace import Workspace


@app.command(
    epilog="Examples: `embedtool train --epochs 20 --device cuda`, `embedtool train --pretrained general`, "
    "`embedtool train --nproc-per-node 4` (4 GPUs)"
)
@handle_errors
@takes("train", preset="train", threads=True)
def train(
    ctx: typer.Context,
    pretrained: str | None = typer.Option(
        None,
        "--pretrained",
        help="Use this model as it is, without training: a bundled model (general) or a model folder.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted (or finished) training."),
    as_json: bool = typer.Option(False, "--json", help="Print the training report as JSON."),
    nproc_per_node: int = typer.Option(
        1,
        "--nproc-per-node",
        min=1,
        help="Training processes on this machine: above 1, train starts them under torchrun and they "
        "train one model together (DDP; one per GPU on CUDA). See docs/distributed-training.md.",
    ),
    nnodes: int = typer.Option(
        1, "--nnodes", min=1, help="Machines training together; each runs this same command (with --rdzv)."
    ),
    rdzv: str | None = typer.Option(
        None, "--rdzv", help="HOST:PORT where the machines meet (torchrun's c10d rendezvous), with --nnodes > 1."
    ),
    *,
    flags: Flags,
) -> None:
    """Train a ResNet18 encoder on the workspace's features, without labels.

    Triplets: an anchor segment, a positive within --neighbour-radius-s seconds of it in the same track, a negative from
    another track. Tracks (or groups) held out for validation are written to split/ and never trained on;
    the best model by the validation metric goes to model/. Ctrl-C saves a checkpoint; --resume continues.

    A small or uniform folder (a few hundred one-shots) learns a poorer space than embedtool's bundled model,
    trained on hours of varied audio: --pretrained general makes that model this workspace's model, at once;
    --init general trains on from it.

    --nproc-per-node N (and --nnodes M --rdzv HOST:PORT across machines) trains with N processes per machine
    under torchrun; --batch-size stays the batch of all of them together.
    """
    actx = app_context(ctx)
    settings = flags.settings(actx.config, "train")
    ws = actx.workspace
    taken: dict[str, Any] = {}
    if resume and pretrained is None:
        from embedtool.pipeline import resume_settings

        # --resume continues the run as it was started (its --init, --epochs, ...); flags given now win
        settings, taken = resume_settings(ws.model, settings, flags.given("train"))
        if taken and not as_json:
            said = ", ".join(f"{key} {value!r}" for key, value in taken.items())
            err_console.print(f"resuming with the checkpoint's settings: {said} (a flag given now overrides one)")
    if pretrained is not None:
        if resume or "init" in flags.given("train") or nproc_per_node > 1 or nnodes > 1 or rdzv is not None:
            raise ConfigError(
                "--pretrained uses a model as it is: it does not combine with --init, --resume or --nproc-per-node."
            )
        _adopt(ws, pretrained, settings, as_json)
        return
    report = _train(actx.quiet or as_json, ws, settings, resume, (nproc_per_node, nnodes, rdzv))
    if report is None:  # a rank other than 0 of a torchrun job, or a machine that did not run rank 0
        return
    if as_json:
        print_json({**report.to_dict(), **({"settings_from_checkpoint": taken} if taken else {})})
        return
    _print_summary(report)


def _train(
    quiet: bool, ws: Workspace, settings: TrainSettings, resume: bool, launch: tuple[int, int, str | None]
) -> TrainReport | None:
    """Train with a progress bar (here, or with several processes: rank 0's events); None where this process
    does not report (a rank other than 0 under torchrun)."""
    from embedtool import pipeline

    nproc_per_node, nnodes, rdzv = launch
    progress = make_progress(
        quiet,
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("acc {task.fields[acc]}"),
        TextColumn("{task.fields[rate]} triplets/s"),
    )
    with progress:
        report = pipeline.train(
            ws, settings, resume=resume, progress=_training_events(progress),
            nproc_per_node=nproc_per_node, nnodes=nnodes, rdzv=rdzv,
        )  # fmt: skip
    return report if pipeline.writes_here() else None


def _adopt(ws: Workspace, pretrained: str, settings: TrainSettings, as_json: bool) -> None:
    """`train --pretrained NAME`: the model as it is, and what to run next."""
    from embedtool import pipeline
    from embedtool.embedding.pooling import track_descriptor_dim

    encoder = pipeline.adopt(ws, pretrained, settings)
    summary = {
        "model_dir": str(ws.model),
        "adopted_from": pretrained,
        "fingerprint": encoder.fingerprint,
        "embedding_dim": encoder.embedding_dim,
        "descriptor_dim": track_descriptor_dim(encoder),
    }
    if as_json:
        print_json(summary)
        return
    console.print(
        f"model → {ws.model}: {pretrained} as it is (model {encoder.fingerprint}, not trained on these "
        "features); next: `embedtool embed` or `embedtool index`.",
        highlight=False,
    )


def _training_events(progress: Progress) -> Callable[[TrainEvent], None]:
    """The trainer's events drawn as one bar (steps) and a line per epoch and note."""
    task = progress.add_task("train", total=None, loss="-", acc="-", rate="-")
    teachers: dict[str, Any] = {}

    def on_event(event: TrainEvent) -> None:
        kind = event.kind
        if kind == "start":
            progress.update(task, total=event["total_steps"], completed=event["start_step"])
            for note in event["notes"]:
                progress.console.print(f"[yellow]note[/] {note}", highlight=False)
            progress.console.print(
                f"{event['train_tracks']} training / {event['val_tracks']} validation tracks, "
                f"{event['parameters']:,} parameters, device {event['device']}"
                f"{f' ({n} loader workers)' if (n := event.get('workers')) else ''}, "
                f"best model by {event['val_metric'] or 'last epoch'}",
                highlight=False,
            )
        elif kind == "step":
            progress.update(
                task,
                completed=event["step"],
                description=f"epoch {event['epoch']}",
                loss=f"{event['loss']:.3f}",
                acc=f"{event['triplet_accuracy']:.2f}",
                rate=f"{event['triplets_per_s']:.0f}",
            )
        elif kind == "epoch":
            progress.console.print(_epoch_line(event), highlight=False)
        elif kind == "note":
            progress.console.print(f"[yellow]note[/] {event['message']}", highlight=False)
        elif kind == "teacher":  # the distillation teachers' outputs of files not cached yet, before training
            name = f"{event['teacher']} outputs"
            if name not in teachers:
                teachers[name] = progress.add_task(name, total=event["total"], loss="-", acc="-", rate="-")
            progress.update(teachers[name], completed=event["done"])

    return on_event


def _epoch_line(m: Mapping[str, Any]) -> str:
    parts = [f"epoch {m['epoch']}", f"train loss {m['train_loss']:.3f}", f"acc {m['train_triplet_accuracy']:.2f}"]
    for key, label in (
        ("val_loss", "val loss"),
        ("val_triplet_accuracy", "val acc"),
        ("val_recall_at_1", "recall@1"),
        ("val_effective_rank", "eff. rank"),
    ):
        if key in m:
            parts.append(f"{label} {m[key]:.3f}")
    return " | ".join(parts) + ("  [green]best[/]" if m.get("best") else "")


def _print_summary(report: TrainReport) -> None:
    table = Table(title=f"train → {report.model_dir}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    best = f"{report.best_value:.4f}" if report.best_value is not None else "-"
    rows = [
        ("epochs run", str(report.epochs_run)),
        ("steps", str(report.steps)),
        ("tracks (train / val)", f"{report.train_tracks} / {report.val_tracks}"),
        ("best epoch", str(report.best_epoch)),
        (f"best {report.best_metric or 'metric'}", best),
        ("throughput", f"{report.triplets_per_s:.0f} triplets/s on {report.device}"),
        ("time", f"{report.seconds:.1f} s"),
    ]
    if report.history:
        last = report.history[-1]
        if "val_effective_rank" in last:
            rows.append(("embedding effective rank", f"{last['val_effective_rank']:.1f}"))
    for what, value in rows:
        table.add_row(what, value)
    console.print(table)
    last = report.history[-1] if report.history else {}
    if last.get("val_effective_rank", 10.0) < 2.0:
        err_console.print(
            "[yellow]warning[/] the validation embeddings span fewer than 2 effective dimensions: the model may "
            "have collapsed (try a lower --lr or more data)."
        )
