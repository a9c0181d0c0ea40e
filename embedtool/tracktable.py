"""A track table held as columns: rows become dicts only when they are read.

Every artefact keeps one row per track (features, embeddings, index). Read with ``Table.to_pylist()``, a library of
10^6 tracks costs seconds and about a gigabyte before the first query: one dict per track. :class:`TrackTable`
keeps the Arrow table instead. A row becomes a dict when it is read, and it is kept, so an edit to it (a relabel)
holds for later reads. Looking a track up by id searches the id column (binary search when the ids are sorted,
as every artefact writes them), not a dict of every id.

It is a ``Sequence`` of row dicts, so code that iterates or indexes a list of rows reads it unchanged. Iteration
is still O(n), but only for the commands that really visit every track.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np
import pyarrow as pa


class TrackTable(Sequence[dict[str, Any]]):
    """The rows of an Arrow table as dicts, made on first read (see the module docstring)."""

    def __init__(self, table: pa.Table):
        self.table = table
        self._rows: dict[int, dict[str, Any]] = {}
        self._columns: dict[str, Any] = {}
        self._sorted_ids: np.ndarray | None = None
        self._id_rows: dict[str, int] | None = None

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]], schema: pa.Schema | None = None) -> TrackTable:
        return cls(pa.Table.from_pylist(list(rows), schema=schema))

    def __len__(self) -> int:
        return self.table.num_rows

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"track row {i} outside 0..{n - 1}")
        i = i % n
        row = self._rows.get(i)
        if row is None:
            row = self._rows[i] = self.table.slice(i, 1).to_pylist()[0]
        return row

    def __iter__(self) -> Iterator[dict[str, Any]]:
        block = 65536  # rows made a block at a time (to_pylist is fast per block), each kept like a read row
        for start in range(0, len(self), block):
            made = self.table.slice(start, block).to_pylist() if len(self._rows) < len(self) else []
            for offset in range(min(block, len(self) - start)):
                i = start + offset
                row = self._rows.get(i)
                if row is None:
                    row = self._rows[i] = made[offset]
                yield row

    def __repr__(self) -> str:
        return f"TrackTable({len(self)} tracks, columns {self.table.column_names})"

    # --- columns ---------------------------------------------------------------------------------------------
    def column(self, name: str) -> Any:
        """A whole column: a numpy array for numbers, a list for text. Rows edited since reading (a relabel)
        are reflected."""
        if name not in self._columns:
            values = self.table.column(name)
            numeric = pa.types.is_integer(values.type) or pa.types.is_floating(values.type)
            self._columns[name] = values.to_numpy() if numeric and values.null_count == 0 else values.to_pylist()
        column = self._columns[name]
        edited = [(i, row[name]) for i, row in self._rows.items() if row.get(name) != _at(column, i)]
        if edited:
            column = column.copy() if isinstance(column, np.ndarray) else list(column)
            for i, value in edited:
                column[i] = value
        return column

    def ids(self) -> list[str]:
        """Every track id, in row order."""
        return list(self.column("track_id"))

    # --- lookups by id ---------------------------------------------------------------------------------------
    def index_of(self, track_id: str) -> int | None:
        """The row of ``track_id``, or None: a binary search over the sorted ids (a dict when they are not)."""
        if self._sorted_ids is None and self._id_rows is None:
            ids = np.asarray(self.table.column("track_id").to_numpy(zero_copy_only=False), dtype=object)
            if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])):
                self._sorted_ids = ids
            else:
                self._id_rows = {str(t): i for i, t in enumerate(ids)}
        if self._id_rows is not None:
            return self._id_rows.get(track_id)
        assert self._sorted_ids is not None
        at = int(np.searchsorted(self._sorted_ids, track_id))
        return at if at < len(self._sorted_ids) and self._sorted_ids[at] == track_id else None

    def rows_of(self, track_ids: Sequence[str]) -> np.ndarray:
        """The row of each of ``track_ids`` (int64, -1 for an id the table lacks), in one vectorised search."""
        wanted = np.asarray(list(track_ids), dtype=object)
        self.index_of("")  # builds the sorted ids (or the dict) once
        if self._id_rows is not None:
            return np.array([self._id_rows.get(t, -1) for t in wanted], dtype=np.int64)
        ids = self._sorted_ids
        assert ids is not None
        if len(ids) == 0:
            return np.full(len(wanted), -1, dtype=np.int64)
        at = np.minimum(np.searchsorted(ids, wanted), len(ids) - 1)
        return np.where(ids[at] == wanted, at, -1).astype(np.int64)

    def relabel_from(self, source: TrackTable, names: Sequence[str] = ("label", "group")) -> int:
        """Give each row the values of ``names`` that ``source`` holds for the same track id; returns how many rows
        changed. Compared column against column: only the rows that change become dicts."""
        if len(self) == 0:
            return 0
        theirs = source.rows_of(self.ids())
        found = theirs >= 0
        changed = np.zeros(len(self), dtype=bool)
        values = {}
        for name in names:
            other = np.full(len(self), None, dtype=object)
            other[found] = _objects(source.column(name))[theirs[found]]
            changed |= found & (_objects(self.column(name)) != other).astype(bool)
            values[name] = other
        for i in np.flatnonzero(changed).tolist():
            row = self[i]
            for name in names:
                row[name] = values[name][i]
        return int(changed.sum())

    def get(self, track_id: str) -> dict[str, Any] | None:
        """The row of ``track_id`` (a dict, kept), or None."""
        at = self.index_of(track_id)
        return None if at is None else self[at]


def _at(column: Any, i: int) -> Any:
    value = column[i]
    return value.item() if isinstance(value, np.generic) else value


def _objects(values: Any) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out
