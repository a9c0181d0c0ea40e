"""`--engine ray`: the same artefacts as the local engine, failed tasks that do not end the run, resuming after
kill -9, and the probe of what workers see. One local Ray (2 CPUs) serves the whole file."""

from __future__ import annotations

import functools
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
from factories import SAMPLE_AUDIO, kill_9_when_marked, make_class_corpus, write_config, write_corrupt

from embedtool.audio.settings import FeatureSettings
from embedtool.embedding.export import export_embeddings
from embedtool.embedding.options import EmbedOptions
from embedtool.engine import EngineOptions
from embedtool.engine.ray_engine import RayEngine
from embedtool.errors import InputError
from embedtool.features import extract
from embedtool.features.extract import run_extract
from embedtool.features.options import ExtractOptions
from embedtool.features.store import FeatureStore
from embedtool.model.store import resolve_model_source

REPO = Path(__file__).resolve().parents[2]
RAY = EngineOptions(name="ray")
SETTINGS = FeatureSettings()


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Any:
    """A Ray of 2 CPUs for the file; its workers import embedtool and this module (a test's injected fault)."""
    with pytest.MonkeyPatch.context() as mp:
        tests = [str(REPO / "tests"), str(Path(__file__).resolve().parent)]  # the helpers and this module
        path = os.pathsep.join([str(REPO), *tests, os.environ.get("PYTHONPATH", "")])
        mp.setenv("PYTHONPATH", path)  # workers inherit the environment of the Ray started here
        # One GPU as Ray sees it (none here as torch sees it): embed with device auto takes the GPU actor path,
        # and the model, loaded inside the actor, falls back to the CPU.
        ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        yield ray.get_runtime_context().gcs_address
        ray.shutdown()


def canonical(features: Path) -> tuple[list[dict[str, Any]], dict[str, bytes]]:
    """A features artefact with shard names replaced by their rank (names are random): its table rows and the
    bytes of every shard array."""
    meta = json.loads((features / "meta.json").read_text())
    rows = pq.read_table(features / meta["extra"]["table"]).to_pylist()
    names = sorted({r["shard"] for r in rows}, key=lambda n: min(r["track_id"] for r in rows if r["shard"] == n))
    rank = {name: f"shard-{i}" for i, name in enumerate(names)}
    arrays = {rank[n]: np.load(features / "shards" / f"{n}.npy").tobytes() for n in names}
    return [{**r, "shard": rank[r["shard"]]} for r in rows], arrays


def test_local_and_ray_make_the_same_features_and_embeddings(tmp_path: Path) -> None:
    local = run_extract([SAMPLE_AUDIO], tmp_path / "a" / "features", SETTINGS, ExtractOptions(jobs=2))
    on_ray = run_extract([SAMPLE_AUDIO], tmp_path / "b" / "features", SETTINGS, ExtractOptions(jobs=2), engine=RAY)
    assert local.done == on_ray.done == 72 and on_ray.engine == "ray" and on_ray.jobs == 2
    assert local.tasks == on_ray.tasks > 2  # the same plan: 72 files in tasks spread over both workers
    assert canonical(tmp_path / "a" / "features") == canonical(tmp_path / "b" / "features")
    assert local.fingerprint == on_ray.fingerprint

    general = resolve_model_source("general")
    options = EmbedOptions(device="cpu", batch_size=8)  # several tasks, so order across tasks is exercised
    for folder, engine in (("a", None), ("b", RAY)):
        features = tmp_path / folder / "features"
        report = export_embeddings(features, general, tmp_path / folder / "emb", options, None, engine)
        assert report.embedded_tracks == 72
    assert report.device == "ray: 2 CPU worker(s)"
    auto = EmbedOptions(device="auto", batch_size=8)  # GPU actors (see local_ray)
    report = export_embeddings(tmp_path / "b" / "features", general, tmp_path / "c" / "emb", auto, None, RAY)
    assert report.device == "ray: 1 GPU worker(s)"
    files = sorted(p.name for p in (tmp_path / "a" / "emb").iterdir())
    for other in ("b", "c"):
        assert files == sorted(p.name for p in (tmp_path / other / "emb").iterdir())
        for name in files:
            if name != "meta.json":  # (times); its fingerprint is compared below
                assert (tmp_path / "a" / "emb" / name).read_bytes() == (tmp_path / other / "emb" / name).read_bytes()
    meta = [json.loads((tmp_path / f / "emb" / "meta.json").read_text()) for f in ("a", "b", "c")]
    assert meta[0]["fingerprint"] == meta[1]["fingerprint"] == meta[2]["fingerprint"]


