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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedtool.analysis.classifier import uses_descriptors
from embedtool.analysis.cluster import cluster_vectors, label_agreement
from embedtool.analysis.folds import evaluate_classifier
from embedtool.analysis.labelled import LabelledData, with_teacher
from embedtool.analysis.options import ClassifyOptions, ClusterOptions, EvaluateOptions
from embedtool.analysis.report import render_markdown, write_figures
from embedtool.analysis.retrieval import precision_at_k, standardise
from embedtool.analysis.robustness import run_robustness
from embedtool.errors import InputError
from embedtool.model.teachers import teacher_of
from embedtool.progress import Progress
from embedtool.threads import CpuBudget

if TYPE_CHECKING:
    from embedtool.embedding.store import EmbeddingStore
    from embedtool.model.encoder import Encoder
    from embedtool.workspace import Workspace


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
class EvaluateReport:
    directory: Path
    report: dict[str, Any]

    @property
    def systems(self) -> dict[str, Any]:
        return self.report["systems"]


def _model_origin(workspace: Workspace) -> str:
    """What the model behind the embeddings is, in a report's words: a bundled model applied as it is, one trained
    on from another model's weights, or one trained on this audio."""
    from embedtool.artefacts import read_meta

    extra = read_meta(workspace.model, "model").extra
    if extra.get("adopted_from"):
        return f"the bundled model `{extra['adopted_from']}` applied as it is, not trained on this audio"
    if extra.get("init_model"):
        return f"a model trained on this audio from the weights of model `{extra['init_model']}`"
    return "a model trained on this audio"


def untrained_encoder(workspace: Workspace, seed: int) -> Any:
    """The workspace's network with random weights and the trained one's input standardisation: the baseline
    differs in its weights only."""
    from embedtool.model.encoder import Encoder

    trained = Encoder.load(workspace.model)
    encoder = Encoder.untrained(trained.feature_settings, trained.train_settings, seed=seed)
    net = getattr(trained, "net", None)
    if net is not None and hasattr(net, "input_mean"):
        encoder.set_input_stats(float(net.input_mean.float().mean()), float(net.input_std.float().mean()))
    return encoder


def _pretrained_encoder(workspace: Workspace, store: EmbeddingStore, name: str) -> tuple[Any, str]:
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
def _baseline_export_dir(workspace: Workspace, system: str, keep: bool) -> Iterator[Path]:
    """Where a baseline network's export goes. A bundled model's is kept in ``reports/.baselines/SYSTEM``, so
    evaluating an unchanged library again reuses it and a grown one embeds only the new tracks (the export's
    own model/settings/track checks decide); the untrained network's, whose input standardisation follows the
    features rather than its fingerprint, goes to a temporary folder."""
    if keep:
        yield Path(workspace.reports) / BASELINE_EXPORTS / system
        return
    with tempfile.TemporaryDirectory(prefix=f"embedtool-{system}-") as tmp:
        yield Path(tmp)


def _export_with(workspace: Workspace, store: EmbeddingStore, encoder: Encoder, tmp: Path) -> Any:
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
    workspace: Workspace,
    options: EvaluateOptions,
    classify_options: ClassifyOptions | None = None,
    cluster_options: ClusterOptions | None = None,
    progress: Progress | None = None,
    teacher_dir: Path | None = None,
) -> EvaluateReport:
    """Evaluate the workspace's embeddings (and baselines) and write a report folder under ``reports/``:
    the learnt embeddings, the feature baseline, the network baselines, robustness, then the report.
    ``teacher_dir``: the teacher cache that ``classify_options.features`` joins to every learnt system's
    descriptors; the teacher alone is then scored as a system of its own too."""

    run = _Evaluation(
        workspace, options, classify_options or ClassifyOptions(), cluster_options or ClusterOptions(), progress
    )
    run.teacher_dir = teacher_dir
    with run.cpu.applied():  # torch's threads follow the free CPUs, looked at again before each system
        return _evaluate(run, workspace, options, progress)


