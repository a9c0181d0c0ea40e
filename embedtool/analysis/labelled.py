"""Labelled tracks and their vectors, as classifiers and evaluations read them from an embeddings export."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from embedtool.errors import InputError

if TYPE_CHECKING:
    from embedtool.embedding.store import EmbeddingStore


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


def with_teacher(data: LabelledData, teacher_dir: Path, name: str) -> LabelledData:
    """``data`` with each track's teacher vector after its descriptor (``model.teachers``)."""
    from embedtool.model.teachers import load_teacher_vectors

    if data.descriptors is None:
        raise InputError(f"the {name} teacher joins track descriptors: classify at track level on descriptors")
    vectors = load_teacher_vectors(teacher_dir, data.track_ids, name)
    return replace(data, descriptors=np.hstack([data.descriptors, vectors]).astype(np.float32))
