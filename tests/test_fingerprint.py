"""Landmark fingerprints (indexing.fingerprint): a noisy excerpt finds its track and where in it it was cut;
audio from elsewhere and silence find nothing."""

from __future__ import annotations

import numpy as np
import pytest

from embedtool.audio.settings import FeatureSettings
from embedtool.features.frontend import featurise_samples
from embedtool.indexing.fingerprint import FingerprintIndex, FingerprintSettings, find_peaks, mel_landmarks

SR = 16000
SETTINGS = FeatureSettings()
FPS = SETTINGS.frames_per_second


def melody(seconds: float, seed: int) -> np.ndarray:
    """A random sequence of notes with harmonics and onsets: peaky, like music."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * SR), np.float32)
    t = 0
    while t < len(out):
        n = int(rng.uniform(0.08, 0.3) * SR)
        f0 = float(rng.uniform(120, 1800))
        tt = np.arange(min(n, len(out) - t)) / SR
        note = sum(np.sin(2 * np.pi * f0 * h * tt) / h for h in (1, 2, 3)) * np.exp(-tt * rng.uniform(3, 12))
        out[t : t + len(tt)] += note.astype(np.float32) * float(rng.uniform(0.2, 1.0))
        t += n
    return out / np.abs(out).max()


def mel_of(x: np.ndarray) -> np.ndarray:
    return np.asarray(featurise_samples(x, SR, SETTINGS), dtype=np.float32)


@pytest.fixture(scope="module")
def library() -> tuple[list[np.ndarray], FingerprintIndex]:
    tracks = [melody(40.0, seed) for seed in range(4)]
    fp = FingerprintSettings()
    index = FingerprintIndex.build([mel_landmarks(mel_of(x), FPS, fp) for x in tracks], fp)
    return tracks, index


def test_peaks_are_capped_per_second_and_silence_has_none():
    mel = mel_of(melody(10.0, 7))
    frames, bands = find_peaks(mel, FPS, peaks_per_second=20)
    per_second = np.bincount((frames / FPS).astype(int))
    assert 0 < per_second.max() <= 20 and len(frames) >= 100
    assert np.all(np.diff(frames) >= 0) and bands.max() < mel.shape[1]
    silent = mel_of(np.zeros(5 * SR, np.float32))
    assert len(find_peaks(silent, FPS, 20)[0]) == 0


def test_noisy_excerpt_finds_its_track_and_offset(library):
    tracks, index = library
    rng = np.random.default_rng(1)
    start_s = 17.3
    excerpt = tracks[2][int(start_s * SR) : int((start_s + 3.0) * SR)]
    babble = melody(3.0, 99) + melody(3.0, 98)  # other "music" as background, 6 dB down
    noisy = excerpt + babble * np.sqrt(np.mean(excerpt**2) / np.mean(babble**2) / 10**0.6)
    noisy += rng.normal(0, 0.01, len(noisy)).astype(np.float32)
    hashes, frames = mel_landmarks(mel_of(noisy), FPS, index.settings)
    match = index.match(hashes, frames, 3.0)
    assert match.accepted
    best = match.ranked[0]
    assert best.track == 2
    assert abs(best.offset_frames / FPS - start_s) < 0.1
    assert best.hits >= 3 * (match.ranked[1].hits if len(match.ranked) > 1 else 0)


def test_audio_from_elsewhere_is_not_accepted(library):
    _, index = library
    hashes, frames = mel_landmarks(mel_of(melody(5.0, 1234)), FPS, index.settings)
    assert len(hashes) > 100
    assert not index.match(hashes, frames, 5.0).accepted
    empty = index.match(np.zeros(0, np.uint32), np.zeros(0, np.int64), 1.0)
    assert not empty.accepted and empty.ranked == []


def test_saved_index_answers_alike(library, tmp_path):
    tracks, index = library
    paths = index.save(tmp_path)
    assert all(p.is_file() for p in paths)
    loaded = FingerprintIndex.load(tmp_path, index.settings)
    hashes, frames = mel_landmarks(mel_of(tracks[1][5 * SR : 8 * SR]), FPS, index.settings)
    assert loaded.match(hashes, frames, 3.0).ranked == index.match(hashes, frames, 3.0).ranked
    assert loaded.match(hashes, frames, 3.0).ranked[0].track == 1
