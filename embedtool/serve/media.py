"""Library audio for a browser: files it can play are sent as they are; others (aiff, wma, ...) as a 16-bit WAV
made on the fly with PyAV, decoding only the byte range asked for, piece by piece as it is sent.

A PCM WAV's bytes map to sample frames by arithmetic (a 44-byte header, then ``channels * 2`` bytes a frame), so
an HTTP range of the WAV is a time range of the source: the player can seek in an hour-long wma without the
server decoding the hour.
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# What Chromium and Firefox play from a file's suffix; everything else is transcoded.
PLAYABLE = {
    ".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".oga": "audio/ogg", ".opus": "audio/ogg",
    ".flac": "audio/flac", ".webm": "audio/webm", ".m4a": "audio/mp4", ".mp4": "audio/mp4", ".aac": "audio/aac",
}  # fmt: skip
HEADER_BYTES = 44
SAMPLE_BYTES = 2  # 16-bit PCM
CHUNK_BYTES = 256 * 1024  # what one piece of a streamed WAV holds


class RangeNotSatisfiable(Exception):
    def __init__(self, size: int):
        super().__init__(f"range not satisfiable: the resource has {size} bytes")
        self.size = size


def is_playable(path: Path) -> bool:
    return path.suffix.lower() in PLAYABLE


def media_type(path: Path) -> str:
    return PLAYABLE.get(path.suffix.lower(), "audio/wav")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The first range of a ``Range: bytes=...`` header as [start, end) within ``size``; None for no (or an
    unparseable) header, which means the whole resource."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*(,.*)?", header)
    if m is None or (m.group(1) == "" and m.group(2) == ""):
        return None
    if m.group(1) == "":  # the last N bytes
        start, end = max(0, size - int(m.group(2))), size
    else:
        start = int(m.group(1))
        end = min(size, int(m.group(2)) + 1) if m.group(2) else size
    if start >= size or start >= end:
        raise RangeNotSatisfiable(size)
    return start, end


@dataclass(frozen=True)
class WavTranscode:
    """A source file seen as a 16-bit PCM WAV at its own rate (mono or stereo)."""

    path: Path
    sample_rate: int
    channels: int
    frames: int

    @classmethod
    def open(cls, path: Path) -> WavTranscode:
        import av

        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            rate = int(stream.rate or stream.codec_context.sample_rate)
            channels = min(2, int(stream.codec_context.channels or 1))
            if stream.duration is not None and stream.time_base is not None:
                seconds = float(stream.duration * stream.time_base)
            else:
                seconds = float(container.duration or 0) / av.time_base
        return cls(path, rate, channels, int(round(seconds * rate)))

    @property
    def frame_bytes(self) -> int:
        return self.channels * SAMPLE_BYTES

    @property
    def size(self) -> int:
        return HEADER_BYTES + self.frames * self.frame_bytes

    def header(self) -> bytes:
        data = self.frames * self.frame_bytes
        byte_rate = self.sample_rate * self.frame_bytes
        return (
            b"RIFF" + struct.pack("<I", 36 + data) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, self.channels, self.sample_rate, byte_rate, self.frame_bytes, 16)
            + b"data" + struct.pack("<I", data)
        )  # fmt: skip

    def read(self, start: int, end: int) -> bytes:
        """Bytes [start, end) of the WAV, decoding only the frames they cover."""
        return b"".join(self.stream(start, end))

    def stream(self, start: int, end: int, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """Bytes [start, end) of the WAV in pieces of about ``chunk_bytes``, decoded as they are sent: memory stays
        at a piece whatever the range (a whole hour-long file for ``Range: bytes=0-``)."""
        if start < HEADER_BYTES:
            yield self.header()[start:end]
        data_start, data_end = max(start, HEADER_BYTES) - HEADER_BYTES, max(end, HEADER_BYTES) - HEADER_BYTES
        if data_end <= data_start:
            return
        first = data_start // self.frame_bytes
        last = min(self.frames, math.ceil(data_end / self.frame_bytes))
        if last <= first:
            return
        skip = data_start - first * self.frame_bytes  # bytes of the first frame before the range
        left = data_end - data_start
        for block in self._blocks(first, last, max(1, chunk_bytes // self.frame_bytes)):
            piece = block.tobytes()[skip : skip + left]
            skip, left = 0, left - len(piece)
            if piece:
                yield piece
            if left <= 0:
                return

    def _blocks(self, first: int, last: int, block_frames: int) -> Iterator[np.ndarray]:
        """Interleaved int16 frames [first, last) in blocks of ``block_frames``, zero-padded where the decoder
        gives fewer frames than declared."""
        import av

        out = np.zeros((min(block_frames, last - first), self.channels), dtype=np.int16)
        filled = first  # frames before this one were yielded
        layout = "mono" if self.channels == 1 else "stereo"
        with av.open(str(self.path)) as container:
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="s16", layout=layout, rate=self.sample_rate)
            if first > 0 and stream.time_base is not None:
                try:  # to the packet at or before the first frame; decoding goes forward from there
                    container.seek(int(first / self.sample_rate / stream.time_base), stream=stream, backward=True)
                except av.error.FFmpegError:
                    container.seek(0, stream=stream)
            position: int | None = None
            for frame in container.decode(stream):
                if position is None:
                    pts = frame.pts if frame.pts is not None else 0
                    position = int(round(float(pts * frame.time_base) * self.sample_rate)) if frame.time_base else 0
                for piece in resampler.resample(frame):
                    block = piece.to_ndarray().reshape(-1, self.channels)
                    at, position = position, position + len(block)
                    while True:  # the decoded block into the buffer of frames [filled, filled + size)
                        size = min(len(out), last - filled)
                        lo, hi = max(at, filled), min(position, filled + size)
                        if hi > lo:
                            out[lo - filled : hi - filled] = block[lo - at : hi - at]
                        if position < filled + size:
                            break  # not full yet: the next decoded block goes on filling it
                        yield out[:size].copy()
                        out[:] = 0
                        filled += size
                        if filled >= last:
                            return
        while filled < last:  # fewer frames than declared: silence to the declared length
            size = min(len(out), last - filled)
            yield out[:size].copy()
            out[:] = 0
            filled += size
