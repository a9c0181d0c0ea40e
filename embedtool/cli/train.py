"""`embedtool train`: features -> split + model, by self-supervised temporal-proximity triplets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
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
from embedtool.errors import ConfigError, EmbedtoolError

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
    preset: Literal["default", "thesis", "tile2vec", "contrastive"] | None = typer.Option(
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
    launch = nproc_per_node > 1 or nnodes > 1 or rdzv is not None
    if pretrained is not None:
        if resume or init is not None or launch:
            raise ConfigError(
                "--pretrained uses a model as it is: it does not combine with --init, --resume or --nproc-per-node."
            )
        _adopt(ws, pretrained, settings, as_json)
        return
    if launch:
        _launch(ctx, settings, nproc_per_node, nnodes, rdzv)
        return
    from embedtool.training.distributed import launched_rank, launched_world_size

    if launched_world_size() > 1 and launched_rank() != 0:
        # Started by torchrun, not rank 0: trains with the others but writes nothing (no workspace lock, no log)
        # and shows nothing; its outcome goes to the launcher.
        from embedtool.training.trainer import train as run_train

        with _rank_outcome():
            run_train(ws.features, ws.split, ws.model, settings, resume=resume)
        return
    with _rank_outcome():
        report = _train_here(actx.quiet or as_json, ws, settings, resume)
    if as_json:
        print_json({**report.to_dict(), **({"settings_from_checkpoint": taken} if taken else {})})
        return
    _print_summary(report)


def _train_here(quiet: bool, ws: Workspace, settings: TrainSettings, resume: bool) -> TrainReport:
    """Train in this process (alone, or as rank 0 of a torchrun job), with a progress bar."""
    from embedtool import pipeline

    progress = make_progress(
        quiet,
        TextColumn("loss {task.fields[loss]}"),
        TextColumn("acc {task.fields[acc]}"),
        TextColumn("{task.fields[rate]} triplets/s"),
    )
    with progress:
        return pipeline.train(ws, settings, resume=resume, progress=_training_events(progress))


# --- several processes (torchrun) -----------------------------------------------------------------------------

LAUNCH_OPTIONS = ("nproc_per_node", "nnodes", "rdzv")
# Set by the launcher for the processes torchrun starts: a folder where each rank leaves how it ended.
OUTCOMES_ENV = "EMBEDTOOL_TRAIN_OUTCOMES"


def _launch(ctx: typer.Context, settings: TrainSettings, nproc: int, nnodes: int, rdzv: str | None) -> None:
    """Run this same `train` under torchrun with ``nproc`` processes here (``nnodes`` machines meeting at
    ``rdzv``), wait for it, and end as its ranks ended: a failed rank's message and exit status."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:  # torchrun's variable (read here without importing torch)
        raise ConfigError("This process already runs under torchrun: leave out --nproc-per-node, --nnodes and --rdzv.")
    if nnodes > 1 and not rdzv:
        raise ConfigError("--nnodes above 1 needs --rdzv HOST:PORT, where the machines meet.")
    if rdzv is not None and (nnodes == 1 or ":" not in rdzv):
        raise ConfigError("--rdzv HOST:PORT is for training on several machines (--nnodes 2 or more).")
    if settings.batch_size % (nproc * nnodes):
        raise ConfigError(
            f"--batch-size ({settings.batch_size}) is the batch of all {nproc * nnodes} training processes together "
            "and must be a multiple of their number."
        )
    if settings.device != "cpu":  # on CUDA: a GPU per process (the CPU needs no torch import to know)
        from embedtool.training.distributed import check_devices

        check_devices(settings.device, nproc)
    actx = app_context(ctx)
    args = rank_arguments(ctx, actx)
    with tempfile.TemporaryDirectory(prefix="embedtool-train-") as outcomes:
        env = {**os.environ, OUTCOMES_ENV: outcomes}
        # torch's threads per process: the machine's cores shared by the processes (torchrun would say 1).
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
        command = torchrun_command(nproc, nnodes, rdzv, args)
        returncode, interrupted = _run_forwarding_signals(command, env)
        if returncode != 0:
            raise _launch_failure(Path(outcomes), returncode, interrupted)


