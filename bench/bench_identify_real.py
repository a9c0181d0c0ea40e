"""Identify under what users meet: real background sound, then a lossy codec — embeddings vs landmark
fingerprints vs both, side by side on the same excerpts.

A music folder (``--corpus``) becomes a workspace (extract, the bundled ``general`` model, index). A seeded fifth
of its tracks are *impostors*: their excerpts are queried with their own track left out, as if the library did
not hold them. Every excerpt (``--lengths`` seconds, random offset) gets a random stretch of ``--background``
audio (speech babble: several prompts at once; ambience) mixed in at ``--snr`` dB, and is then encoded to mp3 at
``--bitrate`` kbit/s with PyAV and decoded again through the query path. For each system:

- correct-and-accepted: the excerpt's track ranked first and the answer accepted (not "no match");
- top-1: ranked first, whatever the decision;
- impostors accepted: impostor excerpts answered with a track (any track is wrong).

Systems: ``embeddings`` (the index's time-consistent vote and calibrated confidence threshold), ``fingerprints``
(landmark hashes of the fine-spectrogram peaks stored at extract time, ``indexing.fingerprint``; features made
before them are extracted again), ``combined`` (what `neighbours --mode
identify` answers: the fingerprint when it accepts, else the embeddings).

    .venv/bin/python bench/bench_identify_real.py --corpus ~/.cache/embedtool-corpora/music-dev \\
        --background ~/.cache/embedtool-corpora/background

Writes bench/results/bench_identify_real-<corpus>-<stamp>.json.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from _common import log, result_path, share_features, timestamp, write_json

AUDIO = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".oga")


def audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO and p.is_file())


_decoded: dict[Path, np.ndarray] = {}


def read_mono(path: Path, sample_rate: int) -> np.ndarray:
    """A whole file as mono float32 at ``sample_rate``, decoded by the product's decoder (background files are
    kept decoded: they are drawn from again and again)."""
    from embedtool.audio.decode import decode_file

    if path not in _decoded:
        _decoded[path] = decode_file(path, sample_rate).samples
    return _decoded[path]


def background_stretch(files: list[Path], n: int, sr: int, rng: np.random.Generator, voices: int = 3) -> np.ndarray:
    """``n`` samples of background: for speech, ``voices`` voices at once (babble); other files looped as needed."""
    out = np.zeros(n, np.float32)
    voices = voices if any("speech" in p.parts for p in files) else 1
    for _ in range(voices):
        parts, have = [], 0
        while have < n:
            x = read_mono(files[int(rng.integers(len(files)))], sr)
            if len(x) == 0:
                continue
            start = int(rng.integers(max(1, len(x) - (n - have))))
            parts.append(x[start : start + n - have])
            have += len(parts[-1])
        out += np.concatenate(parts)[:n]
    return out


def quiet_starts(audio: np.ndarray, n: int, sr: int, floor_db: float = -55.0) -> np.ndarray:
    """Starts (samples) of the ``n``-sample windows in the quietest quarter of a track's passages that are not
    silent (RMS over ``floor_db`` dBFS): the soft, sparse moments of orchestral and ambient music."""
    hop = sr // 2
    starts = np.arange(0, max(1, len(audio) - n), hop)
    level = np.array([10 * np.log10(float(np.mean(audio[a : a + n] ** 2)) + 1e-12) for a in starts])
    audible = starts[level > floor_db]
    if len(audible) == 0:
        return audible
    return audible[level[level > floor_db] <= np.percentile(level[level > floor_db], 25)]


def mix(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    ps = float(np.mean(signal**2)) or 1e-12
    pn = float(np.mean(noise**2)) or 1e-12
    y = signal + noise * np.sqrt(ps / pn / 10 ** (snr_db / 10))
    return (y / max(1.0, float(np.abs(y).max()))).astype(np.float32)


def mp3_roundtrip(x: np.ndarray, sr: int, kbps: int) -> bytes:
    """``x`` encoded as mp3 at ``kbps`` (constant bit rate) with PyAV: the file bytes."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=sr, layout="mono")
        stream.bit_rate = kbps * 1000
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = sr
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


