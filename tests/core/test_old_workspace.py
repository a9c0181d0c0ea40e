"""A workspace recorded at format version 1 (tests/data/old_workspace_v1) is still read by every store, each
store's ``_upgrade`` bringing its older layout to the current one; what is re-made is written at the new version."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from factories import class_signal, write_signal

from embedtool import pipeline
from embedtool.analysis import classifier_store, cluster_store
from embedtool.analysis.classifier_store import SavedClassifier
from embedtool.analysis.cluster_store import ClusterStore
from embedtool.analysis.options import ClassifyOptions
from embedtool.artefacts import read_meta
from embedtool.embedding import store as embedding_store
from embedtool.embedding.store import EmbeddingStore
from embedtool.errors import IncompatibleArtefactError
from embedtool.features import store as feature_store
from embedtool.features.store import FeatureStore
from embedtool.indexing import store as index_store
from embedtool.indexing.store import IndexStore
from embedtool.query.searcher import Searcher
from embedtool.verify import OK, verify_workspace
from embedtool.workspace import Workspace

RECORDED = Path(__file__).resolve().parents[1] / "data" / "old_workspace_v1"


@pytest.fixture
def old(tmp_path: Path) -> Workspace:
    shutil.copytree(RECORDED, tmp_path / "ws", ignore=shutil.ignore_patterns("README.md"))
    return Workspace.at(tmp_path / "ws")


def test_the_versions_moved_past_the_recording() -> None:
    for module in (feature_store, embedding_store, index_store, classifier_store):
        assert module.FORMAT_VERSION == 2
    assert cluster_store.FORMAT_VERSION == 1  # its layout is the same
    for kind in ("features", "embeddings", "index", "classifier", "clusters"):
        assert read_meta(RECORDED / kind, kind).format_version == 1


def test_every_store_reads_the_version_1_workspace(old: Workspace) -> None:
    features = FeatureStore(old.features)
    assert len(features) == 6 and features.peaks_version == 1 and features.has_peaks()
    assert features.mel(features.track_ids()[0]).shape[1] == 32

    embeddings = EmbeddingStore(old.embeddings)
    assert embeddings.features_fingerprint == features.fingerprint
    assert embeddings.track_descriptors().shape[0] == 6 and embeddings.descriptors_current

    index = IndexStore(old.index)
    assert index.embeddings_fingerprint == embeddings.fingerprint
    assert index.model_fingerprint == embeddings.model_fingerprint != ""
    assert not index.ids_in_segment_table
    assert index.identify.statistic == "confidence"
    tables = index.id_tables()
    assert len(tables.segment_track) == embeddings.n_segments
    assert index.fingerprint_index() is not None

    clusters = ClusterStore(old.clusters)
    assert clusters.summary()["k"] == 2
    assert set(clusters.track_clusters()) == set(embeddings.track_ids())

    saved = SavedClassifier(old.classifier)
    assert saved.model_fingerprint == embeddings.model_fingerprint
    assert saved.reads_descriptors and sorted(saved.classifier.classes) == ["noise_high", "tone_low"]

    report = verify_workspace(old)
    assert [(a.kind, a.status) for a in report.artefacts] == [(k, OK) for k in (
        "features", "split", "model", "embeddings", "index", "clusters", "classifier")]  # fmt: skip


def test_queries_and_predictions_on_the_version_1_workspace(old: Workspace, tmp_path: Path) -> None:
    clip = write_signal(tmp_path / "clip.wav", class_signal(1, 1.0, 22050, np.random.default_rng(9)))
    result = Searcher.open(old).query_file(clip, mode="similar", k=3)
    assert len(result.matches) == 3
    (prediction,) = pipeline.predict(old, [clip])
    assert prediction.error is None and prediction.label in ("noise_high", "tone_low")


def test_format_1_layouts_the_upgrades_read(old: Workspace) -> None:
    """What format 1 allowed and format 2 no longer writes: an index whose per-segment ids are a copy of the
    embeddings' segment table and whose identify threshold has no statistic (the best score), a classifier
    without level or features (track embeddings)."""
    for name in ("segment_track.npy", "segment_times.npy"):
        (old.index / name).unlink()
    shutil.copy(old.embeddings / "segments.parquet", old.index / "segments.parquet")
    meta = json.loads((old.index / "meta.json").read_text())
    for name in ("segment_track.npy", "segment_times.npy"):
        del meta["files"][name]
    del meta["extra"]["identify"]["statistic"]
    (old.index / "meta.json").write_text(json.dumps(meta))
    index = IndexStore(old.index)
    assert index.ids_in_segment_table and index.identify.statistic == "best_score"
    tables = index.id_tables()
    seg = pq.read_table(old.embeddings / "segments.parquet")
    np.testing.assert_allclose(tables.segment_start, seg.column("start_s").to_numpy())

    meta = json.loads((old.classifier / "meta.json").read_text())
    for key in ("level", "features"):
        del meta["config"][key]
        del meta["config_fingerprints"][key]
    (old.classifier / "meta.json").write_text(json.dumps(meta))
    saved = SavedClassifier(old.classifier)
    assert saved.level == "track" and not saved.reads_descriptors


def test_a_newer_version_is_refused_and_a_remade_artefact_is_version_2(old: Workspace) -> None:
    meta = json.loads((old.index / "meta.json").read_text())
    meta["format_version"] = 3
    (old.index / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IncompatibleArtefactError, match="reads version 1 to 2"):
        IndexStore(old.index)

    pipeline.classify(old, ClassifyOptions(cv=2, cv_by="track", plots=False))
    assert read_meta(old.classifier, "classifier").format_version == 2
    assert SavedClassifier(old.classifier).meta.config["features"] == "descriptors"
