"""Decoding: formats (soundfile and the PyAV fallback), downmix, resampling, streaming, and bad files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from factories import (
    tone,
    write_corrupt,
    write_empty,
    write_not_audio,
    write_signal,
    write_tone,
    write_truncated,
    write_unknown_codec_wav,
)

from embedtool.audio.decode import StreamingResampler, decode_file, stream_audio
from embedtool.audio.discover import discover_audio
from embedtool.errors import InputError


def dominant_frequency(samples: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / sr)[np.argmax(spectrum)])


@pytest.mark.parametrize(
    "fmt,sr",
    [("wav", 22050), ("flac", 44100), ("ogg", 22050), ("mp3", 44100), ("aiff", 22050), ("opus", 48000), ("m4a", 44100)],
)
def test_formats_decode_to_mono_at_target_rate(tmp_path: Path, fmt: str, sr: int) -> None:
    path = write_tone(tmp_path / f"tone.{fmt}", freq=1000.0, seconds=1.0, sr=sr, channels=2)
    audio = decode_file(path, 16000)
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.sample_rate == 16000
    assert audio.native_sample_rate == sr
    assert audio.channels == 2
    # Lossy codecs add encoder delay/padding: allow a few tens of ms.
    assert audio.duration_s == pytest.approx(1.0, abs=0.08)
    assert len(audio.samples) == pytest.approx(16000 * audio.duration_s, abs=2)
    assert dominant_frequency(audio.samples, 16000) == pytest.approx(1000.0, abs=5)
    # Same tone on both channels: the downmix keeps its level (0.5 peak), even through lossy codecs.
    assert np.sqrt(np.mean(audio.samples[2000:-2000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def test_m4a_goes_through_the_pyav_fallback(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "tone.m4a", freq=440.0, seconds=0.5, sr=22050)
    with pytest.raises(sf.LibsndfileError):
        sf.info(str(path))  # libsndfile cannot read it...
    audio = decode_file(path, 22050)  # ...but decode_file can
    assert dominant_frequency(audio.samples, 22050) == pytest.approx(440.0, abs=5)


def test_stereo_downmix_is_the_channel_mean(tmp_path: Path) -> None:
    left, right = tone(440.0, 0.5, 16000, 0.6), tone(1200.0, 0.5, 16000, 0.2)
    path = write_signal(tmp_path / "st.wav", np.stack([left, right], axis=1), 16000)
    audio = decode_file(path, 16000)
    expected = (np.round(left * 32767) / 32768 + np.round(right * 32767) / 32768) / 2  # PCM_16 quantisation
    np.testing.assert_allclose(audio.samples, expected, atol=2e-4)


def test_resampling_preserves_pitch_and_level(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "t.flac", freq=3000.0, seconds=1.0, sr=44100, amplitude=0.5)
    audio = decode_file(path, 16000)
    assert len(audio.samples) == 16000
    assert dominant_frequency(audio.samples, 16000) == pytest.approx(3000.0, abs=3)
    assert np.max(np.abs(audio.samples[1000:-1000])) == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("orig,new", [(44100, 16000), (48000, 16000), (22050, 16000), (8000, 16000), (11025, 22050)])
def test_streaming_resampler_equals_whole_signal_resample(orig: int, new: int) -> None:
    x = np.random.default_rng(1).standard_normal(orig * 2 + 123).astype(np.float32) * 0.3
    whole = torchaudio.functional.resample(torch.from_numpy(x), orig, new).numpy()
    resampler = StreamingResampler(orig, new)
    parts = [resampler.push(x[i : i + 5011]) for i in range(0, len(x), 5011)] + [resampler.finish()]
    streamed = np.concatenate(parts)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=5e-5)  # float32 sums in another order


def test_an_odd_sample_rate_resamples_without_a_giant_kernel(tmp_path: Path) -> None:
    """22302 Hz -> 16 kHz reduces to 8000/11151: torchaudio's kernel would be 8000 x 11169 taps (GBs to build);
    the polyphase fallback keeps pitch, length, and streamed == whole."""
    resampler = StreamingResampler(22302, 16000)
    assert resampler._resample is None  # no torchaudio kernel was built
    path = write_tone(tmp_path / "odd.wav", freq=1000.0, seconds=1.5, sr=22302, amplitude=0.5)
    audio = decode_file(path, 16000)
    assert len(audio.samples) == 24000
    assert dominant_frequency(audio.samples, 16000) == pytest.approx(1000.0, abs=3)
    x = np.random.default_rng(3).standard_normal(22302 * 3).astype(np.float32)
    parts = [resampler.push(x[i : i + 7001]) for i in range(0, len(x), 7001)] + [resampler.finish()]
    whole = StreamingResampler(22302, 16000)
    np.testing.assert_allclose(np.concatenate(parts), np.concatenate([whole.push(x), whole.finish()]), atol=1e-6)


def test_stream_audio_blocks_concatenate_to_decode_file(tmp_path: Path) -> None:
    x = np.random.default_rng(2).uniform(-0.5, 0.5, 44100 * 3).astype(np.float32)
    path = write_signal(tmp_path / "n.flac", x, 44100)
    whole = decode_file(path, 16000).samples
    stream = stream_audio(path, 16000, block_seconds=0.37)
    blocks = list(stream)
    assert len(blocks) > 5
    np.testing.assert_allclose(np.concatenate(blocks), whole, atol=1e-5)
    assert stream.info.duration_s == pytest.approx(3.0)


def test_bundled_cc0_set_decodes(sample_audio_dir: Path) -> None:
    files = discover_audio([sample_audio_dir])
    assert len(files) == 72
    for found in files[::6]:
        audio = decode_file(found.path, 16000)
        assert audio.native_sample_rate == 44100
        assert audio.duration_s > 0.04 and np.max(np.abs(audio.samples)) > 0.01


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda p: write_empty(p / "empty.wav"), "empty file"),
        (lambda p: write_not_audio(p / "text.mp3"), "not a recognised audio file"),
        (lambda p: write_corrupt(p / "noise.flac"), "not a recognised audio file"),
        (lambda p: write_truncated(p / "cut.wav", keep_bytes=30), "not a recognised audio file"),
        (lambda p: write_unknown_codec_wav(p / "vorbis.ogg"), "codec FFmpeg cannot decode"),
        (lambda p: p / "missing.wav", "no such file"),
    ],
)
def test_bad_files_raise_input_error_with_reason(tmp_path: Path, make, reason: str) -> None:
    path = make(tmp_path)
    with pytest.raises(InputError, match=reason) as info:
        decode_file(path, 16000)
    assert str(path) in str(info.value)


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root bypasses permission bits, so a chmod-000 file stays readable and this error cannot occur",
)
def test_unreadable_file(tmp_path: Path) -> None:
    path = write_tone(tmp_path / "locked.wav")
    path.chmod(0)
    with pytest.raises(InputError, match="permission denied"):
        decode_file(path, 16000)


def test_discovery_recurses_skips_hidden_and_survives_symlink_loops(tmp_path: Path) -> None:
    root = tmp_path / "lib"
    write_tone(root / "a" / "x.wav")
    write_tone(root / "a" / "deep" / "y.FLAC")
    write_tone(root / ".hidden" / "z.wav")
    write_tone(root / "a" / ".w.wav")
    (root / "a" / "notes.txt").write_text("not audio")
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)  # a loop back to the root
    outside = tmp_path / "elsewhere"
    write_tone(outside / "o.ogg")
    (root / "linked").symlink_to(outside, target_is_directory=True)
    found = discover_audio([root])
    rel = sorted(str(f.relative) for f in found)
    # the loop is entered once (a/loop -> lib) but lib's folders are never walked twice
    assert "a/x.wav" in rel and "a/deep/y.FLAC" in rel and "linked/o.ogg" in rel
    assert not any(part.startswith(".") for r in rel for part in Path(r).parts)
    assert len({os.path.realpath(f.path) for f in found}) == 3
    assert {f.folder_label for f in found} <= {"a", "linked"}
    assert discover_audio([root], follow_symlinks=False) == [
        f for f in discover_audio([root], follow_symlinks=False) if "linked" not in str(f.relative)
    ]
    assert len(discover_audio([root], follow_symlinks=False)) == 2


def test_discovery_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        discover_audio([tmp_path / "nope"])
    (tmp_path / "doc.txt").write_text("x")
    with pytest.raises(InputError, match="not an audio file"):
        discover_audio([tmp_path / "doc.txt"])
    assert discover_audio([tmp_path]) == []
