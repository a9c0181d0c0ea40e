"""The Ray engine: tasks run on the workers of a Ray cluster (Ray core tasks; GPU work on an actor pool).

The driver (the `embedtool` process) connects to the cluster given (``cluster``) or starts a Ray on this machine
for the run (and stops it after). Workers import embedtool themselves: on a cluster it must be installed on every
node (the same version), and the workspace and the audio must be on storage every node mounts at the same path;
:meth:`RayEngine.check_paths` proves that with a probe task on every node before any work starts.

A task is retried once when its worker dies (a lost node); after that it reaches the stage as a
:class:`TaskFailure` with ``worker_died``, and the run goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from embedtool.engine.base import QUEUE_PER_WORKER, Delivery, Engine, OnResult, TaskFailure, Work
from embedtool.errors import ConfigError, InputError

INSTALL_HINT = "pip install 'embedtool[ray]'"
CONNECT_TIMEOUT_S = 5.0  # a cluster address that does not answer this fast is refused (Ray itself waits minutes)
PROBE_TIMEOUT_S = 120.0
TASK_RETRIES = 1  # a task whose worker died is run once more (a lost node), then reported

_CONTEXTS: dict[str, Any] = {}  # in a worker process: the current run's context, made once per process


def import_ray() -> Any:
    """The ``ray`` module, or a ConfigError saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"The ray engine needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


class RayEngine(Engine):
    name = "ray"

    def __init__(self, cluster: str = "", jobs: int = 0):
        self.cluster = cluster.strip()
        self.jobs = int(jobs)
        self.ray = import_ray()
        self.started = False
        if self.ray.is_initialized():  # (a script or test that set up Ray itself) use its connection as it is
            pass
        else:
            if self.cluster and self.cluster != "auto":
                check_reachable(self.cluster)
            kwargs: dict[str, Any] = {}
            if not self.cluster:  # a Ray of our own on this machine, as many CPUs as jobs
                kwargs["num_cpus"] = self.jobs or os.cpu_count() or 1
            try:
                self.ray.init(
                    address=self.cluster or None,
                    include_dashboard=False,
                    log_to_driver=False,
                    ignore_reinit_error=True,
                    logging_level=logging.WARNING,
                    **kwargs,
                )
            except (Exception, SystemExit) as exc:  # Ray exits (SystemExit) when the cluster does not answer
                where = f"the Ray cluster at {self.cluster}" if self.cluster else "a local Ray"
                raise ConfigError(f"Cannot start or reach {where}: {exc}") from exc
            self.started = True
        resources = self.ray.cluster_resources()
        cpus = max(1, int(resources.get("CPU", 1)))
        self.workers = min(self.jobs, cpus) if self.jobs else cpus
        self.gpus = int(resources.get("GPU", 0))

    def describe(self) -> str:
        where = self.cluster or "local Ray"
        return f"ray ({where}), {self.workers} worker(s)" + (f", {self.gpus} GPU(s)" if self.gpus else "")

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()
            self.started = False

    # --- what workers see --------------------------------------------------------------------------------------
    def check_paths(self, readable: Sequence[Path] = (), writable: Sequence[Path] = ()) -> None:
        """A probe task on every node: ``readable`` must be there and readable, ``writable`` writable, and what a
        worker writes there must show up here (the same storage, not a local folder of the same name)."""
        ray = self.ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = uuid.uuid4().hex[:12]
        probe = ray.remote(num_cpus=0, max_retries=0)(_probe)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        refs = [
            probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                [str(p) for p in readable], [str(p) for p in writable], token
            )
            for n in nodes
        ]
        problems: list[str] = []
        try:
            reports = ray.get(refs, timeout=PROBE_TIMEOUT_S)
        except Exception as exc:
            raise InputError(f"The Ray workers did not answer a probe task ({type(exc).__name__}: {exc})") from exc
        for host, found, written in reports:
            problems.extend(f"{path} (node {host}: {why})" for path, why in found)
            for path in written:
                if not Path(path).is_file():
                    folder = str(Path(path).parent)
                    problems.append(f"{folder} (node {host}: what a worker writes there does not appear here)")
                with contextlib.suppress(OSError):
                    Path(path).unlink()
        if problems:
            raise InputError(
                f"Ray workers cannot see {problems[0]}: put the workspace and the audio on storage every node mounts"
                " at the same path" + (f" ({len(problems) - 1} more problem(s))" if len(problems) > 1 else "")
            )

    # --- running tasks -----------------------------------------------------------------------------------------
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
        ray = self.ray
        delivery = Delivery(on_result, ordered)
        token = uuid.uuid4().hex  # names this run's context in the workers' cache
        shared_ref = ray.put(shared)  # sent once; every task reads the one copy in the object store
        if gpus and self.gpus > 0:
            self._run_actors(work, tasks, delivery, shared_ref, setup, threads)
            return
        remote = ray.remote(num_cpus=1, max_retries=TASK_RETRIES)(_run_task)
        window = QUEUE_PER_WORKER * self.workers
        pending: dict[Any, int] = {}
        queue = iter(enumerate(tasks))
        try:
            while True:
                while len(pending) + delivery.held < window:
                    item = next(queue, None)
                    if item is None:
                        break
                    pending[remote.remote(work, setup, shared_ref, token, threads, item[1])] = item[0]
                if not pending:
                    break
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    delivery.put(pending.pop(ref), self._outcome(ref))
        except BaseException:
            self._cancel(pending)
            raise

    def _run_actors(
        self,
        work: Work,
        tasks: Sequence[Any],
        delivery: Delivery,
        shared_ref: Any,
        setup: Callable[[Any], Any] | None,
        threads: int | None,
    ) -> None:
        """An actor per GPU (``num_gpus=1``), each making the context once (e.g. loading a model onto its GPU)."""
        ray = self.ray
        actor_class = ray.remote(_Worker).options(num_gpus=1, num_cpus=1, max_restarts=0)
        actors = [actor_class.remote(setup, shared_ref, threads) for _ in range(min(self.gpus, len(tasks)))]
        busy: dict[Any, int] = {id(a): 0 for a in actors}
        pending: dict[Any, tuple[int, Any]] = {}  # ref -> (task index, actor)
        queue = iter(enumerate(tasks))
        item = next(queue, None)
        try:
            while True:
                for actor in list(actors):
                    while item is not None and busy[id(actor)] < QUEUE_PER_WORKER:
                        if len(pending) + delivery.held >= QUEUE_PER_WORKER * len(actors):
                            break
                        pending[actor.call.remote(work, item[1])] = (item[0], actor)
                        busy[id(actor)] += 1
                        item = next(queue, None)
                if not pending:
                    if item is None:
                        break
                    # every actor died: what is left cannot run
                    dead = TaskFailure(RuntimeError("no GPU worker left"), worker_died=True)
                    while item is not None:
                        delivery.put(item[0], dead)
                        item = next(queue, None)
                    break
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    index, actor = pending.pop(ref)
                    busy[id(actor)] -= 1
                    outcome = self._outcome(ref)
                    if isinstance(outcome, TaskFailure) and outcome.worker_died and actor in actors:
                        actors.remove(actor)  # its other calls fail too and are reported as they come
                    delivery.put(index, outcome)
        except BaseException:
            self._cancel({ref: index for ref, (index, _) in pending.items()})
            raise
        finally:
            for actor in actors:
                with contextlib.suppress(Exception):
                    ray.kill(actor)

    def _outcome(self, ref: Any) -> Any:
        """A task's result, or a TaskFailure carrying the exception the task raised (not Ray's wrapper)."""
        exceptions = self.ray.exceptions
        try:
            return self.ray.get(ref)
        except exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            return TaskFailure(cause if isinstance(cause, BaseException) else exc)
        except exceptions.RayError as exc:  # the worker, actor or node died, or the object was lost
            return TaskFailure(exc, worker_died=True)

    def _cancel(self, pending: dict[Any, int]) -> None:
        for ref in pending:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)


