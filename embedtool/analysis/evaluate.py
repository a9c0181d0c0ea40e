"""``embedtool evaluate``: one report on how good an embedding space is, with baselines from the same run.

Sections (each computed for the learnt embeddings and, in the same run on the same tracks and splits, for the
baselines: MFCC statistics from the features artefact, the same network untrained, and the bundled ``general``
model applied as it is):

- **retrieval**: precision@k of same-label neighbours over track embeddings (cosine), the query's own track
  always excluded (optionally every track of its group too);
- **classification**: logistic regression on the persisted split or grouped k-fold (``classify`` options; the
  learnt systems classify track descriptors by default, the MFCC baseline its statistics):
  accuracy, macro-F1, per-class table, confusion matrix;
- **clustering**: k-Means with k = the number of labels (or the ``cluster`` options): purity, NMI, ARI;
- **re-identification robustness** (learnt model only, through the query stage's ``Searcher``): excerpts of
  library tracks at random offsets, for each excerpt length x degradation (clean; white noise at 20/10/0 dB SNR;
  MP3 re-encoding; a gain change; speed +-3 % by resampling), top-1 and top-5 track accuracy;
- a 2-D map of the space (t-SNE, or UMAP when installed) and a TensorBoard-projector export.

Layout of ``<workspace>/reports/<name>/`` (name: ``--name`` or a UTC timestamp)::

    meta.json                 provenance (last): options, input fingerprints, headline figures
    report.md                 the report, with its figures
    report.json               the same figures, machine-readable
    *.png                     map, confusion matrices, robustness heatmap, comparison bars
    projector/vectors.tsv     TensorBoard projector: one embedding per line
    projector/metadata.tsv    ... and its track id, label, group, cluster, path
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from embedtool.analysis.classify import ClassifyOptions, LabelledData, evaluate_classifier, uses_descriptors
from embedtool.analysis.cluster import ClusterOptions, cluster_vectors, label_agreement
from embedtool.errors import ConfigError, InputError
from embedtool.progress import Progress

KIND = "report"
FORMAT_VERSION = 1
MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
DEGRADATIONS = ("clean", "noise20", "noise10", "noise0", "mp3", "gain", "speed+3", "speed-3")


@dataclass(frozen=True)
class EvaluateOptions:
    """Options of ``embedtool evaluate`` (config section ``evaluate``)."""

    name: str = ""  # report folder name under reports/; empty: a UTC timestamp
    k: tuple[int, ...] = (1, 5, 10)  # precision@k
    exclude_same_group: bool = False  # retrieval: also leave out the query's group (e.g. the same drum kit)
    robustness: bool = True
    excerpt_seconds: tuple[float, ...] = (1.0, 3.0, 5.0, 10.0)
    degradations: tuple[str, ...] = DEGRADATIONS
    excerpts: int = 20  # excerpts per excerpt length (the same excerpts under every degradation)
    gain_db: float = -12.0
    mp3_compression: float = 0.5  # soundfile's MP3 compression level, constant bit rate (0.5: ~80 kbps at 16 kHz)
    cluster_k: str = "labels"  # "labels" (k = number of labels), "auto", or a number
    baselines: bool = True  # MFCC statistics baseline
    untrained_baseline: bool = True  # the same network untrained, exported into a temporary folder
    # A bundled model applied as it is (see training/pretrained.py): does training on this audio beat it?
    # "" = off; left out when it is the workspace's own model or was made for other feature settings. Its export
    # is kept in reports/.baselines/NAME and reused by the next run (only new tracks are embedded).
    pretrained_baseline: str = "general"
    baseline_kind: Literal["mfcc", "logmel"] = "mfcc"
    n_mfcc: int = 20
    projection: Literal["auto", "tsne", "umap", "pca"] = "auto"
    max_points: int = 5000
    seed: int = 0

    def validate(self) -> None:
        if not self.k or min(self.k) < 1:
            raise ConfigError("evaluate.k must be a list of positive integers")
        if self.excerpts < 1:
            raise ConfigError("evaluate.excerpts must be positive")
        if not self.excerpt_seconds or min(self.excerpt_seconds) <= 0:
            raise ConfigError("evaluate.excerpt_seconds must be positive lengths in seconds")
        unknown = [d for d in self.degradations if d not in DEGRADATIONS]
        if unknown:
            raise ConfigError(f"evaluate.degradations: unknown {', '.join(unknown)}; valid: {', '.join(DEGRADATIONS)}")
        if not 0 <= self.mp3_compression <= 1:
            raise ConfigError("evaluate.mp3_compression must be in 0..1")
        if self.cluster_k not in ("labels", "auto"):
            try:
                if int(self.cluster_k) < 1:
                    raise ValueError
            except ValueError:
                raise ConfigError(
                    f"evaluate.cluster_k must be 'labels', 'auto' or a positive number, not {self.cluster_k!r}"
                ) from None
        if any(ch in self.name for ch in "/\\") or self.name in (".", ".."):
            raise ConfigError(f"evaluate.name must be a plain folder name, not {self.name!r}")


# --- retrieval -----------------------------------------------------------------------------------------------


def precision_at_k(
    vectors: np.ndarray,
    labels: Sequence[str],
    ks: Sequence[int],
    groups: Sequence[str] | None = None,
    block: int = 1024,
) -> dict[str, float]:
    """Mean fraction of each track's k nearest tracks (cosine) that share its label.

    The query itself is always excluded; with ``groups``, every track of the query's group is excluded too.
    k larger than the candidates available is capped (and so reported for what it is). Computed in blocks of
    queries, so memory stays at ``block`` x tracks.
    """
    x = np.asarray(vectors, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    n = len(x)
    labels_arr = np.asarray([str(v) for v in labels])
    g = np.asarray([str(v) for v in groups]) if groups is not None else None
    max_k = min(max(ks), max(n - 1, 1))
    hits: dict[int, list[float]] = {k: [] for k in ks}
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        sims = x[lo:hi] @ x.T
        sims[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf
        if g is not None:
            sims[g[lo:hi, None] == g[None, :]] = -np.inf
        top = np.argpartition(-sims, max_k - 1, axis=1)[:, :max_k] if max_k < n else np.argsort(-sims, axis=1)
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.argsort(-top_sims, axis=1, kind="stable")
        top, top_sims = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sims, order, axis=1)
        same = labels_arr[top] == labels_arr[lo:hi, None]
        valid = np.isfinite(top_sims)
        for i in range(hi - lo):
            n_valid = int(valid[i].sum())
            for k in ks:
                kk = min(k, n_valid)
                if kk:
                    hits[k].append(float(same[i, :kk].mean()))
    return {f"p@{k}": float(np.mean(hits[k])) if hits[k] else float("nan") for k in ks}


def standardise(vectors: np.ndarray) -> np.ndarray:
    """Column z-scores: hand-crafted statistics live on very different scales (energy vs. higher MFCCs)."""
    x = np.asarray(vectors, dtype=np.float64)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0
    return ((x - x.mean(axis=0)) / scale).astype(np.float32)


# --- degradations --------------------------------------------------------------------------------------------


def degrade(
    samples: np.ndarray, sample_rate: int, kind: str, rng: np.random.Generator, options: EvaluateOptions
) -> np.ndarray:
    """One degraded copy of a mono float32 excerpt (see ``DEGRADATIONS``)."""
    x = np.asarray(samples, dtype=np.float32)
    if kind == "clean":
        return x
    if kind.startswith("noise"):
        snr_db = float(kind[len("noise") :])
        power = float(np.mean(x.astype(np.float64) ** 2)) or 1e-12
        noise = rng.standard_normal(len(x)) * np.sqrt(power / 10 ** (snr_db / 10))
        return (x + noise).astype(np.float32)
    if kind == "gain":
        return (x * 10 ** (options.gain_db / 20)).astype(np.float32)
    if kind.startswith("speed"):
        from scipy.signal import resample_poly

        # Played back faster by s percent: the same content in 100/(100+s) of the samples (pitch moves too).
        percent = int(kind[len("speed") :])
        return resample_poly(x, 100, 100 + percent).astype(np.float32)
    if kind == "mp3":
        import soundfile as sf
        from scipy.signal import resample_poly

        # MP3 knows a fixed set of rates: encode anything else at 44.1 kHz and resample back afterwards.
        rate = sample_rate if sample_rate in MP3_RATES else 44100
        y = x if rate == sample_rate else resample_poly(x, rate, sample_rate).astype(np.float32)
        buf = io.BytesIO()
        sf.write(
            buf,
            np.clip(y, -1, 1),
            rate,
            format="MP3",
            bitrate_mode="CONSTANT",
            compression_level=options.mp3_compression,
        )
        buf.seek(0)
        y, _ = sf.read(buf, dtype="float32")
        y = y if y.ndim == 1 else y.mean(axis=1)
        return y if rate == sample_rate else resample_poly(y, sample_rate, rate).astype(np.float32)
    raise ValueError(f"unknown degradation {kind!r}")


def _match_track(match: Any) -> str:
    return str(match["track_id"] if isinstance(match, dict) else match.track_id)


def reidentification(
    searcher: Any,
    tracks: Sequence[dict[str, Any]],
    options: EvaluateOptions,
    read: Callable[[str, float, float], tuple[np.ndarray, int]],
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Top-1 / top-5 re-identification of degraded excerpts of library tracks, per length x degradation.

    For each excerpt length, ``options.excerpts`` tracks at least that long are drawn (seeded; fewer when fewer
    are that long) with a random offset each; the same excerpts go through every degradation, so the columns
    differ only by the degradation. A "no match" answer counts as a miss. ``read(path, start_s, seconds)``
    returns the excerpt's mono samples and their rate (the file's own: degradations such as MP3 re-encoding then
    happen where a user's would, and the query stage resamples).
    """
    rng = np.random.default_rng(options.seed)
    lengths = sorted(options.excerpt_seconds)
    plan: dict[str, list[tuple[float, float]]] = {}  # track_id -> [(length, start_s)]
    planned: dict[float, int] = {}
    for length in lengths:
        long_enough = [t for t in tracks if float(t.get("duration_s") or 0) >= length]
        if not long_enough:
            planned[length] = 0
            continue
        picks = rng.choice(len(long_enough), size=min(options.excerpts, len(long_enough)), replace=False)
        planned[length] = len(picks)
        for p in sorted(picks.tolist()):
            t = long_enough[p]
            start = float(rng.uniform(0, float(t["duration_s"]) - length))
            plan.setdefault(t["track_id"], []).append((length, start))
    by_id = {t["track_id"]: t for t in tracks}
    results: dict[tuple[float, str], list[tuple[bool, bool, bool, bool]]] = {}
    total = sum(len(v) for v in plan.values()) * len(options.degradations)
    done = 0
    for track_id, excerpts in plan.items():
        for length, start in excerpts:
            excerpt, sample_rate = read(by_id[track_id]["path"], start, length)
            for kind in options.degradations:
                noisy = degrade(excerpt, sample_rate, kind, rng, options)
                try:
                    result = searcher.query_samples(noisy, sample_rate, mode="identify", k=5)
                    ranked = [_match_track(m) for m in result.matches]
                    no_match = bool(getattr(result, "no_match", False))
                except InputError:  # e.g. shorter than the query stage accepts: a miss, not a crash
                    ranked, no_match = [], True
                ranked_first = bool(ranked) and ranked[0] == track_id
                results.setdefault((length, kind), []).append(
                    (ranked_first and not no_match, track_id in ranked[:5], no_match, ranked_first)
                )
                done += 1
                if progress is not None:
                    progress(done, total)
    cells = []
    for length in lengths:
        for kind in options.degradations:
            rows = results.get((length, kind), [])
            n = len(rows)
            cells.append(
                {
                    "seconds": length,
                    "degradation": kind,
                    "n": n,
                    "top1": float(np.mean([r[0] for r in rows])) if n else None,
                    "top5": float(np.mean([r[1] for r in rows])) if n else None,
                    "no_match": float(np.mean([r[2] for r in rows])) if n else None,
                    # top-1 of the ranking even where the identify threshold said "no match"
                    "top1_ranked": float(np.mean([r[3] for r in rows])) if n else None,
                }
            )
    return {
        "lengths": lengths,
        "degradations": list(options.degradations),
        "excerpts_per_length": {str(k): v for k, v in planned.items()},
        "gain_db": options.gain_db,
        "mp3": f"constant bit rate, compression level {options.mp3_compression}, at the file's own sample rate",
        "cells": cells,
    }


