"""Embeddings artefact and the embed stage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from factories import extract_features, make_class_corpus, write_tone

from embedtool.analysis.baselines import baseline_vector
from embedtool.artefacts import staged_dir
from embedtool.audio.settings import FeatureSettings
from embedtool.embedding.export import export_embeddings
from embedtool.embedding.options import EmbedOptions
from embedtool.embedding.pooling import (
    DESCRIPTOR_KIND,
    MFCC_PART,
    l2_normalise,
    pool_descriptors,
    pool_track,
    track_descriptor,
    track_descriptor_dim,
    window_track_descriptors,
)
from embedtool.embedding.store import EmbeddingStore, EmbeddingWriter, segment_id
from embedtool.errors import IncompatibleArtefactError, MissingArtefactError
from embedtool.features.store import FeatureStore
from embedtool.model.encoder import Encoder
from embedtool.model.settings import TrainSettings


def _unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    return l2_normalise(rng.standard_normal((n, dim)).astype(np.float32))


def test_pool_track_is_normalised_mean() -> None:
    v = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    pooled = pool_track(v)
    assert np.allclose(pooled, [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)
    with pytest.raises(ValueError):
        pool_track(np.zeros((0, 2), dtype=np.float32))


def test_pool_descriptors_weighs_windows_by_energy_and_takes_the_root() -> None:
    windows = np.array([[4.0, 0.0], [0.0, 16.0]])
    assert np.allclose(pool_descriptors(windows, [1.0, 1.0]), [np.sqrt(2.0), np.sqrt(8.0)])
    loud_first = pool_descriptors(windows, [3.0, 1.0])  # the louder window counts three times as much
    assert np.allclose(loud_first, [np.sqrt(3.0), np.sqrt(4.0)]) and loud_first.dtype == np.float32
    assert np.allclose(pool_descriptors(windows, [0.0, 0.0]), [np.sqrt(2.0), np.sqrt(8.0)])  # silence: evenly
    with pytest.raises(ValueError, match="one energy per window"):
        pool_descriptors(windows, [1.0])


def test_store_roundtrip_with_small_shards(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    dim = 8
    tracks = [("a" * 16, 5), ("b" * 16, 1), ("c" * 16, 7)]
    vectors = {tid: _unit(rng, n, dim) for tid, n in tracks}
    out = tmp_path / "emb"
    with staged_dir(out) as stage:
        writer = EmbeddingWriter(stage, dim, max_shard_bytes=4 * dim * 4)  # 4 rows per shard
        for tid, n in tracks:
            starts = np.arange(n) * 0.5
            writer.add_track(
                {"track_id": tid, "path": f"/x/{tid}.wav", "label": "L", "group": None, "duration_s": n * 0.5},
                starts,
                starts + 1.0,
                vectors[tid],
            )
        writer.finish({"hop_s": 0.5}, {"features": "f1", "model": "m1"})
    store = EmbeddingStore(out)
    assert store.dim == dim and store.model_fingerprint == "m1"
    assert len(store.meta.extra["segment_shards"]) == 4  # 13 rows in shards of 4
    seg = store.segment_vectors()
    assert seg.shape == (13, dim)
    assert np.array_equal(seg, np.concatenate([vectors[t] for t, _ in tracks]))
    rows, starts = store.segments_of("c" * 16)
    assert np.array_equal(seg[rows], vectors["c" * 16])
    assert np.allclose(starts, np.arange(7) * 0.5)
    assert store.segment_id_of(6) == segment_id("c" * 16, 0.0) == "c" * 16 + "@0"
    assert store.segment_id_of(7) == "c" * 16 + "@500"
    for tid, _ in tracks:  # one track's rows, across shard boundaries, without loading the others
        assert np.array_equal(store.track_segment_vectors(tid), vectors[tid])
    assert store.track_ids() == [t for t, _ in tracks]
    tv = store.track_vectors()
    assert tv.shape == (3, dim)
    assert np.allclose(tv[0], pool_track(vectors["a" * 16]))
    assert store.tracks[2]["n_segments"] == 7 and store.tracks[2]["row"] == 2


def test_store_missing_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(MissingArtefactError, match="embedtool embed"):
        EmbeddingStore(tmp_path / "nothing")


# --- the embed stage on real (generated) audio with a small untrained network ---------------------------------

TINY = TrainSettings.from_preset("default").replace(width=0.125, embedding_dim=16)


def _encoder(seed: int = 0) -> Encoder:
    enc = Encoder.untrained(FeatureSettings(), TINY, seed=seed)
    enc.set_input_stats(-6.0, 3.0)
    return enc


def test_export_segments_pooling_and_provenance(tmp_path: Path) -> None:
    root = make_class_corpus(tmp_path / "audio", classes=2, per_class=2, seconds=3.0)
    write_tone(root / "tone" / "short.wav", 440.0, seconds=0.4)  # shorter than one 1 s segment
    extract_features(root, tmp_path / "features")
    report = export_embeddings(tmp_path / "features", _encoder(), tmp_path / "emb", EmbedOptions())
    assert report.mode == "full" and report.tracks == 5 and report.embedded_tracks == 5
    store = EmbeddingStore(tmp_path / "emb")
    assert store.meta.inputs["model"] == "untrained-0" and store.dim == 16
    assert store.meta.config["hop_s"] == pytest.approx(0.5) and store.meta.config["segment_seconds"] == 1.0
    vectors = store.segment_vectors()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    for t in store.tracks:
        rows, starts = store.segments_of(t["track_id"])
        if t["duration_s"] < 1.0:  # one padded window
            assert len(rows) == 1 and starts[0] == 0.0
        else:  # windows every 0.5 s, the last one ending at the track's end
            assert starts[0] == 0.0 and np.all(np.diff(starts) <= 0.5 + 1e-9)
            assert store.segment_ends[rows[-1]] == pytest.approx(t["duration_s"], abs=0.03)
        assert np.allclose(store.track_vectors()[t["row"]], pool_track(vectors[rows]), atol=1e-6)
    # The same windows through the encoder directly give the same vectors (the export is faithful).
    fs = FeatureStore(tmp_path / "features")
    tid = store.tracks[0]["track_id"]
    starts, direct = _encoder().embed_track(np.asarray(fs.mel(tid), dtype=np.float32), 50)
    rows, _ = store.segments_of(tid)
    assert np.allclose(vectors[rows], direct, atol=1e-5)
    # A track's descriptor pools its windows' descriptors (every stage of the network), weighted by energy, then
    # carries the MFCC statistics of all its frames: exactly the MFCC baseline's vector.
    mel = np.asarray(fs.mel(tid), dtype=np.float32)
    _, _, window_descriptors, energy = _encoder().embed_track(mel, 50, descriptors=True)
    assert store.descriptor_dim == track_descriptor_dim(_encoder()) == window_descriptors.shape[1] + MFCC_PART
    descriptor = store.track_descriptors()[store.track(tid)["row"]]
    assert np.allclose(descriptor[:-MFCC_PART], pool_descriptors(window_descriptors, energy), atol=1e-5)
    assert np.allclose(descriptor[-MFCC_PART:], baseline_vector(mel, "mfcc"), atol=1e-4)


def test_export_is_incremental_with_the_same_model(tmp_path: Path) -> None:
    root = make_class_corpus(tmp_path / "audio", classes=2, per_class=2, seconds=2.0)
    extract_features(root, tmp_path / "features")
    first = export_embeddings(tmp_path / "features", _encoder(), tmp_path / "emb")
    before = EmbeddingStore(tmp_path / "emb")
    old_ids, old_vectors = before.segment_ids(), np.array(before.segment_vectors())
    old_descriptors = np.array(before.track_descriptors())  # read now: the folder is replaced by the next export

    again = export_embeddings(tmp_path / "features", _encoder(), tmp_path / "emb")
    assert again.mode == "unchanged" and again.embedded_tracks == 0 and again.fingerprint == first.fingerprint

    write_tone(root / "tone" / "new.wav", 330.0, seconds=2.0)
    extract_features(root, tmp_path / "features")
    grown = export_embeddings(tmp_path / "features", _encoder(), tmp_path / "emb")
    assert grown.mode == "incremental" and grown.embedded_tracks == 1 and grown.reused_tracks == 4
    after = EmbeddingStore(tmp_path / "emb")
    by_id = dict(zip(after.segment_ids(), after.segment_vectors(), strict=True))
    assert set(old_ids) < set(by_id)  # segment ids are stable across runs and additions
    assert all(np.array_equal(by_id[s], v) for s, v in zip(old_ids, old_vectors, strict=True))
    for t in before.tracks:  # reused tracks keep their descriptors
        assert np.array_equal(after.track_descriptors()[after.track(t["track_id"])["row"]], old_descriptors[t["row"]])

    (root / "tone" / "new.wav").unlink()
    removed_track = sorted(root.glob("*/*.wav"))[0]
    removed_track.unlink()
    extract_features(root, tmp_path / "features")
    shrunk = export_embeddings(tmp_path / "features", _encoder(), tmp_path / "emb")
    assert shrunk.mode == "incremental" and shrunk.removed_tracks == 2 and shrunk.tracks == 3

    # An export whose descriptors were pooled another way (an older version) is re-made whole.
    meta_path = tmp_path / "emb" / "meta.json"
    meta_path.write_text(meta_path.read_text().replace(DESCRIPTOR_KIND, "global-mean"))
    with pytest.raises(MissingArtefactError, match="outdated track descriptors .* `embedtool embed`"):
        EmbeddingStore(tmp_path / "emb").track_descriptors()
    remade = export_embeddings(tmp_path / "features", _encoder(), tmp_path / "emb")
    assert remade.mode == "full" and "outdated" in remade.reason and remade.embedded_tracks == 3
    assert EmbeddingStore(tmp_path / "emb").descriptors_current

    other = export_embeddings(tmp_path / "features", _encoder(seed=1), tmp_path / "emb")
    assert other.mode == "full" and "model changed" in other.reason and other.embedded_tracks == 3


def test_export_refuses_features_the_model_was_not_made_for(tmp_path: Path) -> None:
    root = make_class_corpus(tmp_path / "audio", classes=1, per_class=1, seconds=1.5)
    extract_features(root, tmp_path / "features", FeatureSettings(n_mels=32))
    with pytest.raises(IncompatibleArtefactError, match="n_mels"):
        export_embeddings(tmp_path / "features", _encoder(), tmp_path / "emb")
    with pytest.raises(MissingArtefactError, match="embedtool extract"):
        export_embeddings(tmp_path / "nothing", _encoder(), tmp_path / "emb")


def test_each_window_as_a_track_is_that_window_alone() -> None:
    """classify's segment level reads each window as a one-window track: the MFCCs shared across the overlapping
    windows give the same rows as each window's own track descriptor."""
    rng = np.random.default_rng(2)
    mel = (rng.standard_normal((230, 64)) * 3 - 5).astype(np.float32)
    descriptors, energy = rng.random((4, 12)).astype(np.float32), rng.random(4).astype(np.float32)
    starts = np.array([0, 50, 100, 150])  # the last window runs past the end: its frames are the 80 left
    rows = window_track_descriptors(descriptors, energy, mel, starts, 100)
    alone = [
        track_descriptor(descriptors[i : i + 1], energy[i : i + 1], mel[s : s + 100]) for i, s in enumerate(starts)
    ]
    assert rows.shape == (4, 12 + MFCC_PART)
    assert np.allclose(rows, np.stack(alone), atol=1e-5)
