"""A tiny training configuration for tests that need a trained model but not a good one (seconds on a CPU)."""

from __future__ import annotations

from embedtool.model.settings import TrainSettings

TINY_CHAIN_TRAIN = TrainSettings(
    segment_seconds=0.5,
    neighbour_radius_s=1.0,
    width=0.125,
    embedding_dim=32,
    batch_size=16,
    epochs=2,
    steps_per_epoch=12,
    warmup_steps=2,
    val_fraction=0.34,
    split_by="track",
    val_triplets=32,
    device="cpu",
    workers=0,
)
