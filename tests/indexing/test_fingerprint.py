"""Landmark fingerprints (indexing.fingerprint) from both sources, the fine-spectrogram peaks (audio.peaks) and
the log-Mel features: a noisy excerpt finds its track and where in it it was cut; audio from elsewhere and silence
find nothing. The peaks computed block by block while decoding equal those of the whole file's spectrogram."""

from __future__ import annotations

import numpy as np
import pytest
from factories import struck_notes

from embedtool.audio import peaks as fine
from embedtool.audio.peaks import PeakSpectrum, PeakTracker, spectral_peaks
from embedtool.audio.settings import FeatureSettings
from embedtool.features.frontend import featurise_samples
from embedtool.indexing.fingerprint import (
    FingerprintIndex,
    FingerprintSettings,
    find_peaks,
    mel_landmarks,
    peak_landmarks,
)

SR = 16000
SETTINGS = FeatureSettings()
FPS = SETTINGS.frames_per_second
SOURCES = ["peaks", "mel"]


def mel_of(x: np.ndarray) -> np.ndarray:
    return np.asarray(featurise_samples(x, SR, SETTINGS), dtype=np.float32)


def landmarks_of(x: np.ndarray, fp: FingerprintSettings) -> tuple[np.ndarray, np.ndarray]:
    """What extract and a query compute for ``fp.source``."""
    if fp.source == "peaks":
        return peak_landmarks(*spectral_peaks(PeakSpectrum(SR)(x), PeakSpectrum(SR).frames_per_second), fp)
    return mel_landmarks(mel_of(x), FPS, fp)


def frames_per_second(fp: FingerprintSettings) -> float:
    return PeakSpectrum(SR).frames_per_second if fp.source == "peaks" else FPS


@pytest.fixture(scope="module", params=SOURCES)
def library(request) -> tuple[list[np.ndarray], FingerprintIndex]:
    tracks = [struck_notes(40.0, seed) for seed in range(4)]
    fp = FingerprintSettings.for_source(request.param)
    index = FingerprintIndex.build([landmarks_of(x, fp) for x in tracks], fp)
    return tracks, index


def test_peaks_are_capped_per_second_and_silence_has_none():
    mel = mel_of(struck_notes(10.0, 7))
    frames, bands = find_peaks(mel, FPS, peaks_per_second=20)
    per_second = np.bincount((frames / FPS).astype(int))
    assert 0 < per_second.max() <= 20 and len(frames) >= 100
    assert np.all(np.diff(frames) >= 0) and bands.max() < mel.shape[1]
    silent = mel_of(np.zeros(5 * SR, np.float32))
    assert len(find_peaks(silent, FPS, 20)[0]) == 0


def test_fine_peaks_are_capped_per_second_and_silence_has_none():
    spectrum = PeakSpectrum(SR)
    assert spectrum.bins == 256 and spectrum.hop == 256 and spectrum.n_fft == 1024  # 15.6 Hz bins up to 4 kHz
    frames, bins = spectral_peaks(spectrum(struck_notes(10.0, 7)), spectrum.frames_per_second, peaks_per_second=20)
    per_second = np.bincount((frames / spectrum.frames_per_second).astype(int))
    assert 0 < per_second.max() <= 20 and len(frames) >= 100
    assert np.all(np.diff(frames) >= 0) and bins.max() < spectrum.bins
    assert len(spectral_peaks(spectrum(np.zeros(5 * SR, np.float32)), spectrum.frames_per_second)[0]) == 0


def test_peaks_tracked_block_by_block_equal_the_whole_files(monkeypatch):
    monkeypatch.setattr(fine, "CHUNK_SECONDS", 2)  # many chunks in a short signal
    rng = np.random.default_rng(3)
    x = struck_notes(17.0, 5) + rng.normal(0, 0.02, 17 * SR).astype(np.float32)
    spectrum = PeakSpectrum(SR)
    whole = spectral_peaks(spectrum(x), spectrum.frames_per_second)
    tracker = PeakTracker(SR)
    at = 0
    while at < len(x):  # uneven blocks, as a decoder gives them
        n = int(rng.integers(100, 3 * SR))
        tracker.push(x[at : at + n])
        at += n
    streamed = tracker.finish()
    assert len(whole[0]) > 300
    np.testing.assert_array_equal(streamed[0], whole[0])
    np.testing.assert_array_equal(streamed[1], whole[1])


def test_noisy_excerpt_finds_its_track_and_offset(library):
    tracks, index = library
    rng = np.random.default_rng(1)
    start_s = 17.3
    excerpt = tracks[2][int(start_s * SR) : int((start_s + 3.0) * SR)]
    babble = struck_notes(3.0, 99) + struck_notes(3.0, 98)  # other "music" as background, 6 dB down
    noisy = excerpt + babble * np.sqrt(np.mean(excerpt**2) / np.mean(babble**2) / 10**0.6)
    noisy += rng.normal(0, 0.01, len(noisy)).astype(np.float32)
    hashes, frames = landmarks_of(noisy, index.settings)
    match = index.match(hashes, frames, 3.0)
    assert match.accepted
    best = match.ranked[0]
    assert best.track == 2
    assert abs(best.offset_frames / frames_per_second(index.settings) - start_s) < 0.1
    assert best.hits >= 3 * (match.ranked[1].hits if len(match.ranked) > 1 else 0)


def test_audio_from_elsewhere_is_not_accepted(library):
    _, index = library
    hashes, frames = landmarks_of(struck_notes(5.0, 1234), index.settings)
    assert len(hashes) > 100
    assert not index.match(hashes, frames, 5.0).accepted
    empty = index.match(np.zeros(0, np.uint32), np.zeros(0, np.int64), 1.0)
    assert not empty.accepted and empty.ranked == []


def test_saved_index_answers_alike(library, tmp_path):
    tracks, index = library
    paths = index.save(tmp_path)
    assert all(p.is_file() for p in paths)
    loaded = FingerprintIndex.load(tmp_path, index.settings)
    hashes, frames = landmarks_of(tracks[1][5 * SR : 8 * SR], index.settings)
    assert loaded.match(hashes, frames, 3.0).ranked == index.match(hashes, frames, 3.0).ranked
    assert loaded.match(hashes, frames, 3.0).ranked[0].track == 1
