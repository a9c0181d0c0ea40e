"""Training with several processes (DDP under torchrun; gloo on the CPU here), the triplet plan's per-rank shares,
and the bounded reads of large libraries (input statistics, validation windows).

The torchrun tests start real processes: `embedtool train --nproc-per-node 2` re-launches itself under torchrun,
and the ranks train one tiny model over a few bundled files.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from factories import SAMPLE_AUDIO, extract_features, run_cli

from embedtool.audio.settings import FeatureSettings
from embedtool.errors import ConfigError
from embedtool.features.store import FeatureStore, ShardWriter, commit
from embedtool.model.settings import TrainSettings
from embedtool.training import validation
from embedtool.training.distributed import state_digest
from embedtool.training.sampler import TripletSampler, rank_share
from embedtool.training.trainer import frame_stats, input_stats
from embedtool.training.validation import Validator, validation_windows

REPO = Path(__file__).resolve().parents[2]

# --- the plan's shares -----------------------------------------------------------------------------------------


def test_rank_shares_partition_each_step_of_the_single_process_plan() -> None:
    sampler = TripletSampler([500, 80, 700, 260, 40], 50, 20, negatives="mixed")
    steps, batch, world = 6, 8, 4
    plan = sampler.epoch_plan(steps * batch, seed=3, epoch=2)
    again = sampler.epoch_plan(steps * batch, seed=3, epoch=2)  # what every rank draws for itself
    assert all(np.array_equal(getattr(plan, f), getattr(again, f)) for f in plan.__dataclass_fields__)
    assert not np.array_equal(plan.anchor_start, sampler.epoch_plan(steps * batch, seed=3, epoch=3).anchor_start)
    shares = [list(rank_share(len(plan), batch, rank, world)) for rank in range(world)]
    assert sorted(i for share in shares for i in share) == list(range(len(plan)))  # union: the whole plan
    for a in range(world):
        for b in range(a + 1, world):
            assert not set(shares[a]) & set(shares[b])  # disjoint
    per_rank = batch // world
    for step in range(steps):  # each step: the ranks' batches together are the single-process step's batch
        together = sorted(i for share in shares for i in share[step * per_rank : (step + 1) * per_rank])
        assert together == list(range(step * batch, (step + 1) * batch))
    # a resumed epoch starts each rank's share at the step it stopped after
    assert list(rank_share(len(plan), batch, 1, world, start_step=4)) == shares[1][4 * per_rank :]
    with pytest.raises(ValueError):
        rank_share(len(plan), 6, 0, world)  # the global batch must split evenly
    with pytest.raises(ValueError):
        rank_share(len(plan), batch, world, world)


def test_auto_loader_workers_share_the_cpus_among_the_processes_of_a_machine() -> None:
    cpus = os.cpu_count() or 1
    auto = TrainSettings()
    assert auto.resolved_workers(cuda=True, processes=4) == min(8, max(0, cpus // 4 - 1))
    assert auto.resolved_workers(cuda=True, processes=1) == auto.resolved_workers(cuda=True)
    assert auto.resolved_workers(cuda=False, processes=4) == 0
    assert auto.replace(workers=3).resolved_workers(cuda=True, processes=4) == 3


# --- bounded reads of a large library --------------------------------------------------------------------------


def synthetic_features(directory: Path, frames: list[int], seed: int = 0) -> Path:
    fs = FeatureSettings()
    rng = np.random.default_rng(seed)
    writer = ShardWriter(directory, fs)
    for i, n in enumerate(frames):
        record = {"track_id": f"{i:016x}", "path": f"/synthetic/{i}.wav", "label": None, "group": None}
        writer.add({**record, "duration_s": n / fs.frames_per_second}, rng.normal(-4 + i % 3, 2, (n, fs.n_mels)))
    commit(directory, writer.flush(), fs)
    return directory


class CountingStore(FeatureStore):
    """A feature store that counts the tracks whose features were read."""

    def __init__(self, directory: Path):
        super().__init__(directory)
        self.read: list[str] = []

    def mel(self, track_id: str) -> np.ndarray:
        self.read.append(track_id)
        return super().mel(track_id)


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 tracks of 40..200 frames."""
    frames = [40 + (i * 37) % 160 for i in range(60)]
    return synthetic_features(tmp_path_factory.mktemp("library") / "features", frames)


