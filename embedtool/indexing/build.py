"""The index stage: FAISS indexes over segment and track embeddings, tuned to a recall target.

``kind="auto"`` picks the index from the collection's size and a memory budget:

- exact search (``flat``) while one query costs little: ``n * dim <= exact_max_cost`` (2·10^7 multiply-adds,
  i.e. ~150k vectors of 128 dimensions, ~20k of 1024: a few milliseconds per query on one core);
- beyond that, ``ivf`` (inverted lists over k-means cells, exact vectors inside) while the raw vectors fit the
  memory budget: it trains in seconds on a sample and answers in about a millisecond;
- ``ivf-pq`` (product-quantised codes of at most 64 bytes a vector, candidates re-scored exactly) when they do not fit.

``hnsw`` (graph) is available on request. For every approximate kind, the search parameter (``nprobe`` or
``efSearch``) is tuned on held-out queries — vectors of the collection left out of the index while it is
measured, then added — until recall@k against exact search reaches the target. The meta records kind,
parameters, bytes, measured recall and latency.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from embedtool.artefacts import ArtefactMeta, dir_size_bytes, fingerprint_of, write_meta
from embedtool.config import settings_dict
from embedtool.embedding.vectors import ShardedVectors
from embedtool.engine import Engine, TaskFailure
from embedtool.errors import ConfigError, EmbedtoolError, InputError
from embedtool.indexing.options import KINDS, IndexOptions
from embedtool.indexing.search import VectorIndex, faiss_stdout_silenced, recall_at_k
from embedtool.indexing.store import (
    FORMAT_VERSION,
    KIND,
    SEGMENT_INDEX,
    TRACK_INDEX,
    TRACK_TABLE,
    IdTables,
    save_id_arrays,
)
from embedtool.progress import Progress
from embedtool.threads import single_threaded

if TYPE_CHECKING:
    from embedtool.embedding.store import EmbeddingStore

NPROBE_LADDER = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024, 2048, 4096)
REFINE_FACTOR = 16  # ivf-pq: candidates fetched per wanted neighbour before exact re-scoring
EF_LADDER = (16, 24, 32, 40, 48, 64, 80, 96, 128, 192, 256, 384, 512, 768, 1024, 2048)


@dataclass
class BuiltIndex:
    """A built, tuned index and the facts its meta records."""

    index: VectorIndex
    kind: str
    params: dict[str, Any]
    n: int
    dim: int
    recall: float | None  # recall@k on held-out queries (None for exact search: 1 by construction)
    recall_k: int
    latency_ms: float  # median single-query latency at the tuned parameters
    build_s: float
    reached_target: bool = True
    tuning: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""  # what was done instead of what was asked (an index kind the collection is too small for)
    trained_vectors: int | None = None  # ivf kinds: the collection's size when the cells were trained
    # the held-out queries' rows and their exact 2k nearest rows and scores: an update re-measures recall against
    # them, scanning only the vectors it adds (indexing.update)
    probe: dict[str, np.ndarray] | None = None

    def summary(self) -> dict[str, Any]:
        return {
            **({"note": self.note} if self.note else {}),
            "kind": self.kind,
            "params": self.params,
            "vectors": self.n,
            "dim": self.dim,
            "recall": 1.0 if self.recall is None else round(self.recall, 4),
            "recall_k": self.recall_k,
            "recall_measured": self.recall is not None,
            "reached_target": self.reached_target,
            "latency_ms": round(self.latency_ms, 4),
            "build_s": round(self.build_s, 3),
            "tuning": self.tuning,
            **({"trained_vectors": self.trained_vectors} if self.trained_vectors else {}),
        }


def choose_kind(n: int, dim: int, options: IndexOptions) -> str:
    """The index kind ``auto`` picks for ``n`` vectors of ``dim`` dimensions (see the module docstring)."""
    if options.kind != "auto":
        return options.kind
    if n < 2000:
        return "flat"
    if options.on_disk == "on":  # an on-disk index was asked for: only ivf-pq is one
        return "ivf-pq"
    if n * dim <= options.exact_max_cost:
        return "flat"
    if n * dim * 4 <= options.memory_budget_mb * 1024 * 1024:
        return "ivf"
    return "ivf-pq"


def minimum_vectors(kind: str, n: int, options: IndexOptions) -> int:
    """The fewest vectors an index of ``kind`` can be trained on: an IVF's k-means needs a vector per cell, and
    product quantisation a vector per code of its (at least 4-bit, 16-code) codebooks. 0 for flat and hnsw."""
    if kind not in ("ivf", "ivf-pq"):
        return 0
    nlist = options.ivf_nlist or default_nlist(n)
    return nlist if kind == "ivf" else max(nlist, 2**4)


def default_nlist(n: int) -> int:
    # ~sqrt(n) cells: k-means stays cheap and each probed list holds ~sqrt(n) vectors.
    return int(min(max(16, round(math.sqrt(n))), 65536, max(1, n // 39)))


def default_pq_m(dim: int) -> int:
    """Largest divisor of ``dim`` giving sub-vectors of at least 4 dimensions, capped at 64 bytes a code."""
    best = 1
    for m in range(1, min(64, dim) + 1):
        if dim % m == 0 and dim // m >= 4:
            best = m
    return best


def _new_index(kind: str, dim: int, n: int, options: IndexOptions) -> tuple[faiss.Index, dict[str, Any]]:
    ip = faiss.METRIC_INNER_PRODUCT
    if kind == "flat":
        return faiss.IndexFlatIP(dim), {}
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, options.hnsw_m, ip)
        index.hnsw.efConstruction = options.hnsw_ef_construction
        return index, {"M": options.hnsw_m, "efConstruction": options.hnsw_ef_construction}
    nlist = options.ivf_nlist or default_nlist(n)
    quantizer = faiss.IndexFlatIP(dim)
    if kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, ip)
        params: dict[str, Any] = {"nlist": nlist}
    elif kind == "ivf-pq":
        m = options.pq_m or default_pq_m(dim)
        if dim % m:
            raise ConfigError(f"index.pq_m ({m}) must divide the embedding dimension ({dim})")
        nbits = 8 if n >= 256 * 39 else max(4, int(math.log2(max(16, n // 39))))
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, m, nbits, ip)
        params = {"nlist": nlist, "pq_m": m, "pq_nbits": nbits}
    else:
        raise ConfigError(f"Unknown index kind {kind!r}; valid: auto, {', '.join(KINDS)}")
    index.own_fields = True
    quantizer.this.disown()  # the IVF index owns (and frees) its quantizer
    index.cp.niter = 10  # 10 k-means iterations: cell quality saturates quickly, training time does not
    return index, params


def build_index(
    vectors: np.ndarray | ShardedVectors,
    options: IndexOptions,
    progress: Progress | None = None,
    label: str = "index",
    directory: Path | None = None,
    stem: str = "segments",
    engine: Engine | None = None,
) -> BuiltIndex:
    """Build the index ``options`` asks for over L2-normalised ``vectors`` (ids = rows) and tune it.

    ``vectors`` may be sharded (memory-mapped): they are read block by block and never concatenated. An on-disk
    ivf-pq index (``index.on_disk``) keeps its inverted lists in ``directory/<stem>.ivfdata``; its blocks are
    filled on ``engine``'s workers when one is given."""
    source = ShardedVectors.of(vectors)
    n, dim = source.shape
    if n == 0 or dim == 0:
        raise InputError(f"Nothing to index for {label}: got {n} vectors of {dim} dimensions")
    kind = choose_kind(n, dim, options)
    note = ""
    if n < minimum_vectors(kind, n, options):
        # Too few vectors to train the asked-for kind (FAISS would stop on "nx >= k"): exact search is both
        # possible and the best answer at this size; said in the report.
        note = (
            f"{kind} needs at least {minimum_vectors(kind, n, options)} vectors to train, the {label} has {n}: "
            "built as flat (exact search) instead"
        )
        kind = "flat"
    rng = np.random.default_rng(options.seed)
    start = time.perf_counter()
    index, params = _new_index(kind, dim, n, options)
    if kind in ("ivf", "ivf-pq"):
        _train(index, kind, params, source, options, rng, progress, label)
    if kind == "ivf-pq" and directory is not None and use_on_disk(n, params, options):
        block = fill_block_vectors(options, dim)
        index = _fill_on_disk(index, source, Path(directory), stem, block, progress, label, engine)
        params["on_disk"] = True
        wrapped = VectorIndex(index, kind, {"on_disk": True})
    else:
        wrapped = VectorIndex(_with_ids(index, kind), kind, {})
        _add(wrapped.index, source, progress, label)
    if kind == "ivf-pq":
        # Compressed codes rank candidates; the exact vectors (memory-mapped at query time) re-score them.
        params["refine"] = REFINE_FACTOR
        wrapped.params["refine"] = REFINE_FACTOR
        wrapped.refine_vectors = source

    tuning: list[dict[str, Any]] = []
    recall: float | None = None
    reached = True
    # Held-out queries: collection vectors searched for with their own row left out of both the answer and the
    # exact ground truth (a sharded scan), so an index is tuned without being rebuilt.
    n_eval = 0 if kind == "flat" else min(options.eval_queries, max(1, n // 10))
    probe = None
    if n_eval:
        held = np.sort(rng.choice(n, n_eval, replace=False))
        queries = source[held]
        k = min(options.recall_k, n - 1)
        truth, scores = exact_top_k_scored(source, queries, min(2 * k, n - 1), query_rows=held)
        probe = {"rows": held, "truth": truth, "scores": scores}
        truth = truth[:, :k]
        name = "nprobe" if kind in ("ivf", "ivf-pq") else "efSearch"
        ladder = tuning_ladder(kind, params, k)
        for value in ladder:
            found = search_excluding_self(wrapped, queries, held, k, **{name: value})
            r = recall_at_k(found, truth)
            tuning.append({name: value, "recall": round(r, 4)})
            if progress:
                progress(f"{label}: tuning {name}={value} recall@{k}={r:.3f}", len(tuning), len(ladder))
            recall, params[name] = r, value
            if r >= options.target_recall:
                break
        reached = recall is not None and recall >= options.target_recall
        wrapped.params[name] = params[name]
    build_s = time.perf_counter() - start
    latency = measure_latency(wrapped, source[rng.choice(n, min(200, n), replace=False)], options.recall_k)
    trained = n if kind in ("ivf", "ivf-pq") else None
    return BuiltIndex(
        wrapped, kind, params, n, dim, recall, options.recall_k, latency, build_s, reached, tuning, note, trained, probe
    )


def fill_block_vectors(options: IndexOptions, dim: int) -> int:
    """Vectors in one block of an on-disk index's filling: a block's float32 vectors are read into memory whole,
    so at most a quarter of the memory budget (and ``index.block_vectors``)."""
    return min(options.block_vectors, max(1000, int(options.memory_budget_mb * 2**20 / 4 // (4 * dim))))


def use_on_disk(n: int, params: dict[str, Any], options: IndexOptions) -> bool:
    """Whether an ivf-pq index keeps its inverted lists on disk: when asked, or (auto) when its codes and ids
    would take more than a quarter of the memory budget."""
    if options.on_disk != "auto":
        return options.on_disk == "on"
    code_bytes = params["pq_m"] * params["pq_nbits"] // 8 + 8
    return n * code_bytes > options.memory_budget_mb * 2**20 / 4


def _train(
    index: faiss.Index,
    kind: str,
    params: dict[str, Any],
    source: ShardedVectors,
    options: IndexOptions,
    rng: np.random.Generator,
    progress: Progress | None,
    label: str,
) -> None:
    """k-means (and PQ codebooks) on a sample of the collection, no larger than a quarter of the memory budget."""
    nlist = params["nlist"]
    # 40 points per cell is enough for cells this coarse (FAISS asks for 39) and keeps training time bounded;
    # PQ codebooks need 40 per code.
    want = 40 * nlist if kind == "ivf" else max(40 * nlist, 40 * 2 ** params["pq_nbits"])
    cap = max(nlist, int(options.memory_budget_mb * 2**20 / 4 // (4 * source.dim)))
    want = min(want, cap, len(source))
    sample = np.sort(rng.choice(len(source), want, replace=False)) if want < len(source) else np.arange(len(source))
    if progress:
        progress(f"{label}: training {kind} ({nlist} cells, {len(sample)} sample vectors)", 0, 1)
    index.train(source[sample])


def _fill_on_disk(
    trained: faiss.Index,
    source: ShardedVectors,
    directory: Path,
    stem: str,
    block_vectors: int,
    progress: Progress | None,
    label: str,
    engine: Engine | None = None,
) -> faiss.Index:
    """Fill a trained IVF index block by block, each block into its own file, then merge their inverted lists
    into ``directory/<stem>.ivfdata`` (faiss ``merge_ondisk``). Each block is an independent task: on ``engine``'s
    workers (which read the shard files themselves) when one is given, else here, one after another. Memory is
    bounded by one block's vectors and codes."""
    from faiss.contrib.ondisk import merge_ondisk

    blocks_dir = directory / f".{stem}-blocks"
    blocks_dir.mkdir(parents=True, exist_ok=True)
    n = len(source)
    tasks = [(i, first, min(n, first + block_vectors)) for i, first in enumerate(range(0, n, block_vectors))]
    trained_bytes = faiss.serialize_index(trained)
    job = {"trained": trained_bytes, "dir": str(blocks_dir), "files": source.files(), "dim": source.dim}
    files: dict[int, str] = {}
    done = [0]

    def finished(at: int, outcome: Any) -> None:
        if isinstance(outcome, TaskFailure):
            raise EmbedtoolError(f"{label}: filling block {at} of {len(tasks)} failed: {outcome.describe()}")
        files[at] = str(outcome)
        done[0] += tasks[at][2] - tasks[at][1]
        if progress:
            progress(f"{label}: filling on-disk blocks", done[0], n)

    if engine is None or engine.in_process or job["files"] is None:
        for at, task in enumerate(tasks):
            finished(at, _fill_task({**job, "source": source}, task))
    else:
        engine.check_paths(readable=sorted({Path(f).parent for f in job["files"]}), writable=[blocks_dir])
        engine.run(_fill_task, tasks, finished, shared=job, threads=1)
    merged = faiss.deserialize_index(job["trained"])
    with faiss_stdout_silenced():
        merge_ondisk(merged, [files[i] for i in range(len(tasks))], str(directory / f"{stem}.ivfdata"))
    shutil.rmtree(blocks_dir)
    return merged


def _fill_task(job: dict[str, Any], task: tuple[int, int, int]) -> Path:
    """One block: rows ``[first, stop)`` of the collection added to a copy of the trained index, written to a file
    of the blocks folder. Runs on a worker: it opens the shard files itself."""
    i, first, stop = task
    source = job.get("source") or ShardedVectors.from_files(job["files"], job["dim"])
    rows = np.arange(first, stop, dtype=np.int64)
    return fill_block(job["trained"], source.span(first, stop), rows, Path(job["dir"]) / f"block-{i:05d}.faiss")


def fill_block(trained_bytes: np.ndarray, vectors: np.ndarray, rows: np.ndarray, path: Path) -> Path:
    """Add ``vectors`` (ids ``rows``) to a copy of the trained, empty index and write it to ``path``."""
    index = faiss.deserialize_index(trained_bytes)
    index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(rows, dtype=np.int64))
    faiss.write_index(index, str(path))
    return path


def exact_top_k(
    vectors: ShardedVectors, queries: np.ndarray, k: int, query_rows: np.ndarray | None = None, block_rows: int = 65536
) -> np.ndarray:
    """Rows of the ``k`` largest inner products per query, by a scan over the shards (the ground truth that
    approximate indexes are tuned against). ``query_rows``: each query's own row, left out of its answer."""
    return exact_top_k_scored(vectors, queries, k, query_rows, block_rows)[0]


def exact_top_k_scored(
    vectors: ShardedVectors, queries: np.ndarray, k: int, query_rows: np.ndarray | None = None, block_rows: int = 65536
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`exact_top_k`'s rows and their inner products (-inf where fewer than ``k`` rows exist)."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    nq = len(queries)
    best_scores = np.full((nq, k), -np.inf, dtype=np.float32)
    best_rows = np.full((nq, k), -1, dtype=np.int64)
    for first, block in vectors.blocks(block_rows):
        scores = queries @ block.T
        if query_rows is not None:
            own = (query_rows >= first) & (query_rows < first + len(block))
            scores[np.flatnonzero(own), query_rows[own] - first] = -np.inf
        take = min(k, scores.shape[1])
        part = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, part, 1)], axis=1)
        merged_rows = np.concatenate([best_rows, part + first], axis=1)
        order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :k]
        best_scores = np.take_along_axis(merged_scores, order, 1)
        best_rows = np.take_along_axis(merged_rows, order, 1)
    return best_rows, best_scores


def search_excluding_self(
    index: VectorIndex, queries: np.ndarray, own_rows: np.ndarray, k: int, **params: Any
) -> np.ndarray:
    """Top-``k`` rows per query from ``index`` with each query's own row removed from its answer."""
    _, found = index.search(queries, k + 1, **params)
    out = np.full((len(queries), k), -1, dtype=np.int64)
    for i, (row, own) in enumerate(zip(found, own_rows, strict=True)):
        kept = row[row != own][:k]
        out[i, : len(kept)] = kept
    return out


def _with_ids(index: faiss.Index, kind: str) -> faiss.Index:
    # Flat and HNSW number vectors by insertion order; an IDMap makes ids explicit, like IVF's native ids.
    if kind in ("flat", "hnsw"):
        mapped = faiss.IndexIDMap2(index)
        mapped.own_fields = True
        index.this.disown()
        return mapped
    return index  # IVF indexes store ids natively


def _add(index: faiss.Index, source: ShardedVectors, progress: Progress | None, label: str) -> None:
    for first, block in source.blocks(50_000):
        index.add_with_ids(block, np.arange(first, first + len(block), dtype=np.int64))
        if progress:
            progress(f"{label}: adding vectors", first + len(block), len(source))


def tuning_ladder(kind: str, params: dict[str, Any], k: int) -> list[int]:
    if kind in ("ivf", "ivf-pq"):
        nlist = params["nlist"]
        return [p for p in NPROBE_LADDER if p < nlist] + [nlist]
    return [e for e in EF_LADDER if e >= k] or [max(k, 16)]


def measure_latency(index: VectorIndex, queries: np.ndarray, k: int) -> float:
    """Median wall time in milliseconds of one single-vector query at the tuned parameters, one thread."""
    times = []
    with single_threaded():
        for q in queries[: min(len(queries), 200)]:
            t0 = time.perf_counter()
            index.search(q[None, :], k)
            times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000) if times else 0.0


# --- the artefact ----------------------------------------------------------------------------------------------


def index_bytes(store: EmbeddingStore, options: IndexOptions) -> int:
    """About how much ``embedtool index`` writes: both indexes (raw float32 vectors, or ~72 bytes a vector when
    they go to IVF-PQ), the id tables (20 bytes a segment, the copied track table), and the fingerprints unless
    they are off."""
    from embedtool.embedding.store import TRACK_TABLE as STORE_TRACKS
    from embedtool.indexing.fingerprint import FingerprintSettings

    n = store.n_segments + len(store)
    raw = n * store.dim * 4
    compressed = options.kind == "ivf-pq" or (options.kind == "auto" and raw > options.memory_budget_mb * 2**20)
    tables = (store.directory / STORE_TRACKS).stat().st_size + 20 * store.n_segments
    fingerprints = 0 if options.fingerprints == "off" else FingerprintSettings().estimated_bytes(store.duration_s())
    return (n * 72 if compressed else raw) + tables + fingerprints


def write_id_tables(stage: Path, store: EmbeddingStore) -> IdTables:
    """The embeddings' track table (copied) and per-segment id arrays, beside the indexes (their rows are the
    index ids); returns them as the searcher reads them."""
    from embedtool.embedding.store import TRACK_TABLE as STORE_TRACKS

    shutil.copyfile(store.directory / STORE_TRACKS, stage / TRACK_TABLE)
    track_rows = np.repeat(np.arange(len(store), dtype=np.int32), np.asarray(store.tracks.column("n_segments")))
    save_id_arrays(stage, track_rows, store.segment_starts, store.segment_ends)
    return IdTables.from_arrays(track_rows, np.stack([store.segment_starts, store.segment_ends], axis=1), store.tracks)


@dataclass(frozen=True)
class IndexSummary:
    """What a report and meta.json say of one built index: its kind and parameters, size, recall and latency."""

    kind: str
    params: dict[str, Any]
    vectors: int
    dim: int
    recall: float  # 1.0 for exact search
    recall_k: int
    recall_measured: bool
    reached_target: bool
    latency_ms: float
    build_s: float
    search_params: dict[str, Any]
    bytes: int
    file: str
    tuning: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""  # what was done instead of what was asked
    trained_vectors: int | None = None

    @classmethod
    def from_dict(cls, summary: Mapping[str, Any]) -> IndexSummary:
        return cls(**{f.name: summary[f.name] for f in fields(cls) if f.name in summary})

    def to_dict(self) -> dict[str, Any]:
        """As meta.json records it (``BuiltIndex.summary`` and the file's facts)."""
        return {
            **({"note": self.note} if self.note else {}),
            "kind": self.kind,
            "params": self.params,
            "vectors": self.vectors,
            "dim": self.dim,
            "recall": self.recall,
            "recall_k": self.recall_k,
            "recall_measured": self.recall_measured,
            "reached_target": self.reached_target,
            "latency_ms": self.latency_ms,
            "build_s": self.build_s,
            "tuning": self.tuning,
            **({"trained_vectors": self.trained_vectors} if self.trained_vectors else {}),
            "search_params": self.search_params,
            "bytes": self.bytes,
            "file": self.file,
        }


def probe_file(name: str) -> str:
    """The file of an index's recall probe (``BuiltIndex.probe``) in the index folder (``name``: segments, tracks)."""
    return f"{name}-probe.npz"


def write_index_files(
    stage: Path,
    segments: BuiltIndex,
    tracks: BuiltIndex,
    store: EmbeddingStore,
    options: IndexOptions,
    identify: dict[str, Any],
    fingerprints: dict[str, Any],
    change: dict[str, Any] | None = None,
) -> tuple[dict[str, dict[str, Any]], ArtefactMeta]:
    """Write both indexes and meta.json (last) into the staged folder; returns the indexes' summaries and the meta.
    ``fingerprints`` describes the landmark index already saved there (``built: false`` when there is none);
    ``change``: how it was made (updated for added and removed tracks, or built whole and why)."""
    summaries = {}
    for name, built, filename in (("segments", segments, SEGMENT_INDEX), ("tracks", tracks, TRACK_INDEX)):
        faiss.write_index(built.index.index, str(stage / filename))
        summaries[name] = {
            **built.summary(),
            "search_params": dict(built.index.params),
            "bytes": (stage / filename).stat().st_size,
            "file": filename,
        }
        if built.probe is not None:
            np.savez(stage / probe_file(name), **built.probe)
    meta = write_meta(
        stage,
        KIND,
        FORMAT_VERSION,
        settings_dict(options),
        inputs={
            "embeddings": store.fingerprint,
            "model": store.model_fingerprint,
            "features": store.features_fingerprint,
        },  # fmt: skip
        extra={
            "segments": summaries["segments"],
            "tracks": summaries["tracks"],
            "identify": identify,
            "fingerprints": fingerprints,
            **({"change": change} if change else {}),
            "hop_s": store.hop_s,
            "segment_seconds": store.segment_seconds,
            "feature_settings": store.feature_settings,
            "dim": store.dim,
            "metric": "inner product on L2-normalised vectors (cosine)",
            "bytes": dir_size_bytes(stage),
        },
        fingerprint=fingerprint_of(store.fingerprint, settings_dict(options), summaries["segments"]["params"]),
    )
    return summaries, meta