# --- one system (embeddings or a baseline) -------------------------------------------------------------------


def evaluate_system(
    data: LabelledData,
    options: EvaluateOptions,
    classify_options: ClassifyOptions,
    cluster_options: ClusterOptions,
    split: dict[str, str] | None,
    standardise_vectors: bool = False,
) -> dict[str, Any]:
    """Retrieval, classification and clustering figures for one set of track vectors."""
    vectors = standardise(data.vectors) if standardise_vectors else data.vectors
    retrieval = precision_at_k(vectors, data.labels, options.k, data.groups if options.exclude_same_group else None)
    run = replace(data, vectors=vectors)
    if standardise_vectors and data.segment_vectors is not None:
        run.segment_vectors = standardise(data.segment_vectors)
    evaluation = evaluate_classifier(run, classify_options, split)
    n_labels = len(set(data.labels))
    if options.cluster_k == "labels":
        copts = replace(cluster_options, k=str(min(n_labels, len(data.labels))), plots=False)
    else:
        copts = replace(cluster_options, k=options.cluster_k, plots=False)
    clustering = cluster_vectors(_unit(vectors), copts, data.labels)
    agreement = clustering.agreement or label_agreement(clustering.assignments, data.labels)
    return {
        "retrieval": retrieval,
        "classification": evaluation.to_dict(),
        "clustering": {
            "k": clustering.k,
            "criterion": clustering.criterion,
            "sizes": clustering.sizes,
            "purity": agreement["purity"] if agreement else None,
            "nmi": agreement["nmi"] if agreement else None,
            "ari": agreement["ari"] if agreement else None,
            "composition": agreement["composition"] if agreement else {},
        },
        "_assignments": clustering.assignments,
    }


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


