"""What a process started by ``torchrun`` knows of itself (from the environment torchrun sets), and how such a
process ends. Free of torch, so the CLI can ask before anything heavy is imported."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn


def launched_world_size() -> int:
    """How many processes ``torchrun`` started for this job (1 when it did not start this one)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def launched_rank() -> int:
    """This process's global rank under ``torchrun`` (0 when not launched by it)."""
    return int(os.environ.get("RANK", "0") or 0)


def end_after(run: Callable[[], object]) -> NoReturn:
    """Run ``run`` and end the process with its exit status (0, a ``SystemExit``'s code, or 1 after printing an
    unexpected exception's traceback), skipping the interpreter's teardown.

    Why: a training process that has finished, left its process group and said how it ended can still be aborted
    by C++ teardown at exit now and then ("terminate called without an active exception", SIGABRT; about one
    run in seven on 2 cores, torch 2.11 with gloo). torchrun then kills the other processes and fails a job that
    had finished. Nothing is left to run by then, so the process ends at once, its output flushed."""
    try:
        run()
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        status = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
