"""Damaged artefacts end in a clear error (exit 4 or 5, the file named, no traceback), `embedtool verify` finds
them, and `verify --repair` brings back the results of the undamaged workspace."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from factories import extract_features, flat, make_class_corpus, run_cli

from embedtool import artefacts
from embedtool.embedding.store import EmbeddingStore
from embedtool.errors import DiskSpaceError
from embedtool.features.store import FeatureStore
from embedtool.query.searcher import Searcher
from embedtool.workspace import Workspace

# --- the damage ------------------------------------------------------------------------------------------------


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def delete(path: Path) -> None:
    path.unlink()


def corrupt_json(path: Path) -> None:
    path.write_text(path.read_text()[:-40] + "}}garbage")


def flip_header(path: Path) -> None:
    """Invert the first bytes (the format's magic): the size stays, the file no longer reads."""
    data = bytearray(path.read_bytes())
    data[:8] = bytes(b ^ 0xFF for b in data[:8])
    path.write_bytes(bytes(data))


def inject_nan(path: Path) -> None:
    """A NaN in the first row of a .npy, in place (the size stays)."""
    array = np.load(path, mmap_mode="r+")
    array[0, 0] = np.nan
    array.flush()


# --- where ------------------------------------------------------------------------------------------------------


def shard(ws: Workspace) -> Path:
    return sorted(p for p in (ws.features / "shards").glob("*.npy") if not p.name.endswith(".peaks.npy"))[0]


def feature_table(ws: Workspace) -> Path:
    return next(ws.features.glob("tracks-*.parquet"))


def query_file(ws: Workspace) -> Path:
    return Path(FeatureStore(ws.features).tracks[0]["path"])


TARGETS: dict[str, Callable[[Workspace], Path]] = {
    "feature shard": shard,
    "feature table": feature_table,
    "features meta": lambda ws: ws.features / "meta.json",
    "split table": lambda ws: ws.split / "split.parquet",
    "model weights": lambda ws: ws.model / "model.pt",
    "segment vectors": lambda ws: ws.embeddings / "segments-0000.npy",
    "track vectors": lambda ws: ws.embeddings / "tracks.npy",
    "track descriptors": lambda ws: ws.embeddings / "track_descriptors.npy",
    "embeddings tracks": lambda ws: ws.embeddings / "tracks.parquet",
    "embeddings meta": lambda ws: ws.embeddings / "meta.json",
    "segment index": lambda ws: ws.index / "segments.faiss",
    "index tracks": lambda ws: ws.index / "tracks.parquet",
    "index meta": lambda ws: ws.index / "meta.json",
}

# (what, damage, command that reads it); "QUERY" stands for a library file.
CASES = [
    ("feature shard", truncate, ["embed", "--full"]),
    ("feature shard", truncate, ["neighbours", "QUERY"]),
    ("feature shard", flip_header, ["embed", "--full"]),
    ("feature table", delete, ["embed", "--full"]),
    ("feature table", flip_header, ["index"]),
    ("features meta", corrupt_json, ["index"]),
    ("split table", delete, ["classify"]),
    ("model weights", truncate, ["neighbours", "QUERY"]),
    ("segment vectors", truncate, ["cluster"]),
    ("segment vectors", flip_header, ["classify", "--level", "segment"]),
    ("track vectors", inject_nan, ["cluster"]),
    ("track descriptors", inject_nan, ["classify"]),
    ("embeddings tracks", delete, ["classify"]),
    ("embeddings meta", corrupt_json, ["cluster"]),
    ("segment index", truncate, ["neighbours", "QUERY"]),
    ("segment index", flip_header, ["neighbours", "QUERY"]),
    ("index tracks", delete, ["neighbours", "QUERY"]),
    ("index meta", corrupt_json, ["neighbours", "QUERY"]),
]


def _run(ws: Workspace, command: list[str], query: Path):
    return run_cli("-w", ws.root, "-q", *[str(query) if a == "QUERY" else a for a in command])


def _assert_clear_error(result, path: Path, codes: tuple[int, ...] = (4, 5)) -> None:
    output = flat(result.output)
    assert result.exit_code in codes, output
    assert path.name in "".join(output.split()), output  # the console may break a long path anywhere
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


@pytest.mark.parametrize(
    ("what", "damage", "command"),
    CASES,
    ids=[f"{what}-{damage.__name__}-{command[0]}" for what, damage, command in CASES],
)
def test_a_damaged_file_is_a_clear_error(
    trained_workspace_copy: Workspace, what: str, damage: Callable[[Path], None], command: list[str]
) -> None:
    ws = trained_workspace_copy
    query = query_file(ws)
    path = TARGETS[what](ws)
    damage(path)
    _assert_clear_error(_run(ws, command, query), path)
    found = run_cli("-w", ws.root, "verify")
    _assert_clear_error(found, path, codes=(5,))
    assert "damaged" in found.output


def test_nan_in_features_is_refused_at_export_naming_the_track(trained_workspace_copy: Workspace) -> None:
    ws = trained_workspace_copy
    store = FeatureStore(ws.features)
    first = store.tracks[0]
    path = ws.features / "shards" / f"{first['shard']}.npy"
    array = np.load(path, mmap_mode="r+")
    array[first["offset"] : first["offset"] + first["frames"]] = np.nan
    array.flush()
    result = run_cli("-w", ws.root, "-q", "embed", "--full")
    assert result.exit_code == 5 and first["track_id"] in flat(result.output), result.output
    assert not (ws.embeddings / ".embeddings.staging").exists()  # the previous export is untouched
    verdict = run_cli("-w", ws.root, "verify", "--json")
    assert verdict.exit_code == 5
    features = next(a for a in json.loads(verdict.stdout)["artefacts"] if a["kind"] == "features")
    assert features["status"] == "damaged" and features["damaged_files"] == [f"shards/{first['shard']}.npy"]


def test_an_undamaged_workspace_verifies(trained_workspace: Workspace) -> None:
    result = run_cli("-w", trained_workspace.root, "verify", "--json")
    assert result.exit_code == 0, result.output
    status = {a["kind"]: a["status"] for a in json.loads(result.stdout)["artefacts"]}
    assert status == {
        "features": "ok", "split": "ok", "model": "ok", "embeddings": "ok", "index": "ok",
        "clusters": "missing", "classifier": "missing",
    }  # fmt: skip


def test_stale_embeddings_are_reported_and_re_made(trained_workspace_copy: Workspace, tmp_path: Path) -> None:
    ws = trained_workspace_copy
    library = shutil.copytree(FeatureStore(ws.features).tracks[0]["root"], tmp_path / "audio")
    next(library.rglob("*.wav")).unlink()  # the library loses a track: the embeddings no longer match
    assert run_cli("-w", ws.root, "-q", "extract", "--replace", library).exit_code == 0
    found = run_cli("-w", ws.root, "verify", "--json")
    assert found.exit_code == 0  # stale is not damage
    status = {a["kind"]: a["status"] for a in json.loads(found.stdout)["artefacts"]}
    assert status["embeddings"] == "stale" and status["features"] == "ok"
    repaired = run_cli("-w", ws.root, "-q", "verify", "--repair", "--json")
    assert repaired.exit_code == 0, repaired.output
    report = json.loads(repaired.stdout)
    assert [r.split(":")[0] for r in report["repaired"]] == ["embeddings", "index"]  # the index follows them
    assert all(a["status"] in ("ok", "missing") for a in report["artefacts"])
    assert len(EmbeddingStore(ws.embeddings)) == len(FeatureStore(ws.features)) == 3 * 6 - 1


def _results(ws: Workspace, query: Path) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, list, float | None]:
    features = FeatureStore(ws.features)
    mels = [np.array(features.mel(t)) for t in sorted(features.track_ids())]
    store = EmbeddingStore(ws.embeddings)
    answer = Searcher.open(ws).query_file(query, mode="similar").to_dict()
    matches = [(m["track_id"], round(m["score"], 6)) for m in answer["matches"]]
    return mels, np.array(store.segment_vectors()), np.array(store.track_descriptors()), matches, features.fingerprint


