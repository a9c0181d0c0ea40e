"""Training with several processes (DDP under torchrun; gloo on the CPU here), the triplet plan's per-rank shares,
and the bounded reads of large libraries (input statistics, validation windows)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from embedtool.audio.settings import FeatureSettings
from embedtool.features.store import FeatureStore, ShardWriter, commit
from embedtool.model.settings import TrainSettings
from embedtool.training import validation
from embedtool.training.sampler import TripletSampler, rank_share
from embedtool.training.trainer import frame_stats, input_stats
from embedtool.training.validation import Validator, validation_windows

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
