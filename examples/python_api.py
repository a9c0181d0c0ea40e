"""The Python API under the CLI: extract, train, index and query a folder of audio without the command line.

    python examples/python_api.py [AUDIO_FOLDER] [WORKSPACE]

Defaults to the bundled CC0 percussion set and ./api-example-workspace, with a short training run (~1 min).
Every call here is one the CLI makes: ``embedtool.extract`` is `embedtool extract`, and so on.
"""

from __future__ import annotations

import sys
from pathlib import Path

import embedtool
from embedtool.demo import SAMPLE_AUDIO


def main() -> None:
    audio = Path(sys.argv[1]) if len(sys.argv) > 1 else SAMPLE_AUDIO
    workspace = embedtool.Workspace.at(sys.argv[2] if len(sys.argv) > 2 else "api-example-workspace")

    report = embedtool.extract(workspace, [audio])
    print(f"features: {report.tracks} tracks, {report.done} newly extracted, {report.failed} failed")

    settings = embedtool.TrainSettings.from_preset("default").replace(epochs=2, steps_per_epoch=30, batch_size=32)
    embedtool.train(workspace, settings)  # or embedtool.adopt(workspace, "general"): the bundled model, in seconds

    embedtool.index(workspace)  # exports the embeddings first, since they are missing
    searcher = embedtool.Searcher.open(workspace)
    query = next(audio.rglob("*.flac"))
    result = searcher.query_file(query, mode="similar", k=5)
    print(f"tracks that sound like {query.name}:")
    for match in result.matches:
        print(f"  {match.score:.3f}  {match.path}")


if __name__ == "__main__":
    main()
