"""The Python API under the CLI: extract, train, index and query a folder of audio without the command line.

    python examples/python_api.py [AUDIO_FOLDER] [WORKSPACE]

Defaults to the bundled CC0 percussion set and ./api-example-workspace, with a tiny training run (~1 min).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from embedtool import pipeline
from embedtool.audio.settings import FeatureSettings
from embedtool.demo import SAMPLE_AUDIO
from embedtool.features.extract import run_extract
from embedtool.features.options import ExtractOptions
from embedtool.indexing.options import IndexOptions
from embedtool.model.settings import TrainSettings
from embedtool.query.searcher import Searcher
from embedtool.training.trainer import train
from embedtool.workspace import Workspace


def main() -> None:
    audio = Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLE_AUDIO
    workspace = Workspace(Path(sys.argv[2] if len(sys.argv) > 2 else "api-example-workspace").resolve())

    report = run_extract([audio], workspace.features, FeatureSettings(), ExtractOptions())
    print(f"features: {report.tracks} tracks, {report.done} newly extracted, {report.failed} failed")

    settings = dataclasses.replace(TrainSettings.from_preset("default"), epochs=2, steps_per_epoch=30, batch_size=32)
    train(workspace.features, workspace.split, workspace.model, settings)

    pipeline.index(workspace, IndexOptions())
    searcher = Searcher.open(workspace)
    query = next(audio.rglob("*.flac"))
    result = searcher.query_file(query, mode="similar", k=5)
    print(f"tracks that sound like {query.name}:")
    for match in result.matches:
        print(f"  {match.score:.3f}  {match.path}")


if __name__ == "__main__":
    main()
