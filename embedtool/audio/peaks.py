"""Spectral peaks for landmark fingerprints, from a dedicated fine spectrogram of the decoded samples.

The features' 64 Mel bands are too coarse for "which recording is this": a Mel band above 2 kHz spans hundreds
of Hz, so two recordings' peaks fall in the same band by chance and short excerpts gather chance support. Audio
fingerprinters (audfprint, Panako) read peaks from a linear spectrogram of about 15 Hz resolution instead. Here:
64 ms periodic-Hann frames every 16 ms at the features' sample rate, the bins up to 4 kHz (256 at 16 kHz),
``log(|STFT| + 1e-3)``. On the tuning corpus (music-dev, speech babble at 10 dB, then mp3 at 128 kbit/s) this
took 1 s excerpts from 57% to 72% right and accepted by the fingerprints alone, at the same impostor rate
(``bench/probe_fingerprint_spectrum.py``; decision 0012).

The peaks are computed where the samples already are: at extract time beside the log-Mel features (no second
decode), stored with them, and for every query. :class:`PeakTracker` takes the resampled blocks of a decode as
they come and holds only about a minute of spectrogram at a time; its peaks equal those of
:func:`spectral_peaks` on the whole file's spectrogram.

A peak is a maximum of its neighbourhood (``PEAK_TIME_FRAMES`` x ``PEAK_BINS``) that stands above the local
background (``BACKGROUND_FRAMES``); the most prominent ``peaks_per_second`` are kept in each second, so loud and
quiet passages are covered alike.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.ndimage import maximum_filter, uniform_filter

WINDOW_S = 0.064
HOP_S = 0.016
MAX_HZ = 4000.0
LOG_FLOOR = 1e-3  # log(|X| + floor): digital silence sits at log(floor)
PEAK_TIME_FRAMES = 9  # neighbourhood a peak must dominate: 0.14 s ...
PEAK_BINS = 31  # ... and about 480 Hz (a narrower one, 15 bins, keeps weaker peaks that noise moves)
BACKGROUND_FRAMES = 31  # the local background a peak must stand above (half a second)
MIN_PROMINENCE = 0.5  # natural-log units above the background
PEAKS_PER_SECOND = 30
CHUNK_SECONDS = 60  # spectrogram held at a time while streaming
# Anything above that changes which peaks are picked must raise audio.settings.PEAKS_VERSION.


class PeakSpectrum:
    """The fingerprint spectrogram of mono float32 samples at ``sample_rate``: float32 (frames, bins)."""

    def __init__(self, sample_rate: int):
        self.sample_rate = int(sample_rate)
        self.n_fft = max(16, round(WINDOW_S * self.sample_rate))
        self.hop = max(1, round(HOP_S * self.sample_rate))
        self.bins = max(1, min(self.n_fft // 2, math.floor(MAX_HZ * self.n_fft / self.sample_rate)))
        self.window = torch.hann_window(self.n_fft, periodic=True)

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop

    def n_frames(self, n_samples: int) -> int:
        return 0 if n_samples < self.n_fft else 1 + (n_samples - self.n_fft) // self.hop

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        frames = self.n_frames(len(samples))
        if frames == 0:
            return np.zeros((0, self.bins), np.float32)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
            spec = torch.stft(x, self.n_fft, self.hop, window=self.window, center=False, return_complex=True)
            return torch.log(spec[1 : self.bins + 1, :frames].abs() + LOG_FLOOR).T.numpy()


def spectral_peaks(
    spec: np.ndarray, frames_per_second: float, peaks_per_second: int = PEAKS_PER_SECOND
) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of a whole fingerprint spectrogram (frames, bins): their (frames, bins) as int32, sorted by frame."""
    return _peaks_in(np.asarray(spec, np.float32), 0, frames_per_second, peaks_per_second, None)


