"""Queries end to end: identify noisy re-encoded excerpts, similar mode, stable ids, errors, and the CLI.

One tiny model (24 training steps) is trained for the module on generated melodies (distinct note sequences
over a broadband bed) plus the bundled fixture snares; every test then works on a copy or reads only. A model
this small is only robust to mild noise, so excerpts get noise at 40 dB SNR (bench/bench_reid.py measures a
trained model at 10 dB).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from factories import (
    SAMPLE_AUDIO,
    TINY_CHAIN_TRAIN,
    copy_workspace,
    extract_features,
    run_cli,
    tone,
    write_corrupt,
    write_signal,
    write_tone,
)

from embedtool import pipeline
from embedtool.artefacts import read_meta
from embedtool.audio.decode import decode_file
from embedtool.embedding.store import EmbeddingStore
from embedtool.errors import ConfigError, IncompatibleArtefactError, InputError, MissingArtefactError
from embedtool.features.store import FeatureStore, commit
from embedtool.indexing.options import IndexOptions
from embedtool.indexing.store import IndexStore
from embedtool.query.calibrate import add_mel_background, calibrate_threshold, youden_threshold
from embedtool.query.decision import MAX_CONFIDENCE, match_confidence, threshold_for
from embedtool.query.options import NeighbourOptions
from embedtool.query.searcher import Searcher
from embedtool.query.voting import vote
from embedtool.training.trainer import train
from embedtool.workspace import Workspace

SR = 22050
MELODIES = 6
SECONDS = 8.0

INDEX = IndexOptions(calibration_snr_db=40.0, eval_queries=50)
SNR_DB = 40.0


def melody(seed: int, seconds: float = SECONDS) -> np.ndarray:
    """A random note sequence (0.15-0.5 s notes over four octaves) over a broadband noise bed."""
    rng = np.random.default_rng(seed)
    notes, total = [], 0
    while total < seconds * SR:
        note = tone(110 * 2 ** (rng.integers(0, 48) / 12), rng.uniform(0.15, 0.5), SR,
                    amplitude=rng.uniform(0.2, 0.6), harmonics=int(rng.integers(1, 5)))  # fmt: skip
        notes.append(note)
        total += len(note)
    x = np.concatenate(notes)[: int(seconds * SR)]
    walk = np.cumsum(rng.standard_normal(len(x)))
    bed = np.diff(walk, prepend=0) * 0.3 + (walk - np.convolve(walk, np.ones(64) / 64, "same")) * 0.05
    return (x + 0.15 * bed / (np.abs(bed).max() + 1e-9)).astype(np.float32)


def noisy_mp3_excerpt(path: Path, out: Path, start_s: float, seconds: float, snr_db: float, seed: int) -> Path:
    """Crop ``path`` at ``start_s``, add white noise at ``snr_db`` and re-encode to mp3."""
    rng = np.random.default_rng(seed)
    audio = decode_file(path, SR).samples
    x = audio[int(start_s * SR) : int((start_s + seconds) * SR)]
    x = x + rng.standard_normal(len(x)).astype(np.float32) * np.sqrt(np.mean(x**2) / 10 ** (snr_db / 10))
    return write_signal(out, x, SR, "mp3")


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """Its own library (not the session's trained_workspace): the tests cut excerpts from these melodies."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("library")
    corpus = root / "corpus"
    for i in range(MELODIES):
        write_signal(corpus / "melody" / f"m{i}.wav", melody(i), SR)
    for folder in ("snare",):
        shutil.copytree(SAMPLE_AUDIO / folder, corpus / folder)
    ws = Workspace(root / "ws")
    extract_features(corpus, ws.features)
    train(ws.features, ws.split, ws.model, TINY_CHAIN_TRAIN)
    pipeline.index(ws, INDEX)
    return ws


@pytest.fixture(scope="module")
def searcher(library: Workspace) -> Searcher:
    return Searcher.open(library)


def _path_of(searcher: Searcher, name: str) -> tuple[str, Path]:
    for t in searcher.tables.tracks:
        if Path(t["path"]).name == name:
            return t["track_id"], Path(t["path"])
    raise AssertionError(f"{name} not in the library")


# --- identify ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, start", [("m1.wav", 2.55), ("m3.wav", 0.5), ("m4.wav", 4.02)])
def test_identify_noisy_mp3_excerpt_with_time_range(searcher: Searcher, tmp_path: Path, name: str, start: float):
    track_id, path = _path_of(searcher, name)
    query = noisy_mp3_excerpt(path, tmp_path / "q.mp3", start, 3.0, snr_db=SNR_DB, seed=int(start * 100))
    result = searcher.query_file(query, mode="identify", k=3)
    best = result.best
    assert best is not None and best.track_id == track_id and not result.no_match
    assert result.query.library_track is None  # an excerpt is not the library file itself
    # The matched reference range is where the excerpt was cut (within a hop and the mp3 codec's delay).
    assert best.ref_start_s == pytest.approx(start, abs=0.5)
    assert best.ref_end_s == pytest.approx(start + 3.0, abs=0.5)
    assert best.windows >= result.query.windows - 2
    assert best.score > result.matches[1].score


def test_identify_says_no_match_for_audio_outside_the_library(searcher: Searcher, tmp_path: Path) -> None:
    unseen = write_signal(tmp_path / "unseen.wav", melody(90, seconds=3.0), SR)  # a recording the library lacks
    result = searcher.query_file(unseen, mode="identify", k=1)
    assert result.no_match and result.threshold is not None and result.confidence is not None
    assert result.confidence < result.threshold and len(result.matches) == 1  # the runner-up is not listed
    assert result.confidence == pytest.approx(match_confidence(result.best.score, _runner_up(searcher, unseen)))


def _runner_up(searcher: Searcher, query: Path) -> float:
    return searcher.query_file(query, mode="identify", k=2).matches[1].score


def test_calibration_reads_the_confidence_or_the_old_best_score(library: Workspace, searcher: Searcher) -> None:
    from embedtool.features.store import FeatureStore

    features = FeatureStore(library.features)
    new = calibrate_threshold(searcher, features, 6, 3.0, 40.0, 0)
    old = calibrate_threshold(searcher, features, 6, 3.0, 40.0, 0, statistic="best_score")
    assert new["statistic"] == "confidence" and new["calibrated"] and new["threshold"] > 1.0  # a ratio of distances
    assert old["statistic"] == "best_score" and 0.0 < old["threshold"] < 1.0  # a cosine score
    assert new["matching"]["mean"] > new["non_matching"]["mean"]
    with pytest.raises(ValueError, match="unknown identify statistic"):
        calibrate_threshold(searcher, features, 6, statistic="loudness")


def test_calibration_mixes_other_library_tracks_in_or_mel_noise(library: Workspace, searcher: Searcher) -> None:
    from embedtool.features.store import FeatureStore

    features = FeatureStore(library.features)
    settings = searcher.settings
    ids = [t["track_id"] for t in features.tracks if t["frames"] >= 200]  # two melodies
    a, b = (np.asarray(features.mel(t)[:200], np.float32) for t in ids[:2])
    mixed = add_mel_background(a, b, 10.0, settings.log_offset, settings.power)

    def power(m: np.ndarray) -> np.ndarray:
        return np.maximum(np.exp(m.astype(np.float64)) - settings.log_offset, 0.0) ** 2

    added = power(mixed) - power(a)
    assert added.mean() == pytest.approx(power(a).mean() / 10, rel=1e-3)  # 10 dB below the excerpt
    assert np.corrcoef(added.ravel(), power(b).ravel())[0, 1] > 0.99  # shaped like the other track, not noise
    library_bg = calibrate_threshold(searcher, features, 6, 3.0, 10.0, 0)
    noise_bg = calibrate_threshold(searcher, features, 6, 3.0, 10.0, 0, background="noise")
    assert library_bg["background"] == "library" and noise_bg["background"] == "noise"
    assert library_bg["calibrated"] and noise_bg["calibrated"]
    assert library_bg["matching"] != noise_bg["matching"]  # another degradation, other confidences
    with pytest.raises(ConfigError, match="calibration_background must be library or noise"):
        IndexOptions(calibration_background="pink").validate()


def test_identify_thresholds_are_calibrated_per_length_and_interpolated(searcher: Searcher, tmp_path: Path) -> None:
    by_length = searcher.thresholds_by_length
    assert by_length is not None and [e["excerpt_s"] for e in by_length] == [1.0, 3.0, 10.0]
    track_id, path = _path_of(searcher, "m1.wav")
    for seconds in (1.0, 2.0):
        query = noisy_mp3_excerpt(path, tmp_path / f"q{seconds}.mp3", 1.0, seconds, snr_db=SNR_DB, seed=1)
        result = searcher.query_file(query, mode="identify")
        expected = threshold_for(by_length, result.query.duration_s)
        assert result.threshold == pytest.approx(expected)
    by = [
        {"excerpt_s": 1.0, "threshold": 1.5},
        {"excerpt_s": 3.0, "threshold": 2.5},
        {"excerpt_s": 10.0, "threshold": 2.0},
    ]
    assert threshold_for(by, 1.0) == 1.5 and threshold_for(by, 3.0) == 2.5 and threshold_for(by, 10.0) == 2.0
    assert threshold_for(by, 3.0**0.5) == pytest.approx(2.0)  # halfway between 1 and 3 s in log-duration
    assert threshold_for(by, 0.2) == 1.5 and threshold_for(by, 60.0) == 2.0  # the nearest outside


def _with_background(path: Path, out: Path, start: float, seconds: float, background: np.ndarray, db: float) -> Path:
    """An excerpt of ``path`` with ``background`` mixed in ``db`` below it, as mp3."""
    x = decode_file(path, SR).samples[int(start * SR) : int((start + seconds) * SR)]
    other = background[: len(x)]
    mixed = x + other * np.sqrt(np.mean(x**2) / np.mean(other**2) / 10 ** (db / 10))
    return write_signal(out, mixed / np.abs(mixed).max(), SR, "mp3")


def test_identify_by_fingerprint_names_the_track_and_where_the_excerpt_was_cut(
    library: Workspace, searcher: Searcher, tmp_path: Path
) -> None:
    """An mp3 excerpt: the landmarks of the fine peaks stored at extract time align on its track and place it to the
    frame. (Robustness to background sound is tested on peak-rich signals in test_fingerprint.py and measured on
    real music by bench_identify_real: this fixture's flat tones over a noise bed hold few stable fine peaks, where
    the Mel landmarks keep theirs: the Mel source's test below mixes another recording in 6 dB down.)"""
    meta = IndexStore(library.index).fingerprints
    assert meta["built"] and meta["landmarks"] > 1000 and searcher.fingerprints is not None
    assert meta["settings"]["source"] == "peaks"  # the fine peaks stored at extract time
    track_id, path = _path_of(searcher, "m4.wav")
    start, seconds = 3.37, 3.0
    x = decode_file(path, SR).samples[int(start * SR) : int((start + seconds) * SR)]
    query = write_signal(tmp_path / "q.mp3", x, SR, "mp3")
    result = searcher.query_file(query, mode="identify", k=3)
    assert result.decided_by == "fingerprint" and not result.no_match
    assert result.best.track_id == track_id and result.fingerprint_hits >= 6
    assert result.best.ref_start_s == pytest.approx(start, abs=0.1)  # mp3's encoder delay is a few ms
    assert [m.rank for m in result.matches] == list(range(1, len(result.matches) + 1))
    assert len({m.track_id for m in result.matches}) == len(result.matches)
    assert result.to_dict()["decided_by"] == "fingerprint"
    # Samples in memory compute their peaks the same way
    from_samples = searcher.query_samples(decode_file(query, SR).samples, SR, mode="identify", k=3)
    assert from_samples.decided_by == "fingerprint" and from_samples.best.track_id == track_id
    # A library track queried by id reads its stored peaks
    by_id = searcher.query_track(track_id, mode="identify", k=3)
    assert by_id.decided_by == "fingerprint" and by_id.best.track_id == track_id
    # The same query with the track left out (as if the library did not hold it): no fingerprint answer.
    alone = searcher.query_file(query, mode="identify", k=3, exclude_track=track_id)
    assert alone.decided_by == "embedding" and track_id not in [m.track_id for m in alone.matches]


def test_features_from_before_the_peaks_fingerprint_their_log_mel_until_extract_remakes_them(
    library: Workspace, tmp_path: Path
) -> None:
    ws = copy_workspace(library, tmp_path / "ws")
    features = FeatureStore(ws.features)
    old_records = [{k: v for k, v in t.items() if k not in ("peaks", "peaks_offset")} for t in features.tracks]
    extra = {k: v for k, v in features.meta.extra.items() if k not in ("table", "tracks")}
    commit(ws.features, old_records, features.settings, extra=extra)
    assert not FeatureStore(ws.features).has_peaks()
    pipeline.index(ws, IndexOptions(calibration_snr_db=40.0, eval_queries=50))
    assert IndexStore(ws.index).fingerprints["settings"]["source"] == "mel"
    searcher = Searcher.open(ws)
    track_id, path = _path_of(searcher, "m4.wav")
    query = noisy_mp3_excerpt(path, tmp_path / "q.mp3", 2.0, 3.0, snr_db=SNR_DB, seed=3)
    result = searcher.query_file(query, mode="identify")
    assert result.decided_by == "fingerprint" and result.best.track_id == track_id
    # Another recording 6 dB down: the Mel landmarks hold (the fine peaks give way to tonal interference this
    # strong sooner; decision 0012)
    other = melody(77, seconds=3.0)
    query = _with_background(path, tmp_path / "m.mp3", 3.37, 3.0, other, db=6.0)
    result = searcher.query_file(query, mode="identify")
    assert result.decided_by == "fingerprint" and result.best.track_id == track_id
    assert result.best.ref_start_s == pytest.approx(3.37, abs=0.1)
    report = pipeline.extract(ws, [Path(r) for r in features.roots])
    assert "before fingerprint peaks" in (report.full_rebuild_reason or "")
    assert FeatureStore(ws.features).has_peaks()


def _assert_identified_by_the_embeddings_alone(ws: Workspace, name: str, tmp_path: Path) -> None:
    """The index's fingerprints are not asked; a noisy mp3 excerpt of ``name`` is still named, by the embeddings."""
    searcher = Searcher.open(ws)
    assert searcher.fingerprints is None
    track_id, path = _path_of(searcher, name)
    query = noisy_mp3_excerpt(path, tmp_path / "q.mp3", 2.0, 3.0, snr_db=SNR_DB, seed=3)
    result = searcher.query_file(query, mode="identify")
    assert result.decided_by == "embedding" and result.best.track_id == track_id


def _set_meta(path: Path, edit: Callable[[dict], None]) -> None:
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


def test_peaks_another_version_picked_are_neither_matched_nor_reused(library: Workspace, tmp_path: Path) -> None:
    """A later peak picking (audio.settings.PEAKS_VERSION) would not meet peaks stored by an earlier one: the index
    of those peaks leaves its fingerprints unasked, `index` falls back to Mel landmarks, `extract` re-makes them."""
    ws = copy_workspace(library, tmp_path / "ws")
    assert FeatureStore(ws.features).peaks_version == 1 and FeatureStore(ws.features).has_peaks()
    assert IndexStore(ws.index).fingerprints["settings"]["peaks_version"] == 1
    # The index's fingerprints were made of other peaks: identify answers by the embeddings alone.
    _set_meta(ws.index / "meta.json", lambda m: m["extra"]["fingerprints"]["settings"].update(peaks_version=0))
    _assert_identified_by_the_embeddings_alone(ws, "m4.wav", tmp_path)
    # The features' peaks too: not peaks of this version, so the index is made of the log-Mels ...
    _set_meta(ws.features / "meta.json", lambda m: m["extra"].update(peaks_version=0))
    features = FeatureStore(ws.features)
    assert features.peaks_version == 0 and not features.has_peaks()
    pipeline.index(ws, IndexOptions(calibration_snr_db=40.0, eval_queries=50))
    assert IndexStore(ws.index).fingerprints["settings"]["source"] == "mel"
    # ... until extract re-makes the features, saying why.
    report = pipeline.extract(ws, [Path(r) for r in features.roots])
    assert "picked by another version (v0, now v1)" in (report.full_rebuild_reason or "")
    assert FeatureStore(ws.features).has_peaks() and FeatureStore(ws.features).peaks_version == 1


def test_index_without_fingerprints_answers_by_embeddings(library: Workspace, tmp_path: Path) -> None:
    ws = copy_workspace(library, tmp_path / "ws")
    pipeline.index(ws, IndexOptions(calibration_snr_db=40.0, eval_queries=50, fingerprints="off"))
    facts = read_meta(ws.index, "index").extra["fingerprints"]
    assert facts == {"built": False, "reason": "index.fingerprints is off"}
    assert not list(ws.index.glob("fingerprint_*"))
    _assert_identified_by_the_embeddings_alone(ws, "m1.wav", tmp_path)
    with pytest.raises(ConfigError, match="index.fingerprints must be auto, on or off"):
        IndexOptions(fingerprints="yes").validate()


def test_match_confidence_is_the_ratio_of_distances() -> None:
    assert match_confidence(0.9, 0.8) == pytest.approx(2.0)  # the best track twice as near as the runner-up
    assert match_confidence(0.6, 0.6) == pytest.approx(1.0)
    assert match_confidence(0.5, None) == pytest.approx(2.0)  # a one-track library: the runner-up is "nothing"
    assert match_confidence(1.0, 0.0) == MAX_CONFIDENCE and match_confidence(1.0, 0.5) == 500  # exact copies


def test_an_index_from_before_the_confidence_rule_keeps_its_best_score_threshold(
    searcher: Searcher, tmp_path: Path
) -> None:
    track_id, path = _path_of(searcher, "m2.wav")
    query = noisy_mp3_excerpt(path, tmp_path / "q.mp3", 1.0, 3.0, snr_db=SNR_DB, seed=5)
    parts = (searcher.encoder, searcher.segment_index, searcher.tables, searcher.hop_seconds)
    old = Searcher(*parts, 0.999, threshold_statistic="best_score").query_file(query, mode="identify")
    assert old.best is not None and old.best.track_id == track_id and old.best.score < 0.999 and old.no_match
    new = Searcher(*parts, 0.999).query_file(query, mode="identify")  # 0.999 as a confidence: a low bar
    assert new.best is not None and new.best.track_id == track_id and not new.no_match


# --- similar --------------------------------------------------------------------------------------------------


def test_similar_leaves_the_query_track_out(searcher: Searcher, tmp_path: Path) -> None:
    track_id, path = _path_of(searcher, "m2.wav")
    result = searcher.query_file(path, mode="similar", k=20)
    assert result.query.library_track == track_id and result.excluded_track == track_id
    assert track_id not in [m.track_id for m in result.matches] and result.matches
    kept = searcher.query_file(path, mode="similar", k=3, include_self=True)
    assert kept.best.track_id == track_id and kept.best.score > 0.9 and kept.best.windows >= kept.query.windows - 2
    # A copy elsewhere is recognised by content, not path.
    copy = shutil.copy(path, tmp_path / "renamed.wav")
    moved = searcher.query_file(copy, mode="similar", k=20)
    assert moved.query.library_track == track_id and track_id not in [m.track_id for m in moved.matches]
    # A library track by id prefix uses its stored features.
    by_id = searcher.query_track(track_id[:8], mode="similar", k=20)
    assert by_id.excluded_track == track_id and [m.track_id for m in by_id.matches] == [
        m.track_id for m in result.matches
    ]


def test_segment_hits_report_window_times(searcher: Searcher) -> None:
    track_id, path = _path_of(searcher, "m0.wav")
    result = searcher.query_file(path, mode="similar", include_self=True, segments=True)
    assert len(result.segments) == result.query.windows
    assert all(h.segment_id.startswith(h.track_id + "@") for h in result.segments)
    assert result.segments[0].query_start_s == 0.0


# --- stable ids and incremental updates ---------------------------------------------------------------------------


def test_long_queries_are_sampled_on_the_library_grid(searcher: Searcher) -> None:
    from embedtool.query.searcher import MAX_QUERY_WINDOWS

    fps = searcher.settings.frames_per_second
    library_hop = searcher.settings.seconds_to_frames(searcher.hop_seconds)
    hour = searcher.window_starts(int(3600 * fps))
    assert len(hour) <= MAX_QUERY_WINDOWS + 1  # + the window that ends at the last frame
    steps = np.diff(hour[:-1])
    assert len(set(steps.tolist())) == 1 and steps[0] % library_hop == 0  # a whole multiple of the library hop
    minute = searcher.window_starts(int(60 * fps))
    assert np.all(np.diff(minute[:-1]) == library_hop)  # below the cap: every library hop


def test_ids_are_stable_across_reruns_and_additions(library: Workspace, tmp_path: Path) -> None:
    ws = copy_workspace(library, tmp_path / "ws")
    before = EmbeddingStore(ws.embeddings)
    old_ids = before.segment_ids()
    again = pipeline.index(ws, INDEX)
    assert again.export is None  # embeddings current: no export
    corpus = Path(before.tracks[0]["path"]).parents[1]
    added = tmp_path / "extra"
    write_signal(added / "melody" / "m9.wav", melody(9), SR)
    extract_features([corpus, added], ws.features)
    grown = pipeline.index(ws, INDEX)
    assert grown.export is not None and grown.export["mode"] == "incremental"
    assert grown.export["embedded_tracks"] == 1 and grown.export["reused_tracks"] == len(before)
    after = EmbeddingStore(ws.embeddings)
    assert set(old_ids) < set(after.segment_ids())
    searcher = Searcher.open(ws)
    track_id, path = _path_of(searcher, "m0.wav")
    assert track_id == before.tracks[[t["path"] for t in before.tracks].index(str(path))]["track_id"]
    result = searcher.query_file(path, mode="similar", include_self=True, k=1)
    assert result.best.track_id == track_id


def test_new_model_is_refused_then_fully_re_exported(library: Workspace, tmp_path: Path) -> None:
    ws = copy_workspace(library, tmp_path / "ws")
    shutil.rmtree(ws.model)
    train(ws.features, ws.split, ws.model, TINY_CHAIN_TRAIN.replace(seed=1, epochs=1, steps_per_epoch=2))
    with pytest.raises(IncompatibleArtefactError, match="embedtool index"):
        Searcher.open(ws)
    report = pipeline.index(ws, INDEX)
    assert report.export["mode"] == "full" and "model changed" in report.export["reason"]
    assert read_meta(ws.index, "index").inputs["model"] == read_meta(ws.model, "model").fingerprint
    Searcher.open(ws)


# --- errors -----------------------------------------------------------------------------------------------------


def test_errors_name_the_problem(library: Workspace, searcher: Searcher, tmp_path: Path) -> None:
    with pytest.raises(MissingArtefactError, match="embedtool index"):
        Searcher.open(Workspace(tmp_path / "empty"))
    with pytest.raises(InputError, match="not a recognised audio file|Cannot read"):
        searcher.query_file(write_corrupt(tmp_path / "bad.mp3"))
    with pytest.raises(InputError, match="shortest usable excerpt"):
        searcher.query_file(write_tone(tmp_path / "short.wav", seconds=0.05, sr=SR))
    with pytest.raises(InputError, match="not found"):
        searcher.query_file(tmp_path / "missing.wav")
    with pytest.raises(InputError, match="No library track"):
        searcher.query_track("zzzzzzzz")


# --- pure logic -------------------------------------------------------------------------------------------------


def test_voting_prefers_consistent_offsets() -> None:
    # Track 0: four windows agree on offset +2 s. Track 1: higher single scores at scattered offsets.
    starts = np.array([0.0, 0.5, 1.0, 1.5])
    row_track = np.array([0] * 10 + [1] * 10)
    row_start = np.concatenate([np.arange(10) * 0.5, np.arange(10) * 0.5])
    rows = np.array([[4, 10], [5, 17], [6, 11], [7, 19]])
    scores = np.array([[0.8, 0.95], [0.8, 0.95], [0.8, 0.95], [0.8, 0.95]], dtype=np.float32)
    ident = vote(scores, rows, starts, 1.0, 2.5, row_track, row_start, row_start + 1.0, 0.5, "identify", 0)
    assert ident[0].track == 0 and ident[0].windows == 4 and ident[0].offset_s == pytest.approx(2.0)
    assert (ident[0].ref_start_s, ident[0].ref_end_s) == (2.0, 4.5)
    assert (ident[0].query_start_s, ident[0].query_end_s) == (0.0, 2.5)
    similar = vote(scores, rows, starts, 1.0, 2.5, row_track, row_start, row_start + 1.0, 0.5, "similar", 0)
    assert similar[0].track == 1 and similar[0].score == pytest.approx(0.95)


def test_youden_threshold_separates_scores() -> None:
    t, tar, far = youden_threshold(np.array([0.9, 0.95, 0.85]), np.array([0.5, 0.6, 0.7]))
    assert 0.7 < t < 0.85 and tar == 1.0 and far == 0.0


def test_options_validate() -> None:
    from embedtool.errors import ConfigError

    with pytest.raises(ConfigError, match="neighbours.mode"):
        NeighbourOptions(mode="fuzzy").validate()


# --- CLI --------------------------------------------------------------------------------------------------------


def test_cli_identify_json_and_no_match_exit_code(library: Workspace, searcher: Searcher, tmp_path: Path) -> None:
    track_id, path = _path_of(searcher, "m5.wav")
    query = noisy_mp3_excerpt(path, tmp_path / "q.mp3", 1.2, 3.0, snr_db=SNR_DB, seed=3)
    ws = ["--workspace", str(library.root)]
    result = run_cli(*ws, "neighbours", query, "--mode", "identify", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["matches"][0]["track_id"] == track_id and data["no_match"] is False
    unseen = write_signal(tmp_path / "unseen.wav", melody(91, seconds=3.0), SR)
    result = run_cli(*ws, "neighbours", unseen, "--mode", "identify")
    assert result.exit_code == 3 and "no match: confidence" in result.output
    result = run_cli(*ws, "neighbours", track_id[:10], "-k", "2")
    assert result.exit_code == 0 and "left out" in result.stdout
    result = run_cli(*ws, "neighbours", "no-such-thing")
    assert result.exit_code == 1 and "neither an audio file nor a library track" in result.output
    result = run_cli("--workspace", tmp_path / "none", "neighbours", query)
    assert result.exit_code == 4 and "does not exist" in result.output  # the mistyped -w, not "run index"
    assert "embedtool index" not in result.output


def test_cli_embed_and_index(library: Workspace, tmp_path: Path) -> None:
    ws = copy_workspace(library, tmp_path / "ws").root
    result = run_cli("--workspace", ws, "embed", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mode"] == "unchanged"
    result = run_cli("--workspace", ws, "embed", "--full")
    assert result.exit_code == 0 and "full export" in result.stdout
    result = run_cli("--workspace", ws, "index", "--kind", "hnsw", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["segments"]["kind"] == "hnsw" and data["segments"]["bytes"] > 0
    assert read_meta(ws / "index", "index").extra["segments"]["kind"] == "hnsw"
    result = run_cli("--workspace", ws, "index", "--kind", "annoy")
    assert result.exit_code == 2 and "'annoy' is not one of" in " ".join(result.output.split())
