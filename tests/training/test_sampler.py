"""The segment rule, the triplet sampler's invariants, augmentation and the persisted train/validation split."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from embedtool.errors import InputError
from embedtool.features.windows import crop, silence_floor, window_starts
from embedtool.model.settings import TrainSettings
from embedtool.training.augment import Augmenter
from embedtool.training.dataset import shifted_crop
from embedtool.training.sampler import TripletSampler
from embedtool.training.splits import draw_split, ensure_split, load_split

# --- segments -----------------------------------------------------------------------------------------------


def test_window_starts_cover_the_track_without_crossing_its_end() -> None:
    starts = window_starts(1000, 100, 30)
    assert starts[0] == 0 and starts[-1] == 900  # the tail window ends exactly at the last frame
    assert np.all(np.diff(starts) > 0) and np.all(np.diff(starts)[:-1] == 30)
    assert np.all(starts + 100 <= 1000)
    assert window_starts(1000, 100, 100).tolist() == list(range(0, 901, 100))  # exact fit: no extra window
    assert window_starts(100, 100, 10).tolist() == [0]
    assert window_starts(7, 100, 10).tolist() == [0]  # short track: one window
    assert window_starts(0, 100, 10).tolist() == []
    with pytest.raises(ValueError):
        window_starts(100, 0, 10)


def test_crop_pads_short_tracks_with_the_silence_floor_and_refuses_crossing() -> None:
    floor = silence_floor(1e-6)
    assert floor == pytest.approx(math.log(1e-6))
    mel = np.arange(5 * 4, dtype=np.float16).reshape(5, 4)
    out = crop(mel, 0, 8, floor)
    assert out.dtype == np.float32 and out.shape == (8, 4)
    assert np.array_equal(out[:5], mel.astype(np.float32)) and np.all(out[5:] == np.float32(floor))
    long = np.arange(40, dtype=np.float32).reshape(10, 4)
    assert np.array_equal(crop(long, 6, 4, floor), long[6:10])
    with pytest.raises(ValueError, match="crosses the end"):
        crop(long, 7, 4, floor)
    with pytest.raises(ValueError, match="one window"):
        crop(mel, 1, 8, floor)


def test_shifted_crop_never_crosses_a_track_end() -> None:
    floor = -13.8
    short = np.ones((5, 2), dtype=np.float32)
    right = shifted_crop(short, 0, 8, floor, 2)
    assert np.all(right[:2] == floor) and np.all(right[2:7] == 1) and np.all(right[7:] == floor)
    left = shifted_crop(short, 0, 8, floor, -2)
    assert np.all(left[:3] == 1) and np.all(left[3:] == floor)
    long = np.arange(20, dtype=np.float32).reshape(10, 2)
    assert np.array_equal(shifted_crop(long, 5, 4, floor, 3), long[6:10])  # clipped at the end
    assert np.array_equal(shifted_crop(long, 1, 4, floor, -3), long[0:4])  # clipped at the start


# --- sampler ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("negatives", ["other-track", "same-track-far", "mixed"])
def test_sampler_invariants(negatives: str) -> None:
    frames = np.array([1000, 400, 130, 100, 40, 2500])
    seg, radius = 100, 50
    sampler = TripletSampler(frames, seg, radius, negatives, 0.5, short_shift_frames=4)
    plan = sampler.sample(5000, np.random.default_rng(0))
    room = np.maximum(frames - seg, 0)
    a, n = plan.anchor_track, plan.negative_track
    # windows stay inside their tracks
    for track, start in ((a, plan.anchor_start), (a, plan.positive_start), (n, plan.negative_start)):
        assert np.all(start >= 0) and np.all(start <= room[track])
    # positives: same track, a different start within the radius; or the short-track rule
    multi = room[a] >= 1
    d = np.abs(plan.positive_start - plan.anchor_start)
    assert np.all(d[multi] >= 1) and np.all(d[multi] <= radius)
    assert np.all(plan.positive_shift[multi] == 0)
    single = ~multi
    assert single.any()
    assert np.all(plan.positive_start[single] == plan.anchor_start[single])
    assert np.all((np.abs(plan.positive_shift[single]) >= 1) & (np.abs(plan.positive_shift[single]) <= 4))
    # negatives
    same = n == a
    if negatives == "other-track":
        assert not same.any()
    else:
        far = np.abs(plan.negative_start - plan.anchor_start)
        assert np.all(far[same] > radius)  # same-track negatives lie beyond the radius
        assert same.any()
        if negatives == "same-track-far":
            # only triplets whose track has no room beyond the radius fall back to another track
            left = np.maximum(plan.anchor_start - radius, 0)
            right = np.maximum(room[a] - (plan.anchor_start + radius), 0)
            assert np.array_equal(same, (left + right) > 0)
        else:
            assert 0.2 < same.mean() < 0.6
    # anchors are drawn in proportion to length (at least one segment)
    counts = np.bincount(a, minlength=len(frames)) / len(a)
    weights = np.maximum(frames, seg) / np.maximum(frames, seg).sum()
    assert np.allclose(counts, weights, atol=0.03)


def test_sampler_is_seeded_and_reproducible() -> None:
    sampler = TripletSampler([500, 600, 700], 50, 20)
    p1 = sampler.sample(200, np.random.default_rng(3))
    p2 = sampler.sample(200, np.random.default_rng(3))
    p3 = sampler.sample(200, np.random.default_rng(4))
    for field in p1.__dataclass_fields__:
        assert np.array_equal(getattr(p1, field), getattr(p2, field))
    assert not np.array_equal(p1.anchor_start, p3.anchor_start)


def test_sampler_refuses_impossible_corpora() -> None:
    with pytest.raises(InputError, match="Only one track"):
        TripletSampler([5000], 100, 50, "other-track")
    with pytest.raises(InputError, match="too short"):
        TripletSampler([150], 100, 50, "same-track-far")
    with pytest.raises(InputError, match="No tracks"):
        TripletSampler([], 100, 50)
    # one long track is enough for same-track-far negatives
    plan = TripletSampler([5000], 100, 50, "same-track-far").sample(100, np.random.default_rng(0))
    assert np.all(np.abs(plan.negative_start - plan.anchor_start) > 50)


# --- augmentation -------------------------------------------------------------------------------------------


def test_noise_mix_reaches_the_asked_snr_in_the_linear_domain() -> None:
    rng = np.random.default_rng(0)
    aug = Augmenter(TrainSettings(), log_offset=1e-6, power=1.0)
    signal = np.exp(rng.normal(0, 1, (100, 16)))
    noise = np.exp(rng.normal(-1, 1, (100, 16)))
    mixed = aug.mix(signal, noise, 10.0)
    added = mixed**2 - signal**2  # power domain: the mix adds the scaled noise power
    snr = 10 * np.log10((signal**2).mean() / added.mean())
    assert snr == pytest.approx(10.0, abs=1e-6)
    assert np.all(mixed >= signal)


def test_augmentation_changes_segments_but_keeps_shape_and_is_seeded() -> None:
    aug = Augmenter(TrainSettings(aug_noise_prob=1.0, aug_mask_prob=1.0), log_offset=1e-6, power=1.0)
    x = np.random.default_rng(1).normal(-3, 2, (50, 32)).astype(np.float32)
    a = aug(x, np.random.default_rng(5))
    b = aug(x, np.random.default_rng(5))
    assert a.shape == x.shape and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, b) and not np.allclose(a, x)
    # gain alone: a constant shift in the log domain away from the silence floor
    gain_only = TrainSettings(aug_noise_prob=0, aug_eq_db=0, aug_mask_prob=0, aug_gain_db=6.0)
    loud = x + 4.0  # well above the silence floor, where ln(mel + offset) is ln(mel)
    delta = Augmenter(gain_only, 1e-6, 1.0)(loud, np.random.default_rng(2)) - loud
    assert np.allclose(delta, delta.mean(), atol=1e-3) and abs(delta.mean()) <= 6.0 / 20 * math.log(10) + 1e-6


# --- split --------------------------------------------------------------------------------------------------


def _tracks(n: int, labels: int = 3, per_group: int = 2) -> list[dict]:
    return [
        {"track_id": f"t{i:03d}", "label": f"c{i % labels}", "group": f"g{i // per_group}", "path": f"/x/{i}"}
        for i in range(n)
    ]


def test_split_keeps_groups_together_and_stratifies_labels() -> None:
    tracks = [
        {"track_id": f"t{i:03d}", "label": f"c{(i // 2) % 3}", "group": f"g{i // 2}", "path": ""} for i in range(60)
    ]
    split = draw_split(tracks, seed=0, val_fraction=0.2, split_by="group")
    by_group: dict[str, set[str]] = {}
    for t in tracks:
        by_group.setdefault(t["group"], set()).add(split[t["track_id"]])
    assert all(len(s) == 1 for s in by_group.values())  # a group is never split
    val = [t for t in tracks if split[t["track_id"]] == "val"]
    assert len(val) == 12  # 20% of 30 groups, two tracks each
    assert {t["label"] for t in val} == {"c0", "c1", "c2"}  # every label is represented
    by_track = draw_split(tracks, seed=0, val_fraction=0.2, split_by="track")
    assert sum(v == "val" for v in by_track.values()) == 12
    assert draw_split(tracks, seed=1, val_fraction=0.2, split_by="group") != split


def test_split_single_group_per_label_stays_in_training() -> None:
    tracks = [{"track_id": f"t{i}", "label": f"c{i % 3}", "group": f"c{i % 3}", "path": ""} for i in range(9)]
    split = draw_split(tracks, seed=0, val_fraction=0.3, split_by="group")
    assert set(split.values()) == {"train"}


def test_split_is_persisted_and_stable_as_the_library_grows(tmp_path: Path) -> None:
    split_dir = tmp_path / "split"
    tracks = _tracks(40)
    first, fp1 = ensure_split(split_dir, tracks, "feat-1", 0, 0.25, "group")
    assert load_split(split_dir) == first
    again, fp_again = ensure_split(split_dir, tracks, "feat-1", 0, 0.25, "group")
    assert again == first and fp_again == fp1
    grown = tracks[5:] + _tracks(60)[40:]  # 5 removed, 20 added (10 new groups)
    second, fp2 = ensure_split(split_dir, grown, "feat-2", 0, 0.25, "group")
    assert fp2 != fp1
    assert set(second) == {t["track_id"] for t in grown}
    assert all(second[t] == first[t] for t in first if t in second)  # old assignments kept
    new_val = sum(second[t["track_id"]] == "val" for t in _tracks(60)[40:])
    assert 0 < new_val < 20  # new groups assigned by a seeded hash
    # a new track of an existing group joins that group's subset
    extra = {"track_id": "zz-new", "label": "c0", "group": "g3", "path": ""}
    third, _ = ensure_split(split_dir, grown + [extra], "feat-3", 0, 0.25, "group")
    assert third["zz-new"] == third[next(t["track_id"] for t in grown if t["group"] == "g3")]
    # a different seed draws a new split
    redrawn, _ = ensure_split(split_dir, grown, "feat-2", 7, 0.25, "group")
    assert redrawn != second
