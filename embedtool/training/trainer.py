"""Self-supervised triplet training: features + split -> model artefact.

Flow of :func:`train`:

1. Read the features artefact, make or update the split artefact (``splits.py``) and refuse unusable input
   (no tracks, a single training track, no frames) before any training starts.
2. Each epoch draws a seeded triplet plan over the *training* tracks only (``sampler.py``); a DataLoader cuts
   and augments the segments from the memory-mapped features (``dataset.py``); anchors, positives and
   negatives go through the network as ONE concatenated batch (shared BatchNorm statistics).
3. After each epoch: validation on held-out tracks (triplet accuracy and loss on a fixed set of validation
   triplets, same-track recall@k, collapse check), a line in ``metrics.jsonl`` (and TensorBoard when it is
   installed), the best weights kept by the validation metric, a resumable checkpoint, optional early stop.
4. At the end the model artefact is built aside and swapped into ``model_dir`` (``model.pt`` = best weights,
   a plain state dict for ``torch.load(weights_only=True)``; ``meta.json`` last).

Work in progress lives in ``<model_dir>.partial/`` (checkpoint + best weights + metrics), so a crash or
Ctrl-C/SIGTERM never touches the previous good model; Ctrl-C/SIGTERM stop at the next step boundary, save a
checkpoint there and raise :class:`TrainingInterrupted`; ``resume=True`` continues from it (or extends a
finished model, whose final checkpoint is kept in ``model_dir``). Data order, augmentation and dropout are
all seeded, so a resumed run follows the uninterrupted one.

Devices: ``auto`` picks CUDA when present; on CUDA, bf16 autocast (``amp``), channels-last memory format and
pinned-memory DataLoader workers are used.

Several processes (``torchrun``, see ``distributed.py`` and docs/distributed-training.md): every rank draws the
same epoch plan and trains on every world_size-th triplet of it (``batch_size`` is the global batch, split
evenly), the network is wrapped in ``DistributedDataParallel``; rank 0 alone makes the split, validates, keeps
the best weights, writes metrics, checkpoints and the model, and its decisions (best epoch, early stop) are
broadcast so all ranks stop together. A stop request (Ctrl-C/SIGTERM) on any rank is all-reduced at each step
boundary. At the end the ranks compare hashes of their weights (``TrainReport.weights_digests``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from embedtool.artefacts import atomic_write_bytes, settings_differences, staged_dir, write_meta
from embedtool.config import settings_dict
from embedtool.errors import ConfigError, EmbedtoolError, IncompatibleArtefactError, InputError, MissingArtefactError
from embedtool.features.store import FeatureStore
from embedtool.features.windows import segment_frames_for, silence_floor
from embedtool.model.encoder import FORMAT_VERSION, KIND, WEIGHTS_FILE, model_files
from embedtool.model.network import build_network, without_distil_heads
from embedtool.model.settings import RESUMABLE_CHANGES, TrainSettings
from embedtool.model.store import load_init_weights
from embedtool.model.teachers import TeacherOutputs, ensure_teacher_outputs, read_teacher_outputs, teacher_dim
from embedtool.progress import TrainEvent, TrainProgress
from embedtool.threads import CpuBudget
from embedtool.training import checkpoint as ckpt
from embedtool.training.dataset import TripletDataset
from embedtool.training.distributed import Ranks, process_group, state_digest
from embedtool.training.losses import training_loss
from embedtool.training.optim import lr_at, make_optimizer
from embedtool.training.sampler import TripletSampler, rank_share
from embedtool.training.splits import ensure_split
from embedtool.training.validation import Validator, as_segments, better

METRICS_FILE = "metrics.jsonl"
Progress = TrainProgress  # one TrainEvent per step, epoch and note
Emit = Callable[[dict[str, Any]], None]  # the trainer's own calls: an event's kind and facts as a dict


class TrainingInterrupted(EmbedtoolError):
    """Training stopped by Ctrl-C or SIGTERM after saving a resumable checkpoint. Exit status 130."""

    exit_code = 130


@dataclass
class TrainReport:
    model_dir: Path
    epochs_run: int
    steps: int
    best_epoch: int | None
    best_metric: str | None
    best_value: float | None
    seconds: float
    triplets_per_s: float
    train_tracks: int
    val_tracks: int
    parameters: int
    device: str
    workers: int = 0  # DataLoader worker processes used (auto resolved), per training process
    world_size: int = 1  # training processes (DDP ranks)
    weights_digests: list[str] = field(default_factory=list)  # per rank, a hash of its final weights
    resumed: bool = False
    stopped_early: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["model_dir"] = str(self.model_dir)
        return out


def partial_dir_for(model_dir: Path) -> Path:
    model_dir = Path(model_dir)
    return model_dir.with_name(f"{model_dir.name}.partial")


def resume_settings(
    model_dir: Path, settings: TrainSettings, explicit: set[str] | frozenset[str] = frozenset()
) -> tuple[TrainSettings, dict[str, Any]]:
    """The settings ``train --resume`` continues with: the checkpoint's (the interrupted run's in the work folder,
    else the finished model's), except the ``explicit`` ones (given as flags), which are ``settings``'s. Returns
    them and what was taken from the checkpoint where it differs from ``settings`` (name -> the checkpoint's
    value), for the user to be told. ``settings`` unchanged when there is no readable checkpoint (the run then
    says there is nothing to resume). A checkpoint value no configuration could hold is not taken."""
    for folder in (partial_dir_for(model_dir), Path(model_dir)):
        try:
            recorded = json.loads((folder / ckpt.INFO_FILE).read_text()).get("train")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(recorded, dict):
            break
    else:
        return settings, {}
    from embedtool.config import build_settings

    current = settings_dict(settings)
    taken = {k: v for k, v in recorded.items() if k in current and k not in explicit and _differs(v, current[k])}
    try:
        merged = build_settings(TrainSettings, {**current, **taken}, {}, section="train (from the checkpoint)")
    except ConfigError:
        return settings, {}
    return merged, taken


def _differs(a: Any, b: Any) -> bool:
    return json.dumps(a, sort_keys=True, default=str) != json.dumps(b, sort_keys=True, default=str)


# Input statistics read the features of at most this many training tracks (a seeded sample above it).
STATS_MAX_TRACKS = 1000


def input_stats(
    store: FeatureStore,
    track_ids: list[str],
    seed: int,
    max_frames: int = 200_000,
    max_tracks: int = STATS_MAX_TRACKS,
) -> tuple[float, float]:
    """Mean and std of the training features, for input standardisation: :func:`frame_stats` of all the tracks
    when they are at most ``max_tracks``, else of a seeded sample of ``max_tracks`` of them (only their features
    are read, so the cost does not grow with the library)."""
    if len(track_ids) > max_tracks:
        pick = np.sort(np.random.default_rng([seed, 7331]).choice(len(track_ids), size=max_tracks, replace=False))
        track_ids = [track_ids[i] for i in pick]
    return frame_stats([store.mel(t) for t in track_ids], max_frames)


def frame_stats(mels: list[np.ndarray], max_frames: int = 200_000) -> tuple[float, float]:
    """Mean and std of evenly subsampled frames (about ``max_frames`` at most) of ``mels``."""
    total = sum(m.shape[0] for m in mels)
    every = max(1, total // max_frames)
    parts = [np.asarray(m[::every], dtype=np.float64) for m in mels if m.shape[0]]
    values = np.concatenate(parts) if parts else np.zeros((1, 1))
    return float(values.mean()), float(max(values.std(), 1e-3))


@contextmanager
def _stop_on_signals() -> Any:
    """Turn Ctrl-C/SIGTERM into a flag checked at step boundaries (so the checkpoint is consistent)."""
    flag = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag["stop"]:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        flag["stop"] = True

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _ignore_sigint(_: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # workers: the main process decides when to stop


@dataclass
class _Data:
    """What a training run reads, prepared once: the features, the split, the triplet sampler."""

    store: FeatureStore
    segment_frames: int
    radius: int
    pad_value: float
    train_ids: list[str]
    val_ids: list[str]
    split_fingerprint: str
    sampler: TripletSampler
    notes: list[str]
    teachers: dict[str, TeacherOutputs] = field(default_factory=dict)  # train.distil_teachers' cached outputs


def _prepare_data(features_dir: Path, split_dir: Path, settings: TrainSettings) -> _Data:
    """Read the features, make or update the split and refuse unusable input before any training starts."""
    store = FeatureStore(features_dir)
    fs = store.settings
    if len(store) == 0:
        raise InputError(f"The features artefact at {features_dir} holds no tracks; extract some audio first.")
    empty = [t["track_id"] for t in store.tracks if t["frames"] <= 0]
    if empty:
        raise InputError(f"{len(empty)} track(s) in {features_dir} have no feature frames (e.g. {empty[0]}).")
    seg = segment_frames_for(settings.segment_seconds, fs.frames_per_second)
    radius = max(1, int(round(settings.neighbour_radius_s * fs.frames_per_second)))
    notes: list[str] = []

    assignments, split_fp = ensure_split(
        split_dir, store.tracks, store.fingerprint, settings.seed, settings.val_fraction, settings.split_by
    )
    train_ids = sorted(t for t, s in assignments.items() if s == "train")
    val_ids = sorted(t for t, s in assignments.items() if s == "val")
    if len(train_ids) < 2 and len(store) >= 2 and settings.negatives != "same-track-far":
        raise InputError(f"The split leaves {len(train_ids)} training track(s): lower val_fraction or add audio.")
    train_frames = [int(store.track(t)["frames"]) for t in train_ids]
    sampler = TripletSampler(
        train_frames,
        seg,
        radius,
        settings.negatives,
        settings.mixed_same_track_prob,
        short_shift_frames=max(1, int(round(settings.short_shift_s * fs.frames_per_second))),
    )
    short = sum(1 for f in train_frames if f <= seg)
    if short:
        notes.append(
            f"{short} of {len(train_ids)} training tracks are no longer than one segment ({seg} frames): "
            "their positives are the same track shifted slightly (short-track rule)."
        )
    if not val_ids:
        notes.append("No validation tracks (too few tracks or groups): the last epoch's weights are kept.")
    return _Data(store, seg, radius, silence_floor(fs.log_offset), train_ids, val_ids, split_fp, sampler, notes)


def _teacher_outputs(
    data: _Data, settings: TrainSettings, teachers_dir: Path | None, emit: Emit
) -> dict[str, TeacherOutputs]:
    """Each distillation teacher's outputs for every track of the features (the cache is filled first: once per
    file, resumable, reused by later runs and by ``classify --features descriptors+aisfx``)."""
    if teachers_dir is None:
        raise ConfigError("train.distil_teachers needs a folder for the teachers' outputs (a workspace's teachers/)")
    tracks = {t["track_id"]: t["path"] for t in data.store.tracks}
    out = {}
    for name in settings.teachers:
        directory = Path(teachers_dir) / name

        def step(done: int, total: int, name: str = name) -> None:
            emit({"event": "teacher", "teacher": name, "done": done, "total": total})

        report = ensure_teacher_outputs(directory, tracks, name, step)
        outputs = read_teacher_outputs(directory, name)
        taught = sum(1 for t in data.train_ids if t in outputs)
        if taught == 0:
            raise InputError(f"No training track has {name} outputs: its network could not read any of the files")
        note = f"Distilling {name} ({report.computed} files computed, {report.reused} cached in {directory})"
        if taught < len(data.train_ids):
            note += f"; {len(data.train_ids) - taught} training track(s) without outputs learn from triplets only"
        data.notes.append(note + ".")
        out[name] = outputs
    return out


@dataclass
class _Position:
    """Where a run stands: what a checkpoint saves and a resumed run restores."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_value: float | None = None
    best_epoch: int | None = None
    stale_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    init_fingerprint: str = ""  # the weights the run (first) started from, if not random


