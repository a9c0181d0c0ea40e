"""Updating an index for a changed library instead of rebuilding it.

FAISS ids are the rows of the embeddings export, and an export keeps its tracks in content-id order, so a new
export moves the rows of the tracks it kept. An update therefore

1. maps each track of the old index to its row in the new export by its content id (a removed track has none),
2. removes the vectors of removed tracks (``remove_ids``), renumbers the kept ones to their new rows (IVF: the ids
   of every inverted list in place; flat: the id map), and adds the new tracks' vectors (``add_with_ids``) —
   the cells and codebooks stay as trained; an ivf-pq index whose lists are on disk (or now go there) gets a new
   ``.ivfdata`` instead, the old lists copied with the new codes and then compacted (``ondisk_update``),
3. re-measures recall on held-out queries (the same probe a build tunes with) and raises ``nprobe`` if it fell,
4. keeps the landmark fingerprints of the kept tracks (their track positions renumbered) and merges in the new
   tracks' landmarks, so identify's hash table is re-made for those tracks only.

A full build is needed instead (:func:`rebuild_reason`) when the update cannot keep what a build would give:
another model or segment grid, other index options, a collection that now calls for another kind of index
(or whose codes now fit in memory again), an index kind that cannot drop vectors (hnsw), or cells trained on
fewer than half of today's vectors (``DRIFT``); and when the recall probe cannot reach the target any more.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from embedtool.artefacts import damaged_files, fingerprint_of
from embedtool.config import settings_dict
from embedtool.embedding.vectors import ShardedVectors
from embedtool.errors import EmbedtoolError
from embedtool.indexing.build import (
    BuiltIndex,
    choose_kind,
    exact_top_k_scored,
    fill_block_vectors,
    measure_latency,
    minimum_vectors,
    probe_file,
    search_excluding_self,
    tuning_ladder,
    use_on_disk,
)
from embedtool.indexing.fingerprint import (
    FILES,
    FingerprintIndex,
    FingerprintSettings,
    Landmarks,
    fingerprint_library,
    fingerprint_library_on_disk,
)
from embedtool.indexing.fingerprint_build import block_landmarks, fingerprint_settings
from embedtool.indexing.ondisk_update import check_vector_count, update_on_disk
from embedtool.indexing.options import IndexOptions
from embedtool.indexing.search import VectorIndex, recall_at_k
from embedtool.indexing.store import SEGMENT_INDEX, TRACK_INDEX, IndexStore
from embedtool.progress import Progress
from embedtool.tracktable import TrackTable

if TYPE_CHECKING:
    from embedtool.embedding.store import EmbeddingStore
    from embedtool.features.store import FeatureStore

DRIFT = 0.5  # cells trained on fewer than this share of the vectors they now hold call for a rebuild
ADD_BLOCK = 65536  # added vectors gathered and added at a time (memory: this many rows of float32)


@dataclass
class IdRemap:
    """Old index rows -> new export rows (-1: removed), for segments and tracks, and the new export's tracks that
    the old index lacks."""

    segments: np.ndarray  # int64 per old segment row
    tracks: np.ndarray  # int64 per old track row
    added_tracks: np.ndarray  # int64 positions in the new export

    @property
    def removed(self) -> int:
        return int(np.sum(self.tracks < 0))

    @property
    def added(self) -> int:
        return len(self.added_tracks)

    @property
    def kept(self) -> int:
        return int(np.sum(self.tracks >= 0))


@dataclass
class IndexUpdate:
    """What an update made (in the staged folder) and did: both indexes, identify and fingerprint facts."""

    segments: BuiltIndex
    tracks: BuiltIndex
    identify: dict[str, Any]
    fingerprints: dict[str, Any] | None  # None: build them whole (the old ones cannot be kept)
    change: dict[str, Any] = field(default_factory=dict)
    added_tracks: list[str] = field(default_factory=list)  # the track ids the index did not hold


def id_remap(old: TrackTable, new: TrackTable) -> IdRemap:
    """Where each track (and segment) of the ``old`` track table sits in the ``new`` one, by content id. A track
    whose segment count changed is taken as removed and added (its vectors are not the same)."""
    old_counts = np.asarray(old.column("n_segments"), dtype=np.int64)
    new_counts = np.asarray(new.column("n_segments"), dtype=np.int64)
    tracks = new.rows_of(old.ids()) if len(old) else np.zeros(0, np.int64)
    same = tracks >= 0
    same[same] = new_counts[tracks[same]] == old_counts[same]
    tracks = np.where(same, tracks, -1)
    old_first = np.concatenate([[0], np.cumsum(old_counts)[:-1]]).astype(np.int64)
    new_first = np.concatenate([[0], np.cumsum(new_counts)[:-1]]).astype(np.int64)
    owner = np.repeat(np.arange(len(old), dtype=np.int64), old_counts)
    within = np.arange(len(owner), dtype=np.int64) - old_first[owner]
    target = tracks[owner]
    segments = np.where(target >= 0, new_first[np.maximum(target, 0)] + within, -1)
    kept = np.zeros(len(new), dtype=bool)
    kept[tracks[tracks >= 0]] = True
    return IdRemap(segments, tracks, np.flatnonzero(~kept).astype(np.int64))


def open_index(directory: Path) -> tuple[IndexStore | None, str]:
    """The index in ``directory`` to update, or None and why there is none to update."""
    if not (Path(directory) / "meta.json").is_file():
        return None, "no index yet"
    try:
        return IndexStore(Path(directory)), ""
    except EmbedtoolError as exc:
        return None, f"the index cannot be read ({exc})"


def recorded_options(old: IndexStore, fallback: IndexOptions) -> IndexOptions:
    """The options the index in ``old`` was made with (each value checked as a configuration value is), so that
    an update made for another reason (a removal) keeps them; ``fallback`` where they do not make valid options."""
    import dataclasses
    import typing

    from embedtool.config import coerce
    from embedtool.errors import ConfigError

    hints = typing.get_type_hints(IndexOptions)
    try:
        options = dataclasses.replace(
            fallback, **{k: coerce(v, hints[k], f"index.{k}") for k, v in old.meta.config.items() if k in hints}
        )
        options.validate()
    except (ConfigError, TypeError, ValueError):
        return fallback
    return options


def track_changes(directory: Path, store: EmbeddingStore) -> dict[str, int]:
    """How many tracks of the export ``store`` the index in ``directory`` lacks, and how many it holds that the
    export does not (empty when it cannot be read)."""
    old, _ = open_index(directory)
    if old is None:
        return {}
    try:
        remap = id_remap(old.id_tables().tracks, store.tracks)
    except EmbedtoolError:
        return {}
    return {"added": remap.added, "removed": remap.removed, "kept": remap.kept}


def expected_kind(n: int, dim: int, options: IndexOptions) -> str:
    """The kind a build of ``n`` vectors would make (``auto``'s choice, or flat when too few to train)."""
    kind = choose_kind(n, dim, options)
    return "flat" if n < minimum_vectors(kind, n, options) else kind


def rebuild_reason(old: IndexStore, store: EmbeddingStore, options: IndexOptions) -> str | None:
    """Why the index in ``old`` cannot be updated to ``store`` (an export) with ``options``, or None when it can."""
    if old.model_fingerprint != store.model_fingerprint:
        return "the model changed"
    extra = old.meta.extra
    if (extra.get("hop_s"), extra.get("segment_seconds"), extra.get("dim")) != (
        store.hop_s,
        store.segment_seconds,
        store.dim,
    ):
        return "the segment grid or the embedding dimension changed"
    if fingerprint_of(old.meta.config) != fingerprint_of(settings_dict(options)):
        return "the index options changed"
    for name, n in (("segments", store.n_segments), ("tracks", len(store))):
        summary = extra[name]
        kind = str(summary["kind"])
        wanted = expected_kind(n, store.dim, options)
        if wanted != kind:
            return f"{n} {name[:-1]} vectors call for a {wanted} index (the index is {kind})"
        if kind == "hnsw":
            return f"the {name[:-1]} index is an hnsw graph, which cannot drop vectors"
        params = summary.get("params") or {}
        if params.get("on_disk") and not use_on_disk(n, params, options):
            return f"{n} {name[:-1]} vectors' codes now fit in memory (the index keeps them on disk)"
        trained = int(summary.get("trained_vectors") or summary.get("vectors") or 0)
        if kind in ("ivf", "ivf-pq") and trained < DRIFT * n:
            return (
                f"the {name[:-1]} index's cells were trained on {trained} vectors, under {DRIFT:.0%} of the {n} "
                "it would hold"
            )
    return None


def update_index(
    old: IndexStore,
    stage: Path,
    store: EmbeddingStore,
    features: FeatureStore | None,
    options: IndexOptions,
    progress: Progress | None = None,
) -> IndexUpdate | str:
    """Update the index in ``old`` to the export ``store`` into the staged folder ``stage`` (the index files and
    fingerprints; the caller writes the id tables and meta.json). Returns what was made, or why a full build is
    needed instead (:func:`rebuild_reason`, or a recall probe that no longer reaches the target)."""
    why = rebuild_reason(old, store, options)
    if why is not None:
        return why
    damaged = damaged_files(old.directory, old.meta, hashes=True)  # what is read here is hashed first
    if damaged:
        name, what = next(iter(damaged.items()))
        return f"the index is damaged ({name}: {what})"
    remap = id_remap(old.id_tables().tracks, store.tracks)
    extra = old.meta.extra
    segments = _update_vectors(
        old, stage, "segments", SEGMENT_INDEX, remap.segments, _added_rows(store, remap.added_tracks),
        store.segment_source(check_finite=False), options, progress,
    )  # fmt: skip
    if isinstance(segments, str):
        return segments
    tracks = _update_vectors(
        old, stage, "tracks", TRACK_INDEX, remap.tracks, remap.added_tracks, ShardedVectors.of(store.track_vectors()),
        options, progress,
    )  # fmt: skip
    if isinstance(tracks, str):
        return tracks
    identify = dict(extra.get("identify") or {})
    if options.identify_threshold is not None:
        identify = {"statistic": identify.get("statistic", "confidence"), "threshold": options.identify_threshold,
                    "calibrated": False, "reason": "fixed by index.identify_threshold"}  # fmt: skip
    elif identify.get("calibrated"):
        identify["kept"] = (
            f"calibrated on the index before {remap.added} track(s) were added and {remap.removed} removed; "
            "re-calibrated by the next full build (`embedtool index --rebuild`)"
        )
    fingerprints = update_fingerprints(old, stage, features, store, remap, options, progress)
    change = {"mode": "incremental", "added": remap.added, "removed": remap.removed, "kept": remap.kept}
    added = [store.tracks[int(p)]["track_id"] for p in remap.added_tracks]
    return IndexUpdate(segments, tracks, identify, fingerprints, change, added)


def _added_rows(store: EmbeddingStore, positions: np.ndarray) -> np.ndarray:
    """The segment rows of the tracks at ``positions`` of the export."""
    counts = np.asarray(store.tracks.column("n_segments"), dtype=np.int64)
    firsts = store.first_rows[positions]
    return (
        np.concatenate([np.arange(f, f + counts[p], dtype=np.int64) for f, p in zip(firsts, positions, strict=True)])
        if len(positions)
        else np.zeros(0, np.int64)
    )


def _update_vectors(
    old: IndexStore,
    stage: Path,
    name: str,
    filename: str,
    remap: np.ndarray,
    added: np.ndarray,
    source: ShardedVectors,
    options: IndexOptions,
    progress: Progress | None,
) -> BuiltIndex | str:
    """One index (``segments`` or ``tracks``) of ``old``: removed ids dropped, kept ones renumbered, ``added`` rows
    of ``source`` added; recall re-measured. Returns the updated index, or why it must be rebuilt."""
    start = time.perf_counter()
    summary = old.meta.extra[name]
    kind = str(summary["kind"])
    label = f"{name[:-1]} index"
    if progress:
        progress(f"{label}: updating", 0, 1)
    params = dict(summary.get("params") or {})
    search = dict(summary.get("search_params") or {})
    path = old.directory / filename
    was_on_disk = bool(params.get("on_disk"))
    # Only the segment index goes on disk (a build gives the track index no folder for lists).
    to_disk = kind == "ivf-pq" and name == "segments" and use_on_disk(len(source), params, options)
    try:
        if to_disk:
            blocks = _added_blocks(added, source, fill_block_vectors(options, source.dim))
            index = update_on_disk(path, was_on_disk, stage, Path(filename).stem, remap, blocks, len(added), progress,
                                   label)  # fmt: skip
            params["on_disk"] = search["on_disk"] = True
        else:
            index = _update_in_memory(path, kind, remap, _added_blocks(added, source, ADD_BLOCK))
    except _NonFiniteVectors:  # (only the added rows are read: a full build names the track)
        return f"the {label}'s new vectors hold NaN or infinite values"
    if index.ntotal != len(source):
        raise EmbedtoolError(f"{label}: {index.ntotal} vectors after the update, {len(source)} expected")
    wrapped = VectorIndex(index, kind, search)
    if kind == "ivf-pq":
        wrapped.refine_vectors = source
    built = BuiltIndex(
        wrapped, kind, params, len(source), source.dim, None, options.recall_k, 0.0, 0.0,
        trained_vectors=(summary.get("trained_vectors") or summary.get("vectors")) if kind != "flat" else None,
    )  # fmt: skip
    if kind != "flat":
        previous = old.directory / probe_file(name)
        carried = dict(np.load(previous)) if previous.is_file() else None
        reached = _probe(built, source, options, progress, label, carried, remap, added)
        if not reached:
            return f"the {label}'s recall probe stays under the target {options.target_recall} at every nprobe"
    built.build_s = time.perf_counter() - start
    rng = np.random.default_rng(options.seed)
    built.latency_ms = measure_latency(
        wrapped, source[rng.choice(len(source), min(200, len(source)), replace=False)], options.recall_k
    )
    return built


class _NonFiniteVectors(Exception):
    """An added vector holds NaN or an infinity."""


def _added_blocks(added: np.ndarray, source: ShardedVectors, size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The ``added`` rows of ``source`` as (rows, vectors), ``size`` at a time, each block read once (one gather
    per shard, whatever the number of tracks) and checked finite."""
    for at in range(0, len(added), size):
        rows = np.ascontiguousarray(added[at : at + size], dtype=np.int64)
        vectors = source[rows]
        if not np.isfinite(vectors).all():
            raise _NonFiniteVectors
        yield rows, vectors


def _update_in_memory(
    path: Path, kind: str, remap: np.ndarray, added: Iterator[tuple[np.ndarray, np.ndarray]]
) -> faiss.Index:
    """The index at ``path`` read into memory, its removed ids dropped (``remove_ids``), the kept renumbered and
    the ``added`` blocks of (rows, vectors) added (``add_with_ids``)."""
    index = faiss.read_index(str(path))  # into memory: it is changed
    check_vector_count(index, path, len(remap))
    gone = np.flatnonzero(remap < 0).astype(np.int64)
    if len(gone):
        index.remove_ids(faiss.IDSelectorBatch(gone))
    _renumber(index, kind, remap)
    for rows, vectors in added:
        index.add_with_ids(vectors, rows)
    return index


def _renumber(index: faiss.Index, kind: str, remap: np.ndarray) -> None:
    """Give every vector left in ``index`` its new id ``remap[old id]`` (the removed ones are gone already)."""
    if kind == "flat":
        idmap = faiss.downcast_index(index)
        ids = faiss.vector_to_array(idmap.id_map)
        faiss.copy_array_to_vector(remap[ids].astype(np.int64), idmap.id_map)
        if hasattr(idmap, "construct_rev_map"):
            idmap.construct_rev_map()
        return
    ivf = faiss.extract_index_ivf(index)
    lists = ivf.invlists
    for at in range(ivf.nlist):
        size = lists.list_size(at)
        if size:
            ids = faiss.rev_swig_ptr(lists.get_ids(at), size)  # the list's own ids, changed in place
            ids[:] = remap[ids]


def _probe(
    built: BuiltIndex,
    source: ShardedVectors,
    options: IndexOptions,
    progress: Progress | None,
    label: str,
    previous: dict[str, np.ndarray] | None = None,
    remap: np.ndarray | None = None,
    added: np.ndarray | None = None,
) -> bool:
    """Recall@k on held-out queries at the index's search parameter, raised along the build's ladder until it
    reaches the target (the build's own tuning, started where the build stopped). False: it never does. The
    queries and their exact neighbours are the ``previous`` probe's carried over (:func:`carry_probe`) when it
    can be, else drawn and scanned afresh."""
    n = len(source)
    k = min(options.recall_k, n - 1)
    carried = None
    if previous is not None and remap is not None and added is not None:
        carried = carry_probe(previous, remap, added, source, k)
    if carried is None:
        n_eval = min(options.eval_queries, max(1, n // 10))
        held = np.sort(np.random.default_rng(options.seed + 1).choice(n, n_eval, replace=False))
        truth, scores = exact_top_k_scored(source, source[held], min(2 * k, n - 1), query_rows=held)
        carried = {"rows": held, "truth": truth, "scores": scores}
    built.probe = carried
    held = carried["rows"]
    queries = source[held]
    truth = carried["truth"][:, :k]
    name = "nprobe" if built.kind in ("ivf", "ivf-pq") else "efSearch"
    now = int(built.index.params.get(name) or 1)
    ladder = [v for v in tuning_ladder(built.kind, built.params, k) if v >= now] or [now]
    for value in ladder:
        found = search_excluding_self(built.index, queries, held, k, **{name: value})
        recall = recall_at_k(found, truth)
        built.tuning.append({name: value, "recall": round(recall, 4)})
        if progress:
            progress(f"{label}: recall probe {name}={value} recall@{k}={recall:.3f}", len(built.tuning), len(ladder))
        built.recall, built.params[name] = recall, value
        built.index.params[name] = value
        if recall >= options.target_recall:
            built.reached_target = True
            return True
    return False


def carry_probe(
    previous: dict[str, np.ndarray], remap: np.ndarray, added: np.ndarray, source: ShardedVectors, k: int
) -> dict[str, np.ndarray] | None:
    """The recall probe of the index before an update, in the rows after it: the queries whose rows were kept,
    each with its exact nearest rows (up to 2k: those kept, merged with the ``added`` rows' — the only vectors
    scanned). A query that lost more of its neighbours than the k spare ones is scanned whole. None when fewer
    than half the queries are left or the probe holds fewer than k neighbours (a new one is drawn then)."""
    rows, truth, scores = previous["rows"], previous["truth"], previous["scores"]
    if truth.ndim != 2 or truth.shape[1] < k or len(rows) != len(truth) or len(rows) != len(scores):
        return None
    kept = remap[rows] >= 0
    if kept.sum() < max(1, len(rows) // 2):
        return None
    held = remap[rows[kept]]
    truth = np.where(truth[kept] >= 0, remap[np.maximum(truth[kept], 0)], -1)
    scores = np.where(truth >= 0, scores[kept], -np.inf).astype(np.float32)
    width = truth.shape[1]
    lost = (truth < 0).sum(axis=1)
    queries = source[held]
    if len(added):
        new_scores = queries @ source[added].T
        take = min(width, new_scores.shape[1])
        part = np.argpartition(-new_scores, take - 1, axis=1)[:, :take]
        scores = np.concatenate([scores, np.take_along_axis(new_scores, part, 1)], axis=1)
        truth = np.concatenate([truth, added[part]], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :width]
    truth, scores = np.take_along_axis(truth, order, 1), np.take_along_axis(scores, order, 1)
    again = np.flatnonzero(lost > width - k)
    if len(again):
        truth[again], scores[again] = exact_top_k_scored(source, queries[again], width, query_rows=held[again])
    return {"rows": held, "truth": truth, "scores": scores}


def update_fingerprints(
    old: IndexStore,
    stage: Path,
    features: FeatureStore | None,
    store: EmbeddingStore,
    remap: IdRemap,
    options: IndexOptions,
    progress: Progress | None = None,
) -> dict[str, Any] | None:
    """The old index's landmark fingerprints less the removed tracks' (track positions renumbered), with the added
    tracks' merged in by hash, saved into ``stage``; returns what meta.json records. None when they must be built
    whole (none were built, or the landmarks' source or settings changed); not built when they are off (or there
    are no features to make them of). Past the memory budget the kept landmarks are streamed to a file and
    merged with the new tracks' on disk (``fingerprint_library_on_disk``)."""
    if options.fingerprints == "off" or features is None:
        return {"built": False, "reason": "index.fingerprints is off"}
    settings = fingerprint_settings(features, store)
    budget = options.memory_budget_mb * 2**20
    on_disk = settings.estimated_bytes(store.duration_s()) > budget
    recorded = old.fingerprints
    if not recorded.get("built") or FingerprintSettings.from_dict(recorded.get("settings")) != settings:
        return None
    previous = old.fingerprint_index()
    if previous is None:
        return None
    changed = {"updated": {"added_tracks": remap.added, "removed_tracks": remap.removed}}
    if on_disk:
        block = block_landmarks(budget)
        kept_dir = stage / ".fingerprint-kept"
        kept = _kept_landmarks(previous, remap.tracks, kept_dir, block)
        rows = [store.tracks[int(p)] for p in remap.added_tracks]
        positions = remap.added_tracks.tolist()
        total = fingerprint_library_on_disk(features, rows, settings, stage, block, progress, positions, [kept])
        del kept
        shutil.rmtree(kept_dir)
        size = sum((stage / name).stat().st_size for name in FILES)
        return {"built": True, "landmarks": total, "bytes": size, "settings": settings.to_dict(), "on_disk": True,
                **changed}  # fmt: skip
    tracks = remap.tracks[np.asarray(previous.tracks, dtype=np.int64)]
    keep = tracks >= 0
    hashes, frames, tracks = np.asarray(previous.hashes)[keep], np.asarray(previous.frames)[keep], tracks[keep]
    if remap.added:
        rows = [store.tracks[int(p)] for p in remap.added_tracks]
        new = fingerprint_library(features, rows, settings, progress)
        hashes, tracks, frames = _merge_sorted(
            (hashes, tracks.astype(np.int32), frames),
            (new.hashes, remap.added_tracks[np.asarray(new.tracks)].astype(np.int32), new.frames),
        )
    merged = FingerprintIndex(hashes, tracks.astype(np.int32), frames.astype(np.int32), settings)
    paths = merged.save(stage)
    return {
        "built": True,
        "landmarks": len(merged),
        "bytes": sum(p.stat().st_size for p in paths),
        "settings": settings.to_dict(),
        **changed,
    }


def _kept_landmarks(previous: FingerprintIndex, track_remap: np.ndarray, folder: Path, chunk: int) -> Landmarks:
    """The landmarks of ``previous`` whose tracks are kept, their positions renumbered, streamed (``chunk`` at a
    time, still sorted by hash) to files in ``folder``; returned memory-mapped."""
    from numpy.lib.format import open_memmap

    folder.mkdir(parents=True, exist_ok=True)
    n = len(previous)
    spans = range(0, n, chunk)
    kept = sum(int(np.sum(track_remap[np.asarray(previous.tracks[a : a + chunk], np.int64)] >= 0)) for a in spans)
    names = [folder / name for name in FILES]
    outputs = [
        open_memmap(path, mode="w+", dtype=dtype, shape=(kept,))
        for path, dtype in zip(names, (np.uint32, np.int32, np.int32), strict=True)
    ]
    at = 0
    for a in spans:
        tracks = track_remap[np.asarray(previous.tracks[a : a + chunk], np.int64)]
        keep = tracks >= 0
        m = int(keep.sum())
        outputs[0][at : at + m] = np.asarray(previous.hashes[a : a + chunk])[keep]
        outputs[1][at : at + m] = tracks[keep]
        outputs[2][at : at + m] = np.asarray(previous.frames[a : a + chunk])[keep]
        at += m
    for out in outputs:
        out.flush()
    del outputs
    hashes, tracks, frames = (np.load(path, mmap_mode="r") for path in names)
    return hashes, tracks, frames


def _merge_sorted(
    a: tuple[np.ndarray, np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two (hashes, tracks, frames) sets, each sorted by hash, merged into one sorted by hash (``a``'s entries
    first among equal hashes): one pass, no sort of the whole."""
    at = np.searchsorted(a[0], b[0], side="right") + np.arange(len(b[0]))
    total = len(a[0]) + len(b[0])
    from_a = np.ones(total, dtype=bool)
    from_a[at] = False
    out = []
    for x, y in zip(a, b, strict=True):
        merged = np.empty(total, dtype=np.result_type(x.dtype, y.dtype))
        merged[from_a], merged[at] = x, y
        out.append(merged)
    return out[0], out[1], out[2]
