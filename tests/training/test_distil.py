"""Distillation (``train.distil_teachers``, the ``distil`` preset): the teachers' outputs are cached once per file and
reused, each segment's descriptor learns to predict its teacher's output, and the model artefact stays a plain
encoder (the heads are training-only)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import SAMPLE_AUDIO, TINY_CHAIN_TRAIN, extract_features, run_cli

from embedtool.errors import ConfigError
from embedtool.model.encoder import Encoder
from embedtool.model.settings import TrainSettings
from embedtool.model.teachers import read_teacher_outputs
from embedtool.training.trainer import train
from embedtool.workspace import Workspace

DISTIL = replace(
    TINY_CHAIN_TRAIN, distil_teachers="aisfx", distil_weight=1.0, epochs=1, steps_per_epoch=10, val_triplets=0
)


@pytest.fixture(scope="module")
def drums(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A dozen of the bundled CC0 one-shots and loops, features at the default settings."""
    root = tmp_path_factory.mktemp("distil")
    audio = root / "audio"
    audio.mkdir()
    for source in sorted(SAMPLE_AUDIO.rglob("*.flac"))[:12]:
        (audio / source.name).symlink_to(source)
    ws = Workspace(root / "ws")
    extract_features(audio, ws.features)
    return ws


def test_distillation_teaches_the_descriptor_and_publishes_a_plain_encoder(drums: Workspace, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    events: list[dict] = []
    teachers = tmp_path / "teachers"
    report = train(drums.features, tmp_path / "split", tmp_path / "model", DISTIL, progress=events.append,
                   teachers_dir=teachers)  # fmt: skip
    assert any(n.startswith("Distilling aisfx (12 files computed, 0 cached") for n in report.notes), report.notes
    passes = [e for e in events if e["event"] == "teacher"]
    assert passes and passes[-1]["done"] == passes[-1]["total"] == 12
    assert len(read_teacher_outputs(teachers / "aisfx")) == 12
    cosines = [e["distil_cosine"] for e in events if e["event"] == "step"]
    assert len(cosines) == DISTIL.steps_per_epoch
    assert np.mean(cosines[-3:]) > cosines[0] + 0.05, cosines  # the heads learn to predict the teacher
    assert "train_distil_cosine" in report.history[-1]
    state = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    assert not any(k.startswith("distil.") for k in state)  # the artefact is the encoder alone
    encoder = Encoder.load(tmp_path / "model")
    assert encoder.embedding_dim == DISTIL.embedding_dim

    # a second run reuses the cache, and extending the finished run keeps its heads (they are in the checkpoint)
    again = train(drums.features, tmp_path / "split", tmp_path / "model", replace(DISTIL, epochs=2), resume=True,
                  teachers_dir=teachers)  # fmt: skip
    assert any("0 files computed, 12 cached" in n for n in again.notes), again.notes
    assert again.epochs_run == 2


def test_distillation_from_the_bundled_model_and_its_errors(drums: Workspace, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    start = replace(DISTIL, init="general", segment_seconds=1.0, width=0.25, embedding_dim=128, steps_per_epoch=2)
    report = train(drums.features, tmp_path / "split", tmp_path / "m", start, teachers_dir=tmp_path / "t")
    assert any("Started from the weights of general" in n for n in report.notes)  # heads start untrained, the rest not
    with pytest.raises(ConfigError, match="teachers' outputs"):
        train(drums.features, tmp_path / "split", tmp_path / "m2", DISTIL)  # nowhere to cache them
    with pytest.raises(ConfigError, match="unknown teacher 'nope'"):
        replace(DISTIL, distil_teachers="aisfx,nope").validate()
    assert TrainSettings.from_preset("distil").teachers == ("aisfx",)
    res = run_cli("-w", drums.root, "train", "--distil-weight", "-1")
    assert res.exit_code == 2 and "distil_weight must be >= 0" in res.output
