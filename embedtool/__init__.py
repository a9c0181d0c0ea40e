"""embedtool: learn, index and query audio embeddings from your own audio, without labels.

The public API is the stages as the commands run them (``embedtool.pipeline``) and what answers queries::

    import embedtool
    ws = embedtool.Workspace.at("my-library")
    embedtool.extract(ws, ["~/Music"])
    embedtool.train(ws)              # or embedtool.adopt(ws, "general"): the bundled model, in seconds
    embedtool.index(ws)              # exports embeddings first when they are stale; updates an existing index
    embedtool.remove(ws, ["old-album/"], dry_run=True)   # which tracks would leave every artefact
    result = embedtool.Searcher.open(ws).query_file("clip.mp3", mode="identify")
    mix = embedtool.more_like_these(embedtool.Searcher.open(ws), ["a.mp3", "b.mp3", "c.mp3"], k=20)

Names are imported on first use, so ``import embedtool`` stays cheap (no torch until a stage needs it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from embedtool._version import __version__

# public name -> module that defines it
_EXPORTS = {
    "Workspace": "embedtool.workspace",
    "extract": "embedtool.pipeline",
    "train": "embedtool.pipeline",
    "adopt": "embedtool.pipeline",
    "embed": "embedtool.pipeline",
    "index": "embedtool.pipeline",
    "remove": "embedtool.pipeline",
    "cluster": "embedtool.pipeline",
    "classify": "embedtool.pipeline",
    "predict": "embedtool.pipeline",
    "evaluate": "embedtool.pipeline",
    "duplicates": "embedtool.pipeline",
    "embeddings_staleness": "embedtool.pipeline",
    "Searcher": "embedtool.query.searcher",
    "QueryResult": "embedtool.query.searcher",
    "more_like_these": "embedtool.query.seeds",
    "leave_out": "embedtool.query.seeds",
    "seed_tracks": "embedtool.query.seeds",
    "m3u": "embedtool.query.seeds",
    "expand_queries": "embedtool.query.sources",
    "audacity_labels": "embedtool.query.audacity",
    "LabelTrackWriter": "embedtool.query.audacity",
    "ProjectConfig": "embedtool.config",
    "load_project_config": "embedtool.config",
    "Encoder": "embedtool.model.encoder",
    "FeatureSettings": "embedtool.audio.settings",
    "TrainSettings": "embedtool.model.settings",
    "ExtractOptions": "embedtool.features.options",
    "EmbedOptions": "embedtool.embedding.options",
    "IndexOptions": "embedtool.indexing.options",
    "NeighbourOptions": "embedtool.query.options",
    "ClusterOptions": "embedtool.analysis.options",
    "ClassifyOptions": "embedtool.analysis.options",
    "EvaluateOptions": "embedtool.analysis.options",
    "DuplicatesOptions": "embedtool.analysis.options",
    "EngineOptions": "embedtool.engine",
    "FeatureStore": "embedtool.features.store",
    "EmbeddingStore": "embedtool.embedding.store",
    "EmbedtoolError": "embedtool.errors",
}

__all__ = [
    "__version__",
    "Workspace",
    "extract",
    "train",
    "adopt",
    "embed",
    "index",
    "remove",
    "cluster",
    "classify",
    "predict",
    "evaluate",
    "duplicates",
    "embeddings_staleness",
    "Searcher",
    "QueryResult",
    "more_like_these",
    "leave_out",
    "seed_tracks",
    "m3u",
    "expand_queries",
    "audacity_labels",
    "LabelTrackWriter",
    "ProjectConfig",
    "load_project_config",
    "Encoder",
    "FeatureSettings",
    "TrainSettings",
    "ExtractOptions",
    "EmbedOptions",
    "IndexOptions",
    "NeighbourOptions",
    "ClusterOptions",
    "ClassifyOptions",
    "EvaluateOptions",
    "DuplicatesOptions",
    "EngineOptions",
    "FeatureStore",
    "EmbeddingStore",
    "EmbedtoolError",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'embedtool' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from embedtool.analysis.options import ClassifyOptions, ClusterOptions, DuplicatesOptions, EvaluateOptions
    from embedtool.audio.settings import FeatureSettings
    from embedtool.config import ProjectConfig, load_project_config
    from embedtool.embedding.options import EmbedOptions
    from embedtool.embedding.store import EmbeddingStore
    from embedtool.engine import EngineOptions
    from embedtool.errors import EmbedtoolError
    from embedtool.features.options import ExtractOptions
    from embedtool.features.store import FeatureStore
    from embedtool.indexing.options import IndexOptions
    from embedtool.model.encoder import Encoder
    from embedtool.model.settings import TrainSettings
    from embedtool.pipeline import (
        adopt,
        classify,
        cluster,
        duplicates,
        embed,
        embeddings_staleness,
        evaluate,
        extract,
        index,
        predict,
        train,
    )
    from embedtool.query.audacity import LabelTrackWriter, audacity_labels
    from embedtool.query.options import NeighbourOptions
    from embedtool.query.searcher import QueryResult, Searcher
    from embedtool.query.seeds import leave_out, m3u, more_like_these, seed_tracks
    from embedtool.query.sources import expand_queries
    from embedtool.workspace import Workspace
