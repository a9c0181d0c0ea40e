"""Options of `embedtool neighbours` (section ``neighbours`` in embedtool.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from embedtool.config import PRESETS
from embedtool.errors import ConfigError
from embedtool.flag import option


@dataclass(frozen=True)
class NeighbourOptions:
    """Options of `embedtool neighbours` (section ``neighbours`` in embedtool.yaml)."""

    mode: str = field(
        default="similar",
        metadata=option(
            "Similar tracks, or which track an excerpt is from.", short="-m", choices=("similar", "identify")
        ),
    )
    k: int = field(default=10, metadata=option("Number of tracks to return.", short="-k"))
    hits_per_window: int = 32  # segment hits fetched per query window before voting
    # Step between query windows; 0 = automatic: half the library's segment hop for queries shorter than
    # DENSE_QUERY_SECONDS (twice the votes for a short excerpt, every other window within a quarter hop of the
    # library's grid), the library's hop for longer ones (votes are plentiful; embedding time is not free).
    query_hop_seconds: float = 0.0
    tolerance_bins: int = 1  # voting: offsets within this many reference hops of the best agree
    # Shorter queries are refused: too little to match on. Low enough for drum one-shots (a tabla hit is ~43 ms
    # of sound plus its tail), high enough to refuse a click or an empty file.
    min_query_seconds: float = 0.1
    include_self: bool = field(default=False, metadata=option("similar: keep the query's own track."))
    # Several seeds answered as one (--combine): "mean" (of their vectors) or "rrf" (reciprocal-rank fusion of
    # their answers); query.seeds, measured in docs/benchmarks.md "Several seeds".
    combine: str = field(
        default="mean",
        metadata=option(
            "How --combine joins the seeds (implies --combine): mean, the mean of their vectors; rrf, "
            "reciprocal-rank fusion of their answers.",
            flag="--combine-by",
            choices=("mean", "rrf"),
        ),
    )

    @classmethod
    def from_preset(cls, name: str) -> NeighbourOptions:
        if name in PRESETS:  # no preset changes how queries are answered
            return cls()
        raise ConfigError(f"Unknown neighbours preset {name!r}; valid: {', '.join(PRESETS)}")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.mode not in ("similar", "identify"):
            raise ConfigError(f"neighbours.mode must be 'similar' or 'identify', not {self.mode!r}")
        if self.combine not in ("mean", "rrf"):
            raise ConfigError(f"neighbours.combine must be 'mean' or 'rrf', not {self.combine!r}")
        if self.k < 1 or self.hits_per_window < 1:
            raise ConfigError("neighbours.k and neighbours.hits_per_window must be at least 1")
        if self.query_hop_seconds < 0 or self.tolerance_bins < 0 or self.min_query_seconds < 0:
            raise ConfigError("neighbours.query_hop_seconds, tolerance_bins and min_query_seconds must be >= 0")
