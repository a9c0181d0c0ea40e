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
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from embedtool.artefacts import ArtefactMeta, dir_size_bytes, fingerprint_of, write_meta
from embedtool.config import settings_dict
from embedtool.errors import ConfigError, InputError
from embedtool.indexing.options import KINDS, IndexOptions
from embedtool.indexing.search import VectorIndex, recall_at_k
from embedtool.indexing.store import FORMAT_VERSION, KIND, SEGMENT_INDEX, SEGMENT_TABLE, TRACK_INDEX, TRACK_TABLE
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

    def summary(self) -> dict[str, Any]:
        return {
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
        }


def choose_kind(n: int, dim: int, options: IndexOptions) -> str:
    """The index kind ``auto`` picks for ``n`` vectors of ``dim`` dimensions (see the module docstring)."""
    if options.kind != "auto":
        return options.kind
    if n * dim <= options.exact_max_cost or n < 2000:
        return "flat"
    if n * dim * 4 <= options.memory_budget_mb * 1024 * 1024:
        return "ivf"
    return "ivf-pq"


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
    vectors: np.ndarray,
    options: IndexOptions,
    progress: Progress | None = None,
    label: str = "index",
) -> BuiltIndex:
    """Build the index ``options`` asks for over L2-normalised ``vectors`` (ids = rows) and tune it."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise InputError(f"Nothing to index for {label}: got an array of shape {vectors.shape}")
    n, dim = vectors.shape
    kind = choose_kind(n, dim, options)
    rng = np.random.default_rng(options.seed)
    start = time.perf_counter()
    index, params = _new_index(kind, dim, n, options)

    # Held-out queries: real collection vectors kept out of the index while it is tuned, added afterwards.
    n_eval = 0 if kind == "flat" else min(options.eval_queries, max(1, n // 10))
    perm = rng.permutation(n)
    held, kept = np.sort(perm[:n_eval]), np.sort(perm[n_eval:])

    if kind in ("ivf", "ivf-pq"):
        nlist = params["nlist"]
        # k-means on a sample: 40 points per cell is enough for cells this coarse (FAISS asks for 39) and
        # keeps training time bounded; PQ codebooks need 40 per code.
        want = 40 * nlist if kind == "ivf" else max(40 * nlist, 40 * 2 ** params["pq_nbits"])
        sample = kept if len(kept) <= want else np.sort(rng.choice(kept, want, replace=False))
        if progress:
            progress(f"{label}: training {kind} ({nlist} cells)", 0, 1)
        index.train(vectors[sample])
    wrapped = VectorIndex(_with_ids(index, kind), kind, {})
    if kind == "ivf-pq":
        # Compressed codes rank candidates; the exact vectors (memory-mapped at query time) re-score them.
        params["refine"] = REFINE_FACTOR
        wrapped.params["refine"] = REFINE_FACTOR
        wrapped.refine_vectors = vectors
    _add(wrapped.index, vectors, kept, progress, label)

    tuning: list[dict[str, Any]] = []
    recall: float | None = None
    reached = True
    if n_eval:
        queries = vectors[held]
        k = min(options.recall_k, len(kept))
        exact = faiss.IndexFlatIP(dim)
        exact.add(vectors[kept])
        _, truth_pos = exact.search(queries, k)
        truth = kept[truth_pos]
        del exact
        name = "nprobe" if kind in ("ivf", "ivf-pq") else "efSearch"
        ladder = _ladder(kind, params, k)
        for value in ladder:
            _, found = wrapped.search(queries, k, **{name: value})
            r = recall_at_k(found, truth)
            tuning.append({name: value, "recall": round(r, 4)})
            if progress:
                progress(f"{label}: tuning {name}={value} recall@{k}={r:.3f}", len(tuning), len(ladder))
            recall, params[name] = r, value
            if r >= options.target_recall:
                break
        reached = recall is not None and recall >= options.target_recall
        wrapped.params[name] = params[name]
        _add(wrapped.index, vectors, held, None, label)
    build_s = time.perf_counter() - start
    latency = measure_latency(wrapped, vectors[perm[: min(200, n)]], options.recall_k)
    return BuiltIndex(wrapped, kind, params, n, dim, recall, options.recall_k, latency, build_s, reached, tuning)


def _with_ids(index: faiss.Index, kind: str) -> faiss.Index:
    # Flat and HNSW number vectors by insertion order; an IDMap makes ids explicit (rows added out of order).
    if kind in ("flat", "hnsw"):
        mapped = faiss.IndexIDMap2(index)
        mapped.own_fields = True
        index.this.disown()
        return mapped
    return index  # IVF indexes store ids natively


def _add(index: faiss.Index, vectors: np.ndarray, rows: np.ndarray, progress: Progress | None, label: str) -> None:
    batch = 50_000
    for i in range(0, len(rows), batch):
        part = rows[i : i + batch]
        index.add_with_ids(vectors[part], part.astype(np.int64))
        if progress:
            progress(f"{label}: adding vectors", min(i + batch, len(rows)), len(rows))


def _ladder(kind: str, params: dict[str, Any], k: int) -> list[int]:
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
    they go to IVF-PQ), the copied id tables, and the fingerprints unless they are off."""
    from embedtool.embedding.store import SEGMENT_TABLE as STORE_SEGMENTS
    from embedtool.embedding.store import TRACK_TABLE as STORE_TRACKS
    from embedtool.indexing.fingerprint import FingerprintSettings

    n = store.n_segments + len(store)
    raw = n * store.dim * 4
    compressed = options.kind == "ivf-pq" or (options.kind == "auto" and raw > options.memory_budget_mb * 2**20)
    tables = sum((store.directory / name).stat().st_size for name in (STORE_SEGMENTS, STORE_TRACKS))
    audio_s = sum(float(t["duration_s"]) for t in store.tracks)
    fingerprints = 0 if options.fingerprints == "off" else FingerprintSettings().estimated_bytes(audio_s)
    return (n * 72 if compressed else raw) + tables + fingerprints


def copy_id_tables(store: EmbeddingStore, stage: Path) -> None:
    """The embeddings' segment and track tables, copied beside the indexes (their rows are the index ids)."""
    from embedtool.embedding.store import SEGMENT_TABLE as STORE_SEGMENTS
    from embedtool.embedding.store import TRACK_TABLE as STORE_TRACKS

    shutil.copyfile(store.directory / STORE_SEGMENTS, stage / SEGMENT_TABLE)
    shutil.copyfile(store.directory / STORE_TRACKS, stage / TRACK_TABLE)


def write_index_files(
    stage: Path,
    segments: BuiltIndex,
    tracks: BuiltIndex,
    store: EmbeddingStore,
    options: IndexOptions,
    identify: dict[str, Any],
    fingerprints: dict[str, Any],
) -> tuple[dict[str, dict[str, Any]], ArtefactMeta]:
    """Write both indexes and meta.json (last) into the staged folder; returns the indexes' summaries and the meta.
    ``fingerprints`` describes the landmark index already saved there (``built: false`` when there is none)."""
    summaries = {}
    for name, built, filename in (("segments", segments, SEGMENT_INDEX), ("tracks", tracks, TRACK_INDEX)):
        faiss.write_index(built.index.index, str(stage / filename))
        summaries[name] = {
            **built.summary(),
            "search_params": dict(built.index.params),
            "bytes": (stage / filename).stat().st_size,
            "file": filename,
        }
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
