"""Log-Mel spectrograms: ``ln(mel(|STFT|^power) + log_offset)``, computed with torch/torchaudio on the CPU.

Framing follows the seed (TensorFlow's ``tf.signal.stft``): frames are *not* centred. Frame ``t`` covers
samples ``[t * hop, t * hop + win_length)``, is weighted by a periodic Hann window of ``win_length`` and
zero-padded at its end to ``n_fft``; a signal of ``n`` samples gives ``1 + (n - win_length) // hop`` frames
(0 when shorter than one window). So 5 s at 16 kHz with the thesis settings is 498 frames, as in the thesis,
and frame ``t`` starts at ``t * hop / sample_rate`` seconds. The Mel filterbank is torchaudio's
(``melscale_fbanks``, triangles in Hz between Mel-spaced edges, no area normalisation).

Because frames never reach back before their start, the streaming form (:meth:`LogMel.stream`) only has to
carry the samples after the last whole frame from one block to the next, and gives the same frames as one call
on the whole signal.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torchaudio

from embedtool.audio.decode import AudioInfo, stream_audio
from embedtool.audio.settings import DEFAULT_BLOCK_SECONDS, FeatureSettings
from embedtool.errors import InputError


class LogMel:
    """``logmel(samples)`` -> float32 ``(frames, n_mels)`` for mono float32 samples at ``settings.sample_rate``."""

    def __init__(self, settings: FeatureSettings):
        settings.validate()
        self.settings = settings
        s = settings
        # The window sits at the start of the n_fft frame (as tf.signal.stft pads the frame at its end).
        window = torch.zeros(s.n_fft)
        window[: s.win_length] = torch.hann_window(s.win_length, periodic=True)
        self.window = window
        self.filterbank = torchaudio.functional.melscale_fbanks(
            n_freqs=s.n_fft // 2 + 1,
            f_min=float(s.f_min),
            f_max=float(s.f_max),
            n_mels=s.n_mels,
            sample_rate=s.sample_rate,
            norm=None,
            mel_scale=s.mel_scale,
        )  # (n_freqs, n_mels)

    def n_frames(self, n_samples: int) -> int:
        s = self.settings
        return 0 if n_samples < s.win_length else 1 + (n_samples - s.win_length) // s.hop_length

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim != 1:
            raise ValueError(f"LogMel expects mono samples of shape (n,), got {samples.shape}")
        s = self.settings
        frames = self.n_frames(len(samples))
        if frames == 0:
            return np.zeros((0, s.n_mels), dtype=np.float32)
        with torch.inference_mode():
            x = torch.from_numpy(samples)
            # Pad the end so the last window-length frame fits inside an n_fft frame (see module docstring).
            x = torch.nn.functional.pad(x, (0, s.n_fft - s.win_length))
            spec = torch.stft(
                x,
                n_fft=s.n_fft,
                hop_length=s.hop_length,
                win_length=s.n_fft,
                window=self.window,
                center=False,
                return_complex=True,
            )[:, :frames]
            # |X| as sqrt(re^2 + im^2): 4x faster than complex abs (hypot's overflow care is not needed for
            # samples in [-1, 1]); equal to it within 1 ulp.
            parts = torch.view_as_real(spec)
            mag = parts[..., 0] * parts[..., 0]
            mag.addcmul_(parts[..., 1], parts[..., 1])
            if s.power != 2.0:
                mag.sqrt_()
            mel = torch.matmul(mag.T, self.filterbank)
            return torch.log(mel + s.log_offset).numpy()

    def stream(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Log-Mel frames for a signal given as consecutive blocks; equals one call on the concatenation."""
        hop = self.settings.hop_length
        carry = np.zeros(0, dtype=np.float32)
        for block in blocks:
            buf = np.concatenate([carry, block]) if len(carry) else block
            frames = self.n_frames(len(buf))
            if frames:
                # Only the samples these frames cover go through the STFT; the rest waits for the next block.
                used = (frames - 1) * hop + self.settings.win_length
                yield self(buf[:used])
                carry = buf[frames * hop :]
            else:
                carry = buf
        # A tail shorter than a window makes no further frame (frames are never padded past the signal).


def file_logmel(
    path: Path | str,
    settings: FeatureSettings,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
    dtype: type = np.float32,
    on_block: Callable[[np.ndarray], None] | None = None,
    allow_truncated: bool = True,
) -> tuple[np.ndarray, AudioInfo]:
    """Decode, resample and log-Mel a file block by block with bounded memory.

    Only one block of native-rate audio (``block_seconds``) is held at a time; the frames are kept, as
    ``dtype`` (float16 halves what a long file costs). ``on_block`` sees each resampled block (e.g. to measure
    the peak level). The result equals ``LogMel(settings)(decode_file(path, settings.sample_rate).samples)``
    up to float tolerance. A file cut short (``AudioInfo.truncated``) is an :class:`InputError` unless
    ``allow_truncated``.
    """
    logmel = LogMel(settings)
    stream = stream_audio(path, settings.sample_rate, block_seconds, allow_truncated)

    def watched() -> Iterator[np.ndarray]:
        for block in stream:
            if on_block is not None:
                on_block(block)
            yield block

    # Frames go straight into one array sized from the header's length (grown if the header was short), so a
    # long file's features exist once in memory, not once in pieces and again concatenated.
    info = stream.info
    expected = math.ceil(info.duration_s * settings.sample_rate) if info.duration_s > 0 else 0
    mel = np.empty((logmel.n_frames(expected) + 1, settings.n_mels), dtype=dtype)
    filled = 0
    for part in logmel.stream(watched()):
        if not np.isfinite(part).all():  # checked per block: a whole-file mask would cost as much as the result
            raise InputError(f"{path}: decoding produced non-finite samples (corrupt audio)")
        if filled + len(part) > len(mel):
            grown = np.empty((max(2 * len(mel), filled + len(part)), settings.n_mels), dtype=dtype)
            grown[:filled] = mel[:filled]
            mel = grown
        mel[filled : filled + len(part)] = part
        filled += len(part)
    # a view, unless the header promised far more than was decoded (then do not keep the slack alive)
    mel = mel[:filled].copy() if filled < len(mel) // 2 else mel[:filled]
    return mel, stream.info
