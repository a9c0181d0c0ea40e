"""Options of `embedtool index` (section ``index`` in embedtool.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from embedtool.config import PRESETS
from embedtool.errors import ConfigError
from embedtool.flag import option

KINDS = ("flat", "hnsw", "ivf", "ivf-pq")  # the index kinds besides "auto"


@dataclass(frozen=True)
class IndexOptions:
    """Options of `embedtool index` (section ``index`` in embedtool.yaml)."""

    kind: str = field(
        default="auto", metadata=option("FAISS index kind (auto: by size and memory).", choices=("auto", *KINDS))
    )
    target_recall: float = field(
        default=0.95, metadata=option("recall@k that tuning must reach (against exact search).")
    )
    recall_k: int = field(default=10, metadata=option("k of the recall measurement."))
    exact_max_cost: int = 20_000_000  # auto: exact search while n * dim is at most this
    # auto: raw float32 vectors above this go to ivf-pq
    memory_budget_mb: float = field(
        default=2048.0,
        metadata=option(
            "Memory budget (MiB): auto's choice of kind, the training sample, on-disk blocks.", old=("--memory-mb",)
        ),
    )
    eval_queries: int = 200  # held-out queries for tuning and measuring recall
    hnsw_m: int = 32
    hnsw_ef_construction: int = 64
    ivf_nlist: int = 0  # 0: about sqrt(n) cells
    pq_m: int = 0  # 0: chosen from dim (sub-vectors of 8+ dims, at most 64 bytes a vector)
    # ivf-pq: inverted lists in a file beside the index (memory-mapped, filled in blocks and merged) rather than
    # in memory; auto = when the codes would take more than a quarter of memory_budget_mb; on (with kind auto):
    # ivf-pq from 2000 vectors on
    on_disk: str = field(
        default="auto",
        metadata=option(
            "ivf-pq: inverted lists in a file beside the index (auto: when over a quarter of the budget).",
            choices=("auto", "on", "off"),
        ),
    )
    block_vectors: int = 2_000_000  # on disk: vectors per fill block (each block is one unit of work)
    seed: int = 0
    # identify-mode threshold on the confidence (query.calibrate): calibrated from library excerpts unless fixed
    identify_threshold: float | None = field(
        default=None, metadata=option("Fixed identify confidence threshold (skip calibration).", old=("--threshold",))
    )
    calibration_tracks: int = 200  # library tracks whose excerpts calibrate the threshold
    calibration_lengths_s: tuple[float, ...] = (1.0, 3.0, 10.0)  # excerpt lengths, one threshold each
    calibration_snr_db: float = 15.0  # background mixed into calibration excerpts, this far below them
    # what that background is: "library" (another library track's sound: what queries meet, other music, voices,
    # rooms) or "noise" (Mel-domain noise, as indexes made before)
    calibration_background: str = "library"
    # landmark fingerprints for identify (indexing.fingerprint), about 10 MB per hour of audio: auto and on build
    # them, in memory while their estimated size fits memory_budget_mb, else in sorted blocks merged on disk
    fingerprints: str = "auto"  # auto | on | off

    @classmethod
    def from_preset(cls, name: str) -> IndexOptions:
        if name in PRESETS:  # no preset changes how indexes are built
            return cls()
        raise ConfigError(f"Unknown index preset {name!r}; valid: {', '.join(PRESETS)}")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.kind != "auto" and self.kind not in KINDS:
            raise ConfigError(f"index.kind must be one of auto, {', '.join(KINDS)}; not {self.kind!r}")
        if not 0 < self.target_recall <= 1:
            raise ConfigError(f"index.target_recall must be in (0, 1], not {self.target_recall}")
        if self.recall_k < 1 or self.eval_queries < 1:
            raise ConfigError("index.recall_k and index.eval_queries must be positive")
        if self.memory_budget_mb <= 0 or self.exact_max_cost < 0:
            raise ConfigError("index.memory_budget_mb must be positive and index.exact_max_cost non-negative")
        if self.hnsw_m < 4 or self.hnsw_ef_construction < 8:
            raise ConfigError("index.hnsw_m must be >= 4 and index.hnsw_ef_construction >= 8")
        if self.ivf_nlist < 0 or self.pq_m < 0:
            raise ConfigError("index.ivf_nlist and index.pq_m must be non-negative (0 = automatic)")
        if self.on_disk not in ("auto", "on", "off"):
            raise ConfigError(f"index.on_disk must be auto, on or off; not {self.on_disk!r}")
        if self.on_disk == "on" and self.kind not in ("auto", "ivf-pq"):
            raise ConfigError(f"index.on_disk: on keeps an ivf-pq index on disk; index.kind is {self.kind!r}")
        if self.block_vectors < 1000:
            raise ConfigError(f"index.block_vectors must be at least 1000, not {self.block_vectors}")
        if self.fingerprints not in ("auto", "on", "off"):
            raise ConfigError(f"index.fingerprints must be auto, on or off; not {self.fingerprints!r}")
        if self.calibration_background not in ("library", "noise"):
            raise ConfigError(
                f"index.calibration_background must be library or noise; not {self.calibration_background!r}"
            )
        lengths = self.calibration_lengths_s
        if not lengths or min(lengths) <= 0 or self.calibration_tracks < 1:
            raise ConfigError("index.calibration_lengths_s and index.calibration_tracks must be positive")
