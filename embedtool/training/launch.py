"""Training with several processes, started from this one: ``torchrun`` runs :func:`rank_main` in each process,
this process passes a stop request on to them, shows rank 0's progress events, and returns rank 0's report or
ends with the error of the rank that failed (docs/distributed-training.md).

Every process, whoever started it, trains through :func:`train_here`: the one that writes (alone, or rank 0 of a
``torchrun`` job) holds the workspace's lock and writes its log; the other ranks train and write nothing.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedtool.errors import ConfigError, EmbedtoolError
from embedtool.model.settings import TrainSettings
from embedtool.torchrun import end_after, launched_rank, launched_world_size
from embedtool.training.distributed import check_devices
from embedtool.workspace import Workspace

# Set for the processes torchrun starts: a folder where each rank leaves how it ended, rank 0 its report and events.
OUTCOMES_ENV = "EMBEDTOOL_TRAIN_OUTCOMES"
JOB_FILE, REPORT_FILE, EVENTS_FILE = "job.pkl", "report.pkl", "events.bin"
POLL_S = 0.1  # how often the launcher looks for rank 0's progress events


@dataclass(frozen=True)
class Launch:
    """How many processes train together: ``nproc_per_node`` here, on ``nnodes`` machines meeting at ``rdzv``
    (HOST:PORT, torchrun's c10d rendezvous; every machine runs the same launch)."""

    nproc_per_node: int = 1
    nnodes: int = 1
    rdzv: str | None = None

    @property
    def needed(self) -> bool:
        """Whether training starts other processes (more than one, or a rendezvous with other machines)."""
        return self.nproc_per_node > 1 or self.nnodes > 1 or self.rdzv is not None

    @property
    def processes(self) -> int:
        return self.nproc_per_node * self.nnodes

    def check(self, settings: TrainSettings) -> None:
        """Refuse a launch that cannot work, before anything starts (ConfigError)."""
        if self.nproc_per_node < 1 or self.nnodes < 1:
            raise ConfigError("--nproc-per-node and --nnodes must be at least 1.")
        if launched_world_size() > 1:
            raise ConfigError(
                "This process already runs under torchrun: leave out --nproc-per-node, --nnodes and --rdzv."
            )
        if self.nnodes > 1 and not self.rdzv:
            raise ConfigError("--nnodes above 1 needs --rdzv HOST:PORT, where the machines meet.")
        if self.rdzv is not None and (self.nnodes == 1 or ":" not in self.rdzv):
            raise ConfigError("--rdzv HOST:PORT is for training on several machines (--nnodes 2 or more).")
        if settings.batch_size % self.processes:
            raise ConfigError(
                f"--batch-size ({settings.batch_size}) is the batch of all {self.processes} training processes "
                "together and must be a multiple of their number."
            )
        if settings.device != "cpu":  # on CUDA: a GPU per process
            check_devices(settings.device, self.nproc_per_node)


def writes_here() -> bool:
    """Whether this process writes and reports: alone, or rank 0 of a ``torchrun`` job."""
    return launched_world_size() <= 1 or launched_rank() == 0


def train_here(
    workspace: Workspace,
    settings: TrainSettings,
    resume: bool = False,
    progress: Callable[[Any], None] | None = None,
) -> Any:
    """Train in this process (alone, or as one rank of a ``torchrun`` job). The process that writes holds the
    workspace's lock and writes its log; the other ranks wait for it in the collective calls."""
    from embedtool.training.trainer import train

    def run() -> Any:
        return train(
            workspace.features, workspace.split, workspace.model, settings, resume=resume, progress=progress,
            teachers_dir=workspace.root / "teachers",
        )  # fmt: skip

    if not writes_here():
        return run()
    with workspace.lock("train"), workspace.run_log("train"):
        return run()


def launch(
    workspace: Workspace,
    settings: TrainSettings,
    plan: Launch,
    resume: bool = False,
    progress: Callable[[Any], None] | None = None,
) -> Any:
    """Train with ``plan``'s processes under ``torchrun``, wait for them and return rank 0's report; a failed rank
    ends this as it ended (its message and exit status). ``progress`` gets rank 0's events as they come."""
    plan.check(settings)
    from embedtool.threads import fixed_threads

    with tempfile.TemporaryDirectory(prefix="embedtool-train-") as folder:
        outcomes = Path(folder)
        job = {"workspace": str(workspace.root), "settings": settings, "resume": resume,
               "threads": fixed_threads(), "events": progress is not None,
               "log_level": logging.getLogger("embedtool").level}  # fmt: skip
        (outcomes / JOB_FILE).write_bytes(pickle.dumps(job))
        env = {**os.environ, OUTCOMES_ENV: str(outcomes)}
        # torch's threads per process: the machine's cores shared by the processes (torchrun would say 1).
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // plan.nproc_per_node)))
        events = _EventReader(outcomes / EVENTS_FILE, progress)
        returncode, interrupted = run_forwarding_signals(torchrun_command(plan, outcomes / JOB_FILE), env, events)
        if returncode != 0:
            raise launch_failure(outcomes, returncode, interrupted)
        try:
            return pickle.loads((outcomes / REPORT_FILE).read_bytes())
        except (OSError, pickle.UnpicklingError, EOFError):
            if plan.nnodes > 1:  # global rank 0 ran on another machine: its report stayed there
                return None
            raise EmbedtoolError("torchrun ended without the training report of process 0.") from None


def torchrun_command(plan: Launch, job: Path) -> list[str]:
    """The torchrun command line that starts ``plan.nproc_per_node`` ranks here: ``--standalone`` on one machine,
    a c10d rendezvous at ``plan.rdzv`` across ``plan.nnodes`` (the same id on every machine)."""
    command = [sys.executable, "-m", "torch.distributed.run"]
    if plan.nnodes == 1:
        command += ["--standalone", "--nnodes", "1"]
    else:
        command += ["--nnodes", str(plan.nnodes), "--rdzv-backend", "c10d", "--rdzv-endpoint", str(plan.rdzv)]
        command += ["--rdzv-id", "embedtool-train"]
    return [*command, "--nproc-per-node", str(plan.nproc_per_node), "-m", __name__, str(job)]


def run_forwarding_signals(command: list[str], env: dict[str, str], poll: Callable[[], None]) -> tuple[int, bool]:
    """Run torchrun in a session of its own, so a terminal's Ctrl-C reaches only this process, which passes each
    Ctrl-C or SIGTERM on to torchrun as a SIGTERM; torchrun sends it to every rank. The first makes the ranks stop
    together at the next step boundary, after rank 0 saved a checkpoint; a second stops them at once (torchrun
    kills what is left after 30 s). ``poll`` runs while it waits. (exit status, whether interrupted)"""
    proc = subprocess.Popen(command, env=env, start_new_session=True)
    seen = {"signals": 0}

    def forward(signum: int, frame: Any) -> None:
        seen["signals"] += 1
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass

    with _signals_to(forward):
        while proc.poll() is None:
            poll()
            time.sleep(POLL_S)
        poll()
    return proc.returncode, seen["signals"] > 0


@contextmanager
def _signals_to(handler: Callable[[int, Any], None]) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def launch_failure(outcomes: Path, returncode: int, interrupted: bool) -> EmbedtoolError:
    """The error the launcher ends with: embedtool's own error from the lowest rank that had one, else the
    first failure recorded, else torchrun's exit status."""
    failed = []
    for path in outcomes.glob("rank-*.json"):
        try:
            outcome = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if outcome.get("exit_code"):
            failed.append(outcome)
    failed.sort(key=lambda o: (not o.get("embedtool"), o["rank"] if o.get("embedtool") else o.get("time", 0)))
    if failed:
        first = failed[0]
        error = EmbedtoolError(f"training process {first['rank']}: {first['message']}")
        error.exit_code = int(first["exit_code"])
        return error
    error = EmbedtoolError(
        f"torchrun ended with status {returncode} before any training process reported how it ended; see the "
        "output above."
    )
    error.exit_code = 130 if interrupted else 1
    return error


class _EventReader:
    """Rank 0's progress events, read from the file it appends them to (each a length and a pickle), handed to
    ``progress`` in this process."""

    def __init__(self, path: Path, progress: Callable[[Any], None] | None):
        self.path, self.progress, self.offset = path, progress, 0

    def __call__(self) -> None:
        if self.progress is None or not self.path.is_file():
            return
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        used = 0
        while len(data) - used >= 4:
            (size,) = struct.unpack("<I", data[used : used + 4])
            if len(data) - used - 4 < size:
                break  # the rest of this event is still being written
            event = pickle.loads(data[used + 4 : used + 4 + size])
            used += 4 + size
            self.progress(event)
        self.offset += used


def _event_writer(path: Path) -> Callable[[Any], None]:
    def emit(event: Any) -> None:
        data = pickle.dumps(event)
        with open(path, "ab") as fh:
            fh.write(struct.pack("<I", len(data)) + data)

    return emit


@contextmanager
def _rank_outcome(folder: Path, rank: int) -> Iterator[None]:
    """Leave this rank's outcome where the launcher reads it; an embedtool error is then only said once, by the
    launcher (this process ends with its exit status, silently)."""

    def record(exit_code: int, message: str, embedtool: bool) -> None:
        outcome = {"rank": rank, "exit_code": exit_code, "message": message, "embedtool": embedtool}
        with open(folder / f"rank-{rank}.json", "w") as fh:
            json.dump({**outcome, "time": time.time()}, fh)

    try:
        yield
    except EmbedtoolError as exc:
        record(exc.exit_code, str(exc), True)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        record(130, "interrupted", False)
        raise SystemExit(130) from None
    except Exception as exc:
        record(1, f"{type(exc).__name__}: {exc}", False)
        raise
    record(0, "", False)


def _log_like_the_launcher(level: int) -> None:
    """embedtool's log messages on stderr where the launcher shows them (``embedtool -v``)."""
    if level and level <= logging.INFO:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
        logger = logging.getLogger("embedtool")
        logger.addHandler(handler)
        logger.setLevel(level)


def rank_main(job_path: Path) -> None:
    """One process of a launched job (started by torchrun): train with the others; rank 0 hands its progress
    events and its report to the launcher."""
    folder = Path(job_path).parent
    job = pickle.loads(Path(job_path).read_bytes())
    rank = launched_rank()
    with _rank_outcome(folder, rank):
        from embedtool.threads import fix_threads

        fix_threads(job["threads"])
        _log_like_the_launcher(job["log_level"])
        progress = _event_writer(folder / EVENTS_FILE) if job["events"] and rank == 0 else None
        report = train_here(Workspace(Path(job["workspace"])), job["settings"], job["resume"], progress)
        if rank == 0:
            (folder / REPORT_FILE).write_bytes(pickle.dumps(report))


if __name__ == "__main__":
    import faulthandler

    faulthandler.enable()  # a crash during training still shows where each thread was
    end_after(lambda: rank_main(Path(sys.argv[1])))
