"""The aisfx teacher (``classify --features descriptors+aisfx``): the bundled network, its cache of per-track
vectors (incremental, resumable, versioned), and a classifier that reads descriptors with the teacher beside."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from factories import run_cli, tone, write_noise, write_signal

from embedtool import pipeline
from embedtool.analysis.options import ClassifyOptions
from embedtool.embedding.store import EmbeddingStore
from embedtool.embedding.teachers import ensure_teacher_vectors, file_vector, load_teacher_vectors, teacher_dir
from embedtool.errors import ConfigError, MissingArtefactError
from embedtool.model.aisfx import DIM, AisfxEmbedder
from embedtool.workspace import Workspace


def test_the_network_tells_sounds_apart_and_is_deterministic(tmp_path: Path) -> None:
    model = AisfxEmbedder()
    low = model.embed(tone(110, 3.0, sr=44100, harmonics=4).astype(np.float32))
    high = model.embed(tone(3000, 3.0, sr=44100).astype(np.float32))
    again = model.embed(tone(110, 3.0, sr=44100, harmonics=4).astype(np.float32))
    short = model.embed(tone(440, 0.01, sr=44100).astype(np.float32))  # under one block: one padded block
    assert low.shape == high.shape == short.shape == (DIM,) and low.dtype == np.float32
    assert np.all(np.isfinite(short))
    np.testing.assert_array_equal(low, again)
    cos = float(low @ high / np.linalg.norm(low) / np.linalg.norm(high))
    assert cos < 0.99  # different sounds, different vectors


def test_the_cache_computes_only_what_it_lacks_and_reports_bad_files(tmp_path: Path) -> None:
    a = write_signal(tmp_path / "a.wav", tone(220, 1.0) * 0.5)
    b = write_noise(tmp_path / "b.wav", seconds=1.0)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    cache = tmp_path / "teachers" / "aisfx"
    first = ensure_teacher_vectors(cache, {"ta": str(a), "tbad": str(bad)})
    assert (first.computed, first.reused) == (1, 0) and list(first.failed) == [str(bad)]
    second = ensure_teacher_vectors(cache, {"ta": str(a), "tb": str(b)})
    assert (second.computed, second.reused) == (1, 1)
    vectors = load_teacher_vectors(cache, ["tb", "ta"])
    assert vectors.shape == (2, DIM)
    np.testing.assert_allclose(vectors[1], file_vector("aisfx", a), rtol=2e-3, atol=2e-3)  # stored as float16
    with pytest.raises(MissingArtefactError, match="1 of 2 tracks have no aisfx vector"):
        load_teacher_vectors(cache, ["ta", "tbad"])
    meta = json.loads((cache / "meta.json").read_text())
    meta["config"]["version"] = "another"  # a cache of another version of the network is never reused
    (cache / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="changed after it was written"):
        ensure_teacher_vectors(cache, {"ta": str(a)})


def test_classify_with_the_teacher_trains_predicts_and_checks(trained_workspace_copy: Workspace) -> None:
    ws = trained_workspace_copy
    with pytest.raises(ConfigError):
        ClassifyOptions(features="descriptors+nothing").validate()  # type: ignore[arg-type]
    result = pipeline.classify(ws, ClassifyOptions(cv=2, features="descriptors+aisfx", plots=False))
    store = EmbeddingStore(ws.embeddings)
    assert result.classifier.dim == store.descriptor_dim + DIM
    labelled = [t for t in store.tracks if t.get("label")]
    assert len(load_teacher_vectors(teacher_dir(ws.root, "aisfx"), [t["track_id"] for t in labelled])) == len(labelled)
    assert result.evaluation.metrics["macro_f1"] > 0.5  # three generated classes, easy for any of the parts
    files = [Path(t["path"]) for t in labelled[:3]]
    predictions = pipeline.predict(ws, files, segments=True)
    for p, t in zip(predictions, labelled[:3], strict=True):
        assert p.error is None and p.label == t["label"]
        assert p.segments and sum(p.probabilities.values()) == pytest.approx(1.0)
    res = run_cli("-w", ws.root, "-q", "classify", "--cv", "2", "--features", "descriptors+aisfx", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["macro_f1"] == pytest.approx(result.evaluation.metrics["macro_f1"])


def test_evaluate_joins_the_teacher_and_scores_it_alone(trained_workspace_copy: Workspace) -> None:
    from embedtool.analysis.options import EvaluateOptions

    light = EvaluateOptions(
        name="fused", k=(1,), robustness=False, baselines=True, untrained_baseline=False, pretrained_baseline=""
    )
    fused = ClassifyOptions(cv=2, features="descriptors+aisfx", plots=False)
    report = pipeline.evaluate(trained_workspace_copy, light, fused).report
    assert {"embeddings", "mfcc", "aisfx"} <= set(report["systems"])
    for system in ("embeddings", "aisfx"):
        assert 0.0 <= report["systems"][system]["classification"]["macro_f1"] <= 1.0
    assert "track descriptors" in (trained_workspace_copy.reports / "fused" / "report.md").read_text()


def test_cluster_with_the_teacher(trained_workspace_copy: Workspace) -> None:
    from embedtool.analysis.options import ClusterOptions

    with pytest.raises(ConfigError, match="needs cluster.level 'track'"):
        ClusterOptions(features="embeddings+aisfx", level="segment").validate()
    result = pipeline.cluster(trained_workspace_copy, ClusterOptions(k="3", features="embeddings+aisfx", plots=False))
    store = EmbeddingStore(trained_workspace_copy.embeddings)
    assert result.clustering.centroids.shape == (3, store.dim + DIM)
    assert sorted(result.clustering.sizes) and sum(result.clustering.sizes) == len(store.tracks)
    for entries in result.exemplars.values():  # exemplars of a fused space span whole tracks
        assert all(e["start_s"] == 0.0 for e in entries)
    res = run_cli("-w", trained_workspace_copy.root, "-q", "cluster", "-k", "3", "--features", "embeddings+aisfx")
    assert res.exit_code == 0, res.output
