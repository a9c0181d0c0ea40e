"""End to end: the demo chain through the CLI on the bundled audio, then a re-run on the same workspace."""

from __future__ import annotations

import json
from pathlib import Path

from factories import run_cli

from embedtool.artefacts import read_meta


def test_demo_runs_the_whole_chain_and_is_safe_to_rerun(tmp_path: Path) -> None:
    ws = tmp_path / "demo-ws"
    # A shorter training than the real demo's, to keep the suite fast; every other step is the demo's own.
    first = run_cli("-q", "-w", ws, "demo", "--epochs", "1", "--steps-per-epoch", "6")
    assert first.exit_code == 0, first.output
    for kind, folder in [
        ("features", "features"),
        ("split", "split"),
        ("model", "model"),
        ("embeddings", "embeddings"),
        ("index", "index"),
        ("clusters", "clusters"),
        ("classifier", "classifier"),
    ]:
        read_meta(ws / folder, kind)  # raises unless the stage published a complete artefact
    assert read_meta(ws / "features", "features").extra["tracks"] == 72
    assert (ws / "clusters" / "map.png").stat().st_size > 1000
    assert "Demo finished" in first.output

    # The demo's identify query: a noisy 3 s excerpt of the amen loop is found in its own track.
    snippet = ws / "demo-queries" / "amen-snippet-noisy.ogg"
    answer = run_cli("-w", ws, "neighbours", snippet, "--mode", "similar", "--json")
    assert answer.exit_code == 0, answer.output
    best = json.loads(answer.output)["matches"][0]
    assert best["label"] == "loop"

    model_before = read_meta(ws / "model", "model").fingerprint
    second = run_cli("-q", "-w", ws, "demo", "--epochs", "1", "--steps-per-epoch", "6")
    assert second.exit_code == 0, second.output
    assert "already trained" in second.output
    assert read_meta(ws / "model", "model").fingerprint == model_before
