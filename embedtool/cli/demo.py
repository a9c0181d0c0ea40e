"""`embedtool demo`: the whole chain on the bundled CC0 percussion set, through the real commands."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.rule import Rule
from rich.table import Table

from embedtool.artefacts import read_meta
from embedtool.cli.app import app
from embedtool.cli.common import console, err_console, handle_errors
from embedtool.demo import DEMO_WORKSPACE, SAMPLE_AUDIO, make_noisy_excerpt
from embedtool.errors import EmbedtoolError
from embedtool.workspace import Workspace

# A small, fast training configuration: about 70 s on a 2-core CPU (the whole demo stays under 3 minutes).
DEMO_EPOCHS, DEMO_STEPS_PER_EPOCH, DEMO_BATCH_SIZE = 6, 50, 64


def _run(args: list[str], title: str, step: int, steps: int) -> float:
    """Run one embedtool command in-process, exactly as a user would type it; stop the demo if it fails."""
    console.print(Rule(f"[bold]{step}/{steps}[/] {title}"))
    console.print(f"[dim]$ embedtool {' '.join(args)}[/]", highlight=False)
    started = time.perf_counter()
    code = typer.main.get_command(app).main(args=args, prog_name="embedtool", standalone_mode=False)
    if code not in (None, 0):
        raise EmbedtoolError(f"demo step `embedtool {' '.join(args)}` failed with exit status {code}")
    return time.perf_counter() - started


def _model_is_current(workspace: Workspace) -> bool:
    """True when a model trained on the current features already exists (re-running the demo skips training)."""
    try:
        features = read_meta(workspace.features, "features")
        model = read_meta(workspace.model, "model")
    except EmbedtoolError:
        return False
    return model.inputs.get("features") == features.fingerprint


@app.command(epilog="Example: `embedtool demo` (then `embedtool -w embedtool-demo info`)")
@handle_errors
def demo(
    ctx: typer.Context,
    retrain: bool = typer.Option(False, "--retrain", help="Train again even when the demo model is current."),
    epochs: int = typer.Option(DEMO_EPOCHS, "--epochs", min=1, help="Training epochs."),
    steps_per_epoch: int = typer.Option(DEMO_STEPS_PER_EPOCH, "--steps-per-epoch", min=1, help="Steps per epoch."),
) -> None:
    """Run extract → train → index → neighbours → cluster → classify on the bundled CC0 audio (offline, 1-2 min).

    Writes into ./embedtool-demo unless --workspace is given; re-running it is safe and reuses what is done.
    """
    explicit = ctx.find_root().params.get("workspace")
    workspace = Workspace(Path(explicit).resolve() if explicit else (Path.cwd() / DEMO_WORKSPACE).resolve())
    ws = ["--workspace", str(workspace.root)]
    queries = workspace.root / "demo-queries"
    snippet = make_noisy_excerpt(
        SAMPLE_AUDIO / "loop" / "loop_amen_full.flac", queries / "amen-snippet-noisy.ogg", start_s=2.0, seconds=3.0
    )
    kick = SAMPLE_AUDIO / "kick" / "bd_808.flac"

    steps = 7
    timings: dict[str, float] = {}
    started = time.perf_counter()
    timings["extract"] = _run([*ws, "extract", str(SAMPLE_AUDIO)], "extract: audio → log-Mel features", 1, steps)
    if retrain or not _model_is_current(workspace):
        train_args = ["--epochs", str(epochs), "--steps-per-epoch", str(steps_per_epoch)]
        train_args += ["--batch-size", str(DEMO_BATCH_SIZE)]
        timings["train"] = _run([*ws, "train", *train_args], "train: self-supervised triplets", 2, steps)
    else:
        console.print(Rule(f"[bold]2/{steps}[/] train"))
        console.print("The demo model is already trained on these features (use --retrain to train again).")
    timings["index"] = _run([*ws, "index"], "index: embeddings → FAISS indexes", 3, steps)
    timings["identify"] = _run(
        [*ws, "neighbours", str(snippet), "--mode", "identify", "-k", "3"],
        "neighbours --mode identify: which track is this noisy 3 s snippet from?",
        4,
        steps,
    )
    timings["similar"] = _run(
        [*ws, "neighbours", str(kick), "-k", "5"], "neighbours: what sounds like this kick drum?", 5, steps
    )
    timings["cluster"] = _run([*ws, "cluster", "-k", "auto"], "cluster: k-Means over track embeddings", 6, steps)
    timings["classify"] = _run([*ws, "classify", "--cv", "4"], "classify: logistic regression on labels", 7, steps)

    console.print(Rule("[bold]done"))
    table = Table("artefact", "where", title=f"Demo finished in {time.perf_counter() - started:.0f} s")
    for name, path in workspace.stages().items():
        if (path / "meta.json").is_file():
            table.add_row(name, str(path))
    table.add_row("queries", str(queries))
    console.print(table)
    console.print(
        "Next: `embedtool -w "
        f"{workspace.root} info`, `embedtool -w {workspace.root} evaluate`, or your own library: "
        "`embedtool extract ~/Music && embedtool train && embedtool index && embedtool neighbours song.mp3`."
    )
    err_console.print("[dim]" + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) + "[/]")