# --- the report ----------------------------------------------------------------------------------------------


@dataclass
class EvaluateResult:
    directory: Path
    report: dict[str, Any]

    @property
    def systems(self) -> dict[str, Any]:
        return self.report["systems"]


def _untrained_encoder(workspace: Any, seed: int) -> Any:
    """The workspace's network with random weights and the trained one's input standardisation: the baseline
    differs in its weights only."""
    from embedtool.model.encoder import Encoder

    trained = Encoder.load(workspace.model)
    encoder = Encoder.untrained(trained.feature_settings, trained.train_settings, seed=seed)
    net = getattr(trained, "net", None)
    if net is not None and hasattr(net, "input_mean"):
        encoder.set_input_stats(float(net.input_mean.float().mean()), float(net.input_std.float().mean()))
    return encoder


def _pretrained_encoder(workspace: Any, store: Any, name: str) -> tuple[Any, str]:
    """The bundled model ``name`` when it can embed these features and is not the model behind the
    embeddings ``store``; otherwise (None, why it is left out)."""
    from embedtool.errors import IncompatibleArtefactError
    from embedtool.features.store import FeatureStore
    from embedtool.model.encoder import Encoder
    from embedtool.model.store import resolve_model_source

    encoder = Encoder.load(resolve_model_source(name))
    if encoder.fingerprint == store.model_fingerprint:
        return None, f"the workspace's model is the bundled {name} model"
    try:
        encoder.check_features(FeatureStore(workspace.features).settings)
    except IncompatibleArtefactError as exc:
        return None, str(exc)
    return encoder, ""


