"""embedtool cluster: k-Means, the choice of k, label agreement, the clusters artefact and its CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from factories import run_cli

from embedtool.analysis.cluster import choose_k, cluster_vectors, kmeans, label_agreement, run_cluster
from embedtool.analysis.options import ClusterOptions
from embedtool.artefacts import read_meta, staged_dir
from embedtool.config import build_settings
from embedtool.embedding.store import EmbeddingStore, EmbeddingWriter
from embedtool.errors import ConfigError, InputError, MissingArtefactError


def blobs(classes: int, per_class: int, dim: int = 16, spread: float = 0.15, seed: int = 0):
    """Unit vectors around ``classes`` random centres, and their labels."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    x = centres[labels] / np.linalg.norm(centres[labels], axis=1, keepdims=True)
    x = x + spread * rng.standard_normal(x.shape) / np.sqrt(dim)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), [f"c{v}" for v in labels]


def write_store(directory: Path, classes: int = 3, per_class: int = 6, segments: int = 4, seed: int = 0) -> Path:
    """A real embeddings artefact (EmbeddingWriter) whose tracks' segments lie around their class centre."""
    rng = np.random.default_rng(seed)
    dim = 16
    centres = rng.standard_normal((classes, dim))
    with staged_dir(directory) as stage:
        writer = EmbeddingWriter(stage, dim)
        for c in range(classes):
            for i in range(per_class):
                v = centres[c] + 0.3 * rng.standard_normal((segments, dim))
                v /= np.linalg.norm(v, axis=1, keepdims=True)
                starts = np.arange(segments) * 0.5
                writer.add_track(
                    {"track_id": f"{c:02d}{i:02d}" + "0" * 12, "path": f"/lib/c{c}/{i}.wav", "label": f"c{c}",
                     "group": f"g{c}-{i // 2}", "duration_s": 0.5 * segments + 0.5},
                    starts, starts + 1.0, v,
                )  # fmt: skip
        writer.finish({"hop_frames": 50, "hop_s": 0.5}, {"features": "feat-fp", "model": "model-fp"})
    return directory


def test_kmeans_is_seeded_and_numbers_clusters_by_size() -> None:
    x, _ = blobs(4, 10)
    x = np.concatenate([x, x[:5]])  # make the first cluster the largest
    a = kmeans(x, 4, seed=3)
    b = kmeans(x, 4, seed=3)
    assert np.array_equal(a.assignments, b.assignments) and np.allclose(a.centroids, b.centroids)
    sizes = np.bincount(a.assignments)
    assert list(sizes) == sorted(sizes, reverse=True)
    assert sizes[0] == 15
    # distances are to the assigned centroid
    assert np.allclose(a.distances, np.linalg.norm(x - a.centroids[a.assignments], axis=1), atol=1e-4)


def test_auto_k_finds_the_number_of_blobs() -> None:
    x, labels = blobs(4, 12, spread=0.2)
    k, scores = choose_k(x, 2, 8, seed=0)
    assert k == 4, scores
    assert set(scores) == set(range(2, 9)) and max(scores.values()) == scores[4]
    clustering = cluster_vectors(x, ClusterOptions(k="auto", k_max=8), labels)
    assert clustering.k == 4 and clustering.criterion == "silhouette"
    assert clustering.agreement["purity"] == 1.0 and clustering.agreement["nmi"] > 0.99


def test_label_agreement_by_hand() -> None:
    assignments = [0, 0, 0, 1, 1, 1]
    labels = ["a", "a", "b", "b", "b", None]  # unlabelled items are left out
    m = label_agreement(assignments, labels)
    assert m["labelled_items"] == 5
    assert m["purity"] == pytest.approx(4 / 5)  # cluster 0: 2 of a, cluster 1: 2 of b
    assert m["composition"] == {"0": {"a": 2, "b": 1}, "1": {"b": 2}}
    perfect = label_agreement([1, 1, 0, 0], ["x", "x", "y", "y"])
    assert perfect["purity"] == 1.0 and perfect["nmi"] == pytest.approx(1.0) and perfect["ari"] == pytest.approx(1.0)
    assert label_agreement([0, 1], [None, ""]) is None


