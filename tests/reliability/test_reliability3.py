"""The fault catalogue's third round: each class of failure it still found, as a small case."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from factories import flat, run_cli, write_config, write_corrupt, write_tone

from embedtool import workspace as workspace_module
from embedtool.cli.app import app
from embedtool.errors import ConfigError, WorkspaceUnwritableError
from embedtool.workspace import Workspace

COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


# --- --help: boolean flags take no value ------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_no_type_after_boolean_flags(command: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    result = run_cli(command, "--help")
    assert result.exit_code == 0
    assert "<bool>" not in result.output and "--help" in result.output
    if command == "neighbours":  # options that take a value keep their type
        assert "<similar|identify>" in flat(result.output)


# --- YAML bombs anywhere in embedtool.yaml --------------------------------------------------------------------

BOMB = "\n".join(
    ["train:", "  epochs:", "    - &a1 [x,x,x,x,x,x,x,x,x]"]
    + [f"    - &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(2, 10)]
)


def test_a_yaml_bomb_inside_a_section_is_refused_before_it_grows(tmp_path: Path) -> None:
    from embedtool.config import load_project_config

    path = write_config(tmp_path, BOMB)
    with pytest.raises(ConfigError, match="aliases .* expand to more than"):
        load_project_config(path)
    result = run_cli("config")  # the command that printed the value with !r and ran out of memory
    assert result.exit_code == 2 and "YAML bomb" in flat(result.output)


def test_a_small_alias_is_still_fine(tmp_path: Path) -> None:
    from embedtool.config import load_project_config

    path = write_config(tmp_path, "train: &t {epochs: 3}\nembed: {batch_size: 16}\n")
    assert load_project_config(path).settings("train").epochs == 3


# --- --json errors on stdout --------------------------------------------------------------------------------------


def test_json_errors_are_json_on_stdout(tmp_path: Path) -> None:
    missing = run_cli("-w", tmp_path / "nope", "neighbours", "x.wav", "--json")
    assert missing.exit_code == 4
    parsed = json.loads(missing.stdout)
    assert parsed["exit_code"] == 4 and "does not exist" in parsed["error"]
    write_config(tmp_path, "train: {epochs: many}\n")  # refused before the command parses its options
    bad = _embedtool(tmp_path, "info", "--format", "json")
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["exit_code"] == 2 and "epochs" in json.loads(bad.stdout)["error"]
    plain = _embedtool(tmp_path, "info")  # without --json, stdout stays for results only
    assert plain.returncode == 2 and plain.stdout == ""


def _embedtool(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "embedtool", *args], capture_output=True, text=True, cwd=cwd)


def test_a_command_line_that_cannot_be_parsed_is_json_too(tmp_path: Path) -> None:
    result = _embedtool(tmp_path, "neighbours", "--mode", "nearest", "x.wav", "--json")
    assert result.returncode == 2
    parsed = json.loads(result.stdout)
    assert parsed["exit_code"] == 2 and "'similar', 'identify'" in parsed["error"]


# --- the workspace lock on a full or read-only disk -------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_lock_that_cannot_be_written_is_one_line_saying_nothing_changed(
    code: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace.at(tmp_path / "ws")
    (ws.features).mkdir(parents=True)
    (ws.features / "keep.txt").write_text("kept")

    def refusing_open(path: object, *args: object, **kwargs: object) -> object:
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(workspace_module, "open_no_follow", refusing_open)
    with pytest.raises(WorkspaceUnwritableError, match="nothing in the workspace was changed or damaged") as info:
        with ws.lock("cluster"):
            pytest.fail("the stage ran without its lock")
    assert "`embedtool cluster` did not start" in str(info.value)
    assert ("full" in str(info.value)) == (code == errno.ENOSPC)
    assert (ws.features / "keep.txt").read_text() == "kept"


def test_a_lock_on_dev_full_is_refused_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = tmp_path / "ws"
    (ws / "features").mkdir(parents=True)
    (ws / "features" / "meta.json").write_text("{}")
    real_open = workspace_module.open_no_follow

    def full_lock(path: Path, flags: int, mode: int = 0o666) -> int:
        if str(path).endswith(workspace_module.LOCK_FILE):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, flags, mode)

    monkeypatch.setattr(workspace_module, "open_no_follow", full_lock)
    result = run_cli("-w", ws, "cluster", "--json")
    assert result.exit_code == 1
    assert "Traceback" not in result.output and "the disk is full" in flat(result.output)
    assert json.loads(result.stdout)["exit_code"] == 1


def test_a_lock_under_a_file_size_limit_is_one_line(trained_workspace_copy: Workspace) -> None:
    import resource

    def no_writes() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))

    before = sorted(p.name for p in trained_workspace_copy.root.iterdir())
    result = subprocess.run(
        [sys.executable, "-m", "embedtool", "-q", "-w", str(trained_workspace_copy.root), "cluster", "--json"],
        capture_output=True,
        text=True,
        preexec_fn=no_writes,
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "ulimit -f" in flat(result.stderr)
    assert json.loads(result.stdout)["exit_code"] == 1
    assert sorted(p.name for p in trained_workspace_copy.root.iterdir()) == before  # no lock file, no clusters


# --- a first extract that finds nothing usable leaves nothing ---------------------------------------------------


def test_a_first_extract_of_nothing_usable_leaves_no_folder(tmp_path: Path) -> None:
    write_corrupt(tmp_path / "bad" / "x.wav")
    write_corrupt(tmp_path / "bad" / "y.flac", seed=1)
    result = run_cli("-w", tmp_path / "ws", "-q", "extract", tmp_path / "bad")
    assert result.exit_code == 1
    assert "No usable audio" in flat(result.output) and "x.wav" in flat(result.output)
    assert not (tmp_path / "ws").exists()


def test_a_later_extract_of_nothing_usable_keeps_the_library_and_lists_why(tmp_path: Path) -> None:
    write_tone(tmp_path / "good" / "a.wav", 440, 1.0)
    assert run_cli("-w", tmp_path / "ws", "-q", "extract", tmp_path / "good").exit_code == 0
    write_corrupt(tmp_path / "bad" / "x.wav")
    result = run_cli("-w", tmp_path / "ws", "-q", "extract", tmp_path / "bad", "--replace")
    assert result.exit_code == 1
    assert (tmp_path / "ws" / "features" / "meta.json").is_file()
    assert "x.wav" in (tmp_path / "ws" / "features" / "errors.json").read_text()


# --- truncated WAV files, and what libmpg123 prints ---------------------------------------------------------------


def _cut(path: Path, fraction: float) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_a_cut_wav_is_truncated_like_other_formats(fraction: float, subtype: str, tmp_path: Path) -> None:
    import soundfile as sf
    from factories import tone

    from embedtool.audio.decode import stream_audio

    path = tmp_path / "cut.wav"
    sf.write(path, tone(440, 4.0), 22050, subtype=subtype)
    _cut(path, fraction)
    stream = stream_audio(path, 16000)
    decoded = sum(len(b) for b in stream) / 16000
    assert stream.info.truncated == f"truncated (decoded {decoded:.2f} s of 4.00 s)"


def test_a_whole_wav_and_the_bundled_fixtures_are_not_truncated(tmp_path: Path, sample_audio_dir: Path) -> None:
    from embedtool.audio.decode import stream_audio

    paths = [write_tone(tmp_path / "whole.wav", 440, 2.0), *sorted(sample_audio_dir.rglob("*.wav"))[:6]]
    for path in paths:
        stream = stream_audio(path, 16000)
        list(stream)
        assert stream.info.truncated is None, path


def test_a_wav_header_claiming_an_hour_over_a_second_is_refused_by_extract(tmp_path: Path) -> None:
    import struct

    path = write_tone(tmp_path / "audio" / "liar.wav", 440, 1.0)
    header = bytearray(path.read_bytes())
    at = header.find(b"data")
    struct.pack_into("<I", header, at + 4, 22050 * 2 * 3600)  # 16-bit mono, one hour
    path.write_bytes(bytes(header))
    write_tone(tmp_path / "audio" / "fine.wav", 330, 1.0)
    result = run_cli("-w", tmp_path / "ws", "-q", "extract", tmp_path / "audio", "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["tracks"] == 1 and report["failed"] == 1
    assert [e["reason"] for e in report["errors"]] == ["truncated (decoded 1.00 s of 3600.00 s)"]


def test_libmpg123_warnings_become_the_files_reason_not_stderr(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    import numpy as np
    import soundfile as sf
    from factories import extract_features

    noise = (0.3 * np.random.default_rng(0).standard_normal(22050 * 6)).astype(np.float32)
    path = tmp_path / "audio" / "cut.mp3"
    path.parent.mkdir()
    sf.write(path, noise, 22050, format="MP3", subtype="MPEG_LAYER_III")
    _cut(path, 0.5)
    write_tone(tmp_path / "audio" / "fine.wav", 330, 1.0)
    capfd.readouterr()
    report = extract_features(tmp_path / "audio", tmp_path / "features")
    reasons = {Path(p).name: r for p, r in report.errors}
    assert reasons["cut.mp3"].startswith("truncated (decoded")
    assert "[decoder: Warning: Xing stream size off" in reasons["cut.mp3"]
    assert "Xing" not in capfd.readouterr().err


# --- small artefacts are hashed on every open --------------------------------------------------------------------


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def test_one_flipped_byte_in_a_classifier_is_refused(served_workspace: Workspace, tmp_path: Path) -> None:
    from factories import copy_workspace

    ws = copy_workspace(served_workspace, tmp_path / "ws")
    query = next(iter(sorted((served_workspace.root.parent / "corpus").rglob("*.wav"))), None) or write_tone(
        tmp_path / "q.wav"
    )
    assert run_cli("-w", ws.root, "classify", query).exit_code == 0
    _flip_last_byte(ws.classifier / "coef.npy")  # same size, other weights
    result = run_cli("-w", ws.root, "classify", query)
    assert result.exit_code == 5
    text = flat(result.output).replace(" ", "")
    assert "coef.npywasalteredafteritwaswritten" in text


def test_bulk_shards_are_only_size_checked_on_open(trained_workspace_copy: Workspace) -> None:
    from embedtool.features.store import FeatureStore

    shard = sorted((trained_workspace_copy.features / "shards").glob("*.npy"))[0]
    _flip_last_byte(shard)
    FeatureStore(trained_workspace_copy.features)  # opens: a stat per shard, no hashing of the bulk
    table = next(p for p in trained_workspace_copy.features.iterdir() if p.suffix == ".parquet")
    _flip_last_byte(table)
    with pytest.raises(Exception, match="altered after it was written"):
        FeatureStore(trained_workspace_copy.features)


# --- a resource limit is not damage ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "what"),
    [
        (OSError(errno.ENOMEM, "Cannot allocate memory"), "memory"),
        (RuntimeError("IOError: Failed to launch worker thread"), "threads"),
        (MemoryError(), "memory"),
        (OSError(errno.EMFILE, "Too many open files"), "open files"),
    ],
)
def test_running_out_of_something_while_reading_is_not_called_damage(
    error: BaseException, what: str, trained_workspace: Workspace
) -> None:
    from embedtool.artefacts import read_member, read_meta
    from embedtool.errors import DamagedArtefactError, ResourceLimitError

    meta = read_meta(trained_workspace.index, "index")

    def reader(path: Path) -> None:
        path.stat()  # the file is there and whole; the machine is what fails
        raise error

    with pytest.raises(ResourceLimitError, match=f"Ran out of {what} while reading .*tracks.parquet") as info:
        read_member(meta, trained_workspace.index, "tracks.parquet", reader)
    assert not isinstance(info.value, DamagedArtefactError) and info.value.exit_code == 1
    assert "not damaged" in str(info.value)


def test_a_real_read_error_is_still_damage(trained_workspace: Workspace) -> None:
    from embedtool.artefacts import read_member, read_meta
    from embedtool.errors import DamagedArtefactError

    meta = read_meta(trained_workspace.index, "index")

    def reader(path: Path) -> None:
        raise ValueError("Parquet magic bytes not found")

    with pytest.raises(DamagedArtefactError):
        read_member(meta, trained_workspace.index, "tracks.parquet", reader)


# --- workspace files are not written through symlinks out of the workspace -------------------------------------


def test_a_log_symlinked_out_of_the_workspace_is_not_appended_to(tmp_path: Path) -> None:
    write_tone(tmp_path / "audio" / "a.wav", 440, 1.0)
    ws = Workspace.at(tmp_path / "ws")
    assert run_cli("-w", ws.root, "-q", "extract", tmp_path / "audio").exit_code == 0
    assert "started" in (ws.root / "logs" / "embedtool.log").read_text()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (ws.root / "logs" / "embedtool.log").unlink()
    (ws.root / "logs" / "embedtool.log").symlink_to(victim)
    write_tone(tmp_path / "audio" / "b.wav", 330, 1.0)
    assert run_cli("-w", ws.root, "-q", "extract", tmp_path / "audio").exit_code == 0
    assert victim.read_text() == "precious\n"
    # logs/ itself linked elsewhere: not followed either
    (ws.root / "logs" / "embedtool.log").unlink()
    (ws.root / "logs").rmdir()
    (tmp_path / "elsewhere").mkdir()
    (ws.root / "logs").symlink_to(tmp_path / "elsewhere")
    assert run_cli("-w", ws.root, "-q", "extract", tmp_path / "audio").exit_code == 0
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_lock_file_planted_as_a_symlink_does_not_truncate_its_target(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path / "ws")
    ws.features.mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (ws.root / workspace_module.LOCK_FILE).symlink_to(victim)
    with pytest.raises(WorkspaceUnwritableError, match="symbolic link"):
        with ws.lock("index"):
            pytest.fail("ran through a planted link")
    assert victim.read_text() == "precious\n"


# --- verify --repair re-makes from the last known-good settings --------------------------------------------------


def _repair(ws: Workspace) -> dict:
    result = run_cli("-w", ws.root, "-q", "verify", "--repair", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert {a["kind"]: a["status"] for a in report["artefacts"]}["features"] == "ok"
    return report


def _features_meta(ws: Workspace) -> dict:
    return json.loads((ws.features / "meta.json").read_text())


def test_repair_of_a_garbage_features_meta_finds_its_folders_in_the_track_table(
    trained_workspace_copy: Workspace,
) -> None:
    ws = trained_workspace_copy
    before = _features_meta(ws)
    (ws.features / "meta.json").write_text("garbage{")
    _repair(ws)
    after = _features_meta(ws)
    assert after["extra"]["roots"] == before["extra"]["roots"]
    assert after["config"] == before["config"] and after["fingerprint"] == before["fingerprint"]


def test_repair_after_n_mels_was_edited_uses_the_settings_that_made_the_model(
    trained_workspace_copy: Workspace,
) -> None:
    ws = trained_workspace_copy
    before = _features_meta(ws)
    edited = json.loads(json.dumps(before))
    edited["config"]["n_mels"] = before["config"]["n_mels"] * 2
    (ws.features / "meta.json").write_text(json.dumps(edited))
    shards = {p.name: p.stat().st_mtime_ns for p in (ws.features / "shards").glob("*.npy")}
    report = _repair(ws)
    assert _features_meta(ws)["config"]["n_mels"] == before["config"]["n_mels"]
    assert all(a["status"] in ("ok", "missing") for a in report["artefacts"]), report
    # nothing was decoded again: the shards made with the known-good settings were reused
    assert {p.name: p.stat().st_mtime_ns for p in (ws.features / "shards").glob("*.npy")} == shards


def test_repair_drops_a_meta_entry_outside_the_folder_and_re_makes(trained_workspace_copy: Workspace) -> None:
    ws = trained_workspace_copy
    victim = ws.root.parent / "victim"
    victim.write_text("precious")
    meta = _features_meta(ws)
    meta["files"]["../../victim"] = {"size": 8, "blake2b": "0" * 32}
    (ws.features / "meta.json").write_text(json.dumps(meta))
    found = run_cli("-w", ws.root, "verify", "--json")
    assert found.exit_code == 5
    features = next(a for a in json.loads(found.stdout)["artefacts"] if a["kind"] == "features")
    assert features["damaged_files"] == ["../../victim"]
    _repair(ws)
    assert "../../victim" not in _features_meta(ws)["files"] and victim.read_text() == "precious"


def test_repair_of_an_adopted_models_garbage_meta_adopts_it_again(tmp_path: Path, sample_audio_dir: Path) -> None:
    ws = Workspace.at(tmp_path / "ws")
    assert run_cli("-w", ws.root, "-q", "extract", sample_audio_dir).exit_code == 0
    assert run_cli("-w", ws.root, "-q", "train", "--pretrained", "general").exit_code == 0
    assert run_cli("-w", ws.root, "-q", "embed").exit_code == 0
    before = json.loads((ws.model / "meta.json").read_text())
    (ws.model / "meta.json").write_text("garbage{")
    report = run_cli("-w", ws.root, "-q", "verify", "--repair", "--json")
    assert report.exit_code == 0, report.output
    after = json.loads((ws.model / "meta.json").read_text())
    assert after["extra"]["adopted_from"] == "general" and after["fingerprint"] == before["fingerprint"]
    statuses = {a["kind"]: a["status"] for a in json.loads(report.stdout)["artefacts"]}
    assert statuses["model"] == "ok" and statuses["embeddings"] == "ok"  # the same model: nothing re-embedded


# --- values that reach a library are checked first --------------------------------------------------------------


def test_an_ivf_pq_index_over_fewer_vectors_than_it_can_train_on_falls_back_to_exact_and_says_so() -> None:
    import numpy as np

    from embedtool.indexing.build import build_index
    from embedtool.indexing.options import IndexOptions

    vectors = np.random.default_rng(0).standard_normal((12, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for kind in ("ivf-pq", "ivf"):
        options = IndexOptions(kind=kind, ivf_nlist=16 if kind == "ivf" else 0)
        built = build_index(vectors, options, label="track index")
        assert built.kind == "flat" and built.n == 12
        assert built.summary()["note"].startswith(f"{kind} needs at least 16 vectors to train, the track index has 12")
        found = built.index.search(vectors[:3], 1)[1]
        assert found[:, 0].tolist() == [0, 1, 2]  # exact: each vector finds itself
    enough = np.random.default_rng(1).standard_normal((400, 32)).astype(np.float32)
    enough /= np.linalg.norm(enough, axis=1, keepdims=True)
    assert build_index(enough, IndexOptions(kind="ivf-pq")).kind == "ivf-pq"  # big enough: what was asked


def test_verify_repair_does_not_pass_a_classifier_metas_cv_1_to_scikit_learn(
    served_workspace: Workspace, tmp_path: Path
) -> None:
    from factories import copy_workspace

    ws = copy_workspace(served_workspace, tmp_path / "ws")
    meta = json.loads((ws.classifier / "meta.json").read_text())
    meta["config"]["cv"] = 1
    (ws.classifier / "meta.json").write_text(json.dumps(meta))
    assert run_cli("-w", ws.root, "verify").exit_code == 5
    result = run_cli("-w", ws.root, "-q", "verify", "--repair", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads((ws.classifier / "meta.json").read_text())["config"]["cv"] != 1


# --- names and copies -------------------------------------------------------------------------------------------


def test_a_name_two_tracks_end_with_lists_both(tmp_path: Path) -> None:
    from embedtool.errors import InputError
    from embedtool.features.store import FeatureStore

    write_tone(tmp_path / "lib" / "x" / "same.wav", 440, 1.0)
    write_tone(tmp_path / "lib" / "y" / "same.wav", 660, 1.0)
    assert run_cli("-w", tmp_path / "ws", "-q", "extract", tmp_path / "lib").exit_code == 0
    store = FeatureStore(tmp_path / "ws" / "features")
    with pytest.raises(InputError, match=r"'same.wav' names 2 tracks .*x/same.wav .*y/same.wav|y/same.wav .*x/same"):
        store.find("same.wav")
    assert store.find("x/same.wav") is not None


def _labels_by_path(ws: Path) -> dict[str, str | None]:
    from embedtool.features.store import FeatureStore

    store = FeatureStore(ws / "features")
    return {str(Path(t["path"]).relative_to(ws.parent)): t["label"] for t in store.tracks}


def test_extracting_a_copy_of_a_labelled_folder_keeps_the_library_tracks_and_reports_the_copy(tmp_path: Path) -> None:
    import shutil

    for i in range(2):
        write_tone(tmp_path / "lib" / "tones" / f"t{i}.wav", 300 + 100 * i, 1.0)
    write_tone(tmp_path / "lib" / "noise" / "n.wav", 900, 1.0)
    ws = tmp_path / "ws"
    assert run_cli("-w", ws, "-q", "extract", tmp_path / "lib").exit_code == 0
    before = _labels_by_path(ws)
    shutil.copytree(tmp_path / "lib" / "tones", tmp_path / "aaa")  # sorts before lib/
    result = run_cli("-w", ws, "-q", "extract", tmp_path / "aaa", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (
        _labels_by_path(ws)
        == before
        == {"lib/tones/t0.wav": "tones", "lib/tones/t1.wav": "tones", "lib/noise/n.wav": "noise"}
    )
    assert sorted((Path(d["path"]).name, Path(d["kept"]).parent.name) for d in report["duplicates"]) == [
        ("t0.wav", "tones"),
        ("t1.wav", "tones"),
    ]
    # a folder really moved (the originals gone) is still followed to its new place
    shutil.rmtree(tmp_path / "aaa")
    (tmp_path / "lib" / "tones").rename(tmp_path / "lib" / "bells")
    assert run_cli("-w", ws, "-q", "extract").exit_code == 0
    assert _labels_by_path(ws) == {"lib/bells/t0.wav": "bells", "lib/bells/t1.wav": "bells", "lib/noise/n.wav": "noise"}


# --- resume hints that work ---------------------------------------------------------------------------------------


def test_train_resume_takes_the_checkpoints_settings_and_says_which(trained_workspace_copy: Workspace) -> None:
    import signal
    from dataclasses import replace

    from factories import TINY_CHAIN_TRAIN

    from embedtool.training.trainer import TrainingInterrupted, train

    ws = trained_workspace_copy
    started = replace(TINY_CHAIN_TRAIN, epochs=3, lr=0.002)  # as if `train --epochs 3 --lr 0.002 ...`

    def interrupt(event: dict) -> None:
        if event["event"] == "step" and event["step"] == 14:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="Continue with `embedtool train --resume`"):
        train(ws.features, ws.split, ws.model, started, progress=interrupt)
    refused = run_cli("-w", ws.root, "-q", "train", "--resume", "--lr", "0.5")  # an override that cannot resume
    assert refused.exit_code == 5 and "lr: 0.002 != 0.5" in flat(refused.output)
    result = run_cli("-w", ws.root, "-q", "train", "--resume", "--json")  # the hint, as printed
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["epochs_run"] == 3 and report["resumed"]
    assert report["settings_from_checkpoint"]["lr"] == 0.002 and report["settings_from_checkpoint"]["epochs"] == 3
    said = run_cli("-w", ws.root, "-q", "train", "--resume", "--epochs", "4")  # extend: epochs given, rest taken
    assert said.exit_code == 0, said.output
    assert "resuming with the checkpoint's settings: " in flat(said.output) and "lr 0.002" in flat(said.output)
    assert "epochs" not in flat(said.output).split("settings:")[1].split("(")[0]


# --- threads from the CPUs actually free ----------------------------------------------------------------------------


def test_one_thread_per_cpu_left_free() -> None:
    from embedtool.threads import choose_threads

    assert choose_threads(2, 0.0) == 2
    assert choose_threads(2, 0.1) == 2
    assert choose_threads(2, 0.9) == 1  # one busy core: one thread (3x faster than two)
    assert choose_threads(2, 2.5) == 1  # never none
    assert choose_threads(8, 3.0) == 5
    assert choose_threads(1.5, 0.0) == 1  # a cgroup quota of 1.5 CPUs


def test_cgroup_quotas_are_read(tmp_path: Path) -> None:
    from embedtool.threads import cgroup_cpu_quota

    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("300000")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000")
    assert cgroup_cpu_quota(tmp_path) == 3.0


class _Scripted:
    """A machine whose CPU time is given, look by look: (wall s, all processes' busy s, this process's busy s)."""

    def __init__(self, samples: list[tuple[float, float, float]]):
        self.samples = iter(samples)

    def __call__(self) -> tuple[float, float, float]:
        return next(self.samples)


def test_a_budget_takes_off_what_other_work_keeps_busy_and_looks_again(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from embedtool import threads

    monkeypatch.delenv(threads.THREADS_ENV, raising=False)
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(threads, "FIRST_SAMPLE_S", 0.0)
    budget = threads.CpuBudget("train", recheck_s=0.0)
    # idle: the machine's busy time is this process's own; then another process takes a whole core
    budget._sample = _Scripted([(0, 0, 0), (1, 1.6, 1.6), (2, 3.6, 2.6), (3, 4.6, 3.6)])  # type: ignore[method-assign]
    before = torch.get_num_threads()
    with budget.applied():
        assert torch.get_num_threads() == 2 and budget.last is not None and budget.last.others_busy == 0
        assert budget.recheck() == 1 and torch.get_num_threads() == 1  # 2.0 busy s, 1.0 its own: 1 busy core
        assert budget.last.others_busy == pytest.approx(1.0)
        assert budget.recheck() == 2  # the other job ended
    assert torch.get_num_threads() == before


def test_threads_fixed_by_flag_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from embedtool import threads

    monkeypatch.setenv(threads.THREADS_ENV, "3")
    assert threads.CpuBudget("embed").look().describe().startswith("3 thread(s) (fixed")
    threads.fix_threads(2)
    try:
        assert threads.CpuBudget("embed").threads() == 2
    finally:
        threads.fix_threads(None)
    monkeypatch.setenv(threads.THREADS_ENV, "none")
    with pytest.raises(ConfigError):
        threads.fixed_threads()


def test_threads_option_is_offered_by_the_long_stages() -> None:
    for command in ("train", "embed", "extract", "evaluate"):
        assert "--threads" in run_cli(command, "--help").output
    result = run_cli("train", "--threads", "0")
    assert result.exit_code == 2


def test_a_training_run_logs_its_threads(trained_workspace_copy: Workspace) -> None:
    result = run_cli(
        "-w",
        trained_workspace_copy.root,
        "-q",
        "train",
        "--threads",
        "1",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--batch-size",
        "8",
    )
    assert result.exit_code == 0, result.output
    assert (
        "embedtool.threads INFO: train: 1 thread(s) (fixed"
        in (trained_workspace_copy.root / "logs" / "embedtool.log").read_text()
    )


def test_more_mel_bands_than_frequency_bins_is_refused_before_extracting(tmp_path: Path) -> None:
    write_tone(tmp_path / "audio" / "a.wav", 440, 1.0)
    result = run_cli("-w", tmp_path / "ws", "extract", tmp_path / "audio", "--n-mels", "1000")
    assert result.exit_code == 2 and "at most n_fft/2 + 1 (257)" in flat(result.output)
    assert not (tmp_path / "ws").exists()


def _timed_task(context: object, seconds: float) -> tuple[float, float]:
    import time

    start = time.monotonic()
    time.sleep(seconds)
    return start, time.monotonic()


def test_local_workers_run_only_as_many_tasks_at_once_as_the_limit_allows_now() -> None:
    from embedtool.engine.local import LocalEngine

    def spans(limit: int | None) -> list[tuple[float, float]]:
        engine = LocalEngine(jobs=2)
        engine.limit = None if limit is None else (lambda: limit)
        out: list[tuple[float, float]] = []
        with engine:
            engine.run(_timed_task, [0.3] * 4, lambda i, r: out.append(r), threads=None)
        return sorted(out)

    def overlapping(found: list[tuple[float, float]]) -> bool:
        return any(b[0] < a[1] - 0.05 for a, b in zip(found, found[1:], strict=False))

    assert not overlapping(spans(1))  # one CPU free: one task at a time, though two workers exist
    assert overlapping(spans(None))  # no limit: both workers busy
