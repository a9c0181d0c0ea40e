"""Configuration: embedtool.yaml sections, presets, flags over file values, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from factories import flat, run_cli, write_config

from embedtool.audio.settings import FeatureSettings
from embedtool.config import SECTIONS, TOP_LEVEL_KEYS, load_project_config
from embedtool.errors import ConfigError
from embedtool.features.options import ExtractOptions
from embedtool.workspace import Workspace


def test_no_file_gives_defaults(tmp_path: Path) -> None:
    config = load_project_config()
    assert config.path is None
    assert config.settings("features") == FeatureSettings()
    assert config.settings("extract") == ExtractOptions()


def test_unknown_top_level_key_lists_the_valid_ones(tmp_path: Path) -> None:
    path = write_config(tmp_path, "featurs: {n_mels: 32}\n")
    with pytest.raises(ConfigError) as info:
        load_project_config(path)
    message = str(info.value)
    assert "unknown key(s) featurs" in message
    for key in (*TOP_LEVEL_KEYS, *SECTIONS):
        assert key in message


def test_unknown_section_key_lists_the_valid_ones(tmp_path: Path) -> None:
    write_config(tmp_path, "features:\n  n_mel: 32\n")
    with pytest.raises(ConfigError, match=r"Unknown configuration key\(s\) in section 'features': n_mel") as info:
        load_project_config()
    assert "valid keys: sample_rate, n_fft" in str(info.value)


@pytest.mark.parametrize(
    "text,message",
    [
        ("features: {n_mels: lots}\n", "section 'features'.n_mels must be an integer, not 'lots'"),
        ("features: {n_mels: 32.5}\n", "must be an integer, not 32.5"),
        ("features: {f_min: [1, 2]}\n", "section 'features'.f_min must be a number"),
        ("extract: {overwrite: maybe}\n", "section 'extract'.overwrite must be true or false, not 'maybe'"),
        ("extract: {jobs: -1}\n", "extract.jobs must be 0 (all cores) or positive, not -1"),
        ("features: {f_max: 12000}\n", "f_min/f_max must satisfy 0 <= f_min < f_max <= sample_rate/2 (8000)"),
        ("features: {win_length: 2048}\n", "features.win_length must be in 1..n_fft (512), not 2048"),
        ("features: 16000\n", "section 'features' must be a mapping of options"),
        ("- just\n- a list\n", "must hold a mapping of sections, not list"),
        ("features: {n_mels: [\n", "is not valid YAML"),
    ],
)
def test_bad_values_are_reported_before_any_work(tmp_path: Path, text: str, message: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_project_config(path)
    assert message in str(info.value)


def test_file_values_then_flags_override(tmp_path: Path) -> None:
    write_config(tmp_path, "features: {n_mels: 32, hop_length: 320}\nextract: {jobs: 3, strict: yes}\n")
    config = load_project_config()
    features = config.settings("features")
    assert (features.n_mels, features.hop_length, features.sample_rate) == (32, 320, 16000)
    flagged = config.settings("features", {"n_mels": 48, "hop_length": None})  # None = flag not given
    assert (flagged.n_mels, flagged.hop_length) == (48, 320)
    options = config.settings("extract", {"jobs": "2"})
    assert options.jobs == 2 and options.strict is True
    with pytest.raises(ConfigError, match=r"Unknown options key\(s\) in section 'extract': job"):
        config.settings("extract", {"job": 2})


def test_presets_from_file_section_and_flag(tmp_path: Path) -> None:
    thesis = FeatureSettings.from_preset("thesis")
    assert (thesis.sample_rate, thesis.win_length, thesis.hop_length, thesis.n_fft, thesis.n_mels) == (
        16000,
        480,
        160,
        1024,
        128,
    )
    assert (thesis.f_min, thesis.f_max, thesis.power, thesis.log_offset, thesis.mel_scale) == (
        50.0,
        8000.0,
        1.0,
        1e-6,
        "htk",
    )
    write_config(tmp_path, "preset: thesis\n")
    assert load_project_config().settings("features") == thesis
    write_config(tmp_path, "features: {preset: thesis, n_mels: 96}\n")
    assert load_project_config().settings("features").n_mels == 96  # file values sit on top of the preset
    assert load_project_config().settings("features").n_fft == 1024
    write_config(tmp_path, "features: {n_mels: 96}\n")
    assert load_project_config().settings("features", {"preset": "thesis"}).n_fft == 1024  # flag preset
    with pytest.raises(ConfigError, match="Unknown features preset 'tesis'; valid: default, thesis"):
        load_project_config().settings("features", {"preset": "tesis"})
    write_config(tmp_path, "extract: {preset: fast}\n")
    with pytest.raises(ConfigError, match="has no presets"):
        load_project_config()


def test_workspace_from_config_is_relative_to_the_file(tmp_path: Path) -> None:
    sub = tmp_path / "proj"
    sub.mkdir()
    path = write_config(sub, "workspace: my-lib\n")
    config = load_project_config(path)
    assert Workspace.resolve(None, config).root == (sub / "my-lib").resolve()
    assert Workspace.resolve(tmp_path / "other", config).root == (tmp_path / "other").resolve()


def test_labels_file_from_config_is_relative_to_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path / "project", "extract:\n  labels: meta/labels.tsv\n")
    config = load_project_config(path)
    assert config.settings("extract").labels == str((tmp_path / "project" / "meta" / "labels.tsv").resolve())
    write_config(tmp_path / "project", "extract:\n  labels: /data/labels.tsv\n")
    assert load_project_config(path).settings("extract").labels == "/data/labels.tsv"


def test_cli_reports_config_errors_with_exit_status_2(tmp_path: Path) -> None:
    write_config(tmp_path, "extract: {jobz: 2}\n")
    result = run_cli("extract", tmp_path)
    assert result.exit_code == 2
    output = flat(result.output)
    assert "jobz" in output and "valid keys" in output
    missing = run_cli("--config", tmp_path / "nope.yaml", "extract", tmp_path)
    assert missing.exit_code == 2 and "Configuration file not found" in flat(missing.output)


@pytest.mark.parametrize(
    ("cls", "values", "message"),
    [
        ("embedtool.analysis.options:ClusterOptions", {"k": "0"}, "cluster.k must be at least 1, not 0"),
        ("embedtool.analysis.options:ClassifyOptions", {"cv": 1}, "classify.cv must be 0"),
        ("embedtool.analysis.options:EvaluateOptions", {"name": "a/b"}, "evaluate.name must be a plain folder"),
        ("embedtool.query.options:NeighbourOptions", {"mode": "nearest"}, "neighbours.mode must be 'similar'"),
        ("embedtool.indexing.options:IndexOptions", {"kind": "lsh"}, "index.kind must be one of"),
        ("embedtool.embedding.options:EmbedOptions", {"batch_size": 0}, "embed.batch_size must be at least 1"),
        ("embedtool.features.options:ExtractOptions", {"jobs": -1}, "extract.jobs must be 0"),
        ("embedtool.engine.base:EngineOptions", {"name": "slurm"}, "engine.name must be one of"),
        ("embedtool.model.settings:TrainSettings", {"epochs": 0}, "train.epochs must be at least 1"),
    ],
)
def test_options_are_frozen_and_refuse_bad_values_when_made(cls: str, values: dict, message: str) -> None:
    import dataclasses
    import importlib

    module, name = cls.split(":")
    options_class = getattr(importlib.import_module(module), name)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        options_class(**values)
    made = options_class()
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.seed = 1  # type: ignore[misc]
    key, value = next(iter(values.items()))
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        dataclasses.replace(made, **{key: value})  # a copy with a bad value is refused too


def test_every_section_takes_every_preset_name() -> None:
    from embedtool.config import PRESETS, section_class

    for section in SECTIONS:
        cls = section_class(section)
        if hasattr(cls, "from_preset"):
            for preset in PRESETS:
                assert isinstance(cls.from_preset(preset), cls), (section, preset)
            with pytest.raises(ConfigError, match=f"Unknown {section} preset 'huge'"):
                cls.from_preset("huge")
