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
from scipy.ndimage import uniform_filter1d

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
FFT_FRAMES = 128  # frames transformed at a time (about 0.5 MB of spectrum)
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
        return self.by_bin(samples).T

    def by_bin(self, samples: np.ndarray) -> np.ndarray:
        """The spectrogram as (bins, frames), each bin's frames contiguous: the picking filters mostly along time."""
        frames = self.n_frames(len(samples))
        out = np.empty((self.bins, frames), np.float32)
        if frames == 0:
            return out
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
            windows = x.unfold(0, self.n_fft, self.hop)[:frames]  # a view: frame t starts at t * hop
            dest = torch.from_numpy(out)
            # What torch.stft(center=False) computes, bit for bit, but a few frames at a time (they stay in the
            # cache) and written straight into place.
            for at in range(0, frames, FFT_FRAMES):
                spec = torch.view_as_real(torch.fft.rfft(windows[at : at + FFT_FRAMES] * self.window, dim=-1))
                part = spec[:, 1 : self.bins + 1]
                # |X| (torch's complex abs is this hypot, bit for bit, and slower)
                torch.hypot(part[..., 0], part[..., 1], out=dest[:, at : at + FFT_FRAMES].T)
            dest.add_(LOG_FLOOR).log_()
        return out


def spectral_peaks(
    spec: np.ndarray, frames_per_second: float, peaks_per_second: int = PEAKS_PER_SECOND
) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of a whole fingerprint spectrogram (frames, bins): their (frames, bins) as int32, sorted by frame."""
    by_bin = np.ascontiguousarray(np.asarray(spec, np.float32).T)
    return _peaks_in(by_bin, 0, frames_per_second, peaks_per_second, None)


def _peaks_in(
    spec: np.ndarray, first_frame: int, fps: float, per_second: int, seconds: tuple[int, int] | None
) -> tuple[np.ndarray, np.ndarray]:
    """Peaks of ``spec`` (bins, frames), whose column 0 is frame ``first_frame`` of the file, in the whole seconds
    ``seconds`` (all when None); ``spec`` must reach far enough around them that the filters see what they would
    see on the whole file (``_CONTEXT`` frames, or the file's own ends)."""
    empty = np.zeros(0, np.int32), np.zeros(0, np.int32)
    if spec.shape[1] < 3:
        return empty
    # The background is needed only where a peak can be: at the neighbourhood's maxima above the floor (a few
    # in a thousand cells).
    bins, rows = np.divmod(np.flatnonzero(spec == _local_max(spec)), spec.shape[1])
    order = np.lexsort((bins, rows))  # frame by frame, as the picking has always met them (ties keep this order)
    bins, rows = bins[order], rows[order]
    above = spec[bins, rows] > math.log(LOG_FLOOR) + 1.0
    bins, rows = bins[above], rows[above]
    frames = rows + first_frame
    second = np.floor(frames / fps).astype(np.int64)
    if seconds is not None:
        keep = (second >= seconds[0]) & (second < seconds[1])
        rows, bins, frames, second = rows[keep], bins[keep], frames[keep], second[keep]
    prominence = spec[bins, rows] - _background_at(spec, rows, bins)
    strong = prominence > MIN_PROMINENCE
    bins, frames, second, prominence = bins[strong], frames[strong], second[strong], prominence[strong]
    if len(frames) == 0:
        return empty
    # Keep the most prominent peaks of each second: loud passages do not crowd out quiet ones.
    order = np.lexsort((-prominence, second))
    frames, bins, second = frames[order], bins[order], second[order]
    keep = (np.arange(len(second)) - np.searchsorted(second, second, side="left")) < per_second
    frames, bins = frames[keep], bins[keep]
    order = np.lexsort((bins, frames))
    return frames[order].astype(np.int32), bins[order].astype(np.int32)


_CONTEXT = max(PEAK_TIME_FRAMES, BACKGROUND_FRAMES)  # frames each side a filter can reach (with a margin)


def _running_max(padded: np.ndarray, size: int, axis: int) -> np.ndarray:
    """The maximum of ``size`` consecutive values along ``axis`` starting at each index (length n - size + 1):
    maxima of 2, 4, 8, ... values, each from two of the previous, and the last from two overlapping ones. Two
    buffers take turns (a new array per step costs as much as the step). ``padded`` is overwritten."""
    source, target = torch.from_numpy(padded), torch.empty(padded.shape)
    n = padded.shape[axis]
    width = 1
    while width < size:
        step = min(width, size - width)  # the last step: two windows of `width` overlapping to make `size`
        torch.maximum(
            source.narrow(axis, 0, n - step), source.narrow(axis, step, n - step), out=target.narrow(axis, 0, n - step)
        )
        n -= step
        width += step
        source, target = target, source
    return source.narrow(axis, 0, n).numpy()


def _local_max(spec: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.maximum_filter`` of a (bins, frames) spectrogram over ``PEAK_BINS`` x ``PEAK_TIME_FRAMES``
    with mode "nearest", exactly (a maximum is exact in any order), in a fraction of its time. Repeating the edge
    values, as "nearest" does, leaves a maximum as it is over the part of the neighbourhood inside, so the edges
    are padded with -inf."""
    t_half, b_half = PEAK_TIME_FRAMES // 2, PEAK_BINS // 2
    bins, frames = spec.shape
    padded = np.full((bins + 2 * b_half, frames), -np.inf, np.float32)
    padded[b_half : b_half + bins] = spec
    across = _running_max(padded, PEAK_BINS, axis=0)
    padded = np.full((bins, frames + 2 * t_half), -np.inf, np.float32)
    padded[:, t_half : t_half + frames] = across
    return _running_max(padded, PEAK_TIME_FRAMES, axis=1)


def _background_at(spec: np.ndarray, rows: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """``scipy.ndimage.uniform_filter`` of a (bins, frames) spectrogram over ``PEAK_BINS`` x ``BACKGROUND_FRAMES``
    with mode "nearest", at the cells (bins, rows: frames) only. The filter goes axis by axis, time first: that
    pass is made whole (it is the filter's own pass), the one over the bins only at the cells, as the mean in
    float64 of the same float32 values with the edge bins repeated (the filter's running mean is float64 too, so
    both round to the same float32)."""
    if len(rows) == 0:
        return np.zeros(0, np.float32)
    over_time = uniform_filter1d(spec, BACKGROUND_FRAMES, axis=1, mode="nearest")
    half = PEAK_BINS // 2
    around = np.clip(bins[:, None] + np.arange(-half, half + 1), 0, spec.shape[0] - 1)  # (cells, PEAK_BINS)
    return (over_time[around, rows[:, None]].sum(axis=1, dtype=np.float64) / PEAK_BINS).astype(np.float32)


class PeakTracker:
    """Peaks of a decode, block by block (``push`` each resampled block, then ``finish``): about
    ``CHUNK_SECONDS`` of spectrogram is held at a time, and the peaks equal :func:`spectral_peaks` on the whole."""

    def __init__(self, sample_rate: int, peaks_per_second: int = PEAKS_PER_SECOND):
        self.spectrum = PeakSpectrum(sample_rate)
        self.per_second = peaks_per_second
        self._carry = np.zeros(0, np.float32)  # samples not yet in a whole frame
        self._spec: list[np.ndarray] = []  # spectrogram (bins, frames) held, from frame self._first on
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
            self._spec.append(self.spectrum.by_bin(buf[:used]))
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
        spec = np.concatenate(self._spec, axis=1) if len(self._spec) > 1 else self._spec[0]
        fps = self.spectrum.frames_per_second
        end_frame = self._first + spec.shape[1]
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
        self._spec = [spec[:, keep_from - self._first :]]
        self._first = keep_from