def die_on(name: str, job: Any, files: list[dict[str, Any]]) -> Any:
    """The extract task, except that the worker running the task holding ``name`` dies (as a crash would)."""
    if any(Path(f["path"]).name == name for f in files):
        os._exit(1)
    return extract._extract_task(job, files)


def test_a_dead_worker_fails_its_files_the_run_goes_on_and_a_rerun_decodes_only_those(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_class_corpus(tmp_path / "audio", classes=2, per_class=3, seconds=1.0, sr=16000)
    write_corrupt(root / "tone_low" / "broken.wav")
    victim = "noise_high_0.wav"
    features = tmp_path / "features"
    monkeypatch.setattr(extract, "_extract_task", functools.partial(die_on, victim))
    opts = ExtractOptions(jobs=2, flush_every_s=0)  # a task per file
    with pytest.raises(InputError, match=r"2 file\(s\) failed under --strict"):
        run_extract([root], features, SETTINGS, ExtractOptions(jobs=2, flush_every_s=0, strict=True), engine=RAY)
    errors = {Path(e["path"]).name: e["reason"] for e in json.loads((features / "errors.json").read_text())}
    assert errors[victim].startswith("worker died") and "not a recognised audio file" in errors["broken.wav"]
    assert not (features / "meta.json").exists()  # nothing published, but the finished tasks' shards are kept
    assert len(list((features / "shards").glob("*.json"))) == 5

    monkeypatch.undo()
    rerun = run_extract([root], features, SETTINGS, opts, engine=RAY)
    assert (rerun.done, rerun.unchanged, rerun.failed, rerun.tasks_failed) == (1, 5, 1, 0)  # only the lost file
    run_extract([root], tmp_path / "clean", SETTINGS, opts, engine=RAY)
    assert canonical(features) == canonical(tmp_path / "clean")


KILL_DRIVER = """
import sys, time
from pathlib import Path
from embedtool.features import extract

notify, marker = extract._notify, Path(sys.argv[3])

def stop_after_two(progress, state):  # wait to be killed once two files are done
    notify(progress, state)
    if state.done >= 2 and state.phase == "extract" and not marker.exists():
        marker.write_text("2 done")
        time.sleep(120)

extract._notify = stop_after_two
from embedtool.cli.app import app
app(["-q", "-w", sys.argv[2], "extract", sys.argv[1], "--engine", "ray", "--cluster", sys.argv[4], "-j", "2"])
"""


def test_kill_9_of_a_ray_extract_then_a_rerun_equals_an_uninterrupted_run(tmp_path: Path, local_ray: str) -> None:
    root = make_class_corpus(tmp_path / "audio", classes=2, per_class=3, seconds=1.0, sr=16000)
    write_config(tmp_path, "extract: {flush_every_s: 0}\n")  # (the driver runs in tmp_path: a task per file)
    driver = tmp_path / "driver.py"
    driver.write_text(textwrap.dedent(KILL_DRIVER))
    ws = tmp_path / "ws"
    # The driver joins this file's Ray as a cluster (--cluster ADDRESS): no Ray of its own to start.
    kill_9_when_marked(driver, [root, ws, tmp_path / "marker", local_ray], tmp_path / "marker", timeout_s=120)
    assert not (ws / "features" / "meta.json").exists()
    kept = len(list((ws / "features" / "shards").glob("*.json")))
    assert kept >= 2

    opts = ExtractOptions(jobs=2, flush_every_s=0)
    rerun = run_extract([root], ws / "features", SETTINGS, opts, engine=RAY)
    assert rerun.unchanged >= 2 and rerun.done + rerun.unchanged == 6 and rerun.failed == 0
    run_extract([root], tmp_path / "clean", SETTINGS, opts, engine=RAY)
    assert canonical(ws / "features") == canonical(tmp_path / "clean")  # (a shard per file in both)
    live = {t["shard"] for t in FeatureStore(ws / "features").tracks}
    assert {p.name.split(".")[0] for p in (ws / "features" / "shards").iterdir()} == live  # no orphan shards left


def test_workers_that_cannot_see_a_path_are_refused_naming_it(tmp_path: Path) -> None:
    engine = RayEngine()
    engine.check_paths(readable=[SAMPLE_AUDIO], writable=[tmp_path])  # what they see: fine
    assert not list(tmp_path.iterdir())  # the probe's files are gone
    with pytest.raises(InputError, match=r"Ray workers cannot see /nowhere/audio \(node .*: not there\).*every node"):
        engine.check_paths(readable=[Path("/nowhere/audio")], writable=[tmp_path])
    assert sys.modules["ray"].is_initialized()  # not ours to stop
    engine.close()
    assert ray.is_initialized()


def test_an_on_disk_index_filled_by_ray_tasks_answers_like_one_filled_here(tmp_path: Path, local_ray: str) -> None:
    from embedtool.embedding.pooling import l2_normalise
    from embedtool.embedding.vectors import ShardedVectors
    from embedtool.engine import open_engine
    from embedtool.indexing.build import build_index
    from embedtool.indexing.options import IndexOptions

    rng = np.random.default_rng(0)
    x = l2_normalise(rng.standard_normal((6000, 16)) + 2 * rng.standard_normal((10, 16))[rng.integers(0, 10, 6000)])
    paths = []
    for i, part in enumerate(np.array_split(x.astype(np.float32), 3)):
        np.save(tmp_path / f"segments-{i:04d}.npy", part)
        paths.append(tmp_path / f"segments-{i:04d}.npy")
    source = ShardedVectors.from_files(paths)
    options = IndexOptions(kind="ivf-pq", on_disk="on", block_vectors=1000, ivf_nlist=32, eval_queries=50)
    (tmp_path / "here").mkdir()
    (tmp_path / "ray").mkdir()
    here = build_index(source, options, directory=tmp_path / "here")
    with open_engine(EngineOptions(name="ray", cluster=local_ray), 2) as engine:
        assert not engine.in_process
        on_ray = build_index(source, options, directory=tmp_path / "ray", engine=engine)
    queries = x[rng.choice(len(x), 20, replace=False)]
    assert np.array_equal(here.index.search(queries, 5)[1], on_ray.index.search(queries, 5)[1])
    assert (tmp_path / "ray" / "segments.ivfdata").read_bytes() == (tmp_path / "here" / "segments.ivfdata").read_bytes()


def test_fingerprint_blocks_made_by_ray_tasks_equal_those_made_here(
    trained_workspace: Any, tmp_path: Path, local_ray: str
) -> None:
    from embedtool.embedding.store import EmbeddingStore
    from embedtool.engine import open_engine
    from embedtool.features.store import FeatureStore
    from embedtool.indexing.fingerprint import FILES, FingerprintSettings, fingerprint_library_on_disk

    features = FeatureStore(trained_workspace.features)
    tracks = list(EmbeddingStore(trained_workspace.embeddings).tracks)
    settings = FingerprintSettings.for_source("peaks" if features.has_peaks(tracks) else "mel")
    (tmp_path / "here").mkdir()
    (tmp_path / "ray").mkdir()
    block = 3000  # several blocks, several tracks in most
    here = fingerprint_library_on_disk(features, tracks, settings, tmp_path / "here", block)
    with open_engine(EngineOptions(name="ray", cluster=local_ray), 2) as engine:
        on_ray = fingerprint_library_on_disk(features, tracks, settings, tmp_path / "ray", block, engine=engine)
    assert here == on_ray > 5000
    for name in FILES:
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "here" / name).read_bytes()
    assert not (tmp_path / "ray" / ".fingerprint-blocks").exists()
