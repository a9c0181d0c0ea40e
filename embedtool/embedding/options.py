"""Options of `embedtool embed` (section ``embed`` in embedtool.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

from embedtool.errors import ConfigError


@dataclass
class EmbedOptions:
    """Options of `embedtool embed` (section ``embed`` in embedtool.yaml)."""

    hop_seconds: float = 0.0  # step between segment windows; 0 = half a segment
    batch_size: int = 256  # windows per forward pass
    device: str = "auto"  # auto | cpu | cuda
    full: bool = False  # re-embed every track even when the previous export could be reused
    shard_mb: int = 64  # segment vectors per .npy shard, in MiB

    @classmethod
    def from_preset(cls, name: str) -> EmbedOptions:
        if name in ("default", "thesis", "tile2vec", "contrastive"):
            return cls()
        raise ConfigError(f"Unknown embed preset {name!r}; valid: default, thesis, tile2vec, contrastive")

    def validate(self) -> None:
        if self.hop_seconds < 0:
            raise ConfigError(f"embed.hop_seconds must be >= 0 (0 = half a segment), not {self.hop_seconds}")
        if self.batch_size < 1:
            raise ConfigError(f"embed.batch_size must be at least 1, not {self.batch_size}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"embed.device must be auto, cpu or cuda, not {self.device!r}")
        if self.shard_mb < 1:
            raise ConfigError("embed.shard_mb must be at least 1")
