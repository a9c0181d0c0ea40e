"""Benchmark: embedding quality on real corpora, against baselines computed in the same run.

For each corpus (``~/.cache/embedtool-corpora/{music-dev,drums}``, fetched by ``../shared/corpora/fetch``):
extract -> train (default preset, time-boxed by --epochs/--steps) -> index -> ``run_evaluate`` twice:

1. on the split persisted by training (music: by track; drums: by kit, so whole kits are held out from both the
   self-supervised training and the classifier), with the MFCC, untrained-network and bundled-``general``-model
   baselines and the re-identification test (the ``general`` model never saw either corpus:
   bench/train_general.sh);
2. grouped 5-fold cross-validation (drums: folds by kit; music: by track), embeddings vs MFCC.

Targets: music style macro-F1 >= 0.9 (track level); drums macro-F1 >= 0.75 with kits held out; each
clearly above the MFCC baseline of the same run.

    .venv/bin/python bench/bench_evaluate.py                      # both corpora
    .venv/bin/python bench/bench_evaluate.py --only drums --epochs 6 --steps 150

Workspaces go to --work (default ~/.cache/embedtool-bench); an existing model is reused unless --retrain.
Prints a table and writes bench/results/bench_evaluate-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from _common import CORPORA, log, result_path, timestamp, write_json


def prepare(corpus: str, root: Path, work: Path, args: argparse.Namespace) -> Any:
    """Extract, train (unless a model exists) and index one corpus; returns (workspace, timings, train facts)."""
    from embedtool import pipeline
    from embedtool.audio.settings import FeatureSettings
    from embedtool.features.extract import run_extract
    from embedtool.features.options import ExtractOptions
    from embedtool.indexing.options import IndexOptions
    from embedtool.model.settings import TrainSettings
    from embedtool.training.trainer import train
    from embedtool.workspace import Workspace

    ws = Workspace(work / corpus)
    timings: dict[str, float] = {}
    source = root / corpus
    # Music: labels from the folders (the corpus' group column equals the label, which would make a split by
    # group hold out whole styles). Drums: labels.tsv, whose group is the kit.
    labels = str(source / "labels.tsv") if corpus == "drums" else None
    t = time.perf_counter()
    report = run_extract([source], ws.features, FeatureSettings(), ExtractOptions(jobs=args.jobs, labels=labels))
    timings["extract_s"] = time.perf_counter() - t
    log(f"{corpus}: features of {report.tracks} tracks ({report.total_hours:.2f} h) in {timings['extract_s']:.0f} s")
    facts: dict[str, Any] = {"tracks": report.tracks, "hours": report.total_hours}
    if args.retrain or not (ws.model / "meta.json").is_file():
        settings = TrainSettings.from_preset("default")
        settings = replace(
            settings,
            epochs=args.epochs,
            steps_per_epoch=args.steps,
            val_fraction=0.3 if corpus == "drums" else 0.25,
            split_by="group" if corpus == "drums" else "track",
            device="cpu",
        )
        t = time.perf_counter()
        train_report = train(ws.features, ws.split, ws.model, settings)
        timings["train_s"] = time.perf_counter() - t
        facts["train"] = {
            "epochs": args.epochs,
            "steps_per_epoch": args.steps,
            "report": getattr(train_report, "to_dict", lambda: str(train_report))(),
        }
        log(f"{corpus}: trained in {timings['train_s']:.0f} s")
    t = time.perf_counter()
    pipeline.index(ws, IndexOptions())
    timings["index_s"] = time.perf_counter() - t
    return ws, timings, facts


def evaluate(corpus: str, ws: Any, args: argparse.Namespace) -> dict[str, Any]:
    from embedtool.analysis.evaluate import run_evaluate
    from embedtool.analysis.options import ClassifyOptions, EvaluateOptions

    out: dict[str, Any] = {}
    t = time.perf_counter()
    split_report = run_evaluate(
        ws,
        EvaluateOptions(name=f"bench-split-{args.stamp}", excerpts=args.excerpts, seed=0),
        ClassifyOptions(),
    ).report
    out["split"] = {"report": split_report, "seconds": time.perf_counter() - t}
    log(f"{corpus}: evaluation on the persisted split in {out['split']['seconds']:.0f} s")
    t = time.perf_counter()
    cv_report = run_evaluate(
        ws,
        EvaluateOptions(name=f"bench-cv-{args.stamp}", robustness=False, untrained_baseline=False, seed=0),
        ClassifyOptions(cv=5),
    ).report
    out["cv"] = {"report": cv_report, "seconds": time.perf_counter() - t}
    log(f"{corpus}: evaluation with grouped 5-fold CV in {out['cv']['seconds']:.0f} s")
    # What the classifier choices are worth, same folds: descriptors vs pooled embeddings, C by inner CV vs C=1.
    out["variants"] = {}
    for name, options in (
        ("embeddings, C auto", ClassifyOptions(cv=5, features="embeddings")),
        ("descriptors, C=1", ClassifyOptions(cv=5, C=1.0)),
    ):
        rep = run_evaluate(
            ws,
            EvaluateOptions(name=f"bench-cv-{args.stamp}-{len(out['variants'])}", robustness=False,
                            untrained_baseline=False, seed=0),
            options,
        ).report  # fmt: skip
        out["variants"][name] = {k: s["classification"]["macro_f1"] for k, s in rep["systems"].items()}
    return out


def variants_table(results: dict[str, Any]) -> str:
    lines = [f"{'corpus':10} {'grouped 5-fold macro-F1':32} {'learnt':>7} {'general':>7} {'mfcc':>7}"]
    for corpus, res in results.items():
        cv = res["eval"]["cv"]["report"]["systems"]
        rows = {"descriptors, C auto (default)": {k: s["classification"]["macro_f1"] for k, s in cv.items()}}
        rows.update(res["eval"].get("variants", {}))
        for name, f1 in rows.items():
            lines.append(
                f"{corpus:10} {name:32} {f1['embeddings']:7.3f} {f1.get('general', float('nan')):7.3f} "
                f"{f1.get('mfcc', float('nan')):7.3f}"
            )
    return "\n".join(lines)


def table(results: dict[str, Any]) -> str:
    lines = [
        f"{'corpus':10} {'scheme':7} {'system':10} {'n':>4} {'acc':>6} {'macroF1':>8} {'p@1':>6} {'p@5':>6} "
        f"{'purity':>7} {'NMI':>6}"
    ]
    for corpus, res in results.items():
        for scheme in ("split", "cv"):
            rep = res["eval"][scheme]["report"]
            for name, s in rep["systems"].items():
                c, r, cl = s["classification"], s["retrieval"], s["clustering"]
                lines.append(
                    f"{corpus:10} {rep['classification_scheme']:7} {name:10} {c['n']:>4} {c['accuracy']:6.3f} "
                    f"{c['macro_f1']:8.3f} {r.get('p@1', float('nan')):6.3f} {r.get('p@5', float('nan')):6.3f} "
                    f"{cl['purity']:7.3f} {cl['nmi']:6.3f}"
                )
            emb = rep["systems"]["embeddings"]["classification"]["macro_f1"]
            base = rep["systems"].get("mfcc", {}).get("classification", {}).get("macro_f1")
            general = rep["systems"].get("general", {}).get("classification", {}).get("macro_f1")
            if base:
                lines.append(f"{'':10} {'':7} ratio embeddings/mfcc macro-F1 = {emb / base:.2f}")
            if base and general:
                lines.append(f"{'':10} {'':7} ratio general/mfcc macro-F1 = {general / base:.2f}")
    return "\n".join(lines)


def robustness_table(results: dict[str, Any]) -> str:
    lines = []
    for corpus, res in results.items():
        rob = res["eval"]["split"]["report"].get("robustness")
        if not rob:
            continue
        lines.append(
            f"{corpus}: re-identification top-1 / top-1 ignoring the no-match threshold / top-5, n excerpts per length"
        )
        lines.append(f"{'len':>5} " + " ".join(f"{d:>14}" for d in rob["degradations"]))
        for g in rob["lengths"]:
            cells = [c for c in rob["cells"] if c["seconds"] == g]
            lines.append(
                f"{g:>4g}s "
                + " ".join(
                    f"{c['top1']:.2f}/{c['top1_ranked']:.2f}/{c['top5']:.2f}".rjust(14) if c["n"] else f"{'-':>14}"
                    for c in cells
                )
                + f"  n={cells[0]['n']}"
            )
    return "\n".join(lines)


def reprint(path: Path) -> None:
    """Print the tables of an earlier run's JSON."""
    results = json.loads(path.read_text())["results"]
    print(table(results))
    print()
    print(robustness_table(results))
    print(variants_table(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--corpora",
        type=Path,
        default=Path(os.environ.get("EMBEDTOOL_CORPORA", CORPORA)).expanduser(),
    )
    parser.add_argument("--work", type=Path, default=Path("~/.cache/embedtool-bench").expanduser())
    parser.add_argument("--only", nargs="*", default=["music-dev", "drums"])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150, help="training steps per epoch")
    parser.add_argument("--excerpts", type=int, default=20, help="re-identification excerpts per length")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--retrain", action="store_true")
    parser.add_argument("--show", type=Path, nargs="*", help="print the tables of earlier results JSON files")
    args = parser.parse_args()
    if args.show:
        for path in args.show:
            reprint(path)
        return
    args.stamp = timestamp()

    import torch

    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {}
    for corpus in args.only:
        if not (args.corpora / corpus).is_dir():
            log(f"skipping {corpus}: {args.corpora / corpus} missing (run ../shared/corpora/fetch {corpus})")
            continue
        ws, timings, facts = prepare(corpus, args.corpora, args.work, args)
        results[corpus] = {
            "workspace": str(ws.root),
            "timings": timings,
            "facts": facts,
            "eval": evaluate(corpus, ws, args),
        }
    path = write_json(
        result_path("bench_evaluate", args.stamp),
        {"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
        default=str,
    )
    print()
    reprint(path)
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
