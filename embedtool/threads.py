"""Thread counts for many tiny batches (calibration, latency measurements)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


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
