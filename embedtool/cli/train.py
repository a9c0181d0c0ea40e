"""`embedtool train`: features -> split + model, by self-supervised temporal-proximity triplets."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import typer
from rich.progress import TextColumn
from rich.table import Table

from embedtool.cli.app import app
from embedtool.cli.common import (
    THREADS_HELP,
    app_context,
    console,
    default_of,
    err_console,
    handle_errors,
    make_progress,
    print_json,
    use_threads,
)
from embedtool.errors import ConfigError

if TYPE_CHECKING:
    from rich.progress import Progress

    from embedtool.model.settings import TrainSettings
    from embedtool.training.trainer import TrainReport
    from embedtool.workspace import Workspace


@app.command(
    epilog="Examples: `embedtool train --epochs 20 --device cuda`, `embedtool train --pretrained general`, "
    "`embedtool train --nproc-per-node 4` (4 GPUs)"
)
@handle_errors
def train(
    ctx: typer.Context,
    preset: Literal["default", "thesis", "tile2vec", "contrastive", "distil"] | None = typer.Option(
        None, "--preset", help="Starting values of every training option."
    ),
    epochs: int | None = typer.Option(
        None,
        "--epochs",
        "-e",
        help="Epochs (with --resume: the new total).",
        show_default=default_of("train", "epochs"),
    ),
    steps_per_epoch: int | None = typer.Option(
        None,
        "--steps-per-epoch",
        help="Optimiser steps per epoch.",
        show_default=default_of("train", "steps_per_epoch"),
    ),
    batch_size: int | None = typer.Option(
        None,
        "--batch-size",
        "-b",
        help="Triplets per step (all training processes together).",
        show_default=default_of("train", "batch_size"),
    ),
    lr: float | None = typer.Option(None, "--lr", help="Peak learning rate.", show_default=default_of("train", "lr")),
    weight_decay: float | None = typer.Option(
        None, "--weight-decay", help="Weight decay on conv weights.", show_default=default_of("train", "weight_decay")
    ),
    lr_schedule: Literal["constant", "step", "cosine"] | None = typer.Option(
        None, "--lr-schedule", help="Learning-rate schedule.", show_default=default_of("train", "lr_schedule")
    ),
    segment_seconds: float | None = typer.Option(
        None, "--segment-seconds", help="Segment length (s).", show_default=default_of("train", "segment_seconds")
    ),
    radius: float | None = typer.Option(
        None,
        "--radius",
        help="Neighbour radius for positives (s).",
        show_default=default_of("train", "neighbour_radius_s"),
    ),
    negatives: Literal["other-track", "same-track-far", "mixed"] | None = typer.Option(
        None,
        "--negatives",
        help="Where a triplet's negative comes from.",
        show_default=default_of("train", "negatives"),
    ),
    stem: Literal["imagenet", "tile2vec"] | None = typer.Option(
        None, "--stem", help="The network's first layers.", show_default=default_of("train", "stem")
    ),
    width: float | None = typer.Option(
        None, "--width", help="ResNet18 channel multiplier.", show_default=default_of("train", "width")
    ),
    embedding_dim: int | None = typer.Option(
        None, "--embedding-dim", help="Embedding size.", show_default=default_of("train", "embedding_dim")
    ),
    dropout: float | None = typer.Option(
        None, "--dropout", help="Dropout before the projection.", show_default=default_of("train", "dropout")
    ),
    level_norm: Literal["off", "mean", "peak"] | None = typer.Option(
        None,
        "--level-norm",
        help="Centre each window on its own level (gain-invariant).",
        show_default=default_of("train", "level_norm"),
    ),
    loss: Literal["thesis", "tile2vec", "ntxent"] | None = typer.Option(
        None,
        "--loss",
        help="Triplet (thesis, tile2vec) or contrastive (ntxent).",
        show_default=default_of("train", "loss"),
    ),
    margin: float | None = typer.Option(
        None, "--margin", help="Triplet margin.", show_default=default_of("train", "margin")
    ),
    temperature: float | None = typer.Option(
        None, "--temperature", help="ntxent loss temperature.", show_default=default_of("train", "temperature")
    ),
    mining: Literal["none", "semi-hard", "hard"] | None = typer.Option(
        None, "--mining", help="Which negatives a batch trains on.", show_default=default_of("train", "mining")
    ),
    augment: bool | None = typer.Option(None, "--augment/--no-augment", help="Augmentations on or off."),
    val_fraction: float | None = typer.Option(
        None,
        "--val-fraction",
        help="Share of tracks/groups held out.",
        show_default=default_of("train", "val_fraction"),
    ),
    split_by: Literal["group", "track"] | None = typer.Option(
        None,
        "--split-by",
        help="Hold out whole groups (labels file) or single tracks.",
        show_default=default_of("train", "split_by"),
    ),
    patience: int | None = typer.Option(
        None,
        "--patience",
        help="Early-stopping patience in epochs (0 = off).",
        show_default=default_of("train", "early_stopping_patience"),
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed of the split, triplets and initialisation.", show_default=default_of("train", "seed")
    ),
    device: Literal["auto", "cpu", "cuda"] | None = typer.Option(
        None, "--device", help="Where training runs.", show_default=default_of("train", "device")
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        "-j",
        help="DataLoader worker processes (-1: auto: 8 at most on CUDA, none on the CPU).",
        show_default=default_of("train", "workers"),
    ),
    init: str | None = typer.Option(
        None, "--init", help="Start from this model's weights: a bundled model (general) or a model folder."
    ),
    anchor_weight: float | None = typer.Option(
        None,
        "--anchor-weight",
        help="With --init: pull each segment's embedding toward the starting model's (0: off).",
        show_default=default_of("train", "anchor_weight"),
    ),
    distil_teachers: str | None = typer.Option(
        None,
        "--distil-teachers",
        help="Teachers to distil (comma-separated: aisfx), beside the triplets; their outputs are computed once "
        "per file (~100 s of CPU per audio hour for aisfx) and cached in teachers/. '' turns it off.",
        show_default=default_of("train", "distil_teachers"),
    ),
    distil_weight: float | None = typer.Option(
        None,
        "--distil-weight",
        help="Weight of each teacher's regression loss.",
        show_default=default_of("train", "distil_weight"),
    ),
    pretrained: str | None = typer.Option(
        None,
        "--pretrained",
        help="Use this model as it is, without training: a bundled model (general) or a model folder.",
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted (or finished) training."),
    threads: int | None = typer.Option(None, "--threads", min=1, help=THREADS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the training report as JSON."),
    nproc_per_node: int = typer.Option(
        1,
        "--nproc-per-node",
        min=1,
        help="Training processes on this machine: above 1, train restarts itself under torchrun and the processes "
        "train one model together (DDP; one per GPU on CUDA). See docs/distributed-training.md.",
    ),
    nnodes: int = typer.Option(
        1, "--nnodes", min=1, help="Machines training together; each runs this same command (with --rdzv)."
    ),
    rdzv: str | None = typer.Option(
        None, "--rdzv", help="HOST:PORT where the machines meet (torchrun's c10d rendezvous), with --nnodes > 1."
    ),
) -> None:
    """Train a ResNet18 encoder on the workspace's features, without labels.

    Triplets: an anchor segment, a positive within --radius seconds of it in the same track, a negative from
    another track. Tracks (or groups) held out for validation are written to split/ and never trained on;
    the best model by the validation metric goes to model/. Ctrl-C saves a checkpoint; --resume continues.

    A small or uniform folder (a few hundred one-shots) learns a poorer space than embedtool's bundled model,
    trained on hours of varied audio: --pretrained general makes that model this workspace's model, at once;
    --init general trains on from it.

    --nproc-per-node N (and --nnodes M --rdzv HOST:PORT across machines) trains with N processes per machine
    under torchrun; --batch-size stays the batch of all of them together.
    """
    actx = app_context(ctx)
    use_threads(threads)
    overrides: dict[str, Any] = {
        "preset": preset,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "lr_schedule": lr_schedule,
        "segment_seconds": segment_seconds,
        "neighbour_radius_s": radius,
        "negatives": negatives,
        "stem": stem,
        "width": width,
        "embedding_dim": embedding_dim,
        "dropout": dropout,
        "level_norm": level_norm,
        "loss": loss,
        "margin": margin,
        "temperature": temperature,
        "mining": mining,
        "augment": augment,
        "val_fraction": val_fraction,
        "split_by": split_by,
        "early_stopping_patience": patience,
        "seed": seed,
        "device": device,
        "workers": workers,
        "init": init,
        "anchor_weight": anchor_weight,
        "distil_teachers": distil_teachers,
        "distil_weight": distil_weight,
    }
    settings = actx.config.settings("train", overrides)
    ws = actx.workspace
    taken: dict[str, Any] = {}
    if resume and pretrained is None:
        from embedtool.training.trainer import resume_settings

        # --resume continues the run as it was started (its --init, --epochs, ...); flags given now win
        explicit = {key for key, value in overrides.items() if value is not None and key != "preset"}
        settings, taken = resume_settings(ws.model, settings, explicit)
        if taken and not as_json:
            said = ", ".join(f"{key} {value!r}" for key, value in taken.items())
            err_console.print(f"resuming with the checkpoint's settings: {said} (a flag given now overrides one)")
    if pretrained is not None:
        if resume or init is not None or nproc_per_node > 1 or nnodes > 1 or rdzv is not None:
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


def _training_events(progress: Progress) -> Callable[[dict[str, Any]], None]:
    """The trainer's events drawn as one bar (steps) and a line per epoch and note."""
    task = progress.add_task("train", total=None, loss="-", acc="-", rate="-")
    teachers: dict[str, Any] = {}

    def on_event(event: dict[str, Any]) -> None:
        kind = event["event"]
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


def _epoch_line(m: dict[str, Any]) -> str:
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
