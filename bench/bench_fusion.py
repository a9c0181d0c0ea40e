"""Benchmark: the fusion ceiling — how much the systems of the suite know that the others do not.

Reads the workspaces and vector caches a ``bench_suite`` run left (``--work``, default ~/.cache/embedtool-bench/suite,
``<corpus>-n<max-files>/ws``): the bundled ``general`` model's track descriptors (classification) and track
embeddings (retrieval), the MFCC statistics of the same log-Mels, and the cached per-file vectors of the pretrained
models (``aisfx``, ``musicnn``, ``resemblyzer``). Each combination is scored on the same tracks, grouped 5-fold
folds and classifier as the suite (logistic regression, C by inner grouped CV, balanced classes):

- **early fusion** (``a+b``): the blocks side by side; the classifier standardises every column, so each block
  counts by its number of dimensions. For same-label precision@5, each block is standardised and scaled by
  1/sqrt(dim) first, so every block weighs the same in the cosine;
- **late fusion** (``a|b``): each block's own classifier, the held-out class probabilities averaged over blocks.

A system or combination whose vectors some corpus lacks is left blank there. The ``general`` descriptor already
carries the MFCC statistics (decision 0013), so ``general+mfcc`` mostly shows the weight of giving them more columns.

    ./dev bench bench_suite --set tuning --max-files 120 --no-reid    # makes the workspaces and caches
    ./dev bench bench_fusion --set tuning                             # chooses on these
    ./dev bench bench_fusion --set check                              # then reports these, once, as they come

Writes bench/results/bench_fusion-<set>-<time>.json and prints a table of macro-F1 / p@5 per corpus and the mean.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import log, result_path, timestamp, write_json
from bench_suite import CHECK, PRETRAINED, TUNING

K = 5
BLOCKS = ("general", "mfcc", "aisfx", "musicnn", "resemblyzer")


def load_blocks(ws_dir: Path) -> tuple[Any, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(labelled data, classification matrix per block, retrieval matrix per block) of one corpus' workspace."""
    from embedtool.analysis.baselines import track_baseline_vectors
    from embedtool.analysis.labelled import LabelledData
    from embedtool.embedding.store import EmbeddingStore
    from embedtool.features.store import FeatureStore

    store = EmbeddingStore(ws_dir / "embeddings")
    data = LabelledData.from_store(store, descriptors=True)
    classify = {"general": data.descriptors}
    retrieve = {"general": data.vectors}
    mfcc = track_baseline_vectors(FeatureStore(ws_dir / "features"), data.track_ids)
    classify["mfcc"] = retrieve["mfcc"] = mfcc
    for name, cache_name in PRETRAINED.items():
        cache_file = ws_dir.parent / "ws" / cache_name
        if not cache_file.is_file():
            continue
        with np.load(cache_file) as cached:
            if all(t in cached.files for t in data.track_ids):
                classify[name] = retrieve[name] = np.stack([cached[t] for t in data.track_ids]).astype(np.float32)
    return data, classify, retrieve


def balanced(blocks: list[np.ndarray]) -> np.ndarray:
    """Blocks side by side, each standardised and scaled by 1/sqrt(dim): equal weight in a cosine."""
    from embedtool.analysis.retrieval import standardise

    return np.hstack([standardise(b) / np.sqrt(b.shape[1]) for b in blocks])


