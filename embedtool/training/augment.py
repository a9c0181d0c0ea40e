"""Augmentations of log-Mel segments, so that embeddings stay put when a query is noisy, quieter or re-encoded.

All of them work on one float32 (frames, n_mels) segment of features ``ln(mel + log_offset)`` and go through
the linear domain where the physics happens there:

- gain and equalisation scale the linear Mel energies (a random overall gain in +-``aug_gain_db`` and a
  smooth random curve over the bands in +-``aug_eq_db``, standing in for codec and room colouring);
- additive noise is mixed in the linear power domain (powers of independent sources add), i.e. a
  log-add-exp of the log-Mels, at a random SNR in ``aug_snr_db_min..aug_snr_db_max``; the noise is either
  another training track's segment or synthetic coloured noise (random spectral tilt with Rayleigh-like
  frame-to-frame fluctuation);
- room reverberation: each band's power is run through an exponential decay (a generated impulse response's
  energy envelope: reverberation time up to ``aug_reverb_s``, shorter in the high bands, a random
  direct-to-reverberant ratio), which is what a room does to a spectrogram at this resolution;
- band-limiting: a phone (300-3400 Hz), a small speaker (no bass) or a low-bit-rate codec (no treble), as
  24 dB/octave slopes beyond random cut-offs;
- time and frequency masks (SpecAugment) fill a random span with the segment's mean;
- small time shifts are applied when the segment is cut (see ``dataset.py``), where real neighbouring frames
  are available.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from embedtool.audio.settings import FeatureSettings
from embedtool.model.settings import TrainSettings

LN10 = math.log(10.0)


class Augmenter:
    def __init__(
        self, settings: TrainSettings, log_offset: float, power: float, features: FeatureSettings | None = None
    ):
        self.s = settings
        self.offset = float(log_offset)
        self.power = float(power)
        self.k = 2.0 / self.power  # linear Mel value ** k = power-domain value
        features = features or FeatureSettings()
        self.frame_s = features.hop_length / features.sample_rate
        self.band_hz = mel_band_centres_hz(features)

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
        if s.aug_reverb_prob > 0 and rng.random() < s.aug_reverb_prob:
            lin = self.reverb(lin, rng)
        # Gain, EQ and band limits: one multiplicative curve over the bands (amplitude dB, scaled to the power).
        gain_db = rng.uniform(-s.aug_gain_db, s.aug_gain_db) if s.aug_gain_db > 0 else 0.0
        curve_db = np.full(bands, gain_db)
        if s.aug_eq_db > 0:
            pos = np.linspace(0.0, 1.0, bands)
            eq = np.zeros(bands)
            for harmonic in (1, 2, 3):
                eq += rng.normal(0, 1.0 / harmonic) * np.cos(math.pi * harmonic * pos + rng.uniform(0, math.pi))
            eq *= s.aug_eq_db / max(1e-9, np.abs(eq).max())
            curve_db = curve_db + eq
        band_limited = s.aug_bandlimit_prob > 0 and rng.random() < s.aug_bandlimit_prob
        if band_limited:
            curve_db = curve_db + self.band_limit_db(rng)
        if gain_db != 0.0 or s.aug_eq_db > 0 or band_limited:
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
        return mix_linear_mel(signal, noise, snr_db, self.power)

    def reverb(self, lin: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A generated room on linear Mel values: the power envelope of each band convolved with an exponential
        decay (60 dB in the band's reverberation time), added to the direct sound at a random direct-to-
        reverberant ratio. The decay is a one-pole recursion; before the segment the room is taken as settled
        on the first frame's level, so the segment does not start in a dry room."""
        rt60 = rng.uniform(0.2, max(0.2, self.s.aug_reverb_s))
        rt60_band = rt60 * np.linspace(1.0, 0.5, lin.shape[1])  # air and walls absorb the treble sooner
        decay = np.exp(-13.8 * self.frame_s / rt60_band)  # 60 dB = a power ratio of e**-13.8
        drr_db = rng.uniform(-3.0, 10.0)
        gain = (1.0 - decay) / decay * 10.0 ** (-drr_db / 10.0)  # tail energy = direct energy / DRR
        direct = lin**self.k
        tail = np.empty_like(direct)
        state = direct[0] * decay / (1.0 - decay)
        for t in range(direct.shape[0]):
            tail[t] = state
            state = decay * (state + direct[t])
        return (direct + gain * tail) ** (1.0 / self.k)

    def band_limit_db(self, rng: np.random.Generator) -> np.ndarray:
        """Attenuation (dB, per band) of a phone, a small speaker or a low-bit-rate codec: 24 dB/octave below
        the low cut-off and above the high one, at most 60 dB."""
        kind = rng.integers(0, 3)
        low, high = 0.0, float("inf")
        if kind == 0:  # telephone band
            low, high = rng.uniform(250, 400), rng.uniform(3000, 3600)
        elif kind == 1:  # small speaker: no bass, some treble loss
            low, high = rng.uniform(200, 800), rng.uniform(5000, 9000)
        else:  # low-bit-rate codec: the treble goes first
            high = rng.uniform(3000, 7000)
        f = self.band_hz
        below = np.log2(low / f).clip(0.0) if low > 0 else 0.0
        above = np.log2(f / high).clip(0.0)
        return -np.minimum(24.0 * (below + above), 60.0)

    def coloured_noise(self, frames: int, bands: int, rng: np.random.Generator) -> np.ndarray:
        """Stationary noise with a random spectral tilt, as linear Mel values."""
        tilt = rng.uniform(-3.0, 3.0)  # natural-log units across the band range: from 'blue' to 'brown'
        spectrum = tilt * np.linspace(-0.5, 0.5, bands)
        log_noise = spectrum[None, :] + 0.5 * rng.standard_normal((frames, bands))
        return np.exp(log_noise)


def mix_linear_mel(signal: np.ndarray, noise: np.ndarray, snr_db: float, power: float) -> np.ndarray:
    """Mix linear Mel matrices (magnitudes when ``power`` is 1, powers when 2) at ``snr_db`` (energy ratio over
    the segment), adding in the power domain, as incoherent sources add."""
    k = 2.0 / power  # linear Mel value ** k = power-domain value
    ps, pn = signal**k, noise**k
    es, en = float(ps.mean()), float(pn.mean())
    if es <= 0 or en <= 0:
        return signal
    scale = es / (en * 10.0 ** (snr_db / 10.0))
    return (ps + scale * pn) ** (1.0 / k)


def mel_band_centres_hz(features: FeatureSettings) -> np.ndarray:
    """Centre frequency of each Mel band (the peaks of the filterbank's triangles)."""

    def to_mel(f: np.ndarray) -> np.ndarray:
        if features.mel_scale == "htk":
            return 2595.0 * np.log10(1.0 + f / 700.0)
        return np.where(f < 1000.0, 3.0 * f / 200.0, 15.0 + 27.0 * np.log(np.maximum(f, 1e-9) / 1000.0) / np.log(6.4))

    def to_hz(m: np.ndarray) -> np.ndarray:
        if features.mel_scale == "htk":
            return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
        return np.where(m < 15.0, 200.0 * m / 3.0, 1000.0 * np.exp((m - 15.0) * np.log(6.4) / 27.0))

    edges = to_mel(np.array([features.f_min, features.f_max], dtype=np.float64))
    return to_hz(np.linspace(edges[0], edges[1], features.n_mels + 2)[1:-1])
