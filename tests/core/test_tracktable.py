"""Track tables held as columns: rows become dicts only when read, edits hold, lookups by id without a dict of
every id, relabelling column against column."""

from __future__ import annotations

import pyarrow as pa
import pytest

from embedtool.tracktable import TrackTable

ROWS = [
    {"track_id": "a1", "label": "x", "group": None, "n_segments": 1},
    {"track_id": "b2", "label": None, "group": "g", "n_segments": 2},
    {"track_id": "c3", "label": "y", "group": "h", "n_segments": 3},
]


def test_rows_read_as_dicts_and_edits_hold() -> None:
    table = TrackTable.from_rows(ROWS)
    assert len(table) == 3 and not table._rows  # nothing made until read
    assert table[1] == ROWS[1] and table[-1]["n_segments"] == 3 and list(table) == ROWS
    assert table[0:2] == ROWS[:2]
    with pytest.raises(IndexError):
        table[3]
    table[0]["label"] = "edited"
    assert table[0]["label"] == "edited" and table.column("label") == ["edited", None, "y"]
    assert list(table.column("n_segments")) == [1, 2, 3]


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 0, 1]])  # sorted ids: binary search; otherwise a dict
def test_lookups_by_id(order: list[int]) -> None:
    table = TrackTable.from_rows([ROWS[i] for i in order])
    for row, i in enumerate(order):
        assert table.index_of(ROWS[i]["track_id"]) == row
        assert table.get(ROWS[i]["track_id"]) == ROWS[i]
    assert table.index_of("zz") is None and table.index_of("") is None and table.get("b") is None
    assert list(table.rows_of(["c3", "nope", "a1"])) == [order.index(2), -1, order.index(0)]


def test_relabel_from_changes_only_the_rows_that_differ() -> None:
    table = TrackTable.from_rows(ROWS)
    source = TrackTable.from_rows(
        [
            {"track_id": "b2", "label": "new", "group": "g"},
            {"track_id": "c3", "label": "y", "group": "h"},
            {"track_id": "d4", "label": "q", "group": None},
        ]
    )
    assert table.relabel_from(source) == 1
    assert table[1]["label"] == "new" and table[0]["label"] == "x"  # a1 is not in the source: kept
    assert sorted(table._rows) == [0, 1]  # the unchanged c3 never became a dict; a1 was read just above
    assert table.relabel_from(source) == 0


def test_an_empty_table() -> None:
    table = TrackTable.from_rows([], schema=pa.schema([("track_id", pa.string()), ("label", pa.string())]))
    assert len(table) == 0 and list(table) == [] and table.index_of("a") is None
