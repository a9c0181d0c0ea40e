"""The evaluate report as Markdown (``report.md``), from the same dict as ``report.json``."""

from __future__ import annotations

from typing import Any

import numpy as np


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


def _systems_paragraph(systems: dict[str, Any]) -> str:
    baselines = [
        SYSTEM_DESCRIPTIONS.get(name, f"**{name}** (the model {name}, applied as it is)")
        for name in systems
        if name != "embeddings"
    ]
    if not baselines:
        return "Systems: **embeddings** (the learnt model); no baselines."
    return (
        "Systems: **embeddings** (the learnt model); baselines computed in the same run on the same tracks and "
        "splits: " + ", ".join(baselines) + "."
    )


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown, referring to its PNGs by relative path."""
    systems = report["systems"]
    lines = [
        f"# embedtool evaluation: {report['name']}",
        "",
        f"Created {report['created']} from workspace `{report['workspace']}`.",
        f"Embeddings `{report['inputs']['embeddings']}`, model `{report['inputs']['model']}`. "
        f"{report['tracks']} tracks ({report['segments']} segments), {report['labelled_tracks']} labelled: "
        + ", ".join(f"{k} {v}" for k, v in report["labels"].items())
        + ".",
        "",
        _systems_paragraph(systems),
        "",
        *[f"Note: {note}" for note in report.get("notes", [])],
        "",
        "## Summary",
        "",
    ]
    ks = list(next(iter(systems.values()))["retrieval"])
    lines += [
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
    lines += [
        "",
        f"Classification: logistic regression, {report['classification_scheme']} "
        "(`split`: the split persisted by `embedtool train`; `cv-N`: grouped stratified N-fold), "
        f"{report['classify_options']['level']} level"
        + (
            " (learnt systems: track descriptors; MFCC: its statistics)"
            if report["classify_options"].get("level") == "track"
            and report["classify_options"].get("features") == "descriptors"
            else ""
        )
        + f", C {report['classify_options'].get('C')}. Retrieval: precision@k of same-label tracks among each "
        "track's k nearest (cosine), its own track excluded. Clustering: k-Means, k as listed below.",
        "",
        "![comparison](comparison.png)",
        "",
    ]
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
                f"| {row['label']} | {_fmt(row['precision'])} | {_fmt(row['recall'])} | {_fmt(row['f1'])} | "
                f"{row['support']} |"
            )
        lines += ["", f"![confusion {name}](confusion_{name}.png)", ""]
    emb = systems["embeddings"]["clustering"]
    lines += [
        "## Clusters of the embeddings",
        "",
        f"k = {emb['k']} ({emb['criterion']}), sizes {emb['sizes']}.",
        "",
        "| cluster | label make-up |",
        "|---|---|",
    ]
    for c, counts in emb["composition"].items():
        lines.append(f"| {c} | " + ", ".join(f"{k} {v}" for k, v in counts.items()) + " |")
    rob = report.get("robustness")
    if rob:
        lines += [
            "",
            "## Re-identification robustness",
            "",
            f"Excerpts at random offsets of library tracks, identified through the index (`Searcher`, identify "
            f"mode; a no-match answer counts as a miss). Gain {rob['gain_db']:g} dB; MP3 {rob['mp3']}. "
            "Cells: top-1 / top-1 of the ranking ignoring the no-match threshold / top-5 accuracy (n excerpts).",
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
        lines += ["", "![robustness](robustness.png)"]
    lines += [
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
    return "\n".join(lines)
