"""Test data builders: generated audio, labelled corpora, a tiny training configuration, and the few steps every
test file repeats (extract a corpus, copy a workspace, write embedtool.yaml, run the command line).

Every audio helper writes a real file through soundfile (wav, flac, ogg-vorbis, mp3, aiff) or PyAV (m4a/AAC), so
tests exercise the same decoders users hit. Signals are tiny and deterministic (seeded). The session's trained
workspace (``trained_workspace`` in conftest.py) is built from :func:`make_chain_corpus` and :data:`TINY_CHAIN_TRAIN`.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf

from embedtool.model.settings import TrainSettings
from embedtool.workspace import Workspace

if TYPE_CHECKING:
    from click.testing import Result

    from embedtool.audio.settings import FeatureSettings
    from embedtool.features.extract import ExtractReport

SAMPLE_AUDIO = Path(__file__).resolve().parents[1] / "embedtool" / "sample_audio" / "sonicpi-cc0"

# file suffix -> (soundfile format, subtype)
SOUNDFILE_FORMATS: dict[str, tuple[str, str | None]] = {
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "opus": ("OGG", "OPUS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "aiff": ("AIFF", "PCM_16"),
}


def write_signal(path: Path | str, samples: np.ndarray, sr: int = 22050, fmt: str | None = None) -> Path:
    """Write ``samples`` (float, mono ``(n,)`` or ``(n, channels)``, in [-1, 1]) to ``path``.

    ``fmt`` (wav, flac, ogg, opus, mp3, aiff, m4a) defaults to the path's suffix; m4a is written with PyAV.
    """
    path = Path(path)
    fmt = (fmt or path.suffix.lstrip(".") or "wav").lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    samples = np.clip(np.asarray(samples, dtype=np.float32), -1.0, 1.0)
    if fmt in ("m4a", "aac"):
        _write_with_pyav(path, samples, sr)
        return path
    if fmt not in SOUNDFILE_FORMATS:
        raise ValueError(f"unsupported test format {fmt!r}")
    container, subtype = SOUNDFILE_FORMATS[fmt]
    if fmt == "opus" and sr not in (8000, 12000, 16000, 24000, 48000):
        raise ValueError("opus needs sr in 8000/12000/16000/24000/48000")
    sf.write(str(path), samples, sr, format=container, subtype=subtype)
    return path


def _write_with_pyav(path: Path, samples: np.ndarray, sr: int) -> None:
    import av

    data = samples if samples.ndim == 2 else samples[:, None]
    channels = data.shape[1]
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=sr)
        stream.layout = "mono" if channels == 1 else "stereo"
        frame_size = 1024
        for start in range(0, len(data), frame_size):
            block = np.ascontiguousarray(data[start : start + frame_size].T)  # planar float: (channels, n)
            frame = av.AudioFrame.from_ndarray(block, format="fltp", layout=stream.layout.name)
            frame.sample_rate = sr
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def tone(freq: float, seconds: float, sr: int = 22050, amplitude: float = 0.5, harmonics: int = 1) -> np.ndarray:
    """A (harmonic) tone: ``harmonics`` partials at k*freq with 1/k amplitudes."""
    t = np.arange(int(round(seconds * sr))) / sr
    out = np.zeros_like(t)
    for k in range(1, harmonics + 1):
        if k * freq < sr / 2:
            out += np.sin(2 * np.pi * k * freq * t) / k
    peak = np.max(np.abs(out)) or 1.0
    return (amplitude * out / peak).astype(np.float32)


def struck_notes(
    seconds: float, seed: int, sr: int = 16000, note_s: tuple[float, float] = (0.08, 0.3), peak: float = 1.0
) -> np.ndarray:
    """Random struck notes with harmonics and onsets, each ``note_s`` long (uniform), normalised to ``peak``:
    peaky, like music (their fine spectral peaks are stable, for fingerprints)."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * sr), np.float32)
    t = 0
    while t < len(out):
        n = int(rng.uniform(*note_s) * sr)
        f0 = float(rng.uniform(120, 1800))
        tt = np.arange(min(n, len(out) - t)) / sr
        note = sum(np.sin(2 * np.pi * f0 * h * tt) / h for h in (1, 2, 3)) * np.exp(-tt * rng.uniform(3, 12))
        out[t : t + len(tt)] += note.astype(np.float32) * float(rng.uniform(0.2, 1.0))
        t += n
    return peak * out / np.abs(out).max()