def test_run_cluster_writes_the_artefact(tmp_path: Path) -> None:
    emb = write_store(tmp_path / "embeddings")
    out = tmp_path / "clusters"
    result = run_cluster(emb, out, ClusterOptions(k="3", exemplars=2))
    store = EmbeddingStore(emb)
    meta = read_meta(out, "clusters")
    assert meta.inputs == {"embeddings": store.fingerprint, "model": "model-fp"}
    assert meta.extra["k"] == 3 and meta.extra["purity"] == 1.0
    table = pq.read_table(out / "assignments.parquet").to_pylist()
    assert len(table) == 18 and {r["cluster"] for r in table} == {0, 1, 2}
    centroids = np.load(out / "centroids.npy")
    assert centroids.shape == (3, 16)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sizes"] == [6, 6, 6] and summary["labels"]["purity"] == 1.0
    for c, exemplars in summary["exemplars"].items():
        assert len(exemplars) == 2
        for e in exemplars:
            # exemplar tracks belong to their cluster and come with the time range of their nearest segment
            assert next(r["cluster"] for r in table if r["track_id"] == e["track_id"]) == int(c)
            assert 0.0 <= e["start_s"] < e["end_s"] <= 2.5
    assert (out / "map.png").stat().st_size > 1000
    assert result.agreement["nmi"] == pytest.approx(1.0)


def test_run_cluster_segments_and_auto_k(tmp_path: Path) -> None:
    emb = write_store(tmp_path / "embeddings", classes=3, per_class=4, segments=5)
    result = run_cluster(emb, tmp_path / "clusters", ClusterOptions(k="auto", k_max=6, level="segment"))
    assert len(result.items) == 60 and result.k == 3
    assert result.agreement["purity"] > 0.9
    assert (tmp_path / "clusters" / "k_selection.png").is_file()
    assert all(it["item_id"].startswith(it["track_id"] + "@") for it in result.items)


def test_cluster_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="whole number or 'auto'"):
        build_settings(ClusterOptions, {}, {"k": "many"}, section="cluster")
    with pytest.raises(ConfigError, match="k_min"):
        build_settings(ClusterOptions, {"k_min": 5, "k_max": 3}, {}, section="cluster")
    with pytest.raises(MissingArtefactError, match="embedtool embed"):
        run_cluster(tmp_path / "nothing", tmp_path / "clusters", ClusterOptions())
    emb = write_store(tmp_path / "embeddings", classes=2, per_class=2)
    with pytest.raises(InputError, match="more clusters than the 4 items"):
        run_cluster(emb, tmp_path / "clusters", ClusterOptions(k="5"))
    assert not (tmp_path / "clusters").exists()  # nothing half-written
    with pytest.raises(InputError, match="too few"):
        choose_k(np.eye(2, dtype=np.float32), 2, 5)


def test_cluster_cli(tmp_path: Path) -> None:
    write_store(tmp_path / "ws" / "embeddings")
    res = run_cli("--workspace", tmp_path / "ws", "-q", "cluster", "-k", "3", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["k"] == 3 and data["labels"]["purity"] == 1.0
    res = run_cli("--workspace", tmp_path / "ws", "-q", "cluster", "-k", "auto", "--k-max", "5")
    assert res.exit_code == 0, res.output
    assert "3 clusters" in res.stdout and "purity 1.000" in res.stdout
    res = run_cli("--workspace", tmp_path / "empty", "cluster")
    assert res.exit_code == 4 and "does not exist" in res.output  # a mistyped -w is named as such
    (tmp_path / "empty" / "split").mkdir(parents=True)
    (tmp_path / "empty" / "split" / "meta.json").write_text("{}")  # a workspace, without embeddings
    res = run_cli("--workspace", tmp_path / "empty", "cluster")
    assert res.exit_code == 4 and "embedtool embed" in res.output