class _Run:
    """One training run, step by step: :meth:`start` (fresh, from init weights, or resumed), :meth:`run_epoch`,
    :meth:`end_epoch`, :meth:`finish`. :func:`train` composes them."""

    def __init__(
        self,
        data: _Data,
        features_dir: Path,
        model_dir: Path,
        settings: TrainSettings,
        emit: Emit,
        started: float,
        ranks: Ranks,
        device: torch.device,
    ):
        self.data, self.features_dir, self.model_dir, self.settings, self.emit = (
            data, features_dir, model_dir, settings, emit,
        )  # fmt: skip
        self.started = started
        self.ranks = ranks
        self.device = device
        self.cuda = self.device.type == "cuda"
        self.workers = settings.resolved_workers(self.cuda, processes=ranks.local_world_size)
        self.use_amp = self.cuda and settings.amp
        self.state_dir = partial_dir_for(model_dir)
        self.position = _Position()
        self.best_state: dict[str, torch.Tensor] | None = None
        self.triplets_done, self.train_seconds = 0, 0.0
        self.cpu: CpuBudget | None = None  # torch's threads from the free CPUs (set by the run on a CPU device)
        self.stopped_early = False
        fs = data.store.settings
        self.identity = {
            "train": settings_dict(settings),
            "features": settings_dict(fs),
            "features_fingerprint": data.store.fingerprint,
            "split_fingerprint": data.split_fingerprint,
        }

    def autocast(self) -> Any:
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.use_amp else nullcontext()

    # --- start -------------------------------------------------------------------------------------------
    def build(self, resume: bool) -> None:
        """The network (seeded), its input standardisation or starting weights, and the optimiser."""
        settings, data = self.settings, self.data
        torch.manual_seed(settings.seed)
        self.net = build_network(settings, {name: teacher_dim(name) for name in data.teachers} or None)
        mean, std = input_stats(data.store, data.train_ids, settings.seed)
        self.net.input_mean.fill_(mean)
        self.net.input_std.fill_(std)
        if settings.init and not resume:
            # The starting model's input standardisation comes with its weights: its filters were learnt on it.
            init_state, self.position.init_fingerprint = load_init_weights(settings.init, settings, data.store.settings)
            missing, _ = self.net.load_state_dict(init_state, strict=not data.teachers)
            if any(not key.startswith("distil.") for key in missing):  # only the new heads may start untrained
                raise IncompatibleArtefactError(f"{settings.init} lacks weights this network needs: {missing[:3]}")
            data.notes.append(f"Started from the weights of {settings.init} (model {self.position.init_fingerprint}).")
        self.anchor = self._anchor_network(settings, data)
        if self.anchor is not None:
            weight = settings.anchor_weight
            data.notes.append(f"Pulled toward {settings.init}'s own embeddings (anchor_weight {weight}).")
        self.net.to(self.device)
        if self.cuda and settings.channels_last:
            self.net.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(self.net, settings)
        self.train_net: torch.nn.Module = self.net  # the DDP wrapper under several processes (see wrap)

    def _anchor_network(self, settings: TrainSettings, data: _Data) -> torch.nn.Module | None:
        """The starting model, frozen, whose embeddings the trained one is pulled toward (``anchor_weight``);
        None without an init model or weight. Loaded again on resume: a checkpoint holds the trained weights."""
        if not settings.init or settings.anchor_weight <= 0:
            return None
        state, _ = load_init_weights(settings.init, settings, data.store.settings)
        anchor = build_network(settings)
        anchor.load_state_dict(state)
        anchor.eval().requires_grad_(False)
        return anchor.to(self.device)

    def wrap(self) -> None:
        """Under several processes, train through ``DistributedDataParallel`` (gradients averaged over ranks);
        ``self.net`` stays the plain network, which validation, checkpoints and the model use."""
        if self.ranks.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.cuda else None  # one device per process (CPU: none)
            self.train_net = DistributedDataParallel(self.net, device_ids=ids)

    def start(self, resume: bool) -> None:
        """A fresh work folder, or the state of the checkpoint to resume from."""
        state_dir, ranks = self.state_dir, self.ranks
        if not resume:
            if ranks.main:
                shutil.rmtree(state_dir, ignore_errors=True)
                state_dir.mkdir(parents=True)
            return
        # Every rank loads rank 0's choice of checkpoint; only rank 0 then touches the work folder.
        source = ranks.broadcast(state_dir if ckpt.has_checkpoint(state_dir) else self.model_dir)
        if not ckpt.has_checkpoint(source):
            raise MissingArtefactError(
                f"Nothing to resume: no checkpoint in {state_dir} or {self.model_dir}. Run `embedtool train` first."
            )
        state, info = ckpt.load_checkpoint(source)
        _check_resumable(info, self.identity)
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        ckpt.restore_rng(state["rng"])
        self.position = _Position(
            epoch=info["epoch"],
            step_in_epoch=info["step_in_epoch"],
            global_step=info["global_step"],
            best_value=info.get("best_value"),
            best_epoch=info.get("best_epoch"),
            stale_epochs=info.get("stale_epochs", 0),
            history=info.get("history", []),
            init_fingerprint=info.get("init_model", ""),  # the weights a resumed run first started from
        )
        if ranks.main and (source / ckpt.BEST_FILE).is_file():
            self.best_state = ckpt.load_tensors(source / ckpt.BEST_FILE)
        written_by = info.get("world_size", 1)
        ranks.barrier()  # all have read the checkpoint before rank 0 changes the work folder
        if ranks.main and source != state_dir:  # extending a finished model: continue in a fresh work folder
            shutil.rmtree(state_dir, ignore_errors=True)
            state_dir.mkdir(parents=True)
            shutil.copy2(source / METRICS_FILE, state_dir / METRICS_FILE)
            if self.best_state is not None:
                ckpt.save_tensors(state_dir / ckpt.BEST_FILE, self.best_state)
        pos = self.position
        self.data.notes.append(f"Resumed from {source} at epoch {pos.epoch + 1}, step {pos.global_step}.")
        if written_by != ranks.world_size:
            self.data.notes.append(
                f"The checkpoint was written by {written_by} training process(es), this run has {ranks.world_size}: "
                "the same triplets in the same order, in per-process batches of another size."
            )

    def info_now(self) -> dict[str, Any]:
        """What a checkpoint records besides the weights: the run's identity and position."""
        pos = self.position
        return {
            **self.identity,
            "epoch": pos.epoch,
            "step_in_epoch": pos.step_in_epoch,
            "global_step": pos.global_step,
            "best_value": pos.best_value,
            "best_epoch": pos.best_epoch,
            "best_metric": self.validator.metric,
            "stale_epochs": pos.stale_epochs,
            "history": pos.history,
            "init_model": pos.init_fingerprint,
            "world_size": self.ranks.world_size,
        }

    def checkpoint(self, best: dict[str, torch.Tensor] | None = None) -> None:
        """Rank 0 saves (the others hold the same weights and optimiser state)."""
        if self.ranks.main:
            ckpt.save_checkpoint(
                self.state_dir, self.net.state_dict(), self.optimizer.state_dict(), self.info_now(), best
            )

    # --- epochs ------------------------------------------------------------------------------------------
    def run_epoch(self, stop: dict[str, bool]) -> dict[str, float]:
        """The steps of the current epoch (from where a resumed run stopped); mean training loss and accuracy.
        A stop request saves a checkpoint at the step boundary and raises :class:`TrainingInterrupted`.

        Under several processes each rank trains on its share of the epoch's plan (``rank_share``): the global
        batch ``bs`` is split into ``bs // world_size`` triplets per rank; items keep their plan index, so their
        augmentation is the single-process run's."""
        settings, data, pos, ranks = self.settings, self.data, self.position, self.ranks
        bs, world, rank = settings.batch_size, ranks.world_size, ranks.rank
        plan = data.sampler.epoch_plan(settings.steps_per_epoch * bs, settings.seed, pos.epoch)
        self.train_net.train()
        sums = {"loss": 0.0, "triplet_accuracy": 0.0, **({"distil_cosine": 0.0} if data.teachers else {})}
        seen = 0
        tick = time.monotonic()
        for batch in self._epoch_loader(plan):
            if self.cpu is not None:  # the machine's free CPUs, looked at again every few seconds
                self.cpu.recheck()
            mine = slice(pos.step_in_epoch * bs + rank, (pos.step_in_epoch + 1) * bs, world)  # this batch's plan rows
            stats, lr = self._step(batch, plan, mine)
            pos.step_in_epoch += 1
            pos.global_step += 1
            seen += 1
            self.triplets_done += len(batch) * world
            for key in sums:
                sums[key] += stats[key]
            now = time.monotonic()
            self.train_seconds += now - tick
            tick = now
            self.emit(
                {
                    "event": "step",
                    "step": pos.global_step,
                    "epoch": pos.epoch + 1,
                    "lr": lr,
                    "triplets_per_s": self.triplets_per_s,
                    **{key: stats[key] for key in ("loss", "triplet_accuracy", "distil_cosine") if key in stats},
                }
            )
            if ranks.any(stop["stop"]):  # every rank stops after the same step
                self.checkpoint()
                ranks.barrier()  # the others exit only once rank 0's checkpoint is written
                raise TrainingInterrupted(
                    f"Training interrupted at epoch {pos.epoch + 1}, step {pos.global_step}; a checkpoint is in "
                    f"{self.state_dir}. Continue with `embedtool train --resume`."
                )
        return ranks.mean({key: value / max(seen, 1) for key, value in sums.items()})

    def _epoch_loader(self, plan: Any) -> DataLoader:
        """The batches of this rank's share of the epoch's plan, from where a resumed run stopped."""
        settings, data, pos, ranks = self.settings, self.data, self.position, self.ranks
        fs = data.store.settings
        dataset = TripletDataset(
            self.features_dir, data.train_ids, plan, settings, data.segment_frames, data.pad_value, pos.epoch,
            settings.augment, shift_frames=int(round(settings.aug_shift_s * fs.frames_per_second)),
            log_offset=fs.log_offset, power=fs.power, features=fs,
        )  # fmt: skip
        return DataLoader(
            dataset,
            batch_size=settings.batch_size // ranks.world_size,
            sampler=rank_share(len(plan), settings.batch_size, ranks.rank, ranks.world_size, pos.step_in_epoch),
            num_workers=self.workers,
            pin_memory=self.cuda,
            worker_init_fn=_ignore_sigint if self.workers else None,
            generator=torch.Generator().manual_seed(settings.seed + pos.epoch),
        )

    def _step(self, batch: torch.Tensor, plan: Any, mine: slice) -> tuple[dict[str, float], float]:
        """One optimiser step on a batch of triplets (its rows ``mine`` of the plan): the triplet loss, the pull
        toward the starting model (``anchor_weight``) and the teachers' regression (``distil_teachers``).
        The step's statistics and learning rate."""
        settings, data = self.settings, self.data
        x = as_segments(batch.to(self.device, non_blocking=True))
        if self.cuda and settings.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lr = lr_at(self.position.global_step, settings, settings.epochs * settings.steps_per_epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with self.autocast():
            if data.teachers:
                emb, taught = self.train_net(x, distil=True)
            else:
                emb, taught = self.train_net(x), {}
        a, p, n = emb.float().chunk(3)
        loss, stats = training_loss(
            a, p, n, settings,
            anchor_track=torch.from_numpy(np.ascontiguousarray(plan.anchor_track[mine])),
            negative_track=torch.from_numpy(np.ascontiguousarray(plan.negative_track[mine])),
        )  # fmt: skip
        if self.anchor is not None:  # keep close to the starting model's embedding of the same segments
            with torch.no_grad(), self.autocast():
                target = self.anchor(x)
            pull = 1.0 - torch.nn.functional.cosine_similarity(emb.float(), target.float(), dim=1).mean()
            loss = loss + settings.anchor_weight * pull
        if taught:  # regress each segment's descriptor onto its teachers' outputs (model.teachers)
            distil_loss, stats["distil_cosine"] = self._distil_loss(taught, plan, mine)
            loss = loss + settings.distil_weight * distil_loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), settings.grad_clip)
        self.optimizer.step()
        return stats, lr

    def _distil_loss(self, taught: dict[str, torch.Tensor], plan: Any, mine: slice) -> tuple[torch.Tensor, float]:
        """Mean over teachers of (1 - cosine) between each head's output and the teacher's standardised output of
        the same segment (anchors, positives, negatives in the batch's order); segments whose file has no teacher
        output (it could not be decoded) are left out. Also the mean cosine, for the progress line."""
        data, fps = self.data, self.data.store.settings.frames_per_second
        tracks = np.concatenate([plan.anchor_track[mine], plan.anchor_track[mine], plan.negative_track[mine]])
        starts = np.concatenate([plan.anchor_start[mine], plan.positive_start[mine], plan.negative_start[mine]])
        losses, cosines = [], []
        for name, out in taught.items():
            outputs = data.teachers[name]
            target = np.zeros((len(tracks), outputs.dim), np.float32)
            for row, (track, start) in enumerate(zip(tracks, starts, strict=True)):
                target[row] = outputs.segment_targets(
                    data.train_ids[int(track)], np.array([start / fps]), self.settings.segment_seconds
                )[0]
            known = torch.from_numpy(np.abs(target).sum(axis=1) > 0).to(out.device)
            mean, std = outputs.block_stats()
            target_t = torch.from_numpy((target - mean) / std).to(out.device)
            cos = torch.nn.functional.cosine_similarity(out.float(), target_t, dim=1)
            cos = cos[known] if bool(known.any()) else cos * 0.0  # keeps the graph when no segment has a target
            losses.append(1.0 - cos.mean())
            cosines.append(float(cos.detach().mean()))
        return torch.stack(losses).mean(), float(np.mean(cosines))

    @property
    def triplets_per_s(self) -> float:
        return self.triplets_done / max(self.train_seconds, 1e-9)

    def end_epoch(self, means: dict[str, float], writer: Any) -> bool:
        """Validate, keep the best weights, log, checkpoint; True when early stopping ends the run.

        Under several processes rank 0 validates and writes; the others take its metrics and best-epoch
        bookkeeping (broadcast), so every rank's position, and its early-stopping decision, is rank 0's."""
        settings, pos, ranks = self.settings, self.position, self.ranks
        ranks.sync_buffers(self.net)  # rank 0's BatchNorm statistics: the model it validates is every rank's
        if ranks.main:
            metrics, improved = self._validate_and_keep(means)
            self._log(metrics, writer)
        else:
            metrics, improved = {}, False
        metrics, pos.best_value, pos.best_epoch, pos.stale_epochs = ranks.broadcast(
            (metrics, pos.best_value, pos.best_epoch, pos.stale_epochs)
        )
        if not ranks.main:
            pos.history.append(metrics)
        pos.epoch += 1
        pos.step_in_epoch = 0
        self.checkpoint(self.best_state if improved else None)
        self.emit({"event": "epoch", **metrics})
        if settings.early_stopping_patience and pos.stale_epochs >= settings.early_stopping_patience:
            self.stopped_early = True
            self.data.notes.append(
                f"Stopped early after epoch {pos.epoch}: no improvement in {pos.stale_epochs} epochs."
            )
            self.emit({"event": "note", "message": self.data.notes[-1]})
            return True
        return False

    def _validate_and_keep(self, means: dict[str, float]) -> tuple[dict[str, Any], bool]:
        """The epoch's metrics (validation included) and whether they are the best so far (then kept)."""
        settings, pos = self.settings, self.position
        total_steps = settings.epochs * settings.steps_per_epoch
        metrics: dict[str, Any] = {
            "epoch": pos.epoch + 1,
            "step": pos.global_step,
            "lr": lr_at(max(0, pos.global_step - 1), settings, total_steps),
            "train_loss": means["loss"],
            "train_triplet_accuracy": means["triplet_accuracy"],
            **({"train_distil_cosine": means["distil_cosine"]} if "distil_cosine" in means else {}),
        }
        validator = self.validator
        if validator.enabled:
            measured = validator(self.net, self.device, self.autocast)
            metrics.update({f"val_{k}" if k != "val_loss" else k: v for k, v in measured.items()})
        metrics["seconds"] = round(time.monotonic() - self.started, 2)
        metrics["triplets_per_s"] = self.triplets_per_s
        key = _metric_key(validator.metric)
        improved = False
        if key is not None and key in metrics and np.isfinite(metrics[key]):
            if better(validator.metric, metrics[key], pos.best_value):
                pos.best_value, pos.best_epoch, improved = float(metrics[key]), pos.epoch + 1, True
        else:
            pos.best_epoch, improved = pos.epoch + 1, True
        pos.stale_epochs = 0 if improved else pos.stale_epochs + 1
        if improved:
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
        metrics["best"] = improved
        pos.history.append(metrics)
        return metrics, improved

    def _log(self, metrics: dict[str, Any], writer: Any) -> None:
        with open(self.state_dir / METRICS_FILE, "a") as fh:
            fh.write(json.dumps(metrics) + "\n")
        if writer is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    writer.add_scalar(k, v, self.position.global_step)

    # --- finish ------------------------------------------------------------------------------------------
    def finish(self, resume: bool, parameters: int) -> TrainReport:
        """Publish the best weights as the model artefact (rank 0) and report (rank 0's report on every rank).

        The ranks first compare hashes of their weights: data-parallel training keeps them identical, and a rank
        that drifted apart is an error, not a model."""
        ranks, data, pos = self.ranks, self.data, self.position
        digests = ranks.gather(state_digest(self.net.state_dict()))
        if len(set(digests)) > 1:
            raise EmbedtoolError(
                f"The training processes ended with different weights ({', '.join(digests)}); nothing was published. "
                f"A checkpoint is in {self.state_dir}."
            )
        report = None
        if ranks.main:
            if self.best_state is None:  # resumed a run that had already finished every epoch
                self.best_state = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}
            report = TrainReport(
                model_dir=self.model_dir,
                epochs_run=pos.epoch,
                steps=pos.global_step,
                best_epoch=pos.best_epoch,
                best_metric=self.validator.metric,
                best_value=pos.best_value,
                seconds=round(time.monotonic() - self.started, 2),
                triplets_per_s=self.triplets_per_s,
                train_tracks=len(data.train_ids),
                val_tracks=len(data.val_ids),
                parameters=parameters,
                device=str(self.device),
                workers=self.workers,
                world_size=ranks.world_size,
                weights_digests=digests,
                resumed=resume,
                stopped_early=self.stopped_early,
                history=pos.history,
                notes=data.notes,
            )
            # The buffers, not the statistics computed at the start: a starting model or a checkpoint may have
            # brought its own.
            best = without_distil_heads(self.best_state)
            mean, std = float(best["input_mean"].float().mean()), float(best["input_std"].float().mean())
            _publish(
                self.model_dir, self.state_dir, best, self.identity, report, data.segment_frames, mean, std,
                pos.init_fingerprint,
            )  # fmt: skip
        return ranks.broadcast(report)  # the others wait here while rank 0 publishes