def index_landmarks(ws: Workspace) -> list[tuple[int, str, int]]:
    """The index's landmark fingerprints as (hash, track id, frame), sorted: comparable across track orders."""
    from embedtool.indexing.store import IndexStore

    store = IndexStore(ws.index)
    fp = store.fingerprint_index()
    assert fp is not None
    ids = store.id_tables().tracks.ids()
    return sorted(zip(fp.hashes.tolist(), [ids[t] for t in fp.tracks.tolist()], fp.frames.tolist(), strict=True))


def write_tone(
    path: Path | str,
    freq: float = 440.0,
    seconds: float = 1.0,
    sr: int = 22050,
    fmt: str | None = None,
    channels: int = 1,
    amplitude: float = 0.5,
) -> Path:
    """Write a sine tone; with ``channels`` > 1 each channel is the same tone (so a downmix equals it)."""
    mono = tone(freq, seconds, sr, amplitude)
    samples = mono if channels == 1 else np.repeat(mono[:, None], channels, axis=1)
    return write_signal(path, samples, sr, fmt)


def write_noise(
    path: Path | str,
    seconds: float = 1.0,
    sr: int = 22050,
    fmt: str | None = None,
    seed: int = 0,
    amplitude: float = 0.3,
) -> Path:
    rng = np.random.default_rng(seed)
    return write_signal(path, amplitude * rng.standard_normal(int(seconds * sr)), sr, fmt)


def write_silence(path: Path | str, seconds: float = 1.0, sr: int = 22050, fmt: str | None = None) -> Path:
    return write_signal(path, np.zeros(int(seconds * sr), dtype=np.float32), sr, fmt)


# --- bad files -----------------------------------------------------------------------------------------------


def write_empty(path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def write_not_audio(path: Path | str) -> Path:
    """A text file with an audio suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("this is not audio, just text pretending to be a sound file\n" * 20)
    return path


def write_corrupt(path: Path | str, seed: int = 0) -> Path:
    """Random bytes with an audio suffix (no valid header for any decoder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 8192, dtype=np.uint8).tobytes())
    return path


def write_truncated(path: Path | str, keep_bytes: int = 30) -> Path:
    """A real flac/wav cut off inside its header."""
    path = Path(path)
    write_tone(path, 440.0, 1.0)
    data = path.read_bytes()
    path.write_bytes(data[:keep_bytes])
    return path


def write_unknown_codec_wav(path: Path | str) -> Path:
    """A well-formed WAV whose format tag (0x674f, Vorbis-in-WAV) names a codec neither decoder has."""
    path = Path(path)
    write_tone(path, 440.0, 0.5, fmt="WAV")
    data = bytearray(path.read_bytes())
    assert data[20:22] == b"\x01\x00"  # PCM tag right after "fmt " and its size
    data[20:22] = (0x674F).to_bytes(2, "little")
    path.write_bytes(bytes(data))
    return path


# --- a labelled corpus of distinct sound classes ---------------------------------------------------------------


