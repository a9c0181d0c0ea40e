"""k-Means clusters of an embedding space: assignments, centroids, exemplars, label agreement and a map.

``k="auto"`` tries every k in ``k_min..k_max`` and keeps the one with the highest **silhouette** (mean over
points of (b - a) / max(a, b), a = mean distance to the own cluster, b = to the nearest other cluster; cosine
distance, which equals Euclidean ranking on the unit-norm embeddings). Silhouette needs no labels, rewards
compact and well separated clusters, and is defined for k >= 2, so it cannot choose the trivial k = 1. For
large sets it is estimated on a seeded sample of ``max_points`` points.

k-Means itself is FAISS's (Lloyd iterations, ``n_init`` seeded restarts, best inertia kept): fast on millions
of segment vectors and reproducible for a given seed.

The artefact's files are ``analysis.cluster_store``'s.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedtool.analysis.cluster_store import FORMAT_VERSION, KIND, write_cluster_files
from embedtool.analysis.options import ClusterOptions
from embedtool.errors import InputError, MissingArtefactError
from embedtool.model.teachers import teacher_of
from embedtool.progress import Progress

if TYPE_CHECKING:
    from embedtool.embedding.store import EmbeddingStore


# --- algorithms on arrays -----------------------------------------------------------------------------------


@dataclass
class KMeansResult:
    k: int
    assignments: np.ndarray  # int64 (n,)
    centroids: np.ndarray  # float32 (k, dim)
    distances: np.ndarray  # float32 (n,) Euclidean distance to the own centroid
    inertia: float


def kmeans(vectors: np.ndarray, k: int, seed: int = 0, n_init: int = 5, iterations: int = 50) -> KMeansResult:
    """Seeded k-Means (FAISS). Clusters are renumbered by decreasing size (ties by first member) for stable ids."""
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = x.shape
    if not 1 <= k <= n:
        raise InputError(f"cannot make {k} clusters from {n} items")
    km = faiss.Kmeans(
        dim,
        k,
        niter=iterations,
        nredo=n_init,
        seed=seed,
        verbose=False,
        min_points_per_centroid=1,  # small libraries are legitimate: do not warn or refuse
        max_points_per_centroid=100_000,
    )
    km.train(x)
    sq_dist, assign = km.index.search(x, 1)
    assign = assign.ravel().astype(np.int64)
    centroids = km.centroids.astype(np.float32)
    # Renumber: largest cluster first, so "cluster 0" means the same thing across runs with equal results.
    sizes = np.bincount(assign, minlength=k)
    first = np.array([np.flatnonzero(assign == c)[0] if sizes[c] else n for c in range(k)])
    order = sorted(range(k), key=lambda c: (-sizes[c], first[c]))
    remap = np.empty(k, dtype=np.int64)
    remap[order] = np.arange(k)
    dist = np.sqrt(np.maximum(sq_dist.ravel(), 0)).astype(np.float32)
    return KMeansResult(k, remap[assign], centroids[order], dist, float(np.sum(sq_dist)))


def silhouette(vectors: np.ndarray, assignments: np.ndarray, max_points: int = 5000, seed: int = 0) -> float:
    """Mean silhouette (cosine distance), on a seeded sample when there are more than ``max_points`` items."""
    from sklearn.metrics import silhouette_score

    n = len(assignments)
    n_clusters = len(np.unique(assignments))
    if n_clusters < 2 or n_clusters >= n:
        return float("nan")
    sample = min(n, max_points) if n > max_points else None
    return float(silhouette_score(vectors, assignments, metric="cosine", sample_size=sample, random_state=seed))


def choose_k(
    vectors: np.ndarray,
    k_min: int,
    k_max: int,
    seed: int = 0,
    n_init: int = 5,
    iterations: int = 50,
    max_points: int = 5000,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[int, dict[int, float]]:
    """The k in ``k_min..k_max`` (capped at n - 1) with the best silhouette, and every k's score."""
    n = len(vectors)
    hi = min(k_max, n - 1)
    if n < 3 or hi < k_min:
        raise InputError(
            f"{n} items are too few to choose k in {k_min}..{k_max} (silhouette needs 2 <= k <= items - 1); "
            "give a fixed -k or embed more audio"
        )
    scores: dict[int, float] = {}
    ks = list(range(k_min, hi + 1))
    for i, k in enumerate(ks):
        result = kmeans(vectors, k, seed, n_init, iterations)
        scores[k] = silhouette(vectors, result.assignments, max_points, seed)
        if progress is not None:
            progress(i + 1, len(ks))
    valid = {k: s for k, s in scores.items() if np.isfinite(s)}
    if not valid:
        raise InputError("no k in the range gave a valid silhouette (all items identical?); give a fixed -k")
    best = max(valid, key=lambda k: (valid[k], -k))  # ties: the smaller k
    return best, scores


