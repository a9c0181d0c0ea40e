"""THE rule for cutting a track's log-Mel matrix into fixed-length segments (windows).

Training, embedding export and queries all cut windows with these two functions, so a segment means the same
thing everywhere:

- Windows never cross a track's end. They start every ``hop_frames`` frames from 0; when the last regular
  window stops short of the end, one more window is added that ends exactly at the last frame, so the tail of
  a track is always covered (the last step may therefore be shorter than ``hop_frames``).
- A track shorter than (or exactly) one segment gives exactly one window starting at frame 0: the track sits
  at the window's start and the rest is padded with the silence floor ``ln(log_offset)`` — the value a
  log-Mel frame of digital silence has (see :func:`silence_floor`).
- A track with no frames gives no windows.
"""

from __future__ import annotations

import math

import numpy as np


def silence_floor(log_offset: float) -> float:
    """The log-Mel value of digital silence, ``ln(log_offset)``: what short tracks are padded with."""
    return float(math.log(log_offset))


def segment_frames_for(seconds: float, frames_per_second: float) -> int:
    """Frames in a segment of ``seconds`` (at least 1)."""
    return max(1, int(round(seconds * frames_per_second)))


def window_starts(n_frames: int, segment_frames: int, hop_frames: int) -> np.ndarray:
    """Start frames (int64, ascending) of the windows of a track with ``n_frames`` frames; see module doc."""
    if segment_frames < 1 or hop_frames < 1:
        raise ValueError(f"segment_frames and hop_frames must be >= 1, got {segment_frames}, {hop_frames}")
    if n_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    last = n_frames - segment_frames
    if last <= 0:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, last + 1, hop_frames, dtype=np.int64)
    if starts[-1] != last:
        starts = np.append(starts, np.int64(last))
    return starts


def crop(mel: np.ndarray, start: int, segment_frames: int, pad_value: float) -> np.ndarray:
    """The window ``mel[start:start+segment_frames]`` as float32 (segment_frames, n_mels).

    A window must not cross the track's end: for a track at least one segment long, ``start`` must lie in
    ``0..n_frames-segment_frames``; a shorter track accepts only ``start=0`` and is padded with ``pad_value``.
    """
    n_frames = mel.shape[0]
    if n_frames >= segment_frames:
        if not 0 <= start <= n_frames - segment_frames:
            raise ValueError(
                f"window at frame {start} of {segment_frames} frames crosses the end of a {n_frames}-frame track"
            )
        return np.asarray(mel[start : start + segment_frames], dtype=np.float32)
    if start != 0:
        raise ValueError(f"a track shorter than a segment ({n_frames} < {segment_frames}) has one window, at 0")
    out = np.full((segment_frames, mel.shape[1]), pad_value, dtype=np.float32)
    out[:n_frames] = mel
    return out


def crop_many(mel: np.ndarray, starts: np.ndarray, segment_frames: int, pad_value: float) -> np.ndarray:
    """Several windows of one track stacked as (len(starts), segment_frames, n_mels) float32."""
    out = np.empty((len(starts), segment_frames, mel.shape[1]), dtype=np.float32)
    for i, s in enumerate(starts):
        out[i] = crop(mel, int(s), segment_frames, pad_value)
    return out
