"""The bundled `general` model: adopted as a workspace's model (`train --pretrained`), trained on from
(`train --init`), compared with in `evaluate`; and the errors when it does not fit."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import SAMPLE_AUDIO, TINY_CHAIN_TRAIN, extract_features, run_cli

from embedtool.artefacts import read_meta
from embedtool.audio.settings import FeatureSettings
from embedtool.errors import ConfigError, IncompatibleArtefactError, MissingArtefactError
from embedtool.features.store import FeatureStore
from embedtool.model.encoder import Encoder
from embedtool.model.settings import TrainSettings
from embedtool.model.store import attach_companion, resolve_model_source
from embedtool.training.pretrained import adopt_model
from embedtool.training.trainer import train
from embedtool.workspace import Workspace


@pytest.fixture(scope="module")
def cc0_workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The bundled CC0 set (72 labelled one-shots and loops), features at the default settings."""
    ws = Workspace(tmp_path_factory.mktemp("cc0") / "ws")
    extract_features(SAMPLE_AUDIO, ws.features, labels=str(SAMPLE_AUDIO / "labels.csv"))
    return ws


def test_bundled_model_loads_and_embeds() -> None:
    encoder = Encoder.load(resolve_model_source("general"))
    assert encoder.feature_settings == FeatureSettings()  # made for the default features
    meta = read_meta(resolve_model_source("general"), "model")
    # the full budget (20 epochs of 12,800 triplets) on tens of thousands of files, one network
    assert meta.extra["steps"] * meta.config["train"]["batch_size"] >= 256_000
    assert meta.extra["train_tracks"] >= 20_000
    assert encoder.companion is None and encoder.descriptor_dim == encoder.net.descriptor_dim
    rng = np.random.default_rng(0)
    windows = rng.normal(-4.0, 2.0, size=(3, encoder.segment_frames, 64)).astype(np.float32)
    emb = encoder.embed_windows(windows)
    assert emb.shape == (3, encoder.embedding_dim) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-4)


