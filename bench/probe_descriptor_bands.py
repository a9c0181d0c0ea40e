"""Probe: descriptor variants of the bundled model on the suite's workspaces, through evaluate's own classifier.

Not a benchmark of the product: the side-by-side check behind decision 0013. For each workspace (one of
bench_suite's), every labelled track's windows go through the bundled ``general`` network once; each stage's
activations are averaged over time and over 2, 4 or 8 frequency bands (at most as many as the stage has bins),
energy-weighted over the windows and square-rooted as the product pools them; ``+mfcc`` / ``+logmel`` append the
MFCC / log-Mel statistics of the track's frames. Every variant goes through ``evaluate_system`` (standardised
columns, C by inner grouped CV, grouped 5-fold).

    S=~/.cache/embedtool-bench/suite
    .venv/bin/python bench/probe_descriptor_bands.py $S/music-dev-n120/ws $S/drums-n120/ws \\
        $S/speech-dev-n120/ws $S/voices-dev-n120/ws
    ... --c-grid 0.001 0.01 0.1 1 10     # another grid for the inner CV's choice of C (folds.C_GRID)

Besides the variants, ``exported`` is what the workspace's export holds (what classify reads) and ``mfcc`` the
MFCC statistics alone.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import embedtool.analysis.folds as folds_module
from embedtool.analysis.baselines import track_baseline_vectors
from embedtool.analysis.evaluate import evaluate_system
from embedtool.analysis.labelled import LabelledData
from embedtool.analysis.options import ClassifyOptions, ClusterOptions, EvaluateOptions
from embedtool.embedding.store import EmbeddingStore
from embedtool.features.store import FeatureStore
from embedtool.features.windows import crop_many, silence_floor, window_starts
from embedtool.model.encoder import Encoder
from embedtool.model.store import resolve_model_source

BANDS = (2, 4, 8)


def banded(encoder: Encoder, mel: np.ndarray) -> dict[int, np.ndarray]:
    """{bands: the track's descriptor pooled over that many frequency bands per stage}."""
    seg = encoder.segment_frames
    windows = crop_many(
        mel, window_starts(mel.shape[0], seg, seg // 2), seg, silence_floor(encoder.feature_settings.log_offset)
    )
    energy = encoder.window_energy(windows)
    weights = energy / energy.sum() if energy.sum() > 0 else np.full(len(energy), 1 / len(energy))
    parts: dict[int, list[torch.Tensor]] = {b: [] for b in BANDS}
    with torch.no_grad():
        for i in range(0, len(windows), 64):
            stages: dict[int, list[torch.Tensor]] = {b: [] for b in BANDS}
            batch = torch.from_numpy(windows[i : i + 64])
            for x in encoder.net.stage_outputs(batch):  # (batch, channels, frames, bins)
                for b in BANDS:
                    stages[b].append(F.adaptive_avg_pool2d(x, (x.shape[2], min(b, x.shape[3]))).mean(2).flatten(1))
            for b in BANDS:
                parts[b].append(torch.cat(stages[b], 1))
    out = {}
    for b in BANDS:
        per_window = torch.cat(parts[b]).numpy().astype(np.float64)
        out[b] = np.sqrt(np.maximum((weights[:, None] * per_window).sum(0), 0)).astype(np.float32)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspaces", type=Path, nargs="+")
    parser.add_argument("--c-grid", type=float, nargs="+", help="the inner CV's candidates of C")
    args = parser.parse_args()
    if args.c_grid:
        folds_module.C_GRID = tuple(sorted(args.c_grid))
    torch.set_num_threads(2)
    options = EvaluateOptions(name="probe", k=(1, 5), exclude_same_group=True, robustness=False, seed=0)
    classify = ClassifyOptions(cv=5, plots=False)
    encoder = Encoder.load(resolve_model_source("general"))
    for ws in args.workspaces:
        data = LabelledData.from_store(EmbeddingStore(ws / "embeddings"), False, True)
        features = FeatureStore(ws / "features")
        described = [banded(encoder, np.asarray(features.mel(t), np.float32)) for t in data.track_ids]
        by_bands = {b: np.stack([d[b] for d in described]) for b in BANDS}
        mfcc = track_baseline_vectors(features, data.track_ids).astype(np.float32)
        logmel = track_baseline_vectors(features, data.track_ids, kind="logmel").astype(np.float32)
        variants = {"exported": np.asarray(data.descriptors, np.float32), "mfcc": mfcc}
        variants.update({f"b{b}": by_bands[b] for b in BANDS})
        variants.update({f"b{b}+mfcc": np.hstack([by_bands[b], mfcc]) for b in BANDS})
        variants["b4+logmel"] = np.hstack([by_bands[4], logmel])
        row = {}
        for name, x in variants.items():
            figures = evaluate_system(
                replace(data, descriptors=x), options, classify, ClusterOptions(plots=False), None
            )
            row[name] = round(figures["classification"]["macro_f1"], 3)
        print(ws.parent.name, json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
