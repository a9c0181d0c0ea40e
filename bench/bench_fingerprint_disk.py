"""Fingerprints past the memory budget: a synthetic set of landmark fingerprints built in sorted blocks on disk
(``indexing.fingerprint.fingerprint_library_on_disk``) under a memory budget, then queried memory-mapped.

No audio: each track's fine-spectrogram peaks are drawn at random (``peaks_per_second`` a second, uniform over
the 16 ms frames and 256 bins, seeded by the track), and turned into landmarks exactly as stored peaks are
(``peak_landmarks``). Measured in one run: build time; peak anonymous memory (RssAnon, sampled: what the budget
bounds; VmHWM also counts the pages of the mapped files, which the page cache can drop); bytes on disk per audio
hour; and the time of ``FingerprintIndex.match`` for excerpts of library tracks (their own landmarks from an
offset: the right track must come first) on the memory-mapped files, the first (cold) and the median of the rest.

    ./dev bench bench_fingerprint_disk                          # 100k tracks of 10 s, a 512 MB budget
    ./dev bench bench_fingerprint_disk --tracks 5000            # a quick look

Writes bench/results/bench_fingerprint_disk-<tracks>x<seconds>.json.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from _common import RESULTS, log, result_path, write_json  # noqa: E402

FRAMES_PER_SECOND = 62.5  # the fine spectrogram's 16 ms frames (embedtool.audio.peaks)


class RandomPeaks:
    """Stands where a features store gives stored peaks: ``peaks(track_id)`` -> (frames, bins), sorted by frame."""

    def __init__(self, seconds: float, per_second: int, seed: int):
        self.seconds, self.per_second, self.seed = seconds, per_second, seed

    def peaks(self, track_id: str) -> tuple:
        import numpy as np

        rng = np.random.default_rng([self.seed, int(track_id, 16)])
        n = int(self.seconds * self.per_second)
        frames = np.sort(rng.integers(0, int(self.seconds * FRAMES_PER_SECOND), n))
        return frames.astype(np.int32), rng.integers(0, 256, n).astype(np.int32)


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracks", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=10.0, help="audio seconds a track")
    parser.add_argument("--memory-mb", type=float, default=512.0)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--excerpt-s", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=RESULTS / "fingerprint-disk-work")
    args = parser.parse_args()

    import numpy as np

    from embedtool.indexing.fingerprint import (
        BYTES_PER_LANDMARK,
        FILES,
        FingerprintIndex,
        FingerprintSettings,
        fingerprint_library_on_disk,
        peak_landmarks,
    )

    settings = FingerprintSettings.for_source("peaks")
    source = RandomPeaks(args.seconds, settings.peaks_per_second, args.seed)
    tracks = [{"track_id": f"{i:016x}", "duration_s": args.seconds} for i in range(args.tracks)]
    folder = args.workdir / f"{args.tracks}x{args.seconds:g}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    block = max(1 << 16, int(args.memory_mb * 2**20 / 4 // BYTES_PER_LANDMARK))
    log(f"building: {args.tracks} tracks x {args.seconds:g} s, blocks of {block} landmarks")
    peak_anon = [0.0]
    done = threading.Event()

    def sample() -> None:  # anonymous memory: what the budget bounds (mapped file pages are the page cache's)
        while not done.wait(0.2):
            peak_anon[0] = max(peak_anon[0], _status_mb("RssAnon"))

    threading.Thread(target=sample, daemon=True).start()
    started = time.perf_counter()
    step = max(1, args.tracks // 10)

    def progress(_: str, done: int, total: int) -> None:
        if done % step == 0:
            log(f"landmarks of {done} of {total} tracks")

    total = fingerprint_library_on_disk(source, tracks, settings, folder, block, progress)  # type: ignore[arg-type]
    build_s = time.perf_counter() - started
    done.set()
    disk = sum((folder / name).stat().st_size for name in FILES)
    hours = args.tracks * args.seconds / 3600
    log(f"built {total} landmarks in {build_s:.1f} s, {disk / 1e9:.2f} GB")

    hashes, owners, frames = (np.load(folder / name, mmap_mode="r") for name in FILES)
    index = FingerprintIndex(hashes, owners, frames, settings)
    rng = np.random.default_rng(args.seed + 1)
    times, right = [], 0
    for track in rng.choice(args.tracks, args.queries, replace=False):
        f, b = source.peaks(f"{int(track):016x}")
        start = rng.uniform(0, max(0.0, args.seconds - args.excerpt_s)) * FRAMES_PER_SECOND
        keep = (f >= start) & (f < start + args.excerpt_s * FRAMES_PER_SECOND)
        q_hashes, q_frames = peak_landmarks(f[keep] - int(start), b[keep], settings)
        t0 = time.perf_counter()
        match = index.match(q_hashes, q_frames, args.excerpt_s)
        times.append(time.perf_counter() - t0)
        right += bool(match.ranked) and match.ranked[0].track == int(track)
    result = {
        "tracks": args.tracks,
        "seconds_per_track": args.seconds,
        "audio_hours": round(hours, 1),
        "memory_budget_mb": args.memory_mb,
        "block_landmarks": block,
        "landmarks": total,
        "build_s": round(build_s, 1),
        "peak_anon_mb": round(peak_anon[0], 1),
        "peak_rss_mb": round(_status_mb("VmHWM"), 1),
        "bytes": disk,
        "mb_per_audio_hour": round(disk / 1e6 / hours, 2),
        "query_first_ms": round(times[0] * 1000, 2),
        "query_median_ms": round(statistics.median(times[1:]) * 1000, 2) if len(times) > 1 else None,
        "queries": args.queries,
        "excerpt_s": args.excerpt_s,
        "right_first": right,
    }
    for key, value in result.items():
        print(f"{key}: {value}")
    write_json(result_path(f"bench_fingerprint_disk-{args.tracks}x{args.seconds:g}"), result)
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