def score_corpus(ws_dir: Path, combos: list[tuple[str, ...]]) -> dict[str, dict[str, float]]:
    """{system: {macro_f1, p@5}} for each single block and each early (``+``) and late (``|``) combination."""
    from embedtool.analysis.folds import classification_metrics, evaluate_classifier
    from embedtool.analysis.options import ClassifyOptions
    from embedtool.analysis.retrieval import precision_at_k

    data, classify, retrieve = load_blocks(ws_dir)
    options = ClassifyOptions(cv=5, plots=False)
    labels = sorted(set(data.labels))
    figures: dict[str, dict[str, float]] = {}
    probabilities: dict[str, dict[str, dict[str, float]]] = {}

    def p_at_k(names: tuple[str, ...]) -> float:
        vectors = balanced([retrieve[n] for n in names])
        return precision_at_k(vectors, data.labels, (K,), data.groups)[f"p@{K}"]

    for name in classify:
        evaluation = evaluate_classifier(data.with_vectors(classify[name]), options)
        probabilities[name] = {p["track_id"]: p["probabilities"] for p in evaluation.predictions}
        figures[name] = {"macro_f1": evaluation.metrics["macro_f1"], f"p@{K}": p_at_k((name,))}
    for combo in combos:
        if not all(n in classify for n in combo):
            continue
        early = evaluate_classifier(data.with_vectors(np.hstack([classify[n] for n in combo])), options)
        figures["+".join(combo)] = {"macro_f1": early.metrics["macro_f1"], f"p@{K}": p_at_k(combo)}
        predicted = [
            max(labels, key=lambda c, t=t: sum(probabilities[n][t].get(c, 0.0) for n in combo)) for t in data.track_ids
        ]
        late = classification_metrics(data.labels, predicted, labels)
        figures["|".join(combo)] = {"macro_f1": late["macro_f1"], f"p@{K}": figures["+".join(combo)][f"p@{K}"]}
    return figures


def default_combos() -> list[tuple[str, ...]]:
    """general with every subset of the other blocks, and aisfx with each other block."""
    others = [b for b in BLOCKS if b != "general"]
    combos = [("general", *extra) for r in range(1, len(others) + 1) for extra in itertools.combinations(others, r)]
    return combos + [("aisfx", b) for b in others if b != "aisfx"]


def table(results: dict[str, dict[str, dict[str, float]]]) -> str:
    corpora = list(results)
    systems = sorted({s for r in results.values() for s in r}, key=lambda s: (s.count("+") + s.count("|"), s))
    lines = ["| system | " + " | ".join(corpora) + " | mean F1 | mean p@5 |", "|---" * (len(corpora) + 3) + "|"]
    for system in systems:
        cells, f1s, ps = [], [], []
        for corpus in corpora:
            fig = results[corpus].get(system)
            cells.append(f"{fig['macro_f1']:.3f}" if fig else "")
            if fig:
                f1s.append(fig["macro_f1"])
                ps.append(fig[f"p@{K}"])
        complete = len(f1s) == len(corpora)
        mean_f1 = f"{np.mean(f1s):.3f}" if complete else ""
        mean_p = f"{np.mean(ps):.3f}" if complete else ""
        lines.append(f"| {system} | " + " | ".join(cells) + f" | {mean_f1} | {mean_p} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("tuning", "check"), default="tuning", dest="which")
    parser.add_argument("--work", type=Path, default=Path("~/.cache/embedtool-bench/suite"))
    parser.add_argument("--max-files", type=int, default=120, help="the suite run's cap (its workspaces' names)")
    parser.add_argument("--only", nargs="*", help="these corpora only")
    parser.add_argument(
        "--combos", nargs="*", help="early-fusion combinations to score, e.g. general+aisfx (default: every one)"
    )
    args = parser.parse_args()
    corpora = args.only or list(TUNING if args.which == "tuning" else CHECK)
    combos = [tuple(c.split("+")) for c in args.combos] if args.combos else default_combos()
    started = time.perf_counter()
    from threadpoolctl import threadpool_limits

    # one BLAS thread: hundreds of small logistic regressions on a shared machine run ~30x slower with more
    threadpool_limits(1)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for corpus in corpora:
        ws_dir = args.work.expanduser() / f"{corpus}-n{args.max_files}" / "ws"
        if not (ws_dir / "embeddings" / "meta.json").is_file():
            log(f"{corpus}: no suite workspace at {ws_dir} (run bench_suite first): left out")
            continue
        clock = time.perf_counter()
        results[corpus] = score_corpus(ws_dir, combos)
        log(f"{corpus}: {len(results[corpus])} systems in {time.perf_counter() - clock:.0f} s")
    print(table(results))
    path = write_json(
        result_path(f"bench_fusion-{args.which}", timestamp()),
        {
            "args": {k: str(v) for k, v in vars(args).items()},
            "seconds": time.perf_counter() - started,
            "results": results,
        },  # fmt: skip
    )
    log(f"wrote {path}")


if __name__ == "__main__":
    main()
