"""Options of `embedtool extract` (section ``extract`` in embedtool.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from embedtool.audio.settings import DEFAULT_BLOCK_SECONDS
from embedtool.errors import ConfigError
from embedtool.flag import option


@dataclass(frozen=True)
class ExtractOptions:
    """Options of `embedtool extract` (configuration section ``extract``).

    ``min_duration_s`` defaults to 30 ms: shorter than about one analysis window there is nothing to learn from,
    while real one-shots (the bundled tabla hits) go down to about 43 ms. ``silence_db`` is the peak level
    (dBFS) under which a file counts as silent.
    """

    # tasks at once (worker processes; Ray workers with the ray engine); 0 = all cores
    jobs: int = field(default=0, metadata=option("Worker processes (0 = all cores).", short="-j", min=0))
    overwrite: bool = field(default=False, metadata=option("Re-extract every file, ignoring earlier results."))
    # The library is every folder ever given (remembered in the features' meta): `extract PATH` adds PATH and
    # re-scans them all. replace: the given paths become the library's only roots (their tracks alone remain);
    # prune: also drop the tracks of remembered roots that are missing (an unplugged drive keeps them otherwise).
    replace: bool = field(
        default=False, metadata=option("PATH becomes the whole library: tracks under other folders are removed.")
    )
    prune: bool = field(
        default=False, metadata=option("Drop the tracks of remembered folders that are missing (kept otherwise).")
    )
    strict: bool = field(default=False, metadata=option("Fail (publish nothing) if any file cannot be decoded."))
    labels: str | None = field(
        default=None,
        metadata=option("CSV/TSV of path,label[,group] (default: the first folder level under each PATH)."),
    )
    min_duration_s: float = field(
        default=0.03, metadata=option("Skip files shorter than this (s).", old=("--min-duration",))
    )
    silence_db: float = -80.0
    follow_symlinks: bool = True
    keep_truncated: bool = field(
        default=False, metadata=option("Keep the decoded part of files cut short (they fail otherwise).")
    )
    block_seconds: float = DEFAULT_BLOCK_SECONDS  # native-rate audio decoded at a time (bounds memory)
    # A task (and its shards) holds about this many seconds of decoding work (estimated from the audio's duration),
    # so a killed run keeps all but the last few seconds of work per worker; 0: every file is its own task and shard.
    flush_every_s: float = 20.0
    max_shard_mb: int = 256  # features per task (and shard) at most

    def __post_init__(self) -> None:
        self.validate()

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
