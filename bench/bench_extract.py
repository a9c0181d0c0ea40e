"""Feature extraction benchmark: embedtool `run_extract` vs pure decoding (the floor) vs the seed's way.

Measured side by side in one run on the same files (read once beforehand so all rows see a warm page cache):

- ``decode``: soundfile reads each whole file as float32 (nothing else): the floor;
- ``seed``: librosa.load(sr=16000) + librosa.feature.melspectrogram with the thesis settings + ln(x + 1e-6), one
  file at a time (bench-only dependency: ``.venv/bin/pip install librosa``; the row is skipped without it);
- ``extract-1`` / ``extract-2``: ``run_extract`` (default features) with 1 and 2 jobs, each into a fresh folder;
  ``extract-1-thesis``: 1 job with the thesis settings (the seed's feature sizes);
- ``decode`` again at the end, to see how much the shared machine drifted during the run.

With ``--before REV`` two more rows run beside ``extract-1``: ``extract-1-before``, the same run with the fingerprint
peaks as ``embedtool/audio/peaks.py`` computed them at git revision REV (the module is loaded from ``git show``),
and ``extract-1-no-peaks``, with no peaks at all; so a change to the peaks is measured before and after in one
process. ``--rows`` picks rows (the decode rows always run).

Throughput is audio seconds per wall second; ratios are against the mean of the two decode rows. CPU seconds are
reported too (for extract-2: this process plus the workers' own count): on a machine shared with other people's
work they are the robust comparison. Note that with the kernel's autogroup scheduling
(/proc/sys/kernel/sched_autogroup_enabled = 1) all processes of one session share one fair slice of a busy CPU,
so 2 jobs can only beat 1 job on wall-clock time when cores are idle. Then a generated two-hour 44.1 kHz stereo
FLAC is extracted in a child process to measure peak RSS (bounded memory).

    .venv/bin/python bench/bench_extract.py                   # ~/.cache/embedtool-corpora/music-dev
    .venv/bin/python bench/bench_extract.py --root DIR --limit 30 --no-long
    .venv/bin/python bench/bench_extract.py --limit 20 --no-long --before 996008108b --rows extract-1

Writes bench/results/bench_extract.json.
"""

from __future__ import annotations

import os

# One thread per process for every row (numpy/BLAS in the seed's melspectrogram would otherwise use a second
# core when one is free, which is not "one file at a time" on one core). Set before numpy is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402
import torch  # noqa: E402
from _common import MUSIC_DEV, result_path, write_json  # noqa: E402

from embedtool.audio.decode import decode_file  # noqa: E402
from embedtool.audio.discover import discover_audio  # noqa: E402
from embedtool.audio.settings import FeatureSettings  # noqa: E402
from embedtool.features.extract import run_extract  # noqa: E402
from embedtool.features.options import ExtractOptions  # noqa: E402

LONG_FILE = Path.home() / ".cache" / "embedtool-bench" / "two-hours-44k1-stereo.flac"
REPO = Path(__file__).resolve().parent.parent


def peaks_module_at(rev: str) -> types.ModuleType:
    """embedtool/audio/peaks.py as it was at git revision ``rev``, loaded as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{rev}:embedtool/audio/peaks.py"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    module = types.ModuleType(f"peaks_at_{rev}")
    exec(compile(source, f"{rev}:embedtool/audio/peaks.py", "exec"), module.__dict__)
    return module


class NoPeaks:
    """A PeakTracker that computes nothing: extract as it was before the fingerprint peaks."""

    def __init__(self, sample_rate: int):
        pass

    def push(self, block: np.ndarray) -> None:
        pass

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(0, np.int32), np.zeros(0, np.int32)


@contextmanager
def peak_tracker(tracker: type) -> Iterator[None]:
    """Run extract (one job: in this process) with ``tracker`` in place of embedtool's PeakTracker."""
    import embedtool.features.extract as extract_module

    saved = extract_module.PeakTracker
    extract_module.PeakTracker = tracker
    try:
        yield
    finally:
        extract_module.PeakTracker = saved


def pure_decode(paths: list[Path]) -> float:
    t0 = time.perf_counter()
    for p in paths:
        try:
            sf.read(str(p), dtype="float32")
        except sf.LibsndfileError:
            decode_file(p, sf.info(str(p)).samplerate)  # the PyAV fallback, as extract would use
    return time.perf_counter() - t0


def seed_way(paths: list[Path]) -> float | None:
    try:
        import librosa
    except ImportError:
        print("seed row skipped: librosa is not installed (.venv/bin/pip install librosa)")
        return None
    # warm up librosa's lazy imports and caches outside the timing
    librosa.feature.melspectrogram(y=np.zeros(16000, dtype=np.float32), sr=16000, n_fft=1024, hop_length=160)
    t0 = time.perf_counter()
    for p in paths:
        y, sr = librosa.load(str(p), sr=16000, mono=True)
        mel = librosa.feature.melspectrogram(
            y=y, sr=sr, n_fft=1024, hop_length=160, win_length=480, n_mels=128, fmin=50, fmax=8000, power=1.0, htk=True
        )
        np.log(mel + 1e-6)
    return time.perf_counter() - t0


