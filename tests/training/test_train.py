"""`embedtool train` end to end: learning, resume, artefacts, split hygiene, bad input, CLI."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import SEPARATING, TINY, extract_features, run_cli

from embedtool.artefacts import read_meta
from embedtool.audio.settings import FeatureSettings
from embedtool.errors import IncompatibleArtefactError, InputError, MissingArtefactError
from embedtool.features.store import FeatureStore, ShardWriter, commit
from embedtool.model.encoder import Encoder
from embedtool.model.settings import TrainSettings
from embedtool.training.augment import Augmenter
from embedtool.training.splits import ensure_split, load_split
from embedtool.training.trainer import TrainingInterrupted, partial_dir_for, train


def synthetic_features(directory: Path, frames: list[int], seed: int = 0, fs: FeatureSettings | None = None) -> Path:
    """A features artefact written directly from random log-Mel matrices (one per entry of ``frames``)."""
    fs = fs or FeatureSettings()
    rng = np.random.default_rng(seed)
    writer = ShardWriter(directory, fs)
    for i, n in enumerate(frames):
        record = {"track_id": f"{i:016x}", "path": f"/synthetic/{i}.wav", "label": f"c{i % 2}", "group": None}
        writer.add({**record, "duration_s": n / fs.frames_per_second}, rng.normal(-4, 2, (n, fs.n_mels)))
    commit(directory, writer.flush(), fs)
    return directory


def knn_accuracy(encoder: Encoder, store: FeatureStore, split: dict[str, str], degrade: bool) -> float:
    """1-NN class accuracy of held-out tracks' segments against the training tracks' segments."""
    aug = Augmenter(TrainSettings(), store.settings.log_offset, store.settings.power)
    rng = np.random.default_rng(0)
    emb: dict[str, list] = {"train": [], "val": []}
    labels: dict[str, list] = {"train": [], "val": []}
    for t in store.tracks:
        mel = np.asarray(store.mel(t["track_id"]), dtype=np.float32)
        subset = split[t["track_id"]]
        if subset == "val" and degrade:  # a noisy (10 dB SNR coloured noise) and 6 dB quieter query
            lin = aug.mix(aug.to_linear(mel.astype(np.float64)), aug.coloured_noise(*mel.shape, rng), 10.0)
            mel = aug.to_log(lin * 10 ** (-6 / 20))
        _, e = encoder.embed_track(mel, encoder.segment_frames)
        emb[subset].append(e)
        labels[subset] += [t["label"]] * len(e)
    train_x, val_x = np.concatenate(emb["train"]), np.concatenate(emb["val"])
    nearest = np.argmax(val_x @ train_x.T, axis=1)
    return float((np.asarray(labels["train"])[nearest] == np.asarray(labels["val"])).mean())


def test_training_learns_embeddings_that_separate_classes(class_features: Path, tmp_path: Path) -> None:
    settings = SEPARATING
    report = train(class_features, tmp_path / "split", tmp_path / "model", settings)
    assert report.epochs_run == 3 and report.steps == 75 and report.val_tracks == 6
    assert report.history[-1]["val_triplet_accuracy"] >= 0.9
    assert report.history[-1]["val_recall_at_1"] >= 0.8
    assert report.history[-1]["val_effective_rank"] > 2.0  # no collapse
    store = FeatureStore(class_features)
    split = load_split(tmp_path / "split")
    trained = Encoder.load(tmp_path / "model")
    untrained = Encoder.untrained(store.settings, trained.train_settings, seed=0)
    untrained.set_input_stats(float(trained.net.input_mean), float(trained.net.input_std))
    assert knn_accuracy(trained, store, split, degrade=False) >= 0.9
    noisy_trained = knn_accuracy(trained, store, split, degrade=True)
    noisy_untrained = knn_accuracy(untrained, store, split, degrade=True)
    # Held-out noisy, quieter queries: the trained embeddings keep the classes apart (chance is 0.25).
    assert noisy_trained >= 0.5
    assert noisy_trained >= noisy_untrained + 0.15


def test_model_artefact_contract(class_features: Path, tmp_path: Path) -> None:
    report = train(class_features, tmp_path / "split", tmp_path / "model", TINY)
    model = tmp_path / "model"
    state = torch.load(model / "model.pt", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    meta = read_meta(model, "model", 1)
    store = FeatureStore(class_features)
    assert meta.inputs["features"] == store.fingerprint
    assert meta.inputs["split"] == read_meta(tmp_path / "split", "split").fingerprint
    assert meta.config["train"]["width"] == TINY.width and meta.config["features"]["n_mels"] == 64
    assert meta.extra["segment_frames"] == 30 and meta.extra["best_epoch"] == report.best_epoch
    lines = (model / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2 and {"val_recall_at_1", "val_effective_rank", "train_loss"} <= set(json.loads(lines[0]))
    assert not partial_dir_for(model).exists()
    enc = Encoder.load(model)
    assert enc.fingerprint == meta.fingerprint and enc.embedding_dim == 16
    # best weights by the validation metric are what model.pt holds
    best = torch.load(model / "best.pt", weights_only=True)
    assert all(torch.equal(best[k], state[k]) for k in state)
    # split: persisted, by track, validation tracks never in training
    split = load_split(tmp_path / "split")
    assert sum(v == "val" for v in split.values()) == report.val_tracks == 6


def test_resume_after_interrupt_equals_uninterrupted(class_features: Path, tmp_path: Path) -> None:
    train(class_features, tmp_path / "split", tmp_path / "ref", TINY)
    ref_state = torch.load(tmp_path / "ref" / "checkpoint.pt", weights_only=True)["model"]
    model = tmp_path / "m"
    first = train(class_features, tmp_path / "split", model, replace(TINY, epochs=1))
    assert first.epochs_run == 1
    good = read_meta(model, "model").fingerprint

    def interrupt(event: dict) -> None:
        if event["event"] == "step" and event["step"] == 7:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of epoch 2

    with pytest.raises(TrainingInterrupted, match="--resume"):
        train(class_features, tmp_path / "split", model, TINY, progress=interrupt)
    assert read_meta(model, "model").fingerprint == good  # the previous good model survives
    info = json.loads((partial_dir_for(model) / "checkpoint.json").read_text())
    assert (info["epoch"], info["step_in_epoch"], info["global_step"]) == (1, 2, 7)
    with pytest.raises(IncompatibleArtefactError, match="lr"):
        train(class_features, tmp_path / "split", model, replace(TINY, lr=0.5), resume=True)
    resumed = train(class_features, tmp_path / "split", model, TINY, resume=True)
    assert resumed.steps == 10 and resumed.epochs_run == 2
    state = torch.load(model / "checkpoint.pt", weights_only=True)["model"]
    for key, value in ref_state.items():
        assert torch.allclose(state[key].float(), value.float(), atol=1e-5), key
    # extending a finished model: --resume with more epochs continues from its final checkpoint
    extended = train(class_features, tmp_path / "split", model, replace(TINY, epochs=3), resume=True)
    assert extended.steps == 15 and len((model / "metrics.jsonl").read_text().splitlines()) == 3


def test_training_never_reads_validation_tracks(tmp_path: Path) -> None:
    frames = [120] * 12
    features = synthetic_features(tmp_path / "features", frames)
    store = FeatureStore(features)
    split, _ = ensure_split(tmp_path / "split", store.tracks, store.fingerprint, TINY.seed, 0.25, "track")
    val = {t for t, s in split.items() if s == "val"}
    assert len(val) == 3
    # Rewrite the features with NaN in every validation track: any read of them in training poisons the weights.
    fs = FeatureSettings()
    rng = np.random.default_rng(0)
    poisoned = tmp_path / "poisoned"
    writer = ShardWriter(poisoned, fs)
    for t in store.tracks:
        mel = rng.normal(-4, 2, (t["frames"], fs.n_mels))
        if t["track_id"] in val:
            mel[:] = np.nan
        writer.add({k: t[k] for k in ("track_id", "path", "label", "group", "duration_s")}, mel)
    commit(poisoned, writer.flush(), fs)
    settings = replace(TINY, augment=True, aug_noise_prob=1.0, aug_noise_source="tracks", val_triplets=0)
    report = train(poisoned, tmp_path / "split", tmp_path / "model", settings)
    assert report.val_tracks == 3
    assert all(np.isfinite(h["train_loss"]) for h in report.history)
    state = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    assert all(torch.isfinite(v.float()).all() for v in state.values())


def test_bad_input_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(MissingArtefactError, match="embedtool extract"):
        train(tmp_path / "nothing", tmp_path / "split", tmp_path / "model", TINY)
    empty = tmp_path / "empty"
    ShardWriter(empty, FeatureSettings())
    commit(empty, [], FeatureSettings())
    with pytest.raises(InputError, match="no tracks"):
        train(empty, tmp_path / "split", tmp_path / "model", TINY)
    single = synthetic_features(tmp_path / "single", [500])
    with pytest.raises(InputError, match="Only one track"):
        train(single, tmp_path / "split1", tmp_path / "model", TINY)
    two = synthetic_features(tmp_path / "two", [500, 400])
    with pytest.raises(MissingArtefactError, match="Nothing to resume"):
        train(two, tmp_path / "split2", tmp_path / "model", TINY, resume=True)
    assert not (tmp_path / "model").exists()


def test_cli_trains_on_one_shot_samples_and_reports_errors(sample_audio_dir: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    result = run_cli("-w", ws, "train", "--epochs", "1")
    assert result.exit_code == 4 and "embedtool extract" in result.output
    extract_features(sample_audio_dir, ws / "features")
    store = FeatureStore(ws / "features")
    seg = 100  # 1 s
    assert sum(t["frames"] <= seg for t in store.tracks) > len(store) * 0.6  # mostly one-shots
    args = ["-w", str(ws), "train", "--epochs", "1", "--steps-per-epoch", "3", "--batch-size", "8"]
    args += ["--width", "0.0625", "--segment-seconds", "1.0", "--embedding-dim", "8", "--device", "cpu", "--json"]
    result = run_cli(*args, "--level-norm", "peak")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["steps"] == 3 and any("short-track rule" in n for n in report["notes"])
    model = Encoder.load(ws / "model")
    assert model.embedding_dim == 8 and model.net.level_norm == "peak"
    result = run_cli("-w", ws, "train", "--mining", "extreme")
    assert result.exit_code == 2 and "mining" in result.output
    result = run_cli("-w", ws, "train", "--level-norm", "loud")
    assert result.exit_code == 2 and "'loud' is not one of" in " ".join(result.output.split())


def test_dataloader_workers_give_the_same_training(class_features: Path, tmp_path: Path) -> None:
    """Each item is seeded by (seed, epoch, index): worker processes change nothing but speed."""
    settings = replace(TINY, epochs=1, steps_per_epoch=3, val_triplets=0)
    train(class_features, tmp_path / "split", tmp_path / "w0", settings)
    train(class_features, tmp_path / "split", tmp_path / "w2", replace(settings, workers=2))
    a = torch.load(tmp_path / "w0" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "w2" / "model.pt", weights_only=True)
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_auto_workers_load_in_process_on_the_cpu_and_in_workers_on_cuda() -> None:
    from embedtool.errors import ConfigError

    auto = TrainSettings()
    assert auto.workers == -1 and auto.resolved_workers(cuda=False) == 0
    assert auto.resolved_workers(cuda=True) == min(8, max(0, (os.cpu_count() or 1) - 1))
    assert replace(auto, workers=3).resolved_workers(cuda=True) == 3
    assert replace(auto, workers=3).resolved_workers(cuda=False) == 3
    with pytest.raises(ConfigError, match="workers"):
        replace(auto, workers=-2).validate()


def test_early_stopping_keeps_the_best_epoch(class_features: Path, tmp_path: Path) -> None:
    # A learning rate too small to change anything: the validation accuracy stays put, so it never improves
    # on epoch 1 and training stops after `patience` more epochs.
    settings = replace(
        TINY, epochs=6, steps_per_epoch=2, lr=1e-12, early_stopping_patience=2, val_metric="triplet_accuracy"
    )
    report = train(class_features, tmp_path / "split", tmp_path / "model", settings)
    assert report.stopped_early and report.epochs_run == 3 and report.best_epoch == 1
    assert read_meta(tmp_path / "model", "model").extra["best_epoch"] == 1
