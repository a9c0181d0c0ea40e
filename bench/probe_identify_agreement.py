"""Probe: how many aligned fingerprint moments identify should ask for when the embeddings rank the same track first.

Not a benchmark of the product: it replays the rows of ``bench_identify_real`` results (each excerpt's embeddings
answer and confidence decision, the fingerprints' best tracks and their support) through the rule of
the Searcher's identify-by-fingerprint rule with other values of the support asked for when the two views agree, and
prints, per excerpt length, the share named right and accepted and the share of impostors accepted. The rows hold
everything the rule reads, so no query is run again.

    .venv/bin/python bench/probe_identify_agreement.py bench/results/bench_identify_real-music-dev-*.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

# (moments per second of query, at least) asked for when the embeddings rank the fingerprints' best track first;
# the first is the rule without an agreement-specific support (decision 0012)
GRID = ((3.0, 4), (2.5, 4), (2.0, 4), (2.0, 3), (1.5, 4), (1.5, 3), (1.0, 3), (1.0, 2))
HITS_PER_SECOND, MIN_HITS, MAX_MIN_HITS, MARGIN, AGREEMENT_MARGIN = 3.0, 4, 20, 2.0, 1.5


def support(per_second: float, least: int, length_s: float) -> int:
    return int(np.clip(round(per_second * length_s), least, MAX_MIN_HITS))


def decide(row: dict, agreed_rule: tuple[float, int]) -> tuple[str | None, bool]:
    """(the track answered, accepted) for one excerpt under ``agreed_rule``."""
    hits = list(row["fp_hits"]) + [0, 0]
    agreed = row["emb_track"] is not None and row["emb_track"] == row["fp_track"]
    if agreed:
        needed, margin = support(*agreed_rule, row["length_s"]), min(MARGIN, AGREEMENT_MARGIN)
    else:
        needed, margin = support(HITS_PER_SECOND, MIN_HITS, row["length_s"]), MARGIN
    if row["fp_track"] is not None and hits[0] >= needed and hits[0] >= margin * hits[1]:
        return row["fp_track"], True
    if row["fp_track"] is not None and not agreed:
        return None, False  # the two views disagree
    return row["emb_track"], bool(row["emb_accepted"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+")
    args = parser.parse_args()
    rows = [r for path in args.results for r in json.loads(path.read_text())["queries"]]
    lengths = sorted({r["length_s"] for r in rows})
    print(f"{len(rows)} excerpts from {len(args.results)} file(s)")
    print(f"{'agreed: per s / least':>22} " + " ".join(f"{f'{g:g} s right+acc / imp.acc':>26}" for g in lengths))
    for rule in GRID:
        cells = []
        for length in lengths:
            sel = [r for r in rows if r["length_s"] == length]
            true = [r for r in sel if not r["impostor"]]
            imp = [r for r in sel if r["impostor"]]
            right = np.mean([(a := decide(r, rule))[1] and a[0] == r["track_id"] for r in true]) if true else 0.0
            wrong = np.mean([decide(r, rule)[1] for r in imp]) if imp else 0.0
            cells.append(f"{right:12.1%} / {wrong:5.1%} ({len(imp):3d})")
        print(f"{f'{rule[0]:g} / {rule[1]}':>22} " + " ".join(f"{c:>26}" for c in cells))


if __name__ == "__main__":
    main()
