"""Log-Mel feature settings and their presets."""

from __future__ import annotations

from dataclasses import dataclass, field

from embedtool.config import PRESETS
from embedtool.errors import ConfigError
from embedtool.flag import option

# Native-rate audio decoded at a time (extract.block_seconds): bounds the memory a long file needs.
DEFAULT_BLOCK_SECONDS = 30.0

# Which peak picking (audio.peaks) made a set of fingerprint peaks: raised with any change there that changes which
# peaks are picked. Features whose peaks were picked another way are extracted again (their peaks would not meet a
# query's), and an index made of them leaves its fingerprints unasked until then. Peaks stored before it was
# recorded are 1.
PEAKS_VERSION = 1


@dataclass(frozen=True)
class FeatureSettings:
    """How audio becomes a log-Mel matrix (frames x mels): ``ln(mel(|STFT|) + log_offset)``.

    Frames are not centred (as the seed's ``tf.signal.stft``): frame ``t`` covers samples
    ``[t * hop, t * hop + win_length)``, zero-padded to ``n_fft``; see :mod:`embedtool.audio.melspec`.

    ``default`` (16 kHz; 25 ms Hann window in a 512-point FFT; 10 ms hop; 64 HTK Mel bands 50-8000 Hz;
    ln(magnitude + 1e-6)) is chosen for quality and CPU speed together:

    - quality: it is the front end general-audio models share (VGGish, YAMNet, PANNs' 16 kHz variants) and
      covers speech, music and environmental sound up to 8 kHz; with 64 bands the 512-point FFT (31 Hz bins)
      still gives every band, even the narrowest near 50 Hz, at least two FFT bins (the thesis' 128 bands in a
      1024-point FFT go down to one).
    - speed: extraction is bound by decoding, not by the features (``bench/bench_extract.py``: decoding is
      ~90% of the time), so the cost shows downstream: half the bands of ``thesis`` halve the stored
      features (~44 MB instead of ~88 MB of float16 per audio hour) and the network's input, which roughly
      halves training and embedding time per second of audio on a CPU.
    - the hop (10 ms, 100 frames per second) is the thesis' own, so segment lengths and timestamps carry over.

    ``thesis`` reproduces the seed's settings exactly (16 kHz, window 480 in an FFT of 1024, hop 160, 128 mels
    50-8000 Hz, natural log of magnitude + 1e-6; 498 frames per 5 s). The Mel filterbank is torchaudio's
    (triangles in Hz between Mel-spaced edges, unnormalised, like librosa with ``htk=True, norm=None``); TF's
    ``linear_to_mel_weight_matrix``, if the seed used it, draws its triangles on the Mel axis instead, so band
    shapes (not centres or edges) differ slightly.
    """

    sample_rate: int = field(default=16000, metadata=option("Resample audio to this rate (Hz)."))
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = field(default=64, metadata=option("Number of Mel bands."))
    f_min: float = 50.0
    f_max: float = 8000.0
    power: float = 1.0  # 1: magnitude spectrogram, 2: power spectrogram
    log_offset: float = 1e-6  # features are ln(mel + log_offset)
    mel_scale: str = "htk"  # "htk" or "slaney"

    @classmethod
    def from_preset(cls, name: str) -> FeatureSettings:
        if name == "thesis":
            return cls(
                sample_rate=16000,
                n_fft=1024,
                win_length=480,
                hop_length=160,
                n_mels=128,
                f_min=50.0,
                f_max=8000.0,
                power=1.0,
                log_offset=1e-6,
                mel_scale="htk",
            )
        if name in PRESETS:  # the other presets keep the default front end
            return cls()
        raise ConfigError(f"Unknown features preset {name!r}; valid: {', '.join(PRESETS)}")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.sample_rate < 1000:
            raise ConfigError(f"features.sample_rate must be at least 1000 Hz, not {self.sample_rate}")
        if not 0 < self.win_length <= self.n_fft:
            raise ConfigError(f"features.win_length must be in 1..n_fft ({self.n_fft}), not {self.win_length}")
        if self.hop_length <= 0:
            raise ConfigError("features.hop_length must be positive")
        if self.n_mels < 1:
            raise ConfigError("features.n_mels must be positive")
        if self.n_mels > self.n_fft // 2 + 1:  # more bands than the spectrum has bins: some bands stay empty
            raise ConfigError(
                f"features.n_mels ({self.n_mels}) must be at most n_fft/2 + 1 ({self.n_fft // 2 + 1}), the "
                "spectrum's frequency bins: raise n_fft or use fewer Mel bands"
            )
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ConfigError(
                f"features.f_min/f_max must satisfy 0 <= f_min < f_max <= sample_rate/2 "
                f"({self.sample_rate / 2:g}); got {self.f_min:g}..{self.f_max:g}"
            )
        if self.power not in (1.0, 2.0):
            raise ConfigError("features.power must be 1 (magnitude) or 2 (power)")
        if self.log_offset <= 0:
            raise ConfigError("features.log_offset must be positive")
        if self.mel_scale not in ("htk", "slaney"):
            raise ConfigError("features.mel_scale must be 'htk' or 'slaney'")

    @property
    def frames_per_second(self) -> float:
        return self.sample_rate / self.hop_length

    def seconds_to_frames(self, seconds: float) -> int:
        return int(round(seconds * self.frames_per_second))

    def frames_to_seconds(self, frames: int | float) -> float:
        return float(frames) / self.frames_per_second
