"""Probe: landmark fingerprints from the stored 64-band log-Mel features vs from a finer, dedicated linear
spectrogram (decision 0010's "next thing to try"), on the same degraded excerpts.

Every file of ``--corpus`` is the library; a seeded fifth are impostors (queried with their own track left out).
Excerpts get ``--background`` at ``--snr`` dB, then mp3 at ``--bitrate`` kbit/s, as in bench_identify_real. For
each variant the fingerprints alone are scored: top-1, right and accepted under the product's rule, impostors
accepted, and the best right-and-accepted reachable with at most 2% impostors over a grid of (support per
second, margin) rules. Tuning corpora only: a choice is made here.

    .venv/bin/python bench/probe_fingerprint_spectrum.py --corpus ~/.cache/embedtool-corpora/music-dev \\
        --background ~/.cache/embedtool-corpora/background/speech
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from _common import log, result_path, timestamp, write_json
from bench_identify_real import audio_files, background_stretch, mix, mp3_roundtrip

SR = 16000


def variants() -> dict[str, dict]:
    """name -> spectrogram, peak neighbourhood and landmark geometry (in the spectrogram's frames and bins).
    "mel64" is the log-Mel source as indexes made it before decision 0012; "lin4k-n31-df63" is what the product's
    fine peaks (embedtool.audio.peaks) and PEAK_GEOMETRY became."""
    mel = dict(kind="mel", PEAK_TIME_FRAMES=15, PEAK_BINS=7, BACKGROUND_FRAMES=51, HASH_BANDS=64, MAX_DF_BANDS=15,
               MAX_DT_FRAMES=126, DT_STEP_FRAMES=2, OFFSET_BIN_FRAMES=4, SUPPORT_BIN_FRAMES=5)  # fmt: skip
    # 16 ms hop, 64 ms window, bins up to 4 kHz (15.6 Hz apart): audfprint's 8 kHz, 512-point view.
    lin = dict(kind="linear", MAX_HZ=4000.0, MIN_PROMINENCE=0.5, PEAK_TIME_FRAMES=9, PEAK_BINS=15,
               BACKGROUND_FRAMES=31, HASH_BANDS=256, MAX_DF_BANDS=31, MAX_DT_FRAMES=63, DT_STEP_FRAMES=1,
               OFFSET_BIN_FRAMES=3, SUPPORT_BIN_FRAMES=3)  # fmt: skip
    return {
        "mel64": mel,
        "lin4k-n15": lin,
        "lin4k-n31": {**lin, "PEAK_BINS": 31},
        "lin4k-n15-dt2": {**lin, "DT_STEP_FRAMES": 2, "MAX_DT_FRAMES": 126},
        "lin4k-n47": {**lin, "PEAK_BINS": 47},
        "lin4k-n63": {**lin, "PEAK_BINS": 63, "MAX_DF_BANDS": 63},
        "lin4k-n31-t15": {**lin, "PEAK_BINS": 31, "PEAK_TIME_FRAMES": 15},
        "lin5k5-n31": {**lin, "PEAK_BINS": 31, "MAX_HZ": 5500.0, "HASH_BANDS": 352},
        "lin4k-n31-df63": {**lin, "PEAK_BINS": 31, "MAX_DF_BANDS": 63},
        # a peak must stand further above its background: white noise's own maxima stand about 1.1 above it
        "lin4k-n31-df63-p1.0": {**lin, "PEAK_BINS": 31, "MAX_DF_BANDS": 63, "MIN_PROMINENCE": 1.0},
        "lin4k-n31-df63-p1.5": {**lin, "PEAK_BINS": 31, "MAX_DF_BANDS": 63, "MIN_PROMINENCE": 1.5},
    }


def geometry(v: dict):
    import embedtool.indexing.fingerprint as fp

    return fp.LandmarkGeometry(
        hash_bands=v["HASH_BANDS"], max_df=v["MAX_DF_BANDS"], max_dt=v["MAX_DT_FRAMES"], dt_step=v["DT_STEP_FRAMES"],
        offset_bin=v["OFFSET_BIN_FRAMES"], support_bin=v["SUPPORT_BIN_FRAMES"], df_bits=7,
    )  # fmt: skip


def landmarks_for(samples: np.ndarray, v: dict, settings, fps_settings):
    """(hashes, anchor frames) of ``samples`` (16 kHz) under variant ``v``."""
    import embedtool.audio.peaks as fine
    import embedtool.indexing.fingerprint as fp

    if v["kind"] == "mel":
        from embedtool.audio.melspec import LogMel

        fp.PEAK_TIME_FRAMES, fp.PEAK_MEL_BANDS, fp.BACKGROUND_FRAMES = (
            v["PEAK_TIME_FRAMES"], v["PEAK_BINS"], v["BACKGROUND_FRAMES"]
        )  # fmt: skip
        mel = np.asarray(LogMel(settings)(samples), np.float32)
        frames, bands = fp.find_peaks(mel, settings.frames_per_second, fps_settings.peaks_per_second)
        return fp.landmarks(frames, bands, mel.shape[1], fps_settings.fan_out, geometry(v))
    fine.MAX_HZ, fine.MIN_PROMINENCE, fine.PEAK_TIME_FRAMES, fine.PEAK_BINS, fine.BACKGROUND_FRAMES = (
        v["MAX_HZ"], v["MIN_PROMINENCE"], v["PEAK_TIME_FRAMES"], v["PEAK_BINS"], v["BACKGROUND_FRAMES"]
    )  # fmt: skip
    spectrum = fine.PeakSpectrum(SR)
    frames, bins = fine.spectral_peaks(spectrum(samples), spectrum.frames_per_second, fps_settings.peaks_per_second)
    g = geometry(v)
    return fp.landmarks(frames.astype(np.int64), bins.astype(np.int64), g.hash_bands, fps_settings.fan_out, g)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--background", type=Path, required=True)
    p.add_argument("--lengths", type=float, nargs="+", default=[1.0, 3.0])
    p.add_argument("--excerpts", type=int, default=3)
    p.add_argument("--snr", type=float, default=10.0)
    p.add_argument("--bitrate", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", default=None)
    args = p.parse_args()

    import torch

    import embedtool.indexing.fingerprint as fp
    from embedtool.audio.decode import decode_file
    from embedtool.audio.settings import FeatureSettings

    torch.set_num_threads(1)
    settings = FeatureSettings()
    fps_settings = fp.FingerprintSettings()
    chosen = {k: v for k, v in variants().items() if not args.only or k in args.only}
    files = audio_files(args.corpus.expanduser())
    background = audio_files(args.background.expanduser())
    rng = np.random.default_rng(args.seed)
    impostors = set(rng.choice(len(files), size=max(1, len(files) // 5), replace=False).tolist())
    per_variant: dict[str, list] = {k: [] for k in chosen}
    excerpts = []  # (track position, length, impostor, mp3 bytes)
    t0 = time.perf_counter()
    tmp = Path("/tmp/probe_fp_excerpt.mp3")
    for pos, f in enumerate(files):
        audio = decode_file(f, SR).samples
        for name, v in chosen.items():
            per_variant[name].append(landmarks_for(audio, v, settings, fps_settings))
        for length in args.lengths:
            n = int(length * SR)
            for _ in range(args.excerpts if len(audio) > n + SR else 0):
                a = int(rng.integers(0, len(audio) - n))
                noisy = mix(audio[a : a + n], background_stretch(background, n, SR, rng), args.snr)
                excerpts.append((pos, length, pos in impostors, mp3_roundtrip(noisy, SR, args.bitrate)))
    log(f"library and {len(excerpts)} excerpts: {time.perf_counter() - t0:.0f} s")
    queries = []
    for pos, length, impostor, mp3 in excerpts:
        tmp.write_bytes(mp3)
        queries.append((pos, length, impostor, decode_file(tmp, SR).samples))

    results = {}
    for name, v in chosen.items():
        fp.SOURCES[name] = geometry(v)  # the index bins hits by the variant's geometry
        index = fp.FingerprintIndex.build(per_variant[name], replace(fps_settings, source=name))
        rows = []
        t1 = time.perf_counter()
        for pos, length, impostor, samples in queries:
            h, fr = landmarks_for(samples, v, settings, fps_settings)
            m = index.match(h, fr, length, top=6, exclude_track=pos if impostor else None)
            top = m.ranked[0].track if m.ranked else -1
            hits = [r.hits for r in m.ranked[:2]] + [0, 0]
            answer = str(files[top]) if top >= 0 else None
            rows.append(dict(length=length, impostor=impostor, right=top == pos, h1=hits[0], h2=hits[1],
                             accepted=m.accepted, path=str(files[pos]), answer=answer))  # fmt: skip
        ms = (time.perf_counter() - t1) / len(queries) * 1000
        summary = {"landmarks": len(index), "ms_per_query": ms}
        for length in args.lengths:
            true = [r for r in rows if r["length"] == length and not r["impostor"]]
            imp = [r for r in rows if r["length"] == length and r["impostor"]]
            best = (0.0, None)
            for per_s in (2, 3, 4, 5, 6, 8):
                for lo in (3, 4, 5, 6, 8):
                    for margin in (1.2, 1.5, 2.0, 2.5, 3.0):
                        need = max(lo, round(per_s * length))

                        def ok(r, need=need, margin=margin):
                            return r["h1"] >= need and r["h1"] >= margin * r["h2"]

                        fa = np.mean([ok(r) for r in imp]) if imp else 0.0
                        ra = float(np.mean([ok(r) and r["right"] for r in true]))
                        if fa <= 0.02 and ra > best[0]:
                            best = (ra, dict(per_s=per_s, min=lo, margin=margin, impostors=float(fa)))
            summary[f"{length:g}s"] = dict(
                top1=float(np.mean([r["right"] for r in true])),
                right_accepted=float(np.mean([r["right"] and r["accepted"] for r in true])),
                impostors_accepted=float(np.mean([r["accepted"] for r in imp])) if imp else None,
                best_at_2pct=best[0],
                best_rule=best[1],
            )
        results[name] = {**summary, "queries": rows}
        log(f"{name}: {summary}")  # (the rows go to the file only)
    out = result_path(f"probe_fingerprint_spectrum-{args.corpus.resolve().name}", timestamp())
    write_json(out, {"argv": sys.argv, "results": results})
    print(f"written {out}")


if __name__ == "__main__":
    main()