def extract(root: Path, paths: list[Path], jobs: int, settings: FeatureSettings) -> tuple[float, dict]:
    """run_extract over exactly ``paths`` (via a folder of symlinks), into a fresh features folder."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "audio"
        for p in paths:
            link = src / p.relative_to(root)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(p.resolve())
        t0 = time.perf_counter()
        report = run_extract([src], Path(tmp) / "features", settings, ExtractOptions(jobs=jobs))
        elapsed = time.perf_counter() - t0
        return elapsed, {
            "tracks": report.tracks,
            "bytes": report.bytes_written,
            "hours": report.hours,
            "featurise_cpu_s": report.featurise_cpu_s,
        }


def make_long_file(path: Path, hours: float = 2.0, sr: int = 44100) -> None:
    """A two-hour stereo FLAC of drifting tones over quiet noise, written a minute at a time."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part.flac")
    rng = np.random.default_rng(0)
    with sf.SoundFile(str(tmp), "w", sr, 2, format="FLAC", subtype="PCM_16") as fh:
        for minute in range(int(hours * 60)):
            t = np.arange(60 * sr) / sr + minute * 60
            f0 = 220 * 2 ** ((minute % 24) / 12)
            left = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.01 * rng.standard_normal(len(t))
            right = 0.3 * np.sin(2 * np.pi * 1.5 * f0 * t) + 0.01 * rng.standard_normal(len(t))
            fh.write(np.stack([left, right], axis=1).astype(np.float32))
    tmp.rename(path)


PEAK_RSS_CHILD = """
import sys, time
from pathlib import Path
from embedtool.audio.settings import FeatureSettings
from embedtool.features.extract import ExtractOptions, run_extract

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])

import_peak = status("VmHWM")
open("/proc/self/clear_refs", "w").write("5")  # reset the peak: measure the extraction, not the imports
base = status("VmRSS")
t0 = time.perf_counter()
report = run_extract([Path(sys.argv[1])], Path(sys.argv[2]), FeatureSettings(), ExtractOptions(jobs=1))
print(import_peak, base, status("VmHWM"), time.perf_counter() - t0, report.tracks)
"""


