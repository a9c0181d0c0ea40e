"""THE audio -> features path. Extraction, every query (a file, samples, a library track), ``classify QUERY`` and
evaluate's degraded excerpts all turn audio into log-Mel features here, so a query goes through the same numbers
as a library track:

- decoding and resampling: :mod:`embedtool.audio.decode` (soundfile, PyAV as fallback) and its one resampler,
  :class:`~embedtool.audio.decode.StreamingResampler`, which gives the same samples in blocks as in one piece;
- log-Mel: :class:`~embedtool.audio.melspec.LogMel`, block by block with bounded memory;
- storage precision: ``FEATURE_DTYPE`` (float16). Library features are stored so; query features are rounded
  through it too, so a library file given as a query yields its stored features bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from embedtool.audio.decode import AudioInfo, StreamingResampler, downmix
from embedtool.audio.melspec import LogMel, file_logmel
from embedtool.audio.settings import DEFAULT_BLOCK_SECONDS, FeatureSettings
from embedtool.errors import InputError

FEATURE_DTYPE = np.float16  # halves what the library costs on disk; queries are rounded the same way


def featurise_file(
    path: Path | str,
    settings: FeatureSettings,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
    on_block: Callable[[np.ndarray], None] | None = None,
    allow_truncated: bool = True,
) -> tuple[np.ndarray, AudioInfo]:
    """(log-Mel frames as ``FEATURE_DTYPE`` (frames, n_mels), the file's info): decoded, resampled and featurised
    block by block (``on_block`` sees each resampled block, e.g. to measure the peak level). A file cut short
    (``info.truncated``) is refused unless ``allow_truncated`` (queries: an excerpt is an excerpt)."""
    return file_logmel(
        path, settings, block_seconds=block_seconds, dtype=FEATURE_DTYPE, on_block=on_block,
        allow_truncated=allow_truncated,
    )  # fmt: skip


def featurise_samples(
    samples: np.ndarray,
    sample_rate: int,
    settings: FeatureSettings,
    on_block: Callable[[np.ndarray], None] | None = None,
) -> np.ndarray:
    """Log-Mel frames (``FEATURE_DTYPE``) of mono (n,) or (n, channels) float samples at ``sample_rate``, resampled
    with the resampler files go through (``on_block`` sees the resampled samples, as for a file)."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = downmix(samples)  # as a decoded file's channels are
    if samples.ndim != 1:
        raise InputError(f"Audio samples must be mono (n,) or (n, channels), not shape {samples.shape}")
    if int(sample_rate) != settings.sample_rate and len(samples):
        resampler = StreamingResampler(int(sample_rate), settings.sample_rate)
        samples = np.concatenate([resampler.push(samples), resampler.finish()])
    if not np.all(np.isfinite(samples)):
        raise InputError("The audio holds non-finite samples (corrupt audio).")
    if on_block is not None:
        on_block(samples)
    return np.asarray(LogMel(settings)(samples)).astype(FEATURE_DTYPE)


def featurise_query(
    path: Path | str, settings: FeatureSettings, on_block: Callable[[np.ndarray], None] | None = None
) -> tuple[np.ndarray, AudioInfo]:
    """:func:`featurise_file` for a query file (``neighbours``, ``classify QUERY``): an excerpt cut short is used
    as it is, and a missing or unreadable file is an :class:`InputError` naming it, whatever the decoder raised."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"Query file not found: {path}")
    try:
        return featurise_file(path, settings, on_block=on_block)
    except InputError:
        raise
    except Exception as exc:  # decoders raise many types for unreadable input
        raise InputError(f"Cannot read query audio {path}: {exc}") from exc
