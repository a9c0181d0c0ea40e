"""Evaluating a classifier on held-out tracks: the persisted split or grouped cross-validation folds, the inner
choice of C, and the metrics.

Evaluation never mixes a track (or a group of tracks) between training and test:
- the default uses the split persisted by ``embedtool train`` (``split/``: by track, or by group when known);
- ``cv=N`` uses N-fold cross-validation grouped by track group (StratifiedGroupKFold: folds keep label
  proportions as far as the groups allow); tracks without a group are their own group. ``cv_by="track"`` makes
  every track its own group (folds by track, for groups that are not worth keeping apart).

``C="auto"`` picks C from ``C_GRID`` by an inner grouped cross-validation on the training tracks alone
(macro-F1; ties go to the stronger regularisation), so the held-out tracks never steer it; too few groups or
tracks per label for an inner split falls back to C=1.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from embedtool.analysis.classifier import FALLBACK_C, LinearClassifier, fit_classifier
from embedtool.analysis.labelled import LabelledData
from embedtool.analysis.options import ClassifyOptions
from embedtool.errors import InputError

C_GRID = (0.01, 0.1, 1.0, 10.0)  # candidates of C="auto"
INNER_FOLDS = 3


def fit_rows(
    data: LabelledData, rows: np.ndarray, options: ClassifyOptions, C: float | None = None
) -> LinearClassifier:
    if options.level == "segment":
        if data.segment_vectors is None or data.segment_track is None:
            raise InputError("segment-level classification needs segment vectors")
        mask = np.isin(data.segment_track, rows)
        x, y = data.segment_vectors[mask], [data.labels[t] for t in data.segment_track[mask]]
        return fit_classifier(x, y, options, C)
    return fit_classifier(data.track_matrix(options.features)[rows], [data.labels[i] for i in rows], options, C)


def choose_C(data: LabelledData, rows: np.ndarray, options: ClassifyOptions) -> float:
    """``options.C``, or for "auto" the ``C_GRID`` value with the best inner grouped-CV macro-F1 on ``rows``."""
    if options.C != "auto":
        return float(options.C)
    from sklearn.metrics import f1_score
    from sklearn.model_selection import StratifiedGroupKFold

    labels = [data.labels[r] for r in rows]
    all_groups = data.fold_groups(options.cv_by)
    groups = [all_groups[r] for r in rows]
    counts = Counter(labels)
    n_folds = min(INNER_FOLDS, len(set(groups)), min(counts.values()))
    if n_folds < 2 or len(counts) < 2:
        return FALLBACK_C
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class": some folds may lack a label
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=options.seed)
        inner = [(rows[a], rows[b]) for a, b in splitter.split(rows, labels, groups)]
    inner = [(a, b) for a, b in inner if len({data.labels[r] for r in a}) >= 2]
    if not inner:
        return FALLBACK_C
    best_c, best_f1 = FALLBACK_C, -1.0
    for c in C_GRID:  # ascending: a tie keeps the stronger regularisation
        truth, predicted = [], []
        for train_rows, test_rows in inner:
            clf = fit_rows(data, train_rows, options, c)
            proba = predict_rows(clf, data, test_rows, options)
            predicted += [clf.classes[i] for i in np.argmax(proba, axis=1)]
            truth += [data.labels[r] for r in test_rows]
        f1 = float(f1_score(truth, predicted, average="macro", zero_division=0))
        if f1 > best_f1 + 1e-9:
            best_c, best_f1 = c, f1
    return best_c


def predict_rows(clf: LinearClassifier, data: LabelledData, rows: np.ndarray, options: ClassifyOptions) -> np.ndarray:
    """Class probabilities (len(rows), classes) per track; segment level averages the segments' probabilities."""
    if options.level == "segment":
        assert data.segment_vectors is not None and data.segment_track is not None
        proba = clf.predict_proba(data.segment_vectors)
        out = np.zeros((len(rows), len(clf.classes)))
        for i, r in enumerate(rows):
            mine = data.segment_track == r
            out[i] = proba[mine].mean(axis=0) if mine.any() else np.full(len(clf.classes), 1 / len(clf.classes))
        return out
    return clf.predict_proba(data.track_matrix(options.features)[rows])