REPAIRS = [
    ("feature shard", truncate, {"features"}),
    ("feature shard", inject_nan, {"features"}),
    ("feature table", delete, {"features"}),
    ("segment vectors", truncate, {"embeddings"}),  # re-made the same: the index built from them stays valid
    ("track descriptors", inject_nan, {"embeddings"}),
    ("segment index", truncate, {"index"}),
    ("index meta", corrupt_json, {"index"}),
    ("split table", delete, {"split"}),
]


@pytest.mark.parametrize(
    ("what", "damage", "remade"), REPAIRS, ids=[f"{what}-{damage.__name__}" for what, damage, _ in REPAIRS]
)
def test_repair_brings_back_the_undamaged_results(
    trained_workspace: Workspace,
    trained_workspace_copy: Workspace,
    what: str,
    damage: Callable[[Path], None],
    remade: set[str],
) -> None:
    ws = trained_workspace_copy
    query = query_file(ws)
    expected = _results(trained_workspace, query)
    damage(TARGETS[what](ws))
    repaired = run_cli("-w", ws.root, "-q", "verify", "--repair", "--json")
    assert repaired.exit_code == 0, repaired.output
    report = json.loads(repaired.stdout)
    assert {r.split(":")[0] for r in report["repaired"]} == remade
    assert all(a["status"] in ("ok", "missing") for a in report["artefacts"]), report
    got = _results(ws, query)
    assert all(np.array_equal(a, b) for a, b in zip(got[0], expected[0], strict=True))
    assert np.array_equal(got[1], expected[1]) and np.array_equal(got[2], expected[2])
    assert got[3:] == expected[3:]


