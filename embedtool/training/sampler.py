"""Triplets by temporal proximity (Tile2Vec on spectrograms), drawn as a seeded plan of frame offsets.

A plan says, for each triplet, which track and start frame the anchor, the positive and the negative come
from; cutting and augmenting the segments happens later (``dataset.py``), reading the cached features only.

- Anchor: a track drawn with probability proportional to its length (at least one segment, so one-shots are
  still drawn), and a start uniformly at random among the windows that do not cross the track's end.
- Positive: the same track, a different start within ``radius`` frames of the anchor's start (and within the
  track). Short-track rule: a track no longer than one segment has a single window, so its positive is that
  window again, shifted in time by a small non-zero number of frames (``positive_shift``; the dataset applies
  it, and augmentation, when it cuts the segment).
- Negative: ``other-track`` — a window of another track; ``same-track-far`` — a window of the same track
  starting more than ``radius`` frames from the anchor (falls back to another track when the track is too
  short for that); ``mixed`` — either, with probability ``mixed_same_track_prob`` for the same track.

Everything comes from one ``numpy.random.Generator``, so a plan is a pure function of its seed.

Data-parallel training (several processes, one optimiser step together): every rank draws the same epoch plan
(:func:`epoch_plan`, seeded by (seed, epoch)) and trains on its own share of it (:func:`rank_share`: every
``world_size``-th triplet from its rank on). With the batch size a multiple of the number of ranks, the shares of
one step are disjoint and together make exactly that step's batch of the single-process run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedtool.errors import InputError


@dataclass
class TripletPlan:
    """Parallel int64 arrays, one entry per triplet; tracks are indices into the sampler's track list."""

    anchor_track: np.ndarray
    anchor_start: np.ndarray
    positive_start: np.ndarray
    positive_shift: np.ndarray  # non-zero only under the short-track rule
    negative_track: np.ndarray
    negative_start: np.ndarray

    def __len__(self) -> int:
        return len(self.anchor_track)

    def slice(self, start: int, stop: int) -> TripletPlan:
        return TripletPlan(*(getattr(self, f)[start:stop] for f in self.__dataclass_fields__))


def rank_share(n_triplets: int, batch_size: int, rank: int, world_size: int, start_step: int = 0) -> range:
    """The plan indices one rank trains on, from step ``start_step`` on: ``rank``, ``rank + world_size``, ...

    ``batch_size`` is the global batch (all ranks together) and must be a multiple of ``world_size``: step ``s``
    then takes ``batch_size // world_size`` indices from each rank, and their union is ``range(s * batch_size,
    (s + 1) * batch_size)``, the single-process step.
    """
    if not 0 <= rank < world_size or batch_size % world_size:
        raise ValueError(f"rank {rank} of {world_size} with a global batch of {batch_size}")
    return range(start_step * batch_size + rank, n_triplets, world_size)


class TripletSampler:
    """Draws triplet plans over a fixed list of tracks (given by their lengths in frames)."""

    def __init__(
        self,
        frames: np.ndarray | list[int],
        segment_frames: int,
        radius_frames: int,
        negatives: str = "other-track",
        mixed_same_track_prob: float = 0.5,
        short_shift_frames: int = 5,
    ):
        self.frames = np.asarray(frames, dtype=np.int64)
        self.segment_frames = int(segment_frames)
        self.radius = max(1, int(radius_frames))
        self.negatives = negatives
        self.mixed_prob = float(mixed_same_track_prob)
        self.short_shift = max(1, int(short_shift_frames))
        if negatives not in ("other-track", "same-track-far", "mixed"):
            raise ValueError(f"unknown negatives mode {negatives!r}")
        if len(self.frames) == 0:
            raise InputError("No tracks to draw triplets from.")
        if np.any(self.frames <= 0):
            raise InputError("A track with no feature frames cannot be sampled.")
        # Last valid window start of each track (0 for a track no longer than one segment).
        self.room = np.maximum(self.frames - self.segment_frames, 0)
        weights = np.maximum(self.frames, self.segment_frames).astype(np.float64)
        self.weights = weights / weights.sum()
        self.check_feasible()

    def check_feasible(self) -> None:
        """Raise a clear error when this track list cannot give a single valid triplet."""
        n = len(self.frames)
        if self.negatives in ("other-track", "mixed") and n < 2:
            raise InputError(
                "Only one track is available for training: a triplet's negative must come from another track. "
                "Add more audio (or use negatives=same-track-far with a track several segments long)."
            )
        if self.negatives == "same-track-far" and n < 2 and self.room.max() <= 2 * self.radius:
            raise InputError(
                "negatives=same-track-far needs a track longer than one segment plus twice the neighbour "
                "radius, or a second track to fall back on; the only track is too short."
            )

    def sample(self, n: int, rng: np.random.Generator) -> TripletPlan:
        count = len(self.frames)
        a_track = rng.choice(count, size=n, p=self.weights)
        room = self.room[a_track]
        a_start = np.floor(rng.random(n) * (room + 1)).astype(np.int64)

        # Positive: uniform over starts in [a-R, a+R] ∩ [0, room], excluding a itself.
        lo = np.maximum(a_start - self.radius, 0)
        hi = np.minimum(a_start + self.radius, room)
        choices = hi - lo  # number of candidates other than a
        pick = np.floor(rng.random(n) * np.maximum(choices, 1)).astype(np.int64)
        p_start = lo + pick
        p_start = np.where(p_start >= a_start, p_start + 1, p_start)
        short = choices < 1  # the track has a single window: short-track rule
        p_start = np.where(short, a_start, p_start)
        magnitude = rng.integers(1, self.short_shift + 1, size=n)
        sign = np.where(rng.random(n) < 0.5, -1, 1)
        p_shift = np.where(short, magnitude * sign, 0).astype(np.int64)

        # Negative.
        if self.negatives == "other-track":
            same = np.zeros(n, dtype=bool)
        elif self.negatives == "same-track-far":
            same = np.ones(n, dtype=bool)
        else:
            same = rng.random(n) < self.mixed_prob
        left = np.maximum(a_start - self.radius, 0)  # starts 0 .. a-R-1
        right = np.maximum(room - (a_start + self.radius), 0)  # starts a+R+1 .. room
        same &= (left + right) > 0
        if count < 2:
            same[:] = True  # feasibility was checked: the only track has room beyond the radius
        n_track = self._other_tracks(a_track, rng)
        n_track = np.where(same, a_track, n_track)
        n_room = self.room[n_track]
        n_start = np.floor(rng.random(n) * (n_room + 1)).astype(np.int64)
        far = np.floor(rng.random(n) * np.maximum(left + right, 1)).astype(np.int64)
        far = np.where(far < left, far, a_start + self.radius + 1 + (far - left))
        n_start = np.where(same, far, n_start)
        return TripletPlan(a_track, a_start, p_start, p_shift, n_track, n_start)

    def epoch_plan(self, n: int, seed: int, epoch: int) -> TripletPlan:
        """The plan of one training epoch: the same on every rank of a data-parallel run (seeded by seed, epoch)."""
        return self.sample(n, np.random.default_rng([seed, epoch, 1]))

    def _other_tracks(self, a_track: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A track other than the anchor's for each triplet (length-weighted, redrawn on collision)."""
        count = len(self.frames)
        if count < 2:
            return a_track.copy()
        out = rng.choice(count, size=len(a_track), p=self.weights)
        clash = out == a_track
        while clash.any():
            out[clash] = rng.choice(count, size=int(clash.sum()), p=self.weights)
            clash = out == a_track
        return out