def label_agreement(assignments: Sequence[int], labels: Sequence[str | None]) -> dict[str, Any] | None:
    """Purity, NMI, ARI over the labelled items, and each cluster's label make-up; None without labels."""
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    pairs = [(int(a), str(lab)) for a, lab in zip(assignments, labels, strict=True) if lab not in (None, "")]
    if not pairs:
        return None
    clusters = np.array([a for a, _ in pairs])
    labs = [lab for _, lab in pairs]
    composition: dict[int, dict[str, int]] = {}
    for c in sorted(set(clusters.tolist())):
        composition[c] = dict(Counter(lab for a, lab in pairs if a == c).most_common())
    majority = sum(max(counts.values()) for counts in composition.values())
    return {
        "labelled_items": len(pairs),
        "labels": sorted(set(labs)),
        "purity": majority / len(pairs),
        "nmi": float(normalized_mutual_info_score(labs, clusters)),
        "ari": float(adjusted_rand_score(labs, clusters)),
        "composition": {str(c): counts for c, counts in composition.items()},
    }


@dataclass
class Clustering:
    """Clusters of a set of vectors (pure result, no files)."""

    k: int
    assignments: np.ndarray
    centroids: np.ndarray
    distances: np.ndarray
    k_scores: dict[int, float] = field(default_factory=dict)
    criterion: str = "fixed"
    agreement: dict[str, Any] | None = None

    @property
    def sizes(self) -> list[int]:
        return np.bincount(self.assignments, minlength=self.k).astype(int).tolist()

    def nearest(self, cluster: int, count: int) -> list[int]:
        """Row numbers of the ``count`` items of ``cluster`` nearest its centroid."""
        rows = np.flatnonzero(self.assignments == cluster)
        return rows[np.argsort(self.distances[rows], kind="stable")][:count].tolist()


