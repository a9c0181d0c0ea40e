"""`embedtool duplicates` on a set with known answers, built from real music: precision and recall of the copies and
of the shared material, and how the thresholds trade them.

From a corpus (music-dev by default) ``--originals`` tracks each give a ``--seconds`` cut (from 20 s in), written as
FLAC; each of them gets

- an exact copy (the same bytes),
- an mp3 re-encode at ``--kbps`` (PyAV, constant bit rate, 44.1 kHz stereo as the original),
- a copy 6 dB quieter (FLAC),
- a trimmed copy: 4 s off the start and 3 s off the end (FLAC);

and ``--medleys`` of them are quoted by a *medley*: 30 s of a track outside the set, then 20 s of the original (from
its 25 s), then 30 s more of the outside track: shared material with known time ranges. ``--distractors`` further
cuts of other corpus tracks have no copies. The truth: each original and its copies are one group; each medley
shares one passage with one original (and so with its copies). Corpus tracks may be related among themselves (the
music corpus holds remasters of one piece): relations the truth does not know between two originals or distractors
are listed by name and counted apart, not as false positives.

Reported per threshold setting (the landmarks are matched once per setting on the same features): pairwise
precision and recall of "these two files are copies", the shared passages found (a medley linked to its original's
group) with the error of their time ranges, and false shared links.

    .venv/bin/python bench/bench_duplicates.py --originals 16 --distractors 16 --medleys 8

Writes bench/results/bench_duplicates-<stamp>.json.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from _common import MUSIC_DEV, RESULTS, log, result_path, timestamp, write_json
from bench_identify_real import mp3_roundtrip

SR = 44100


def read_cut(path: Path, start_s: float, seconds: float) -> np.ndarray:
    from embedtool.audio.decode import decode_file

    x = decode_file(path, SR).samples
    return x[int(start_s * SR) : int((start_s + seconds) * SR)]


def build(out: Path, corpus: Path, args: argparse.Namespace) -> dict:
    """Write the set under ``out``; returns the truth: groups (lists of names) and medleys (name -> (original,
    (medley start, end), (original start, end)))."""
    import soundfile as sf

    from embedtool.audio.discover import discover_audio

    long_enough = 20.0 + max(args.seconds, 60.0) + 1.0  # every cut starts 20 s in
    found = sorted(f.path for f in discover_audio([corpus]) if sf.info(str(f.path)).duration >= long_enough)
    rng = np.random.default_rng(args.seed)
    picked = [found[i] for i in rng.permutation(len(found))]
    need = args.originals + args.distractors + args.medleys
    if len(picked) < need:
        raise SystemExit(f"{corpus} has {len(picked)} tracks; {need} are needed")
    originals, distractors = picked[: args.originals], picked[args.originals : args.originals + args.distractors]
    outside = picked[args.originals + args.distractors : need]
    out.mkdir(parents=True)
    for i, path in enumerate(originals):
        x = read_cut(path, 20.0, args.seconds)
        name = f"o{i:02d}"
        sf.write(out / f"{name}.flac", x, SR)
        shutil.copy(out / f"{name}.flac", out / f"{name}-copy.flac")
        (out / f"{name}-mp3.mp3").write_bytes(mp3_roundtrip(x.astype(np.float32), SR, args.kbps))
        sf.write(out / f"{name}-quieter.flac", x * 10 ** (-6 / 20), SR)
        sf.write(out / f"{name}-trimmed.flac", x[4 * SR : len(x) - 3 * SR], SR)
    for i, path in enumerate(distractors):
        sf.write(out / f"d{i:02d}.flac", read_cut(path, 20.0, args.seconds), SR)
    for i, path in enumerate(outside):
        host = read_cut(path, 20.0, 60.0)
        quoted = read_cut(originals[i], 20.0, args.seconds)[5 * SR : 25 * SR]  # the original's 5-25 s
        sf.write(out / f"m{i:02d}.flac", np.concatenate([host[: 30 * SR], quoted, host[30 * SR :]]), SR)
    return truth_of(args)


def truth_of(args: argparse.Namespace) -> dict:
    """What :func:`build` makes: groups (lists of names), singles, and medleys (name -> (original, (medley start,
    end), (original start, end)))."""
    kinds = ("", "-copy", "-quieter", "-trimmed")
    return {
        "groups": [[f"o{i:02d}{k}.flac" for k in kinds] + [f"o{i:02d}-mp3.mp3"] for i in range(args.originals)],
        "singles": [f"d{i:02d}.flac" for i in range(args.distractors)],
        "medleys": {f"m{i:02d}.flac": (f"o{i:02d}.flac", (30.0, 50.0), (5.0, 25.0)) for i in range(args.medleys)},
    }


def overlap(x: tuple[float, float], y: tuple[float, float]) -> float:
    return max(0.0, min(x[1], y[1]) - max(x[0], y[0]))


def score(result, truth: dict) -> dict:  # noqa: ANN001
    name = lambda f: Path(f["path"]).name  # noqa: E731
    group_of = {n: gi for gi, g in enumerate(truth["groups"]) for n in g}
    files = [n for g in truth["groups"] for n in g] + truth["singles"] + list(truth["medleys"])
    predicted: dict[str, int] = {}
    for g in result.groups:
        if g.kind == "copies":
            for f in g.files:
                predicted[name(f)] = g.group
    truth_pairs = {(a, b) for a, b in itertools.combinations(sorted(files), 2) if a in group_of
                   and group_of.get(a) == group_of.get(b)}  # fmt: skip
    found_pairs = {(a, b) for a, b in itertools.combinations(sorted(files), 2) if a in predicted
                   and predicted.get(a) == predicted.get(b)}  # fmt: skip
    # The corpus track each file comes from (a medley is its own): two files of different corpus tracks found
    # related are a relation the truth knows nothing about (remasters of one piece), listed, not counted.
    source = {n: g[0] for g in truth["groups"] for n in g} | {n: n for n in truth["singles"]}
    corpus_pair = lambda a, b: a in source and b in source and source[a] != source[b]  # noqa: E731
    unknown = sorted({tuple(sorted((source[a], source[b]))) for a, b in found_pairs - truth_pairs if corpus_pair(a, b)})
    wrong = {(a, b) for a, b in found_pairs - truth_pairs if not corpus_pair(a, b)}
    shared_found, shared_wrong, errors, repeats = set(), [], [], 0
    quoted = {m: q for m, (_, q, _) in truth["medleys"].items()}
    for g in result.groups:
        if g.kind != "shared":
            continue
        (r,) = g.relations
        a, b = name(r.a), name(r.b)
        medley, other = (a, b) if a in truth["medleys"] else (b, a)
        in_medley = [((p.a_start_s, p.a_end_s) if a == medley else (p.b_start_s, p.b_end_s)) for p in r.passages]
        in_other = [((p.b_start_s, p.b_end_s) if a == medley else (p.a_start_s, p.a_end_s)) for p in r.passages]
        if medley in truth["medleys"] and group_of.get(other) == group_of[truth["medleys"][medley][0]]:
            shared_found.add(medley)
            _, (ms, me), (os_, oe) = truth["medleys"][medley]
            # the passage that is the quote; others are the original's own repeats of the quoted bars
            best = max(
                range(len(in_medley)), key=lambda i: overlap(in_medley[i], (ms, me)) + overlap(in_other[i], (os_, oe))
            )
            (m0, m1), (o0, o1) = in_medley[best], in_other[best]
            errors += [abs(m0 - ms), abs(m1 - me), abs(o0 - os_), abs(o1 - oe)]
            repeats += len(in_medley) - 1
        elif corpus_pair(a, b) or (
            medley in truth["medleys"] and all(overlap(m, quoted[medley]) == 0 for m in in_medley)
        ):  # two corpus tracks, or a medley's host track (from the corpus) and a corpus track: unknown to the truth
            unknown.append((a, b))
        else:
            shared_wrong.append((a, b))
    precision = len(found_pairs & truth_pairs) / max(1, len(found_pairs & truth_pairs) + len(wrong))
    return {
        "copy_pairs": len(truth_pairs),
        "copy_precision": precision,
        "copy_recall": len(found_pairs & truth_pairs) / max(1, len(truth_pairs)),
        "missed_copy_pairs": sorted(truth_pairs - found_pairs)[:20],
        "wrong_copy_pairs": sorted(wrong)[:20],
        "shared_recall": len(shared_found) / max(1, len(truth["medleys"])),
        "shared_wrong": shared_wrong,
        "range_error_s_median": float(np.median(errors)) if errors else None,
        "range_error_s_max": float(np.max(errors)) if errors else None,
        "repeats": repeats,  # further passages of a found quote: the original repeating the quoted bars
        "unknown_relations": unknown,
        "counts": result.counts(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=MUSIC_DEV)
    parser.add_argument("--originals", type=int, default=16)
    parser.add_argument("--distractors", type=int, default=16)
    parser.add_argument("--medleys", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=90.0, help="length of every cut")
    parser.add_argument("--kbps", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=RESULTS / "duplicates-set", help="where the set is built")
    parser.add_argument("--reuse", action="store_true", help="match the set and features --work already holds")
    args = parser.parse_args()

    import torch

    from embedtool import pipeline
    from embedtool.analysis.duplicates import find_duplicates
    from embedtool.analysis.options import DuplicatesOptions
    from embedtool.features.store import FeatureStore
    from embedtool.workspace import Workspace

    torch.set_num_threads(1)
    ws = Workspace(args.work / "ws")
    if args.reuse:
        truth = truth_of(args)
    else:
        shutil.rmtree(args.work, ignore_errors=True)
        t0 = time.perf_counter()
        truth = build(args.work / "audio", args.root.expanduser(), args)
        log(f"set built in {time.perf_counter() - t0:.0f} s: {args.work / 'audio'}")
        t0 = time.perf_counter()
        report = pipeline.extract(ws, [args.work / "audio"])
        log(f"extracted {report.tracks} tracks ({report.total_hours:.2f} h) in {time.perf_counter() - t0:.0f} s")
    features = FeatureStore(ws.features)
    hours = sum(features.track(t)["duration_s"] for t in features.track_ids()) / 3600
    rows = []
    settings = [DuplicatesOptions()] + [
        DuplicatesOptions(near_copy=c) for c in (0.5, 0.6, 0.7, 0.9, 0.95)
    ] + [DuplicatesOptions(min_shared_s=s) for s in (3.0, 10.0)] + [
        DuplicatesOptions(min_density=d) for d in (2.0, 3.0, 4.0, 8.0)
    ]  # fmt: skip
    for options in settings:
        t0 = time.perf_counter()
        result = find_duplicates(features, options)
        row = {"options": vars(options), "seconds": time.perf_counter() - t0, **score(result, truth)}
        rows.append(row)
        log(
            f"near_copy {options.near_copy} min_shared_s {options.min_shared_s} min_density {options.min_density}: "
            f"copies P {row['copy_precision']:.3f} R {row['copy_recall']:.3f} ({row['copy_pairs']} pairs), "
            f"shared R {row['shared_recall']:.3f} wrong {len(row['shared_wrong'])}, range error median "
            f"{row['range_error_s_median']} max {row['range_error_s_max']} s; unknown {row['unknown_relations']}; "
            f"{row['seconds']:.1f} s"
        )
        if row["missed_copy_pairs"] or row["wrong_copy_pairs"]:
            log(f"   missed {row['missed_copy_pairs']}; wrong {row['wrong_copy_pairs']}")
    out = result_path("bench_duplicates", timestamp())
    write_json(out, {"argv": sys.argv, "tracks": len(features), "hours": hours, "rows": rows})
    print(f"written {out}")


if __name__ == "__main__":
    main()