def test_pretrained_adopts_the_model_and_the_chain_runs(cc0_workspace: Workspace) -> None:
    torch.set_num_threads(1)
    ws = str(cc0_workspace.root)
    res = run_cli("-w", ws, "-q", "train", "--pretrained", "general", "--json")
    assert res.exit_code == 0, res.output
    bundled = read_meta(resolve_model_source("general"), "model")
    meta = read_meta(cc0_workspace.model, "model")
    assert json.loads(res.output)["fingerprint"] == meta.fingerprint == bundled.fingerprint
    assert meta.extra["adopted_from"] == "general" and meta.extra["trained_on_these_features"] is False
    assert (cc0_workspace.split / "meta.json").is_file()  # classify and evaluate hold tracks out by it
    res = run_cli("-w", ws, "info", "--json")
    model_stage = next(s for s in json.loads(res.output)["stages"] if s["name"] == "model")
    assert list(model_stage["summary"])[:1] == ["adopted_from"]  # what `info` shows first
    assert run_cli("-w", ws, "-q", "embed").exit_code == 0
    res = run_cli("-w", ws, "-q", "classify", "--cv", "4", "--json")
    assert res.exit_code == 0, res.output
    # Never trained on these sounds, the bundled model still tells kick, snare, cymbal, tom, tabla, loops apart.
    assert json.loads(res.output)["macro_f1"] >= 0.6
    # evaluate leaves out the "general" baseline when it is the workspace's own model, and says so
    res = run_cli("-w", ws, "-q", "evaluate", "--no-robustness", "--cv", "4", "--name", "own", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert "general" not in report["systems"]
    assert any("bundled general model" in note for note in report["notes"])
    markdown = (cc0_workspace.reports / "own" / "report.md").read_text()
    assert "**general**" not in markdown and "**untrained**" in markdown  # describes only the systems it has


def test_pretrained_refuses_other_feature_settings(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    extract_features(SAMPLE_AUDIO / "kick", ws.features, FeatureSettings(n_mels=32))
    with pytest.raises(IncompatibleArtefactError, match="n_mels"):
        adopt_model("general", ws.features, ws.split, ws.model, TrainSettings())
    assert not ws.model.exists()  # nothing half-written
    res = run_cli("-w", ws.root, "-q", "train", "--pretrained", "general")
    assert res.exit_code == 5 and "n_mels" in res.output
    res = run_cli("-w", ws.root, "-q", "train", "--pretrained", "general", "--resume")
    assert res.exit_code == 2 and "--resume" in res.output


def test_model_sources_and_their_errors(tmp_path: Path) -> None:
    assert resolve_model_source("general").name == "general"
    with pytest.raises(ConfigError, match="bundled model"):
        resolve_model_source("no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingArtefactError, match="not a model folder"):
        resolve_model_source(str(tmp_path / "empty"))


def test_init_starts_from_the_bundled_weights(cc0_workspace: Workspace, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    bundled = Encoder.load(resolve_model_source("general"))
    # The bundled architecture, one step at a negligible learning rate: the result is the bundled weights.
    settings = replace(
        TrainSettings(), init="general", lr=1e-9, epochs=1, steps_per_epoch=1, batch_size=4, warmup_steps=0,
        val_triplets=8, device="cpu", augment=False,
    )  # fmt: skip
    report = train(cc0_workspace.features, tmp_path / "split", tmp_path / "model", settings)
    assert any("general" in note for note in report.notes)
    started = Encoder.load(tmp_path / "model")
    assert read_meta(tmp_path / "model", "model").inputs["init_model"] == bundled.fingerprint
    after = started.net.state_dict()
    for name, tensor in bundled.net.named_parameters():  # (batch-norm running statistics move with any step)
        assert torch.allclose(tensor, after[name], atol=1e-5), name
    assert torch.equal(bundled.net.input_mean, after["input_mean"])  # its input standardisation, not ours
    # Extending that run by an epoch still records which weights it first started from.
    train(cc0_workspace.features, tmp_path / "split", tmp_path / "model", replace(settings, epochs=2), resume=True)
    assert read_meta(tmp_path / "model", "model").inputs["init_model"] == bundled.fingerprint
    # Another architecture cannot start from it: the error names each differing setting.
    with pytest.raises(IncompatibleArtefactError, match="width.*embedding_dim|embedding_dim.*width"):
        train(
            cc0_workspace.features, tmp_path / "split2", tmp_path / "model2", replace(TINY_CHAIN_TRAIN, init="general")
        )


def test_a_companion_appends_its_descriptors_and_travels_with_the_model(
    cc0_workspace: Workspace, tmp_path: Path
) -> None:
    torch.set_num_threads(1)
    quick = replace(TINY_CHAIN_TRAIN, epochs=1, steps_per_epoch=1, val_triplets=0)
    features = cc0_workspace.features
    train(features, tmp_path / "split", tmp_path / "a", quick)
    train(features, tmp_path / "split", tmp_path / "b", replace(quick, width=0.0625, embedding_dim=16))
    alone, other = Encoder.load(tmp_path / "a"), Encoder.load(tmp_path / "b")
    paired = attach_companion(tmp_path / "a", str(tmp_path / "b"))
    assert paired.descriptor_dim == alone.descriptor_dim + other.descriptor_dim
    assert paired.fingerprint not in (alone.fingerprint, other.fingerprint)  # exports made before are re-made
    windows = np.random.default_rng(0).normal(-4.0, 2.0, size=(5, alone.segment_frames, 64)).astype(np.float32)
    emb_alone, desc_alone, _ = alone.embed_windows(windows, descriptors=True)
    emb_paired, desc_paired, _ = paired.embed_windows(windows, descriptors=True)
    desc_other = other.embed_windows(windows, descriptors=True)[1]
    assert np.allclose(emb_paired, emb_alone, atol=1e-6)  # search embeddings: the model's own network alone
    assert np.allclose(desc_paired, np.hstack([desc_alone, desc_other]), atol=1e-5)
    # Adopting the model copies its companion; the adopted model describes the same.
    adopted = adopt_model(str(tmp_path / "a"), features, tmp_path / "split2", tmp_path / "adopted", quick)
    assert adopted.fingerprint == paired.fingerprint and adopted.companion is not None
    assert np.allclose(adopted.embed_windows(windows, descriptors=True)[1], desc_paired, atol=1e-6)
    # Errors: a second companion, a companion that has one, one reading other windows, a lost or swapped one.
    with pytest.raises(ConfigError, match="companion already"):
        attach_companion(tmp_path / "a", str(tmp_path / "b"))
    with pytest.raises(ConfigError, match="companion itself"):
        attach_companion(tmp_path / "b", str(tmp_path / "a"))
    train(features, tmp_path / "split", tmp_path / "c", replace(quick, segment_seconds=1.0, neighbour_radius_s=2.0))
    with pytest.raises(IncompatibleArtefactError, match="segment_seconds"):
        attach_companion(tmp_path / "c", str(tmp_path / "b"))
    shutil.rmtree(tmp_path / "adopted" / "companion")
    shutil.copytree(tmp_path / "c", tmp_path / "adopted" / "companion")
    with pytest.raises(IncompatibleArtefactError, match="not the companion"):
        Encoder.load(tmp_path / "adopted")
    shutil.rmtree(tmp_path / "adopted" / "companion")
    with pytest.raises(MissingArtefactError, match="companion"):
        Encoder.load(tmp_path / "adopted")


def test_anchor_weight_keeps_training_near_the_starting_model(cc0_workspace: Workspace, tmp_path: Path) -> None:
    """train.anchor_weight pulls each segment's embedding toward the starting model's: after the same steps at a
    high learning rate, the anchored model's embeddings stay closer to the start's than the free one's."""
    torch.set_num_threads(1)
    start = replace(TINY_CHAIN_TRAIN, epochs=1, steps_per_epoch=2, val_triplets=0)
    features = cc0_workspace.features
    train(features, tmp_path / "split", tmp_path / "start", start)
    moved = replace(start, init=str(tmp_path / "start"), lr=0.05, steps_per_epoch=8, warmup_steps=0, augment=False)
    free = train(features, tmp_path / "split", tmp_path / "free", replace(moved, anchor_weight=0.0))
    anchored = train(features, tmp_path / "split", tmp_path / "anchored", replace(moved, anchor_weight=50.0))
    assert any("Pulled toward" in note and "50.0" in note for note in anchored.notes)
    assert not any("Pulled toward" in note for note in free.notes)
    store = FeatureStore(features)
    mel = np.concatenate([np.asarray(store.mel(t), dtype=np.float32) for t in store.track_ids()[:6]])

    def embed(folder: str) -> np.ndarray:
        encoder = Encoder.load(tmp_path / folder)
        return encoder.embed_track(mel, encoder.segment_frames)[1]

    reference = embed("start")
    similarity = {f: float(np.mean(np.sum(embed(f) * reference, axis=1))) for f in ("free", "anchored")}
    assert similarity["anchored"] > similarity["free"], similarity
    with pytest.raises(ConfigError, match="anchor_weight"):
        replace(start, anchor_weight=-1.0).validate()
    res = run_cli("-w", cc0_workspace.root, "train", "--anchor-weight", "-1")
    assert res.exit_code == 2 and "anchor_weight must be >= 0" in res.output
