"""The classifier as plain arrays: standardisation + multinomial logistic regression (``LinearClassifier``), its
fit (scikit-learn, ``fit_classifier``), and which vectors a classifier of given options reads.

The saved classifier is plain arrays (classes, coef, intercept, scaler mean/scale): no pickle, and predictions are
a few lines of numpy (``LinearClassifier.predict_proba``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedtool.analysis.options import ClassifyOptions
from embedtool.errors import IncompatibleArtefactError, InputError

FALLBACK_C = 1.0  # the C of C="auto" when no inner split can choose one


def reads_descriptors(level: str, features: str) -> bool:
    """Whether a classifier of this level and ``features`` reads track descriptors ("descriptors", or with a
    teacher's vectors beside them); segment level always reads segment embeddings."""
    return level == "track" and features.startswith("descriptors")


def uses_descriptors(options: ClassifyOptions) -> bool:
    """Whether these options classify track descriptors."""
    return reads_descriptors(options.level, options.features)


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
