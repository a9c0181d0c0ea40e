"""Probe: track descriptors with MFCC statistics appended, against each alone, on workspaces' labelled tracks.

Not a benchmark of the product: a side-by-side check of one descriptor idea before building it. Each workspace
must hold an export with descriptors and labels (e.g. the suite's workspaces). Every variant goes through the
same classifier and grouped 5-fold CV as ``evaluate`` (``evaluate_system``; standardised columns, C by inner
grouped CV). Variants: ``descriptors`` (what classify reads today), ``mfcc`` (the baseline), ``hybrid``
(descriptors beside the MFCC statistics), ``hybrid-balanced`` (the MFCC block scaled so that both blocks weigh
the same under the classifier's L2 penalty once standardised: by sqrt(descriptor dims / MFCC dims)).

    .venv/bin/python bench/probe_hybrid.py ~/.cache/embedtool-bench/suite/drums-n120/ws ...
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from embedtool.analysis.baselines import track_baseline_vectors
from embedtool.analysis.evaluate import evaluate_system
from embedtool.analysis.labelled import LabelledData
from embedtool.analysis.options import ClassifyOptions, ClusterOptions, EvaluateOptions
from embedtool.embedding.store import EmbeddingStore
from embedtool.features.store import FeatureStore


def standardise(x: np.ndarray) -> np.ndarray:
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    return (x - x.mean(axis=0)) / scale


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspaces", type=Path, nargs="+")
    args = parser.parse_args()
    options = EvaluateOptions(name="probe", k=(1, 5), exclude_same_group=True, robustness=False, seed=0)
    classify = ClassifyOptions(cv=5, plots=False)
    results = {}
    for ws in args.workspaces:
        store = EmbeddingStore(ws / "embeddings")
        data = LabelledData.from_store(store, False, True)
        mfcc = standardise(track_baseline_vectors(FeatureStore(ws / "features"), data.track_ids).astype(np.float64))
        desc = np.asarray(data.descriptors, dtype=np.float64)
        balance = np.sqrt(desc.shape[1] / mfcc.shape[1])
        variants = {
            "descriptors": data,
            "mfcc": replace(data, descriptors=mfcc.astype(np.float32)),
            "hybrid": replace(data, descriptors=np.hstack([desc, mfcc]).astype(np.float32)),
            "hybrid-balanced": replace(data, descriptors=np.hstack([desc, balance * mfcc]).astype(np.float32)),
        }
        row = {}
        for name, variant in variants.items():
            figures = evaluate_system(variant, options, classify, ClusterOptions(plots=False), None)
            row[name] = round(figures["classification"]["macro_f1"], 3)
        results[str(ws)] = row
        print(ws, json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