BASELINE_EXPORTS = ".baselines"  # under reports/: bundled models' exports, kept between evaluate runs


@contextlib.contextmanager
def _baseline_export_dir(workspace: Any, system: str, keep: bool) -> Iterator[Path]:
    """Where a baseline network's export goes. A bundled model's is kept in ``reports/.baselines/SYSTEM``, so
    evaluating an unchanged library again reuses it and a grown one embeds only the new tracks (the export's
    own model/settings/track checks decide); the untrained network's, whose input standardisation follows the
    features rather than its fingerprint, goes to a temporary folder."""
    if keep:
        yield Path(workspace.reports) / BASELINE_EXPORTS / system
        return
    with tempfile.TemporaryDirectory(prefix=f"embedtool-{system}-") as tmp:
        yield Path(tmp)


def _export_with(workspace: Any, store: Any, encoder: Any, tmp: Path) -> Any:
    """Embeddings of ``encoder`` over the workspace's features, exported with the same options as ``store``."""
    import dataclasses

    from embedtool.embedding.export import export_embeddings
    from embedtool.embedding.options import EmbedOptions
    from embedtool.embedding.store import EmbeddingStore

    names = {f.name for f in dataclasses.fields(EmbedOptions)}
    embed_options = EmbedOptions(**{k: v for k, v in store.meta.config.items() if k in names})
    export_embeddings(workspace.features, encoder, tmp / "embeddings", embed_options)
    return EmbeddingStore(tmp / "embeddings")