# --- metrics -------------------------------------------------------------------------------------------------


def classification_metrics(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 (over ``labels``), per-class precision/recall/F1/support, confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    labels = list(labels)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    present = [lab for lab in labels if lab in set(y_true)]
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # Macro-F1 over the labels present in the test data: an absent label has no defined recall.
        "macro_f1": float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)),
        "labels": labels,
        "per_class": [
            {
                "label": lab,
                "precision": float(p),
                "recall": float(r),
                "f1": float(f),
                "support": int(s),
            }
            for lab, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        ],
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).astype(int).tolist(),
    }


@dataclass
class ClassifierEvaluation:
    """Held-out predictions for every evaluated track, and the metrics computed from them."""

    scheme: str  # "split" or "cv-N"
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]  # track_id, label, predicted, probabilities, fold
    folds: list[dict[str, Any]]  # per fold: train/test track counts, accuracy, macro-F1
    note: str | None = None  # why the scheme is not the one asked for (a persisted split too small to judge by)

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "note": self.note, **self.metrics, "folds": self.folds,
                "predictions": self.predictions}  # fmt: skip


# A persisted split holding out fewer tracks than this (in all, or of some label) gives figures that say little:
# 1 held-out track scores 1.000 or 0.000. Grouped cross-validation then tests every labelled track once.
SMALL_HELD_OUT_TRACKS = 20
SMALL_HELD_OUT_PER_LABEL = 5


def small_split_switch(
    data: LabelledData, split: dict[str, str], cv_by: Literal["group", "track"] = "group"
) -> tuple[int, str] | None:
    """(folds, why) when the persisted split holds out too few labelled tracks to judge a classifier by and grouped
    cross-validation is possible instead (at least 2 folds: that many groups of ``cv_by``, and tracks of every
    label); None when the split is fine or nothing better can be done."""
    held_out = [i for i, t in enumerate(data.track_ids) if split.get(t) == "val"]
    per_label = data.label_counts(np.asarray(held_out, dtype=np.int64))
    smallest = min((per_label.get(lab, 0) for lab in set(data.labels)), default=0)
    if len(held_out) >= SMALL_HELD_OUT_TRACKS and smallest >= SMALL_HELD_OUT_PER_LABEL:
        return None
    counts = data.label_counts()
    folds = min(5, len(set(data.fold_groups(cv_by))), min(counts.values(), default=0))
    if folds < 2:
        return None
    why = (
        f"the persisted split holds out only {len(held_out)} labelled track(s) ({smallest} of the rarest label), "
        f"too few to judge by: grouped {folds}-fold cross-validation instead, every labelled track tested once"
    )
    return folds, why


