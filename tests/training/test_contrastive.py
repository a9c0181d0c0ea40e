"""The contrastive objective (NT-Xent on temporal-proximity pairs) and the room / band-limit augmentations."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import SEPARATING

from embedtool.audio.settings import FeatureSettings
from embedtool.errors import ConfigError
from embedtool.model.settings import TrainSettings
from embedtool.training.augment import Augmenter, mel_band_centres_hz
from embedtool.training.losses import nt_xent_loss, training_loss
from embedtool.training.trainer import train

ONLY = dict(aug_noise_prob=0.0, aug_mask_prob=0.0, aug_gain_db=0.0, aug_eq_db=0.0)


def _pairs(b: int = 8, dim: int = 16, spread: float = 0.01) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(b, dim, generator=g)
    return a, a + spread * torch.randn(b, dim, generator=g), torch.randn(b, dim, generator=g)


def test_nt_xent_is_small_for_matching_pairs_and_large_for_random_ones() -> None:
    a, p, n = _pairs()
    tracks, other = torch.arange(8), torch.arange(8) + 100
    matched, stats = nt_xent_loss(a, p, n, tracks, other)
    shuffled, shuffled_stats = nt_xent_loss(a, p[torch.randperm(8, generator=torch.Generator().manual_seed(1))], n,
                                            tracks, other)  # fmt: skip
    assert matched < 0.05 and stats["active_fraction"] == 1.0 and stats["triplet_accuracy"] == 1.0
    assert shuffled > 2.0 and shuffled_stats["active_fraction"] < 0.5


def test_nt_xent_leaves_out_same_track_candidates() -> None:
    """A drawn negative from the anchor's own track is near it by construction, not a negative: one identical
    to anchor 0 costs nothing when it is marked as track 0, and a clear amount when it is marked as another."""
    a, p, n = _pairs()
    tracks = torch.arange(8)
    n2 = n.clone()
    n2[3] = a[0]
    base, _ = nt_xent_loss(a, p, n, tracks, torch.arange(8) + 100)
    own_track = torch.arange(8) + 100
    own_track[3] = 0
    masked, _ = nt_xent_loss(a, p, n2, tracks, own_track)
    unmasked, _ = nt_xent_loss(a, p, n2, tracks, torch.arange(8) + 100)
    assert abs(float(masked) - float(base)) < 0.01
    assert float(unmasked) - float(base) > 0.05


def test_training_loss_dispatches_and_gives_gradients() -> None:
    a, p, n = (t.requires_grad_() for t in _pairs(spread=1.0))
    tracks, other = torch.arange(8), torch.arange(8) + 100
    loss, _ = training_loss(a, p, n, TrainSettings(loss="ntxent", temperature=0.2), tracks, other)
    loss.backward()
    assert a.grad is not None and float(a.grad.abs().sum()) > 0
    triplet, stats = training_loss(a, p, n, TrainSettings(), tracks, other, mining="none")
    assert "active_fraction" in stats and float(triplet.detach()) >= 0
    with pytest.raises(ConfigError, match="temperature"):
        TrainSettings(loss="ntxent", temperature=0.0).validate()


def test_reverb_adds_a_decaying_tail_after_an_onset() -> None:
    aug = Augmenter(TrainSettings(aug_reverb_prob=1.0, aug_reverb_s=1.0, **ONLY), 1e-6, 1.0)
    dry = np.full((100, 64), 1e-3)
    dry[10:20] = 1.0  # a loud burst, then near-silence
    wet = aug.reverb(dry, np.random.default_rng(0))
    assert np.isfinite(wet).all() and np.all(wet >= dry)
    tail = wet[20:].mean(axis=1)
    assert tail[0] > 10 * dry[25, 0] and np.all(np.diff(tail[:30]) <= 1e-12)  # it rings on, then decays
    assert wet[:10].max() < 2 * dry[:10].max() + 1e-2  # nothing before the burst but the settled floor
    # the treble dies out sooner than the bass
    assert wet[40, -1] < wet[40, 0]


def test_band_limits_cut_outside_the_pass_band() -> None:
    fs = FeatureSettings()
    centres = mel_band_centres_hz(fs)
    assert centres[0] > fs.f_min and centres[-1] < fs.f_max and np.all(np.diff(centres) > 0)
    aug = Augmenter(TrainSettings(aug_bandlimit_prob=1.0, **ONLY), 1e-6, 1.0, fs)
    rng = np.random.default_rng(3)
    curves = np.stack([aug.band_limit_db(rng) for _ in range(60)])
    mid = (centres > 1000) & (centres < 2500)
    assert np.all(curves <= 0) and curves.min() >= -60.0
    assert np.allclose(curves[:, mid], 0.0)  # every kind passes the speech band's middle
    assert curves[:, -1].mean() < -12 and (curves[:, -1] < -3).mean() > 0.6  # 7.7 kHz: cut by most
    x = np.random.default_rng(1).normal(-2, 1, (50, 64)).astype(np.float32)
    y = aug(x, np.random.default_rng(4))
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all() and not np.allclose(x, y)


def test_contrastive_preset_trains_a_model_that_separates_classes(class_features: Path, tmp_path: Path) -> None:
    preset = TrainSettings.from_preset("contrastive")
    assert preset.loss == "ntxent" and preset.aug_reverb_prob > 0 and preset.aug_bandlimit_prob > 0
    settings = replace(
        SEPARATING,
        loss="ntxent",
        mining="none",
        temperature=preset.temperature,
        aug_reverb_prob=preset.aug_reverb_prob,
        aug_bandlimit_prob=preset.aug_bandlimit_prob,
    )
    report = train(class_features, tmp_path / "split", tmp_path / "model", settings)
    assert report.steps == 75
    assert report.history[-1]["val_recall_at_1"] >= 0.8
    assert report.history[-1]["val_effective_rank"] > 2.0
    assert report.history[-1]["train_loss"] < report.history[0]["train_loss"]
