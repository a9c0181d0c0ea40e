"""Engines: where `extract` and `embed` run their tasks — ``local`` (this machine) or ``ray`` (a Ray cluster).

A stage plans tasks, an engine runs them (:class:`~embedtool.engine.base.Engine`), and only the driver commits:
both engines run the same task functions on the same plan, so they make the same artefacts. ``ray`` is an
optional extra (``pip install 'embedtool[ray]'``) and is imported only when asked for. See docs/engine.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from embedtool.engine.base import ENGINES, Engine, EngineOptions, TaskFailure

__all__ = ["ENGINES", "Engine", "EngineOptions", "TaskFailure", "open_engine"]


@contextmanager
def open_engine(options: EngineOptions | None, jobs: int, preload: Sequence[str] = ()) -> Iterator[Engine]:
    """The engine ``options`` name, started (a local Ray on demand) and closed after. ``jobs``: tasks at once, 0 =
    every CPU (of this machine; of the cluster for ray); ``preload``: modules local worker processes import before
    forking."""
    options = options or EngineOptions()
    options.validate()
    if options.name == "ray":
        from embedtool.engine.ray_engine import RayEngine

        engine: Engine = RayEngine(options.cluster, jobs)
    else:
        from embedtool.engine.local import LocalEngine

        engine = LocalEngine(jobs or os.cpu_count() or 1, preload)
    with engine:
        yield engine