def test_input_stats_read_a_bounded_sample_of_tracks(library: Path) -> None:
    store = CountingStore(library)
    ids = [t["track_id"] for t in store.tracks]
    # at or below the cap: all tracks, the value the unbounded rule gives
    assert input_stats(store, ids, seed=0, max_tracks=60) == frame_stats([store.mel(t) for t in ids])
    assert input_stats(store, ids, seed=0, max_frames=500, max_tracks=60) == frame_stats(
        [store.mel(t) for t in ids], max_frames=500
    )
    # above it: a seeded sample of max_tracks tracks, and only those are read
    store.read.clear()
    mean, std = input_stats(store, ids, seed=0, max_tracks=12)
    assert len(store.read) == len(set(store.read)) == 12
    first = list(store.read)
    store.read.clear()
    assert input_stats(store, ids, seed=0, max_tracks=12) == (mean, std) and store.read == first
    full_mean, full_std = frame_stats([store.mel(t) for t in ids])
    assert abs(mean - full_mean) < 0.5 and abs(std - full_std) < 0.5  # a sample of the same library


def test_validation_keeps_a_bounded_number_of_windows(library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CountingStore(library)
    ids = [t["track_id"] for t in store.tracks]
    settings = TrainSettings(segment_seconds=0.3, val_segments_per_track=4, val_triplets=16, seed=5)
    seg, pad = 30, -13.8
    # below the cap: every validation track, as the unbounded rule
    small = Validator(store, library, ids, settings, seg, 60, pad)
    windows, owners = validation_windows([store.mel(t) for t in ids], seg, 4, pad)
    assert np.array_equal(small.windows, windows) and np.array_equal(small.owners, owners)
    # above it: whole tracks of a seeded sample until the cap, and only their features are read
    monkeypatch.setattr(validation, "MAX_RETRIEVAL_WINDOWS", 50)
    store.read.clear()
    capped = Validator(store, library, ids, settings, seg, 60, pad)
    assert 40 < len(capped.windows) <= 50 and len(store.read) == len(capped.retrieval_ids) < len(ids) // 2
    assert capped.has_recall and capped.metric == "recall_at_1"
    kept = [ids.index(t) for t in capped.retrieval_ids]
    assert kept == sorted(kept) and len(set(kept)) == len(kept)
    again = Validator(store, library, ids, settings, seg, 60, pad)
    assert again.retrieval_ids == capped.retrieval_ids
    # the validation triplets are still drawn over every validation track (read lazily, only those drawn)
    assert capped.dataset is not None and len(capped.dataset.track_ids) == len(ids)
    assert np.array_equal(capped.plan.anchor_track, small.plan.anchor_track)


# --- the launcher, without starting it ------------------------------------------------------------------------


def test_launch_options_are_checked_before_anything_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pickle

    from embedtool.training import launch

    started: list[tuple[list[str], dict]] = []

    def fake_torchrun(command: list[str], env: dict[str, str], poll: object) -> tuple[int, bool]:
        started.append((command, pickle.loads(Path(command[-1]).read_bytes())))
        return 3, False

    monkeypatch.setattr(launch, "run_forwarding_signals", fake_torchrun)
    ws = tmp_path / "ws"
    synthetic_features(ws / "features", [100, 120, 90])
    base = ["-w", ws, "train", "--device", "cpu"]
    for extra, message in [
        (["--nnodes", "2"], "--rdzv"),
        (["--rdzv", "host:29400"], "several machines"),
        (["--nproc-per-node", "3", "--batch-size", "8"], "multiple"),
        (["--nproc-per-node", "2", "--pretrained", "general"], "--pretrained"),
    ]:
        result = run_cli(*base, *extra)
        assert result.exit_code == 2 and message in " ".join(result.output.split()), (extra, result.output)
    if not torch.cuda.is_available():
        result = run_cli("-w", ws, "train", "--device", "cuda", "--nproc-per-node", "2")
        assert result.exit_code == 2 and "no CUDA GPU" in result.output
    assert not started
    # the ranks run the launch module on the same workspace and settings; torchrun's failure is the command's
    result = run_cli("-q", *base, "--nproc-per-node", "2", "--nnodes", "2", "--rdzv", "node0:29400", "-e", "3")
    assert result.exit_code == 1 and "torchrun ended with status 3" in " ".join(result.output.split())
    ((command, job),) = started
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    at = command.index("embedtool.training.launch")
    assert "--rdzv-endpoint" in command[:at] and "node0:29400" in command[:at] and "--standalone" not in command
    assert command[at - 1] == "-m" and command[at - 3 : at - 1] == ["--nproc-per-node", "2"]
    assert job["workspace"] == str(ws.resolve()) and not job["resume"] and job["events"]
    assert job["settings"].epochs == 3 and job["settings"].device == "cpu"


def test_the_launcher_ends_with_a_failed_ranks_message(tmp_path: Path) -> None:
    from embedtool.training.launch import launch_failure

    def outcome(rank: int, code: int, message: str, embedtool: bool, at: float) -> None:
        payload = {"rank": rank, "exit_code": code, "message": message, "embedtool": embedtool, "time": at}
        (tmp_path / f"rank-{rank}.json").write_text(json.dumps(payload))

    assert "before any training process" in str(launch_failure(tmp_path, 1, False))
    assert launch_failure(tmp_path, 1, True).exit_code == 130
    outcome(1, 1, "RuntimeError: connection closed by peer", False, 2.0)
    outcome(2, 1, "RuntimeError: out of memory", False, 1.0)
    error = launch_failure(tmp_path, 1, False)
    assert "process 2: RuntimeError: out of memory" in str(error)  # the first failure, not its echoes
    outcome(3, 4, "Nothing to resume", True, 3.0)
    error = launch_failure(tmp_path, 1, False)
    assert error.exit_code == 4 and "process 3: Nothing to resume" in str(error)  # embedtool's own error first


def test_a_rank_process_ends_with_its_outcomes_status(tmp_path: Path) -> None:
    """A rank ends with its own status (embedtool's error's exit code here, recorded for the launcher), not with
    whatever the interpreter's teardown would add; a rank that cannot even read its job says why and ends 1."""
    import pickle

    from embedtool.training.launch import JOB_FILE

    job = {"workspace": str(tmp_path / "no-workspace"), "settings": TrainSettings(device="cpu"), "resume": True,
           "threads": 1, "events": False, "log_level": 0}  # fmt: skip
    (tmp_path / JOB_FILE).write_bytes(pickle.dumps(job))
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1"}
    command = [sys.executable, "-m", "embedtool.training.launch"]
    done = subprocess.run([*command, str(tmp_path / JOB_FILE)], env=env, capture_output=True, text=True, timeout=120)
    outcome = json.loads((tmp_path / "rank-0.json").read_text())
    assert outcome["embedtool"] and outcome["exit_code"] not in (0, 1)
    assert done.returncode == outcome["exit_code"], done.stderr
    broken = subprocess.run([*command, str(tmp_path / "missing.pkl")], env=env, capture_output=True, text=True)
    assert broken.returncode == 1 and "missing.pkl" in broken.stderr


# --- real processes under torchrun -----------------------------------------------------------------------------

TINY_ARGS = [
    "--epochs",
    "3",
    "--steps-per-epoch",
    "8",
    "--batch-size",
    "8",
    "--width",
    "0.0625",
    "--embedding-dim",
    "16",
    "--segment-seconds",
    "0.3",
    "--radius",
    "0.6",
    "--val-fraction",
    "0.25",
    "--split-by",
    "track",
    "--device",
    "cpu",
    "--seed",
    "0",
]  # fmt: skip  (with write_tiny_config: tests/training/test_train.py's TINY, three epochs of eight steps)


def write_tiny_config(folder: Path) -> None:
    """The TINY settings the flags cannot set, for every process."""
    (folder / "embedtool.yaml").write_text("train:\n  warmup_steps: 0\n  lr_schedule: constant\n  val_triplets: 16\n"
                                           "  val_segments_per_track: 4\n")  # fmt: skip


def embedtool_process(folder: Path, *args: str | Path) -> subprocess.Popen:
    """`embedtool ARGS` in its own process (as a user starts it), two torch threads in all."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    command = [sys.executable, "-m", "embedtool", "-c", str(folder / "embedtool.yaml"), *map(str, args)]
    return subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_embedtool(folder: Path, *args: str | Path, timeout: float = 240) -> tuple[int, str, str]:
    proc = embedtool_process(folder, *args)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@pytest.fixture(scope="module")
def bundled_features(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Features of 12 bundled files (the loops and the cymbals)."""
    root = tmp_path_factory.mktemp("bundled")
    extract_features([SAMPLE_AUDIO / "loop", SAMPLE_AUDIO / "cymbal"], root / "features")
    return root / "features"


def fresh_workspace(folder: Path, features: Path) -> Path:
    import shutil

    shutil.copytree(features, folder / "ws" / "features")
    write_tiny_config(folder)
    return folder / "ws"


def checkpoint_weights(model: Path) -> dict[str, torch.Tensor]:
    return torch.load(model / "checkpoint.pt", weights_only=True)["model"]


@pytest.fixture(scope="module")
def two_process_run(bundled_features: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """`train --nproc-per-node 2` to the end: (workspace, its JSON report)."""
    folder = tmp_path_factory.mktemp("ddp")
    ws = fresh_workspace(folder, bundled_features)
    code, out, err = run_embedtool(folder, "-q", "-w", ws, "train", *TINY_ARGS, "--nproc-per-node", "2", "--json")
    assert code == 0, err
    assert " ".join(err.split()).count("epoch 3 | train loss") == 1  # rank 0's events, drawn by the launcher
    return ws, json.loads(out)


def test_two_processes_train_one_model(two_process_run: tuple[Path, dict]) -> None:
    ws, report = two_process_run
    assert report["world_size"] == 2 and report["steps"] == 24 and report["epochs_run"] == 3
    # each rank hashed its own final weights: the same, and those rank 0 saved
    digests = report["weights_digests"]
    assert len(digests) == 2 and digests[0] == digests[1] == state_digest(checkpoint_weights(ws / "model"))
    # rank 0 alone wrote: one metrics line per epoch, one start in the workspace's log
    assert len((ws / "model" / "metrics.jsonl").read_text().splitlines()) == 3
    assert (ws / "logs" / "embedtool.log").read_text().count("embedtool.train INFO: started") == 1
    meta = json.loads((ws / "model" / "meta.json").read_text())
    assert meta["config"]["train"]["batch_size"] == 8 and meta["config"]["train"]["warmup_steps"] == 0


def test_an_interrupted_run_resumes_to_the_uninterrupted_weights(
    two_process_run: tuple[Path, dict], bundled_features: Path, tmp_path: Path
) -> None:
    reference, _ = two_process_run
    ws = fresh_workspace(tmp_path, bundled_features)
    # a rank's error is the launcher's: its message and exit status
    code, _, err = run_embedtool(tmp_path, "-w", ws, "train", *TINY_ARGS, "--nproc-per-node", "2", "--resume")
    assert code == 4 and "training process 0: Nothing to resume" in " ".join(err.split())
    # SIGTERM once epoch 1 is saved: the ranks stop together at a step boundary and rank 0 saves a checkpoint
    proc = embedtool_process(tmp_path, "-q", "-w", ws, "train", *TINY_ARGS, "--nproc-per-node", "2")
    saved = ws / "model.partial" / "checkpoint.json"
    deadline = time.monotonic() + 180
    while not saved.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Training interrupted" in err and "--resume" in err
    stopped = json.loads(saved.read_text())
    assert 8 <= stopped["global_step"] < 24 and stopped["world_size"] == 2
    code, out, err = run_embedtool(tmp_path, "-q", "-w", ws, "train", *TINY_ARGS, "--nproc-per-node", "2", "--resume")
    assert code == 0, err
    resumed, expected = checkpoint_weights(ws / "model"), checkpoint_weights(reference / "model")
    assert all(torch.equal(resumed[k], expected[k]) for k in expected)
    published = torch.load(ws / "model" / "model.pt", weights_only=True)
    assert all(torch.equal(published[k], v) for k, v in torch.load(reference / "model" / "model.pt").items())


def test_the_python_api_trains_with_two_processes(
    bundled_features: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from embedtool import pipeline
    from embedtool.workspace import Workspace

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    ws = Workspace.at(fresh_workspace(tmp_path, bundled_features))
    settings = TrainSettings(
        epochs=1, steps_per_epoch=4, batch_size=8, width=0.0625, embedding_dim=16, segment_seconds=0.3,
        neighbour_radius_s=0.6, val_fraction=0.25, split_by="track", device="cpu", seed=0, warmup_steps=0,
        lr_schedule="constant", val_triplets=16, val_segments_per_track=4,
    )  # fmt: skip
    events: list = []
    report = pipeline.train(ws, settings, progress=events.append, nproc_per_node=2)
    assert report.world_size == 2 and report.steps == 4 and len(set(report.weights_digests)) == 1
    kinds = [event["event"] for event in events]  # rank 0's events, in this process
    assert kinds[0] == "start" and kinds.count("epoch") == 1 and "step" in kinds
    assert (ws.model / "meta.json").is_file()
    with pytest.raises(ConfigError, match="multiple"):
        pipeline.train(ws, settings.replace(batch_size=6), nproc_per_node=4)


def test_torchrun_started_by_the_user_runs_the_cli_in_each_process(bundled_features: Path, tmp_path: Path) -> None:
    """`torchrun … -m embedtool train` (docs/distributed-training.md): every process runs the CLI; rank 0 reports,
    and each ends with its status (0 here, the output flushed) rather than by the interpreter's teardown."""
    ws = fresh_workspace(tmp_path, bundled_features)
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    short = [*TINY_ARGS[2:], "--epochs", "1", "--steps-per-epoch", "4"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc-per-node",
               "2", "-m", "embedtool", "-q", "-c", str(tmp_path / "embedtool.yaml"), "-w", str(ws), "train", *short,
               "--json"]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # rank 0's report alone: the other rank prints nothing
    assert report["world_size"] == 2 and report["steps"] == 4 and len(set(report["weights_digests"])) == 1
