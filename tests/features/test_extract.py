"""`extract`: the features artefact, labels, bad input, incremental re-runs, resuming killed runs, and the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from factories import (
    flat,
    kill_9_when_marked,
    make_class_corpus,
    run_cli,
    write_config,
    write_corrupt,
    write_empty,
    write_not_audio,
    write_silence,
    write_tone,
    write_truncated,
)

from embedtool.artefacts import read_meta
from embedtool.audio.melspec import file_logmel
from embedtool.audio.settings import FeatureSettings
from embedtool.errors import InputError
from embedtool.features.extract import ExtractProgress, run_extract
from embedtool.features.labels import read_labels_file
from embedtool.features.options import ExtractOptions
from embedtool.features.store import FeatureStore

SETTINGS = FeatureSettings()
REPO = Path(__file__).resolve().parents[2]


def opts(**kw) -> ExtractOptions:
    return ExtractOptions(**{"jobs": 1, **kw})


def corpus(root: Path, classes: int = 3, per_class: int = 2, seconds: float = 1.5) -> Path:
    return make_class_corpus(root, classes=classes, per_class=per_class, seconds=seconds, sr=16000)


def snapshot(features: Path) -> dict[str, tuple]:
    """What a features artefact means, independent of shard layout: per track id, its facts, matrix and peaks."""
    fs = FeatureStore(features)
    keep = ("path", "label", "group", "duration_s", "native_sample_rate", "channels", "frames", "peaks")
    return {
        t["track_id"]: (
            tuple(t[k] for k in keep),
            fs.mel(t["track_id"]).tobytes(),
            b"".join(p.tobytes() for p in fs.peaks(t["track_id"])),
        )
        for t in fs.tracks
    }


def test_extract_writes_the_features_artefact(tmp_path: Path) -> None:
    root = corpus(tmp_path / "audio")
    features = tmp_path / "ws" / "features"
    seen: list[ExtractProgress] = []
    report = run_extract([root], features, SETTINGS, opts(), progress=lambda s: seen.append(s.done))
    assert (report.done, report.unchanged, report.skipped, report.failed) == (6, 0, 0, 0)
    assert report.hours == pytest.approx(6 * 1.5 / 3600)
    tracks = FeatureStore(features).tracks
    assert report.bytes_written == sum(t["frames"] * SETTINGS.n_mels * 2 + t["peaks"] * 8 for t in tracks)
    assert seen[0] == 0 and seen[-1] == 6
    fs = FeatureStore(features)
    assert fs.settings == SETTINGS
    assert sorted({t["label"] for t in fs.tracks}) == ["clicks", "noise_high", "tone_low"]
    meta = read_meta(features, "features")
    assert meta.extra["tracks"] == 6 and meta.config["n_mels"] == 64
    for t in fs.tracks:
        path = Path(t["path"])
        assert t["track_id"] == hashlib.blake2b(path.read_bytes(), digest_size=8).hexdigest()
        expected, _ = file_logmel(path, SETTINGS)
        mel = fs.mel(t["track_id"])
        assert mel.dtype == np.float16 and mel.shape == expected.shape == (t["frames"], 64)
        np.testing.assert_allclose(mel.astype(np.float32), expected, atol=0.02)
        assert t["native_sample_rate"] == 16000 and t["channels"] == 1 and t["root"] == str(root)
    assert json.loads((features / "errors.json").read_text()) == []


def test_parallel_run_equals_serial_run_on_the_cc0_set(tmp_path: Path, sample_audio_dir: Path) -> None:
    serial = run_extract([sample_audio_dir], tmp_path / "a", SETTINGS, opts(jobs=1))
    parallel = run_extract([sample_audio_dir], tmp_path / "b", SETTINGS, opts(jobs=2))
    assert serial.done == parallel.done == 72 and parallel.jobs == 2
    assert snapshot(tmp_path / "a") == snapshot(tmp_path / "b")
    # folder labels agree with the set's own labels.csv
    listed = {
        str(sample_audio_dir / line.split(",")[0]): line.split(",")[1]
        for line in (sample_audio_dir / "labels.csv").read_text().splitlines()[1:]
    }
    assert {t["path"]: t["label"] for t in FeatureStore(tmp_path / "a").tracks} == listed


def test_labels_from_a_file(tmp_path: Path) -> None:
    root = corpus(tmp_path / "audio", classes=2, per_class=2, seconds=0.5)
    files = sorted(str(p.relative_to(tmp_path)) for p in root.rglob("*.wav"))
    labels = tmp_path / "labels.tsv"
    # header with extra columns; relative paths; one absolute path; one file unlisted
    rows = ["title\tpath\tlabel\tgroup"]
    rows += [f"t{i}\t{f}\tL{i % 2}\tG{i // 2}" for i, f in enumerate(files[:2])]
    rows.append(f"t2\t{tmp_path / files[2]}\tL9\t")
    rows.append("t3\tgone/missing.wav\tL1\tG1")
    labels.write_text("\n".join(rows) + "\n")
    report = run_extract([root], tmp_path / "f", SETTINGS, opts(labels=str(labels)))
    assert report.labelled == 3 and report.labels_unmatched == [str(tmp_path / "gone" / "missing.wav")]
    got = {
        Path(t["path"]).relative_to(tmp_path).as_posix(): (t["label"], t["group"])
        for t in FeatureStore(tmp_path / "f").tracks
    }
    assert got == {files[0]: ("L0", "G0"), files[1]: ("L1", "G0"), files[2]: ("L9", None), files[3]: (None, None)}


def test_labels_file_without_header_and_its_errors(tmp_path: Path) -> None:
    (tmp_path / "l.csv").write_text("a/x.wav,kick,s1\nb/y.wav,snare\n")
    table = read_labels_file(tmp_path / "l.csv")
    assert table.lookup(tmp_path / "a" / "x.wav").label == "kick"
    assert table.lookup(tmp_path / "a" / "x.wav").group == "s1"
    assert table.lookup(tmp_path / "b" / "y.wav").group is None
    (tmp_path / "bad.csv").write_text("a.wav,kick\nonly-a-path\n")
    with pytest.raises(InputError, match=r"bad.csv, line 2: expected at least a path and a label"):
        read_labels_file(tmp_path / "bad.csv")
    (tmp_path / "twice.csv").write_text("a.wav,kick\na.wav,snare\n")
    with pytest.raises(InputError, match="listed twice"):
        read_labels_file(tmp_path / "twice.csv")
    with pytest.raises(InputError, match="Labels file not found"):
        read_labels_file(tmp_path / "none.csv")


def test_bad_files_are_listed_and_skipped(tmp_path: Path) -> None:
    root = tmp_path / "audio"
    write_tone(root / "good" / "a.wav", seconds=0.5)
    write_tone(root / "good" / "b.flac", freq=660.0, seconds=0.5)
    bad = {
        "empty.wav": (write_empty, "empty file"),
        "text.mp3": (write_not_audio, "not a recognised audio file"),
        "noise.ogg": (write_corrupt, "not a recognised audio file"),
        "cut.flac": (write_truncated, "not a recognised audio file"),
        "quiet.wav": (write_silence, "silent"),
        "tiny.wav": (lambda p: write_tone(p, seconds=0.01), "too short"),
    }
    for name, (make, _) in bad.items():
        make(root / "bad" / name)
    shutil.copy(root / "good" / "a.wav", root / "good" / "a-copy.wav")
    report = run_extract([root], tmp_path / "f", SETTINGS, opts())
    assert report.done == 2 and report.failed == 4 and report.skipped == 3  # silent, too short, duplicate
    errors = {Path(e["path"]).name: e["reason"] for e in json.loads((tmp_path / "f" / "errors.json").read_text())}
    for name, (_, reason) in bad.items():
        assert reason in errors[name], (name, errors[name])
    assert errors["a.wav"].startswith("duplicate of") and errors["a.wav"].endswith("a-copy.wav (same content)")
    assert report.duplicates == [(str(root / "good" / "a.wav"), str(root / "good" / "a-copy.wav"))]
    assert len(FeatureStore(tmp_path / "f")) == 2


def test_nothing_usable_missing_path_and_empty_folder_are_errors(tmp_path: Path) -> None:
    write_empty(tmp_path / "bad" / "e.wav")
    write_not_audio(tmp_path / "bad" / "t.wav")
    with pytest.raises(InputError, match="No usable audio: 2 file"):
        run_extract([tmp_path / "bad"], tmp_path / "f", SETTINGS, opts())
    assert not (tmp_path / "f" / "meta.json").exists()
    with pytest.raises(InputError, match="no such file or folder"):
        run_extract([tmp_path / "missing"], tmp_path / "f", SETTINGS, opts())
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="No audio files found"):
        run_extract([tmp_path / "empty"], tmp_path / "f", SETTINGS, opts())
    with pytest.raises(InputError, match="No audio folder given"):
        run_extract([], tmp_path / "f", SETTINGS, opts())


def test_strict_fails_and_keeps_the_previous_artefact(tmp_path: Path) -> None:
    root = corpus(tmp_path / "audio", classes=1, per_class=2, seconds=0.5)
    first = run_extract([root], tmp_path / "f", SETTINGS, opts())
    write_corrupt(root / "tone_low" / "broken.wav")
    with pytest.raises(InputError, match=r"1 file\(s\) failed under --strict.*broken.wav"):
        run_extract([root], tmp_path / "f", SETTINGS, opts(strict=True))
    assert FeatureStore(tmp_path / "f").fingerprint == first.fingerprint
    assert run_extract([root], tmp_path / "f", SETTINGS, opts()).failed == 1  # without --strict it goes on


def test_incremental_reruns(tmp_path: Path) -> None:
    root = corpus(tmp_path / "audio", classes=2, per_class=2, seconds=0.5)
    features = tmp_path / "f"
    first = run_extract([root], features, SETTINGS, opts())
    shards = sorted(p.name for p in (features / "shards").iterdir())
    again = run_extract([root], features, SETTINGS, opts())
    assert (again.done, again.unchanged, again.bytes_written) == (0, 4, 0)
    assert sorted(p.name for p in (features / "shards").iterdir()) == shards  # nothing rewritten
    assert again.fingerprint == first.fingerprint  # same tracks, same settings: same artefact identity

    write_tone(root / "tone_low" / "new.wav", freq=300.0, seconds=0.5)  # added
    (root / "noise_high" / "noise_high_0.wav").unlink()  # removed
    changed = root / "tone_low" / "tone_low_0.wav"
    write_tone(changed, freq=250.0, seconds=0.7)  # changed content
    old = root / "tone_low" / "tone_low_1.wav"
    renamed = root / "tone_low" / "renamed.wav"
    old.rename(renamed)  # moved: same bytes, new path -> reused without decoding
    report = run_extract([root], features, SETTINGS, opts())
    assert (report.done, report.unchanged, report.removed) == (2, 2, 2)  # removed: deleted + old content
    fs = FeatureStore(features)
    assert len(fs) == 4 and str(renamed) in {t["path"] for t in fs.tracks}
    fresh = run_extract([root], tmp_path / "fresh", SETTINGS, opts())
    assert fresh.done == 4
    assert snapshot(features) == snapshot(tmp_path / "fresh")

    forced = run_extract([root], features, SETTINGS, opts(overwrite=True))
    assert (forced.done, forced.unchanged) == (4, 0)
    thesis = run_extract([root], features, FeatureSettings.from_preset("thesis"), opts())
    assert thesis.done == 4 and "n_mels: 64 != 128" in thesis.full_rebuild_reason
    assert len(list((features / "shards").glob("*.npy"))) == 2  # the old settings' shards are gone (matrices, peaks)


def test_rerun_without_paths_uses_the_previous_roots(tmp_path: Path) -> None:
    root = corpus(tmp_path / "audio", classes=1, per_class=2, seconds=0.5)
    run_extract([root], tmp_path / "f", SETTINGS, opts())
    write_tone(root / "tone_low" / "more.wav", seconds=0.5)
    report = run_extract([], tmp_path / "f", SETTINGS, opts())
    assert (report.done, report.unchanged) == (1, 2)


def test_resume_after_an_exception_mid_run(tmp_path: Path) -> None:
    root = corpus(tmp_path / "audio", classes=2, per_class=3, seconds=0.5)
    features = tmp_path / "f"
    run_extract([root / "tone_low"], features, SETTINGS, opts())
    before = snapshot(features)

    def explode(state: ExtractProgress) -> None:
        if state.done == 2:
            raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError, match="injected"):
        run_extract([root], features, SETTINGS, opts(flush_every_s=0), progress=explode)
    assert snapshot(features) == before  # the previous artefact is untouched
    resumed = run_extract([root], features, SETTINGS, opts())
    assert resumed.unchanged == 3 + 2 and resumed.done == 1  # 3 from before, 2 from the killed run's shards
    run_extract([root], tmp_path / "clean", SETTINGS, opts())
    assert snapshot(features) == snapshot(tmp_path / "clean")
    live = {t["shard"] for t in FeatureStore(features).tracks}
    assert {p.name.split(".")[0] for p in (features / "shards").iterdir()} == live  # no orphan shards left


KILL_DRIVER = """
import sys, time
from pathlib import Path
from embedtool.audio.settings import FeatureSettings
from embedtool.features.extract import ExtractOptions, run_extract

