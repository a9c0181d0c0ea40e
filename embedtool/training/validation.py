"""Validation on held-out tracks each epoch (:class:`Validator`) and the measures it computes.

- Same-track retrieval: up to N non-overlapping segments per validation track, spread evenly over it; each
  segment of a track with at least two segments queries all the other segments (itself excluded);
  ``recall_at_k`` is the share of queries with a segment of their own track among the k nearest (cosine).
  At most :data:`MAX_RETRIEVAL_WINDOWS` segments in all (memory and the all-pairs similarity grow with their
  square): a larger validation set gives a seeded sample of its tracks (:func:`retrieval_tracks`), and only
  those tracks' features are read.
- Collapse check: ``effective_rank`` (exp of the entropy of the normalised singular values of the centred
  embeddings; 1 means everything lies on one line) and ``dim_std`` (mean per-dimension standard deviation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from embedtool.features.store import FeatureStore
from embedtool.features.windows import crop, window_starts
from embedtool.model.settings import TrainSettings
from embedtool.training.dataset import TripletDataset
from embedtool.training.losses import training_loss
from embedtool.training.sampler import TripletSampler


def spread_starts(n_frames: int, segment_frames: int, per_track: int) -> np.ndarray:
    """Up to ``per_track`` non-overlapping window starts spread evenly over a track."""
    starts = window_starts(n_frames, segment_frames, segment_frames)
    if len(starts) <= per_track:
        return starts
    pick = np.round(np.linspace(0, len(starts) - 1, per_track)).astype(int)
    return starts[pick]


# The retrieval check's segments in all; a library whose validation tracks give more is sampled (whole tracks).
MAX_RETRIEVAL_WINDOWS = 4096


def retrieval_tracks(
    frames: list[int], segment_frames: int, per_track: int, seed: int, max_windows: int = MAX_RETRIEVAL_WINDOWS
) -> list[int]:
    """Which validation tracks (indices into ``frames``) the retrieval check reads: all of them while their
    segments number at most ``max_windows``; above that, tracks in a seeded random order as long as their
    segments fit (at least one track), in their original order."""
    counts = np.asarray([len(spread_starts(int(n), segment_frames, per_track)) for n in frames], dtype=np.int64)
    if counts.sum() <= max_windows:
        return list(range(len(frames)))
    order = np.random.default_rng([seed, 104729]).permutation(len(frames))
    fits = np.cumsum(counts[order]) <= max_windows
    fits[0] = True
    return sorted(int(i) for i in order[fits])


def validation_windows(
    mels: list[np.ndarray], segment_frames: int, per_track: int, pad_value: float
) -> tuple[np.ndarray, np.ndarray]:
    """(windows [N, frames, mels] float32, track index per window)."""
    windows, owners = [], []
    for i, mel in enumerate(mels):
        for s in spread_starts(mel.shape[0], segment_frames, per_track):
            windows.append(crop(mel, int(s), segment_frames, pad_value))
            owners.append(i)
    if not windows:
        return np.zeros((0, segment_frames, 0), dtype=np.float32), np.zeros(0, dtype=np.int64)
    return np.stack(windows), np.asarray(owners, dtype=np.int64)


def retrieval_recall(embeddings: np.ndarray, owners: np.ndarray, ks: tuple[int, ...]) -> dict[str, float]:
    """Same-track recall@k over queries from tracks with >= 2 segments; empty when there are none."""
    counts = np.bincount(owners) if len(owners) else np.zeros(0, dtype=np.int64)
    queries = np.flatnonzero(counts[owners] >= 2) if len(owners) else np.zeros(0, dtype=np.int64)
    if len(queries) == 0 or len(np.unique(owners)) < 2:
        return {}
    sims = embeddings[queries] @ embeddings.T
    sims[np.arange(len(queries)), queries] = -np.inf  # a query never finds itself
    kmax = min(max(ks), len(owners) - 1)
    top = np.argsort(-sims, axis=1)[:, :kmax]
    hits = owners[top] == owners[queries][:, None]
    return {f"recall_at_{k}": float(hits[:, : min(k, kmax)].any(1).mean()) for k in ks}


def collapse_stats(embeddings: np.ndarray) -> dict[str, float]:
    embeddings = embeddings[np.isfinite(embeddings).all(1)]  # a broken input must not break validation
    if len(embeddings) < 2:
        return {}
    centred = embeddings - embeddings.mean(0, keepdims=True)
    s = np.linalg.svd(centred.astype(np.float64), compute_uv=False)
    energy = s**2
    if energy.sum() <= 0:
        return {"effective_rank": 1.0, "dim_std": 0.0}
    p = energy / energy.sum()
    p = p[p > 0]
    return {
        "effective_rank": float(np.exp(-(p * np.log(p)).sum())),
        "dim_std": float(embeddings.std(0).mean()),
    }


VAL_EPOCH = 2**31 - 1  # the seed stream of validation triplets (never a training epoch)


class Validator:
    """Everything validation needs, prepared once: fixed triplets and fixed retrieval windows."""

    def __init__(
        self,
        store: FeatureStore,
        features_dir: Path,
        val_ids: list[str],
        settings: TrainSettings,
        segment_frames: int,
        radius_frames: int,
        pad_value: float,
    ):
        self.settings = settings
        per_track = settings.val_segments_per_track
        frames = [int(store.track(t)["frames"]) for t in val_ids]
        keep = retrieval_tracks(frames, segment_frames, per_track, settings.seed, MAX_RETRIEVAL_WINDOWS)
        self.retrieval_ids = [val_ids[i] for i in keep]
        mels = [store.mel(t) for t in self.retrieval_ids]
        self.windows, self.owners = validation_windows(mels, segment_frames, per_track, pad_value)
        counts = np.bincount(self.owners) if len(self.owners) else np.zeros(0)
        self.has_recall = len(self.retrieval_ids) >= 2 and bool((counts >= 2).any())
        self.dataset: TripletDataset | None = None
        if len(val_ids) >= 2 and settings.val_triplets > 0:
            # The triplets' tracks are read lazily, only those drawn (val_triplets at most).
            sampler = TripletSampler(
                frames,
                segment_frames,
                radius_frames,
                "other-track",
                short_shift_frames=max(1, int(round(settings.short_shift_s * store.settings.frames_per_second))),
            )
            plan = sampler.sample(settings.val_triplets, np.random.default_rng([settings.seed, 7919]))
            fs = store.settings
            self.dataset = TripletDataset(
                features_dir, val_ids, plan, settings, segment_frames, pad_value, epoch=VAL_EPOCH, augment=False,
                log_offset=fs.log_offset, power=fs.power,
            )  # fmt: skip
            self.plan = plan
            self.drawn_tracks = (plan.anchor_track, plan.negative_track)
        if settings.val_metric != "auto":
            self.metric = settings.val_metric
        elif self.has_recall:
            self.metric = "recall_at_1"
        elif self.dataset is not None:
            self.metric = "triplet_accuracy"
        else:
            self.metric = None  # no validation possible: the last epoch's weights are kept

    @property
    def enabled(self) -> bool:
        return self.has_recall or self.dataset is not None

    @torch.no_grad()
    def __call__(self, net: torch.nn.Module, device: torch.device, autocast: Any) -> dict[str, float]:
        s = self.settings
        net.eval()
        out: dict[str, float] = {}
        bs = max(8, s.batch_size)
        if self.dataset is not None:
            losses, accs, weights = [], [], []
            for i in range(0, len(self.dataset), bs):
                idx = range(i, min(i + bs, len(self.dataset)))
                batch = torch.stack([self.dataset[j] for j in idx]).to(device)
                with autocast():
                    emb = net(as_segments(batch)).float()
                a, p, n = emb.chunk(3)
                tracks = [torch.from_numpy(np.ascontiguousarray(t[i : i + len(idx)])) for t in self.drawn_tracks]
                _, stats = training_loss(a, p, n, s, *tracks, mining="none")
                losses.append(stats["loss"])
                accs.append(stats["triplet_accuracy"])
                weights.append(len(idx))
            out["val_loss"] = float(np.average(losses, weights=weights))
            out["triplet_accuracy"] = float(np.average(accs, weights=weights))
        if len(self.windows):
            embs = []
            for i in range(0, len(self.windows), bs):
                chunk = torch.from_numpy(self.windows[i : i + bs]).to(device)
                with autocast():
                    embs.append(torch.nn.functional.normalize(net(chunk).float(), dim=1).cpu().numpy())
            emb = np.concatenate(embs)
            out.update(retrieval_recall(emb, self.owners, (1, s.recall_k)))
            out.update(collapse_stats(emb))
        return out


def as_segments(batch: torch.Tensor) -> torch.Tensor:
    """(B, 3, frames, mels) triplets -> (3B, 1, frames, mels): all anchors, then positives, then negatives."""
    b = batch.shape[0]
    return batch.transpose(0, 1).reshape(3 * b, 1, batch.shape[2], batch.shape[3])


def better(metric: str, value: float, best: float | None) -> bool:
    if best is None:
        return True
    return value < best if metric == "val_loss" else value > best
