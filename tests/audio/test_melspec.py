"""Log-Mel features against an independent numpy reference, the seed's framing, and streaming == whole file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from factories import tone, write_signal

from embedtool.audio.decode import decode_file
from embedtool.audio.melspec import LogMel, file_logmel
from embedtool.audio.settings import FeatureSettings
from embedtool.errors import ConfigError


def hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def reference_logmel(x: np.ndarray, s: FeatureSettings) -> np.ndarray:
    """Written from the formulas with numpy only: tf.signal.stft-style frames, HTK Mel triangles in Hz."""
    x = x.astype(np.float64)
    n_frames = 1 + (len(x) - s.win_length) // s.hop_length
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(s.win_length) / s.win_length)  # periodic Hann
    frames = np.stack([x[t * s.hop_length : t * s.hop_length + s.win_length] * window for t in range(n_frames)])
    spec = np.abs(np.fft.rfft(frames, n=s.n_fft, axis=1)) ** s.power  # zero-padded at the end to n_fft
    freqs = np.linspace(0, s.sample_rate / 2, s.n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(s.f_min), hz_to_mel(s.f_max), s.n_mels + 2))
    fb = np.zeros((len(freqs), s.n_mels))
    for m in range(s.n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (freqs - lo) / (mid - lo)
        falling = (hi - freqs) / (hi - mid)
        fb[:, m] = np.maximum(0.0, np.minimum(rising, falling))
    return np.log(spec @ fb + s.log_offset)


@pytest.mark.parametrize("preset", ["default", "thesis"])
def test_logmel_matches_independent_reference(preset: str) -> None:
    s = FeatureSettings.from_preset(preset)
    rng = np.random.default_rng(0)
    x = (0.3 * tone(440.0, 1.0, s.sample_rate, harmonics=4) + 0.05 * rng.standard_normal(s.sample_rate)).astype(
        np.float32
    )
    ours = LogMel(s)(x)
    ref = reference_logmel(x, s)
    assert ours.dtype == np.float32
    assert ours.shape == ref.shape == (1 + (len(x) - s.win_length) // s.hop_length, s.n_mels)
    # Compare where there is energy (log of ~0 amplifies rounding); everywhere else, loosely.
    loud = ref > np.log(1e-3)
    assert loud.mean() > 0.5
    np.testing.assert_allclose(ours[loud], ref[loud], atol=2e-3)
    np.testing.assert_allclose(ours, ref, atol=0.05)


def test_power_two_and_slaney_scale_also_match_reference_shapes() -> None:
    s = FeatureSettings(power=2.0)
    x = tone(1000.0, 0.5, s.sample_rate)
    np.testing.assert_allclose(LogMel(s)(x), reference_logmel(x, s), atol=5e-3)
    slaney = LogMel(FeatureSettings(mel_scale="slaney"))(x)
    assert slaney.shape == LogMel(FeatureSettings())(x).shape
    assert not np.allclose(slaney, LogMel(FeatureSettings())(x))  # the setting really changes the bands


def test_thesis_framing_gives_498_frames_per_5_seconds() -> None:
    s = FeatureSettings.from_preset("thesis")
    assert LogMel(s)(np.zeros(5 * 16000, dtype=np.float32)).shape == (498, 128)
    assert LogMel(s).n_frames(479) == 0  # shorter than one window: no frame
    assert LogMel(s)(np.zeros(479, dtype=np.float32)).shape == (0, 128)


def test_tone_energy_lands_in_the_right_band_and_output_is_deterministic() -> None:
    s = FeatureSettings()
    x = tone(1000.0, 1.0, s.sample_rate)
    logmel = LogMel(s)
    a, b = logmel(x), LogMel(s)(x)
    np.testing.assert_array_equal(a, b)
    centres = mel_to_hz(np.linspace(hz_to_mel(s.f_min), hz_to_mel(s.f_max), s.n_mels + 2))[1:-1]
    assert abs(centres[int(np.argmax(a.mean(axis=0)))] - 1000.0) < 60.0


@pytest.mark.parametrize("block_seconds", [0.21, 1.0, 30.0])
def test_streaming_file_logmel_equals_whole_file(tmp_path: Path, block_seconds: float) -> None:
    rng = np.random.default_rng(3)
    x = np.concatenate([tone(300.0, 1.5, 44100), 0.2 * rng.standard_normal(44100 * 2).astype(np.float32)])
    path = write_signal(tmp_path / "mix.flac", np.stack([x, 0.5 * x], axis=1), 44100)
    s = FeatureSettings()
    streamed, info = file_logmel(path, s, block_seconds=block_seconds)
    whole = LogMel(s)(decode_file(path, s.sample_rate).samples)
    assert streamed.shape == whole.shape == (LogMel(s).n_frames(int(3.5 * 16000)), s.n_mels)
    # Block-wise resampling sums float32 products in another order (~1e-5 per sample): equal up to that.
    loud = whole > np.log(1e-2)
    np.testing.assert_allclose(streamed[loud], whole[loud], atol=1e-3)
    np.testing.assert_allclose(np.exp(streamed), np.exp(whole), rtol=1e-3, atol=1e-4)
    assert (info.native_sample_rate, info.channels) == (44100, 2)
    assert info.duration_s == pytest.approx(3.5)


def test_file_logmel_float16_output(tmp_path: Path) -> None:
    path = write_signal(tmp_path / "t.wav", tone(500.0, 1.0, 22050), 22050)
    mel16, _ = file_logmel(path, FeatureSettings(), dtype=np.float16)
    mel32, _ = file_logmel(path, FeatureSettings())
    assert mel16.dtype == np.float16
    np.testing.assert_allclose(mel16.astype(np.float32), mel32, atol=0.02)


def test_feature_settings_refuse_a_bad_value_when_made() -> None:
    with pytest.raises(ConfigError, match="n_mels"):
        FeatureSettings(n_mels=2000)
    with pytest.raises(ConfigError, match="f_min/f_max"):
        FeatureSettings(f_max=20000.0)  # above half the 16 kHz sample rate
