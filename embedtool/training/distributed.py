"""Data-parallel training across processes (DDP under ``torchrun``): which rank this process is, and the few
collective operations the trainer needs.

``torchrun`` starts one process per device and tells each its place through the environment (``WORLD_SIZE``,
``RANK``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``). :func:`process_group` reads it:
with ``WORLD_SIZE`` > 1 it joins the process group (``nccl`` on CUDA, each rank on ``cuda:LOCAL_RANK``; ``gloo``
on the CPU) and yields a :class:`Ranks`; otherwise it yields :data:`SINGLE`, whose operations do nothing, so the
trainer reads the same either way.

Rank 0 is the only one that writes (split, checkpoints, metrics, the model); the others train and wait for it at
the collective calls below.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from embedtool.errors import ConfigError
from embedtool.model.device import resolve_device
from embedtool.torchrun import launched_world_size

T = TypeVar("T")

# Rank 0 validates, checkpoints and publishes while the others wait in a collective call: give that time.
COLLECTIVE_TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel job, and the collectives the trainer uses. With one process
    (:data:`SINGLE`) every operation is the identity."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    # Where the collectives' tensors live: the rank's GPU under nccl, the CPU under gloo.
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one that validates and writes."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any (a stop request seen by one rank stops all)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean over ranks of each value (every rank gets the same numbers)."""
        if not self.distributed or not values:
            return dict(values)
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist(), strict=True)}

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank (the others' argument is ignored)."""
        if not self.distributed:
            return obj
        box = [obj if self.main else None]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]  # type: ignore[return-value]

    def gather(self, obj: T) -> list[T]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm running statistics are updated by each rank's own batch)."""
        if self.distributed:
            for buffer in module.buffers():
                dist.broadcast(buffer.data, src=0)

    def main_first(self, work: Any) -> Any:
        """``work()`` on rank 0, then on the others (which may read what rank 0 wrote). An error on rank 0 is
        raised on every rank, so all stop with the same message instead of waiting for it."""
        if not self.distributed:
            return work()
        result, error = None, None
        if self.main:
            try:
                result = work()
            except Exception as exc:  # handed to the other ranks, then raised here too
                error = exc
        failed = self.broadcast(_portable(error))
        if failed is not None:
            raise error if error is not None else failed
        return result if self.main else work()


def _portable(error: BaseException | None) -> BaseException | None:
    """An exception that pickles (one that does not becomes a RuntimeError with its message)."""
    if error is None:
        return None
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


SINGLE = Ranks()


@contextmanager
def process_group(device: str, option: str = "train.device") -> Iterator[tuple[Ranks, torch.device]]:
    """The job's ranks and this rank's device, for the duration of a run.

    Under ``torchrun`` with more than one process: joins the process group (and leaves it afterwards, unless the
    caller had joined it already); on CUDA each rank takes ``cuda:LOCAL_RANK``, and a machine with fewer GPUs
    than processes is a :class:`ConfigError`. Otherwise: :data:`SINGLE` and the device ``device`` names.
    """
    resolved = resolve_device(device, option)
    world = launched_world_size()
    if world <= 1:
        yield SINGLE, resolved
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    if resolved.type == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ConfigError(
                f"{local_world} training processes on this machine need one CUDA GPU each, but it has {count}: "
                f"start at most {count} per machine (--nproc-per-node {count}) or train on the CPU (--device cpu)."
            )
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    backend = "nccl" if resolved.type == "cuda" else "gloo"
    joined = not dist.is_initialized()
    if joined:
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT)
    ranks = Ranks(dist.get_rank(), dist.get_world_size(), local_rank, local_world, resolved)
    try:
        yield ranks, resolved
    finally:
        if joined and dist.is_initialized():
            dist.destroy_process_group()


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """A short hash of a state dict's names and tensor bytes (to check that ranks hold the same weights)."""
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tensor.dtype).encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_devices(device: str, processes: int, option: str = "train.device") -> torch.device:
    """Before starting ``processes`` training processes on this machine: the device they will use; on CUDA each
    needs a GPU of its own, so fewer GPUs than processes is a :class:`ConfigError`."""
    resolved = resolve_device(device, option)
    if resolved.type == "cuda" and processes > torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ConfigError(
            f"--nproc-per-node {processes} starts one training process per CUDA GPU, but this machine has {count}: "
            f"use --nproc-per-node {count} or less, or train on the CPU (--device cpu)."
        )
    return resolved
