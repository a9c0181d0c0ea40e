"""The classify stage: evaluate a logistic-regression classifier on held-out tracks (``analysis.folds``), then
fit and save one (``analysis.classifier_store``).

``level="track"`` (the default) classifies one vector per track: with ``features="descriptors"`` (the default)
the track's descriptor, the network's stage activations pooled over its windows (see ``model.network`` and
``embedding.pooling.pool_descriptors``: richer in timbre than the search embedding, which the triplet objective
makes invariant to what does not tell recordings apart); with ``features="embeddings"`` the pooled track
embedding. ``level="segment"`` trains on every segment embedding of the training tracks (each with its track's
label) and predicts a track by averaging its segments' class probabilities.

Features are standardised (mean/scale from the training data) before a multinomial logistic regression (lbfgs,
L2, ``C``; ``C="auto"`` is chosen by an inner grouped cross-validation, ``analysis.folds.choose_C``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedtool.analysis.classifier import LinearClassifier, uses_descriptors
from embedtool.analysis.classifier_store import FORMAT_VERSION, KIND
from embedtool.analysis.folds import ClassifierEvaluation, choose_C, evaluate_classifier, fit_rows
from embedtool.analysis.labelled import LabelledData, with_teacher
from embedtool.analysis.options import ClassifyOptions
from embedtool.errors import MissingArtefactError
from embedtool.model.teachers import teacher_of
from embedtool.progress import Progress


@dataclass
class ClassifyReport:
    directory: Path
    classifier: LinearClassifier
    evaluation: ClassifierEvaluation
    figures: dict[str, str]
    trained_on: int  # tracks the saved classifier was fitted on


def run_classify(
    embeddings_dir: Path,
    classifier_dir: Path,
    options: ClassifyOptions,
    progress: Progress | None = None,
    *,
    split_dir: Path | None = None,
    features_dir: Path | None = None,
    teacher_dir: Path | None = None,
) -> ClassifyReport:
    """Evaluate a classifier on held-out tracks, then save one (refitted on all labels unless told not to).
    With ``features_dir``, labels and groups are the features' current ones (``extract --labels`` after
    ``embed``), not those recorded in the embeddings. ``teacher_dir``: the cache of the teacher vectors that
    ``options.features`` joins to the descriptors (``model.teachers.ensure_teacher_outputs`` fills it)."""
    from embedtool.analysis import plots
    from embedtool.artefacts import atomic_write_json, fingerprint_of, staged_dir, write_meta
    from embedtool.config import settings_dict
    from embedtool.embedding.store import EmbeddingStore

    store = EmbeddingStore(Path(embeddings_dir))
    store.use_current_labels(features_dir)
    data = LabelledData.from_store(store, options.level == "segment", uses_descriptors(options))
    teacher = teacher_of(options.features)
    if teacher is not None and uses_descriptors(options):
        if teacher_dir is None:
            raise MissingArtefactError(f"classify.features {options.features!r} needs the {teacher} vectors' folder")
        data = with_teacher(data, Path(teacher_dir), teacher)
    split = None
    if not options.cv:
        if split_dir is None:
            raise MissingArtefactError("no split artefact given; pass split_dir or use cross-validation (cv)")
        from embedtool.training.splits import load_split

        split = load_split(Path(split_dir))
    step = (lambda d, t: progress("evaluating", d, t)) if progress else None
    evaluation = evaluate_classifier(data, options, split, step)
    if options.refit_all or options.cv:
        rows = np.arange(len(data.track_ids))
    else:
        rows = np.array([i for i, t in enumerate(data.track_ids) if split and split.get(t) == "train"])
    chosen_c = choose_C(data, rows, options)
    classifier = fit_rows(data, rows, options, chosen_c)

    classifier_dir = Path(classifier_dir)
    figures: dict[str, str] = {}
    with staged_dir(classifier_dir) as out:
        classifier.save(out)
        if options.plots:
            plots.plot_confusion(
                out / "confusion.png",
                np.asarray(evaluation.metrics["confusion"]),
                evaluation.metrics["labels"],
                title=f"confusion ({evaluation.scheme}, {options.level} level)",
            )
            figures["confusion"] = "confusion.png"
        atomic_write_json(out / "evaluation.json", evaluation.to_dict())
        config = settings_dict(options)
        write_meta(
            out,
            KIND,
            FORMAT_VERSION,
            config,
            inputs={"embeddings": store.fingerprint, "model": store.model_fingerprint},
            extra={
                "dim": classifier.dim,
                "classes": classifier.classes,
                "trained_on_tracks": int(len(rows)),
                "C": chosen_c,
                "scheme": evaluation.scheme,
                "accuracy": evaluation.metrics["accuracy"],
                "macro_f1": evaluation.metrics["macro_f1"],
                "embeddings_config": store.config,
            },
            fingerprint=fingerprint_of(config, store.fingerprint, classifier.coef.round(6).tolist()),
        )
    if progress is not None:
        progress("saved", 1, 1)
    return ClassifyReport(classifier_dir, classifier, evaluation, figures, int(len(rows)))
