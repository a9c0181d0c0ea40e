"""Options of `embedtool extract` (section ``extract`` in embedtool.yaml)."""

from __future__ import annotations

from dataclasses import dataclass

from embedtool.audio.settings import DEFAULT_BLOCK_SECONDS
from embedtool.errors import ConfigError


@dataclass
class ExtractOptions:
    """Options of `embedtool extract` (configuration section ``extract``).

    ``min_duration_s`` defaults to 30 ms: shorter than about one analysis window there is nothing to learn from,
    while real one-shots (the bundled tabla hits) go down to about 43 ms. ``silence_db`` is the peak level
    (dBFS) under which a file counts as silent.
    """

    jobs: int = 0  # tasks at once (worker processes; Ray workers with the ray engine); 0 = all cores
    overwrite: bool = False  # recompute every file, ignoring what is already extracted
    # The library is every folder ever given (remembered in the features' meta): `extract PATH` adds PATH and
    # re-scans them all. replace: the given paths become the library's only roots (their tracks alone remain);
    # prune: also drop the tracks of remembered roots that are missing (an unplugged drive keeps them otherwise).
    replace: bool = False
    prune: bool = False
    strict: bool = False  # any failed file fails the run (and nothing is published)
    labels: str | None = None  # CSV/TSV of path,label[,group]; default: first folder level under each root
    min_duration_s: float = 0.03
    silence_db: float = -80.0
    follow_symlinks: bool = True
    keep_truncated: bool = False  # extract the decoded part of a file cut short (reported) instead of failing it
    block_seconds: float = DEFAULT_BLOCK_SECONDS  # native-rate audio decoded at a time (bounds memory)
    # A task (and its shards) holds about this many seconds of decoding work (estimated from the audio's duration),
    # so a killed run keeps all but the last few seconds of work per worker; 0: every file is its own task and shard.
    flush_every_s: float = 20.0
    max_shard_mb: int = 256  # features per task (and shard) at most

    def validate(self) -> None:
        if self.jobs < 0:
            raise ConfigError(f"extract.jobs must be 0 (all cores) or positive, not {self.jobs}")
        if self.min_duration_s < 0:
            raise ConfigError("extract.min_duration_s must not be negative")
        if self.block_seconds <= 0:
            raise ConfigError("extract.block_seconds must be positive")
        if self.flush_every_s < 0:
            raise ConfigError("extract.flush_every_s must not be negative")
        if self.max_shard_mb < 1:
            raise ConfigError("extract.max_shard_mb must be at least 1")
        if self.silence_db >= 0:
            raise ConfigError(f"extract.silence_db must be below 0 dBFS, not {self.silence_db}")

    def resolved_jobs(self) -> int:
        """``jobs``, or for 0 the CPUs actually free (affinity, cgroup quota, other work: ``--threads`` fixes it)."""
        if self.jobs:
            return self.jobs
        from embedtool.threads import threads_now

        return threads_now("extract")
