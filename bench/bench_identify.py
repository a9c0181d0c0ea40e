"""Identify's "no match" decision: the confidence rule against the best-score rule of earlier versions.

On an indexed workspace (``--workspace``, e.g. music-dev with a fully trained model), side by side on the same
queries, for both statistics (``query.calibrate``):

1. impostors: clean excerpts of 1 / 3 / 10 s of library tracks, queried with their own track left out of the
   index; true matches: the same excerpts with the track in, clean, at -12 dB, and with Mel-domain noise at 10
   and 5 dB. Each rule gets one threshold, set for 5% false accepts on the 3 s impostors, and is then read at
   every length: false-accept rate, and the share of true matches accepted *and* ranked first;
2. as the product calibrates each rule (what ``embedtool index`` picks): the best score with one threshold
   calibrated on 3 s excerpts (earlier versions), the confidence with one threshold per length (1/3/10 s,
   interpolated by query duration): the same impostors and true matches, and out-of-domain impostors: white,
   pink and brown noise (3 s) and audio files from ``--ood`` folders (drum one-shots, the bundled CC0 set),
   none of which is in the index.

    .venv/bin/python bench/bench_identify.py --workspace WS --ood ~/.cache/embedtool-corpora/drums
        embedtool/sample_audio

Writes bench/results/bench_identify.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _common import result_path, write_json

LENGTHS = (1.0, 3.0, 10.0)
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3"}


def ranked_scores(searcher, mel: np.ndarray, exclude: str | None = None) -> list[tuple[str, float]]:
    """(track id, score) of the best tracks, best first, through the real identify path."""
    starts = searcher.window_starts(mel.shape[0])
    vectors = searcher.embed(mel, starts)
    fps = searcher.settings.frames_per_second
    duration = searcher.settings.frames_to_seconds(mel.shape[0])
    result = searcher.search_vectors(vectors, starts / fps, duration, "identify", k=5, exclude_track=exclude)
    return [(m.track_id, m.score) for m in result.matches]


def statistic_of(name: str, best: float, runner_up: float | None) -> float:
    from embedtool.query.decision import match_confidence

    return best if name == "best_score" else match_confidence(best, runner_up)


def degrade(mel: np.ndarray, kind: str, rng: np.random.Generator, settings) -> np.ndarray:
    from embedtool.query.calibrate import add_mel_noise

    if kind == "gain-12":  # -12 dB on the linear Mel magnitudes, through the log offset
        g = 10 ** (-12 / 20)
        return np.log(np.exp(mel) * g + settings.log_offset * (1 - g)).astype(np.float32)
    if kind.startswith("mel"):
        return add_mel_noise(mel, float(kind[3:-2]), rng, settings.log_offset, settings.power)
    return mel


def excerpts(searcher, features, per_length: int, rng: np.random.Generator) -> dict:
    """Per length: impostor (best, runner-up) pairs and, per degradation, (true score, best other, ranked first)."""
    ids = [t["track_id"] for t in searcher.tables.tracks]
    out = {}
    for seconds in LENGTHS:
        frames = searcher.settings.seconds_to_frames(seconds)
        impostors, matches = [], {k: [] for k in ("clean", "gain-12", "mel10dB", "mel5dB")}
        long_enough = [t for t in ids if int(features.track(t)["frames"]) > frames]
        for i in range(per_length):
            tid = long_enough[i % len(long_enough)]
            mel = np.asarray(features.mel(tid), dtype=np.float32)
            start = int(rng.integers(0, mel.shape[0] - frames))
            mel = mel[start : start + frames]
            r = ranked_scores(searcher, mel, exclude=tid)
            impostors.append((r[0][1] if r else 0.0, r[1][1] if len(r) > 1 else None))
            for kind in matches:
                r = ranked_scores(searcher, degrade(mel, kind, rng, searcher.settings))
                true = next((s for t, s in r if t == tid), 0.0)
                other = next((s for t, s in r if t != tid), None)
                matches[kind].append((true, other, bool(r) and r[0][0] == tid))
        out[seconds] = {"impostors": impostors, "matches": matches}
    return out


def noise(kind: str, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal(int(seconds * sr))
    if kind != "white":  # pink: 1/f power, brown: 1/f^2
        spectrum = np.fft.rfft(x) / (np.arange(len(x) // 2 + 1) + 1.0) ** (0.5 if kind == "pink" else 1.0)
        x = np.fft.irfft(spectrum, len(x))
    return (0.1 * x / np.abs(x).max()).astype(np.float32)


def out_of_domain(searcher, folders: list[Path], per_kind: int, rng: np.random.Generator) -> dict:
    """{source: [(best, runner-up)]} for noises and for audio files under ``folders`` (every n-th file)."""
    from embedtool.errors import InputError

    out: dict[str, list] = {}
    for kind in ("white", "pink", "brown"):
        for _ in range(per_kind):
            r = searcher.query_samples(noise(kind, 3.0, 22050, rng), 22050, mode="identify", k=2)
            out.setdefault(f"{kind} noise", []).append(_pair(r))
    for folder in folders:
        files = sorted(p for p in folder.expanduser().rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        for path in files[:: max(1, len(files) // per_kind)][:per_kind]:
            try:
                r = searcher.query_file(path, mode="identify", k=2)
            except InputError:  # shorter than the shortest usable query
                continue
            out.setdefault(folder.name, []).append(_pair(r))
    return out


def _pair(result) -> tuple[float, float | None, float]:
    m = result.matches
    return (m[0].score if m else 0.0, m[1].score if len(m) > 1 else None, result.query.duration_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--ood", type=Path, nargs="*", default=[], help="folders of audio not in the index")
    parser.add_argument("--excerpts", type=int, default=400, help="excerpts per length")
    parser.add_argument("--per-kind", type=int, default=20, help="out-of-domain queries per source")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from embedtool.features.store import FeatureStore
    from embedtool.query.calibrate import calibrate_identify, calibrate_threshold
    from embedtool.query.decision import threshold_for
    from embedtool.query.searcher import Searcher
    from embedtool.threads import single_threaded
    from embedtool.workspace import Workspace

    ws = Workspace(args.workspace)
    searcher = Searcher.open(ws)
    features = FeatureStore(ws.features)
    rng = np.random.default_rng(args.seed)
    with single_threaded():
        data = excerpts(searcher, features, args.excerpts, rng)
        ood = out_of_domain(searcher, args.ood, args.per_kind, rng)
    report: dict = {"workspace": str(args.workspace), "excerpts": args.excerpts, "rules": {}}
    for name in ("best_score", "confidence"):
        imp3 = [statistic_of(name, *p) for p in data[3.0]["impostors"]]
        at_5 = float(np.quantile(imp3, 0.95))
        rows = {}
        for seconds, d in data.items():
            row = {"false_accepts": float(np.mean([statistic_of(name, *p) >= at_5 for p in d["impostors"]]))}
            for kind, triples in d["matches"].items():
                row[kind] = float(np.mean([statistic_of(name, t, o) >= at_5 and first for t, o, first in triples]))
            rows[f"{seconds:g}s"] = row
        # As `embedtool index` calibrates the rule: earlier versions one best-score threshold at 3 s; now one
        # confidence threshold per length.
        if name == "best_score":
            calibrated = calibrate_threshold(searcher, features, 200, 3.0, 15.0, 0, statistic=name)
            by_length = [{"excerpt_s": 3.0, "threshold": calibrated["threshold"]}]
        else:
            by_length = calibrate_identify(searcher, features, 200, LENGTHS, 15.0, 0)["by_length"]
        product = {}
        for seconds, d in data.items():
            t = threshold_for(by_length, seconds)
            row = {
                "threshold": t,
                "false_accepts": float(np.mean([statistic_of(name, *p) >= t for p in d["impostors"]])),
            }
            for kind, triples in d["matches"].items():
                row[kind] = float(np.mean([statistic_of(name, a, o) >= t and first for a, o, first in triples]))
            product[f"{seconds:g}s"] = row
        ood_rates = {
            source: float(np.mean([statistic_of(name, b, r) >= threshold_for(by_length, d) for b, r, d in pairs]))
            for source, pairs in ood.items()
        }
        report["rules"][name] = {"threshold_at_5pct": at_5, "by_length": rows, "calibrated": by_length,
                                 "as_calibrated": product, "out_of_domain_accepted": ood_rates}  # fmt: skip
    path = write_json(result_path("bench_identify"), report)
    for name, r in report["rules"].items():
        print(f"\n{name}: threshold for 5% false accepts at 3 s = {r['threshold_at_5pct']:.3f}")
        print(f"  {'length':>6} {'FAR':>6} " + " ".join(f"{k:>8}" for k in ("clean", "gain-12", "mel10dB", "mel5dB")))
        for length, row in r["by_length"].items():
            cells = " ".join(f"{row[k]:8.2f}" for k in ("clean", "gain-12", "mel10dB", "mel5dB"))
            print(f"  {length:>6} {row['false_accepts']:6.3f} {cells}")
        print("  as calibrated by `embedtool index`:")
        for length, row in r["as_calibrated"].items():
            cells = " ".join(f"{row[k]:8.2f}" for k in ("clean", "gain-12", "mel10dB", "mel5dB"))
            print(f"  {length:>6} {row['false_accepts']:6.3f} {cells}   threshold {row['threshold']:.3f}")
        print("  out-of-domain accepted: " + ", ".join(f"{k} {v:.2f}" for k, v in r["out_of_domain_accepted"].items()))
    print(f"\nwritten {path}")


if __name__ == "__main__":
    main()
