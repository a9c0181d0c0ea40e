"""A logistic-regression classifier on embeddings: evaluation on held-out tracks, persistence, predictions.

Evaluation never mixes a track (or a group of tracks) between training and test:
- the default uses the split persisted by ``embedtool train`` (``split/``: by track, or by group when known);
- ``cv=N`` uses N-fold cross-validation grouped by track group (StratifiedGroupKFold: folds keep label
  proportions as far as the groups allow); tracks without a group are their own group. ``cv_by="track"`` makes
  every track its own group (folds by track, for groups that are not worth keeping apart).

``level="track"`` (the default) classifies one vector per track: with ``features="descriptors"`` (the default)
the track's descriptor, the network's stage activations pooled over its windows (see ``model.network`` and
``embedding.pooling.pool_descriptors``: richer in timbre than the search embedding, which the triplet objective
makes invariant to what does not tell recordings apart); with ``features="embeddings"`` the pooled track
embedding. ``level="segment"`` trains on every segment embedding of the training tracks (each with its track's
label) and predicts a track by averaging its segments' class probabilities.

Features are standardised (mean/scale from the training data) before a multinomial logistic regression (lbfgs,
L2, ``C``). ``C="auto"`` (the default) picks C from ``C_GRID`` by an inner grouped cross-validation on the
training tracks alone (macro-F1; ties go to the stronger regularisation), so the held-out tracks never steer it;
too few groups or tracks per label for an inner split falls back to C=1. The saved classifier is plain arrays
(classes, coef, intercept, scaler mean/scale) with provenance: no pickle, and predictions are a few lines of
numpy (``LinearClassifier.predict_proba``).

Layout of ``<workspace>/classifier/``::

    meta.json          provenance: options, embeddings + model fingerprints, feature settings, metrics (last)
    classes.json       class names, in the order of the coefficient rows
    coef.npy           float32 (classes, dim)
    intercept.npy      float32 (classes,)
    scaler_mean.npy    float32 (dim,)
    scaler_scale.npy   float32 (dim,)
    evaluation.json    accuracy, macro-F1, per-class table, confusion matrix, per-track predictions
    confusion.png      the confusion matrix
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from embedtool.analysis.options import ClassifyOptions
from embedtool.embedding.pooling import track_descriptor_dim
from embedtool.embedding.store import SegmentGrid
from embedtool.embedding.teachers import teacher_dim, teacher_of
from embedtool.errors import IncompatibleArtefactError, InputError, MissingArtefactError
from embedtool.progress import Progress

if TYPE_CHECKING:
    from embedtool.embedding.store import EmbeddingStore
    from embedtool.model.encoder import Encoder


KIND = "classifier"
FORMAT_VERSION = 1
C_GRID = (0.01, 0.1, 1.0, 10.0)  # candidates of C="auto"
INNER_FOLDS = 3
FALLBACK_C = 1.0


def reads_descriptors(level: str, features: str) -> bool:
    """Whether a classifier of this level and ``features`` reads track descriptors ("descriptors", or with a
    teacher's vectors beside them); segment level always reads segment embeddings."""
    return level == "track" and features.startswith("descriptors")


def uses_descriptors(options: ClassifyOptions) -> bool:
    """Whether these options classify track descriptors."""
    return reads_descriptors(options.level, options.features)


def with_teacher(data: LabelledData, teacher_dir: Path, name: str) -> LabelledData:
    """``data`` with each track's teacher vector after its descriptor (``embedding.teachers``)."""
    from embedtool.embedding.teachers import load_teacher_vectors

    if data.descriptors is None:
        raise InputError(f"the {name} teacher joins track descriptors: classify at track level on descriptors")
    vectors = load_teacher_vectors(teacher_dir, data.track_ids, name)
    return replace(data, descriptors=np.hstack([data.descriptors, vectors]).astype(np.float32))


# --- the model as plain arrays -------------------------------------------------------------------------------


@dataclass
class LinearClassifier:
    """Standardisation + multinomial logistic regression as plain arrays."""

    classes: list[str]
    coef: np.ndarray  # (n_classes, dim)
    intercept: np.ndarray  # (n_classes,)
    mean: np.ndarray  # (dim,)
    scale: np.ndarray  # (dim,)

    @property
    def dim(self) -> int:
        return int(self.coef.shape[1])

    def decision(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 1:
            x = x[None, :]
        if x.shape[1] != self.dim:
            raise IncompatibleArtefactError(
                f"classifier expects {self.dim}-dimensional vectors, got {x.shape[1]}-dimensional ones"
            )
        return ((x - self.mean) / self.scale) @ self.coef.T.astype(np.float64) + self.intercept

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = self.decision(x)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, x: np.ndarray) -> list[str]:
        return [self.classes[i] for i in np.argmax(self.predict_proba(x), axis=1)]

    def save(self, directory: Path) -> None:
        from embedtool.artefacts import atomic_save_npy, atomic_write_json

        directory = Path(directory)
        atomic_write_json(directory / "classes.json", self.classes)
        atomic_save_npy(directory / "coef.npy", self.coef.astype(np.float32))
        atomic_save_npy(directory / "intercept.npy", self.intercept.astype(np.float32))
        atomic_save_npy(directory / "scaler_mean.npy", self.mean.astype(np.float32))
        atomic_save_npy(directory / "scaler_scale.npy", self.scale.astype(np.float32))

    @classmethod
    def load(cls, directory: Path) -> LinearClassifier:
        directory = Path(directory)
        try:
            return cls.load_from(directory / "coef.npy")
        except (OSError, ValueError) as exc:
            raise IncompatibleArtefactError(f"Unreadable classifier in {directory}: {exc}") from exc

    @classmethod
    def load_from(cls, coef_path: Path) -> LinearClassifier:
        """The classifier whose ``coef.npy`` is ``coef_path`` (its other arrays beside it); raises on a bad file."""
        directory = coef_path.parent
        classifier = cls(
            classes=list(json.loads((directory / "classes.json").read_text())),
            coef=np.load(coef_path),
            intercept=np.load(directory / "intercept.npy"),
            mean=np.load(directory / "scaler_mean.npy"),
            scale=np.load(directory / "scaler_scale.npy"),
        )
        arrays = (classifier.coef, classifier.intercept, classifier.mean, classifier.scale)
        if not all(np.isfinite(a).all() for a in arrays):
            raise ValueError("NaN or infinite values in the classifier's arrays")
        return classifier


def fit_classifier(
    x: np.ndarray, y: Sequence[str], options: ClassifyOptions, C: float | None = None
) -> LinearClassifier:
    """Standardise, fit a logistic regression (scikit-learn), and return it as plain arrays.

    ``C`` overrides ``options.C`` (needed when that is "auto": the caller chooses, see ``choose_C``)."""
    from sklearn.linear_model import LogisticRegression

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray([str(v) for v in y])
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise InputError(f"a classifier needs at least two labels in its training data, got {classes}")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-12] = 1.0  # constant columns carry no information; leave them unscaled
    C = float(C if C is not None else (FALLBACK_C if options.C == "auto" else options.C))
    model = LogisticRegression(
        C=C,
        max_iter=options.max_iter,
        class_weight="balanced" if options.class_weight == "balanced" else None,
        random_state=options.seed,
    )
    from threadpoolctl import threadpool_limits

    # One BLAS thread: these fits are small, and with BLAS's default threads on a machine busy with other work a
    # grouped 5-fold evaluation ran 7.7x slower (bench/bench_fusion.py's note; 16.5 s vs 2.1 s, music-dev).
    with threadpool_limits(1):
        model.fit((x - mean) / scale, y)
    coef, intercept = model.coef_, model.intercept_
    if len(model.classes_) == 2:
        # Binary: scikit-learn keeps one row w (logit of class 1). Softmax over [-w/2, w/2] is that sigmoid.
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    return LinearClassifier([str(c) for c in model.classes_], coef, intercept, mean, scale)


