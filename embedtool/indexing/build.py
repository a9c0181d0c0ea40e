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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import faiss
import numpy as np

from embedtool.artefacts import dir_size_bytes, fingerprint_of, staged_dir, write_meta
from embedtool.config import settings_dict
from embedtool.errors import ConfigError, EmbedtoolError, InputError, MissingArtefactError
from embedtool.indexing.search import KINDS, VectorIndex, recall_at_k

if TYPE_CHECKING:
    from embedtool.embedding.export import EmbedOptions
    from embedtool.workspace import Workspace

Progress = Callable[[str, int, int], None]

KIND = "index"
FORMAT_VERSION = 1
SEGMENT_INDEX = "segments.faiss"
TRACK_INDEX = "tracks.faiss"
SEGMENT_TABLE = "segments.parquet"
TRACK_TABLE = "tracks.parquet"

NPROBE_LADDER = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024, 2048, 4096)
REFINE_FACTOR = 16  # ivf-pq: candidates fetched per wanted neighbour before exact re-scoring
EF_LADDER = (16, 24, 32, 40, 48, 64, 80, 96, 128, 192, 256, 384, 512, 768, 1024, 2048)


@dataclass
class IndexOptions:
    """Options of `embedtool index` (section ``index`` in embedtool.yaml)."""

    kind: str = "auto"  # auto | flat | hnsw | ivf | ivf-pq
    target_recall: float = 0.95  # recall@recall_k against exact search that tuning must reach
    recall_k: int = 10
    exact_max_cost: int = 20_000_000  # auto: exact search while n * dim is at most this
    memory_budget_mb: float = 2048.0  # auto: raw float32 vectors above this go to ivf-pq
    eval_queries: int = 200  # held-out queries for tuning and measuring recall
    hnsw_m: int = 32
    hnsw_ef_construction: int = 64
    ivf_nlist: int = 0  # 0: about sqrt(n) cells
    pq_m: int = 0  # 0: chosen from dim (sub-vectors of 8+ dims, at most 64 bytes a vector)
    seed: int = 0
    # identify-mode threshold on the confidence (query.calibrate): calibrated from library excerpts unless fixed
    identify_threshold: float | None = None
    calibration_tracks: int = 200  # library tracks whose excerpts calibrate the threshold
    calibration_lengths_s: tuple[float, ...] = (1.0, 3.0, 10.0)  # excerpt lengths, one threshold each
    calibration_snr_db: float = 15.0  # noise added (in the Mel domain) to calibration excerpts

    @classmethod
    def from_preset(cls, name: str) -> IndexOptions:
        if name in ("default", "thesis", "tile2vec"):
            return cls()
        raise ConfigError(f"Unknown index preset {name!r}; valid: default, thesis, tile2vec")

    def validate(self) -> None:
        if self.kind != "auto" and self.kind not in KINDS:
            raise ConfigError(f"index.kind must be one of auto, {', '.join(KINDS)}; not {self.kind!r}")
        if not 0 < self.target_recall <= 1:
            raise ConfigError(f"index.target_recall must be in (0, 1], not {self.target_recall}")
        if self.recall_k < 1 or self.eval_queries < 1:
            raise ConfigError("index.recall_k and index.eval_queries must be positive")
        if self.memory_budget_mb <= 0 or self.exact_max_cost < 0:
            raise ConfigError("index.memory_budget_mb must be positive and index.exact_max_cost non-negative")
        if self.hnsw_m < 4 or self.hnsw_ef_construction < 8:
            raise ConfigError("index.hnsw_m must be >= 4 and index.hnsw_ef_construction >= 8")
        if self.ivf_nlist < 0 or self.pq_m < 0:
            raise ConfigError("index.ivf_nlist and index.pq_m must be non-negative (0 = automatic)")
        lengths = self.calibration_lengths_s
        if not lengths or min(lengths) <= 0 or self.calibration_tracks < 1:
            raise ConfigError("index.calibration_lengths_s and index.calibration_tracks must be positive")


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
    from embedtool.query.calibrate import single_threaded

    times = []
    with single_threaded():
        for q in queries[: min(len(queries), 200)]:
            t0 = time.perf_counter()
            index.search(q[None, :], k)
            times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1000) if times else 0.0


# --- the stage -------------------------------------------------------------------------------------------------


