"""What the fingerprint peaks cost at extract time: the features alone vs the features with the peaks computed from
the same decoded blocks (what `embedtool extract` does), side by side on the same files, one thread, alternating
file by file so both rows see the same machine. Also the bytes the peaks add to the features artefact, and the
landmarks an index gets from them against those of the log-Mel features (what indexes made before the peaks held).

    .venv/bin/python bench/bench_peaks.py --root ~/.cache/embedtool-corpora/music-dev --limit 20
    .venv/bin/python bench/bench_peaks.py --limit 20 --before 996008108b   # also the peaks of that revision

With ``--before REV`` a third row computes the peaks as ``embedtool/audio/peaks.py`` did at git revision REV (loaded
with ``git show``), and a fourth reads each file whole with soundfile (the decode floor of ``bench_extract``): the
rows alternate file by file, so a change to the peaks is measured before and after on the same machine state, and
each row's CPU time is compared with the floor's; the files whose peaks differ from that revision's are counted.

Writes bench/results/bench_peaks-<stamp>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _common import log, result_path, timestamp, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.home() / ".cache/embedtool-corpora/music-dev")
    parser.add_argument("--limit", type=int, default=20, help="every k-th file so that this many remain")
    parser.add_argument("--before", metavar="REV", help="also the peaks of git revision REV, and the decode floor")
    args = parser.parse_args()

    import torch

    from embedtool.audio.discover import discover_audio
    from embedtool.audio.peaks import PeakTracker
    from embedtool.audio.settings import FeatureSettings
    from embedtool.features.frontend import featurise_file
    from embedtool.indexing.fingerprint import FingerprintSettings, mel_landmarks, peak_landmarks

    torch.set_num_threads(1)
    settings = FeatureSettings()
    found = discover_audio([args.root.expanduser()])
    step = max(1.0, len(found) / args.limit)
    paths = [found[int(i * step)].path for i in range(min(args.limit, len(found)))]
    for p in paths:  # a warm page cache for both rows
        p.read_bytes()
    spent = {"features": 0.0, "features+peaks": 0.0}
    differing = 0  # files whose peaks differ from those of --before
    before = None
    if args.before:
        import soundfile as sf
        from bench_extract import peaks_module_at

        before = peaks_module_at(args.before).PeakTracker
        spent.update({"features+peaks-before": 0.0, "decode": 0.0})
    audio_s = peak_bytes = mel_bytes = 0.0
    landmarks = {"peaks": 0, "mel": 0}
    fp_peaks, fp_mel = FingerprintSettings.for_source("peaks"), FingerprintSettings.for_source("mel")
    for path in paths:
        t0 = time.process_time()
        mel, info = featurise_file(path, settings)
        spent["features"] += time.process_time() - t0
        tracker = PeakTracker(settings.sample_rate)
        t0 = time.process_time()
        mel, info = featurise_file(path, settings, on_block=tracker.push)
        frames, bins = tracker.finish()
        spent["features+peaks"] += time.process_time() - t0
        if before is not None:
            old_tracker = before(settings.sample_rate)
            t0 = time.process_time()
            featurise_file(path, settings, on_block=old_tracker.push)
            old_frames, old_bins = old_tracker.finish()
            differing += not (np.array_equal(old_frames, frames) and np.array_equal(old_bins, bins))
            spent["features+peaks-before"] += time.process_time() - t0
            t0 = time.process_time()
            sf.read(str(path), dtype="float32")
            spent["decode"] += time.process_time() - t0
        audio_s += info.duration_s
        mel_bytes += mel.nbytes
        peak_bytes += len(frames) * 8
        landmarks["peaks"] += len(peak_landmarks(frames, bins, fp_peaks)[0])
        landmarks["mel"] += len(mel_landmarks(np.asarray(mel, np.float32), settings.frames_per_second, fp_mel)[0])
    hours = audio_s / 3600
    result = {
        "files": len(paths),
        "audio_hours": hours,
        "cpu_s": spent,
        "x_realtime": {k: audio_s / v for k, v in spent.items()},
        "peaks_cost_ratio": spent["features+peaks"] / spent["features"],
        **(
            {
                "peaks_cost_ratio_before": spent["features+peaks-before"] / spent["features"],
                "peaks_cpu_now_vs_before": (spent["features+peaks"] - spent["features"])
                / (spent["features+peaks-before"] - spent["features"]),
                "vs_decode": {k: spent["decode"] / v for k, v in spent.items() if k != "decode"},
                "files_whose_peaks_differ_from_before": differing,
            }
            if before is not None
            else {}
        ),
        "feature_mb_per_hour": mel_bytes / 2**20 / hours,
        "peak_mb_per_hour": peak_bytes / 2**20 / hours,
        "landmarks_per_hour": {k: v / hours for k, v in landmarks.items()},
    }
    log(f"{len(paths)} files, {hours:.2f} h: {result}")
    out = result_path("bench_peaks", timestamp())
    write_json(out, {"argv": sys.argv, **result})
    print(f"written {out}")


if __name__ == "__main__":
    main()