def run_evaluate(
    workspace: Any,
    options: EvaluateOptions,
    classify_options: ClassifyOptions | None = None,
    cluster_options: ClusterOptions | None = None,
    progress: Progress | None = None,
) -> EvaluateResult:
    """Evaluate the workspace's embeddings (and baselines) and write a report folder under ``reports/``."""
    from embedtool.analysis import plots
    from embedtool.analysis.baselines import segment_baseline_vectors, track_baseline_vectors
    from embedtool.analysis.projection import project_2d, write_projector_tsv
    from embedtool.artefacts import atomic_write_bytes, atomic_write_json, check_compatible, staged_dir, write_meta
    from embedtool.config import settings_dict
    from embedtool.embedding.store import EmbeddingStore

    classify_options = classify_options or ClassifyOptions()
    cluster_options = cluster_options or ClusterOptions()

    def step(stage: str, done: int = 0, total: int = 1) -> None:
        if progress is not None:
            progress(stage, done, total)

    timings: dict[str, float] = {}
    notes: list[str] = []
    clock = time.perf_counter()
    store = EmbeddingStore(workspace.embeddings)
    data = LabelledData.from_store(store, classify_options.level == "segment", uses_descriptors(classify_options))
    split = None
    if not classify_options.cv:
        from embedtool.training.splits import load_split

        split = load_split(workspace.split)
    labels_count = Counter(data.labels)

    step("embeddings")
    systems: dict[str, dict[str, Any]] = {
        "embeddings": evaluate_system(data, options, classify_options, cluster_options, split)
    }
    timings["embeddings"] = time.perf_counter() - clock

    if options.baselines:
        clock = time.perf_counter()
        step(f"{options.baseline_kind} baseline")
        from embedtool.features.store import FeatureStore

        features = FeatureStore(workspace.features)
        check_compatible(
            {"features": store.features_fingerprint},
            {"features": features.fingerprint},
            "embeddings vs features (re-run `embedtool embed` so the baseline sees the same tracks)",
        )
        base_vectors = track_baseline_vectors(features, data.track_ids, options.baseline_kind, options.n_mfcc)
        base_segments = None
        if classify_options.level == "segment":
            seg_rows = [
                {"track_id": data.track_ids[t], "start_s": a, "end_s": b}
                for t, (a, b) in zip(data.segment_track, data.segment_times, strict=True)
            ]
            base_segments = segment_baseline_vectors(features, seg_rows, options.baseline_kind, options.n_mfcc)
        systems[options.baseline_kind] = evaluate_system(
            data.with_vectors(base_vectors, base_segments),
            options,
            classify_options,
            cluster_options,
            split,
            standardise_vectors=True,
        )
        timings[options.baseline_kind] = time.perf_counter() - clock

    other_encoders: list[tuple[str, Any]] = []
    if options.untrained_baseline:
        other_encoders.append(("untrained", _untrained_encoder(workspace, options.seed)))
    if options.pretrained_baseline:
        encoder, why_not = _pretrained_encoder(workspace, store, options.pretrained_baseline)
        if encoder is None:
            notes.append(f"No {options.pretrained_baseline} baseline: {why_not}.")
        else:
            other_encoders.append((options.pretrained_baseline, encoder))
    for system, encoder in other_encoders:
        clock = time.perf_counter()
        step(f"{system} network baseline")
        with _baseline_export_dir(workspace, system, keep=system != "untrained") as directory:
            other = _export_with(workspace, store, encoder, directory)
            odata = LabelledData.from_store(
                other, classify_options.level == "segment", uses_descriptors(classify_options)
            )
            if odata.track_ids != data.track_ids:
                raise InputError(
                    f"the {system} export holds other tracks than the embeddings; re-run `embedtool embed`"
                )
            systems[system] = evaluate_system(odata, options, classify_options, cluster_options, split)
        timings[system] = time.perf_counter() - clock

    robustness = None
    if options.robustness:
        clock = time.perf_counter()
        robustness = _robustness(workspace, store, options, progress)
        timings["robustness"] = time.perf_counter() - clock

    name = options.name or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    final = Path(workspace.reports) / name
    figures: dict[str, str] = {}
    clock = time.perf_counter()
    with staged_dir(final) as out:
        # Map of the space: every track (sampled when huge), coloured by label and by the embeddings' clusters.
        all_vectors = np.asarray(store.track_vectors(), dtype=np.float32)
        assignments = dict(zip(data.track_ids, systems["embeddings"]["_assignments"].tolist(), strict=True))
        rows = np.arange(len(store.tracks))
        if len(rows) > options.max_points:
            rows = np.sort(np.random.default_rng(options.seed).choice(len(rows), options.max_points, replace=False))
        tracks_sorted = sorted(store.tracks, key=lambda t: t["row"])
        meta_rows = [
            {
                "track_id": tracks_sorted[r]["track_id"],
                "label": tracks_sorted[r].get("label") or "",
                "group": tracks_sorted[r].get("group") or "",
                "cluster": assignments.get(tracks_sorted[r]["track_id"], ""),
                "path": tracks_sorted[r].get("path") or "",
            }
            for r in rows
        ]
        coords, method = project_2d(all_vectors[rows], options.projection, options.seed)
        plots.plot_map(
            out / "map.png",
            coords,
            {"label": [m["label"] for m in meta_rows], "cluster": [m["cluster"] for m in meta_rows]},
            title=f"tracks ({method})",
        )
        figures["map"] = "map.png"
        write_projector_tsv(
            out / "projector", all_vectors[rows], meta_rows, ["track_id", "label", "group", "cluster", "path"]
        )
        for sys_name, result in systems.items():
            cls = result["classification"]
            png = f"confusion_{sys_name}.png"
            plots.plot_confusion(
                out / png, np.asarray(cls["confusion"]), cls["labels"], f"{sys_name} ({cls['scheme']})"
            )
            figures[f"confusion_{sys_name}"] = png
        comparison = {
            sys_name: {
                "macro-F1": r["classification"]["macro_f1"],
                "accuracy": r["classification"]["accuracy"],
                **{k: v for k, v in r["retrieval"].items()},
                "purity": r["clustering"]["purity"] or 0.0,
                "NMI": r["clustering"]["nmi"] or 0.0,
            }
            for sys_name, r in systems.items()
        }
        plots.plot_comparison(out / "comparison.png", comparison, "embeddings vs baselines")
        figures["comparison"] = "comparison.png"
        if robustness is not None:
            top1 = np.array(
                [
                    [c["top1"] if c["top1"] is not None else np.nan for c in robustness["cells"] if c["seconds"] == g]
                    for g in robustness["lengths"]
                ]
            )
            plots.plot_robustness(
                out / "robustness.png",
                robustness["lengths"],
                robustness["degradations"],
                top1,
                "re-identification top-1 accuracy",
            )
            figures["robustness"] = "robustness.png"
        for r in systems.values():
            r.pop("_assignments", None)
        report = {
            "name": name,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "workspace": str(workspace.root),
            "inputs": {
                "embeddings": store.fingerprint,
                "model": store.model_fingerprint,
                "features": store.features_fingerprint,
            },
            "tracks": len(store.tracks),
            "segments": store.n_segments,
            "labelled_tracks": len(data.track_ids),
            "labels": dict(sorted(labels_count.items())),
            "classification_scheme": systems["embeddings"]["classification"]["scheme"],
            "classify_options": settings_dict(classify_options),
            "systems": systems,
            "robustness": robustness,
            "projection": {
                "method": method,
                "points": int(len(rows)),
                "files": ["projector/vectors.tsv", "projector/metadata.tsv"],
            },
            "figures": figures,
            "timings_s": {k: round(v, 2) for k, v in timings.items()},
            "notes": notes,
        }
        atomic_write_json(out / "report.json", report)
        atomic_write_bytes(out / "report.md", render_markdown(report).encode())
        headline = {f"{s}_macro_f1": r["classification"]["macro_f1"] for s, r in systems.items()}
        write_meta(
            out,
            KIND,
            FORMAT_VERSION,
            settings_dict(options),
            inputs=report["inputs"],
            extra={"name": name, **headline},
        )
    timings["report"] = time.perf_counter() - clock
    step("report written", 1, 1)
    return EvaluateResult(final, report)