def progress(state):
    if state.done == 3:
        Path(sys.argv[3]).write_text("3 done")
        time.sleep(60)  # wait here to be killed

run_extract([Path(sys.argv[1])], Path(sys.argv[2]), FeatureSettings(), ExtractOptions(jobs=1, flush_every_s=0),
            progress=progress)
"""


def test_resume_after_sigkill(tmp_path: Path) -> None:
    root = corpus(tmp_path / "audio", classes=2, per_class=3, seconds=0.5)
    features = tmp_path / "f"
    marker = tmp_path / "marker"
    driver = tmp_path / "driver.py"
    driver.write_text(KILL_DRIVER)
    run_extract([root / "tone_low"], features, SETTINGS, opts())  # a previous artefact, 3 tracks
    before = snapshot(features)
    kill_9_when_marked(driver, [root, features, marker], marker, timeout_s=60)
    assert snapshot(features) == before  # the previous artefact is intact, nothing half-published
    assert len(list((features / "shards").glob("*.json"))) >= 1 + 3  # the killed run's flushed work survived
    resumed = run_extract([root], features, SETTINGS, opts())
    assert resumed.unchanged == 3 + 3 and resumed.done == 0
    run_extract([root], tmp_path / "clean", SETTINGS, opts())
    assert snapshot(features) == snapshot(tmp_path / "clean")


# --- the command line ----------------------------------------------------------------------------------------


def test_cli_extract_json_and_exit_codes(tmp_path: Path) -> None:
    root = corpus(tmp_path / "audio", classes=2, per_class=1, seconds=0.5)
    result = run_cli("-w", tmp_path / "ws", "extract", root, "--json", "-j", "1")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["done"] == 2 and report["tracks"] == 2
    table = run_cli("-w", tmp_path / "ws", "-q", "extract")
    assert table.exit_code == 0 and "files unchanged" in table.stdout
    write_not_audio(tmp_path / "junk" / "x.wav")
    bad = run_cli("-w", tmp_path / "ws2", "extract", tmp_path / "junk")
    assert bad.exit_code == 1 and "No usable audio" in flat(bad.output)
    missing = run_cli("-w", tmp_path / "ws2", "extract", tmp_path / "nowhere")
    assert missing.exit_code == 1 and "no such file or folder" in flat(missing.output)
    wrong = run_cli("-w", tmp_path / "ws2", "extract", root, "--preset", "bogus")
    assert wrong.exit_code == 2 and "'bogus' is not one of" in flat(wrong.output)
    write_corrupt(root / "clicks" / "broken.wav")
    strict = run_cli("-w", tmp_path / "ws", "extract", "--strict", "-j", "1")
    assert strict.exit_code == 1 and "failed under --strict" in flat(strict.output)


INTERRUPT_DRIVER = """
import os, signal, sys
from embedtool.features import extract

