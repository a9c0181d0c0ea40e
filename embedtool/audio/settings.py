"""Log-Mel feature settings and their presets."""

from __future__ import annotations

from dataclasses import dataclass

from embedtool.errors import ConfigError


@dataclass(frozen=True)
class FeatureSettings:
    """How audio becomes a log-Mel matrix (frames x mels).

    ``default`` is the 25 ms / 10 ms, 64-band, 16 kHz front end that general-audio models (VGGish, YAMNet,
    PANNs' 16 kHz variants) share: it covers speech, music and environmental sound, keeps the CPU cost of
    resampling and the STFT low, and gives small inputs that train fast on a CPU. ``thesis`` reproduces the
    seed exactly.
    """

    sample_rate: int = 16000
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 8000.0
    power: float = 1.0  # 1: magnitude spectrogram, 2: power spectrogram
    log_offset: float = 1e-6  # features are ln(mel + log_offset)
    mel_scale: str = "htk"  # "htk" or "slaney"

    @classmethod
    def from_preset(cls, name: str) -> FeatureSettings:
        if name in ("default", "tile2vec"):
            return cls()
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
        raise ConfigError(f"Unknown features preset {name!r}; valid: default, thesis, tile2vec")

    def validate(self) -> None:
        if self.sample_rate < 1000:
            raise ConfigError(f"features.sample_rate must be at least 1000 Hz, not {self.sample_rate}")
        if not 0 < self.win_length <= self.n_fft:
            raise ConfigError(f"features.win_length must be in 1..n_fft ({self.n_fft}), not {self.win_length}")
        if self.hop_length <= 0:
            raise ConfigError("features.hop_length must be positive")
        if self.n_mels < 1:
            raise ConfigError("features.n_mels must be positive")
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