def check_reachable(address: str) -> None:
    """Refuse a cluster address nothing answers at, at once and plainly (ray.init would wait minutes, then exit)."""
    parsed = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise ConfigError(f"--cluster {address!r} is not a Ray address (host:port, ray://host:port or auto)")
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        raise ConfigError(
            f"No Ray cluster answers at {address} ({exc.strerror or exc}): start one (`ray start --head`) or check "
            "the address"
        ) from None


# --- in the workers ------------------------------------------------------------------------------------------------


def _context(token: str, setup: Callable[[Any], Any] | None, shared: Any) -> Any:
    """The run's context in this worker process: made by ``setup`` on the first task of the run, then reused."""
    if token not in _CONTEXTS:
        _CONTEXTS.clear()  # an earlier run's context (a worker outlives runs on a long-lived cluster)
        _CONTEXTS[token] = setup(shared) if setup is not None else shared
    return _CONTEXTS[token]


def _run_task(
    work: Work, setup: Callable[[Any], Any] | None, shared: Any, token: str, threads: int | None, task: Any
) -> Any:  # pragma: no cover - runs in Ray workers
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    return work(_context(token, setup, shared), task)


class _Worker:  # pragma: no cover - a Ray actor
    """A GPU worker: the context is made once, in the actor (the model loaded onto its GPU)."""

    def __init__(self, setup: Callable[[Any], Any] | None, shared: Any, threads: int | None):
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        self.context = setup(shared) if setup is not None else shared

    def call(self, work: Work, task: Any) -> Any:
        return work(self.context, task)


def _probe(
    readable: list[str], writable: list[str], token: str
) -> tuple[str, list[tuple[str, str]], list[str]]:  # pragma: no cover - runs in Ray workers
    """(this node's name, [(path, problem)], files written to prove the writable folders are shared)."""
    host = socket.gethostname()
    problems: list[tuple[str, str]] = []
    written: list[str] = []
    for path in readable:
        if not os.path.exists(path):
            problems.append((path, "not there"))
        elif not os.access(path, os.R_OK):
            problems.append((path, "not readable"))
    for folder in writable:
        target = os.path.join(folder, f".embedtool-probe-{token}-{host}-{os.getpid()}")
        try:
            with open(target, "w") as fh:
                fh.write(host)
            written.append(target)
        except OSError as exc:
            problems.append((folder, "not there" if not os.path.isdir(folder) else f"not writable: {exc.strerror}"))
    return host, problems, written
