"""Benchmark of `embedtool train`: throughput on this CPU, and embedding quality on music-dev.

1. Throughput (triplets/s) of the ``default`` and ``thesis`` presets, each measured two ways in the same run:
   the real data pipeline (``trainer.train`` reading memory-mapped features, sampling, cropping, augmenting)
   and the same network/loss/optimiser step fed with in-memory synthetic tensors (the compute floor).
2. Quality on ``~/.cache/embedtool-corpora/music-dev`` (82 game-soundtrack tracks, 3 styles): train the default
   preset on the training split for a time budget, then compare, on the same split:
   - validation same-track recall@1 (segments of held-out tracks; the nearest other segment is from the same
     track), and effective rank of the embeddings;
   - style accuracy of a logistic regression on pooled track embeddings (mean of the segment embeddings,
     L2-normalised), trained on the training tracks and tested on the held-out tracks, and in 5-fold
     stratified cross-validation over all tracks;
   for the trained network, the same network untrained (same input standardisation) and MFCC statistics
   (mean + std of 20 MFCCs per track).
   The music corpus' ``group`` column equals its style label, so a split by group would hold out whole
   styles: training here splits by track.

    .venv/bin/python bench/bench_train.py                        # both parts, ~15 min of training
    .venv/bin/python bench/bench_train.py --minutes 5 --skip-throughput
    .venv/bin/python bench/bench_train.py --skip-throughput --epochs 8 --threads 1   # ~25 min here
    .venv/bin/python bench/bench_train.py --features-from ~/.cache/embedtool-bench/music-dev/features

Prints tables and writes bench/results/bench_train-<time>.json.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import MUSIC_DEV, log, pipeline_rate, print_table, result_path, synthetic_rate, timestamp, write_json


def prepare_features(work: Path, args: argparse.Namespace) -> Path:
    from embedtool.artefacts import read_meta
    from embedtool.audio.settings import FeatureSettings
    from embedtool.features.extract import run_extract
    from embedtool.features.options import ExtractOptions

    features = work / "features"
    if (features / "meta.json").is_file():
        return features
    if args.features_from and (Path(args.features_from).expanduser() / "meta.json").is_file():
        source = Path(args.features_from).expanduser()
        meta = read_meta(source, "features")
        if meta.config == FeatureSettings().__dict__:
            log(f"copying features from {source}")
            shutil.copytree(source, features)
            return features
    t = time.perf_counter()
    report = run_extract([MUSIC_DEV], features, FeatureSettings(), ExtractOptions(jobs=args.jobs))
    log(f"extracted {report.tracks} tracks ({report.total_hours:.2f} h) in {time.perf_counter() - t:.0f} s")
    return features


# --- part 1: throughput -------------------------------------------------------------------------------------


def throughput(features: Path, work: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    from embedtool.features.store import FeatureStore
    from embedtool.features.windows import segment_frames_for
    from embedtool.model.settings import TrainSettings

    fs = FeatureStore(features).settings
    rows = []
    for preset, steps in (("default", args.steps_default), ("thesis", args.steps_thesis)):
        s = replace(TrainSettings.from_preset(preset), device="cpu")
        seg = segment_frames_for(s.segment_seconds, fs.frames_per_second)
        # The thesis preset is defined on 128-mel features; here both run on the corpus' 64-mel features, so the
        # thesis figure is for 5 s x 64 mels (about half the compute of the seed's 5 s x 128 mels).
        synth = synthetic_rate(s, fs.n_mels, seg, steps)
        real = pipeline_rate(features, work, s, steps)
        rows.append(
            {
                "preset": preset,
                "segment": f"{seg}x{fs.n_mels}",
                "width": s.width,
                "batch": s.batch_size,
                "augment": s.augment,
                "pipeline_triplets_per_s": real,
                "synthetic_triplets_per_s": synth,
                "pipeline_over_synthetic": real / synth,
            }
        )
        log(f"throughput {preset}: pipeline {real:.1f}/s, synthetic {synth:.1f}/s")
    return rows


# --- part 2: quality ----------------------------------------------------------------------------------------


def track_embeddings(encoder: Any, mels: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Pooled track vectors (mean of non-overlapping segment embeddings, L2-normalised) and the segments."""
    pooled, segments = [], []
    for mel in mels:
        _, emb = encoder.embed_track(mel, encoder.segment_frames)
        v = emb.mean(0)
        pooled.append(v / max(np.linalg.norm(v), 1e-12))
        segments.append(emb)
    return np.stack(pooled), segments


def mfcc_vectors(mels: list[np.ndarray], n_mfcc: int = 20) -> np.ndarray:
    from scipy.fft import dct

    out = []
    for mel in mels:
        c = dct(np.asarray(mel, dtype=np.float64), type=2, norm="ortho", axis=1)[:, :n_mfcc]
        out.append(np.concatenate([c.mean(0), c.std(0)]))
    return np.stack(out)


