"""Probe: how other ways of describing a track (and other models) would classify, on a workspace's labelled tracks.

Not a benchmark of the product: a quick, side-by-side check of descriptor ideas before building one. For each
model, every labelled track's windows go through the network once; the variants are pooled from the same stage
activations, then classified by the same logistic regression (standardised inputs, balanced classes) in grouped
stratified 5-fold CV (folds by the tracks' group, e.g. the drum kit). Prints macro-F1 at each C.

    .venv/bin/python bench/probe_descriptors.py --workspace ~/.cache/embedtool-bench-full/drums \\
        --model general --model ~/.cache/embedtool-bench-full/drums/model --augment 4

Variants: ``product`` (what embedtool exports: per-stage means over time in 2 frequency bands, energy-weighted
over windows, square-rooted), ``+std`` (temporal standard deviation beside it), ``time2`` (2 time bands within
each window: attack vs tail), ``power P`` (another power than the square root), ``kit-centred`` (each group's
mean removed, i.e. knowing the held-out kit's unlabelled tracks), ``augmented`` (with --augment K: K equalised,
gain-changed, Mel-shifted, time-stretched copies of each training track added to the classifier's training
set), and each pair of models' product descriptors side by side.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedGroupKFold

from embedtool.embedding.pooling import pool_descriptors
from embedtool.features.store import FeatureStore
from embedtool.features.windows import crop_many, window_starts
from embedtool.model.encoder import Encoder
from embedtool.model.network import DESCRIPTOR_BANDS
from embedtool.model.store import resolve_model_source

C_VALUES = (0.01, 0.1, 1.0)


def stage_pools(encoder: Encoder, windows: np.ndarray) -> dict[str, np.ndarray]:
    """Per-window activations of each stage, pooled several ways: {variant: (n_windows, dim)}."""
    pools: dict[str, list[torch.Tensor]] = {"mean": [], "std": [], "time2": []}
    with torch.no_grad():
        for x in encoder.net.stage_outputs(torch.from_numpy(windows)):  # (B, C, frames, bands)
            banded = F.adaptive_avg_pool2d(x, (x.shape[2], DESCRIPTOR_BANDS))
            pools["mean"].append(banded.mean(2).flatten(1))
            pools["std"].append(banded.std(2, unbiased=False).flatten(1))
            pools["time2"].append(F.adaptive_avg_pool2d(x, (2, DESCRIPTOR_BANDS)).flatten(1))
    return {k: torch.cat(v, 1).numpy().astype(np.float64) for k, v in pools.items()}


def product(encoder: Encoder, mel: np.ndarray) -> np.ndarray:
    """The track descriptor embedtool exports."""
    _, _, descriptors, energy = encoder.embed_track(mel, encoder.segment_frames // 2, descriptors=True)
    return pool_descriptors(descriptors, energy)


def describe(encoder: Encoder, mel: np.ndarray) -> dict[str, np.ndarray]:
    starts = window_starts(mel.shape[0], encoder.segment_frames, encoder.segment_frames // 2)
    windows = crop_many(mel, starts, encoder.segment_frames, encoder.pad_value)
    energy = encoder.window_energy(windows)
    weights = energy / energy.sum() if energy.sum() > 0 else np.full(len(energy), 1 / len(energy))
    per_window = stage_pools(encoder, windows)
    pooled = {k: (weights[:, None] * v).sum(0) for k, v in per_window.items()}
    # The "mean" pool is the network's own window descriptor, so the exported track descriptor comes from the
    # same forward pass.
    own = pool_descriptors(per_window["mean"], energy)
    out = {"product": own}
    if encoder.companion is not None:  # the exported descriptor appends the companion's (pooling is per element)
        out["product"] = np.concatenate([own, product(encoder.companion, mel)])
    out["+std"] = np.concatenate([own, np.sqrt(pooled["std"])])  # the variants: the first network's
    out["time2"] = np.sqrt(np.maximum(pooled["time2"], 0))
    for power in (0.25, 0.75, 1.0):
        out[f"power {power}"] = np.maximum(pooled["mean"], 0) ** power
    return out


def augment(mel: np.ndarray, log_offset: float, rng: np.random.Generator) -> np.ndarray:
    """A plausibly different recording of the same sound: equaliser curve (+-6 dB), gain (+-10 dB), a shift
    along the Mel axis (+-1.5 bands, a retuning), a time stretch (+-15%)."""
    frames, bands = mel.shape
    linear = np.maximum(np.exp(mel.astype(np.float64)) - log_offset, 0)
    curve = np.interp(np.linspace(0, 4, bands), np.arange(5), rng.uniform(-6, 6, 5)) + rng.uniform(-10, 10)
    linear = linear * 10 ** (curve / 10)
    shifted = np.clip(np.arange(bands) - rng.uniform(-1.5, 1.5), 0, bands - 1)
    linear = np.stack([np.interp(shifted, np.arange(bands), row) for row in linear])
    times = np.linspace(0, frames - 1, max(2, round(frames * rng.uniform(0.85, 1.15))))
    linear = np.stack([np.interp(times, np.arange(frames), linear[:, b]) for b in range(bands)], 1)
    return np.log(linear + log_offset).astype(np.float32)


def cross_validate(
    x: np.ndarray, labels: np.ndarray, groups: np.ndarray, C: float, extra: np.ndarray | None = None
) -> float:
    """Grouped 5-fold macro-F1; ``extra`` (n_tracks, K, dim) adds K copies of each training track."""
    predicted = np.empty_like(labels)
    for train, test in StratifiedGroupKFold(5, shuffle=True, random_state=0).split(x, labels, groups):
        xt, yt = x[train], labels[train]
        if extra is not None:
            xt = np.vstack([xt, extra[train].reshape(-1, x.shape[1])])
            yt = np.concatenate([yt, np.repeat(labels[train], extra.shape[1])])
        mu, sd = xt.mean(0), xt.std(0)
        sd[sd < 1e-12] = 1
        model = LogisticRegression(C=C, max_iter=3000, class_weight="balanced").fit((xt - mu) / sd, yt)
        predicted[test] = model.predict((x[test] - mu) / sd)
    return float(f1_score(labels, predicted, average="macro"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--model", action="append", help="bundled name or model folder (repeatable)")
    parser.add_argument("--augment", type=int, default=0, help="K augmented copies per track (0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    store = FeatureStore(args.workspace / "features")
    tracks = [t for t in (store.track(i) for i in store.track_ids()) if t.get("label")]
    labels = np.array([t["label"] for t in tracks])
    groups = np.array([t.get("group") or t["track_id"] for t in tracks])
    mels = [np.asarray(store.mel(t["track_id"]), dtype=np.float32) for t in tracks]
    log_offset = store.settings.log_offset
    rows: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    products = {}
    for spec in args.model or ["general"]:
        encoder = Encoder.load(resolve_model_source(spec))
        encoder.check_features(store.settings)
        described = [describe(encoder, mel) for mel in mels]
        variants = {k: np.stack([d[k] for d in described]) for k in described[0]}
        products[spec] = variants["product"]
        rows += [(f"{spec}: {k}", v, None) for k, v in variants.items()]
        centred = variants["product"].copy()
        for group in np.unique(groups):
            centred[groups == group] -= centred[groups == group].mean(0)
        rows.append((f"{spec}: kit-centred", centred, None))
        if args.augment:
            rng = np.random.default_rng(0)
            copies = np.array(
                [[product(encoder, augment(m, log_offset, rng)) for _ in range(args.augment)] for m in mels]
            )
            rows.append((f"{spec}: augmented x{args.augment}", variants["product"], copies))
    for a, b in itertools.combinations(products, 2):
        rows.append((f"{a} + {b}", np.hstack([products[a], products[b]]), None))
    print(f"{len(tracks)} labelled tracks, {len(set(labels))} labels, {len(set(groups))} groups")
    print(f"{'variant':60s} " + " ".join(f"C={c:<5g}" for c in C_VALUES))
    for name, x, extra in rows:
        scores = [cross_validate(x.astype(np.float64), labels, groups, c, extra) for c in C_VALUES]
        print(f"{name[:60]:60s} " + " ".join(f"{s:7.3f}" for s in scores), flush=True)


if __name__ == "__main__":
    main()
