"""k means k: a search returns k distinct tracks whenever the library holds them, even where one long track's
segments crowd every query window's hits (`neighbours -k 100` once returned 3 matches
on a 12-track library)."""

from __future__ import annotations

from types import SimpleNamespace

import faiss
import numpy as np
import pytest

from embedtool.audio.settings import FeatureSettings
from embedtool.indexing.search import VectorIndex
from embedtool.indexing.store import IdTables
from embedtool.query.options import NeighbourOptions
from embedtool.query.searcher import Searcher
from embedtool.tracktable import TrackTable

DIM = 16


def _searcher(segments_per_track: list[int], seed: int = 0) -> tuple[Searcher, np.ndarray]:
    """A searcher over random unit vectors; track 0's segments all lie close to the query direction."""
    rng = np.random.default_rng(seed)
    query = rng.standard_normal(DIM).astype(np.float32)
    query /= np.linalg.norm(query)
    parts = []
    for t, n in enumerate(segments_per_track):
        noise = rng.standard_normal((n, DIM)).astype(np.float32)
        v = query + (0.05 if t == 0 else 2.0) * noise  # the long track crowds the pool
        parts.append(v / np.linalg.norm(v, axis=1, keepdims=True))
    vectors = np.concatenate(parts)
    index = faiss.IndexFlatIP(DIM)
    index.add(vectors)
    rows = [
        {"track_id": f"{t:032x}", "path": f"/lib/{t}.wav", "label": None, "duration_s": n * 0.5, "n_segments": n}
        for t, n in enumerate(segments_per_track)
    ]
    segment_track = np.repeat(np.arange(len(rows), dtype=np.int32), segments_per_track)
    starts = np.concatenate([np.arange(n) * 0.5 for n in segments_per_track])
    tables = IdTables.from_arrays(segment_track, np.stack([starts, starts + 1.0], 1), TrackTable.from_rows(rows))
    encoder = SimpleNamespace(feature_settings=FeatureSettings(), segment_frames=43)
    options = NeighbourOptions(hits_per_window=8)
    searcher = Searcher(encoder, VectorIndex(index, "flat"), tables, 0.5, None, options)  # type: ignore[arg-type]
    windows = query + 0.01 * rng.standard_normal((6, DIM)).astype(np.float32)
    return searcher, windows / np.linalg.norm(windows, axis=1, keepdims=True)


@pytest.mark.parametrize("mode", ["similar", "identify"])
def test_a_long_track_crowding_the_hits_still_gives_k_distinct_tracks(mode: str) -> None:
    searcher, windows = _searcher([1200] + [3] * 19)  # 20 tracks, one 10-minute track
    starts = np.arange(len(windows)) * 0.25
    result = searcher.search_vectors(windows, starts, 2.0, mode, k=10)  # type: ignore[arg-type]
    ids = [m.track_id for m in result.matches]
    assert len(ids) == 10 == len(set(ids))
    assert ids[0] == f"{0:032x}"  # the crowding track is still first
    assert [m.rank for m in result.matches] == list(range(1, 11))


def test_k_is_capped_only_by_the_library_size() -> None:
    searcher, windows = _searcher([400] + [2] * 11)  # 12 tracks
    starts = np.arange(len(windows)) * 0.25
    result = searcher.search_vectors(windows, starts, 2.0, "similar", k=100)
    assert len({m.track_id for m in result.matches}) == 12
    left_out = searcher.search_vectors(windows, starts, 2.0, "similar", k=100, exclude_track=f"{3:032x}")
    ids = [m.track_id for m in left_out.matches]
    assert len(ids) == 11 == len(set(ids)) and f"{3:032x}" not in ids