def torchrun_command(nproc: int, nnodes: int, rdzv: str | None, args: list[str]) -> list[str]:
    """The torchrun command line that starts ``nproc`` processes of `embedtool ARGS` here: ``--standalone`` on
    one machine, a c10d rendezvous at ``rdzv`` across ``nnodes`` (the same id on every machine)."""
    command = [sys.executable, "-m", "torch.distributed.run"]
    if nnodes == 1:
        command += ["--standalone", "--nnodes", "1"]
    else:
        command += ["--nnodes", str(nnodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", str(rdzv)]
        command += ["--rdzv-id", "embedtool-train"]
    return [*command, "--nproc-per-node", str(nproc), "-m", "embedtool", *args]


def rank_arguments(ctx: typer.Context, actx: Any) -> list[str]:
    """This invocation's arguments for the processes torchrun starts: the same workspace, configuration file and
    train options, without the launch options."""
    args = ["-w", str(Path(actx.workspace.root).resolve())]
    if actx.config.path is not None:
        args += ["-c", str(Path(actx.config.path).resolve())]
    if actx.quiet:
        args.append("-q")
    if actx.verbose:
        args.append("-v")
    args.append("train")
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        # typer may bring its own copy of click: an option is known by its kind, not its class
        if param.name in LAUNCH_OPTIONS or value is None or param.param_type_name != "option":
            continue
        flag = max(param.opts, key=len)
        if getattr(param, "is_flag", False):
            if getattr(param, "secondary_opts", None):  # --augment/--no-augment
                args.append(flag if value else max(param.secondary_opts, key=len))
            elif value:
                args.append(flag)
        else:
            args += [flag, str(value)]
    return args


def _run_forwarding_signals(command: list[str], env: dict[str, str]) -> tuple[int, bool]:
    """Run torchrun in a session of its own, so a terminal's Ctrl-C reaches only this process, which passes each
    Ctrl-C or SIGTERM on to torchrun as a SIGTERM; torchrun sends it to every rank. The first makes the ranks stop
    together at the next step boundary, after rank 0 saved a checkpoint; a second stops them at once (torchrun
    kills what is left after 30 s). (exit status, whether interrupted)"""
    proc = subprocess.Popen(command, env=env, start_new_session=True)
    seen = {"signals": 0}

    def forward(signum: int, frame: Any) -> None:
        seen["signals"] += 1
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass

    with _signals_to(forward):
        returncode = proc.wait()
    return returncode, seen["signals"] > 0


@contextmanager
def _signals_to(handler: Callable[[int, Any], None]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _launch_failure(outcomes: Path, returncode: int, interrupted: bool) -> EmbedtoolError:
    """The error the launcher ends with: embedtool's own error from the lowest rank that had one, else the
    first failure recorded, else torchrun's exit status."""
    failed = []
    for path in outcomes.glob("rank-*.json"):
        try:
            outcome = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if outcome.get("exit_code"):
            failed.append(outcome)
    failed.sort(key=lambda o: (not o.get("embedtool"), o["rank"] if o.get("embedtool") else o.get("time", 0)))
    if failed:
        first = failed[0]
        error = EmbedtoolError(f"training process {first['rank']}: {first['message']}")
        error.exit_code = int(first["exit_code"])
        return error
    error = EmbedtoolError(
        f"torchrun ended with status {returncode} before any training process reported how it ended; see the "
        "output above."
    )
    error.exit_code = 130 if interrupted else 1
    return error


@contextmanager
def _rank_outcome() -> Iterator[None]:
    """Under the launcher (``EMBEDTOOL_TRAIN_OUTCOMES``), leave this rank's outcome where it reads it; an
    embedtool error is then only said once, by the launcher."""
    folder = os.environ.get(OUTCOMES_ENV)
    if not folder:
        yield
        return
    from embedtool.training.distributed import launched_rank

    rank = launched_rank()

    def record(exit_code: int, message: str, embedtool: bool) -> None:
        outcome = {"rank": rank, "exit_code": exit_code, "message": message, "embedtool": embedtool}
        with open(Path(folder) / f"rank-{rank}.json", "w") as fh:
            json.dump({**outcome, "time": time.time()}, fh)

    try:
        yield
    except EmbedtoolError as exc:
        record(exc.exit_code, str(exc), True)
        raise typer.Exit(code=exc.exit_code) from None
    except KeyboardInterrupt:
        record(130, "interrupted", False)
        raise
    except Exception as exc:
        record(1, f"{type(exc).__name__}: {exc}", False)
        raise
    record(0, "", False)


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
