"""The classifier artefact: its files, reading it back (``SavedClassifier``) and labelling new audio with it.

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

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from embedtool.analysis.classifier import LinearClassifier, reads_descriptors
from embedtool.artefacts import ArtefactMeta, ArtefactStore, read_member
from embedtool.embedding.pooling import track_descriptor_dim
from embedtool.embedding.store import SegmentGrid
from embedtool.errors import InputError
from embedtool.model.teachers import teacher_dim, teacher_of
from embedtool.progress import Progress

if TYPE_CHECKING:
    from embedtool.embedding.store import EmbeddingStore
    from embedtool.model.encoder import Encoder

KIND = "classifier"
FORMAT_VERSION = 2
COEF = "coef.npy"  # the file that stands for the classifier's arrays (LinearClassifier.save writes them all)


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


class SavedClassifier(ArtefactStore):
    """A classifier artefact with the model it belongs to, ready to label new audio files."""

    KIND = KIND
    FORMAT_VERSION = FORMAT_VERSION

    def __init__(self, classifier_dir: Path):
        super().__init__(classifier_dir)
        self.classifier = read_member(self.meta, self.directory, COEF, LinearClassifier.load_from)
        self.level = str(self.meta.config["level"])
        features = str(self.meta.config["features"])
        self.reads_descriptors = reads_descriptors(self.level, features)
        self.teacher = teacher_of(features) if self.reads_descriptors else None
        self._teacher_model: Any = None

    def _upgrade(self, meta: ArtefactMeta) -> ArtefactMeta:
        """Format 1: a classifier may record no level (track), no features (it read the track embeddings) and no
        export config (``hop_frames`` then takes half a segment)."""
        meta.config.setdefault("level", "track")
        meta.config.setdefault("features", "embeddings")
        return meta

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
        from embedtool.model.teachers import file_vector, teacher_network

        if self._teacher_model is None:
            self._teacher_model = teacher_network(self.teacher)
        return file_vector(self.teacher, path, self._teacher_model)

    def check_embeddings(self, store: EmbeddingStore) -> None:
        """Refuse embeddings other than the ones the classifier was trained on (model or dimension differ)."""
        from embedtool.artefacts import check_compatible

        check_compatible(
            {"model": self.model_fingerprint, "dim": self.classifier.dim},
            {"model": store.model_fingerprint, "dim": self._input_dim(store.dim, store.descriptor_dim)},
            "classifier vs embeddings (re-run `embedtool classify` after re-training or re-embedding)",
        )

    def check_encoder(self, encoder: Encoder) -> None:
        from embedtool.artefacts import check_compatible

        dim = self._input_dim(encoder.embedding_dim, track_descriptor_dim(encoder))
        check_compatible(
            {"model": self.model_fingerprint, "dim": self.classifier.dim},
            {"model": encoder.fingerprint, "dim": dim},
            "classifier vs model (re-run `embedtool classify` after re-training)",
        )

    def hop_frames(self, encoder: Encoder) -> int:
        """The segment hop the embeddings were exported with (same windows as the training vectors); half a
        segment where the classifier records no export config."""
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
