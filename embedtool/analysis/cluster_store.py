"""The clusters artefact: its files, writing them into a staged folder, and reading them back (``ClusterStore``).

Layout of ``<workspace>/clusters/``::

    meta.json            provenance: options, chosen k, embeddings + model fingerprints, metrics (last)
    assignments.parquet  one row per item (track or segment): ids, time range, label, cluster, distance
    centroids.npy        float32 (k, dim)
    summary.json         sizes, exemplars (tracks + time ranges nearest each centroid), k scores, metrics,
                         label make-up of each cluster
    map.png              2-D projection coloured by cluster (and by label when there are labels)
    k_selection.png      silhouette by k (with ``k=auto``)
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedtool.artefacts import ArtefactStore, read_member

KIND = "clusters"
FORMAT_VERSION = 1
ASSIGNMENTS = "assignments.parquet"
CENTROIDS = "centroids.npy"
SUMMARY = "summary.json"
# The assignment table's columns, in order (pyarrow types by name: pyarrow is imported when a table is written).
ASSIGNMENT_COLUMNS = (
    ("item_id", "string"),
    ("track_id", "string"),
    ("start_s", "float64"),
    ("end_s", "float64"),
    ("label", "string"),
    ("group", "string"),
    ("path", "string"),
    ("cluster", "int64"),
    ("distance", "float64"),
)


def write_cluster_files(
    out: Path, items: Sequence[Mapping[str, Any]], centroids: np.ndarray, summary: Mapping[str, Any]
) -> None:
    """The assignments, centroids and summary into the staged clusters folder ``out`` (meta.json comes last, from
    the stage)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from embedtool.artefacts import atomic_save_npy, atomic_write_json

    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in ASSIGNMENT_COLUMNS])
    pq.write_table(pa.Table.from_pylist(list(items), schema=schema), out / ASSIGNMENTS)
    atomic_save_npy(out / CENTROIDS, centroids)
    atomic_write_json(out / SUMMARY, dict(summary))


class ClusterStore(ArtefactStore):
    """Read access to a clusters artefact: its options, summary and per-track clusters."""

    KIND = KIND
    FORMAT_VERSION = FORMAT_VERSION

    @staticmethod
    def exists(directory: Path) -> bool:
        """Whether a clusters artefact was made there (its meta.json, written last, is present)."""
        return (Path(directory) / "meta.json").is_file()

    @property
    def config(self) -> dict[str, Any]:
        """The cluster options that made it (``ClusterOptions`` as a dict)."""
        return dict(self.meta.config)

    def summary(self) -> dict[str, Any]:
        """k, criterion, sizes, exemplars (by cluster, as strings), label agreement, figures."""
        return read_member(self.meta, self.directory, SUMMARY, lambda path: json.loads(path.read_text()))

    def centroids(self) -> np.ndarray:
        return read_member(self.meta, self.directory, CENTROIDS, np.load)

    def track_clusters(self) -> dict[str, int]:
        """Track id -> cluster (at segment level: the cluster most of its segments fell in)."""
        import pyarrow.parquet as pq

        table = read_member(
            self.meta, self.directory, ASSIGNMENTS, lambda path: pq.read_table(path, columns=["track_id", "cluster"])
        )
        votes: dict[str, dict[int, int]] = {}
        for tid, c in zip(table.column("track_id").to_pylist(), table.column("cluster").to_pylist(), strict=True):
            votes.setdefault(tid, {}).setdefault(c, 0)
            votes[tid][c] += 1
        return {tid: max(v, key=lambda c: v[c]) for tid, v in votes.items()}