def style_scores(x: np.ndarray, labels: np.ndarray, train_mask: np.ndarray) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model() -> Any:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))

    clf = model().fit(x[train_mask], labels[train_mask])
    held_out = float((clf.predict(x[~train_mask]) == labels[~train_mask]).mean())
    cv = cross_val_score(model(), x, labels, cv=StratifiedKFold(5, shuffle=True, random_state=0))
    return {"style_acc_val": held_out, "style_acc_cv5": float(cv.mean())}


def quality(features: Path, work: Path, args: argparse.Namespace, rate: float | None) -> dict[str, Any]:
    from embedtool.features.store import FeatureStore
    from embedtool.model.encoder import Encoder
    from embedtool.model.settings import TrainSettings
    from embedtool.training.splits import load_split
    from embedtool.training.trainer import train
    from embedtool.training.validation import collapse_stats, retrieval_recall, validation_windows

    store = FeatureStore(features)
    settings = replace(TrainSettings.from_preset("default"), split_by="track", val_fraction=0.2, device="cpu")
    # Time box: as many epochs as fit the budget at the measured pipeline rate (validation adds a little).
    rate = rate or 60.0
    total_steps = int(args.minutes * 60 * rate / settings.batch_size)
    epochs = args.epochs or max(1, min(40, total_steps // settings.steps_per_epoch))
    settings = replace(settings, epochs=epochs)
    log(
        f"quality: training default preset for {epochs} epochs x {settings.steps_per_epoch} steps (~{args.minutes} min)"
    )

    def on_event(e: dict[str, Any]) -> None:
        if e["event"] == "epoch":
            nan = float("nan")
            log(
                f"  epoch {e['epoch']}: loss {e['train_loss']:.3f}"
                f" val recall@1 {e.get('val_recall_at_1', nan):.3f} val acc {e.get('val_triplet_accuracy', nan):.3f}"
                f" rank {e.get('val_effective_rank', 0):.1f} {e['triplets_per_s']:.0f} triplets/s"
            )

    report = train(features, work / "split", work / "model", settings, progress=on_event)
    split = load_split(work / "split")
    ids = [t["track_id"] for t in store.tracks]
    labels = np.array([t["label"] for t in store.tracks])
    train_mask = np.array([split[i] == "train" for i in ids])
    mels = [np.asarray(store.mel(i), dtype=np.float32) for i in ids]

    trained = Encoder.load(work / "model")
    untrained = Encoder.untrained(store.settings, trained.train_settings, seed=0)
    untrained.set_input_stats(float(trained.net.input_mean), float(trained.net.input_std))
    val_mels = [m for m, keep in zip(mels, ~train_mask, strict=True) if keep]
    windows, owners = validation_windows(val_mels, trained.segment_frames, 8, trained.pad_value)
    rows = []
    for name, enc in (("trained", trained), ("untrained", untrained)):
        t = time.perf_counter()
        pooled, _ = track_embeddings(enc, mels)
        seg_emb = enc.embed_windows(windows)
        rows.append(
            {
                "method": name,
                **retrieval_recall(seg_emb, owners, (1, 5)),
                **collapse_stats(seg_emb),
                **style_scores(pooled, labels, train_mask),
                "embed_s": time.perf_counter() - t,
            }
        )
    rows.append({"method": "mfcc-stats", **style_scores(mfcc_vectors(mels), labels, train_mask)})
    return {
        "train": {
            "epochs": report.epochs_run,
            "steps": report.steps,
            "seconds": report.seconds,
            "triplets_per_s": report.triplets_per_s,
            "best_epoch": report.best_epoch,
            "train_tracks": report.train_tracks,
            "val_tracks": report.val_tracks,
            "hours": store.total_frames() / store.settings.frames_per_second / 3600,
        },
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(Path.home() / ".cache" / "embedtool-bench-train"))
    parser.add_argument("--features-from", default=None, help="copy a ready music-dev features artefact")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=15.0, help="training time budget for the quality part")
    parser.add_argument("--epochs", type=int, default=0, help="quality part: epochs (default: from --minutes)")
    parser.add_argument("--steps-default", type=int, default=20)
    parser.add_argument("--steps-thesis", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    features = prepare_features(work, args)
    results: dict[str, Any] = {"threads": args.threads, "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    rate = None
    if not args.skip_throughput:
        results["throughput"] = throughput(features, work, args)
        print_table("throughput (triplets/s, this CPU)", results["throughput"])
        rate = results["throughput"][0]["pipeline_triplets_per_s"]
    if not args.skip_quality:
        results["quality"] = quality(features, work, args, rate)
        print_table(f"quality on music-dev ({results['quality']['train']})", results["quality"]["rows"])
    out = write_json(result_path("bench_train", timestamp()), results)
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
