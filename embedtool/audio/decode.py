"""Decoding audio files to mono float32 at a target rate: soundfile first, PyAV (FFmpeg) as the fallback.

Two ways in:

- :func:`stream_audio` yields the file as blocks of mono samples at the target rate while holding only one
  block of native-rate audio at a time (a two-hour file never sits in RAM at 44.1 kHz). The blocks laid end to
  end equal resampling the whole file at once (see :class:`StreamingResampler`).
- :func:`decode_file` returns the whole file in memory (for queries); it is the stream concatenated, so a
  query goes through exactly the same numbers as an extracted track.

Every failure a user can cause (missing, unreadable, empty, non-audio, corrupt or truncated file) is raised as
:class:`~embedtool.errors.InputError` with the reason.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio

from embedtool.audio.settings import DEFAULT_BLOCK_SECONDS
from embedtool.errors import InputError


@dataclass(frozen=True)
class AudioInfo:
    """Facts about the source file (before downmix and resampling)."""

    native_sample_rate: int
    channels: int
    duration_s: float
    # Set after decoding when less came out than the file declares (or an Ogg stream lacks its end): the reason.
    truncated: str | None = None
    # What the decoder library printed about this file (libmpg123's "Warning: ..." on a broken mp3), if anything.
    warnings: str | None = None


@dataclass
class DecodedAudio:
    samples: np.ndarray  # float32 mono at sample_rate
    sample_rate: int
    native_sample_rate: int
    channels: int
    duration_s: float

    @property
    def info(self) -> AudioInfo:
        return AudioInfo(self.native_sample_rate, self.channels, self.duration_s)


MAX_KERNEL_PHASES = 2048  # torchaudio's kernel holds new x (orig + 2 width) taps: keep it to a few MB


class StreamingResampler:
    """Resample a signal pushed in blocks so that the output equals resampling it in one piece.

    torchaudio's sinc resampler is a polyphase FIR whose output ``j`` sits at input time ``j * orig / new``.
    Each call resamples the unconsumed input plus ``margin`` samples of context on both sides, starting at a
    multiple of ``orig / gcd`` so output indices line up, and keeps only outputs whose whole filter support lay
    inside the chunk; the file's own edges see the same zero padding as a whole-file call.

    An odd rate (a 22302 Hz sample, 16000/22302 = 8000/11151) would make torchaudio's kernel ``new x orig`` taps,
    gigabytes; above ``MAX_KERNEL_PHASES`` phases scipy's ``resample_poly`` (a Kaiser-windowed FIR applied
    polyphase, whose memory does not grow with the ratio) resamples instead, on the same output grid.
    """

    def __init__(self, orig_sr: int, new_sr: int):
        g = math.gcd(int(orig_sr), int(new_sr))
        self.orig, self.new = int(orig_sr) // g, int(new_sr) // g
        self.identity = self.orig == self.new
        self._odd_ratio = max(self.orig, self.new) > MAX_KERNEL_PHASES
        # One cached kernel (torchaudio.transforms.Resample), default sinc/Hann, 6 zero crossings, rolloff 0.99.
        plain = self.identity or self._odd_ratio
        self._resample = None if plain else torchaudio.transforms.Resample(orig_sr, new_sr)
        self._groups = _phase_groups(self._resample) if self._resample is not None and self.new >= 16 else None
        width = math.ceil(6 * self.orig / (min(self.orig, self.new) * 0.99))
        self.margin = self.orig * (math.ceil((2 * width + self.orig) / self.orig) + 1)
        self._buf = np.zeros(0, dtype=np.float32)
        self._buf_start = 0  # absolute input index of _buf[0]
        self._done = 0  # input index up to which output has been emitted (a multiple of self.orig)

    def _run(self, chunk: np.ndarray) -> np.ndarray:
        if self._odd_ratio:
            from scipy.signal import resample_poly

            return resample_poly(chunk, self.new, self.orig).astype(np.float32)
        if self.new == 1:  # 48 -> 16 kHz, 32 -> 16 kHz: one output phase, in numpy (scipy's upfirdn)
            return _decimate(chunk, self._resample.kernel[0, 0].numpy(), self._resample.width, self.orig)
        with torch.inference_mode():
            x = torch.from_numpy(chunk)
            if self._groups is None:
                return self._resample(x).numpy()
            return _polyphase(x, self._resample.kernel, self._resample.width, self.orig, self.new, self._groups)

    def push(self, block: np.ndarray) -> np.ndarray:
        if self.identity:
            return block
        self._buf = np.concatenate([self._buf, block]) if len(self._buf) else block
        end = self._buf_start + len(self._buf)
        safe = ((end - self.margin) // self.orig) * self.orig  # outputs before `safe` are final
        if safe <= self._done:
            return np.zeros(0, dtype=np.float32)
        out = self._emit(max(0, self._done - self.margin), safe, safe + self.margin)
        self._done = safe
        keep_from = max(0, self._done - self.margin) - self._buf_start
        self._buf = self._buf[keep_from:].copy()
        self._buf_start += keep_from
        return out

    def finish(self) -> np.ndarray:
        if self.identity:
            return np.zeros(0, dtype=np.float32)
        end = self._buf_start + len(self._buf)
        if end <= self._done:
            return np.zeros(0, dtype=np.float32)
        out = self._emit(max(0, self._done - self.margin), end, end)
        self._done = end
        self._buf = np.zeros(0, dtype=np.float32)
        return out

    def _emit(self, chunk_start: int, emit_end: int, chunk_end: int) -> np.ndarray:
        """Resample input [chunk_start, chunk_end) and return the outputs for input [self._done, emit_end)."""
        chunk = self._buf[chunk_start - self._buf_start : chunk_end - self._buf_start]
        out = self._run(np.ascontiguousarray(chunk, dtype=np.float32))
        first = (self._done - chunk_start) * self.new // self.orig
        last = math.ceil(emit_end * self.new / self.orig) - chunk_start * self.new // self.orig
        return out[first:last]


def _phase_groups(
    resample: torchaudio.transforms.Resample, size: int = 16
) -> list[tuple[int, int, int, int, torch.Tensor]]:
    """Split torchaudio's resampling kernel into groups of output phases with the taps each group uses.

    torchaudio convolves every output phase with a kernel spanning ``orig`` + 2 * width input samples, although
    each phase's sinc window covers only ~2 * width of them; for 44.1 -> 16 kHz that is 475 taps per output
    where 35 do any work. Multiplying each group of 16 phases by just its own taps gives the same sums (the
    skipped taps are exact zeros) at ~2.5x less CPU.
    """
    kernel = resample.kernel[:, 0, :]  # (new, taps)
    groups = []
    for k0 in range(0, kernel.shape[0], size):
        k1 = min(kernel.shape[0], k0 + size)
        used = torch.nonzero(kernel[k0:k1].abs().sum(dim=0) > 0).flatten()
        a, b = int(used[0]), int(used[-1]) + 1
        groups.append((k0, k1, a, b, kernel[k0:k1, a:b].T.contiguous()))
    return groups


def _polyphase(x: torch.Tensor, kernel: torch.Tensor, width: int, orig: int, new: int, groups: list) -> np.ndarray:
    """torchaudio's ``_apply_sinc_resample_kernel`` computed group by group (see :func:`_phase_groups`)."""
    taps = kernel.shape[-1]
    padded = torch.nn.functional.pad(x, (width, width + orig))
    frames = (padded.shape[0] - taps) // orig + 1
    windows = padded.as_strided((frames, taps), (orig, 1))  # row i: the input under output group i
    out = torch.empty(frames, new)
    for k0, k1, a, b, weights in groups:
        out[:, k0:k1] = windows[:, a:b] @ weights
    return out.reshape(-1)[: math.ceil(new * x.shape[0] / orig)].numpy()


