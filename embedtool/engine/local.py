"""The local engine: tasks in this process (one job, or one task) or in a pool of worker processes.

Workers fork from a forkserver that has imported what ``preload`` names once (fast start, no inherited threads),
ignore Ctrl-C (the driver handles it and stops them), and leave when the driver is gone (kill -9). A short queue per
worker keeps them busy and memory bounded; tasks are submitted in the order given (stages put the largest first).
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from embedtool.engine.base import QUEUE_PER_WORKER, Delivery, Engine, OnResult, TaskFailure, Work

_CONTEXT: Any = None  # in a worker process: the run's shared context (made once by the initializer)


class LocalEngine(Engine):
    name = "local"

    def __init__(self, jobs: int = 1, preload: Sequence[str] = ()):
        self.jobs = max(1, int(jobs))
        self.workers = self.jobs
        self.in_process = self.jobs <= 1
        self.preload = list(preload)
        # How many tasks may run at once now (at most ``jobs``), asked again as tasks finish: a stage that follows
        # the machine's free CPUs sets it (extract); None: ``jobs``.
        self.limit: Callable[[], int] | None = None

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
        delivery = Delivery(on_result, ordered)
        if self.jobs <= 1 or len(tasks) <= 1:
            _run_here(work, tasks, delivery, shared, setup, threads)
            return
        # forkserver: workers fork from a clean server (no OpenMP threads of this process, no slow fresh start).
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(self.preload)
        with _workers_skip_main_module():
            _pool_loop(work, tasks, delivery, shared, setup, threads, min(self.jobs, len(tasks)), ctx, self.limit)


def _run_here(
    work: Work,
    tasks: Sequence[Any],
    delivery: Delivery,
    shared: Any,
    setup: Callable[[Any], Any] | None,
    threads: int | None,
) -> None:
    """Every task in this process, one after another, as a worker would run them (``threads`` torch threads)."""
    context = setup(shared) if setup is not None else shared
    with _torch_threads(threads):
        for index, task in enumerate(tasks):
            try:
                outcome = work(context, task)
            except Exception as exc:  # as from a worker: the stage decides what a failed task means
                outcome = TaskFailure(exc)
            delivery.put(index, outcome)


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)  # as in a worker: one task on ``threads`` cores
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _worker_init(
    parent_pid: int, setup: Callable[[Any], Any] | None, shared: Any, threads: int | None
) -> None:  # pragma: no cover - runs in worker processes
    global _CONTEXT
    # Ctrl-C goes to the whole process group: only the parent handles it (and stops the workers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    # Workers are children of the forkserver, not of the run: if the run is killed (kill -9), nothing tells
    # them, so each watches the run's process and leaves when it is gone.
    threading.Thread(target=_exit_with, args=(parent_pid,), daemon=True).start()
    _CONTEXT = setup(shared) if setup is not None else shared


def _exit_with(pid: int) -> None:  # pragma: no cover - runs in worker processes
    while True:
        time.sleep(1.0)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:
            pass


def _call(work: Work, task: Any) -> Any:  # pragma: no cover - runs in worker processes
    return work(_CONTEXT, task)


@contextmanager
def _workers_skip_main_module() -> Iterator[None]:
    """Start workers without re-running the caller's ``__main__`` (spawn/forkserver do that by default).

    Workers only need the task function, found by module name. Re-running ``__main__`` in each of them costs the
    start-up of whatever the main script imports and, in a script without an ``if __name__ == "__main__"`` guard,
    would start the stage again in every worker.
    """
    main = sys.modules["__main__"]
    saved = {name: getattr(main, name) for name in ("__file__", "__spec__") if hasattr(main, name)}
    main.__spec__ = None  # type: ignore[assignment]
    if "__file__" in saved:
        del main.__file__
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(main, name, value)


def _pool_loop(
    work: Work,
    tasks: Sequence[Any],
    delivery: Delivery,
    shared: Any,
    setup: Callable[[Any], Any] | None,
    threads: int | None,
    jobs: int,
    ctx: Any,
    limit: Callable[[], int] | None = None,
) -> None:
    pool = cf.ProcessPoolExecutor(
        max_workers=jobs, mp_context=ctx, initializer=_worker_init, initargs=(os.getpid(), setup, shared, threads)
    )
    pending: dict[cf.Future, int] = {}
    queue = iter(enumerate(tasks))
    try:
        while True:
            # queued ahead for every worker; with a limit, only as many tasks as it allows now are in flight
            cap = QUEUE_PER_WORKER * jobs if limit is None else max(1, min(jobs, limit()))
            while len(pending) + delivery.held < cap:
                item = next(queue, None)
                if item is None:
                    break
                pending[pool.submit(_call, work, item[1])] = item[0]
            if not pending:
                break
            done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
            for future in done:
                index = pending.pop(future)
                try:
                    outcome = future.result()
                except cf.process.BrokenProcessPool:
                    raise
                except Exception as exc:
                    outcome = TaskFailure(exc)
                delivery.put(index, outcome)
    except BaseException:
        # Stop at once: running workers are killed (their tasks are simply not done yet).
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