def split_folds(
    data: LabelledData, split: dict[str, str] | None, options: ClassifyOptions
) -> tuple[str, list[tuple[np.ndarray, np.ndarray]]]:
    """(scheme, [(train_rows, test_rows)]) for the persisted split or grouped CV, checking every label is
    trainable. Raises ``InputError`` naming the labels and counts when the split asked for cannot work."""
    counts = data.label_counts()
    if options.cv:
        groups = data.fold_groups(options.cv_by)
        n_groups = len(set(groups))
        if n_groups < options.cv:
            raise InputError(
                f"--cv {options.cv} needs at least {options.cv} groups of tracks, but the labelled tracks form "
                f"only {n_groups}; use a smaller --cv" + (" or --cv-by track" if options.cv_by == "group" else "")
            )
        short = {lab: n for lab, n in sorted(counts.items()) if n < options.cv}
        if short:
            raise InputError(
                f"--cv {options.cv} needs at least {options.cv} tracks per label; too few for: "
                + ", ".join(f"{lab} ({n})" for lab, n in short.items())
                + ". Use a smaller --cv or label more tracks"
            )
        from sklearn.model_selection import StratifiedGroupKFold

        splitter = StratifiedGroupKFold(n_splits=options.cv, shuffle=True, random_state=options.seed)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "least populated class" — checked ourselves below
            folds = [(np.asarray(tr), np.asarray(te)) for tr, te in splitter.split(data.vectors, data.labels, groups)]
        for i, (train_rows, test_rows) in enumerate(folds):
            missing = sorted(set(data.label_counts(test_rows)) - set(data.label_counts(train_rows)))
            if missing:
                raise InputError(
                    f"grouped cross-validation fold {i + 1} holds out every track of label(s) "
                    f"{', '.join(missing)}: their tracks share too few groups (a label confined to one group "
                    "cannot be tested on unseen groups). Relabel the groups, fold by track (--cv-by track), or use "
                    "the persisted split"
                )
        return f"cv-{options.cv}", folds
    if split is None:
        raise InputError("no split given: pass the persisted split or use cross-validation (--cv N)")
    subsets = [split.get(t) for t in data.track_ids]
    train_rows = np.array([i for i, s in enumerate(subsets) if s == "train"], dtype=np.int64)
    test_rows = np.array([i for i, s in enumerate(subsets) if s == "val"], dtype=np.int64)
    if len(test_rows) == 0:
        raise InputError(
            "the persisted split holds no labelled validation tracks: nothing to evaluate on "
            "(use cross-validation with --cv N, or retrain with a larger validation fraction)"
        )
    train_counts = data.label_counts(train_rows)
    untrainable = sorted(lab for lab in counts if train_counts.get(lab, 0) == 0)
    if untrainable:
        raise InputError(
            "too few tracks per label for the persisted split: no training track for "
            + ", ".join(f"{lab} ({counts[lab]} track(s), all in validation)" for lab in untrainable)
            + ". Label more tracks or use --cv N"
        )
    if len(train_counts) < 2:
        raise InputError("the persisted split's training tracks carry a single label; a classifier needs two")
    return "split", [(train_rows, test_rows)]


def evaluate_classifier(
    data: LabelledData,
    options: ClassifyOptions,
    split: dict[str, str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> ClassifierEvaluation:
    """Fit on training tracks and predict held-out ones: the persisted ``split`` or ``options.cv`` folds (grouped
    cross-validation instead of a persisted split too small to judge by: ``small_split_switch``)."""
    note = None
    wanted = split is not None and not options.cv and options.small_split == "cv"
    switch = small_split_switch(data, split, options.cv_by) if wanted else None
    try:
        scheme, folds = split_folds(data, split, replace(options, cv=switch[0]) if switch else options)
        note = switch[1] if switch else None
    except InputError:
        if switch is None:
            raise
        scheme, folds = split_folds(data, split, options)  # the groups cannot make folds: keep the split
    labels = sorted(set(data.labels))
    predictions: list[dict[str, Any]] = []
    fold_rows: list[dict[str, Any]] = []
    for f, (train_rows, test_rows) in enumerate(folds):
        c = choose_C(data, train_rows, options)
        clf = fit_rows(data, train_rows, options, c)
        proba = predict_rows(clf, data, test_rows, options)
        predicted = [clf.classes[i] for i in np.argmax(proba, axis=1)]
        truth = [data.labels[r] for r in test_rows]
        m = classification_metrics(truth, predicted, labels)
        fold_rows.append(
            {
                "fold": f,
                "train": len(train_rows),
                "test": len(test_rows),
                "C": c,
                "accuracy": m["accuracy"],
                "macro_f1": m["macro_f1"],
            }
        )
        for r, p, pred in zip(test_rows, proba, predicted, strict=True):
            predictions.append(
                {
                    "track_id": data.track_ids[r],
                    "label": data.labels[r],
                    "predicted": pred,
                    "probabilities": {c: float(v) for c, v in zip(clf.classes, p, strict=True)},
                    "fold": f,
                }
            )
        if progress is not None:
            progress(f + 1, len(folds))
    metrics = classification_metrics([p["label"] for p in predictions], [p["predicted"] for p in predictions], labels)
    return ClassifierEvaluation(scheme, metrics, predictions, fold_rows, note)
