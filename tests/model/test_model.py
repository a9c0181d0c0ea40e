"""The ResNet18 encoder (architecture, parameter count, Encoder API) and the triplet losses."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import write_config

from embedtool.audio.settings import FeatureSettings
from embedtool.errors import ConfigError, IncompatibleArtefactError, MissingArtefactError
from embedtool.features.windows import crop, window_starts
from embedtool.model.encoder import Encoder
from embedtool.model.network import EmbeddingNet
from embedtool.model.settings import TrainSettings
from embedtool.training.losses import triplet_loss

# torchvision's resnet18 conv/bn trunk with a 1-channel first conv: 11,689,512 parameters in total, minus the
# 1000-way fc (512*1000 + 1000) and minus 2 of the first conv's 3 input channels (2 * 64*7*7).
RESNET18_TRUNK_1CH = 11_689_512 - (512 * 1000 + 1000) - 2 * 64 * 7 * 7


def test_resnet18_parameter_count_matches_torchvision() -> None:
    assert RESNET18_TRUNK_1CH == 11_170_240
    net = EmbeddingNet("imagenet", width=1.0, embedding_dim=128)
    assert net.trunk_parameters() == RESNET18_TRUNK_1CH
    assert sum(p.numel() for p in net.head.parameters()) == 512 * 128 + 128
    t2v = EmbeddingNet("tile2vec", width=1.0, embedding_dim=128)
    assert t2v.trunk_parameters() == RESNET18_TRUNK_1CH - 64 * 7 * 7 + 64 * 3 * 3  # 3x3 stem conv
    # BasicBlocks [2, 2, 2, 2]
    assert [len(layer) for layer in net.layers] == [2, 2, 2, 2]
    small = EmbeddingNet("imagenet", width=0.25, embedding_dim=32)
    assert small.head.in_features == 128 and small.trunk_parameters() < RESNET18_TRUNK_1CH / 12


@pytest.mark.parametrize("stem", ["imagenet", "tile2vec"])
def test_network_shapes(stem: str) -> None:
    torch.manual_seed(0)
    net = EmbeddingNet(stem, width=0.125, embedding_dim=24, dropout=0.5).eval()
    for frames, mels in ((50, 64), (17, 40), (500, 128)):
        out = net(torch.randn(3, frames, mels))
        assert out.shape == (3, 24) and torch.isfinite(out).all()
    assert net(torch.randn(2, 1, 50, 64)).shape == (2, 24)


def test_untrained_encoder_embeds_windows_and_tracks() -> None:
    fs = FeatureSettings()
    ts = TrainSettings(width=0.125, embedding_dim=16, segment_seconds=0.3)
    enc = Encoder.untrained(fs, ts, seed=3)
    assert enc.segment_frames == 30 and enc.embedding_dim == 16 and enc.fingerprint == "untrained-3"
    assert enc.config["train"]["width"] == 0.125 and enc.config["features"]["n_mels"] == 64
    rng = np.random.default_rng(0)
    windows = rng.normal(-4, 2, (10, 30, 64)).astype(np.float32)
    emb = enc.embed_windows(windows)
    assert emb.shape == (10, 16) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    enc.batch_size = 3  # batching must not change results (eval mode: no dropout, frozen BN)
    assert np.allclose(enc.embed_windows(windows), emb, atol=1e-5)
    mel = rng.normal(-4, 2, (95, 64)).astype(np.float16)
    starts, track_emb = enc.embed_track(mel, hop_frames=20)
    assert starts.tolist() == window_starts(95, 30, 20).tolist() == [0, 20, 40, 60, 65]
    expected = enc.embed_windows(np.stack([crop(mel, int(s), 30, enc.pad_value) for s in starts]))
    assert np.allclose(track_emb, expected, atol=1e-5)
    # Descriptors: every stage's channels (8+16+32+64 at width 0.125) pooled over time into 2 frequency bands,
    # from the same forward pass; one energy per window.
    emb_again, desc, energy = enc.embed_windows(windows, descriptors=True)
    assert enc.descriptor_dim == 240 and desc.shape == (10, 240) and np.allclose(emb_again, emb, atol=1e-6)
    assert np.all(desc >= 0)  # averages of ReLU outputs
    assert energy.shape == (10,) and np.all(energy > 0)
    louder = enc.embed_windows(windows + np.float32(np.log(2.0)), descriptors=True)[2]  # +6 dB: 4x the power
    assert np.allclose(louder, 4 * energy, rtol=1e-3)
    _, _, track_desc, track_energy = enc.embed_track(mel, hop_frames=20, descriptors=True)
    track_windows = np.stack([crop(mel, int(s), 30, enc.pad_value) for s in starts])
    _, expected_desc, expected_energy = enc.embed_windows(track_windows, descriptors=True)
    assert np.allclose(track_desc, expected_desc, atol=1e-5) and np.allclose(track_energy, expected_energy)
    short_starts, short_emb = enc.embed_track(mel[:7], hop_frames=20)
    assert short_starts.tolist() == [0] and short_emb.shape == (1, 16)
    with pytest.raises(ValueError, match="expected windows"):
        enc.embed_windows(windows[:, :20])
    same_seed = Encoder.untrained(fs, ts, seed=3).embed_windows(windows)
    assert np.allclose(same_seed, emb, atol=1e-6)


def test_check_features_names_the_difference() -> None:
    enc = Encoder.untrained(FeatureSettings(), TrainSettings(width=0.125, embedding_dim=8))
    enc.check_features(FeatureSettings())
    with pytest.raises(IncompatibleArtefactError, match="n_mels: 64 != 128"):
        enc.check_features(replace(FeatureSettings(), n_mels=128))
    with pytest.raises(IncompatibleArtefactError, match="sample_rate"):
        enc.check_features(replace(FeatureSettings(), sample_rate=22050))


def test_encoder_load_refuses_missing_and_mismatched_artefacts(tmp_path: Path) -> None:
    with pytest.raises(MissingArtefactError, match="embedtool train"):
        Encoder.load(tmp_path / "nothing")
    from embedtool.artefacts import write_meta
    from embedtool.config import settings_dict

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    ts = TrainSettings(width=0.125, embedding_dim=8)
    config = {"train": settings_dict(ts), "features": settings_dict(FeatureSettings())}
    write_meta(model_dir, "model", 1, config, fingerprint="abc")
    with pytest.raises(MissingArtefactError, match="model.pt"):
        Encoder.load(model_dir)
    other = EmbeddingNet("imagenet", width=0.25, embedding_dim=8)  # another width than meta.json says
    torch.save(other.state_dict(), model_dir / "model.pt")
    with pytest.raises(IncompatibleArtefactError, match="do not fit"):
        Encoder.load(model_dir)
    good = EmbeddingNet("imagenet", width=0.125, embedding_dim=8)
    torch.save(good.state_dict(), model_dir / "model.pt")
    enc = Encoder.load(model_dir)
    assert enc.fingerprint == "abc" and enc.embedding_dim == 8 and enc.net.level_norm == ts.level_norm
    # A model saved before level_norm existed keeps the standardisation it was trained with.
    del config["train"]["level_norm"]
    write_meta(model_dir, "model", 1, config, fingerprint="abc")
    assert Encoder.load(model_dir).net.level_norm == "off"
    (model_dir / "model.pt").write_bytes(b"garbage")  # cut short: caught by its size, before torch reads it
    with pytest.raises(IncompatibleArtefactError, match="damaged: .*model.pt is 7 bytes"):
        Encoder.load(model_dir)
    write_meta(model_dir, "model", 1, config, fingerprint="abc")  # garbage recorded as written: torch refuses it
    with pytest.raises(IncompatibleArtefactError, match="Cannot read .*model.pt"):
        Encoder.load(model_dir)
    meta = json.loads((model_dir / "meta.json").read_text())
    meta["kind"] = "index"
    (model_dir / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IncompatibleArtefactError, match="not 'model'"):
        Encoder.load(model_dir)


def test_presets_and_validation() -> None:
    thesis = TrainSettings.from_preset("thesis")
    assert (thesis.segment_seconds, thesis.neighbour_radius_s, thesis.embedding_dim) == (5.0, 5.0, 128)
    assert (thesis.lr, thesis.lr_decay, thesis.lr_decay_steps, thesis.dropout) == (1e-5, 0.95, 7500, 0.5)
    assert thesis.stem == "imagenet" and thesis.width == 1.0 and not thesis.augment and thesis.epochs == 20
    t2v = TrainSettings.from_preset("tile2vec")
    assert t2v.stem == "tile2vec" and t2v.loss == "tile2vec" and t2v.norm_penalty > 0
    assert TrainSettings.from_preset("default").augment
    with pytest.raises(ConfigError, match="Unknown train preset"):
        TrainSettings.from_preset("huge")
    with pytest.raises(ConfigError, match="batch_size"):
        TrainSettings(batch_size=1).validate()
    with pytest.raises(ConfigError, match="val_fraction"):
        TrainSettings(val_fraction=1.0).validate()


def test_train_settings_layer_preset_file_and_flags(tmp_path: Path) -> None:
    from embedtool.config import load_project_config

    write_config(tmp_path, "preset: thesis\ntrain: {epochs: 3, mining: hard}\n")
    config = load_project_config(search_dir=tmp_path)
    s = config.settings("train", {"lr": 0.01, "epochs": None})
    assert s.segment_seconds == 5.0 and s.epochs == 3 and s.mining == "hard" and s.lr == 0.01
    with pytest.raises(ConfigError, match="mining"):
        config.settings("train", {"mining": "extreme"})


# --- losses -------------------------------------------------------------------------------------------------


def test_thesis_loss_is_mean_over_active_triplets() -> None:
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    n = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 2.0]])  # n normalised to (0, 1)
    loss, stats = triplet_loss(a, p, n, "thesis", margin=1.0)
    # squared distances on the unit sphere: d_ap = [0, 2, 0], d_an = [4, 0, 2] -> hinge [0, 3, 0]
    assert loss.item() == pytest.approx(3.0)  # one active triplet
    assert stats["triplet_accuracy"] == pytest.approx(2 / 3) and stats["active_fraction"] == pytest.approx(1 / 3)
    zero, _ = triplet_loss(a[:1], p[:1], n[:1], "thesis", margin=1.0)
    assert zero.item() == 0.0


def test_tile2vec_loss_uses_plain_distances_and_a_norm_penalty() -> None:
    a = torch.tensor([[3.0, 0.0]])
    p = torch.tensor([[0.0, 4.0]])  # d_ap = 5
    n = torch.tensor([[3.0, 1.0]])  # d_an = 1
    loss, _ = triplet_loss(a, p, n, "tile2vec", margin=2.0, norm_penalty=0.1)
    norms = 3.0 + 4.0 + 10**0.5
    assert loss.item() == pytest.approx(5 - 1 + 2 + 0.1 * norms, rel=1e-5)


def test_mining_picks_in_batch_negatives_from_other_tracks() -> None:
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.9, 0.1], [0.1, 0.9]])
    n = torch.tensor([[-1.0, 0.0], [0.0, -1.0]])  # easy drawn negatives
    tracks_a, tracks_n = torch.tensor([0, 1]), torch.tensor([2, 3])
    easy, _ = triplet_loss(a, p, n, "thesis", 2.0, mining="none", anchor_track=tracks_a, negative_track=tracks_n)
    hard, _ = triplet_loss(a, p, n, "thesis", 2.0, mining="hard", anchor_track=tracks_a, negative_track=tracks_n)
    assert easy.item() == 0.0
    assert hard.item() > 0  # anchor 0's hardest negative is track 1's positive (0.1, 0.9)
    # when the batch's other segments come from the anchor's own track they are never used as negatives
    same, _ = triplet_loss(
        a, p, n, "thesis", 2.0, mining="hard", anchor_track=torch.tensor([0, 0]), negative_track=tracks_n
    )
    assert same.item() < hard.item()  # only the other negatives (d = 2, 4) remain: a far weaker hinge
    semi, _ = triplet_loss(a, p, n, "thesis", 2.0, mining="semi-hard", anchor_track=tracks_a, negative_track=tracks_n)
    assert 0 < semi.item() <= hard.item()
    a.requires_grad_(True)
    loss, _ = triplet_loss(a, p, n, "thesis", 2.0, mining="semi-hard", anchor_track=tracks_a, negative_track=tracks_n)
    loss.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all() and a.grad.abs().sum() > 0


def test_level_norm_makes_embeddings_ignore_a_gain_change() -> None:
    """A gain change of g dB adds ln(10**(g/20)) to every log-Mel bin of a window its sound fills."""
    fs = FeatureSettings()
    windows = np.random.default_rng(2).normal(-4, 2, (6, 30, 64)).astype(np.float32)
    quieter = windows + np.float32(np.log(10 ** (-12 / 20)))
    for level_norm, invariant in (("mean", True), ("peak", True), ("off", False)):
        ts = TrainSettings(width=0.125, embedding_dim=16, segment_seconds=0.3, level_norm=level_norm)
        enc = Encoder.untrained(fs, ts, seed=0)
        enc.set_input_stats(-4.0, 2.0)
        emb, desc, _ = enc.embed_windows(windows, descriptors=True)
        emb_q, desc_q, _ = enc.embed_windows(quieter, descriptors=True)
        assert np.allclose(emb, emb_q, atol=1e-4) == invariant
        assert np.allclose(desc, desc_q, atol=1e-4) == invariant
    assert TrainSettings.from_preset("default").level_norm == "off"  # measured: noisy excerpts pay for it
