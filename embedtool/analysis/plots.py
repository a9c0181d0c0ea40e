"""PNG figures for clusters, classifiers and reports (matplotlib, headless Agg backend)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers and in tests

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from embedtool.artefacts import atomic_write_bytes  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def _palette(n: int) -> list:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def plot_map(
    path: Path, coords: np.ndarray, colourings: Mapping[str, Sequence[object]], title: str = "embedding map"
) -> Path:
    """Scatter of 2-D coordinates, one panel per colouring (e.g. {"cluster": [...], "label": [...]})."""
    coords = np.asarray(coords, dtype=np.float32)
    panels = list(colourings.items()) or [("points", [""] * len(coords))]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 5.4), squeeze=False)
    for ax, (name, values) in zip(axes[0], panels, strict=True):
        keys = [("" if v is None else str(v)) for v in values]
        cats = sorted(set(keys))
        colours = _palette(len(cats))
        for cat, colour in zip(cats, colours, strict=True):
            mask = np.array([k == cat for k in keys], dtype=bool)
            ax.scatter(coords[mask, 0], coords[mask, 1], s=14, color=colour, label=cat or "(none)", alpha=0.8)
        ax.set_title(f"{title}: coloured by {name}")
        ax.set_xticks([])
        ax.set_yticks([])
        if len(cats) <= 20:
            ax.legend(fontsize=7, loc="best", markerscale=1.2, frameon=False)
    return _save(fig, path)


def plot_confusion(path: Path, matrix: np.ndarray, labels: Sequence[str], title: str = "confusion matrix") -> Path:
    """Confusion matrix: rows are true labels, columns predictions; cells show counts, colour by row share."""
    matrix = np.asarray(matrix)
    n = len(labels)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros_like(matrix, dtype=float), where=rows > 0)
    size = max(4.0, 0.55 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            ax.text(
                j, i, str(int(matrix[i, j])), ha="center", va="center", color="black" if share[i, j] < 0.6 else "white"
            )
    ax.set_title(title)
    return _save(fig, path)


def plot_k_selection(path: Path, ks: Sequence[int], scores: Sequence[float], chosen: int, criterion: str) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(list(ks), list(scores), marker="o")
    ax.axvline(chosen, color="red", linestyle="--", label=f"chosen k={chosen}")
    ax.set_xlabel("k")
    ax.set_ylabel(criterion)
    ax.legend(frameon=False)
    ax.set_title(f"choosing k by {criterion}")
    return _save(fig, path)


def plot_robustness(
    path: Path, lengths: Sequence[float], degradations: Sequence[str], top1: np.ndarray, title: str
) -> Path:
    """Heatmap of top-1 accuracy: excerpt length (rows) x degradation (columns)."""
    top1 = np.asarray(top1, dtype=float)
    fig, ax = plt.subplots(figsize=(1.3 * len(degradations) + 2.5, 0.6 * len(lengths) + 2))
    ax.imshow(top1, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(degradations)), list(degradations), rotation=30, ha="right")
    ax.set_yticks(range(len(lengths)), [f"{g:g} s" for g in lengths])
    for i in range(len(lengths)):
        for j in range(len(degradations)):
            value = top1[i, j]
            text = "-" if np.isnan(value) else f"{value:.2f}"
            ax.text(j, i, text, ha="center", va="center", color="white" if value < 0.6 else "black")
    ax.set_title(title)
    return _save(fig, path)


def plot_comparison(path: Path, systems: Mapping[str, Mapping[str, float]], title: str) -> Path:
    """Grouped bars: one group per metric, one bar per system (embeddings, baselines)."""
    names = list(systems)
    metrics = sorted({m for s in systems.values() for m in s})
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(1.4 * len(metrics) + 3, 3.8))
    for i, (name, colour) in enumerate(zip(names, _palette(len(names)), strict=True)):
        values = [float(systems[name].get(m, np.nan)) for m in metrics]
        ax.bar(np.arange(len(metrics)) + i * width, values, width, label=name, color=colour)
    ax.set_xticks(np.arange(len(metrics)) + width * (len(names) - 1) / 2, metrics, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.legend(frameon=False, fontsize=8)
    ax.set_title(title)
    return _save(fig, path)
