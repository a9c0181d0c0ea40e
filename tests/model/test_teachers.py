"""The aisfx teacher (``classify --features descriptors+aisfx``, ``train --distil-teachers aisfx``): the bundled
network, its cache of per-block outputs (incremental, resumable, versioned), segment targets, and a classifier that
reads descriptors with the teacher beside."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from factories import run_cli, tone, write_noise, write_signal

from embedtool import pipeline
from embedtool.analysis.options import ClassifyOptions
from embedtool.embedding.store import EmbeddingStore
from embedtool.errors import ConfigError, MissingArtefactError
from embedtool.model.aisfx import DIM, AisfxEmbedder
from embedtool.model.teachers import (
    block_seconds,
    ensure_teacher_outputs,
    file_blocks,
    file_vector,
    load_teacher_vectors,
    read_teacher_outputs,
    teacher_dir,
)
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
    first = ensure_teacher_outputs(cache, {"ta": str(a), "tbad": str(bad)})
    assert (first.computed, first.reused) == (1, 0) and list(first.failed) == [str(bad)]
    second = ensure_teacher_outputs(cache, {"ta": str(a), "tb": str(b)})
    assert (second.computed, second.reused) == (1, 1)
    vectors = load_teacher_vectors(cache, ["tb", "ta"])
    assert vectors.shape == (2, DIM)
    np.testing.assert_allclose(vectors[1], file_vector("aisfx", a), rtol=2e-3, atol=2e-3)  # stored as float16
    with pytest.raises(MissingArtefactError, match="1 of 2 tracks have no aisfx outputs"):
        load_teacher_vectors(cache, ["ta", "tbad"])
    meta = json.loads((cache / "meta.json").read_text())
    meta["config"]["version"] = "another"  # a cache of another version of the network is never reused
    (cache / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(Exception, match="changed after it was written"):
        ensure_teacher_outputs(cache, {"ta": str(a)})


def test_a_killed_pass_keeps_its_saved_chunks_and_an_old_cache_is_replaced(tmp_path: Path) -> None:
    files = {f"t{i}": str(write_signal(tmp_path / f"{i}.wav", tone(200 + 150 * i, 1.0) * 0.5)) for i in range(3)}
    cache = tmp_path / "teachers" / "aisfx"
    cache.mkdir(parents=True)
    (cache / "meta.json").write_text(json.dumps({"kind": "teacher-vectors", "format_version": 1}))  # older layout
    (cache / "vectors.npy").write_bytes(b"old")
    calls = []

    def stop_after_two(done: int, total: int) -> None:
        calls.append(done)
        if done == 2:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the pass

    with pytest.raises(KeyboardInterrupt):
        ensure_teacher_outputs(cache, files, progress=stop_after_two, save_every_s=0.0)  # a chunk per file
    assert not (cache / "vectors.npy").exists()  # the old layout was replaced, not mixed
    kept = read_teacher_outputs(cache)
    assert sorted(kept.track_ids) == ["t0", "t1"]
    again = ensure_teacher_outputs(cache, files)
    assert (again.computed, again.reused) == (1, 2)  # continues where it stopped
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["extra"]["tracks"] == 3 and len(meta["extra"]["chunks"]) == 3


def test_segment_targets_weight_the_blocks_a_segment_overlaps(tmp_path: Path) -> None:
    b = block_seconds("aisfx")
    low = tone(110, 2 * b, sr=44100, harmonics=4)
    high = tone(3000, 2 * b + 0.5, sr=44100)  # two whole blocks and a tail the teacher leaves out
    path = write_signal(tmp_path / "two.wav", np.concatenate([low, high]).astype(np.float32) * 0.5, sr=44100)
    blocks = file_blocks("aisfx", path)
    assert blocks.shape[1] == DIM and len(blocks) == 4
    cache = tmp_path / "teachers" / "aisfx"
    ensure_teacher_outputs(cache, {"t": str(path)})
    outputs = read_teacher_outputs(cache)
    stored = outputs.blocks_of("t").astype(np.float32)
    targets = outputs.segment_targets("t", np.array([0.1, b - 0.5, 3 * b + 0.2, 10 * b]), 1.0)
    np.testing.assert_allclose(targets[0], stored[0], atol=1e-6)  # inside the first block
    np.testing.assert_allclose(targets[1], 0.5 * stored[0] + 0.5 * stored[1], atol=1e-5)  # half in each
    np.testing.assert_allclose(targets[2], stored[3], atol=1e-6)  # inside the last whole block
    np.testing.assert_allclose(targets[3], stored[3], atol=1e-6)  # past the end: the last block
    assert not outputs.segment_targets("unknown", np.array([0.0]), 1.0).any()  # no outputs: no target


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