def _envelope(n: int, sr: int, rng: np.random.Generator) -> np.ndarray:
    """A slow random amplitude envelope (tremolo + fades) so frames within a file differ."""
    t = np.arange(n) / sr
    rate = rng.uniform(0.2, 1.5)
    depth = rng.uniform(0.1, 0.5)
    env = 1.0 - depth * (0.5 + 0.5 * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi)))
    fade = min(n // 10, int(0.05 * sr))
    if fade > 0:
        env[:fade] *= np.linspace(0, 1, fade)
        env[-fade:] *= np.linspace(1, 0, fade)
    return env


def _harmonic(n: int, sr: int, base: float, rng: np.random.Generator) -> np.ndarray:
    """A harmonic tone around ``base`` Hz with slow vibrato and random partial weights."""
    t = np.arange(n) / sr
    f0 = base * rng.uniform(0.94, 1.06)
    vibrato = 1 + 0.01 * np.sin(2 * np.pi * rng.uniform(3, 6) * t)
    phase = 2 * np.pi * np.cumsum(f0 * vibrato) / sr
    out = np.zeros(n)
    for k in range(1, 7):
        if k * f0 * 1.02 < sr / 2:
            out += rng.uniform(0.3, 1.0) / k * np.sin(k * phase)
    return out


def _noise_band(n: int, sr: int, centre: float, rng: np.random.Generator) -> np.ndarray:
    """White noise band-passed (in the FFT domain) to about one octave around ``centre`` Hz."""
    centre = centre * rng.uniform(0.9, 1.1)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    spectrum[(freqs < centre / np.sqrt(2)) | (freqs > centre * np.sqrt(2))] = 0
    return np.fft.irfft(spectrum, n)


def _click_train(n: int, sr: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Short decaying noise bursts at ``rate`` per second with timing jitter (a percussive texture)."""
    out = np.zeros(n)
    rate = rate * rng.uniform(0.85, 1.15)
    burst_len = int(0.02 * sr)
    burst = rng.standard_normal(burst_len) * np.exp(-np.arange(burst_len) / (0.004 * sr))
    t = rng.uniform(0, 1 / rate)
    while t < n / sr:
        start = int(t * sr)
        stop = min(n, start + burst_len)
        out[start:stop] += burst[: stop - start] * rng.uniform(0.6, 1.0)
        t += (1 / rate) * rng.uniform(0.8, 1.2)
    return out


# Class recipes: (name, generator, parameter). More classes than recipes reuse them at other parameters.
_RECIPES = [
    ("tone_low", _harmonic, 220.0),
    ("noise_high", _noise_band, 3000.0),
    ("clicks", _click_train, 6.0),
    ("tone_high", _harmonic, 880.0),
    ("noise_low", _noise_band, 400.0),
    ("clicks_fast", _click_train, 18.0),
]


def class_signal(cls: int, seconds: float, sr: int, rng: np.random.Generator) -> np.ndarray:
    """One clip of class ``cls`` with per-clip variation, normalised to a random peak level."""
    name, gen, param = _RECIPES[cls % len(_RECIPES)]
    param = param * (1.5 ** (cls // len(_RECIPES)))  # beyond the recipe list: same kind, shifted parameter
    n = int(round(seconds * sr))
    x = gen(n, sr, param, rng) * _envelope(n, sr, rng)
    x += 0.003 * rng.standard_normal(n)  # a faint noise floor, as in real recordings
    return (x / (np.max(np.abs(x)) or 1.0) * rng.uniform(0.3, 0.8)).astype(np.float32)


def class_name(cls: int) -> str:
    name = _RECIPES[cls % len(_RECIPES)][0]
    return name if cls < len(_RECIPES) else f"{name}{cls // len(_RECIPES)}"


def make_class_corpus(
    root: Path | str,
    classes: int = 3,
    per_class: int = 4,
    seconds: float = 6.0,
    seed: int = 0,
    sr: int = 22050,
    fmt: str = "wav",
) -> Path:
    """Write a folder-of-folders corpus ``root/<class>/<class>_<i>.<fmt>`` of clearly distinct sound classes.

    Classes are harmonic tones, band-passed noise and click trains at different pitches/bands/rates; each file
    varies (pitch/rate jitter, vibrato, amplitude envelope, level) so that a learnt embedding has work to do.
    Returns ``root``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    for cls in range(classes):
        name = class_name(cls)
        for i in range(per_class):
            write_signal(root / name / f"{name}_{i}.{fmt}", class_signal(cls, seconds, sr, rng), sr, fmt)
    return root


# The labelled corpus of the session's trained workspace (conftest.py): 3 classes x 6 tracks of 4 s.
CHAIN_CLASSES = 3
CHAIN_PER_CLASS = 6


def make_chain_corpus(root: Path | str) -> Path:
    """The corpus the session's trained workspace is made from: :data:`CHAIN_CLASSES` classes x
    :data:`CHAIN_PER_CLASS` tracks of 4 s (seed 7)."""
    return make_class_corpus(root, classes=CHAIN_CLASSES, per_class=CHAIN_PER_CLASS, seconds=4.0, seed=7)


# --- a tiny training -------------------------------------------------------------------------------------------

# For tests that need a trained model but not a good one (seconds on a CPU).
TINY_CHAIN_TRAIN = TrainSettings(
    segment_seconds=0.5,
    neighbour_radius_s=1.0,
    width=0.125,
    embedding_dim=32,
    batch_size=16,
    epochs=2,
    steps_per_epoch=12,
    warmup_steps=2,
    val_fraction=0.34,
    split_by="track",
    val_triplets=32,
    device="cpu",
    workers=0,
)


# For training tests on generated features: a run of a few steps (seconds on a CPU).
TINY = TrainSettings(
    segment_seconds=0.3,
    neighbour_radius_s=0.6,
    width=0.0625,
    embedding_dim=16,
    batch_size=8,
    epochs=2,
    steps_per_epoch=5,
    warmup_steps=0,
    lr_schedule="constant",
    val_fraction=0.25,
    split_by="track",
    val_triplets=16,
    val_segments_per_track=4,
    device="cpu",
)

# Big enough to learn the 4 generated classes in 75 steps (also the contrastive test's starting point).
SEPARATING = replace(
    TINY,
    segment_seconds=0.5,
    neighbour_radius_s=1.0,
    width=0.125,
    embedding_dim=32,
    batch_size=16,
    epochs=3,
    steps_per_epoch=25,
    warmup_steps=5,
    lr_schedule="cosine",
    val_triplets=64,
    val_segments_per_track=8,
    seed=1,
)


# --- steps the tests repeat ------------------------------------------------------------------------------------


def extract_features(
    roots: Path | str | Sequence[Path | str],
    features: Path | str,
    settings: FeatureSettings | None = None,
    **options: Any,
) -> ExtractReport:
    """``run_extract`` as tests set it up: default feature settings, one job; ``options`` are ExtractOptions."""
    from embedtool.audio.settings import FeatureSettings
    from embedtool.features.extract import run_extract
    from embedtool.features.options import ExtractOptions

    folders = [Path(roots)] if isinstance(roots, (str, Path)) else [Path(r) for r in roots]
    return run_extract(folders, Path(features), settings or FeatureSettings(), ExtractOptions(**{"jobs": 1, **options}))


def copy_workspace(workspace: Workspace, destination: Path | str) -> Workspace:
    """A copy of every artefact of ``workspace`` at ``destination``, for a test that writes to it."""
    shutil.copytree(workspace.root, destination)
    return Workspace.at(destination)


def write_config(folder: Path | str, text: str) -> Path:
    """Write ``text`` as ``folder/embedtool.yaml``."""
    path = Path(folder) / "embedtool.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run_cli(*args: str | Path) -> Result:
    """Run the command line in this process (typer's CliRunner): ``run_cli("-w", ws, "info", "--json")``."""
    from typer.testing import CliRunner

    from embedtool.cli.app import app

    return CliRunner().invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """Console output without rich's line wrapping."""
    return " ".join(text.split())


def kill_9_when_marked(driver: Path, args: Sequence[Any], marker: Path, timeout_s: float = 120.0) -> None:
    """Run ``python driver args...``, wait until it writes ``marker`` (it then waits to be killed), and SIGKILL it:
    no Python cleanup, no finally blocks, only what the kernel releases."""
    proc = subprocess.Popen([sys.executable, str(driver), *map(str, args)])
    try:
        deadline = time.monotonic() + timeout_s
        while not marker.exists():
            assert proc.poll() is None, f"{driver.name} ended before it was killed"
            assert time.monotonic() < deadline, f"{driver.name} did not reach its marker"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
