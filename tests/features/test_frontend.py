"""One audio front end: a library file queried (as a file, as samples, or by classify QUERY) goes through the same
numbers as when it was extracted."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from embedtool import pipeline
from embedtool.analysis.options import ClassifyOptions
from embedtool.audio.decode import decode_file
from embedtool.audio.settings import FeatureSettings
from embedtool.embedding.store import EmbeddingStore
from embedtool.features.frontend import FEATURE_DTYPE, featurise_file, featurise_samples
from embedtool.features.store import FeatureStore
from embedtool.workspace import Workspace


@pytest.fixture(scope="module")
def library(sample_audio_dir_module: Path, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Two labelled folders of the bundled audio, extracted, with the bundled model adopted and embedded."""
    root = tmp_path_factory.mktemp("frontend")
    audio = root / "audio"
    for label in ("kick", "snare", "loop"):
        shutil.copytree(sample_audio_dir_module / label, audio / label)
    ws = Workspace(root / "ws")
    pipeline.extract(ws, [audio])
    pipeline.adopt(ws, "general")
    pipeline.embed(ws)
    return ws


def test_a_library_file_featurised_again_equals_its_stored_features_bit_for_bit(library: Workspace) -> None:
    store = FeatureStore(library.features)
    for track in store.tracks[:6]:
        again, _ = featurise_file(track["path"], store.settings)
        stored = store.mel(track["track_id"])
        assert again.dtype == stored.dtype == FEATURE_DTYPE
        assert again.tobytes() == np.ascontiguousarray(stored).tobytes(), track["path"]


def test_samples_at_the_native_rate_go_through_the_same_resampler_as_files(library: Workspace) -> None:
    store = FeatureStore(library.features)
    track = next(t for t in store.tracks if "loop" in t["path"])
    native = decode_file(track["path"], 44100)  # the bundled files are 44.1 kHz: no resampling in the decode
    assert native.native_sample_rate == 44100
    from_samples = featurise_samples(native.samples, 44100, store.settings)
    stored = np.asarray(store.mel(track["track_id"]), dtype=np.float32)
    assert from_samples.shape == stored.shape
    # Blocks vs one piece: the same resampler and log-Mel, equal up to float16 rounding of a few bins.
    np.testing.assert_allclose(from_samples.astype(np.float32), stored, atol=0.02)


def test_classify_query_on_a_library_file_reads_the_descriptor_the_export_made(library: Workspace) -> None:
    result = pipeline.classify(library, ClassifyOptions(C=1.0, plots=False))
    assert result is not None
    from embedtool.analysis.classifier_store import SavedClassifier

    saved = SavedClassifier(library.classifier)
    embeddings = EmbeddingStore(library.embeddings)
    tracks = embeddings.tracks[:4]
    predictions = pipeline.predict(library, [Path(t["path"]) for t in tracks])
    stored = np.asarray(embeddings.track_descriptors())
    for track, prediction in zip(tracks, predictions, strict=True):
        expected = saved.classifier.predict_proba(stored[track["row"]][None, :])[0]
        got = np.array([prediction.probabilities[c] for c in saved.classifier.classes])
        np.testing.assert_allclose(got, expected, atol=1e-4, err_msg=track["path"])


def test_featurise_samples_refuses_non_finite_audio() -> None:
    from embedtool.errors import InputError

    samples = np.zeros(16000, dtype=np.float32)
    samples[100] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        featurise_samples(samples, 16000, FeatureSettings())