def train(
    features_dir: Path,
    split_dir: Path,
    model_dir: Path,
    settings: TrainSettings,
    resume: bool = False,
    progress: Progress | None = None,
    teachers_dir: Path | None = None,
) -> TrainReport:
    """Train an encoder on the features' training split and write the model artefact; see the module doc.
    ``teachers_dir``: where the outputs of ``settings.distil_teachers`` are cached (one folder per teacher;
    computed first for the tracks that lack them).

    Started by ``torchrun`` with more than one process, the processes train one model together (DDP); rank 0
    alone writes, and calls ``progress``."""
    settings.validate()
    with process_group(settings.device, "train.device") as (ranks, device):
        if settings.batch_size % ranks.world_size:
            raise ConfigError(
                f"train.batch_size ({settings.batch_size}) is the batch of all {ranks.world_size} training processes "
                "together and must be a multiple of their number."
            )
        paths = Path(features_dir), Path(split_dir), Path(model_dir)
        return _train(*paths, settings, resume, progress, ranks, device, teachers_dir)


def _train(
    features_dir: Path,
    split_dir: Path,
    model_dir: Path,
    settings: TrainSettings,
    resume: bool,
    progress: Progress | None,
    ranks: Ranks,
    device: torch.device,
    teachers_dir: Path | None = None,
) -> TrainReport:
    send = (progress if ranks.main else None) or (lambda event: None)
    emit: Emit = lambda event: send(TrainEvent.from_dict(event))  # noqa: E731
    started = time.monotonic()
    # Rank 0 makes or updates the split; the others then read it (and share rank 0's refusal of bad input).
    data = ranks.main_first(lambda: _prepare_data(features_dir, split_dir, settings))
    if settings.teachers:  # rank 0 computes what the cache lacks; the others read it
        data.teachers = ranks.main_first(lambda: _teacher_outputs(data, settings, teachers_dir, emit))
    run = _Run(data, features_dir, model_dir, settings, emit, started, ranks, device)
    run.build(resume)
    run.start(resume)
    run.wrap()
    if ranks.main:  # only rank 0 validates
        run.validator = Validator(
            data.store, features_dir, data.val_ids, settings, data.segment_frames, data.radius, data.pad_value
        )
    parameters = sum(p.numel() for p in run.net.parameters())
    if ranks.main:
        emit(
            {
                "event": "start",
                "total_steps": settings.epochs * settings.steps_per_epoch,
                "start_step": run.position.global_step,
                "epochs": settings.epochs,
                "train_tracks": len(data.train_ids),
                "val_tracks": len(data.val_ids),
                "segment_frames": data.segment_frames,
                "parameters": parameters,
                "device": str(run.device),
                "workers": run.workers,
                "world_size": ranks.world_size,
                "val_metric": run.validator.metric,
                "notes": list(data.notes),
            }
        )
    writer = _tensorboard(run.state_dir / "tensorboard") if ranks.main else None
    # On a CPU, torch's threads follow the CPUs actually free (each epoch and every few seconds within one); with
    # several processes on one machine (DDP) each keeps what it was given.
    cpu = CpuBudget("train") if run.device.type == "cpu" and not ranks.distributed else None
    run.cpu = cpu
    with _stop_on_signals() as stop, cpu.applied() if cpu is not None else nullcontext():
        while run.position.epoch < settings.epochs:
            if cpu is not None:
                cpu.recheck()
            means = run.run_epoch(stop)
            if run.end_epoch(means, writer):
                break
            if ranks.any(stop["stop"]):
                raise TrainingInterrupted(
                    f"Training interrupted after epoch {run.position.epoch}; a checkpoint is in {run.state_dir}. "
                    "Continue with `embedtool train --resume`."
                )
    if writer is not None:
        writer.close()
    return run.finish(resume, parameters)