def prepare(ws_root: Path, corpus: Path, model: str = "general", features_from: Path | None = None) -> None:
    """Extract (or link ``features_from``'s features), adopt ``model`` and index, each once (again when the
    features were made before the fingerprint peaks were stored with them)."""
    from embedtool import pipeline
    from embedtool.features.store import FeatureStore
    from embedtool.indexing.store import IndexStore
    from embedtool.workspace import Workspace

    ws = Workspace(ws_root)
    if features_from is not None and (features_from / "features" / "meta.json").is_file():
        base = Workspace(features_from)
        if not FeatureStore(base.features).has_peaks():  # the shared features, up to date
            log(f"extract (adding the fingerprint peaks): {pipeline.extract(base, [corpus])}")
        share_features(ws.root, features_from / "features")
    if not (ws.features / "meta.json").is_file() or not FeatureStore(ws.features).has_peaks():
        t0 = time.perf_counter()
        report = pipeline.extract(ws, [corpus])
        log(f"extract: {time.perf_counter() - t0:.0f} s, {report}")
    if not (ws.model / "meta.json").is_file():
        pipeline.adopt(ws, model)
    made = (ws.index / "meta.json").is_file()
    stale = made and IndexStore(ws.index).fingerprints.get("settings", {}).get("source") != "peaks"
    if not made or stale:
        t0 = time.perf_counter()
        pipeline.index(ws)
        log(f"index: {time.perf_counter() - t0:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, required=True, help="a folder of music (the library)")
    parser.add_argument("--background", type=Path, required=True, help="a folder of background audio")
    parser.add_argument("--work", type=Path, default=Path.home() / ".cache" / "embedtool-bench" / "identify-real")
    parser.add_argument("--lengths", type=float, nargs="+", default=[1.0, 3.0])
    parser.add_argument("--snr", type=float, default=10.0)
    parser.add_argument("--bitrate", type=int, default=128)
    parser.add_argument("--excerpts", type=int, default=2, help="excerpts per track and length")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--passages", choices=("any", "quiet"), default="any",
        help="where excerpts start: anywhere, or in each track's quietest quarter of audible passages",
    )  # fmt: skip
    parser.add_argument("--voices", type=int, default=3, help="voices at once in a speech background (babble)")
    parser.add_argument("--model", default="general", help="the library's model: a bundled name or a model folder")
    parser.add_argument("--tag", default="", help="a candidate model's workspace name (WORK/CORPUS-TAG), same features")
    args = parser.parse_args()

    import torch

    from embedtool.audio.peaks import PeakTracker
    from embedtool.features.frontend import featurise_query
    from embedtool.indexing.fingerprint import FingerprintSettings, fingerprint_library, mel_landmarks, peak_landmarks
    from embedtool.query.searcher import Searcher
    from embedtool.workspace import Workspace

    base_root = (args.work / args.corpus.resolve().name).resolve()
    ws_root = base_root.with_name(f"{base_root.name}-{args.tag}") if args.tag else base_root
    prepare(ws_root, args.corpus.expanduser(), args.model, base_root if args.tag else None)
    torch.set_num_threads(1)
    ws = Workspace(ws_root)
    searcher = Searcher.open(ws)
    fps = searcher.settings.frames_per_second
    fp_settings = searcher.fingerprints.settings if searcher.fingerprints else FingerprintSettings()
    t0 = time.perf_counter()
    fp_index = searcher.fingerprints
    if fp_index is None:  # an index made with index.fingerprints off
        fp_index = fingerprint_library(searcher.features, searcher.tables.tracks, fp_settings)
    log(f"fingerprints: {len(fp_index)} landmarks, {time.perf_counter() - t0:.1f} s")

    rng = np.random.default_rng(args.seed)
    tracks = searcher.tables.tracks
    impostors = set(rng.choice(len(tracks), size=max(1, len(tracks) // 5), replace=False).tolist())
    background = audio_files(args.background.expanduser())
    sr = searcher.settings.sample_rate
    rows = []
    tmp = ws_root / "excerpt.mp3"
    from embedtool.audio.decode import decode_file

    for pos, t in enumerate(tracks):
        audio = decode_file(t["path"], sr).samples
        for length in args.lengths:
            n = int(length * sr)
            quiet = quiet_starts(audio, n, sr) if args.passages == "quiet" else None
            for _ in range(args.excerpts if len(audio) > n + sr and (quiet is None or len(quiet)) else 0):
                a = int(rng.choice(quiet)) if quiet is not None else int(rng.integers(0, len(audio) - n))
                clean = audio[a : a + n]
                noisy = mix(clean, background_stretch(background, len(clean), sr, rng, args.voices), args.snr)
                tmp.write_bytes(mp3_roundtrip(noisy, sr, args.bitrate))
                impostor = pos in impostors
                exclude = t["track_id"] if impostor else None
                tracker = PeakTracker(sr)
                mel, _ = featurise_query(tmp, searcher.settings, on_block=tracker.push)
                peaks = tracker.finish()
                searcher.fingerprints = None  # the embeddings alone
                t1 = time.perf_counter()
                emb = searcher.query_mel(mel, mode="identify", k=5, exclude_track=exclude)
                emb_s = time.perf_counter() - t1
                t1 = time.perf_counter()
                if fp_settings.source == "peaks":
                    hashes, frames = peak_landmarks(*peaks, fp_settings)
                else:
                    hashes, frames = mel_landmarks(mel, fps, fp_settings)
                fp = fp_index.match(hashes, frames, length, top=6, exclude_track=pos if impostor else None)
                fp_s = time.perf_counter() - t1
                searcher.fingerprints = fp_index  # what `neighbours --mode identify` answers
                both = searcher.query_mel(mel, mode="identify", k=5, exclude_track=exclude, peaks=peaks)
                emb_top = emb.best.track_id if emb.best else None
                fp_top = tracks[fp.ranked[0].track]["track_id"] if fp.ranked else None
                rows.append(
                    {
                        "length_s": length,
                        "impostor": impostor,
                        "track_id": t["track_id"],
                        "emb_top1": emb_top == t["track_id"],
                        "emb_accepted": not emb.no_match,
                        "fp_top1": fp_top == t["track_id"],
                        "fp_accepted": fp.accepted,
                        "fp_hits": [h.hits for h in fp.ranked[:3]],
                        "path": t["path"],
                        "emb_track": emb_top,
                        "emb_confidence": emb.confidence,
                        "fp_track": fp_top,
                        "fp_landmarks": fp.landmarks,
                        "combined_top1": (both.best.track_id if both.best else None) == t["track_id"],
                        "combined_accepted": not both.no_match,
                        "emb_ms": emb_s * 1000,
                        "fp_ms": fp_s * 1000,
                    }
                )
    summary = []
    for length in args.lengths:
        sel = [r for r in rows if r["length_s"] == length]
        true = [r for r in sel if not r["impostor"]]
        imp = [r for r in sel if r["impostor"]]
        for system in ("emb", "fp", "combined"):
            summary.append(
                {
                    "length_s": length,
                    "system": {"emb": "embeddings", "fp": "fingerprints", "combined": "combined"}[system],
                    "queries": len(true),
                    "top1": float(np.mean([r[f"{system}_top1"] for r in true])),
                    "correct_and_accepted": float(
                        np.mean([r[f"{system}_top1"] and r[f"{system}_accepted"] for r in true])
                    ),
                    "impostors": len(imp),
                    "impostors_accepted": float(np.mean([r[f"{system}_accepted"] for r in imp])) if imp else None,
                    "median_ms": float(np.median([r[f"{system}_ms"] for r in sel])) if system != "combined" else None,
                }
            )
    where = "quiet passages" if args.passages == "quiet" else "anywhere"
    print(
        f"\n{args.corpus.name}: {len(tracks)} tracks, excerpts {where}, {args.snr:g} dB background "
        f"({args.voices} voices), mp3 {args.bitrate} kbps"
    )
    print(f"{'length':>6} {'system':>12} {'queries':>7} {'top-1':>7} {'correct+acc':>11} {'imp.acc':>8} {'ms':>6}")
    for s in summary:
        imp = "-" if s["impostors_accepted"] is None else f"{s['impostors_accepted']:.1%}"
        ms = "-" if s["median_ms"] is None else f"{s['median_ms']:.0f}"
        print(
            f"{s['length_s']:6g} {s['system']:>12} {s['queries']:7d} {s['top1']:7.1%} "
            f"{s['correct_and_accepted']:11.1%} {imp:>8} {ms:>6}"
        )
    # Impostors answered with a track, by name: another version of the same piece (a remaster, a loop) is a
    # fair answer; anything else is a false accept.
    names = {t["track_id"]: Path(t["path"]).name for t in tracks}
    for r in rows:
        if r["impostor"] and r["combined_accepted"]:
            answer = r["fp_track"] if r["fp_accepted"] else r["emb_track"]
            print(f"impostor {r['length_s']:g} s {Path(r['path']).name} -> {names.get(answer)}")
    out = result_path(f"bench_identify_real-{args.corpus.resolve().name}", timestamp())
    write_json(out, {"argv": sys.argv, "summary": summary, "queries": rows})
    print(f"written {out}")


if __name__ == "__main__":
    main()
