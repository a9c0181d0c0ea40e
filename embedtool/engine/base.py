"""The engine interface: run a stage's tasks somewhere and hand each result back to the driver.

A stage plans its work as a list of tasks (small, picklable descriptions), and gives the engine a function
``work(context, task) -> result`` that runs on a worker, plus ``on_result(index, result)`` that runs in the driver as
each task finishes. ``context`` is what every task of the run shares: ``shared`` itself, or ``setup(shared)`` made
once per worker (a loaded model, an open store). A task that raises, or whose worker dies, reaches ``on_result`` as a
:class:`TaskFailure` instead of a result: the stage decides whether that ends the run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from embedtool.errors import ConfigError
from embedtool.flag import option

ENGINES = ("local", "ray")
# Tasks submitted but not yet handed to on_result, per worker: enough to keep workers busy while the driver
# handles a result, few enough that memory (results waiting, for ordered delivery) stays bounded.
QUEUE_PER_WORKER = 2


@dataclass(frozen=True)
class EngineOptions:
    """Where `extract` and `embed` run their tasks (section ``engine`` of embedtool.yaml; ``engine: ray`` is short
    for ``engine: {name: ray}``).

    ``name``: ``local`` (this machine: worker processes for extract, this process for embed) or ``ray`` (the
    workers of a Ray cluster). ``cluster``: the Ray cluster's address (``host:6379``, ``ray://host:10001`` or
    ``auto``); empty = start a Ray on this machine for the run (and stop it after).
    """

    name: Literal["local", "ray"] = field(
        default="local",
        metadata=option("Where the work runs: this machine, or Ray workers (docs/engine.md).", flag="--engine"),
    )
    cluster: str = field(
        default="", metadata=option("Ray cluster address with --engine ray (default: a local Ray).", metavar="ADDRESS")
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.name not in ENGINES:
            raise ConfigError(f"engine.name must be one of {', '.join(ENGINES)}, not {self.name!r}")


@dataclass
class TaskFailure:
    """What ``on_result`` gets for a task that raised (``error``: the exception the task raised) or whose worker
    died before it finished (``worker_died``; its work is lost)."""

    error: BaseException
    worker_died: bool = False

    def describe(self) -> str:
        if self.worker_died:
            return f"worker died ({type(self.error).__name__})"
        return f"worker error {type(self.error).__name__}: {self.error}"


Work = Callable[[Any, Any], Any]
OnResult = Callable[[int, Any], None]


class Engine(ABC):
    """Runs tasks; see the module docstring. Use as a context manager (``close`` stops what it started)."""

    name: str = ""
    workers: int = 1  # tasks that run at once
    in_process: bool = False  # tasks run in this process: ``shared`` is used as it is, never copied

    def check_paths(self, readable: Sequence[Path] = (), writable: Sequence[Path] = ()) -> None:  # noqa: B027
        """Refuse to start when a worker cannot read ``readable`` or write ``writable`` (InputError naming the path
        and the worker's machine). Local workers see what the driver sees: nothing to check."""

    @abstractmethod
    def run(
        self,
        work: Work,
        tasks: Sequence[Any],
        on_result: OnResult,
        *,
        shared: Any = None,
        setup: Callable[[Any], Any] | None = None,
        threads: int | None = 1,
        ordered: bool = False,
        gpus: bool = False,
    ) -> None:
        """Run ``work(context, task)`` for every task, in the given order of submission, and call
        ``on_result(index, result_or_TaskFailure)`` in this process as each finishes (in task order with
        ``ordered``). ``threads``: torch threads per task (None: leave them). ``gpus``: run on GPU workers (one GPU
        each, ``setup`` once per worker) when the engine has them. An exception from ``on_result`` stops the run:
        tasks still running are abandoned and it propagates."""

    def close(self) -> None:  # noqa: B027
        """Release what the engine started."""

    def describe(self) -> str:
        return f"{self.name}, {self.workers} worker(s)"

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        self.close()
        return False


class Delivery:
    """Hands outcomes to ``on_result``: as they come, or in task order (``ordered``), holding those that finish early.
    ``held`` counts toward the engine's queue, so ordered delivery never holds more than the queue allows."""

    def __init__(self, on_result: OnResult, ordered: bool):
        self.on_result, self.ordered = on_result, ordered
        self.next = 0
        self.waiting: dict[int, Any] = {}

    @property
    def held(self) -> int:
        return len(self.waiting)

    def put(self, index: int, outcome: Any) -> None:
        if not self.ordered:
            self.on_result(index, outcome)
            return
        self.waiting[index] = outcome
        while self.next in self.waiting:
            self.on_result(self.next, self.waiting.pop(self.next))
            self.next += 1