def _metric_key(metric: str | None) -> str | None:
    if metric is None:
        return None
    return metric if metric == "val_loss" else f"val_{metric}"


def _check_resumable(info: dict[str, Any], identity: dict[str, Any]) -> None:
    for key in ("features_fingerprint", "split_fingerprint"):
        if info.get(key) != identity[key]:
            what = "features" if key.startswith("features") else "train/validation split"
            raise IncompatibleArtefactError(
                f"Cannot resume: the {what} changed since the checkpoint was saved; start a new training "
                "(without --resume)."
            )
    diffs = settings_differences(info.get("features", {}), identity["features"])
    old = {k: v for k, v in info.get("train", {}).items() if k not in RESUMABLE_CHANGES}
    new = {k: v for k, v in identity["train"].items() if k not in RESUMABLE_CHANGES}
    diffs += settings_differences(old, new)
    if diffs:
        raise IncompatibleArtefactError("Cannot resume: settings differ from the checkpoint's: " + "; ".join(diffs))


def _tensorboard(directory: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(directory))


def _publish(
    model_dir: Path,
    state_dir: Path,
    best_state: dict[str, torch.Tensor],
    identity: dict[str, Any],
    report: TrainReport,
    segment_frames: int,
    mean: float,
    std: float,
    init_fingerprint: str = "",
) -> None:
    """Swap the finished model into place (weights, metrics, final checkpoint; meta.json last)."""
    buffer = io.BytesIO()
    torch.save(best_state, buffer)
    weights = buffer.getvalue()
    fingerprint = hashlib.blake2b(weights, digest_size=8).hexdigest()
    with staged_dir(model_dir) as staging:
        atomic_write_bytes(staging / WEIGHTS_FILE, weights)
        for name in (METRICS_FILE, ckpt.STATE_FILE, ckpt.INFO_FILE, ckpt.BEST_FILE):
            if (state_dir / name).is_file():
                shutil.copy2(state_dir / name, staging / name)
        if (state_dir / "tensorboard").is_dir():
            shutil.copytree(state_dir / "tensorboard", staging / "tensorboard")
        last = report.history[-1] if report.history else {}
        write_meta(
            staging,
            KIND,
            FORMAT_VERSION,
            {"train": identity["train"], "features": identity["features"]},
            inputs={
                "features": identity["features_fingerprint"],
                "split": identity["split_fingerprint"],
                **({"init_model": init_fingerprint} if init_fingerprint else {}),
            },
            extra={
                "segment_frames": segment_frames,
                "embedding_dim": identity["train"]["embedding_dim"],
                "input_mean": mean,
                "input_std": std,
                "epochs_run": report.epochs_run,
                "steps": report.steps,
                "best_epoch": report.best_epoch,
                "best_metric": report.best_metric,
                "best_value": report.best_value,
                "last_epoch_metrics": last,
                "parameters": report.parameters,
                "train_tracks": report.train_tracks,
                "val_tracks": report.val_tracks,
                "seconds": report.seconds,
                "triplets_per_s": report.triplets_per_s,
                "device": report.device,
            },
            fingerprint=fingerprint,
            files=model_files(staging),
        )
    shutil.rmtree(state_dir, ignore_errors=True)