def _evaluate(
    run: _Evaluation, workspace: Workspace, options: EvaluateOptions, progress: Progress | None
) -> EvaluateReport:
    from embedtool.embedding.store import EmbeddingStore

    store = EmbeddingStore(workspace.embeddings)
    store.use_current_labels(workspace.features)  # labels are the features' (extract --labels after embed)
    data = run.labelled(store)
    run.timed("embeddings", lambda: run.system("embeddings", data))
    teacher = run.teacher()
    if teacher is not None:
        from embedtool.model.teachers import load_teacher_vectors

        alone = data.with_vectors(load_teacher_vectors(teacher[1], data.track_ids, teacher[0]))
        run.timed(teacher[0], lambda: run.system(teacher[0], alone, standardise_vectors=True))
    if options.baselines:
        run.timed(options.baseline_kind, lambda: run.feature_baseline(store, data))
    for system, encoder in run.network_baselines(store):
        run.timed(system, lambda system=system, encoder=encoder: run.network_baseline(system, encoder, store, data))
    robustness = None
    if options.robustness:
        robustness = run.timed("robustness", lambda: run_robustness(workspace, store, options, progress))
    return run.write_report(store, data, robustness)


class _Evaluation:
    """One evaluate run: its options, the persisted split, the systems measured so far, timings and notes."""

    def __init__(
        self,
        workspace: Workspace,
        options: EvaluateOptions,
        classify_options: ClassifyOptions,
        cluster_options: ClusterOptions,
        progress: Progress | None,
    ):
        self.workspace, self.options, self.progress = workspace, options, progress
        self.classify_options, self.cluster_options = classify_options, cluster_options
        self.systems: dict[str, dict[str, Any]] = {}
        self.timings: dict[str, float] = {}
        self.notes: list[str] = []
        self.split: dict[str, str] | None = None
        self.teacher_dir: Path | None = None
        self.cpu = CpuBudget("evaluate")

    def teacher(self) -> tuple[str, Path] | None:
        """(name, cache folder) of the teacher the classify options join to the descriptors, if any."""
        name = teacher_of(self.classify_options.features)
        if name is None or self.teacher_dir is None or not uses_descriptors(self.classify_options):
            return None
        return name, self.teacher_dir

    def step(self, stage: str, done: int = 0, total: int = 1) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)

    def timed(self, name: str, work: Callable[[], Any]) -> Any:
        self.cpu.recheck()
        clock = time.perf_counter()
        result = work()
        self.timings[name] = time.perf_counter() - clock
        return result

    def labelled(self, store: EmbeddingStore) -> LabelledData:
        """The labelled tracks (or segments) of an export, read as the classify options say."""
        level = self.classify_options.level == "segment"
        data = LabelledData.from_store(store, level, uses_descriptors(self.classify_options))
        teacher = self.teacher()
        if teacher is not None:
            data = with_teacher(data, teacher[1], teacher[0])
        if not self.classify_options.cv and self.split is None:
            from embedtool.training.splits import load_split

            self.split = load_split(self.workspace.split)
        return data

    def system(self, name: str, data: LabelledData, standardise_vectors: bool = False) -> None:
        self.step(name)
        self.systems[name] = evaluate_system(
            data, self.options, self.classify_options, self.cluster_options, self.split, standardise_vectors
        )

    def feature_baseline(self, store: EmbeddingStore, data: LabelledData) -> None:
        """MFCC (or log-Mel) statistics of the same tracks, standardised, through the same classifier and folds."""
        from embedtool.analysis.baselines import segment_baseline_vectors, track_baseline_vectors
        from embedtool.artefacts import check_compatible
        from embedtool.features.store import FeatureStore

        options = self.options
        self.step(f"{options.baseline_kind} baseline")
        features = FeatureStore(self.workspace.features)
        check_compatible(
            {"features": store.features_fingerprint},
            {"features": features.fingerprint},
            "embeddings vs features (re-run `embedtool embed` so the baseline sees the same tracks)",
        )
        base_vectors = track_baseline_vectors(features, data.track_ids, options.baseline_kind, options.n_mfcc)
        base_segments = None
        if self.classify_options.level == "segment":
            seg_rows = [
                {"track_id": data.track_ids[t], "start_s": a, "end_s": b}
                for t, (a, b) in zip(data.segment_track, data.segment_times, strict=True)
            ]
            base_segments = segment_baseline_vectors(features, seg_rows, options.baseline_kind, options.n_mfcc)
        self.systems[options.baseline_kind] = evaluate_system(
            data.with_vectors(base_vectors, base_segments),
            options,
            self.classify_options,
            self.cluster_options,
            self.split,
            standardise_vectors=True,
        )

    def network_baselines(self, store: EmbeddingStore) -> list[tuple[str, Any]]:
        """(name, encoder) of the other networks to compare with: untrained, and the bundled model."""
        options = self.options
        encoders: list[tuple[str, Any]] = []
        if options.untrained_baseline:
            encoders.append(("untrained", untrained_encoder(self.workspace, options.seed)))
        if options.pretrained_baseline:
            encoder, why_not = _pretrained_encoder(self.workspace, store, options.pretrained_baseline)
            if encoder is None:
                self.notes.append(f"No {options.pretrained_baseline} baseline: {why_not}.")
            else:
                encoders.append((options.pretrained_baseline, encoder))
        return encoders

    def network_baseline(self, system: str, encoder: Encoder, store: EmbeddingStore, data: LabelledData) -> None:
        """Another network's export of the same tracks, through the same classifier and folds."""
        self.step(f"{system} network baseline")
        with _baseline_export_dir(self.workspace, system, keep=system != "untrained") as directory:
            other = _export_with(self.workspace, store, encoder, directory)
            odata = self.labelled(other)
            if odata.track_ids != data.track_ids:
                raise InputError(
                    f"the {system} export holds other tracks than the embeddings; re-run `embedtool embed`"
                )
            self.systems[system] = evaluate_system(
                odata, self.options, self.classify_options, self.cluster_options, self.split
            )

    def write_report(
        self, store: EmbeddingStore, data: LabelledData, robustness: dict[str, Any] | None
    ) -> EvaluateReport:
        """Figures, report.json, report.md and meta.json (last) into ``reports/<name>/``, swapped into place."""
        from embedtool.artefacts import atomic_write_bytes, atomic_write_json, staged_dir, write_meta
        from embedtool.config import settings_dict

        options, systems = self.options, self.systems
        name = options.name or time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        final = Path(self.workspace.reports) / name
        clock = time.perf_counter()
        with staged_dir(final) as out:
            figures, projection = write_figures(out, store, data, systems, robustness, options)
            for r in systems.values():
                r.pop("_assignments", None)
            report = {
                "name": name,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "workspace": str(self.workspace.root),
                "inputs": {
                    "embeddings": store.fingerprint,
                    "model": store.model_fingerprint,
                    "features": store.features_fingerprint,
                },
                "tracks": len(store.tracks),
                "segments": store.n_segments,
                "labelled_tracks": len(data.track_ids),
                "labels": dict(sorted(Counter(data.labels).items())),
                "classification_scheme": systems["embeddings"]["classification"]["scheme"],
                "classification_note": systems["embeddings"]["classification"].get("note"),
                "model_origin": _model_origin(self.workspace),
                "classify_options": settings_dict(self.classify_options),
                "systems": systems,
                "robustness": robustness,
                "projection": projection,
                "figures": figures,
                "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
                "notes": self.notes,
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
        self.timings["report"] = time.perf_counter() - clock
        self.step("report written", 1, 1)
        return EvaluateReport(final, report)
