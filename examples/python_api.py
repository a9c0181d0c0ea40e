"""The Python API under the CLI: extract, train, index and query a folder of audio without the command line.

    python examples/python_api.py [AUDIO_FOLDER] [WORKSPACE]

Defaults to the bundled CC0 percussion set and ./api-example-workspace, with a short training run (~1 min).
Every call here is one the CLI makes: ``embedtool.extract`` is `embedtool extract`, the settings come from the
``embedtool.yaml`` the CLI would read (none: the defaults), queries name files, folders or library tracks as
`embedtool neighbours` takes them, and the answers are written as Audacity label tracks as its ``--labels-dir``
writes them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import embedtool
from embedtool.demo import SAMPLE_AUDIO


def main(audio: Path, workspace_dir: Path, train: embedtool.TrainSettings | None = None) -> list[Path]:
    """Make the workspace from ``audio`` and answer a few queries; returns the label tracks written."""
    config = embedtool.load_project_config()  # embedtool.yaml here or in a folder above, as the CLI finds it
    workspace = embedtool.Workspace.at(workspace_dir)

    report = embedtool.extract(workspace, [audio], config.settings("features"), config.settings("extract"))
    print(f"features: {report.tracks} tracks, {report.done} newly extracted, {report.failed} failed")

    settings = train or config.settings("train").replace(epochs=2, steps_per_epoch=30, batch_size=32)
    embedtool.train(workspace, settings)  # or embedtool.adopt(workspace, "general"): the bundled model, in seconds

    embedtool.index(workspace, config.settings("index"))  # exports the embeddings first, since they are missing
    searcher = embedtool.Searcher.open(workspace, config.settings("neighbours"))
    queries = embedtool.expand_queries([audio])[:3]  # a folder stands for every audio file under it
    labels = embedtool.LabelTrackWriter(Path(workspace_dir) / "labels", searcher.roots)
    written = []
    for query in queries:
        result = searcher.query(query, mode="similar", k=5)
        print(f"tracks that sound like {Path(query).name}:")
        for match in result.matches:
            print(f"  {match.score:.3f}  {match.path}")
        written.append(labels.write(query, result))  # File > Import > Labels in Audacity, beside the query
    return written


if __name__ == "__main__":
    main(
        Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLE_AUDIO,
        Path(sys.argv[2] if len(sys.argv) > 2 else "api-example-workspace"),
    )
