"""Adopting a model made elsewhere as a workspace's model (``embedtool train --pretrained general``)."""

from __future__ import annotations

import shutil
from pathlib import Path

from embedtool.artefacts import read_meta, staged_dir, write_meta
from embedtool.features.store import FeatureStore
from embedtool.model.encoder import COMPANION_DIR, FORMAT_VERSION, KIND, WEIGHTS_FILE, Encoder, model_files
from embedtool.model.settings import TrainSettings
from embedtool.model.store import copy_model, resolve_model_source, source_label
from embedtool.training.splits import ensure_split


def adopt_model(spec: str, features_dir: Path, split_dir: Path, model_dir: Path, settings: TrainSettings) -> Encoder:
    """Copy a model (bundled name or folder) into ``model_dir`` as this workspace's model, unchanged.

    The weights and their fingerprint stay the same; meta.json records where the model came from and that it
    was not trained on this workspace's features. Refuses a model made for other feature settings. The
    workspace still gets its split (``settings``' seed, val_fraction, split_by), which `classify` and
    `evaluate` hold tracks out by, exactly as after training.
    """
    source = resolve_model_source(spec)
    encoder = Encoder.load(source)
    store = FeatureStore(features_dir)
    encoder.check_features(store.settings)
    ensure_split(split_dir, store.tracks, store.fingerprint, settings.seed, settings.val_fraction, settings.split_by)
    meta = read_meta(source, KIND, FORMAT_VERSION)
    extra = dict(meta.extra)
    extra["adopted_from"] = source_label(spec, source)
    extra["trained_on_these_features"] = False
    with staged_dir(Path(model_dir)) as staging:
        shutil.copy2(source / WEIGHTS_FILE, staging / WEIGHTS_FILE)
        if (source / "CREDITS.md").is_file():
            shutil.copy2(source / "CREDITS.md", staging / "CREDITS.md")
        if encoder.companion is not None:
            copy_model(source / COMPANION_DIR, staging / COMPANION_DIR)
        write_meta(
            staging, KIND, FORMAT_VERSION, meta.config, meta.inputs, extra, fingerprint=meta.fingerprint,
            files=model_files(staging),
        )  # fmt: skip
    return Encoder.load(Path(model_dir))
