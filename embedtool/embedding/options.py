"""Options of `embedtool embed` (section ``embed`` in embedtool.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from embedtool.config import PRESETS
from embedtool.errors import ConfigError
from embedtool.flag import option


@dataclass(frozen=True)
class EmbedOptions:
    """Options of `embedtool embed` (section ``embed`` in embedtool.yaml)."""

    hop_seconds: float = field(
        default=0.0, metadata=option("Seconds between segment windows (0 = half a segment).", old=("--hop",))
    )
    batch_size: int = field(default=256, metadata=option("Windows per forward pass."))
    device: str = field(default="auto", metadata=option("Where the model runs.", choices=("auto", "cpu", "cuda")))
    full: bool = field(default=False, metadata=option("Re-embed every track, even when the last export fits."))
    shard_mb: int = 64  # segment vectors per .npy shard, in MiB

    @classmethod
    def from_preset(cls, name: str) -> EmbedOptions:
        if name in PRESETS:  # no preset changes how embeddings are exported
            return cls()
        raise ConfigError(f"Unknown embed preset {name!r}; valid: {', '.join(PRESETS)}")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.hop_seconds < 0:
            raise ConfigError(f"embed.hop_seconds must be >= 0 (0 = half a segment), not {self.hop_seconds}")
        if self.batch_size < 1:
            raise ConfigError(f"embed.batch_size must be at least 1, not {self.batch_size}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"embed.device must be auto, cpu or cuda, not {self.device!r}")
        if self.shard_mb < 1:
            raise ConfigError("embed.shard_mb must be at least 1")
