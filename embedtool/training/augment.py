"""Augmentations of log-Mel segments, so that embeddings stay put when a query is noisy, quieter or re-encoded.

All of them work on one float32 (frames, n_mels) segment of features ``ln(mel + log_offset)`` and go through
the linear domain where the physics happens there:

- gain and equalisation scale the linear Mel energies (a random overall gain in +-``aug_gain_db`` and a
  smooth random curve over the bands in +-``aug_eq_db``, standing in for codec and room colouring);
- additive noise is mixed in the linear power domain (powers of independent sources add), i.e. a
  log-add-exp of the log-Mels, at a random SNR in ``aug_snr_db_min..aug_snr_db_max``; the noise is either
  another training track's segment or synthetic coloured noise (random spectral tilt with Rayleigh-like
  frame-to-frame fluctuation);
- time and frequency masks (SpecAugment) fill a random span with the segment's mean;
- small time shifts are applied when the segment is cut (see ``dataset.py``), where real neighbouring frames
  are available.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from embedtool.model.settings import TrainSettings

LN10 = math.log(10.0)


class Augmenter:
    def __init__(self, settings: TrainSettings, log_offset: float, power: float):
        self.s = settings
        self.offset = float(log_offset)
        self.power = float(power)
        self.k = 2.0 / self.power  # linear Mel value ** k = power-domain value

    def to_linear(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(np.exp(x) - self.offset, 0.0)

    def to_log(self, lin: np.ndarray) -> np.ndarray:
        return np.log(lin + self.offset).astype(np.float32)

    def __call__(
        self,
        x: np.ndarray,
        rng: np.random.Generator,
        noise_segment: Callable[[np.random.Generator], np.ndarray] | None = None,
    ) -> np.ndarray:
        s = self.s
        frames, bands = x.shape
        lin = self.to_linear(x.astype(np.float64))
        if s.aug_noise_prob > 0 and rng.random() < s.aug_noise_prob:
            source = s.aug_noise_source
            if source == "both":
                source = "tracks" if rng.random() < 0.5 else "coloured"
            if source == "tracks" and noise_segment is not None:
                noise = self.to_linear(noise_segment(rng).astype(np.float64))
            else:
                noise = self.coloured_noise(frames, bands, rng)
            snr_db = rng.uniform(s.aug_snr_db_min, s.aug_snr_db_max)
            lin = self.mix(lin, noise, snr_db)
        # Gain and EQ: one multiplicative curve over the bands (in amplitude dB, scaled to the feature power).
        gain_db = rng.uniform(-s.aug_gain_db, s.aug_gain_db) if s.aug_gain_db > 0 else 0.0
        curve_db = np.full(bands, gain_db)
        if s.aug_eq_db > 0:
            pos = np.linspace(0.0, 1.0, bands)
            eq = np.zeros(bands)
            for harmonic in (1, 2, 3):
                eq += rng.normal(0, 1.0 / harmonic) * np.cos(math.pi * harmonic * pos + rng.uniform(0, math.pi))
            eq *= s.aug_eq_db / max(1e-9, np.abs(eq).max())
            curve_db = curve_db + eq
        if gain_db != 0.0 or s.aug_eq_db > 0:
            lin = lin * np.power(10.0, curve_db * self.power / 20.0)[None, :]
        out = self.to_log(lin)
        if s.aug_mask_prob > 0 and rng.random() < s.aug_mask_prob:
            fill = float(out.mean())
            if s.aug_time_mask > 0:
                width = int(rng.integers(0, int(s.aug_time_mask * frames) + 1))
                if width:
                    t0 = int(rng.integers(0, frames - width + 1))
                    out[t0 : t0 + width] = fill
            if s.aug_freq_mask > 0:
                width = int(rng.integers(0, int(s.aug_freq_mask * bands) + 1))
                if width:
                    f0 = int(rng.integers(0, bands - width + 1))
                    out[:, f0 : f0 + width] = fill
        return out

    def mix(self, signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
        """Mix linear Mel matrices at ``snr_db`` (energy ratio over the segment), adding in the power domain."""
        ps, pn = signal**self.k, noise**self.k
        es, en = float(ps.mean()), float(pn.mean())
        if es <= 0 or en <= 0:
            return signal
        scale = es / (en * 10.0 ** (snr_db / 10.0))
        return (ps + scale * pn) ** (1.0 / self.k)

    def coloured_noise(self, frames: int, bands: int, rng: np.random.Generator) -> np.ndarray:
        """Stationary noise with a random spectral tilt, as linear Mel values."""
        tilt = rng.uniform(-3.0, 3.0)  # natural-log units across the band range: from 'blue' to 'brown'
        spectrum = tilt * np.linspace(-0.5, 0.5, bands)
        log_noise = spectrum[None, :] + 0.5 * rng.standard_normal((frames, bands))
        return np.exp(log_noise)
