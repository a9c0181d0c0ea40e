"""Cutting the segments of a triplet plan out of the memory-mapped features (a torch ``Dataset``).

Item ``i`` of an epoch is a float32 tensor (3, segment_frames, n_mels): anchor, positive, negative. Its
randomness (augmentation, shifts, noise source) comes from a generator seeded by (seed, epoch, i), so an item
is the same whichever DataLoader worker makes it and whether or not the run was resumed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from embedtool.audio.settings import FeatureSettings
from embedtool.features.store import FeatureStore
from embedtool.features.windows import crop
from embedtool.model.settings import TrainSettings
from embedtool.training.augment import Augmenter
from embedtool.training.sampler import TripletPlan


def shifted_crop(mel: np.ndarray, start: int, segment_frames: int, pad_value: float, shift: int) -> np.ndarray:
    """A window moved by ``shift`` frames, never crossing the track's ends.

    Within a long track the start simply moves (clipped to the valid range); a track no longer than one
    segment is moved inside its padded window (positive shift: silence floor in front; negative: the first
    frames drop out).
    """
    n = mel.shape[0]
    if n > segment_frames:
        return crop(mel, int(np.clip(start + shift, 0, n - segment_frames)), segment_frames, pad_value)
    out = np.full((segment_frames, mel.shape[1]), pad_value, dtype=np.float32)
    if shift >= 0:
        keep = min(n, segment_frames - shift)
        if keep > 0:
            out[shift : shift + keep] = mel[:keep]
    else:
        keep = max(0, n + shift)
        out[:keep] = mel[-shift : -shift + keep]
    return out


class TripletDataset(Dataset):
    """Segments for one epoch's plan. Opens the feature store lazily, so it pickles cheaply to workers."""

    def __init__(
        self,
        features_dir: Path,
        track_ids: list[str],
        plan: TripletPlan,
        settings: TrainSettings,
        segment_frames: int,
        pad_value: float,
        epoch: int,
        augment: bool,
        shift_frames: int = 0,
        log_offset: float = 1e-6,
        power: float = 1.0,
        features: FeatureSettings | None = None,
    ):
        self.features_dir = Path(features_dir)
        self.track_ids = list(track_ids)
        self.plan = plan
        self.settings = settings
        self.segment_frames = segment_frames
        self.pad_value = pad_value
        self.epoch = epoch
        self.augment = augment
        self.shift_frames = shift_frames
        self.augmenter = Augmenter(settings, log_offset, power, features)
        self._store: FeatureStore | None = None
        self._mels: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.plan)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_store"], state["_mels"] = None, {}
        return state

    def mel(self, track: int) -> np.ndarray:
        m = self._mels.get(track)
        if m is None:
            if self._store is None:
                self._store = FeatureStore(self.features_dir)
            m = self._mels[track] = self._store.mel(self.track_ids[track])
        return m

    def _segment(self, track: int, start: int, shift: int, rng: np.random.Generator) -> np.ndarray:
        mel = self.mel(track)
        if self.augment and self.shift_frames > 0:
            shift += int(rng.integers(-self.shift_frames, self.shift_frames + 1))
        if shift:
            x = shifted_crop(mel, start, self.segment_frames, self.pad_value, shift)
        else:
            x = crop(mel, start, self.segment_frames, self.pad_value)
        if self.augment:
            x = self.augmenter(x, rng, self._noise_segment)
        return x

    def _noise_segment(self, rng: np.random.Generator) -> np.ndarray:
        """A random window of a random training track, as the noise for additive-noise augmentation."""
        track = int(rng.integers(0, len(self.track_ids)))
        mel = self.mel(track)
        room = max(mel.shape[0] - self.segment_frames, 0)
        return crop(mel, int(rng.integers(0, room + 1)), self.segment_frames, self.pad_value)

    def __getitem__(self, i: int) -> torch.Tensor:
        p = self.plan
        rng = np.random.default_rng([self.settings.seed, self.epoch, int(i)])
        out = np.stack(
            [
                self._segment(int(p.anchor_track[i]), int(p.anchor_start[i]), 0, rng),
                self._segment(int(p.anchor_track[i]), int(p.positive_start[i]), int(p.positive_shift[i]), rng),
                self._segment(int(p.negative_track[i]), int(p.negative_start[i]), 0, rng),
            ]
        )
        return torch.from_numpy(out)
