"""The fingerprint peaks (audio.peaks) are computed faster than with torch.stft and scipy's filters, and are the same
numbers: the spectrogram bit for bit, the neighbourhood maxima and backgrounds exactly, and so the same peaks as the
straightforward picking (written out here as it was first made), also streamed block by block."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import maximum_filter, uniform_filter

from embedtool.audio import peaks as fine
from embedtool.audio.peaks import PeakSpectrum, PeakTracker, spectral_peaks

SR = 16000


def music(seconds: float, seed: int) -> np.ndarray:
    """Struck notes with harmonics over a quiet noise bed, and a second of digital silence in the middle."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * SR), np.float32)
    t = 0
    while t < len(out):
        n = int(rng.uniform(0.05, 0.4) * SR)
        tt = np.arange(min(n, len(out) - t)) / SR
        f0 = float(rng.uniform(80, 3000))
        note = sum(np.sin(2 * np.pi * f0 * h * tt) / h for h in (1, 2, 3, 5)) * np.exp(-tt * rng.uniform(2, 15))
        out[t : t + len(tt)] += note.astype(np.float32) * float(rng.uniform(0.05, 1.0))
        t += n
    out += rng.normal(0, 0.003, len(out)).astype(np.float32)
    out[len(out) // 2 : len(out) // 2 + SR] = 0.0
    return out / np.abs(out).max()


def reference_spectrum(x: np.ndarray) -> np.ndarray:
    """The spectrogram as torch.stft gives it (frames, bins)."""
    s = PeakSpectrum(SR)
    frames = s.n_frames(len(x))
    spec = torch.stft(torch.from_numpy(x), s.n_fft, s.hop, window=s.window, center=False, return_complex=True)
    return torch.log(spec[1 : s.bins + 1, :frames].abs() + fine.LOG_FLOOR).T.numpy()


def reference_peaks(spec: np.ndarray, fps: float, per_second: int = fine.PEAKS_PER_SECOND) -> tuple[np.ndarray, ...]:
    """The picking with scipy's filters over the whole (frames, bins) spectrogram."""
    local_max = maximum_filter(spec, size=(fine.PEAK_TIME_FRAMES, fine.PEAK_BINS), mode="nearest")
    background = uniform_filter(spec, size=(fine.BACKGROUND_FRAMES, fine.PEAK_BINS), mode="nearest")
    prominence = spec - background
    rows, bins = np.nonzero(
        (spec == local_max) & (prominence > fine.MIN_PROMINENCE) & (spec > math.log(fine.LOG_FLOOR) + 1.0)
    )
    second = np.floor(rows / fps).astype(np.int64)
    order = np.lexsort((-prominence[rows, bins], second))
    rows, bins, second = rows[order], bins[order], second[order]
    keep = (np.arange(len(second)) - np.searchsorted(second, second, side="left")) < per_second
    rows, bins = rows[keep], bins[keep]
    order = np.lexsort((bins, rows))
    return rows[order].astype(np.int32), bins[order].astype(np.int32)


@pytest.mark.parametrize("seconds", [0.07, 1.0, 9.3])
def test_the_spectrogram_is_torch_stfts_bit_for_bit(seconds: float) -> None:
    x = music(seconds, 1)
    ours = PeakSpectrum(SR)(x)
    assert ours.shape == reference_spectrum(x).shape and ours.shape[0] > 0
    np.testing.assert_array_equal(ours, reference_spectrum(x))
    assert PeakSpectrum(SR)(x[:100]).shape == (0, PeakSpectrum(SR).bins)  # shorter than a frame


def test_neighbourhood_maxima_and_backgrounds_are_scipys_exactly() -> None:
    spec = reference_spectrum(music(6.0, 2))
    by_bin = np.ascontiguousarray(spec.T)
    expected = maximum_filter(spec, size=(fine.PEAK_TIME_FRAMES, fine.PEAK_BINS), mode="nearest")
    np.testing.assert_array_equal(fine._local_max(by_bin), expected.T)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, spec.shape[0], 500)
    bins = np.concatenate([rng.integers(0, spec.shape[1], 494), [0, 1, 15, spec.shape[1] - 1, spec.shape[1] - 16, 7]])
    rows[:6] = [0, 1, spec.shape[0] - 1, spec.shape[0] - 2, 15, 16]  # the edges, where "nearest" repeats values
    background = uniform_filter(spec, size=(fine.BACKGROUND_FRAMES, fine.PEAK_BINS), mode="nearest")
    np.testing.assert_array_equal(fine._background_at(by_bin, rows, bins), background[rows, bins])


@pytest.mark.parametrize("seed", [3, 4])
def test_the_peaks_are_the_straightforward_pickings(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    x = music(23.0, seed)
    spectrum = PeakSpectrum(SR)
    expected = reference_peaks(reference_spectrum(x), spectrum.frames_per_second)
    assert len(expected[0]) > 300
    whole = spectral_peaks(spectrum(x), spectrum.frames_per_second)
    np.testing.assert_array_equal(whole[0], expected[0])
    np.testing.assert_array_equal(whole[1], expected[1])
    monkeypatch.setattr(fine, "CHUNK_SECONDS", 4)  # several chunks held and emitted
    tracker = PeakTracker(SR)
    for at in range(0, len(x), 7919):  # blocks that cut frames anywhere
        tracker.push(x[at : at + 7919])
    streamed = tracker.finish()
    np.testing.assert_array_equal(streamed[0], expected[0])
    np.testing.assert_array_equal(streamed[1], expected[1])
