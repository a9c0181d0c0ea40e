"""Building an index's landmark fingerprints (``indexing.fingerprint``) into its staged folder, when the options
ask for them: in memory while they fit the memory budget, else in sorted blocks merged on disk."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedtool.indexing.fingerprint import (
    BYTES_PER_LANDMARK,
    FILES,
    FingerprintSettings,
    fingerprint_library,
    fingerprint_library_on_disk,
)
from embedtool.progress import Progress

if TYPE_CHECKING:
    from embedtool.embedding.store import EmbeddingStore
    from embedtool.engine.base import Engine
    from embedtool.features.store import FeatureStore
    from embedtool.indexing.options import IndexOptions


def fingerprint_settings(features: FeatureStore, store: EmbeddingStore) -> FingerprintSettings:
    """The landmarks' settings for the export's tracks: of the fine peaks stored with the features when every
    track has them, else of the log-Mel features."""
    return FingerprintSettings.for_source("peaks" if features.has_peaks(store.tracks) else "mel")


def block_landmarks(budget_bytes: int) -> int:
    """Landmarks a block holds when fingerprints are built on disk: a quarter of the memory budget."""
    return max(1 << 16, int(budget_bytes / 4 // BYTES_PER_LANDMARK))


def build_fingerprints(
    stage: Path,
    features: FeatureStore,
    store: EmbeddingStore,
    options: IndexOptions,
    progress: Progress | None,
    engine: Engine | None = None,
) -> dict[str, Any]:
    """Build the landmark fingerprints of every track of ``store`` into the staged index folder unless they are off
    (past the memory budget in blocks of a quarter of it, made as tasks on ``engine`` when one is given, merged on
    disk); returns what meta.json records."""
    settings = fingerprint_settings(features, store)
    estimate = settings.estimated_bytes(store.duration_s())
    if options.fingerprints == "off":
        return {"built": False, "reason": "index.fingerprints is off"}
    budget = options.memory_budget_mb * 2**20
    if estimate > budget:
        # Over the memory budget: built in sorted blocks of a quarter of it, merged on disk; memory-mapped to query.
        landmarks = fingerprint_library_on_disk(
            features, store.tracks, settings, stage, block_landmarks(budget), progress, engine=engine
        )
        paths = [stage / name for name in FILES]
    else:
        built = fingerprint_library(features, store.tracks, settings, progress)
        landmarks, paths = len(built), built.save(stage)
    return {
        "built": True,
        "landmarks": landmarks,
        "bytes": sum(p.stat().st_size for p in paths),
        "settings": settings.to_dict(),
        **({"on_disk": True} if estimate > budget else {}),
    }
