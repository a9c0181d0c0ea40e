"""Benchmark: the evaluation suite — every corpus x every system, one protocol, one table.

Corpora come from ``bench/corpora/fetch`` (``~/.cache/embedtool-corpora``, or ``$EMBEDTOOL_CORPORA``):

- the **tuning** set (``music-dev``, ``drums``, ``speech-dev``, ``voices-dev``): the project's choices are made on
  these;
- the **check** set (``music-unseen``, ``speech-lang``, ``voices``, ``sfx``, ``instruments``, ``ambience``): run
  once per change that is kept and reported as it comes out. Never pick anything by its figures.

For each corpus: a workspace of its (optionally capped) files -> ``pipeline.extract`` (labels and groups from the
corpus' labels.tsv) -> ``pipeline.adopt`` the bundled ``general`` model -> ``pipeline.embed`` -> ``pipeline.evaluate``
with grouped 5-fold cross-validation (``classify.cv=5``: folds by the corpus' group, so near-copies never straddle
train and test) and retrieval with the query's whole group left out (``evaluate.exclude_same_group``). Evaluate
computes, on the same tracks and folds: ``general`` (the workspace's model: logistic regression on its track
descriptors; retrieval on its track embeddings), ``mfcc`` (MFCC statistics of the same log-Mels,
``analysis.baselines``) and ``untrained`` (the same network with random weights). Two pretrained models whose PyPI
wheels ship their weights, scored by the same classifier, folds and retrieval (``analysis.evaluate.evaluate_system``)
on one vector per file: ``musicnn``, the MSD model's penultimate layer, mean-pooled over each file
(``bench/musicnn_features.py``), in this process when ``musicnn`` imports, else (musicnn 0.1.0 does not install on
Python 3.11) in a separate venv that ``bench/musicnn_setup.sh`` makes (TensorFlow 2.15, numpy<2; ``--musicnn-python``,
default ``~/.cache/embedtool-musicnn/venv/bin/python`` or ``$EMBEDTOOL_MUSICNN_PYTHON``); and ``aisfx``, the
sound-effects model of Ma & Lerch (ISMIR 2022), its embedding network's blocks mean-pooled over each file
(``bench/aisfx_features.py``: the network embedtool bundles, ``embedtool.model.aisfx``). Their vectors are cached in the
workspace; a track without one makes the row blank, with a note saying how many.

Figures: classification macro-F1 (grouped 5-fold, logistic regression, C by inner grouped CV) and same-label
precision@5 among tracks of *other* groups (cosine); then re-identification of degraded excerpts
(``bench/suite_reid.py``; ``--no-reid`` leaves it out).

    ./dev bench bench_suite                              # the check set, every file
    ./dev bench bench_suite --set all --max-files 200    # both sets, at most 200 files per corpus (stratified)
    ./dev bench bench_suite --only sfx voices
    ./dev bench bench_suite --show bench/results/bench_suite-*.json

Workspaces go to --work (default ~/.cache/embedtool-bench/suite), one per corpus and cap, and are reused:
extraction and export are incremental, so a re-run after a model change redoes only what changed. Prints the
table and writes bench/results/bench_suite-<time>.json, and beside it a -summary.json without the per-fold details
(tracked in git, so the figures the docs cite stay checkable). ``--model DIR --tag NAME`` scores another model in the
`general` column (its workspaces ``ws-NAME`` beside each corpus' ``ws`` read the same features; the pretrained
models' caches are shared), e.g. a candidate general model before it is bundled. ``--train-epochs N --tag NAME``
trains the model on each corpus's own audio instead of adopting it (self-supervised, no labels, ``--model`` as the
starting point: what ``embedtool train --init general --epochs N`` does for a user's folder): the "trained on the
corpus" column.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from _common import CORPORA, log, result_path, share_features, timestamp, write_json

TUNING = ("music-dev", "drums", "speech-dev", "voices-dev")
CHECK = ("music-unseen", "speech-lang", "voices", "sfx", "instruments", "ambience")
KIND = {
    "music-dev": "music style (game)",
    "drums": "drum instrument",
    "speech-dev": "spoken language",
    "voices-dev": "voice character",
    "music-unseen": "music style (game)",
    "speech-lang": "spoken language",
    "voices": "voice character",
    "sfx": "sound-effect class",
    "instruments": "instrument family",
    "ambience": "city sound scene",
}
GROUP_BY_TRACK = {"music-dev"}  # its labels.tsv groups by album, and one style is a single album
SYSTEMS = ("mfcc", "untrained", "musicnn", "aisfx", "resemblyzer", "general")
K = 5


# --- the corpus' files ---------------------------------------------------------------------------------------


def read_rows(corpus_dir: Path, corpus: str) -> list[dict[str, str]]:
    """labels.tsv's rows with absolute paths (symlinks resolved) and a group that a split must keep together."""
    rows = []
    with open(corpus_dir / "labels.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            path = os.path.realpath(corpus_dir / row["path"])
            group = path if corpus in GROUP_BY_TRACK or not row.get("group") else row["group"]
            rows.append({"path": path, "label": row["label"], "group": group})
    return rows


def stratified_cap(rows: list[dict[str, str]], max_files: int, seed: int = 0) -> list[dict[str, str]]:
    """At most ``max_files`` rows, each label's share as even as its files allow, taken group by group in a seeded
    order (so a kept prompt or patch keeps its siblings where the quota allows)."""
    if max_files <= 0 or len(rows) <= max_files:
        return rows
    by_label: dict[str, list[dict[str, str]]] = defaultdict(list)
    groups = sorted({r["group"] for r in rows})
    rank = {g: i for i, g in enumerate(random.Random(seed).sample(groups, len(groups)))}
    for row in sorted(rows, key=lambda r: (rank[r["group"]], r["path"])):
        by_label[row["label"]].append(row)
    quota, left, chosen = {}, max_files, []
    for i, (label, items) in enumerate(sorted(by_label.items(), key=lambda kv: len(kv[1]))):
        quota[label] = min(len(items), left // (len(by_label) - i))  # small labels first; leftovers go on
        left -= quota[label]
    for label, items in by_label.items():
        chosen += items[: quota[label]]
    return sorted(chosen, key=lambda r: r["path"])


def lay_out(rows: list[dict[str, str]], folder: Path) -> Path:
    """Symlinks ``folder/audio/<label>/<n>__<name>`` to the chosen files and ``folder/labels.tsv`` naming them;
    returns the audio folder (the workspace's only root)."""
    audio = folder / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    with open(folder / "labels.tsv", "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(["path", "label", "group"])
        for i, row in enumerate(rows):
            link = audio / row["label"] / f"{i:05d}__{Path(row['path']).name}"
            link.parent.mkdir(exist_ok=True)
            if not link.is_symlink() or os.readlink(link) != row["path"]:
                link.unlink(missing_ok=True)
                link.symlink_to(row["path"])
            writer.writerow([str(link), row["label"], row["group"]])
    return audio


# --- one corpus ----------------------------------------------------------------------------------------------


def run_corpus(corpus: str, args: argparse.Namespace) -> dict[str, Any]:
    """Extract, adopt ``general``, embed and evaluate one corpus; musicnn and aisfx beside when installed."""
    from embedtool import pipeline
    from embedtool.analysis.options import ClassifyOptions, EvaluateOptions
    from embedtool.features.options import ExtractOptions
    from embedtool.workspace import Workspace

    rows = stratified_cap(read_rows(args.corpora / corpus, corpus), args.max_files)
    folder = args.work / (f"{corpus}-n{args.max_files}" if args.max_files else corpus)
    audio = lay_out(rows, folder)
    ws = Workspace(folder / "ws")
    timings: dict[str, float] = {}

    clock = time.perf_counter()
    extract = pipeline.extract(ws, [audio], options=ExtractOptions(jobs=args.jobs, labels=str(folder / "labels.tsv")))
    timings["extract_s"] = time.perf_counter() - clock
    base = ws
    if args.tag:  # another model: its own workspace beside the corpus', reading the same features
        ws = Workspace(folder / f"ws-{args.tag}")
        share_features(ws.root, base.features)
        teachers = ws.root / "teachers"  # the teachers' outputs too: computed once per corpus, whatever the model
        if not teachers.exists():
            (base.root / "teachers").mkdir(exist_ok=True)
            teachers.symlink_to(base.root / "teachers", target_is_directory=True)
    clock = time.perf_counter()
    if args.train_epochs:  # the model learnt from this corpus's own audio, starting from --model
        from embedtool.model.settings import TrainSettings

        if not (ws.model / "meta.json").is_file():
            chosen = {} if args.anchor_weight is None else {"anchor_weight": args.anchor_weight}
            if args.distil_teachers:
                chosen.update(distil_teachers=args.distil_teachers, distil_weight=args.distil_weight)
            pipeline.train(ws, TrainSettings(init=args.model, epochs=args.train_epochs, **chosen))
        timings["train_s"] = time.perf_counter() - clock
    else:
        pipeline.adopt(ws, args.model)
        timings["adopt_s"] = time.perf_counter() - clock
    clock = time.perf_counter()
    pipeline.embed(ws)
    timings["embed_s"] = time.perf_counter() - clock
    log(f"{corpus}: {extract.tracks} files ({extract.total_hours:.2f} h) extracted and embedded")

    options = EvaluateOptions(
        name="suite",
        k=(1, K),
        exclude_same_group=True,
        robustness=False,
        untrained_baseline=not args.tag,  # a candidate model: the untrained row is the base run's
        pretrained_baseline="",  # the workspace's own model is the bundled one
        seed=0,
    )
    classify = ClassifyOptions(cv=5, plots=False)
    clock = time.perf_counter()
    report = None if args.fresh else reusable_report(ws, options.name)
    if report is None:
        report = pipeline.evaluate(ws, options, classify).report
    else:
        log(f"{corpus}: embeddings unchanged since the last suite run: evaluation reused (--fresh redoes it)")
    timings["evaluate_s"] = time.perf_counter() - clock
    systems = {("general" if name == "embeddings" else name): figures for name, figures in report["systems"].items()}

    notes = list(report.get("notes", []))
    for name, cache_name in PRETRAINED.items():
        figures, why_not = pretrained_system(name, ws, base.root / cache_name, options, classify, args)
        if figures is not None:
            systems[name] = figures
            timings[f"{name}_s"] = figures.pop("seconds")
        else:
            notes.append(f"no {name}: {why_not}")
    summaries = {name: summary(figures) for name, figures in systems.items()}
    reid = None
    if not args.no_reid:
        import suite_reid

        clock = time.perf_counter()
        lookups = {
            name: pretrained_lookup(name, base.root / cache_name, args)
            for name, cache_name in PRETRAINED.items()
            if name in systems
        }
        try:
            reid = suite_reid.reidentification(ws, args.background, lookups, args.reid_excerpts, args.reid_seconds)
        except Exception as exc:  # the classification figures above still count
            notes.append(f"no re-identification: {type(exc).__name__}: {exc}")
            log(f"{corpus}: re-identification FAILED: {notes[-1]}")
        else:
            timings["reid_s"] = time.perf_counter() - clock
            for name, top1 in reid["top1"].items():
                summaries.setdefault(name, {})["re-id"] = top1
            summaries["identify"]["impostors accepted"] = reid["identify_impostors_accepted"]
    labels = Counter(report["labels"])
    return {
        "set": "tuning" if corpus in TUNING else "check",
        "kind": KIND.get(corpus, ""),
        "workspace": str(ws.root),
        "files": report["labelled_tracks"],
        "hours": extract.total_hours,
        "labels": dict(labels),
        "groups": len({r["group"] for r in rows}),
        "failed": extract.failed,
        "skipped": extract.skipped,
        "systems": summaries,
        "details": {name: figures for name, figures in systems.items()},
        "reidentification": reid,
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "notes": notes,
    }


def reusable_report(ws: Any, name: str) -> dict[str, Any] | None:
    """The workspace's earlier suite report when it evaluated exactly the current embeddings (same export, hence
    same model, features and labels), else None. Evaluation is deterministic (seeded folds and baselines).
    The export's fingerprint ignores how descriptors are pooled (the index does not read them), so a report
    older than the export's last write is never reused: a re-export that only re-made descriptors is new."""
    from embedtool.embedding.store import EmbeddingStore

    path = Path(ws.reports) / name / "report.json"
    if not path.is_file() or path.stat().st_mtime < (Path(ws.embeddings) / "meta.json").stat().st_mtime:
        return None
    report = json.loads(path.read_text())
    return report if report["inputs"]["embeddings"] == EmbeddingStore(ws.embeddings).fingerprint else None


def summary(figures: dict[str, Any]) -> dict[str, float]:
    return {
        "macro_f1": figures["classification"]["macro_f1"],
        "accuracy": figures["classification"]["accuracy"],
        f"p@{K}": figures["retrieval"].get(f"p@{K}", float("nan")),
        "p@1": figures["retrieval"].get("p@1", float("nan")),
    }


# --- pretrained baselines: musicnn, aisfx ------------------------------------------------------------------

PRETRAINED = {  # name -> vector cache
    "musicnn": "musicnn-msd-penultimate.npz",
    "aisfx": "aisfx-embedding.npz",
    "resemblyzer": "resemblyzer-embedding.npz",
}
IN_PROCESS = {"aisfx": "aisfx_features", "resemblyzer": "resemblyzer_features"}  # name -> module with a Model


def pretrained_system(
    name: str, ws: Any, cache_file: Path, options: Any, classify: Any, args: argparse.Namespace
) -> tuple[dict[str, Any] | None, str]:
    """A pretrained model's per-file vectors (``compute_vectors``) through evaluate's own scoring; or (None, why
    not) when the model is unavailable, fails, or leaves tracks without a vector. Vectors are cached in the
    corpus's base workspace (``cache_file``); only tracks missing there are computed."""
    if name in args.leave_out:
        return None, f"left out (--no-{name})"
    import numpy as np

    from embedtool.analysis.evaluate import evaluate_system
    from embedtool.analysis.labelled import LabelledData
    from embedtool.analysis.options import ClusterOptions
    from embedtool.embedding.store import EmbeddingStore

    clock = time.perf_counter()
    store = EmbeddingStore(ws.embeddings)
    data = LabelledData.from_store(store)
    paths = {t["track_id"]: t["path"] for t in store.tracks}
    cache: dict[str, Any] = {}
    if cache_file.is_file():
        with np.load(cache_file) as cached:
            cache = dict(cached)
    todo = {t: paths[t] for t in data.track_ids if t not in cache}
    if todo:
        why = compute_vectors(name, todo, cache, cache_file, args)
        if why:
            return None, why
    missing = [t for t in data.track_ids if t not in cache]
    if missing:
        return None, f"{len(missing)} of {len(data.track_ids)} tracks have no {name} vector (failed in {name})"
    vectors = np.stack([cache[t] for t in data.track_ids])
    figures = evaluate_system(data.with_vectors(vectors), options, classify, ClusterOptions(plots=False), None, True)
    figures.pop("_assignments", None)
    figures["seconds"] = time.perf_counter() - clock
    return figures, ""


def compute_vectors(name: str, paths: dict[str, str], cache: dict[str, Any], cache_file: Path, args: Any) -> str:
    """Add ``paths``' vectors ({id: path}) to ``cache`` and save it to ``cache_file``; "" or why it could not.
    musicnn: in this process when it imports, else in the musicnn venv (``musicnn_in_venv``); aisfx: in this
    process (the bundled network); resemblyzer: in this process (``bench/resemblyzer_setup.sh``).
    A file that fails is logged and left out."""
    if name == "musicnn":
        try:
            import musicnn.models  # noqa: F401
        except Exception as exc:  # ImportError, or TensorFlow failing to load: the musicnn venv instead
            why = musicnn_in_venv(list(paths), paths, cache, cache_file, args.musicnn_python)
            return f"not importable here ({type(exc).__name__}: {exc}); {why}" if why else ""
        from musicnn_features import Model as MusicnnModel

        model: Any = MusicnnModel()
        vector = model.penultimate
    else:
        import importlib

        try:
            model = importlib.import_module(IN_PROCESS[name]).Model()
        except ImportError as exc:
            return f"not installed ({exc}; run bench/{name}_setup.sh)"
        vector = model.vector
    log(f"{name}: {len(paths)} files")
    started = last_log = time.perf_counter()
    for i, (track_id, path) in enumerate(paths.items(), 1):
        try:
            cache[track_id] = vector(path)[0]
        except Exception as exc:  # an undecodable file: report, go on, count in the caller
            log(f"{name}: FAILED {path}: {type(exc).__name__}: {exc}")
        if time.perf_counter() - last_log > 60:
            log(f"{name}: {i}/{len(paths)} files in {time.perf_counter() - started:.0f} s")
            last_log = time.perf_counter()
    save_npz(cache, cache_file)
    return ""


def pretrained_lookup(name: str, cache_file: Path, args: argparse.Namespace) -> Any:
    """For the re-identification column: ``lookup({id: excerpt path})`` -> the library's cached vectors
    (``pretrained_system`` made them) and the excerpts' (computed now, never cached: excerpts are made anew each
    run), or None when the model is unavailable."""
    import tempfile

    import numpy as np

    def lookup(paths: dict[str, str]) -> dict[str, Any] | None:
        if not cache_file.is_file():
            return None
        with np.load(cache_file) as cached:
            library = dict(cached)
        with tempfile.TemporaryDirectory(prefix=f"reid-{name}-", dir=cache_file.parent) as tmp:
            computed: dict[str, Any] = {}
            if compute_vectors(name, paths, computed, Path(tmp) / "vectors.npz", args):
                return None
        return {**library, **computed}

    return lookup


def musicnn_in_venv(
    todo: list[str], paths: dict[str, str], cache: dict[str, Any], cache_file: Path, python: Path
) -> str:
    """Compute ``todo``'s vectors with ``python bench/musicnn_features.py`` (one TensorFlow thread), merge what it
    wrote into ``cache`` and save it to ``cache_file`` (also when the run fails part-way); "" or why it failed."""
    import subprocess
    import tempfile

    import numpy as np

    if not python.is_file():
        return f"no musicnn venv python at {python} (run bench/musicnn_setup.sh, or give --musicnn-python)"
    env = {**os.environ, "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    script = Path(__file__).resolve().with_name("musicnn_features.py")
    log(f"musicnn: {len(todo)} files through {python}")
    with tempfile.TemporaryDirectory(prefix="musicnn-", dir=cache_file.parent) as tmp:
        listing, out = Path(tmp) / "list.tsv", Path(tmp) / "vectors.npz"
        with open(listing, "w", newline="") as f:
            writer = csv.writer(f, delimiter="\t")
            writer.writerow(["track_id", "path"])
            writer.writerows([track_id, paths[track_id]] for track_id in todo)
        try:
            subprocess.run([str(python), str(script), str(listing), str(out)], check=True, env=env)
        except (OSError, subprocess.CalledProcessError) as exc:
            return f"{python} {script.name} failed ({exc})"
        finally:
            if out.is_file():  # what it computed, even when it stopped part-way
                with np.load(out) as computed:
                    cache.update({track_id: computed[track_id] for track_id in computed.files})
                save_npz(cache, cache_file)
    return ""


def save_npz(arrays: dict[str, Any], path: Path) -> None:
    """np.savez to a temporary file beside ``path``, then os.replace (an interrupted save leaves the old cache)."""
    import numpy as np

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


# --- the table -----------------------------------------------------------------------------------------------


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite and len(finite) == len(values) else float("nan")


def table(results: dict[str, Any]) -> str:
    """One row per corpus (tuning first), the systems' macro-F1, their p@5, then their re-identification top-1
    (``identify``: what ``neighbours --mode identify`` answers, right and accepted); a mean row per set."""
    systems = [s for s in SYSTEMS if any(s in r["systems"] for r in results.values())]
    head = "| corpus | set | kind | files | labels | " + " | ".join(f"{s} F1" for s in systems)
    head += " | " + " | ".join(f"{s} p@{K}" for s in systems)
    reid = [s for s in (*systems, "identify") if any("re-id" in r["systems"].get(s, {}) for r in results.values())]
    head += "".join(f" | {s} re-id" for s in reid)
    impostors = any("impostors accepted" in r["systems"].get("identify", {}) for r in results.values())
    head += " | identify impostors accepted |" if impostors else " |"
    lines = [head, "|" + "---|" * 5 + "---:|" * (2 * len(systems) + len(reid) + impostors)]

    def cells(get: Any) -> str:
        values = [get(s, "macro_f1") for s in systems] + [get(s, f"p@{K}") for s in systems]
        values += [get(s, "re-id") for s in reid] + ([get("identify", "impostors accepted")] if impostors else [])
        return " | ".join("–" if math.isnan(v) else f"{v:.3f}" for v in values)

    for which in ("tuning", "check"):
        names = [c for c, r in results.items() if r["set"] == which]
        for corpus in names:
            r = results[corpus]

            def one(system: str, metric: str, r: dict[str, Any] = r) -> float:
                return r["systems"].get(system, {}).get(metric, float("nan"))

            lines.append(f"| {corpus} | {which} | {r['kind']} | {r['files']} | {len(r['labels'])} | {cells(one)} |")
        if names:

            def mean(system: str, metric: str, names: list[str] = names) -> float:
                return _mean([results[c]["systems"].get(system, {}).get(metric, float("nan")) for c in names])

            lines.append(f"| **mean, {which} set** ({len(names)}) | {which} | | | | {cells(mean)} |")
    return "\n".join(lines)


def summary_path(path: Path) -> Path:
    """Where a run's summary goes: beside it, ``...-summary.json`` (tracked in git, unlike the full run)."""
    return path.with_name(path.stem + "-summary.json")


def summarised(run: dict[str, Any]) -> dict[str, Any]:
    """A run without each system's per-fold details: the table's figures, re-identification and identify's
    outcomes, timings and notes (a few KB where the run is MB), kept so the figures the docs cite stay checkable.
    ``--show`` reads either."""
    results = {corpus: {k: v for k, v in r.items() if k != "details"} for corpus, r in run["results"].items()}
    return {**run, "results": results}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", type=Path, default=Path(os.environ.get("EMBEDTOOL_CORPORA", CORPORA)))
    parser.add_argument("--work", type=Path, default=Path("~/.cache/embedtool-bench/suite"))
    parser.add_argument("--set", choices=("tuning", "check", "all"), default="check", dest="which")
    parser.add_argument("--only", nargs="*", help="these corpora (any set)")
    parser.add_argument("--max-files", type=int, default=0, help="at most N files per corpus, stratified (0: all)")
    parser.add_argument("--jobs", type=int, default=2, help="extraction processes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--fresh", action="store_true", help="re-evaluate even when the embeddings are unchanged")
    parser.add_argument("--no-musicnn", action="store_true", help="leave musicnn out even when installed")
    parser.add_argument("--no-aisfx", action="store_true", help="leave aisfx out even when installed")
    parser.add_argument("--no-resemblyzer", action="store_true", help="leave Resemblyzer out even when installed")
    parser.add_argument(
        "--musicnn-python",
        type=Path,
        default=Path(os.environ.get("EMBEDTOOL_MUSICNN_PYTHON", "~/.cache/embedtool-musicnn/venv/bin/python")),
        help="the musicnn venv's python (bench/musicnn_setup.sh), used when musicnn does not import here "
        "(default: $EMBEDTOOL_MUSICNN_PYTHON, else %(default)s)",
    )
    parser.add_argument("--no-reid", action="store_true", help="leave the re-identification column out")
    parser.add_argument(
        "--background",
        type=Path,
        default=None,
        help="background audio mixed into the re-identification excerpts (default: CORPORA/background)",
    )
    parser.add_argument("--reid-excerpts", type=int, default=60, help="re-identification excerpts per corpus")
    parser.add_argument("--reid-seconds", type=float, default=3.0, help="their length (whole files when shorter)")
    parser.add_argument("--model", default="general", help="the model to adopt: a bundled name or a model folder")
    parser.add_argument(
        "--tag", default="", help="name of this model's workspaces (ws-TAG beside each corpus' ws, same features)"
    )
    parser.add_argument(
        "--train-epochs", type=int, default=0, help="train --model on each corpus for N epochs (needs --tag)"
    )
    parser.add_argument(
        "--anchor-weight", type=float, default=None, help="with --train-epochs: train.anchor_weight (default: train's)"
    )
    parser.add_argument(
        "--distil-teachers", default="", help="with --train-epochs: train.distil_teachers (e.g. aisfx; default: none)"
    )
    parser.add_argument("--distil-weight", type=float, default=1.0, help="with --distil-teachers: train.distil_weight")
    parser.add_argument("--show", type=Path, nargs="*", help="print the table of earlier results JSON files")
    args = parser.parse_args()
    if (args.anchor_weight is not None or args.distil_teachers) and not args.train_epochs:
        parser.error("--anchor-weight and --distil-teachers apply to --train-epochs")
    if args.train_epochs and not args.tag:
        parser.error("--train-epochs needs --tag: the trained models get their own workspaces")
    if args.show:
        for path in args.show:
            print(table(json.loads(path.read_text())["results"]))
        return
    args.corpora, args.work = args.corpora.expanduser(), args.work.expanduser()
    args.musicnn_python = args.musicnn_python.expanduser()
    args.leave_out = {name for name in PRETRAINED if getattr(args, f"no_{name}")}
    args.background = (args.background or args.corpora / "background").expanduser()
    if not args.no_reid and not args.background.is_dir():
        parser.error(f"no background audio at {args.background} (bench/corpora/fetch background, or --no-reid)")
    corpora = args.only or {"tuning": TUNING, "check": CHECK, "all": TUNING + CHECK}[args.which]
    stamp = timestamp()

    import torch

    torch.set_num_threads(args.threads)
    results: dict[str, Any] = {}
    failed: dict[str, str] = {}
    started = time.perf_counter()
    path = result_path("bench_suite", stamp)
    for corpus in corpora:
        if not (args.corpora / corpus / "labels.tsv").is_file():
            log(f"skipping {corpus}: {args.corpora / corpus}/labels.tsv missing (run bench/corpora/fetch {corpus})")
            continue
        clock = time.perf_counter()
        try:
            results[corpus] = run_corpus(corpus, args)
        except Exception as exc:  # one corpus failing must not lose the others' figures
            failed[corpus] = f"{type(exc).__name__}: {exc}"
            log(f"{corpus}: FAILED: {failed[corpus]}")
            continue
        log(f"{corpus}: done in {time.perf_counter() - clock:.0f} s")
        run = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "seconds": round(time.perf_counter() - started, 1),
            "results": results,
            "failed": failed,
        }
        write_json(path, run, default=str)  # after each corpus, so an interrupted run keeps what it measured
        write_json(summary_path(path), summarised(run), default=str)
    print()
    print(table(results))
    for corpus, why in failed.items():
        print(f"{corpus}: failed: {why}")
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