@dataclass
class IndexReport:
    """What `embedtool index` did: the export it ran first (if any) and both indexes' facts."""

    export: dict[str, Any] | None
    segments: dict[str, Any]
    tracks: dict[str, Any]
    identify: dict[str, Any]
    bytes: int
    seconds: float
    fingerprint: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_index(
    workspace: Workspace,
    options: IndexOptions | None = None,
    embed_options: EmbedOptions | None = None,
    progress: Progress | None = None,
) -> IndexReport:
    """Export embeddings when missing or stale, build and tune both indexes, calibrate, write atomically."""
    from embedtool.embedding.export import EmbedOptions as EmbedOptionsDefault
    from embedtool.embedding.export import export_embeddings, load_encoder
    from embedtool.embedding.store import SEGMENT_TABLE as STORE_SEGMENTS
    from embedtool.embedding.store import TRACK_TABLE as STORE_TRACKS
    from embedtool.embedding.store import EmbeddingStore
    from embedtool.features.store import FeatureStore
    from embedtool.model.device import resolve_device_name
    from embedtool.query.calibrate import STATISTIC, calibrate_identify
    from embedtool.query.neighbours import IdTables, Searcher

    options = options or IndexOptions()
    options.validate()
    started = time.perf_counter()
    if not (workspace.model / "meta.json").is_file():
        raise MissingArtefactError(f"No model at {workspace.model} (make it with `embedtool train`).")
    encoder = load_encoder(workspace.model, resolve_device_name(embed_options.device if embed_options else "auto"))
    features = FeatureStore(workspace.features)
    export: dict[str, Any] | None = None
    hop = (embed_options or EmbedOptionsDefault()).hop_seconds
    stale = _embeddings_staleness(workspace, encoder.fingerprint, features.fingerprint, hop)
    if stale:
        report = export_embeddings(workspace.features, encoder, workspace.embeddings, embed_options, progress)
        export = {**report.to_dict(), "why": stale}
    store = EmbeddingStore(workspace.embeddings)

    segments = build_index(store.segment_vectors(), options, progress, "segment index")
    tracks = build_index(store.track_vectors(), options, progress, "track index")
    hop_s = float(store.meta.config["hop_s"])

    with staged_dir(workspace.index) as stage:
        shutil.copyfile(store.directory / STORE_SEGMENTS, stage / SEGMENT_TABLE)
        shutil.copyfile(store.directory / STORE_TRACKS, stage / TRACK_TABLE)
        if options.identify_threshold is not None:
            identify: dict[str, Any] = {"statistic": STATISTIC, "threshold": options.identify_threshold,
                                        "calibrated": False, "reason": "fixed by index.identify_threshold"}  # fmt: skip
        else:
            tables = IdTables.read(stage / SEGMENT_TABLE, stage / TRACK_TABLE)
            searcher = Searcher(encoder, segments.index, tables, hop_s, None)
            identify = calibrate_identify(
                searcher, features, options.calibration_tracks, options.calibration_lengths_s,
                options.calibration_snr_db, options.seed, progress,
            )  # fmt: skip
        summaries = {}
        for name, built, filename in (("segments", segments, SEGMENT_INDEX), ("tracks", tracks, TRACK_INDEX)):
            faiss.write_index(built.index.index, str(stage / filename))
            summaries[name] = {
                **built.summary(),
                "search_params": dict(built.index.params),
                "bytes": (stage / filename).stat().st_size,
                "file": filename,
            }
        total = dir_size_bytes(stage)
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
                "hop_s": hop_s,
                "segment_seconds": float(store.meta.config["segment_seconds"]),
                "feature_settings": store.meta.config["features"],
                "dim": store.dim,
                "metric": "inner product on L2-normalised vectors (cosine)",
                "bytes": total,
            },
            fingerprint=fingerprint_of(store.fingerprint, settings_dict(options), summaries["segments"]["params"]),
        )
    return IndexReport(
        export=export,
        segments=summaries["segments"],
        tracks=summaries["tracks"],
        identify=identify,
        bytes=total,
        seconds=time.perf_counter() - started,
        fingerprint=meta.fingerprint,
    )


def _embeddings_staleness(workspace: Workspace, model_fp: str, features_fp: str, hop_seconds: float) -> str | None:
    """Why the embeddings must be (re-)exported, or None when they are current."""
    from embedtool.embedding.store import EmbeddingStore

    try:
        store = EmbeddingStore(workspace.embeddings)
    except EmbedtoolError:
        return "no embeddings yet"
    if store.model_fingerprint != model_fp:
        return f"the model changed ({store.model_fingerprint} -> {model_fp})"
    if store.features_fingerprint != features_fp:
        return "the features changed (tracks added, removed or re-extracted)"
    if float(store.meta.config.get("hop_seconds", -1)) != float(hop_seconds):
        return f"the segment hop changed ({store.meta.config.get('hop_seconds')} -> {hop_seconds} s)"
    if not store.descriptors_current:
        return "the embeddings' track descriptors are missing or outdated"
    return None
