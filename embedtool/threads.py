"""Thread counts: one thread for many tiny batches (calibration, latency measurements), and for long stages
(train, embed, extract, evaluate) as many as the machine has CPUs free (:class:`CpuBudget`)."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from embedtool.errors import ConfigError


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch and FAISS on one thread inside the block (restored after).

    Calibration and latency measurements run many tiny batches: thread start-up and, on a busy machine,
    OpenMP spin-waiting cost far more than the work (20x slower measured with 2 threads on 2 shared cores).
    """
    import faiss
    import torch

    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        faiss.omp_set_num_threads(faiss_threads)


# --- how many threads a long stage uses: the CPUs actually free ------------------------------------------------

THREADS_ENV = "EMBEDTOOL_THREADS"  # a fixed thread count for every stage (what --threads sets)
RECHECK_S = 5.0  # a running stage looks again at most this often (each epoch, each block of work)
FIRST_SAMPLE_S = 0.25  # the first look measures the machine over this long
CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_fixed: list[int | None] = [None]

log = logging.getLogger("embedtool.threads")


def fix_threads(threads: int | None) -> None:
    """Every stage of this process uses ``threads`` threads from now on (``--threads N``); None: chosen from the
    free CPUs again (unless ``EMBEDTOOL_THREADS`` fixes them)."""
    if threads is not None and threads < 1:
        raise ConfigError(f"--threads must be at least 1, not {threads}")
    _fixed[0] = threads


def fixed_threads() -> int | None:
    """The thread count fixed by :func:`fix_threads`, else by ``EMBEDTOOL_THREADS``, else None (choose)."""
    if _fixed[0] is not None:
        return _fixed[0]
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return None
    try:
        threads = int(value)
    except ValueError:
        raise ConfigError(f"{THREADS_ENV} must be a whole number of threads, not {value!r}") from None
    if threads < 1:
        raise ConfigError(f"{THREADS_ENV} must be at least 1, not {threads}")
    return threads


def usable_cpus() -> float:
    """The CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota (a container's
    ``--cpus``) when there is one."""
    try:
        cpus: float = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    return min(cpus, quota) if quota else cpus


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs the cgroup's quota allows (cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us``/``cfs_period_us``);
    None when unlimited or unknown."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else max(0.01, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else max(0.01, quota_us / period_us)
    except (OSError, ValueError):
        return None


def _machine_busy_s(cpus: set[int] | None = None) -> float | None:
    """Seconds of CPU time all processes have used since boot on ``cpus`` (``/proc/stat``'s per-CPU lines; None:
    every CPU), or None when the file is not there."""
    try:
        with open("/proc/stat", "rb") as fh:
            lines = [line.split() for line in fh if line.startswith(b"cpu")]
    except OSError:
        return None
    if cpus is None:
        rows = [f for f in lines if f[0] == b"cpu"]
    else:
        rows = [f for f in lines if f[0] != b"cpu" and int(f[0][3:]) in cpus]
    busy = 0.0
    for fields in rows:
        ticks = [int(f) for f in fields[1:9]]  # user nice system idle iowait irq softirq steal
        busy += sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
    return busy / CLK_TCK if rows else None


def _affinity() -> set[int] | None:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _own_busy_s() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class CpuLook:
    """One look at the machine: the CPUs this process may use, how many of them other work keeps busy, and
    the thread count that follows."""

    usable: float
    others_busy: float
    threads: int
    fixed: bool = False

    def describe(self) -> str:
        if self.fixed:
            return f"{self.threads} thread(s) (fixed by --threads or {THREADS_ENV})"
        return f"{self.threads} thread(s): {self.usable:g} usable CPU(s), {self.others_busy:.1f} busy with other work"


def choose_threads(usable: float, others_busy: float) -> int:
    """Threads for ``usable`` CPUs of which other work keeps ``others_busy`` busy: one per CPU left free, a CPU
    counting as free when at least three quarters of it is (OpenMP threads wait for the slowest: a thread on a
    shared core slows all of them, 3x measured on 2 cores with one busy process). At least 1."""
    return int(max(1, min(math.floor(usable), math.floor(usable - others_busy + 0.25))))


class CpuBudget:
    """The thread count of a long stage (train, embed, extract, evaluate), chosen from the CPUs actually free:
    the affinity mask and cgroup quota bound it, and what other processes keep busy on those CPUs (their CPU time
    in ``/proc/stat`` minus this process's own, between two looks) is taken off. :meth:`recheck` looks again
    (at most every :data:`RECHECK_S` seconds): a stage calls it at each epoch or block of work, so a job that
    starts or ends meanwhile changes the count. A fixed count (:func:`fix_threads`) is used as it is."""

    def __init__(self, stage: str, recheck_s: float = RECHECK_S):
        self.stage = stage
        self.recheck_s = recheck_s
        self.fixed = fixed_threads()
        self.last: CpuLook | None = None
        self._mark: tuple[float, float, float] | None = None  # (wall, machine busy s, own busy s)
        self._looked_at = -math.inf

    def look(self) -> CpuLook:
        """Measure now (the first look samples for :data:`FIRST_SAMPLE_S`)."""
        usable = usable_cpus()
        if self.fixed is not None:
            return CpuLook(usable, 0.0, self.fixed, fixed=True)
        if self._mark is None:
            self._mark = self._sample()
            time.sleep(FIRST_SAMPLE_S)
        before, now = self._mark, self._sample()
        self._mark = now
        wall = max(now[0] - before[0], 1e-3)
        if before[1] < 0 or now[1] < 0:  # no /proc/stat: the load average, less this process's own threads
            others = max(0.0, _load_average() - self._own_threads())
        else:
            others = max(0.0, ((now[1] - before[1]) - (now[2] - before[2])) / wall)
        return CpuLook(usable, others, choose_threads(usable, others))

    def _sample(self) -> tuple[float, float, float]:
        busy = _machine_busy_s(_affinity())  # the CPUs this process may run on: others' work elsewhere is no matter
        return (time.monotonic(), -1.0 if busy is None else busy, _own_busy_s())

    def _own_threads(self) -> int:
        return self.last.threads if self.last is not None else 0

    def threads(self) -> int:
        """The thread count to use now (looking again when the last look is older than ``recheck_s``)."""
        if self.last is None or time.monotonic() - self._looked_at >= self.recheck_s:
            look = self.look()
            self._looked_at = time.monotonic()
            if self.last is None or look.threads != self.last.threads:
                log.info("%s: %s", self.stage, look.describe())
            self.last = look
        return self.last.threads

    def recheck(self) -> int:
        """Set torch's thread count to :meth:`threads` (when it changed); the count."""
        import torch

        threads = self.threads()
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        return threads

    @contextmanager
    def applied(self) -> Iterator[CpuBudget]:
        """Torch on the chosen threads inside the block (re-checked by :meth:`recheck`), as before after it."""
        import torch

        before = torch.get_num_threads()
        self.recheck()
        try:
            yield self
        finally:
            torch.set_num_threads(before)


def _load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


_shared: dict[str, CpuBudget] = {}


def threads_now(stage: str) -> int:
    """The thread (or worker) count a stage that chooses once should start with now (the same look is reused for
    :data:`RECHECK_S` seconds, so asking twice costs one measurement)."""
    budget = _shared.get(stage)
    if budget is None or budget.fixed != fixed_threads():
        budget = _shared[stage] = CpuBudget(stage)
    return budget.threads()