def cluster_vectors(
    vectors: np.ndarray,
    options: ClusterOptions,
    labels: Sequence[str | None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Clustering:
    """k-Means with a fixed or silhouette-chosen k; label agreement when ``labels`` are given."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError("no embeddings to cluster")
    k_scores: dict[int, float] = {}
    if options.fixed_k is not None:
        k = options.fixed_k
        if k > x.shape[0]:
            raise InputError(f"-k {k} is more clusters than the {x.shape[0]} items to cluster")
        criterion = "fixed"
    else:
        k, k_scores = choose_k(
            x,
            options.k_min,
            options.k_max,
            options.seed,
            options.n_init,
            options.iterations,
            options.max_points,
            progress,
        )
        criterion = "silhouette"
    result = kmeans(x, k, options.seed, options.n_init, options.iterations)
    agreement = label_agreement(result.assignments, labels) if labels is not None else None
    return Clustering(k, result.assignments, result.centroids, result.distances, k_scores, criterion, agreement)


# --- the artefact --------------------------------------------------------------------------------------------


@dataclass
class ClusterReport:
    directory: Path
    clustering: Clustering
    level: str
    items: list[dict[str, Any]]  # per item: item_id, track_id, start_s, end_s, label, path, cluster, distance
    exemplars: dict[int, list[dict[str, Any]]]
    figures: dict[str, str]

    @property
    def k(self) -> int:
        return self.clustering.k

    @property
    def sizes(self) -> list[int]:
        return self.clustering.sizes

    @property
    def agreement(self) -> dict[str, Any] | None:
        return self.clustering.agreement


def _items(store: EmbeddingStore, level: str) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Vectors and per-item rows (ids, time range, label, path) at track or segment level."""
    if level == "track":
        vectors = np.asarray(store.track_vectors(), dtype=np.float32)
        rows = []
        for t in sorted(store.tracks, key=lambda t: t["row"]):
            rows.append(
                {
                    "item_id": t["track_id"],
                    "track_id": t["track_id"],
                    "start_s": 0.0,
                    "end_s": float(t.get("duration_s") or 0.0),
                    "label": t.get("label"),
                    "group": t.get("group"),
                    "path": t.get("path"),
                }
            )
        return vectors, rows
    vectors = np.asarray(store.segment_vectors(), dtype=np.float32)
    from embedtool.embedding.store import segment_id

    track_rows = store.track_row_of(np.arange(store.n_segments))
    rows = []
    for t_row, start, end in zip(track_rows, store.segment_starts, store.segment_ends, strict=True):
        t = store.tracks[int(t_row)]
        rows.append(
            {
                "item_id": segment_id(t["track_id"], float(start)),
                "track_id": t["track_id"],
                "start_s": float(start),
                "end_s": float(end),
                "label": t.get("label"),
                "group": t.get("group"),
                "path": t.get("path"),
            }
        )
    return vectors, rows


def _exemplars(
    store: EmbeddingStore,
    clustering: Clustering,
    items: list[dict[str, Any]],
    level: str,
    count: int,
    refine: bool = True,
) -> dict[int, list[dict[str, Any]]]:
    """Items nearest each centroid; at track level (and ``refine``) each comes with its segment nearest the
    centroid."""
    seg_vectors = np.asarray(store.segment_vectors(), dtype=np.float32) if level == "track" and refine else None
    out: dict[int, list[dict[str, Any]]] = {}
    for c in range(clustering.k):
        entries = []
        for row in clustering.nearest(c, count):
            item = items[row]
            entry = {
                "track_id": item["track_id"],
                "path": item["path"],
                "label": item["label"],
                "start_s": item["start_s"],
                "end_s": item["end_s"],
                "distance": float(clustering.distances[row]),
            }
            if seg_vectors is not None:
                rows, _ = store.segments_of(item["track_id"])
                if len(rows):
                    d = np.linalg.norm(seg_vectors[rows] - clustering.centroids[c], axis=1)
                    best = int(rows[int(np.argmin(d))])
                    entry["start_s"] = float(store.segment_starts[best])
                    entry["end_s"] = float(store.segment_ends[best])
            entries.append(entry)
        out[c] = entries
    return out


def _sample_rows(n: int, max_points: int, seed: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))


def run_cluster(
    embeddings_dir: Path,
    clusters_dir: Path,
    options: ClusterOptions,
    progress: Progress | None = None,
    *,
    features_dir: Path | None = None,
    teacher_dir: Path | None = None,
) -> ClusterReport:
    """Cluster the embeddings artefact and write the clusters artefact (atomically, meta.json last). With
    ``features_dir``, the labels compared with the clusters are the features' current ones. ``teacher_dir``:
    the cache of the teacher that ``options.features`` joins to the track embeddings (then exemplars span
    whole tracks: the segments live in the embeddings' space alone).

    ``progress(stage, done, total)`` is called while choosing k and writing.
    """
    from embedtool.analysis import plots
    from embedtool.analysis.projection import project_2d
    from embedtool.artefacts import fingerprint_of, staged_dir, write_meta
    from embedtool.config import settings_dict
    from embedtool.embedding.store import EmbeddingStore

    store = EmbeddingStore(Path(embeddings_dir))
    store.use_current_labels(features_dir)
    vectors, items = _items(store, options.level)
    name = teacher_of(options.features)
    fused = name is not None
    if name is not None:
        from embedtool.analysis.retrieval import balanced_fusion
        from embedtool.model.teachers import load_teacher_vectors

        if teacher_dir is None:
            raise MissingArtefactError(f"cluster.features {options.features!r} needs the {name} vectors' folder")
        teacher = load_teacher_vectors(Path(teacher_dir), [it["track_id"] for it in items], name)
        vectors = balanced_fusion([vectors, teacher])
    labels = [it["label"] for it in items]
    has_labels = any(lab not in (None, "") for lab in labels)
    step = (lambda d, t: progress("choosing k", d, t)) if progress else None
    clustering = cluster_vectors(vectors, options, labels if has_labels else None, step)
    for row, (cluster, dist) in enumerate(zip(clustering.assignments, clustering.distances, strict=True)):
        items[row]["cluster"] = int(cluster)
        items[row]["distance"] = float(dist)
    exemplars = _exemplars(store, clustering, items, options.level, options.exemplars, refine=not fused)

    clusters_dir = Path(clusters_dir)
    figures: dict[str, str] = {}
    with staged_dir(clusters_dir) as out:
        if options.plots:
            rows = _sample_rows(len(items), options.max_points, options.seed)
            coords, method = project_2d(vectors[rows], options.projection, options.seed)
            colourings: dict[str, list[Any]] = {"cluster": [items[r]["cluster"] for r in rows]}
            if has_labels:
                colourings["label"] = [items[r]["label"] for r in rows]
            plots.plot_map(out / "map.png", coords, colourings, title=f"{options.level}s ({method})")
            figures["map"] = "map.png"
            if clustering.k_scores:
                ks = sorted(clustering.k_scores)
                plots.plot_k_selection(
                    out / "k_selection.png", ks, [clustering.k_scores[k] for k in ks], clustering.k, "silhouette"
                )
                figures["k_selection"] = "k_selection.png"
        summary = {
            "k": clustering.k,
            "criterion": clustering.criterion,
            "k_scores": {str(k): v for k, v in clustering.k_scores.items()},
            "level": options.level,
            "items": len(items),
            "sizes": clustering.sizes,
            "exemplars": {str(c): e for c, e in exemplars.items()},
            "labels": clustering.agreement,
            "figures": figures,
        }
        write_cluster_files(out, items, clustering.centroids, summary)
        config = settings_dict(options)
        metrics = {m: clustering.agreement[m] for m in ("purity", "nmi", "ari")} if clustering.agreement else {}
        write_meta(
            out,
            KIND,
            FORMAT_VERSION,
            config,
            inputs={"embeddings": store.fingerprint, "model": store.model_fingerprint},
            extra={"k": clustering.k, "sizes": clustering.sizes, "items": len(items), **metrics},
            fingerprint=fingerprint_of(config, store.fingerprint, clustering.assignments.tolist()),
        )
    if progress is not None:
        progress("writing", 1, 1)
    return ClusterReport(clusters_dir, clustering, options.level, items, exemplars, figures)
