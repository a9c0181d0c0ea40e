"""Building an index's landmark fingerprints (``indexing.fingerprint``) into its staged folder, when the options
ask for them and they fit the memory budget."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from embedtool.indexing.fingerprint import FingerprintSettings, fingerprint_library
from embedtool.progress import Progress

if TYPE_CHECKING:
    from embedtool.embedding.store import EmbeddingStore
    from embedtool.features.store import FeatureStore
    from embedtool.indexing.options import IndexOptions


def fingerprint_settings(features: FeatureStore, store: EmbeddingStore) -> FingerprintSettings:
    """The landmarks' settings for the export's tracks: of the fine peaks stored with the features when every
    track has them, else of the log-Mel features."""
    return FingerprintSettings.for_source("peaks" if features.has_peaks(store.tracks) else "mel")


def build_fingerprints(
    stage: Path, features: FeatureStore, store: EmbeddingStore, options: IndexOptions, progress: Progress | None
) -> dict[str, Any]:
    """Build the landmark fingerprints of every track of ``store`` into the staged index folder when asked (or, on
    auto, when they fit the memory budget); returns what meta.json records about them."""
    settings = fingerprint_settings(features, store)
    estimate = settings.estimated_bytes(store.duration_s())
    if options.fingerprints == "off":
        return {"built": False, "reason": "index.fingerprints is off"}
    if options.fingerprints == "auto" and estimate > options.memory_budget_mb * 2**20:
        return {"built": False, "reason": f"about {estimate / 2**20:.0f} MB, over index.memory_budget_mb"}
    built = fingerprint_library(features, store.tracks, settings, progress)
    paths = built.save(stage)
    return {
        "built": True,
        "landmarks": len(built),
        "bytes": sum(p.stat().st_size for p in paths),
        "settings": settings.to_dict(),
    }
