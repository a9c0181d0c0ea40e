"""The shipped example configurations load and mean what their comments say."""

from __future__ import annotations

import runpy
from pathlib import Path

from factories import TINY, make_class_corpus, run_cli, write_config

from embedtool.config import load_project_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_thesis_example_reproduces_the_seed_settings() -> None:
    config = load_project_config(EXAMPLES / "thesis.yaml")
    features = config.settings("features")
    assert (features.sample_rate, features.win_length, features.hop_length, features.n_fft) == (16000, 480, 160, 1024)
    assert (features.n_mels, features.f_min, features.f_max, features.log_offset) == (128, 50.0, 8000.0, 1e-6)
    train = config.settings("train")
    assert (train.segment_seconds, train.neighbour_radius_s, train.stem, train.width) == (5.0, 5.0, "imagenet", 1.0)
    assert (train.lr, train.lr_decay, train.lr_decay_steps, train.augment) == (1e-5, 0.95, 7500, False)


def test_cpu_music_example_loads_every_section() -> None:
    config = load_project_config(EXAMPLES / "music-library-cpu.yaml")
    assert config.settings("train").device == "cpu"
    assert config.settings("embed").hop_seconds == 0.5
    assert config.settings("index").target_recall == 0.95


def test_config_command_prints_a_loadable_configuration(tmp_path: Path) -> None:
    write_config(tmp_path, "train:\n  epochs: 7\n")
    result = run_cli("config", "--preset", "thesis")
    assert result.exit_code == 0, result.output
    printed = result.output.split("\n", 1)[1]
    (tmp_path / "printed.yaml").write_text(printed)
    config = load_project_config(tmp_path / "printed.yaml")
    assert config.settings("train").epochs == 7  # the file's value over the preset's 20
    assert config.settings("features").n_mels == 128  # thesis preset


def test_python_api_example_runs_and_reads_the_project_configuration(tmp_path: Path) -> None:
    from embedtool.indexing.store import IndexStore

    corpus = make_class_corpus(tmp_path / "audio", classes=2, per_class=3, seconds=2.0, seed=5)
    write_config(tmp_path, "index:\n  calibration_tracks: 6\n  eval_queries: 6\n")
    main = runpy.run_path(str(EXAMPLES / "python_api.py"))["main"]
    written = main(corpus, tmp_path / "ws", TINY)
    assert [p.name for p in written] == [p.stem + ".txt" for p in sorted(corpus.rglob("*.wav"))[:3]]
    for labels in written:
        rows = [line.split("\t") for line in labels.read_text().splitlines()]
        assert len(rows) == 5 and rows[0][2].startswith("1. ")
        assert all(float(start) <= float(end) for start, end, _ in rows)
    assert IndexStore(tmp_path / "ws" / "index").meta.config["calibration_tracks"] == 6  # embedtool.yaml was read