def _peaks_in(
    spec: np.ndarray, first_frame: int, fps: float, per_second: int, seconds: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of ``spec`` (whose row 0 is frame ``first_frame`` of the file) in the whole seconds ``seconds``
    (all when None); ``spec`` must reach far enough around them that the filters see what they would see on
    the whole file (``_CONTEXT`` frames, or the file's own ends)."""
    empty = np.zeros(0, np.int32), np.zeros(0, np.int32)
    if spec.shape[0] < 3:
        return empty
    local_max = maximum_filter(spec, size=(PEAK_TIME_FRAMES, PEAK_BINS), mode="nearest")
    background = uniform_filter(spec, size=(BACKGROUND_FRAMES, PEAK_BINS), mode="nearest")
    prominence = spec - background
    is_peak = (spec == local_max) & (prominence > MIN_PROMINENCE) & (spec > math.log(LOG_FLOOR) + 1.0)
    rows, bins = np.nonzero(is_peak)
    frames = rows + first_frame
    second = np.floor(frames / fps).astype(np.int64)
    if seconds is not None:
        keep = (second >= seconds[0]) & (second < seconds[1])
        rows, bins, frames, second = rows[keep], bins[keep], frames[keep], second[keep]
    if len(frames) == 0:
        return empty
    # Keep the most prominent peaks of each second: loud passages do not crowd out quiet ones.
    order = np.lexsort((-prominence[rows, bins], second))
    frames, bins, second = frames[order], bins[order], second[order]
    keep = (np.arange(len(second)) - np.searchsorted(second, second, side="left")) < per_second
    frames, bins = frames[keep], bins[keep]
    order = np.lexsort((bins, frames))
    return frames[order].astype(np.int32), bins[order].astype(np.int32)


_CONTEXT = max(PEAK_TIME_FRAMES, BACKGROUND_FRAMES)  # frames each side a filter can reach (with a margin)


class PeakTracker:
    """Peaks of a decode, block by block (``push`` each resampled block, then ``finish``): about
    ``CHUNK_SECONDS`` of spectrogram is held at a time, and the peaks equal :func:`spectral_peaks` on the whole."""

    def __init__(self, sample_rate: int, peaks_per_second: int = PEAKS_PER_SECOND):
        self.spectrum = PeakSpectrum(sample_rate)
        self.per_second = peaks_per_second
        self._carry = np.zeros(0, np.float32)  # samples not yet in a whole frame
        self._spec: list[np.ndarray] = []  # spectrogram frames held, from frame self._first on
        self._held = 0
        self._first = 0
        self._done_second = 0  # peaks are final for the seconds before this one
        self._frames: list[np.ndarray] = []
        self._bins: list[np.ndarray] = []

    def push(self, block: np.ndarray) -> None:
        buf = np.concatenate([self._carry, block]) if len(self._carry) else np.asarray(block, np.float32)
        frames = self.spectrum.n_frames(len(buf))
        if frames:
            used = (frames - 1) * self.spectrum.hop + self.spectrum.n_fft
            self._spec.append(self.spectrum(buf[:used]))
            self._held += frames
            self._carry = buf[frames * self.spectrum.hop :]
        else:
            self._carry = buf
        fps = self.spectrum.frames_per_second
        if self._held > (CHUNK_SECONDS + 2) * fps + 2 * _CONTEXT:
            self._emit(final=False)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """All peaks: (frames, bins) int32, sorted by frame."""
        self._emit(final=True)
        if not self._frames:
            return np.zeros(0, np.int32), np.zeros(0, np.int32)
        return np.concatenate(self._frames), np.concatenate(self._bins)

    def _emit(self, final: bool) -> None:
        if not self._spec:
            return
        spec = np.concatenate(self._spec) if len(self._spec) > 1 else self._spec[0]
        fps = self.spectrum.frames_per_second
        end_frame = self._first + len(spec)
        # Seconds whose frames, and the filters' reach around them, lie in what is held (all, at the end).
        last_second = None if final else math.floor((end_frame - _CONTEXT) / fps) - 1
        if last_second is not None and last_second <= self._done_second:
            return
        seconds = (self._done_second, last_second if last_second is not None else 1 << 40)
        # (at the file's start the filters see its edge, as on the whole file; elsewhere held context)
        f, b = _peaks_in(spec, self._first, fps, self.per_second, seconds)
        self._frames.append(f)
        self._bins.append(b)
        if final:
            self._spec = []
            return
        self._done_second = last_second
        keep_from = max(self._first, math.ceil(self._done_second * fps) - _CONTEXT)
        self._spec = [spec[keep_from - self._first :]]
        self._first = keep_from