# --- labelled data -------------------------------------------------------------------------------------------


@dataclass
class LabelledData:
    """Labelled tracks and their vectors (track level) plus, optionally, their segments' vectors."""

    track_ids: list[str]
    labels: list[str]
    groups: list[str]  # a track without a group is its own group
    vectors: np.ndarray  # (tracks, dim)
    segment_vectors: np.ndarray | None = None  # (segments, dim)
    segment_track: np.ndarray | None = None  # (segments,) row of each segment's track in ``track_ids``
    segment_times: list[tuple[float, float]] = field(default_factory=list)
    descriptors: np.ndarray | None = None  # (tracks, descriptor_dim), when the store has them

    def track_matrix(self, features: str) -> np.ndarray:
        """The per-track vectors a track-level classifier reads: descriptors when asked for and present (a
        baseline carries only ``vectors``), else the track vectors."""
        if features.startswith("descriptors") and self.descriptors is not None:
            return self.descriptors
        return self.vectors

    def __post_init__(self) -> None:
        if not self.track_ids:
            raise InputError(
                "No labelled tracks: classification needs labels (folder-of-folders under the extracted root, "
                "or `embedtool extract --labels FILE`)"
            )
        distinct = sorted(set(self.labels))
        if len(distinct) < 2:
            raise InputError(
                f"Only one label ({distinct[0]!r}) among {len(self.labels)} labelled tracks: a classifier needs "
                "at least two"
            )

    @classmethod
    def from_store(cls, store: EmbeddingStore, segments: bool = False, descriptors: bool = False) -> LabelledData:
        """The labelled tracks of an ``EmbeddingStore`` (unlabelled tracks are left out); ``descriptors`` loads
        their descriptors too (a store without them raises ``MissingArtefactError``)."""
        tracks = sorted((t for t in store.tracks if t.get("label") not in (None, "")), key=lambda t: t["row"])
        all_vectors = np.asarray(store.track_vectors(), dtype=np.float32)
        rows = [t["row"] for t in tracks]
        data = {
            "track_ids": [t["track_id"] for t in tracks],
            "labels": [str(t["label"]) for t in tracks],
            "groups": [str(t.get("group") or f"track:{t['track_id']}") for t in tracks],
            "vectors": all_vectors[rows] if rows else np.zeros((0, all_vectors.shape[1]), np.float32),
        }
        if descriptors and rows:
            data["descriptors"] = np.asarray(store.track_descriptors(), dtype=np.float32)[rows]
        if segments and tracks:
            seg_all = np.asarray(store.segment_vectors(), dtype=np.float32)
            seg_rows, seg_track, times = [], [], []
            for i, t in enumerate(tracks):
                rows, _ = store.segments_of(t["track_id"])
                for r in rows.tolist():
                    seg_rows.append(r)
                    seg_track.append(i)
                    times.append((float(store.segment_starts[r]), float(store.segment_ends[r])))
            data["segment_vectors"] = seg_all[seg_rows]
            data["segment_track"] = np.asarray(seg_track, dtype=np.int64)
            data["segment_times"] = times
        return cls(**data)

    def with_vectors(self, vectors: np.ndarray, segment_vectors: np.ndarray | None = None) -> LabelledData:
        """The same tracks, labels, groups (and segment layout) with other vectors (baselines)."""
        return LabelledData(
            self.track_ids,
            self.labels,
            self.groups,
            np.asarray(vectors, dtype=np.float32),
            None if segment_vectors is None else np.asarray(segment_vectors, dtype=np.float32),
            self.segment_track if segment_vectors is not None else None,
            self.segment_times if segment_vectors is not None else [],
        )  # no descriptors: a baseline is one set of vectors

    def fold_groups(self, cv_by: Literal["group", "track"]) -> list[str]:
        """The group of each track that cross-validation folds keep together: its group, or the track itself."""
        return list(self.track_ids) if cv_by == "track" else self.groups

    def label_counts(self, rows: Sequence[int] | None = None) -> Counter:
        rows = range(len(self.labels)) if rows is None else rows
        return Counter(self.labels[i] for i in rows)