# Python leaves SIGINT ignored when it starts with it ignored (a background job of a non-interactive shell, as
# `nohup ... &` runs CI): restore Ctrl-C's usual handler so the test sees what a terminal user sees.
signal.signal(signal.SIGINT, signal.default_int_handler)

notify = extract._notify

def interrupt_after_two(progress, state):  # a real SIGINT, as Ctrl-C sends, once two files are done
    notify(progress, state)
    if state.done == 2 and state.phase == "extract":
        os.kill(os.getpid(), signal.SIGINT)

extract._notify = interrupt_after_two
from embedtool.cli.app import app
app(["-w", sys.argv[2], "extract", sys.argv[1], "-j", "1"])
"""


def test_cli_ctrl_c_exits_130_and_the_next_run_finishes(tmp_path: Path) -> None:
    root = corpus(tmp_path / "audio", classes=2, per_class=2, seconds=0.5)
    write_config(tmp_path, "extract: {flush_every_s: 0}\n")
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(INTERRUPT_DRIVER))
    ws = tmp_path / "ws"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(driver), str(root), str(ws)], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert proc.returncode == 130, proc.stderr
    assert "interrupted" in proc.stderr and "Traceback" not in proc.stderr
    assert not (ws / "features" / "meta.json").exists()
    result = run_cli("-w", ws, "extract", root, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["unchanged"] == 2 and report["done"] == 2


def test_one_run_at_a_time_per_workspace(tmp_path: Path) -> None:
    import fcntl

    root = corpus(tmp_path / "audio", classes=1, per_class=1, seconds=0.5)
    features = tmp_path / "f"
    features.mkdir()
    with open(features / ".extract.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running extract holds it
        with pytest.raises(InputError, match="Another `embedtool extract` is writing to"):
            run_extract([root], features, SETTINGS, opts())
    assert run_extract([root], features, SETTINGS, opts()).done == 1  # free again


UNGUARDED_SCRIPT = """
import sys
from pathlib import Path
from embedtool.audio.settings import FeatureSettings
from embedtool.features.extract import ExtractOptions, run_extract

# no `if __name__ == "__main__":` guard: workers must not re-run this script
report = run_extract([Path(sys.argv[1])], Path(sys.argv[2]), FeatureSettings(), ExtractOptions(jobs=2))
print("done", report.done)
"""


def test_parallel_run_from_a_script_without_main_guard(tmp_path: Path) -> None:
    root = corpus(tmp_path / "audio", classes=2, per_class=1, seconds=0.5)
    script = tmp_path / "script.py"
    script.write_text(UNGUARDED_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(root), str(tmp_path / "f")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["done", "2"]
    assert proc.stdout.count("done") == 1
