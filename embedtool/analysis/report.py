"""The evaluate report's files: its figures (maps, confusion matrices, comparison, robustness) and its Markdown
(``report.md``), rendered from the same dict as ``report.json``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from embedtool.analysis.labelled import LabelledData
    from embedtool.analysis.options import EvaluateOptions
    from embedtool.embedding.store import EmbeddingStore


# Bidirectional-override and isolate controls: shown as their code point, so "gnp.exe" with an RTL override reads
# as what it is, not as "exe.png".
BIDI_CONTROLS = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)}


def md_text(value: Any) -> str:
    """A label or name as literal Markdown text: its Markdown and HTML characters escaped (a label
    ``![x](http://...)`` is no image, a ``|`` does not split a table), line breaks as spaces, bidi controls as
    their visible code point (``<U+202E>``)."""
    text = " ".join(str(value).splitlines())
    text = "".join(f"<U+{ord(ch):04X}>" if ch in BIDI_CONTROLS else ch for ch in text)
    return "".join("\\" + ch if ch in "\\`*_{}[]()<>#+-.!|~&" else ch for ch in text)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if np.isnan(value) else f"{value:.{digits}f}"
    return str(value)


# How the report's Markdown describes each baseline system (only those the report has).
SYSTEM_DESCRIPTIONS = {
    "mfcc": "**mfcc** (per-track mean and standard deviation of MFCCs, standardised)",
    "logmel": "**logmel** (per-track mean and standard deviation of log-Mels, standardised)",
    "untrained": "**untrained** (the same network with random weights)",
    "general": "**general** (embedtool's bundled model, trained on other, varied audio, applied as it is: what "
    "training on this audio adds; its descriptors are those of two networks trained on different audio, its "
    "embeddings the first network's)",
}


def _systems_paragraph(systems: dict[str, Any], origin: str = "the learnt model") -> str:
    baselines = [
        SYSTEM_DESCRIPTIONS.get(name, f"**{name}** (the model {name}, applied as it is)")
        for name in systems
        if name != "embeddings"
    ]
    if not baselines:
        return f"Systems: **embeddings** ({origin}); no baselines."
    return (
        f"Systems: **embeddings** ({origin}); baselines computed in the same run on the same tracks and "
        "splits: " + ", ".join(baselines) + "."
    )


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown, referring to its PNGs by relative path: one section after another."""
    lines = [
        *_header(report),
        *_summary(report),
        *_classification(report["systems"]),
        *_clusters(report["systems"]["embeddings"]["clustering"]),
        *_robustness(report.get("robustness")),
        *_map(report),
    ]
    return "\n".join(lines)


def _header(report: dict[str, Any]) -> list[str]:
    return [
        f"# embedtool evaluation: {md_text(report['name'])}",
        "",
        f"Created {report['created']} from workspace `{report['workspace']}`.",
        f"Embeddings `{report['inputs']['embeddings']}`, model `{report['inputs']['model']}`. "
        f"{report['tracks']} tracks ({report['segments']} segments), {report['labelled_tracks']} labelled: "
        + ", ".join(f"{md_text(k)} {v}" for k, v in report["labels"].items())
        + ".",
        "",
        _systems_paragraph(report["systems"], report.get("model_origin") or "the learnt model"),
        "",
        *[f"Note: {note}" for note in report.get("notes", [])],
        "",
    ]


def _summary(report: dict[str, Any]) -> list[str]:
    """One row per system: classification, retrieval and clustering figures side by side."""
    systems = report["systems"]
    ks = list(next(iter(systems.values()))["retrieval"])
    lines = [
        "## Summary",
        "",
        "| system | accuracy | macro-F1 | " + " | ".join(ks) + " | purity | NMI | ARI |",
        "|---|---|---|" + "---|" * len(ks) + "---|---|---|",
    ]
    for name, r in systems.items():
        c, cl = r["classification"], r["clustering"]
        lines.append(
            f"| {name} | {_fmt(c['accuracy'])} | {_fmt(c['macro_f1'])} | "
            + " | ".join(_fmt(r["retrieval"][k]) for k in ks)
            + f" | {_fmt(cl['purity'])} | {_fmt(cl['nmi'])} | {_fmt(cl['ari'])} |"
        )
    options = report["classify_options"]
    reads_descriptors = options.get("level") == "track" and str(options.get("features", "")).startswith("descriptors")
    lines += [
        "",
        f"Classification: logistic regression, {report['classification_scheme']} "
        "(`split`: the split persisted by `embedtool train`; `cv-N`: stratified N-fold grouped by "
        f"{options.get('cv_by', 'group')}), "
        f"{options['level']} level"
        + (" (learnt systems: track descriptors; MFCC: its statistics)" if reads_descriptors else "")
        + f", C {options.get('C')}. Retrieval: precision@k of same-label tracks among each "
        "track's k nearest (cosine), its own track excluded. Clustering: k-Means, k as listed below.",
        *(["", f"**Note:** {report['classification_note']}."] if report.get("classification_note") else []),
        "",
        "![comparison](comparison.png)",
        "",
    ]
    return lines


def _classification(systems: dict[str, Any]) -> list[str]:
    """Each system's per-class table and confusion matrix."""
    lines: list[str] = []
    for name, r in systems.items():
        c = r["classification"]
        lines += [
            f"## Classification: {name}",
            "",
            "| label | precision | recall | F1 | support |",
            "|---|---|---|---|---|",
        ]
        for row in c["per_class"]:
            lines.append(
                f"| {md_text(row['label'])} | {_fmt(row['precision'])} | {_fmt(row['recall'])} | {_fmt(row['f1'])} | "
                f"{row['support']} |"
            )
        lines += ["", f"![confusion {name}](confusion_{name}.png)", ""]
    return lines


def _clusters(emb: dict[str, Any]) -> list[str]:
    """The embeddings' clusters and the labels in each."""
    lines = [
        "## Clusters of the embeddings",
        "",
        f"k = {emb['k']} ({emb['criterion']}), sizes {emb['sizes']}.",
        "",
        "| cluster | label make-up |",
        "|---|---|",
    ]
    for c, counts in emb["composition"].items():
        lines.append(f"| {c} | " + ", ".join(f"{md_text(k)} {v}" for k, v in counts.items()) + " |")
    return lines


def _robustness(rob: dict[str, Any] | None) -> list[str]:
    """Re-identification accuracy per excerpt length x degradation (nothing when it was not measured)."""
    if not rob:
        return []
    lines = [
        "",
        "## Re-identification robustness",
        "",
        f"Excerpts at random offsets of library tracks, identified through the index (`Searcher`, identify "
        f"mode; a no-match answer counts as a miss). Gain {rob['gain_db']:g} dB; MP3 {rob['mp3']}. "
        "Cells: top-1 / top-1 of the ranking ignoring the no-match threshold / top-5 accuracy (n excerpts)."
        + (
            f" {rob['queries']} queries in all (a small library gets one excerpt per two tracks at each length)."
            if "queries" in rob
            else ""
        ),
        "",
        "| length | " + " | ".join(rob["degradations"]) + " |",
        "|---|" + "---|" * len(rob["degradations"]),
    ]
    for g in rob["lengths"]:
        cells = [c for c in rob["cells"] if c["seconds"] == g]
        lines.append(
            f"| {g:g} s | "
            + " | ".join(
                f"{_fmt(c['top1'], 2)} / {_fmt(c.get('top1_ranked'), 2)} / {_fmt(c['top5'], 2)} ({c['n']})"
                if c["n"]
                else "- (0)"
                for c in cells
            )
            + " |"
        )
    return lines + ["", "![robustness](robustness.png)"]


def _map(report: dict[str, Any]) -> list[str]:
    return [
        "",
        "## Map of the space",
        "",
        f"{report['projection']['method']} projection of {report['projection']['points']} track embeddings. "
        "TensorBoard projector files: `projector/vectors.tsv`, `projector/metadata.tsv` "
        "(load them at https://projector.tensorflow.org).",
        "",
        "![map](map.png)",
        "",
        "Timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items()),
        "",
    ]


def write_figures(
    out: Path,
    store: EmbeddingStore,
    data: LabelledData,
    systems: dict[str, dict[str, Any]],
    robustness: dict[str, Any] | None,
    options: EvaluateOptions,
) -> tuple[dict[str, str], dict[str, Any]]:
    """The report's PNGs and projector files in ``out``: (figure name -> file, the projection's facts)."""
    from embedtool.analysis import plots
    from embedtool.analysis.projection import project_2d, write_projector_tsv

    figures: dict[str, str] = {}
    # Map of the space: every track (sampled when huge), coloured by label and by the embeddings' clusters.
    all_vectors = np.asarray(store.track_vectors(), dtype=np.float32)
    assignments = dict(zip(data.track_ids, systems["embeddings"]["_assignments"].tolist(), strict=True))
    rows = np.arange(len(store.tracks))
    if len(rows) > options.max_points:
        rows = np.sort(np.random.default_rng(options.seed).choice(len(rows), options.max_points, replace=False))
    tracks_sorted = sorted(store.tracks, key=lambda t: t["row"])
    meta_rows = [
        {
            "track_id": tracks_sorted[r]["track_id"],
            "label": tracks_sorted[r].get("label") or "",
            "group": tracks_sorted[r].get("group") or "",
            "cluster": assignments.get(tracks_sorted[r]["track_id"], ""),
            "path": tracks_sorted[r].get("path") or "",
        }
        for r in rows
    ]
    coords, method = project_2d(all_vectors[rows], options.projection, options.seed)
    plots.plot_map(
        out / "map.png",
        coords,
        {"label": [m["label"] for m in meta_rows], "cluster": [m["cluster"] for m in meta_rows]},
        title=f"tracks ({method})",
    )
    figures["map"] = "map.png"
    write_projector_tsv(
        out / "projector", all_vectors[rows], meta_rows, ["track_id", "label", "group", "cluster", "path"]
    )
    for sys_name, result in systems.items():
        cls = result["classification"]
        png = f"confusion_{sys_name}.png"
        plots.plot_confusion(out / png, np.asarray(cls["confusion"]), cls["labels"], f"{sys_name} ({cls['scheme']})")
        figures[f"confusion_{sys_name}"] = png
    comparison = {
        sys_name: {
            "macro-F1": r["classification"]["macro_f1"],
            "accuracy": r["classification"]["accuracy"],
            **{k: v for k, v in r["retrieval"].items()},
            "purity": r["clustering"]["purity"] or 0.0,
            "NMI": r["clustering"]["nmi"] or 0.0,
        }
        for sys_name, r in systems.items()
    }
    plots.plot_comparison(out / "comparison.png", comparison, "embeddings vs baselines")
    figures["comparison"] = "comparison.png"
    if robustness is not None:
        top1 = np.array(
            [
                [c["top1"] if c["top1"] is not None else np.nan for c in robustness["cells"] if c["seconds"] == g]
                for g in robustness["lengths"]
            ]
        )
        plots.plot_robustness(
            out / "robustness.png", robustness["lengths"], robustness["degradations"], top1,
            "re-identification top-1 accuracy",
        )  # fmt: skip
        figures["robustness"] = "robustness.png"
    projection = {
        "method": method,
        "points": int(len(rows)),
        "files": ["projector/vectors.tsv", "projector/metadata.tsv"],
    }
    return figures, projection
