"""Labels are metadata of the features: after `extract --labels NEW`, classify, cluster and evaluate use the new
labels and groups without re-embedding (the embeddings' own copy is stale)."""

from __future__ import annotations

import json
from pathlib import Path

from factories import run_cli

from embedtool import pipeline
from embedtool.analysis.options import EvaluateOptions
from embedtool.embedding.store import EmbeddingStore
from embedtool.features.store import FeatureStore
from embedtool.workspace import Workspace


def _relabel(ws: Workspace) -> dict[str, str]:
    """`extract --labels`: tone_low and clicks become one label "merged"; each track its own group."""
    store = FeatureStore(ws.features)
    labels_file = ws.root.parent / "relabelled.csv"
    new = {t["track_id"]: ("merged" if t["label"] in ("tone_low", "clicks") else t["label"]) for t in store.tracks}
    lines = ["path,label,group"] + [f"{t['path']},{new[t['track_id']]},g{i}" for i, t in enumerate(store.tracks)]
    labels_file.write_text("\n".join(lines) + "\n")
    result = run_cli("-w", ws.root, "-q", "extract", "--labels", labels_file, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["done"] == 0  # nothing re-extracted: only the labels changed
    return new


def test_classify_and_cluster_use_the_features_current_labels(trained_workspace_copy: Workspace) -> None:
    ws = trained_workspace_copy
    before = {t["label"] for t in EmbeddingStore(ws.embeddings).tracks}
    assert before == {"tone_low", "noise_high", "clicks"}
    _relabel(ws)
    assert {t["label"] for t in FeatureStore(ws.features).tracks} == {"merged", "noise_high"}
    assert {t["label"] for t in EmbeddingStore(ws.embeddings).tracks} == before  # the stale copy
    result = run_cli("-w", ws.root, "-q", "classify", "--cv", "3", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["classes"] == ["merged", "noise_high"]
    result = run_cli("-w", ws.root, "-q", "cluster", "-k", "2", "--format", "csv")
    assert result.exit_code == 0, result.output
    assert {row.split(",")[3] for row in result.stdout.splitlines()[1:]} == {"merged", "noise_high"}
    # queries show the current labels too (the index's table is as stale as the embeddings')
    track = next(t for t in FeatureStore(ws.features).tracks if t["label"] == "merged")
    result = run_cli("-w", ws.root, "-q", "neighbours", track["track_id"], "--include-self", "-k", "1", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["matches"][0]["label"] == "merged"


def test_evaluate_uses_the_current_labels_and_groups(trained_workspace_copy: Workspace) -> None:
    ws = trained_workspace_copy
    _relabel(ws)
    light = EvaluateOptions(
        name="relabelled", k=(1,), robustness=False, baselines=False, untrained_baseline=False, pretrained_baseline=""
    )
    result = pipeline.evaluate(ws, light)
    assert set(result.report["labels"]) == {"merged", "noise_high"}, result.report.keys()


def test_without_features_the_embeddings_labels_stand(trained_workspace: Workspace, tmp_path: Path) -> None:
    store = EmbeddingStore(trained_workspace.embeddings)
    assert store.use_current_labels(None) == 0 and store.use_current_labels(tmp_path / "none") == 0
    assert store.use_current_labels(trained_workspace.features) == 0  # same labels: nothing changes
