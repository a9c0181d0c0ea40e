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
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from embedtool.analysis.classify import LabelledData, evaluate_classifier, uses_descriptors
from embedtool.analysis.cluster import cluster_vectors, label_agreement
from embedtool.analysis.options import ClassifyOptions, ClusterOptions, EvaluateOptions
from embedtool.analysis.report import render_markdown
from embedtool.analysis.retrieval import precision_at_k, standardise
from embedtool.analysis.robustness import run_robustness
from embedtool.errors import InputError
from embedtool.progress import Progress

KIND = "report"
FORMAT_VERSION = 1


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
        robustness = run_robustness(workspace, store, options, progress)
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