def _robustness(workspace: Any, store: Any, options: EvaluateOptions, progress: Progress | None) -> dict[str, Any]:
    from embedtool.query.searcher import Searcher

    searcher = Searcher.open(workspace)
    tracks = [t for t in sorted(store.tracks, key=lambda t: t["row"]) if t.get("path") and Path(t["path"]).exists()]
    if not tracks:
        raise InputError("no library audio file is reachable on disk: re-identification needs the original audio")

    def read(path: str, start_s: float, seconds: float) -> tuple[np.ndarray, int]:
        return read_excerpt(Path(path), start_s, seconds, searcher.settings.sample_rate)

    step = (lambda d, t: progress("re-identification", d, t)) if progress else None
    return reidentification(searcher, tracks, options, read, step)


def read_excerpt(path: Path, start_s: float, seconds: float, fallback_sr: int = 16000) -> tuple[np.ndarray, int]:
    """Mono float32 samples of ``seconds`` from ``start_s`` at the file's own rate, reading only that part
    (soundfile seeks); formats soundfile cannot read are decoded whole with the project's decoder."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
        x, sr = sf.read(
            str(path),
            start=int(start_s * info.samplerate),
            frames=int(round(seconds * info.samplerate)),
            dtype="float32",
            always_2d=True,
        )
        return x.mean(axis=1), int(sr)
    except (sf.LibsndfileError, RuntimeError):
        from embedtool.audio.decode import decode_file

        audio = decode_file(path, fallback_sr)
        a = int(round(start_s * fallback_sr))
        return audio.samples[a : a + int(round(seconds * fallback_sr))], fallback_sr


# --- markdown ------------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if np.isnan(value) else f"{value:.{digits}f}"
    return str(value)


# How the report's Markdown describes each baseline system (only those the report has).
SYSTEM_DESCRIPTIONS = {
    "mfcc": "**mfcc** (per-track mean and standard deviation of MFCCs, standardised)",
    "logmel": "**logmel** (per-track mean and standard deviation of log-Mels, standardised)",
    "untrained": "**untrained** (the same network with random weights)",
    "general": "**general** (embedtool's bundled model, trained on other, varied audio, applied as it is: what "
    "training on this audio adds; its descriptors are those of two networks trained on different audio, its "
    "embeddings the first network's)",
}


def _systems_paragraph(systems: dict[str, Any]) -> str:
    baselines = [
        SYSTEM_DESCRIPTIONS.get(name, f"**{name}** (the model {name}, applied as it is)")
        for name in systems
        if name != "embeddings"
    ]
    if not baselines:
        return "Systems: **embeddings** (the learnt model); no baselines."
    return (
        "Systems: **embeddings** (the learnt model); baselines computed in the same run on the same tracks and "
        "splits: " + ", ".join(baselines) + "."
    )


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown, referring to its PNGs by relative path."""
    systems = report["systems"]
    lines = [
        f"# embedtool evaluation: {report['name']}",
        "",
        f"Created {report['created']} from workspace `{report['workspace']}`.",
        f"Embeddings `{report['inputs']['embeddings']}`, model `{report['inputs']['model']}`. "
        f"{report['tracks']} tracks ({report['segments']} segments), {report['labelled_tracks']} labelled: "
        + ", ".join(f"{k} {v}" for k, v in report["labels"].items())
        + ".",
        "",
        _systems_paragraph(systems),
        "",
        *[f"Note: {note}" for note in report.get("notes", [])],
        "",
        "## Summary",
        "",
    ]
    ks = list(next(iter(systems.values()))["retrieval"])
    lines += [
        "| system | accuracy | macro-F1 | " + " | ".join(ks) + " | purity | NMI | ARI |",
        "|---|---|---|" + "---|" * len(ks) + "---|---|---|",
    ]
    for name, r in systems.items():
        c, cl = r["classification"], r["clustering"]
        lines.append(
            f"| {name} | {_fmt(c['accuracy'])} | {_fmt(c['macro_f1'])} | "
            + " | ".join(_fmt(r["retrieval"][k]) for k in ks)
            + f" | {_fmt(cl['purity'])} | {_fmt(cl['nmi'])} | {_fmt(cl['ari'])} |"
        )
    lines += [
        "",
        f"Classification: logistic regression, {report['classification_scheme']} "
        "(`split`: the split persisted by `embedtool train`; `cv-N`: grouped stratified N-fold), "
        f"{report['classify_options']['level']} level"
        + (
            " (learnt systems: track descriptors; MFCC: its statistics)"
            if report["classify_options"].get("level") == "track"
            and report["classify_options"].get("features") == "descriptors"
            else ""
        )
        + f", C {report['classify_options'].get('C')}. Retrieval: precision@k of same-label tracks among each "
        "track's k nearest (cosine), its own track excluded. Clustering: k-Means, k as listed below.",
        "",
        "![comparison](comparison.png)",
        "",
    ]
    for name, r in systems.items():
        c = r["classification"]
        lines += [
            f"## Classification: {name}",
            "",
            "| label | precision | recall | F1 | support |",
            "|---|---|---|---|---|",
        ]
        for row in c["per_class"]:
            lines.append(
                f"| {row['label']} | {_fmt(row['precision'])} | {_fmt(row['recall'])} | {_fmt(row['f1'])} | "
                f"{row['support']} |"
            )
        lines += ["", f"![confusion {name}](confusion_{name}.png)", ""]
    emb = systems["embeddings"]["clustering"]
    lines += [
        "## Clusters of the embeddings",
        "",
        f"k = {emb['k']} ({emb['criterion']}), sizes {emb['sizes']}.",
        "",
        "| cluster | label make-up |",
        "|---|---|",
    ]
    for c, counts in emb["composition"].items():
        lines.append(f"| {c} | " + ", ".join(f"{k} {v}" for k, v in counts.items()) + " |")
    rob = report.get("robustness")
    if rob:
        lines += [
            "",
            "## Re-identification robustness",
            "",
            f"Excerpts at random offsets of library tracks, identified through the index (`Searcher`, identify "
            f"mode; a no-match answer counts as a miss). Gain {rob['gain_db']:g} dB; MP3 {rob['mp3']}. "
            "Cells: top-1 / top-1 of the ranking ignoring the no-match threshold / top-5 accuracy (n excerpts).",
            "",
            "| length | " + " | ".join(rob["degradations"]) + " |",
            "|---|" + "---|" * len(rob["degradations"]),
        ]
        for g in rob["lengths"]:
            cells = [c for c in rob["cells"] if c["seconds"] == g]
            lines.append(
                f"| {g:g} s | "
                + " | ".join(
                    f"{_fmt(c['top1'], 2)} / {_fmt(c.get('top1_ranked'), 2)} / {_fmt(c['top5'], 2)} ({c['n']})"
                    if c["n"]
                    else "- (0)"
                    for c in cells
                )
                + " |"
            )
        lines += ["", "![robustness](robustness.png)"]
    lines += [
        "",
        "## Map of the space",
        "",
        f"{report['projection']['method']} projection of {report['projection']['points']} track embeddings. "
        "TensorBoard projector files: `projector/vectors.tsv`, `projector/metadata.tsv` "
        "(load them at https://projector.tensorflow.org).",
        "",
        "![map](map.png)",
        "",
        "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items()),
        "",
    ]
    return "\n".join(lines)