# --- a full disk --------------------------------------------------------------------------------------------


class _FillingFile:
    """A file whose disk fills up: writes beyond the bytes ``left`` (shared by every file) raise ENOSPC."""

    def __init__(self, fh: Any, left: list[int]):
        self.fh, self.left = fh, left

    def write(self, data: bytes) -> int:
        if len(data) > self.left[0]:
            self.fh.write(data[: self.left[0]])
            self.left[0] = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.left[0] -= len(data)
        return self.fh.write(data)


def fill_disk_after(monkeypatch: pytest.MonkeyPatch, room: int) -> None:
    """Every artefact file written (they all go through ``artefacts.atomic_file``) fills a disk of ``room`` bytes."""
    real, left = artefacts.atomic_file, [room]

    @contextmanager
    def filling(path: Path) -> Iterator[_FillingFile]:
        with real(path) as fh:
            yield _FillingFile(fh, left)

    monkeypatch.setattr(artefacts, "atomic_file", filling)


def test_a_full_disk_stops_extract_cleanly_and_the_next_run_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = make_class_corpus(tmp_path / "audio", classes=2, per_class=3, seconds=2.0)
    features = tmp_path / "features"
    fill_disk_after(monkeypatch, room=80_000)  # a few one-track shards (flushed after every file) fit
    with pytest.raises(DiskSpaceError, match=r"full.*Kept: [1-5] newly extracted track\(s\).*`embedtool extract`"):
        extract_features(corpus, features, flush_every_s=0)
    kept = {p.stem for p in (features / "shards").glob("*.npy") if not p.name.endswith(".peaks.npy")}
    assert kept and kept == {p.stem for p in (features / "shards").glob("*.json")}  # each with its sidecar
    assert kept == {p.name.split(".")[0] for p in (features / "shards").glob("*.peaks.npy")}  # and its peaks
    assert not [p for p in features.rglob(".*") if p.name.endswith(".tmp")]  # the partial file is gone
    assert not (features / "meta.json").exists()  # nothing published
    monkeypatch.undo()
    resumed = extract_features(corpus, features, flush_every_s=0)
    assert resumed.unchanged == len(kept) and resumed.done == 6 - len(kept)
    extract_features(corpus, tmp_path / "reference")
    reference, again = FeatureStore(tmp_path / "reference"), FeatureStore(features)
    assert again.track_ids() == reference.track_ids()
    assert all(np.array_equal(again.mel(t), reference.mel(t)) for t in reference.track_ids())
    assert all(np.array_equal(again.peaks(t), reference.peaks(t)) for t in reference.track_ids())


def test_extract_refuses_to_start_without_the_space_it_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = make_class_corpus(tmp_path / "audio", classes=2, per_class=2, seconds=10.0)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(artefacts.shutil, "disk_usage", lambda path: usage._replace(free=100_000))
    result = run_cli("-w", tmp_path / "ws", "-q", "extract", corpus)
    output = flat(result.output)
    assert result.exit_code == 1 and "Traceback" not in output, output
    # 40 s of audio at 100 frames/s x 64 mels x 2 bytes: about 0.5 MB needed, 0.1 MB free
    assert re.search(
        r"Not enough free space for the features of 4 audio file\(s\).*about 0.5 MB .* 0.1 MB free", output
    )
    assert not list((tmp_path / "ws").rglob("*.npy"))


