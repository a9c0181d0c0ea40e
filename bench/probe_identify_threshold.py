"""Probe: what other no-match thresholds would do for identify on one of bench_suite's workspaces.

Not a benchmark of the product: the check behind the note on one-shot libraries in docs/benchmarks.md (evaluation
suite). The suite's re-identification excerpts (``suite_reid.excerpts``: same seed, 10 dB of real background, mp3 at
128 kbit/s) are asked through ``neighbours --mode identify``'s path, with their file in the library and left out;
for a grid of thresholds it prints the share named right *and* accepted by the embeddings' confidence alone, and
the share of the impostors accepted (the fingerprints' own accepts are not counted, so it is a lower bound of what
identify answers).

    .venv/bin/python bench/probe_identify_threshold.py ~/.cache/embedtool-bench/suite/drums-n120/ws
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from suite_reid import excerpts

from embedtool.audio.peaks import PeakTracker
from embedtool.errors import InputError
from embedtool.features.frontend import featurise_query
from embedtool.features.store import FeatureStore
from embedtool.query.searcher import Searcher
from embedtool.workspace import Workspace

GRID = (1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2.0, 2.2, 2.5, 3.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--background", type=Path, default=Path("~/.cache/embedtool-corpora/background"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    ws = Workspace(args.workspace.expanduser())
    features = FeatureStore(ws.features)
    searcher = Searcher.open(ws)
    rows = []  # (confidence with the file in, right first?, confidence with it left out, threshold used today)
    with tempfile.TemporaryDirectory(prefix="probe-identify-") as tmp:
        for q in excerpts(ws, args.background.expanduser(), Path(tmp), 60, 3.0, 10.0, 128, 0):
            tracker = PeakTracker(features.settings.sample_rate)
            mel, _ = featurise_query(q["path"], features.settings, on_block=tracker.push)
            peaks = tracker.finish()
            try:
                found = searcher.query_mel(mel, mode="identify", k=5, peaks=peaks)
                alone = searcher.query_mel(mel, mode="identify", k=5, peaks=peaks, exclude_track=q["track_id"])
            except InputError:
                continue
            right = found.best is not None and found.best.track_id == q["track_id"]
            rows.append((found.confidence or 0.0, right, alone.confidence or 0.0, found.threshold or 0.0))
    table = np.array(rows, dtype=np.float64)
    print(f"{len(rows)} excerpts; thresholds used today {np.unique(table[:, 3].round(2)).tolist()}")
    for threshold in GRID:
        accepted_right = np.mean((table[:, 0] >= threshold) & (table[:, 1] == 1))
        print(f"threshold {threshold:.1f}: right and accepted {accepted_right:.3f}, impostors accepted "
              f"{np.mean(table[:, 2] >= threshold):.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
