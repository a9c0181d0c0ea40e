"""Options of `embedtool train` (configuration section ``train``) and their presets.

They live with the model, not the trainer: they are the model's recipe, recorded in its ``meta.json``
(``config.train``), and the architecture a model is rebuilt from when it is loaded (stem, width, embedding size,
segment length).

Presets:

- ``default``: trains a useful model on a 2-core CPU in well under an hour for a ~10-hour library: a ResNet18
  at width 0.25 on 1 s segments (100 frames x 64 mels), AdamW at lr 1e-3 with a cosine schedule, and the
  augmentations that make embeddings stay put under noise, gain changes and lossy re-encoding.
- ``thesis``: the seed's hyper-parameters (5 s tiles, radius 5 s, ImageNet stem, full width, dropout 0.5,
  embedding 128, Adam lr 1e-5 x0.95 every 7,500 steps, L2 0.01 on conv weights, batch 64, 20 epochs,
  no augmentation).
- ``contrastive``: ``default`` with the NT-Xent loss on the same temporal-proximity pairs (in-batch
  candidates, batch 128), real background from other tracks at 0-20 dB, generated room reverberation and
  phone / small-speaker / codec band limits.
- ``distil``: ``default`` plus distillation from the bundled aisfx network (``distil_teachers``: each segment's
  descriptor regressed onto aisfx's output of the same seconds through a training-only head).
- ``tile2vec``: the original Tile2Vec recipe (3x3 stride-1 stem, non-squared distances with margin 10 and an
  L2 penalty on embedding norms instead of normalisation, negatives from another track or from the same track
  beyond the radius).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Literal

from embedtool.config import PRESETS
from embedtool.errors import ConfigError
from embedtool.flag import option
from embedtool.model.teachers import TEACHERS


@dataclass(frozen=True)
class TrainSettings:
    # --- triplets -------------------------------------------------------------------------------------------
    # length of one segment (tile)
    segment_seconds: float = field(default=1.0, metadata=option("Segment length (s)."))
    # a positive starts within this many seconds of its anchor
    neighbour_radius_s: float = field(
        default=2.0, metadata=option("Neighbour radius for positives (s).", old=("--radius",))
    )
    negatives: Literal["other-track", "same-track-far", "mixed"] = field(
        default="other-track", metadata=option("Where a triplet's negative comes from.")
    )
    mixed_same_track_prob: float = 0.5  # with negatives=mixed: chance of a same-track-far negative
    short_shift_s: float = 0.05  # short-track rule: the positive is the track shifted by up to this much
    # --- network --------------------------------------------------------------------------------------------
    stem: Literal["imagenet", "tile2vec"] = field(default="imagenet", metadata=option("The network's first layers."))
    # channel multiplier of ResNet18 (1.0 = 64/128/256/512 channels)
    width: float = field(default=0.25, metadata=option("ResNet18 channel multiplier."))
    embedding_dim: int = field(default=128, metadata=option("Embedding size."))
    dropout: float = field(default=0.1, metadata=option("Dropout before the projection."))
    # centre each window on its own level (see model/network.py)
    level_norm: Literal["off", "mean", "peak"] = field(
        default="off", metadata=option("Centre each window on its own level (gain-invariant).")
    )
    # --- loss -----------------------------------------------------------------------------------------------
    loss: Literal["thesis", "tile2vec", "ntxent"] = field(
        default="thesis", metadata=option("Triplet (thesis, tile2vec) or contrastive (ntxent).")
    )
    margin: float = field(default=1.0, metadata=option("Triplet margin."))
    # ntxent loss: cosine similarities are divided by this
    temperature: float = field(default=0.1, metadata=option("ntxent loss temperature."))
    norm_penalty: float = 0.0  # tile2vec loss: weight of the embedding-norm L2 penalty
    mining: Literal["none", "semi-hard", "hard"] = field(
        default="semi-hard", metadata=option("Which negatives a batch trains on.")
    )
    # --- optimisation ---------------------------------------------------------------------------------------
    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: float = field(default=1e-3, metadata=option("Peak learning rate."))
    # Conv weights only. adam: coupled L2 (gradient += weight_decay * w; Keras' l2(c) equals 2c here);
    # adamw: decoupled decay.
    weight_decay: float = field(default=1e-4, metadata=option("Weight decay on conv weights."))
    lr_schedule: Literal["constant", "step", "cosine"] = field(
        default="cosine", metadata=option("Learning-rate schedule.")
    )
    lr_decay: float = 0.95  # step schedule: multiply lr by this ...
    lr_decay_steps: int = 7500  # ... every this many steps
    warmup_steps: int = 100
    grad_clip: float = 5.0  # max gradient norm; 0 = off
    # triplets per step (3x as many segments go through the network)
    batch_size: int = field(
        default=64, metadata=option("Triplets per step (all training processes together).", short="-b")
    )
    epochs: int = field(default=20, metadata=option("Epochs (with --resume: the new total).", short="-e"))
    steps_per_epoch: int = field(default=200, metadata=option("Optimiser steps per epoch."))
    # --- validation and stopping ----------------------------------------------------------------------------
    val_fraction: float = field(default=0.1, metadata=option("Share of tracks/groups held out."))
    split_by: Literal["group", "track"] = field(
        default="group", metadata=option("Hold out whole groups (labels file) or single tracks.")
    )
    val_triplets: int = 512
    val_segments_per_track: int = 8
    recall_k: int = 5
    val_metric: Literal["auto", "recall_at_1", "triplet_accuracy", "val_loss"] = "auto"
    # epochs without improvement before stopping; 0 = off
    early_stopping_patience: int = field(
        default=0, metadata=option("Early-stopping patience in epochs (0 = off).", old=("--patience",))
    )
    # --- starting point -------------------------------------------------------------------------------------
    # start from this model's weights: a bundled name ("general") or a model folder; "" = random
    init: str = field(
        default="", metadata=option("Start from this model's weights: a bundled model (general) or a model folder.")
    )
    # with init: weight of a pull of each training segment's embedding toward the starting model's own embedding of
    # it (1 - cosine, the starting model frozen), so training on a folder adds to what the starting model knows
    # instead of overwriting it; 0 = off. Costs one more forward pass of each batch. 1.0: 3 epochs from `general` on
    # each suite corpus, tuning mean macro-F1 / p@5 0.722 / 0.621 against 0.688 / 0.569 without (docs/benchmarks.md)
    anchor_weight: float = field(
        default=1.0, metadata=option("With --init: pull each segment's embedding toward the starting model's (0: off).")
    )
    # --- distillation ---------------------------------------------------------------------------------------
    # teachers (model.teachers, comma-separated: "aisfx") whose outputs each training segment's descriptor is
    # regressed onto through a linear head (1 - cosine), beside the triplet loss; "" = off. Their outputs are
    # computed once per file and cached in the workspace's teachers/ (about 100 s of CPU per audio hour for aisfx).
    distil_teachers: str = field(
        default="",
        metadata=option(
            "Teachers to distil (comma-separated: aisfx), beside the triplets; their outputs are computed once per "
            "file (~100 s of CPU per audio hour for aisfx) and cached in teachers/. '' turns it off."
        ),
    )
    distil_weight: float = field(default=1.0, metadata=option("Weight of each teacher's regression loss."))
    # --- runtime --------------------------------------------------------------------------------------------
    seed: int = field(default=0, metadata=option("Seed of the split, triplets and initialisation."))
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata=option("Where training runs."))
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    channels_last: bool = True  # on CUDA
    # DataLoader worker processes: 0 loads in the training process; -1 (auto) takes min(8, CPUs - 1) on CUDA,
    # where loading in-process starves the GPU (1.5-4.4x fewer triplets/s in two H200 runs), and 0 on the CPU,
    # where workers would take cores from the training step itself.
    workers: int = field(
        default=-1,
        metadata=option("DataLoader worker processes (-1: auto: 8 at most on CUDA, none on the CPU).", short="-j"),
    )
    # --- augmentation (each applied independently to anchor, positive and negative) --------------------------
    augment: bool = field(default=True, metadata=option("Augmentations on or off."))
    aug_gain_db: float = 6.0  # random gain in +-dB
    aug_noise_prob: float = 0.5  # chance of adding noise
    aug_noise_source: Literal["tracks", "coloured", "both"] = "both"
    aug_snr_db_min: float = 5.0
    aug_snr_db_max: float = 30.0
    aug_eq_db: float = 3.0  # smooth random equaliser curve over the mel bands, +-dB (codec/room colouring)
    aug_reverb_prob: float = 0.0  # chance of a generated room's reverberation
    aug_reverb_s: float = 1.0  # longest reverberation time (RT60) drawn, seconds
    aug_bandlimit_prob: float = 0.0  # chance of a phone, small-speaker or low-bit-rate codec band limit
    aug_mask_prob: float = 0.5
    aug_time_mask: float = 0.1  # max fraction of frames masked
    aug_freq_mask: float = 0.1  # max fraction of mel bands masked
    aug_shift_s: float = 0.05  # small random time shift

    @classmethod
    def from_preset(cls, name: str) -> TrainSettings:
        if name == "default":
            return cls()
        if name == "thesis":
            return cls(
                segment_seconds=5.0,
                neighbour_radius_s=5.0,
                negatives="other-track",
                stem="imagenet",
                width=1.0,
                embedding_dim=128,
                dropout=0.5,
                loss="thesis",
                margin=1.0,
                mining="none",
                optimizer="adam",
                lr=1e-5,
                weight_decay=0.02,  # Keras kernel_regularizer=l2(0.01)
                lr_schedule="step",
                lr_decay=0.95,
                lr_decay_steps=7500,
                warmup_steps=0,
                grad_clip=0.0,
                batch_size=64,
                epochs=20,
                steps_per_epoch=1000,
                augment=False,
            )
        if name == "tile2vec":
            return cls(
                segment_seconds=2.0,
                neighbour_radius_s=4.0,
                negatives="mixed",
                stem="tile2vec",
                width=0.25,
                embedding_dim=512,
                dropout=0.0,
                loss="tile2vec",
                margin=10.0,
                norm_penalty=0.01,
                mining="none",
                optimizer="adam",
                lr=1e-3,
                weight_decay=0.0,
                lr_schedule="constant",
                warmup_steps=0,
                batch_size=50,
                epochs=50,
                steps_per_epoch=200,
                augment=False,
            )
        if name == "contrastive":
            return cls(
                loss="ntxent",
                temperature=0.1,
                mining="none",
                batch_size=128,  # more in-batch candidates; as many triplets per epoch as `default`
                steps_per_epoch=100,
                aug_noise_prob=0.7,
                aug_noise_source="both",
                aug_snr_db_min=0.0,
                aug_snr_db_max=20.0,
                aug_reverb_prob=0.3,
                aug_bandlimit_prob=0.3,
            )
        if name == "distil":  # the default recipe, taught by the bundled aisfx network as well
            return cls(distil_teachers="aisfx")
        raise ConfigError(f"Unknown train preset {name!r}; valid: {', '.join(PRESETS)}")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(cond: bool, message: str) -> None:
            if not cond:
                raise ConfigError(f"train.{message}")

        need(self.segment_seconds > 0, f"segment_seconds must be positive, not {self.segment_seconds}")
        need(self.neighbour_radius_s > 0, f"neighbour_radius_s must be positive, not {self.neighbour_radius_s}")
        need(0 <= self.mixed_same_track_prob <= 1, "mixed_same_track_prob must be in 0..1")
        need(self.short_shift_s >= 0, "short_shift_s must be >= 0")
        need(0 < self.width <= 4, f"width must be in (0, 4], not {self.width}")
        need(self.embedding_dim >= 2, f"embedding_dim must be at least 2, not {self.embedding_dim}")
        need(0 <= self.dropout < 1, f"dropout must be in [0, 1), not {self.dropout}")
        need(self.margin > 0, f"margin must be positive, not {self.margin}")
        need(self.norm_penalty >= 0, "norm_penalty must be >= 0")
        need(self.temperature > 0, f"temperature must be positive, not {self.temperature}")
        need(self.lr > 0, f"lr must be positive, not {self.lr}")
        need(self.weight_decay >= 0, "weight_decay must be >= 0")
        need(0 < self.lr_decay <= 1, "lr_decay must be in (0, 1]")
        need(self.lr_decay_steps >= 1, "lr_decay_steps must be at least 1")
        need(self.warmup_steps >= 0, "warmup_steps must be >= 0")
        need(self.grad_clip >= 0, "grad_clip must be >= 0")
        need(self.batch_size >= 2, f"batch_size must be at least 2, not {self.batch_size}")
        need(self.epochs >= 1, f"epochs must be at least 1, not {self.epochs}")
        need(self.steps_per_epoch >= 1, f"steps_per_epoch must be at least 1, not {self.steps_per_epoch}")
        need(0 <= self.val_fraction < 1, f"val_fraction must be in [0, 1), not {self.val_fraction}")
        need(self.val_triplets >= 0, "val_triplets must be >= 0")
        need(self.val_segments_per_track >= 2, "val_segments_per_track must be at least 2")
        need(self.recall_k >= 1, "recall_k must be at least 1")
        need(self.early_stopping_patience >= 0, "early_stopping_patience must be >= 0")
        need(self.anchor_weight >= 0, f"anchor_weight must be >= 0, not {self.anchor_weight}")
        need(self.distil_weight >= 0, f"distil_weight must be >= 0, not {self.distil_weight}")
        for name in self.teachers:
            need(name in TEACHERS, f"distil_teachers: unknown teacher {name!r}; known are {', '.join(TEACHERS)}")
        need(self.workers >= -1, "workers must be >= 0, or -1 for auto")
        need(self.aug_gain_db >= 0, "aug_gain_db must be >= 0")
        need(0 <= self.aug_noise_prob <= 1, "aug_noise_prob must be in 0..1")
        need(self.aug_snr_db_min <= self.aug_snr_db_max, "aug_snr_db_min must not exceed aug_snr_db_max")
        need(self.aug_eq_db >= 0, "aug_eq_db must be >= 0")
        need(0 <= self.aug_reverb_prob <= 1, "aug_reverb_prob must be in 0..1")
        need(self.aug_reverb_s >= 0.2, "aug_reverb_s must be at least 0.2")
        need(0 <= self.aug_bandlimit_prob <= 1, "aug_bandlimit_prob must be in 0..1")
        need(0 <= self.aug_mask_prob <= 1, "aug_mask_prob must be in 0..1")
        need(0 <= self.aug_time_mask < 1, "aug_time_mask must be in [0, 1)")
        need(0 <= self.aug_freq_mask < 1, "aug_freq_mask must be in [0, 1)")
        need(self.aug_shift_s >= 0, "aug_shift_s must be >= 0")

    @property
    def teachers(self) -> tuple[str, ...]:
        """The teachers ``distil_teachers`` names, in order (empty: no distillation)."""
        return tuple(t.strip() for t in self.distil_teachers.split(",") if t.strip())

    def resolved_workers(self, cuda: bool, processes: int = 1) -> int:
        """The DataLoader workers to start: ``workers``, or for -1 (auto) min(8, CPUs - 1) on CUDA and 0 on the CPU.
        With several training processes on one machine (``processes``, DDP) auto shares the CPUs among them."""
        if self.workers >= 0:
            return self.workers
        return min(8, max(0, (os.cpu_count() or 1) // max(1, processes) - 1)) if cuda else 0

    def replace(self, **changes: object) -> TrainSettings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


# Settings that change what the network computes or how it was trained; `epochs`, `device`, `workers`,
# `amp` and patience may change on --resume without invalidating a checkpoint.
RESUMABLE_CHANGES = ("epochs", "device", "workers", "amp", "channels_last", "early_stopping_patience")