def long_file_peak_rss() -> dict:
    print(f"\n== bounded memory: generating/using {LONG_FILE} ...", flush=True)
    t0 = time.perf_counter()
    make_long_file(LONG_FILE)
    info = sf.info(str(LONG_FILE))
    print(
        f"   {info.duration / 3600:.2f} h, {info.samplerate} Hz, {info.channels} ch ({time.perf_counter() - t0:.0f} s)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-c", PEAK_RSS_CHILD, str(LONG_FILE), str(Path(tmp) / "features")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    import_peak_kb, base_kb, peak_kb, seconds = int(out[0]), int(out[1]), int(out[2]), float(out[3])
    whole_f32 = info.frames * info.channels * 4
    result = {
        "duration_h": info.duration / 3600,
        "native_float32_bytes": whole_f32,
        "rss_peak_during_imports_mb": import_peak_kb / 1024,
        "rss_before_extract_mb": base_kb / 1024,
        "peak_rss_during_extract_mb": peak_kb / 1024,
        "extract_seconds": seconds,
    }
    print(
        f"   peak RSS while extracting {peak_kb / 1024:.0f} MB, of which {(peak_kb - base_kb) / 1024:.0f} MB above "
        f"the {base_kb / 1024:.0f} MB the imports leave (torch); the file as native float32 would be "
        f"{whole_f32 / 2**20:.0f} MB; extracted in {seconds:.0f} s"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, default=MUSIC_DEV)
    parser.add_argument("--limit", type=int, default=0, help="use every k-th file so that N files remain")
    parser.add_argument("--no-long", action="store_true", help="skip the two-hour peak-RSS measurement")
    parser.add_argument("--before", metavar="REV", help="also extract-1 with the peaks of git revision REV, and none")
    parser.add_argument(
        "--rows", default="seed,extract-1,extract-2,extract-1-thesis", help="comma-separated rows (decode always)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)

    found = discover_audio([args.root])
    if args.limit and len(found) > args.limit:
        step = len(found) / args.limit
        found = [found[int(i * step)] for i in range(args.limit)]
    paths = [f.path for f in found]
    seconds = sum(sf.info(str(p)).duration for p in paths)
    size = sum(p.stat().st_size for p in paths)
    for p in paths:  # warm the page cache for every row alike
        p.read_bytes()
    load = os.getloadavg()
    print(f"{len(paths)} files, {seconds / 3600:.2f} h of audio, {size / 2**20:.0f} MB, from {args.root}")
    autogroup = Path("/proc/sys/kernel/sched_autogroup_enabled")
    autogroup_on = autogroup.is_file() and autogroup.read_text().strip() == "1"
    print(
        f"load average before: {load[0]:.1f} on {os.cpu_count()} cores"
        + (" (autogroup scheduling: this session gets one fair share of a busy CPU)" if autogroup_on else "")
    )

    rows: dict[str, dict] = {}

    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def record(name: str, run, in_process: bool = True) -> None:  # noqa: ANN001
        c0 = cpu()
        result = run()
        if result is None:
            return
        elapsed, facts = result if isinstance(result, tuple) else (result, {})
        # CPU seconds: robust to other people's load. Worker processes are not children of this one, so for
        # them the run's own count (CPU seconds of decoding and featurising, summed over workers) is added.
        cpu_s = cpu() - c0 + (0.0 if in_process else facts["featurise_cpu_s"])
        rows[name] = {"seconds": elapsed, "audio_s_per_s": seconds / elapsed, "cpu_s": cpu_s, **facts}
        cpu_text = f"{cpu_s:7.1f} cpu-s"
        print(f"   {name:<18} {elapsed:7.1f} s {cpu_text}  {seconds / elapsed:7.1f} audio-s/s", flush=True)

    wanted = set(args.rows.split(","))

    def extract_with(tracker: type) -> tuple[float, dict]:
        with peak_tracker(tracker):
            return extract(args.root, paths, 1, FeatureSettings())

    record("decode", lambda: pure_decode(paths))
    if "seed" in wanted:
        record("seed", lambda: seed_way(paths))
    if args.before:
        before = peaks_module_at(args.before).PeakTracker
        record("extract-1-before", lambda: extract_with(before))
    if "extract-1" in wanted:
        record("extract-1", lambda: extract(args.root, paths, 1, FeatureSettings()))
    if args.before:
        record("extract-1-no-peaks", lambda: extract_with(NoPeaks))
    if "extract-2" in wanted:
        record("extract-2", lambda: extract(args.root, paths, 2, FeatureSettings()), in_process=False)
    if "extract-1-thesis" in wanted:
        record("extract-1-thesis", lambda: extract(args.root, paths, 1, FeatureSettings.from_preset("thesis")))
    record("decode-again", lambda: pure_decode(paths))

    floor = (rows["decode"]["audio_s_per_s"] + rows["decode-again"]["audio_s_per_s"]) / 2
    print("\n| row | wall s | cpu s | audio-s/s | vs decode | vs seed | feature bytes per audio hour |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, row in rows.items():
        vs_seed = row["audio_s_per_s"] / rows["seed"]["audio_s_per_s"] if "seed" in rows else float("nan")
        per_hour = row["bytes"] / (seconds / 3600) if "bytes" in row else None
        row.update(vs_decode=row["audio_s_per_s"] / floor, vs_seed=vs_seed, bytes_per_audio_hour=per_hour)
        cpu_text = f"{row['cpu_s']:.1f}"
        print(
            f"| {name} | {row['seconds']:.1f} | {cpu_text} | {row['audio_s_per_s']:.1f} | {row['vs_decode']:.2f} "
            f"| {vs_seed:.2f} | {'' if per_hour is None else f'{per_hour / 2**20:.1f} MB'} |"
        )
    cpu_floor = (rows["decode"]["cpu_s"] + rows["decode-again"]["cpu_s"]) / 2
    ratios: dict[str, float | None] = {}
    for name, key in (("extract-1", "extract1"), ("extract-1-before", "before"), ("extract-1-no-peaks", "no_peaks")):
        if name in rows:
            ratios[f"{key}_vs_decode"] = rows[name]["vs_decode"]
            ratios[f"{key}_vs_decode_by_cpu_time"] = cpu_floor / rows[name]["cpu_s"]
    if "extract-1" in rows and "seed" in rows:
        ratios["extract1_vs_seed"] = rows["extract-1"]["vs_seed"]
        ratios["extract1_vs_seed_by_cpu_time"] = rows["seed"]["cpu_s"] / rows["extract-1"]["cpu_s"]
    if "extract-1-thesis" in rows and "seed" in rows:
        ratios["extract1_thesis_vs_seed"] = rows["extract-1-thesis"]["vs_seed"]
    if "extract-1" in rows and "extract-2" in rows:
        ratios["extract2_vs_extract1"] = rows["extract-2"]["audio_s_per_s"] / rows["extract-1"]["audio_s_per_s"]
        # CPU spent per audio second by 2 jobs vs 1 (1.0 = no parallel overhead; the wall-clock gain then
        # depends only on how many cores are free)
        ratios["extract2_cpu_vs_extract1_cpu"] = rows["extract-2"]["cpu_s"] / rows["extract-1"]["cpu_s"]
    print("\nratios: " + ", ".join(f"{k} = {'n/a' if v is None else f'{v:.2f}'}" for k, v in ratios.items()))
    print("targets: extract1_vs_decode >= 0.85, extract1_vs_seed >= 1.3, extract2_vs_extract1 >= 1.8")
    out = {
        "root": str(args.root),
        "files": len(paths),
        "audio_hours": seconds / 3600,
        "input_bytes": size,
        "load_before": load,
        "load_after": os.getloadavg(),
        "sched_autogroup": autogroup_on,
        "rows": rows,
        "ratios": ratios,
        "cpu_count": os.cpu_count(),
    }
    if not args.no_long:
        out["long_file"] = long_file_peak_rss()
    path = write_json(result_path("bench_extract"), out, final_newline=True)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