def _decimate(x: np.ndarray, taps: np.ndarray, width: int, orig: int) -> np.ndarray:
    """torchaudio's resampling to 1/``orig`` of the rate (its kernel has one output phase, ``taps``) by scipy's
    ``upfirdn``, which computes only the kept outputs: the same sums as torchaudio's strided conv1d within float32
    rounding, at about half its CPU."""
    from scipy.signal import upfirdn

    k = len(taps)
    lead = (-(k - 1)) % orig  # so that the kept outputs fall on upfirdn's grid of every orig-th sum
    padded = np.concatenate([np.zeros(width + lead, np.float32), x, np.zeros(width + orig, np.float32)])
    y = upfirdn(taps[::-1], padded, 1, orig)  # a convolution: the reversed taps make torchaudio's correlation
    start = (k - 1 + lead) // orig
    return y[start : start + math.ceil(len(x) / orig)].astype(np.float32, copy=False)


def check_readable(path: Path) -> None:
    """Raise InputError for a path that is missing, not a file, unreadable or empty."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if not path.is_file():
        raise InputError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: unreadable (permission denied)")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")


class _NotOpened(Exception):
    """PyAV could not open the file either; the message is the reason."""


class _Source:
    """A native-rate block reader over soundfile or PyAV, downmixing to mono."""

    info: AudioInfo

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        pass


_DECODER_LINE = re.compile(r"^\s*(?:\[[^\]]*mpg123[^\]]*\]\s*)?(?:Note|Warning|Error|Big trouble)\b.*|.*libmpg123.*")


@contextmanager
def _decoder_messages(into: list[str]) -> Iterator[None]:
    """Collect what C decoder libraries print on the process's stderr meanwhile (libmpg123, inside libsndfile,
    writes "Warning: Xing stream size off..." straight to file descriptor 2) into ``into``, so that it becomes
    part of the file's reason instead of noise between progress lines. Lines that are not a decoder's (another
    thread's progress output) are passed on to stderr unchanged."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (an embedding host): nothing to capture
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            passed = []
            for line in text.splitlines():
                if _DECODER_LINE.match(line):
                    if line.strip() not in into:
                        into.append(line.strip())
                elif line:
                    passed.append(line)
            if passed:
                os.write(2, ("\n".join(passed) + "\n").encode())


def _with_messages(reason: str, messages: list[str], limit: int = 3) -> str:
    """``reason`` followed by the decoder's own messages (the first few), if it printed any."""
    if not messages:
        return reason
    more = f" (+{len(messages) - limit} more)" if len(messages) > limit else ""
    return f"{reason} [decoder: {'; '.join(messages[:limit])}{more}]"


class _SoundfileSource(_Source):
    def __init__(self, path: Path, messages: list[str] | None = None):
        self.path = path
        self.messages = [] if messages is None else messages
        with _decoder_messages(self.messages):
            self.file = sf.SoundFile(str(path))
        self.mpeg = self.file.format in ("MP3", "MPEG")  # libmpg123 decodes these, and prints while it reads
        if self.file.samplerate <= 0 or self.file.channels <= 0:
            raise InputError(f"{path}: no audio stream")
        frames = self.file.frames if self.file.frames and self.file.frames > 0 else 0
        self.info = AudioInfo(self.file.samplerate, self.file.channels, frames / self.file.samplerate)
        self.declared_s = self.info.duration_s  # what the header says (libsndfile reads Xing/VBRI for mp3)
        self.ogg = self.file.format == "OGG"
        # libsndfile sizes a WAV by its bytes, not by the size its data chunk declares: a cut file looks whole.
        self.wav_declared_s = _wav_declared_s(path) if self.file.format in ("WAV", "WAVEX") else None

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        total = 0
        while True:
            try:
                if self.mpeg:
                    with _decoder_messages(self.messages):
                        data = self.file.read(block_frames, dtype="float32", always_2d=True)
                else:
                    data = self.file.read(block_frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                reason = f"{self.path}: corrupt or truncated audio after {total} frames ({exc})"
                raise InputError(_with_messages(reason, self.messages)) from exc
            if len(data) == 0:
                break
            total += len(data)
            yield downmix(data)
            if len(data) < block_frames:
                break
        decoded = total / self.info.native_sample_rate
        truncated = _shortfall(decoded, self.declared_s)
        if truncated is None and self.wav_declared_s is not None:
            truncated = f"truncated (decoded {decoded:.2f} s of {self.wav_declared_s:.2f} s)"
        if truncated is None and self.ogg and not _ogg_ends_cleanly(self.path):
            truncated = f"truncated (decoded {decoded:.2f} s; the Ogg stream ends without its end-of-stream page)"
        if truncated is not None:
            truncated = _with_messages(truncated, self.messages)
        warnings = "; ".join(self.messages) if self.messages else None
        self.info = AudioInfo(self.info.native_sample_rate, self.info.channels, decoded, truncated, warnings)

    def close(self) -> None:
        self.file.close()


class _PyAVSource(_Source):
    def __init__(self, path: Path):
        import av

        self.path = path
        try:
            self.container = av.open(str(path))
        except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise _NotOpened(getattr(exc, "strerror", None) or str(exc)) from exc
        if not self.container.streams.audio:
            self.container.close()
            raise _NotOpened("no audio stream")
        self.stream = self.container.streams.audio[0]
        ctx = self.stream.codec_context
        if ctx is None:  # e.g. a WAV whose format tag names a codec FFmpeg lacks (Vorbis-in-WAV, 0x674f)
            self.container.close()
            raise _NotOpened("audio stream in a codec FFmpeg cannot decode")
        rate = ctx.sample_rate or self.stream.rate or 0
        channels = ctx.channels or 0
        if rate <= 0 or channels <= 0:
            self.container.close()
            raise _NotOpened("audio stream without sample rate or channels")
        duration = 0.0
        if self.stream.duration is not None and self.stream.time_base is not None:
            duration = float(self.stream.duration * self.stream.time_base)
        self.info = AudioInfo(int(rate), int(channels), duration)
        # MP4/MOV state their length in the moov box; other containers' durations are estimates (an mp3 with
        # trailing junk "lasts" minutes longer), so only MP4's is held against what decodes.
        self.declared_s = duration if "mp4" in (self.container.format.name or "") else 0.0

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        import av

        pending: list[np.ndarray] = []
        count, total = 0, 0
        try:
            for frame in self.container.decode(self.stream):
                data = frame.to_ndarray()
                data = _to_float_planar(data, frame.format.name, frame.format.is_planar, self.info.channels)
                pending.append(downmix(data.T))
                count += pending[-1].shape[0]
                if count >= block_frames:
                    block = np.concatenate(pending)
                    pending, count = [], 0
                    total += len(block)
                    yield block
        except av.error.FFmpegError as exc:
            raise InputError(f"{self.path}: corrupt or truncated audio ({exc})") from exc
        if pending:
            block = np.concatenate(pending)
            total += len(block)
            yield block
        decoded = total / self.info.native_sample_rate
        self.info = AudioInfo(
            self.info.native_sample_rate, self.info.channels, decoded, _shortfall(decoded, self.declared_s)
        )

    def close(self) -> None:
        self.container.close()


def _shortfall(decoded_s: float, declared_s: float) -> str | None:
    """ "truncated (decoded X s of Y s)" when clearly less decoded than declared (codec priming and padding are
    a few hundredths of a second), else None."""
    if declared_s > 0 and declared_s - decoded_s > max(0.25, 0.01 * declared_s):
        return f"truncated (decoded {decoded_s:.2f} s of {declared_s:.2f} s)"
    return None


def _wav_declared_s(path: Path) -> float | None:
    """The duration a RIFF/WAVE file's data chunk declares when the file holds fewer bytes than that (it was cut
    short, or its header claims more than was written), else None. PCM has no priming or padding: one frame
    missing is a cut. A data size of 0 or 0xFFFFFFFF (a streamed file whose header was never finished) claims
    nothing."""
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size = os.fstat(fh.fileno()).st_size
        rate = block_align = 0
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            kind, length = chunk[:4], int.from_bytes(chunk[4:], "little")
            if kind == b"fmt ":
                fmt = fh.read(min(length, 16))
                if len(fmt) < 14:
                    return None
                rate, block_align = int.from_bytes(fmt[4:8], "little"), int.from_bytes(fmt[12:14], "little")
                fh.seek(length + (length & 1) - len(fmt), os.SEEK_CUR)
            elif kind == b"data":
                if rate <= 0 or block_align <= 0 or length in (0, 0xFFFFFFFF):
                    return None
                available = size - fh.tell()
                if length - available < block_align:
                    return None
                return (length // block_align) / rate
            else:
                fh.seek(length + (length & 1), os.SEEK_CUR)


def _ogg_ends_cleanly(path: Path, tail_bytes: int = 1 << 16) -> bool:
    """Whether an Ogg file ends with a complete page flagged end-of-stream. Ogg has no length in a header: a
    file cut short decodes without error to a shorter stream, and only its end shows the cut."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - tail_bytes))
        tail = fh.read()
    at = tail.rfind(b"OggS")
    if at < 0 or len(tail) - at < 27:
        return False
    segments = tail[at + 26]
    if len(tail) - at < 27 + segments:
        return False
    body = sum(tail[at + 27 : at + 27 + segments])
    complete = at + 27 + segments + body == len(tail)
    return complete and bool(tail[at + 5] & 0x04)


def downmix(data: np.ndarray) -> np.ndarray:
    """Mean of the channels of a (frames, channels) array, as a new contiguous float32 array.

    Summed column by column: numpy's ``mean(axis=1)`` over a 2-wide axis is ~10x slower than decoding.
    """
    out = np.array(data[:, 0], dtype=np.float32)  # a copy: the caller's buffer may be reused
    for c in range(1, data.shape[1]):
        out += data[:, c]
    if data.shape[1] > 1:
        out *= np.float32(1.0 / data.shape[1])
    return out


def _to_float_planar(data: np.ndarray, fmt: str, planar: bool, channels: int) -> np.ndarray:
    """A PyAV frame's array as float32 (channels, n) in [-1, 1], whatever its sample format."""
    if not planar:  # packed: shape (1, n * channels), interleaved
        data = data.reshape(-1, channels).T
    if data.dtype == np.int16:
        return data.astype(np.float32) / 32768.0
    if data.dtype == np.int32:
        return data.astype(np.float32) / 2147483648.0
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    return data.astype(np.float32, copy=False)


def declared_duration_s(path: Path | str) -> float | None:
    """The duration a file's header declares (soundfile reads only the header), or None when it does not tell."""
    try:
        with _decoder_messages([]):  # a broken mp3's warnings are said when it is decoded, not here too
            info = sf.info(str(path))
    except Exception:  # not a format libsndfile reads (m4a, ...) or no readable header
        return None
    return float(info.frames) / info.samplerate if info.samplerate > 0 and info.frames > 0 else None


def _open(path: Path) -> _Source:
    check_readable(path)
    messages: list[str] = []
    try:
        return _SoundfileSource(path, messages)
    except (sf.LibsndfileError, RuntimeError, TypeError) as sf_exc:
        sf_reason = str(sf_exc).split(": ", 1)[-1] if ": " in str(sf_exc) else str(sf_exc)
    try:
        return _PyAVSource(path)
    except _NotOpened as av_exc:
        reason = f"{path}: not a recognised audio file (soundfile: {sf_reason}; PyAV: {av_exc})"
        raise InputError(_with_messages(reason, messages)) from None


class AudioStream:
    """An open audio file yielding mono float32 blocks at ``target_sr``; ``info`` is final after iterating."""

    def __init__(
        self,
        path: Path | str,
        target_sr: int,
        block_seconds: float = DEFAULT_BLOCK_SECONDS,
        allow_truncated: bool = True,
    ):
        self.path = Path(path)
        self.target_sr = int(target_sr)
        self.allow_truncated = allow_truncated
        self._source = _open(self.path)
        native = self._source.info.native_sample_rate
        self._resampler = StreamingResampler(native, self.target_sr)
        # Block length a multiple of the resampler's input period keeps chunk boundaries aligned cheaply.
        period = self._resampler.orig
        self.block_frames = max(period, int(block_seconds * native) // period * period)

    @property
    def info(self) -> AudioInfo:
        return self._source.info

    def __iter__(self) -> Iterator[np.ndarray]:
        produced = False
        try:
            for block in self._source.blocks(self.block_frames):
                produced = True
                out = self._resampler.push(block)
                if len(out):
                    yield out
            tail = self._resampler.finish()
            if len(tail):
                yield tail
        finally:
            self._source.close()
        if not produced:
            raise InputError(f"{self.path}: no audio samples in the file")
        if self.info.truncated and not self.allow_truncated:
            raise InputError(f"{self.path}: {self.info.truncated}")

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self._source.close()


def stream_audio(
    path: Path | str, target_sr: int, block_seconds: float = DEFAULT_BLOCK_SECONDS, allow_truncated: bool = True
) -> AudioStream:
    """Open ``path`` for block-wise decoding to mono float32 at ``target_sr`` (bounded memory). A file that
    decodes to clearly less than it declares (``AudioInfo.truncated``) is an :class:`InputError` at the end of
    the stream unless ``allow_truncated``."""
    return AudioStream(path, target_sr, block_seconds, allow_truncated)


def decode_file(path: Path | str, target_sr: int) -> DecodedAudio:
    """Decode a whole file to mono float32 at ``target_sr`` (in memory; for queries and short files)."""
    stream = stream_audio(path, target_sr)
    blocks = list(stream)
    samples = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    info = stream.info
    return DecodedAudio(
        samples=samples.astype(np.float32, copy=False),
        sample_rate=int(target_sr),
        native_sample_rate=info.native_sample_rate,
        channels=info.channels,
        duration_s=info.duration_s,
    )
