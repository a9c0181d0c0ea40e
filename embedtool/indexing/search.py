"""Loading and searching FAISS indexes: one wrapper for every kind, with its tuned search parameters.

FAISS ids are the rows of the embeddings store (``segments.parquet`` / ``tracks.parquet`` ``row``); the index
folder keeps a copy of those tables, which map rows to the stable segment and track ids. Every index holds
L2-normalised vectors and uses inner product, so scores are cosine similarities.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from embedtool.embedding.vectors import ShardedVectors
from embedtool.errors import DamagedArtefactError


@dataclass
class VectorIndex:
    """A FAISS index plus the search parameters tuned for it (``nprobe`` or ``efSearch``)."""

    index: faiss.Index
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    # ivf-pq: the exact vectors (memory-mapped from the embeddings store) to re-score candidates with;
    # ``params["refine"]`` candidates per wanted neighbour are fetched from the compressed codes first.
    refine_vectors: np.ndarray | ShardedVectors | None = None
    source: str = ""  # the file it was loaded from, for messages

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    @classmethod
    def load(cls, path: Path, kind: str, params: dict[str, Any] | None = None) -> VectorIndex:
        # IO_FLAG_MMAP keeps large flat/IVF indexes out of RAM until touched; HNSW graphs are read fully. An
        # on-disk index (merged inverted lists in a .ivfdata file) must not be read with IO_FLAG_MMAP (it crashes
        # at search in faiss 1.15); ONDISK_SAME_DIR finds the .ivfdata beside the index wherever the folder moved.
        if (params or {}).get("on_disk"):
            with faiss_stdout_silenced():  # faiss prints where it found the .ivfdata: not for our stdout
                index = faiss.read_index(str(path), faiss.IO_FLAG_ONDISK_SAME_DIR)
            return cls(index, kind, dict(params or {}), source=str(path))
        flags = faiss.IO_FLAG_MMAP if kind in ("flat", "ivf", "ivf-pq") else 0
        try:
            index = faiss.read_index(str(path), flags)
        except RuntimeError:
            index = faiss.read_index(str(path))
        return cls(index, kind, dict(params or {}), source=str(path))

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude_rows: tuple[int, int] | None = None,
        **overrides: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` (scores, rows) per query; ``exclude_rows=(start, stop)`` leaves that row range out.

        Rows that could not be filled (fewer than ``k`` candidates) come back as -1 with score -inf.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries[None, :]
        k = max(1, min(int(k), self.ntotal))
        params = self._search_parameters(exclude_rows, overrides)
        refine = int(overrides.get("refine") or self.params.get("refine", 0) or 0)
        fetch = min(self.ntotal, k * refine) if self.refine_vectors is not None and refine > 1 else k
        if params is None:
            scores, rows = self.index.search(queries, fetch)
        else:
            scores, rows = self.index.search(queries, fetch, params=params)
        self._check_rows(rows)
        if fetch != k:
            scores, rows = self._rescore(queries, rows, k)
        scores = np.where(rows < 0, -np.inf, scores).astype(np.float32)
        return scores, rows

    def _check_rows(self, rows: np.ndarray) -> None:
        """Refuse answers naming rows the index does not hold: its bytes were altered after it was written (a
        memory-mapped index is read lazily, so damage shows here rather than when it is opened)."""
        if rows.size and (int(rows.max()) >= self.ntotal or int(rows.min()) < -1):
            where = f"{self.source} (or its .ivfdata)" if self.source else "the index"
            raise DamagedArtefactError(
                f"{where} answered row {int(rows.max())} of an index of {self.ntotal} vectors: it is damaged. "
                "Re-make it with `embedtool index` (or `embedtool verify --repair`)."
            )

    def _rescore(self, queries: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner products for the candidates found from compressed codes; keep the best ``k``."""
        assert self.refine_vectors is not None
        safe = np.where(rows < 0, 0, rows)
        flat = np.unique(safe)
        vectors = np.asarray(self.refine_vectors[flat], dtype=np.float32)
        position = np.searchsorted(flat, safe)
        exact = np.einsum("qkd,qd->qk", vectors[position], queries)
        exact = np.where(rows < 0, -np.inf, exact)
        order = np.argsort(-exact, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(exact, order, 1), np.take_along_axis(rows, order, 1)

    def _search_parameters(self, exclude_rows: tuple[int, int] | None, overrides: dict[str, Any]) -> Any:
        values = {**self.params, **{k: v for k, v in overrides.items() if v is not None}}
        selector = None
        if exclude_rows is not None and exclude_rows[1] > exclude_rows[0]:
            inner = faiss.IDSelectorRange(int(exclude_rows[0]), int(exclude_rows[1]))
            selector = faiss.IDSelectorNot(inner)
            selector.referenced = inner  # keep the wrapped selector alive while FAISS uses it
        if self.kind in ("ivf", "ivf-pq"):
            params = faiss.SearchParametersIVF()
            params.nprobe = int(values.get("nprobe", 1))
        elif self.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = int(values.get("efSearch", 16))
        else:
            if selector is None:
                return None
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
            params.referenced = selector
        return params


@contextmanager
def faiss_stdout_silenced() -> Iterator[None]:
    """Send what FAISS's C++ code prints to standard output (on-disk index messages) to /dev/null meanwhile, so
    that the CLI's output (JSON, CSV) stays clean."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true top-k rows found, over queries (both arrays (n_queries, k))."""
    k = truth.shape[1]
    hits = [len(np.intersect1d(f[f >= 0], t[t >= 0], assume_unique=False)) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits) / k) if len(hits) else 1.0


def index_bytes(index: faiss.Index) -> int:
    """Size of the index as FAISS serialises it."""
    return int(faiss.serialize_index(index).nbytes)
