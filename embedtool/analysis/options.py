"""Options of the analyses: `embedtool cluster`, `embedtool classify` and `embedtool evaluate` (config sections
``cluster``, ``classify``, ``evaluate``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from embedtool.errors import ConfigError
from embedtool.flag import option

# The degradations evaluate's re-identification robustness applies to excerpts (see analysis.robustness).
DEGRADATIONS = ("clean", "noise20", "noise10", "noise0", "mp3", "gain", "speed+3", "speed-3")


@dataclass(frozen=True)
class ClusterOptions:
    """Options of ``embedtool cluster`` (config section ``cluster``)."""

    # a number of clusters, or "auto" (silhouette over k_min..k_max)
    k: str = field(default="auto", metadata=option("Number of clusters, or 'auto' (best silhouette).", short="-k"))
    k_min: int = field(default=2, metadata=option("Smallest k tried by -k auto."))
    k_max: int = field(default=12, metadata=option("Largest k tried by -k auto."))
    level: Literal["track", "segment"] = field(default="track", metadata=option("Cluster track or segment embeddings."))
    seed: int = field(default=0, metadata=option("Seed of k-Means and the map."))
    n_init: int = 5  # seeded k-Means restarts; the lowest inertia wins
    iterations: int = 50
    # items nearest each centroid reported as its exemplars
    exemplars: int = field(default=3, metadata=option("Exemplars listed per cluster."))
    max_points: int = 5000  # sample size for silhouette and the 2-D map on large sets
    projection: Literal["auto", "tsne", "umap", "pca"] = "auto"
    # track level: the track embeddings, or with a teacher network's vectors beside them (model.teachers;
    # each part standardised and weighted equally)
    features: Literal["embeddings", "embeddings+aisfx"] = field(
        default="embeddings",
        metadata=option(
            "Track level: the track embeddings, or with the bundled aisfx network's vector of each file beside them "
            "(~100 s of CPU per audio hour once, cached in teachers/)."
        ),
    )
    plots: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.features not in ("embeddings", "embeddings+aisfx"):
            raise ConfigError(f"cluster.features must be 'embeddings' or 'embeddings+aisfx', not {self.features!r}")
        if self.features != "embeddings" and self.level != "track":
            raise ConfigError(f"cluster.features {self.features!r} needs cluster.level 'track' (one vector a file)")
        if self.k != "auto":
            try:
                value = int(self.k)
            except ValueError:
                raise ConfigError(f"cluster.k must be a whole number or 'auto', not {self.k!r}") from None
            if value < 1:
                raise ConfigError(f"cluster.k must be at least 1, not {value}")
        if not 2 <= self.k_min <= self.k_max:
            raise ConfigError(f"cluster.k_min/k_max must satisfy 2 <= k_min <= k_max; got {self.k_min}..{self.k_max}")
        if self.n_init < 1 or self.iterations < 1:
            raise ConfigError("cluster.n_init and cluster.iterations must be positive")
        if self.exemplars < 1:
            raise ConfigError("cluster.exemplars must be positive")
        if self.max_points < 10:
            raise ConfigError("cluster.max_points must be at least 10")

    @property
    def fixed_k(self) -> int | None:
        return None if self.k == "auto" else int(self.k)


@dataclass(frozen=True)
class ClassifyOptions:
    """Options of ``embedtool classify`` (config section ``classify``)."""

    level: Literal["track", "segment"] = field(
        default="track", metadata=option("Classifier on track or segment embeddings.")
    )
    # what a track-level classifier reads: the model's track descriptors, its track embeddings, or the descriptors
    # with a teacher network's vector of each file beside them (model.teachers: opt-in, costs a decode at
    # 44.1 kHz and ~100 s of CPU per audio hour once, then cached)
    features: Literal["descriptors", "embeddings", "descriptors+aisfx"] = field(
        default="descriptors",
        metadata=option(
            "Track level: what the classifier reads. descriptors+aisfx adds the bundled aisfx sound-effects network's "
            "vector of each file (better on effects, instruments, voices; ~100 s of CPU per audio hour once, cached in "
            "teachers/; evaluate then scores it alone too)."
        ),
    )
    # 0: the persisted train/val split; N >= 2: grouped, stratified N-fold cross-validation
    cv: int = field(
        default=0, metadata=option("Grouped stratified N-fold CV instead of the persisted split (0: the split).")
    )
    # what cross-validation folds (and the inner folds of C="auto") keep together: "group" (the labels file's group
    # column; a track without one is its own group) or "track" (every track on its own). The features record no
    # other column of a labels file, so there is nothing else to group by.
    cv_by: Literal["group", "track"] = field(
        default="group",
        metadata=option(
            "What CV folds keep together: the labels file's group column (a track without one is its own group), or "
            "each track on its own. Other columns of a labels file are not kept by extract, so they cannot group folds."
        ),
    )
    # a persisted split holding out too few tracks to judge by (analysis.folds.small_split_switch): "cv" uses
    # grouped cross-validation instead and says so; "keep" keeps the split
    small_split: Literal["cv", "keep"] = "cv"
    # inverse L2 regularisation strength; auto: inner grouped CV (see doc)
    C: Literal["auto"] | float = field(
        default="auto",
        metadata=option(
            "Inverse regularisation strength of the logistic regression, or 'auto' (inner grouped CV).", old=("--C",)
        ),
    )
    class_weight: Literal["balanced", "none"] = "balanced"
    max_iter: int = 2000
    seed: int = field(default=0, metadata=option("Seed of the folds and the solver."))
    refit_all: bool = True  # the saved classifier is refitted on every labelled track after evaluation
    plots: bool = True

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.cv == 1 or self.cv < 0:
            raise ConfigError(f"classify.cv must be 0 (use the persisted split) or at least 2, not {self.cv}")
        if self.cv_by not in ("group", "track"):
            raise ConfigError(f"classify.cv_by must be 'group' or 'track', not {self.cv_by!r}")
        if self.features not in ("descriptors", "embeddings", "descriptors+aisfx"):
            raise ConfigError(
                f"classify.features must be 'descriptors', 'embeddings' or 'descriptors+aisfx', not {self.features!r}"
            )
        if self.C != "auto" and float(self.C) <= 0:
            raise ConfigError(f"classify.C must be positive or 'auto', not {self.C}")
        if self.max_iter < 1:
            raise ConfigError("classify.max_iter must be positive")


@dataclass(frozen=True)
class EvaluateOptions:
    """Options of ``embedtool evaluate`` (config section ``evaluate``)."""

    name: str = field(default="", metadata=option("Report folder name under reports/ (default: a UTC timestamp)."))
    k: tuple[int, ...] = (1, 5, 10)  # precision@k
    exclude_same_group: bool = False  # retrieval: also leave out the query's group (e.g. the same drum kit)
    robustness: bool = field(default=True, metadata=option("Run the re-identification test."))
    excerpt_seconds: tuple[float, ...] = (1.0, 3.0, 5.0, 10.0)
    degradations: tuple[str, ...] = DEGRADATIONS
    # excerpts per excerpt length (the same excerpts under every degradation); at most: a small library gets one
    # per two tracks (analysis.robustness.excerpts_per_length)
    excerpts: int = field(
        default=20,
        metadata=option(
            "Re-identification excerpts per excerpt length, at most (a small library gets one per two tracks)."
        ),
    )
    gain_db: float = -12.0
    mp3_compression: float = 0.5  # soundfile's MP3 compression level, constant bit rate (0.5: ~80 kbps at 16 kHz)
    # "auto" (the rule of `embedtool cluster -k auto`: silhouette), "labels" (k = number of labels), or a number
    cluster_k: str = "auto"
    baselines: bool = field(default=True, metadata=option("Compute the MFCC statistics baseline."))
    # the same network untrained, exported into a temporary folder
    untrained_baseline: bool = field(
        default=True, metadata=option("Compute the untrained-network baseline.", old=("--untrained",))
    )
    # A bundled model applied as it is (see training/pretrained.py): does training on this audio beat it?
    # "" = off; left out when it is the workspace's own model or was made for other feature settings. Its export
    # is kept in reports/.baselines/NAME and reused by the next run (only new tracks are embedded).
    pretrained_baseline: str = field(
        default="general",
        metadata=option("Bundled model to compare with, applied as it is (general; '' = none).", old=("--pretrained",)),
    )
    baseline_kind: Literal["mfcc", "logmel"] = "mfcc"
    n_mfcc: int = 20
    projection: Literal["auto", "tsne", "umap", "pca"] = "auto"
    max_points: int = 5000
    seed: int = field(default=0, metadata=option("Seed of excerpts, folds, clusters and the map."))

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not self.k or min(self.k) < 1:
            raise ConfigError("evaluate.k must be a list of positive integers")
        if self.excerpts < 1:
            raise ConfigError("evaluate.excerpts must be positive")
        if not self.excerpt_seconds or min(self.excerpt_seconds) <= 0:
            raise ConfigError("evaluate.excerpt_seconds must be positive lengths in seconds")
        unknown = [d for d in self.degradations if d not in DEGRADATIONS]
        if unknown:
            raise ConfigError(f"evaluate.degradations: unknown {', '.join(unknown)}; valid: {', '.join(DEGRADATIONS)}")
        if not 0 <= self.mp3_compression <= 1:
            raise ConfigError("evaluate.mp3_compression must be in 0..1")
        if self.cluster_k not in ("labels", "auto"):
            try:
                if int(self.cluster_k) < 1:
                    raise ValueError
            except ValueError:
                raise ConfigError(
                    f"evaluate.cluster_k must be 'labels', 'auto' or a positive number, not {self.cluster_k!r}"
                ) from None
        if any(ch in self.name for ch in "/\\") or self.name in (".", ".."):
            raise ConfigError(f"evaluate.name must be a plain folder name, not {self.name!r}")


@dataclass(frozen=True)
class DuplicatesOptions:
    """Options of ``embedtool duplicates`` (config section ``duplicates``). The defaults are measured by
    ``bench/bench_duplicates.py`` (docs/benchmarks.md, "Duplicates")."""

    near_copy: float = field(
        default=0.8,
        metadata=option("Near-copy: the share of both tracks' lengths on which their fingerprints agree, at least."),
    )
    min_shared_s: float = field(
        default=5.0, metadata=option("Shared material: the shortest passage reported, in seconds.")
    )
    # a passage: aligned landmark moments on one alignment, at least this many per second of it (copies hold
    # 10-16 a second, chance alignments of similar music 2-3), ...
    min_density: float = 5.0
    # ... no further apart than this (a quiet bar holds no peaks)
    max_gap_s: float = 3.0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not 0 < self.near_copy <= 1:
            raise ConfigError(f"duplicates.near_copy must be in (0, 1], not {self.near_copy}")
        if self.min_shared_s <= 0:
            raise ConfigError(f"duplicates.min_shared_s must be positive, not {self.min_shared_s}")
        if self.min_density <= 0 or self.max_gap_s <= 0:
            raise ConfigError("duplicates.min_density and duplicates.max_gap_s must be positive")
