"""A 2-D map of an embedding space, and the TensorBoard projector export.

``method="auto"`` uses UMAP when the optional ``umap-learn`` package is installed (it keeps more of the global
layout), else t-SNE from scikit-learn. Both are seeded. Very small sets (fewer than 5 points, where t-SNE's
perplexity has no meaning) fall back to PCA.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

ProjectionMethod = Literal["auto", "tsne", "umap", "pca"]


def umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def project_2d(
    vectors: np.ndarray, method: ProjectionMethod = "auto", seed: int = 0, max_points: int = 20000
) -> tuple[np.ndarray, str]:
    """Coordinates (n, 2) float32 and the name of the method actually used.

    More than ``max_points`` rows are not projected by t-SNE/UMAP (quadratic-ish cost); callers subsample first.
    """
    x = np.asarray(vectors, dtype=np.float32)
    n = x.shape[0]
    if n == 0:
        return np.zeros((0, 2), dtype=np.float32), "none"
    if n > max_points:
        raise ValueError(f"{n} points is too many to project; subsample to at most {max_points}")
    if method == "auto":
        method = "umap" if umap_available() else "tsne"
    if n < 5 or method == "pca":
        return _pca(x), "pca"
    if method == "umap":
        import umap

        reducer = umap.UMAP(n_components=2, random_state=seed, n_neighbors=min(15, n - 1), metric="cosine")
        return np.asarray(reducer.fit_transform(x), dtype=np.float32), "umap"
    if method == "tsne":
        from sklearn.manifold import TSNE

        # Perplexity must stay below n; a third of n keeps small sets well conditioned.
        perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed, metric="cosine")
        return np.asarray(tsne.fit_transform(x), dtype=np.float32), "tsne"
    raise ValueError(f"unknown projection method {method!r}; valid: auto, tsne, umap, pca")


def _pca(x: np.ndarray) -> np.ndarray:
    centred = x - x.mean(axis=0, keepdims=True)
    if x.shape[0] < 2:
        return np.zeros((x.shape[0], 2), dtype=np.float32)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    if coords.shape[1] < 2:
        coords = np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))
    return coords.astype(np.float32)


def write_projector_tsv(
    directory: Path, vectors: np.ndarray, metadata: Sequence[dict[str, Any]], columns: Sequence[str]
) -> tuple[Path, Path]:
    """TensorBoard projector files: ``vectors.tsv`` (no header) and ``metadata.tsv`` (header row).

    Load them at https://projector.tensorflow.org ("Load") or with TensorBoard's projector plugin.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vectors = np.asarray(vectors, dtype=np.float32)
    if len(metadata) != vectors.shape[0]:
        raise ValueError(f"{vectors.shape[0]} vectors but {len(metadata)} metadata rows")
    vec_path, meta_path = directory / "vectors.tsv", directory / "metadata.tsv"
    np.savetxt(vec_path, vectors, delimiter="\t", fmt="%.6g")
    with meta_path.open("w", newline="") as fh:
        writer = csv.writer(fh, delimiter="\t", lineterminator="\n")
        writer.writerow(list(columns))
        for row in metadata:
            # Tabs/newlines inside a value would break the projector's parser.
            writer.writerow([_clean(row.get(c)) for c in columns])
    return vec_path, meta_path


def _clean(value: Any) -> str:
    if value is None:
        return ""
    return str(value).replace("\t", " ").replace("\n", " ")
