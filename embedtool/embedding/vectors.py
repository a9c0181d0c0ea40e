"""Vectors laid out in shards, read as one collection without being concatenated.

An embeddings export keeps its segment vectors in shard files of bounded size (``segments-NNNN.npy``), each
memory-mapped (``EmbeddingStore.segment_source``). Index building, ivf-pq re-scoring and a re-export's reused
tracks read them through :class:`ShardedVectors`: blocks and spans in row order for filling an index, exact
search and copying tracks, and gathers of arbitrary rows for samples and candidates. No step
holds more than one shard (or the rows asked for) in memory, so a collection larger than RAM can be indexed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np


class ShardedVectors:
    """float32 (n, dim) vectors split over row-ordered shards (memory-mapped arrays, or any 2-D arrays)."""

    def __init__(self, shards: Sequence[np.ndarray], dim: int | None = None, remap_gathers: bool = False):
        self.shards = [s for s in shards if len(s)]
        # Gathers through a fresh mapping of each shard, dropped after: a build's many random gathers (its training
        # sample, tuning) then leave no pages resident (read-ahead maps far more than the rows). Queries gather a
        # few rows at a time and keep the shards' own mappings: no file opened per query.
        self.remap_gathers = remap_gathers
        widths = {int(s.shape[1]) for s in self.shards}
        if len(widths) > 1:
            raise ValueError(f"shards of different widths: {sorted(widths)}")
        self.dim = int(widths.pop()) if widths else int(dim or 0)
        sizes = np.array([len(s) for s in self.shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)  # shard i holds [starts[i], starts[i+1])

    @classmethod
    def of(cls, vectors: np.ndarray | ShardedVectors) -> ShardedVectors:
        return vectors if isinstance(vectors, ShardedVectors) else cls([np.asarray(vectors)], np.shape(vectors)[-1])

    @classmethod
    def from_files(cls, paths: Sequence[str | Path], dim: int | None = None) -> ShardedVectors:
        """Shards read (memory-mapped) from .npy files, in row order."""
        return cls([np.load(path, mmap_mode="r") for path in paths], dim)

    def files(self) -> list[str] | None:
        """The .npy file of every shard (in row order) when each is a whole memory-mapped file, else None: what a
        worker on another process or machine opens to read the same vectors."""
        names = [str(getattr(s, "filename", "") or "") for s in self.shards]
        if not all(name.endswith(".npy") for name in names):
            return None
        if any(self._open(i) is self.shards[i] for i in range(len(self.shards))):
            return None  # a slice of a file, not the file
        return names

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.dim)

    @property
    def nbytes(self) -> int:
        return len(self) * self.dim * 4

    def blocks(self, rows: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """(first row, float32 block) in row order: each shard, cut into pieces of at most ``rows`` rows."""
        for first, s in zip(self.starts, range(len(self.shards)), strict=False):
            shard = self._open(s)
            step = rows or len(shard)
            for at in range(0, len(shard), step):
                yield int(first + at), np.ascontiguousarray(shard[at : at + step], dtype=np.float32)
            del shard

    def _open(self, s: int) -> np.ndarray:
        """Shard ``s``; a memory-mapped one is mapped afresh, so that its pages leave this process's resident
        memory once the caller drops it (a scan over a collection larger than RAM stays at one shard)."""
        shard = self.shards[s]
        if isinstance(shard, np.memmap) and shard.filename and str(shard.filename).endswith(".npy"):
            fresh = np.load(shard.filename, mmap_mode="r")
            if fresh.shape == shard.shape and fresh.dtype == shard.dtype and fresh.offset == shard.offset:
                return fresh  # the whole file, as given (not a slice of it)
        return shard

    def __getitem__(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """The vectors at ``rows`` (any order, repeats allowed), float32 (len(rows), dim)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        if len(rows) == 0:
            return out
        if rows.min() < 0 or rows.max() >= len(self):
            raise IndexError(f"rows outside 0..{len(self) - 1}")
        shard_of = np.searchsorted(self.starts, rows, side="right") - 1
        for s in np.unique(shard_of):
            mine = np.flatnonzero(shard_of == s)
            local = rows[mine] - self.starts[s]
            order = np.argsort(local, kind="stable")  # ascending reads from a memory map
            shard = self._open(s) if self.remap_gathers else self.shards[s]
            out[mine[order]] = shard[local[order]]
        return out

    def span(self, first: int, stop: int) -> np.ndarray:
        """Rows ``[first, stop)`` as one float32 array, read like :meth:`blocks` (each shard mapped afresh and
        dropped): a long run of rows leaves no shard's pages resident."""
        parts = []
        for s in range(int(np.searchsorted(self.starts, first, side="right")) - 1, len(self.shards)):
            begin, end = int(self.starts[s]), int(self.starts[s + 1])
            if begin >= stop:
                break
            shard = self._open(s)
            parts.append(np.array(shard[max(first, begin) - begin : min(stop, end) - begin], dtype=np.float32))
            del shard
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float32)