@pytest.mark.parametrize("command", ["embed", "index"])
def test_embed_and_index_refuse_to_start_without_the_space_they_need(
    command: str, trained_workspace_copy: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = trained_workspace_copy
    folder = ws.embeddings if command == "embed" else ws.index
    before = sorted(p.name for p in folder.iterdir())
    usage = shutil.disk_usage(ws.root)
    monkeypatch.setattr(artefacts.shutil, "disk_usage", lambda path: usage._replace(free=1_000))
    args = ("embed", "--full") if command == "embed" else ("index",)
    result = run_cli("-w", ws.root, "-q", *args)
    output = flat(result.output)
    assert result.exit_code == 1 and "Traceback" not in output, output
    what = "the embeddings" if command == "embed" else "the index"
    assert re.search(rf"Not enough free space for {what}: about [\d.,]+ MB to write .* 0.0 MB free", output), output
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written, nothing removed


# --- two runs on one workspace ------------------------------------------------------------------------------


def test_a_second_writing_run_on_a_busy_workspace_is_refused_naming_the_first(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path / "ws")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from embedtool.workspace import Workspace\n"
         f"with Workspace.at({str(ws.root)!r}).lock('train'):\n print('held', flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        corpus = make_class_corpus(tmp_path / "audio", classes=1, per_class=1, seconds=1.0)
        result = run_cli("-w", ws.root, "-q", "extract", corpus)
        output = flat(result.output)
        assert result.exit_code == 1 and "Traceback" not in output, output
        assert f"is busy: `embedtool train` (process {holder.pid}" in output
        assert not ws.features.exists()  # refused before writing anything
    finally:
        holder.kill()
        holder.wait()
    assert run_cli("-w", ws.root, "-q", "extract", corpus).exit_code == 0  # a killed holder leaves no lock behind


def test_the_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    ws = Workspace.at(tmp_path / "ws")
    with ws.lock("verify --repair"), ws.lock("extract"):  # a repair runs stages that lock too
        pass
    with ws.lock("extract"):  # released: free again
        pass


def test_a_file_name_leading_outside_the_artefact_is_refused(trained_workspace_copy: Workspace) -> None:
    ws = trained_workspace_copy
    meta_path = ws.features / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["files"]  # as an older workspace, without checksums to catch the edit
    meta_path.write_text(json.dumps(meta))
    table = feature_table(ws)
    tracks = pq.read_table(table)
    shards = pa.array(["../../outside"] * tracks.num_rows)
    pq.write_table(tracks.set_column(tracks.schema.get_field_index("shard"), "shard", shards), table)
    result = run_cli("-w", ws.root, "-q", "embed", "--full")
    assert result.exit_code == 5 and "outside its folder" in flat(result.output), result.output
    meta["extra"]["table"] = "../../tracks.parquet"
    meta_path.write_text(json.dumps(meta))
    info = run_cli("-w", ws.root, "info", "--json")  # info shows the problem instead of failing
    assert info.exit_code == 0, info.output
    features = next(s for s in json.loads(info.stdout)["stages"] if s["name"] == "features")
    assert "outside its folder" in features["problem"]
    assert run_cli("-w", ws.root, "verify").exit_code == 5


def test_a_workspace_made_before_checksums_opens_and_verifies(trained_workspace_copy: Workspace) -> None:
    ws = trained_workspace_copy
    for meta_path in ws.root.rglob("meta.json"):
        meta = json.loads(meta_path.read_text())
        meta.pop("files", None)
        meta_path.write_text(json.dumps(meta))
    assert run_cli("-w", ws.root, "-q", "neighbours", query_file(ws)).exit_code == 0
    result = run_cli("-w", ws.root, "verify", "--json")
    assert result.exit_code == 0, result.output
    made = [a for a in json.loads(result.stdout)["artefacts"] if a["status"] != "missing"]
    assert len(made) == 5 and all(a["status"] == "ok" and "no checksums" in a["detail"] for a in made)
    truncate(shard(ws))  # without checksums, damage is still found by reading the files whole
    assert run_cli("-w", ws.root, "verify").exit_code == 5