def _fit_rows(
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
            clf = _fit_rows(data, train_rows, options, c)
            proba = _predict_rows(clf, data, test_rows, options)
            predicted += [clf.classes[i] for i in np.argmax(proba, axis=1)]
            truth += [data.labels[r] for r in test_rows]
        f1 = float(f1_score(truth, predicted, average="macro", zero_division=0))
        if f1 > best_f1 + 1e-9:
            best_c, best_f1 = c, f1
    return best_c


def _predict_rows(clf: LinearClassifier, data: LabelledData, rows: np.ndarray, options: ClassifyOptions) -> np.ndarray:
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
        clf = _fit_rows(data, train_rows, options, c)
        proba = _predict_rows(clf, data, test_rows, options)
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


# --- the artefact --------------------------------------------------------------------------------------------


@dataclass
class ClassifyResult:
    directory: Path
    classifier: LinearClassifier
    evaluation: ClassifierEvaluation
    figures: dict[str, str]
    trained_on: int  # tracks the saved classifier was fitted on


def run_classify(
    embeddings_dir: Path,
    classifier_dir: Path,
    options: ClassifyOptions,
    split_dir: Path | None = None,
    progress: Progress | None = None,
    features_dir: Path | None = None,
    teacher_dir: Path | None = None,
) -> ClassifyResult:
    """Evaluate a classifier on held-out tracks, then save one (refitted on all labels unless told not to).
    With ``features_dir``, labels and groups are the features' current ones (``extract --labels`` after
    ``embed``), not those recorded in the embeddings. ``teacher_dir``: the cache of the teacher vectors that
    ``options.features`` joins to the descriptors (``embedding.teachers.ensure_teacher_vectors`` fills it)."""
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
    classifier = _fit_rows(data, rows, options, chosen_c)

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
    return ClassifyResult(classifier_dir, classifier, evaluation, figures, int(len(rows)))


# --- predictions for new audio -------------------------------------------------------------------------------


@dataclass
class FilePrediction:
    """One query file's predicted label; or, with ``error`` set, why it could not be classified."""

    path: str
    label: str
    probabilities: dict[str, float]
    duration_s: float
    segments: list[dict[str, Any]] = field(default_factory=list)  # start_s, end_s, label, probabilities
    error: str | None = None

    @classmethod
    def failed(cls, path: Path, error: str) -> FilePrediction:
        return cls(str(path), "", {}, 0.0, error=error)

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        out = {
            "path": self.path,
            "label": self.label,
            "probabilities": self.probabilities,
            "duration_s": self.duration_s,
        }
        if self.segments:
            out["segments"] = self.segments
        return out


class SavedClassifier:
    """A classifier artefact with the model it belongs to, ready to label new audio files."""

    def __init__(self, classifier_dir: Path):
        from embedtool.artefacts import read_member, read_meta

        self.directory = Path(classifier_dir)
        self.meta = read_meta(self.directory, KIND, FORMAT_VERSION)
        self.classifier = read_member(self.meta, self.directory, "coef.npy", LinearClassifier.load_from)
        self.level = self.meta.config.get("level", "track")
        # Classifiers saved before descriptors existed read embeddings.
        features = str(self.meta.config.get("features", "embeddings"))
        self.reads_descriptors = reads_descriptors(self.level, features)
        self.teacher = teacher_of(features) if self.reads_descriptors else None
        self._teacher_model: Any = None

    def _input_dim(self, embedding_dim: int | None, descriptor_dim: int | None) -> int | None:
        if not self.reads_descriptors:
            return embedding_dim
        if self.teacher is None or descriptor_dim is None:
            return descriptor_dim
        return descriptor_dim + teacher_dim(self.teacher)

    def teacher_vector(self, path: Path) -> np.ndarray | None:
        """The teacher network's vector of the audio file ``path`` when the classifier reads one (the network
        is loaded once, at the first file)."""
        if self.teacher is None:
            return None
        from embedtool.embedding.teachers import file_vector, teacher_network

        if self._teacher_model is None:
            self._teacher_model = teacher_network(self.teacher)
        return file_vector(self.teacher, path, self._teacher_model)

    def check_embeddings(self, store: EmbeddingStore) -> None:
        """Refuse embeddings other than the ones the classifier was trained on (model or dimension differ)."""
        from embedtool.artefacts import check_compatible

        check_compatible(
            {"model": self.meta.inputs.get("model"), "dim": self.classifier.dim},
            {"model": store.model_fingerprint, "dim": self._input_dim(store.dim, store.descriptor_dim)},
            "classifier vs embeddings (re-run `embedtool classify` after re-training or re-embedding)",
        )

    def check_encoder(self, encoder: Encoder) -> None:
        from embedtool.artefacts import check_compatible

        dim = self._input_dim(encoder.embedding_dim, track_descriptor_dim(encoder))
        check_compatible(
            {"model": self.meta.inputs.get("model"), "dim": self.classifier.dim},
            {"model": encoder.fingerprint, "dim": dim},
            "classifier vs model (re-run `embedtool classify` after re-training)",
        )

    def hop_frames(self, encoder: Encoder) -> int:
        """The segment hop the embeddings were exported with (same windows as the training vectors); half a
        segment for classifiers saved without the export's config."""
        config = self.meta.extra.get("embeddings_config", {})
        if "hop_frames" in config:
            return SegmentGrid.from_config(config).hop_frames
        return max(1, encoder.segment_frames // 2)

    def predict_mel(
        self, mel: np.ndarray, encoder: Encoder, segments: bool = False, teacher: np.ndarray | None = None
    ) -> tuple[str, dict, list]:
        """Label of one log-Mel matrix, read the way the training tracks were: the pooled descriptor or the pooled
        embedding of its windows (or their averaged probabilities at segment level). ``teacher``: the file's
        teacher vector, joined to the track descriptor and (the file's, not the window's) to each window's."""
        from embedtool.embedding.pooling import pool_track, track_descriptor, window_track_descriptors

        starts, emb, desc, energy = encoder.embed_track(mel, self.hop_frames(encoder), descriptors=True)
        seg_proba = np.zeros((0, len(self.classifier.classes)))
        if self.level == "segment" or segments:  # each window read as a track of one window, as trained
            windows = (
                window_track_descriptors(desc, energy, mel, starts, encoder.segment_frames)
                if self.reads_descriptors
                else emb
            )
            if teacher is not None and self.reads_descriptors:
                windows = np.hstack([windows, np.repeat(teacher[None, :], len(windows), axis=0)])
            seg_proba = self.classifier.predict_proba(windows)
        if self.level == "segment":
            proba = seg_proba.mean(axis=0)
        elif self.reads_descriptors:
            row = track_descriptor(desc, energy, mel)
            if teacher is not None:
                row = np.concatenate([row, teacher])
            proba = self.classifier.predict_proba(row[None, :])[0]
        else:
            proba = self.classifier.predict_proba(pool_track(emb)[None, :])[0]
        classes = self.classifier.classes
        label = classes[int(np.argmax(proba))]
        seg_rows = []
        if segments:
            fs = encoder.feature_settings
            for start, p in zip(np.asarray(starts).tolist(), seg_proba, strict=True):
                end = min(mel.shape[0], start + encoder.segment_frames)
                seg_rows.append(
                    {
                        "start_s": round(fs.frames_to_seconds(start), 3),
                        "end_s": round(fs.frames_to_seconds(end), 3),
                        "label": classes[int(np.argmax(p))],
                        "probabilities": {c: float(v) for c, v in zip(classes, p, strict=True)},
                    }
                )
        return label, {c: float(v) for c, v in zip(classes, proba, strict=True)}, seg_rows


def predict_files(
    classifier_dir: Path,
    model_dir: Path,
    paths: Sequence[Path],
    segments: bool = False,
    encoder: Encoder | None = None,
    progress: Progress | None = None,
    errors: Literal["raise", "report"] = "raise",
) -> list[FilePrediction]:
    """Predict each audio file's label (and each segment's with ``segments``) with the saved classifier.

    Audio goes through the features front end library tracks went through (``features.frontend``) and the
    model's ``embed_track``; a classifier trained on another model's embeddings is refused. A file that cannot be
    read raises :class:`InputError`, or with ``errors="report"`` becomes a :meth:`FilePrediction.failed` entry
    while the other files are still classified.
    """
    saved = SavedClassifier(classifier_dir)
    if encoder is None:
        from embedtool.model.encoder import Encoder

        encoder = Encoder.load(Path(model_dir))
    saved.check_encoder(encoder)
    out = []
    for i, path in enumerate(paths):
        path = Path(path)
        try:
            out.append(_predict_file(saved, encoder, path, segments))
        except InputError as exc:
            if errors == "raise":
                raise
            out.append(FilePrediction.failed(path, str(exc)))
        if progress is not None:
            progress("classifying", i + 1, len(paths))
    return out


def _predict_file(saved: SavedClassifier, encoder: Encoder, path: Path, segments: bool) -> FilePrediction:
    from embedtool.features.frontend import featurise_query

    mel, info = featurise_query(path, encoder.feature_settings)
    mel = np.asarray(mel, dtype=np.float32)
    if mel.shape[0] == 0:
        raise InputError(f"{path} holds no audio frames")
    label, proba, seg_rows = saved.predict_mel(mel, encoder, segments, saved.teacher_vector(path))
    return FilePrediction(str(path), label, proba, float(info.duration_s), seg_rows)
