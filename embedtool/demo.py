"""The pieces of `embedtool demo` that are not just the other commands: the bundled audio and a test query."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_AUDIO = Path(__file__).resolve().parent / "sample_audio" / "sonicpi-cc0"
DEMO_WORKSPACE = "embedtool-demo"


def make_noisy_excerpt(
    source: Path,
    destination: Path,
    start_s: float,
    seconds: float,
    snr_db: float = 10.0,
    sample_rate: int = 22050,
    seed: int = 0,
) -> Path:
    """Write a degraded excerpt of ``source``: cropped, with white noise at ``snr_db``, re-encoded by extension.

    This is the re-identification case users meet: a short, noisy, lossy snippet of a track in the library.
    """
    from embedtool.audio.decode import decode_file  # deferred: torch is only needed once the demo runs

    audio = decode_file(source, sample_rate).samples
    start = int(start_s * sample_rate)
    excerpt = audio[start : start + int(seconds * sample_rate)].astype(np.float64)
    if excerpt.size == 0:
        raise ValueError(f"{source} is shorter than {start_s} s")
    rng = np.random.default_rng(seed)
    signal_power = float(np.mean(excerpt**2)) or 1e-12
    noise = rng.standard_normal(excerpt.size) * np.sqrt(signal_power / 10 ** (snr_db / 10))
    mixed = excerpt + noise
    mixed *= 0.9 / max(1e-9, float(np.max(np.abs(mixed))))
    destination.parent.mkdir(parents=True, exist_ok=True)
    sf.write(destination, mixed.astype(np.float32), sample_rate)
    return destination
