"""Landmark fingerprints: exact re-identification of a short, noisy, re-encoded excerpt.

Embeddings answer "what sounds like this"; they are a blunt tool for "which recording is this", because a
noisy excerpt's windows land near many tracks of the same style. Audio fingerprinters (Shazam's landmarks,
audfprint, Panako, Olaf) answer it with the *positions* of spectral peaks, which survive background sound and
lossy codecs: a peak of the music stays a peak when babble is mixed under it, and an mp3 encoder keeps the
loudest components. This module does the same with peaks that cost no second decode:

1. **peaks**: time-frequency points that are the maximum of their neighbourhood and stand above the local
   background; the most prominent ``peaks_per_second`` are kept in each second, so loud and quiet passages are
   covered alike. They come from a fine linear spectrogram computed beside the features at extract time and
   stored with them (``embedtool.audio.peaks``; source "peaks"), or, for features made before that, from the
   log-Mel features themselves (``find_peaks``; source "mel", coarser: decision 0012);
2. **landmarks**: each peak paired with the next ``fan_out`` peaks within a time and band span
   (:class:`LandmarkGeometry`); a pair's hash packs (anchor band, band difference, time difference), and is
   stored with the track and the anchor's frame;
3. **matching**: every query hash is looked up; the (track, reference time - query time) pairs are counted in
   alignment bins, so only hits that agree on one alignment add up — random hash collisions scatter over all
   offsets. A track's score is its best alignment's *support*: the distinct moments of the query (about 50 ms
   each) with landmarks on it (with the neighbouring bins). Counting moments, not
   landmarks, matters: a note or chord the query shares with another recording aligns all of its own peak
   pairs at once, but only at one moment; the right recording agrees all along.

The decision (``accept``) asks for a support that grows with the query's length (``hits_per_second``, between
``min_hits`` and ``max_min_hits``) and a ``margin`` over the runner-up track: unrelated audio almost never
agrees at that many moments on one alignment. When the embeddings rank the same track first, a smaller margin
(``agreement_margin``) suffices. Each source has its own settings (``FingerprintSettings.for_source``), chosen
on the tuning corpus (music-dev, speech babble at 10 dB then mp3 at 128 kbit/s) and measured on the check corpus
(``bench/bench_identify_real.py``; docs/decisions/0010-landmark-fingerprints.md for the Mel source,
0012-fine-fingerprint-peaks.md for the peaks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.ndimage import maximum_filter, uniform_filter

from embedtool.audio.settings import PEAKS_VERSION
from embedtool.engine.base import Engine, TaskFailure
from embedtool.errors import EmbedtoolError

if TYPE_CHECKING:
    from embedtool.embedding.store import EmbeddedTrack
    from embedtool.features.store import FeatureStore
    from embedtool.progress import Progress

PEAK_TIME_FRAMES = 15  # (Mel source) neighbourhood a peak must dominate, in frames (0.15 s at a 10 ms hop)
PEAK_MEL_BANDS = 7  # ... and in Mel bands
BACKGROUND_FRAMES = 51  # the local background a peak must stand above (about half a second)
MAX_LOOKAHEAD = 24  # peaks after the anchor examined for its fan-out
FILES = ("fingerprint_hashes.npy", "fingerprint_tracks.npy", "fingerprint_frames.npy")
BYTES_PER_LANDMARK = 12  # hash, track, frame: 4 bytes each


@dataclass(frozen=True)
class LandmarkGeometry:
    """How peak pairs become hashes and how hits are binned, in the frames and bins of the peaks' spectrogram.
    A hash packs (anchor band quantised to ``hash_bands`` levels, band difference, time difference): the band
    difference takes ``df_bits`` bits (``2 * max_df`` < 2**df_bits), the time difference 6 (``max_dt // dt_step``
    <= 63)."""

    hash_bands: int
    max_df: int  # bands a pair may span
    max_dt: int  # frames a pair may span
    dt_step: int  # time differences quantised: a peak's frame jitters by one under noise
    offset_bin: int  # alignment bins of the vote, in frames
    support_bin: int  # an alignment's support: the distinct query moments (of this many frames) that agree
    df_bits: int = 6


# The stored log-Mel features (10 ms frames, 64 bands): indexes made before the fine peaks, and features without them.
MEL_GEOMETRY = LandmarkGeometry(hash_bands=64, max_df=15, max_dt=126, dt_step=2, offset_bin=4, support_bin=5)
# The fine fingerprint spectrogram (embedtool.audio.peaks: 16 ms frames, 15.6 Hz bins): about the same spans in
# time (up to 1 s apart, 48 ms moments); pairs up to 63 bins (about 1 kHz) apart, since at 31 bins (480 Hz) 1 s
# excerpts were accepted right 72% of the time against 78% (decision 0012).
PEAK_GEOMETRY = LandmarkGeometry(
    hash_bands=256, max_df=63, max_dt=63, dt_step=1, offset_bin=3, support_bin=3, df_bits=7
)
SOURCES = {"mel": MEL_GEOMETRY, "peaks": PEAK_GEOMETRY}


@dataclass(frozen=True)
class FingerprintSettings:
    peaks_per_second: int = 30
    fan_out: int = 8
    min_hits: int = 6  # distinct aligned moments a match needs at least, ...
    hits_per_second: float = 4.0  # ... more for a longer query: this many per second of it, ...
    max_min_hits: int = 20  # ... up to this many (a long recording may hold the track only in part)
    margin: float = 1.5  # and this many times the runner-up track's support,
    agreement_margin: float = 1.2  # or this many when the embeddings rank the same track first
    max_postings: int = 4000  # a hash this common (silence, a drone) says nothing and is skipped
    # what the landmarks are made of: "peaks" (the features' stored fine-spectrogram peaks) or "mel" (the
    # log-Mel features themselves; indexes made before the peaks record no source and are "mel")
    source: str = "mel"
    # the peak picking the "peaks" landmarks come from (audio.settings.PEAKS_VERSION; 1 where not recorded)
    peaks_version: int = 1

    @property
    def geometry(self) -> LandmarkGeometry:
        return SOURCES[self.source]

    @classmethod
    def for_source(cls, source: str) -> FingerprintSettings:
        """The defaults for landmarks of ``source``. The fine peaks' hashes are specific enough that chance
        alignments rarely reach 4 moments, where the Mel landmarks' reach 6, but a runner-up that does is close
        behind: a match needs 4 moments (3 per second of query), and twice the runner-up's (1.5 times where the
        embeddings rank the same track first). Chosen on the tuning corpus (music-dev, 10 dB babble + mp3, 1,320
        excerpts): 1 s excerpts 90.0% right and accepted, 3 s 97.7%, none of 320 impostor excerpts accepted
        (decision 0012)."""
        if source == "peaks":
            return cls(
                source="peaks", min_hits=4, hits_per_second=3.0, margin=2.0, agreement_margin=1.5,
                peaks_version=PEAKS_VERSION,
            )  # fmt: skip
        if source == "mel":
            return cls(source="mel")
        raise ValueError(f"unknown fingerprint source {source!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> FingerprintSettings:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in (d or {}).items() if k in known})

    def estimated_bytes(self, audio_seconds: float) -> int:
        """The index's size for this much audio (every peak anchors at most ``fan_out`` landmarks)."""
        return int(audio_seconds * self.peaks_per_second * self.fan_out * BYTES_PER_LANDMARK)


def find_peaks(mel: np.ndarray, frames_per_second: float, peaks_per_second: int) -> tuple[np.ndarray, np.ndarray]:
    """Spectral peaks of a log-Mel matrix (frames, bands): their (frames, bands), sorted by frame."""
    mel = np.asarray(mel, dtype=np.float32)
    if mel.shape[0] < 3:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    local_max = maximum_filter(mel, size=(PEAK_TIME_FRAMES, PEAK_MEL_BANDS), mode="nearest")
    background = uniform_filter(mel, size=(BACKGROUND_FRAMES, PEAK_MEL_BANDS), mode="nearest")
    prominence = mel - background
    # A peak rises above its background, and digital silence (all frames at the floor) has none.
    is_peak = (mel == local_max) & (prominence > 0.5) & (mel > mel.min() + 1.0)
    frames, bands = np.nonzero(is_peak)
    if len(frames) == 0:
        return frames, bands
    # Keep the most prominent peaks of each second: loud passages do not crowd out quiet ones.
    second = (frames / frames_per_second).astype(np.int64)
    order = np.lexsort((-prominence[frames, bands], second))
    frames, bands, second = frames[order], bands[order], second[order]
    first_of_second = np.searchsorted(second, second, side="left")
    keep = (np.arange(len(second)) - first_of_second) < peaks_per_second
    frames, bands = frames[keep], bands[keep]
    order = np.lexsort((bands, frames))
    return frames[order], bands[order]


def landmarks(
    frames: np.ndarray, bands: np.ndarray, n_bands: int, fan_out: int, geometry: LandmarkGeometry = MEL_GEOMETRY
) -> tuple[np.ndarray, np.ndarray]:
    """Peak pairs as (hashes uint32, anchor frames int64)."""
    g = geometry
    n = len(frames)
    if n < 2:
        return np.zeros(0, np.uint32), np.zeros(0, np.int64)
    look = np.arange(1, min(MAX_LOOKAHEAD, n - 1) + 1)
    target = np.arange(n)[:, None] + look[None, :]
    inside = target < n
    target = np.minimum(target, n - 1)
    dt = frames[target] - frames[:, None]
    df = bands[target] - bands[:, None]
    valid = inside & (dt > 0) & (dt <= g.max_dt) & (np.abs(df) <= g.max_df)
    valid &= np.cumsum(valid, axis=1) <= fan_out
    anchor, which = np.nonzero(valid)
    anchor_band = bands[anchor].astype(np.int64) * g.hash_bands // max(n_bands, 1)
    dt_q = dt[anchor, which] // g.dt_step
    df_q = df[anchor, which] + g.max_df
    hashes = (anchor_band.astype(np.uint32) << (g.df_bits + 6)) | (df_q.astype(np.uint32) << 6) | dt_q.astype(np.uint32)
    return hashes, frames[anchor].astype(np.int64)


def mel_landmarks(
    mel: np.ndarray, frames_per_second: float, settings: FingerprintSettings
) -> tuple[np.ndarray, np.ndarray]:
    """A log-Mel matrix's landmarks: (hashes, anchor frames)."""
    frames, bands = find_peaks(mel, frames_per_second, settings.peaks_per_second)
    return landmarks(frames, bands, mel.shape[1], settings.fan_out, MEL_GEOMETRY)


def peak_landmarks(
    frames: np.ndarray, bins: np.ndarray, settings: FingerprintSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks of fine-spectrogram peaks (``embedtool.audio.peaks``): (hashes, anchor frames)."""
    g = PEAK_GEOMETRY  # (a bin is its own hash level: n_bands = hash_bands)
    return landmarks(np.asarray(frames, np.int64), np.asarray(bins, np.int64), g.hash_bands, settings.fan_out, g)


def required_support(settings: FingerprintSettings, duration_s: float) -> int:
    """The support a match of a query this long needs (see the module doc)."""
    return int(np.clip(round(settings.hits_per_second * duration_s), settings.min_hits, settings.max_min_hits))


def accept(ranked: list[TrackHits], settings: FingerprintSettings, duration_s: float, agreed: bool = False) -> bool:
    """Enough aligned moments for the query's length, and clearly more than the runner-up track has (less clearly
    when an independent view, the embeddings, ranks the same track first: ``agreed``)."""
    if not ranked:
        return False
    runner_up = ranked[1].hits if len(ranked) > 1 else 0
    margin = min(settings.margin, settings.agreement_margin) if agreed else settings.margin
    return ranked[0].hits >= required_support(settings, duration_s) and ranked[0].hits >= margin * runner_up


def fingerprint_library(
    features: FeatureStore,
    tracks: list[EmbeddedTrack],
    settings: FingerprintSettings,
    progress: Progress | None = None,
) -> FingerprintIndex:
    """Landmarks of every track of an index's track table (in its order), from what ``settings.source`` names:
    the features' stored fine-spectrogram peaks, or their log-Mel matrices."""
    per_track = []
    for i, track in enumerate(tracks):
        per_track.append(track_landmarks(features, track, settings))
        if progress:
            progress("fingerprints", i + 1, len(tracks))
    return FingerprintIndex.build(per_track, settings)


def with_neighbour_bins(keys: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each (track, offset bin) key's count plus those of the keys one bin before and after it (sorted unique
    ``keys``): a true alignment's hits straddle bin edges."""
    smoothed = counts.copy()
    for step in (-1, 1):
        pos = np.searchsorted(keys, keys + step)
        found = (pos < len(keys)) & (keys[np.minimum(pos, len(keys) - 1)] == keys + step)
        smoothed[found] += counts[pos[found]]
    return smoothed


@dataclass
class TrackHits:
    track: int  # position in the index's track table
    hits: int  # distinct query moments (geometry.support_bin) whose landmarks agree on the best alignment
    offset_frames: int  # reference frame - query frame of that alignment


@dataclass
class FingerprintMatch:
    ranked: list[TrackHits]
    landmarks: int  # the query's landmarks
    accepted: bool


class FingerprintIndex:
    """Landmark hashes of every library track, sorted by hash, with the track and frame of each."""

    def __init__(self, hashes: np.ndarray, tracks: np.ndarray, frames: np.ndarray, settings: FingerprintSettings):
        self.hashes, self.tracks, self.frames = hashes, tracks, frames
        self.settings = settings

    @classmethod
    def build(cls, per_track: list[tuple[np.ndarray, np.ndarray]], settings: FingerprintSettings) -> FingerprintIndex:
        """From each track's (hashes, anchor frames), in the order of the index's track table."""
        hashes = np.concatenate([h for h, _ in per_track]) if per_track else np.zeros(0, np.uint32)
        frames = np.concatenate([f for _, f in per_track]) if per_track else np.zeros(0, np.int64)
        tracks = np.repeat(np.arange(len(per_track), dtype=np.int32), [len(h) for h, _ in per_track])
        order = np.argsort(hashes, kind="stable")
        return cls(hashes[order], tracks[order], frames[order].astype(np.int32), settings)

    def save(self, directory: Path) -> list[Path]:
        paths = [Path(directory) / name for name in FILES]
        for path, array in zip(paths, (self.hashes, self.tracks, self.frames), strict=True):
            np.save(path, array)
        return paths

    @classmethod
    def load(cls, directory: Path, settings: FingerprintSettings) -> FingerprintIndex:
        hashes, tracks, frames = (np.load(Path(directory) / name, mmap_mode="r") for name in FILES)
        return cls(hashes, tracks, frames, settings)

    def __len__(self) -> int:
        return len(self.hashes)

    def match(
        self,
        hashes: np.ndarray,
        frames: np.ndarray,
        duration_s: float,
        top: int = 5,
        exclude_track: int | None = None,
    ) -> FingerprintMatch:
        """Rank library tracks by landmarks that agree on one alignment with the query's (``exclude_track``: a
        track position left out, as if the library did not hold it)."""
        s = self.settings
        lo = np.searchsorted(self.hashes, hashes, side="left")
        hi = np.searchsorted(self.hashes, hashes, side="right")
        count = hi - lo
        use = (count > 0) & (count <= s.max_postings)
        lo, count, qframes = lo[use], count[use], frames[use]
        if count.sum() == 0:
            return FingerprintMatch([], len(hashes), False)
        # Every posting of every query hash: its row in the index, and the query frame it pairs with.
        rows = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(count.sum())
        offsets = np.asarray(self.frames[rows], dtype=np.int64) - np.repeat(qframes, count)
        track = np.asarray(self.tracks[rows], dtype=np.int64)
        g = s.geometry
        bins = np.floor_divide(offsets, g.offset_bin)
        key = (track << 32) + (bins + (1 << 31))
        order = np.argsort(key, kind="stable")
        key, qframe = key[order], np.repeat(qframes, count)[order]
        keys, first, counts = np.unique(key, return_index=True, return_counts=True)
        smoothed = with_neighbour_bins(keys, counts)
        best: dict[int, TrackHits] = {}
        for i in np.argsort(-smoothed, kind="stable")[: max(top * 20, 50)]:
            t = int(keys[i] >> 32)
            if t == exclude_track:
                continue
            # Support: the distinct moments of the query that agree, not the landmarks. One chord the query
            # shares with another recording aligns all its own peak pairs at once, at a single moment.
            a, b = np.searchsorted(key, [keys[i] - 1, keys[i] + 2])
            support = len(np.unique(qframe[a:b] // g.support_bin))
            if t not in best or support > best[t].hits:
                best[t] = TrackHits(t, support, (int(keys[i] & 0xFFFFFFFF) - (1 << 31)) * g.offset_bin)
        ranked = sorted(best.values(), key=lambda h: -h.hits)[:top]
        return FingerprintMatch(ranked, len(hashes), accept(ranked, s, duration_s))


# --- at any size: built in sorted blocks on disk, merged into the memory-mapped files ---------------------------

Landmarks = tuple[np.ndarray, np.ndarray, np.ndarray]  # hashes (uint32), track positions (int32), frames (int32)


def track_landmarks(
    features: FeatureStore, track: Mapping[str, Any], settings: FingerprintSettings
) -> tuple[np.ndarray, np.ndarray]:
    """One track's landmarks (hashes, anchor frames), from what ``settings.source`` names."""
    if settings.source == "peaks":
        return peak_landmarks(*features.peaks(track["track_id"]), settings)
    return mel_landmarks(features.mel(track["track_id"]), features.settings.frames_per_second, settings)


def fingerprint_library_on_disk(
    features: FeatureStore,
    tracks: Sequence[Mapping[str, Any]],
    settings: FingerprintSettings,
    directory: Path,
    block_landmarks: int,
    progress: Progress | None = None,
    positions: Sequence[int] | None = None,
    also: Sequence[Landmarks] = (),
    engine: Engine | None = None,
) -> int:
    """Write the landmarks of ``tracks`` (their positions in the index's track table: ``positions``, default
    0, 1, ...) to ``directory``'s :data:`FILES`, sorted by hash as :meth:`FingerprintIndex.build` sorts them,
    holding about ``block_landmarks`` of them in memory at a time: the tracks are cut into runs whose landmarks
    cannot exceed that (:func:`plan_blocks`), each run's landmarks sorted and written to files of their own (one
    task each: on ``engine``'s workers when one is given, else here in turn), then the blocks are merged into the
    final files by hash ranges (``also``: sorted sets merged in first, e.g. the kept landmarks of an index being
    updated). Returns how many landmarks were written."""
    directory = Path(directory)
    blocks_dir = directory / ".fingerprint-blocks"
    blocks_dir.mkdir(parents=True, exist_ok=True)
    where = list(range(len(tracks))) if positions is None else [int(p) for p in positions]
    spans = plan_blocks([float(t.get("duration_s") or 0.0) for t in tracks], settings, block_landmarks)
    tasks = [
        (at, [str(t["track_id"]) for t in tracks[first:stop]], where[first:stop])
        for at, (first, stop) in enumerate(spans)
    ]
    files: dict[int, list[str]] = {}
    done = [0]

    def finished(at: int, outcome: Any) -> None:
        if isinstance(outcome, TaskFailure):
            raise EmbedtoolError(f"fingerprints: block {at} of {len(tasks)} failed: {outcome.describe()}")
        files[at] = outcome
        done[0] += len(tasks[at][1])
        if progress:
            progress("fingerprints", done[0], len(tracks))

    if engine is None or engine.in_process:
        for at, task in enumerate(tasks):
            finished(at, landmark_block(features, *task[1:], settings, blocks_dir / f"block-{at:05d}"))
    else:
        job = {"features": str(features.directory), "settings": settings.to_dict(), "dir": str(blocks_dir)}
        engine.check_paths(readable=[features.directory], writable=[blocks_dir])
        engine.run(_landmark_block_task, tasks, finished, shared=job, setup=_open_features, threads=1)
    blocks = [*also, *(_load_block(files[at]) for at in range(len(tasks)))]
    total = merge_sorted(blocks, directory, block_landmarks)
    del blocks
    for path in blocks_dir.glob("*"):
        path.unlink()
    blocks_dir.rmdir()
    return total


def plan_blocks(
    durations: Sequence[float], settings: FingerprintSettings, block_landmarks: int
) -> list[tuple[int, int]]:
    """Consecutive runs ``[first, stop)`` of tracks whose landmarks cannot exceed ``block_landmarks`` together
    (each track at most ``settings.estimated_bytes`` of its duration; a track over it alone is a run of its own)."""
    most = np.array([settings.estimated_bytes(d) // BYTES_PER_LANDMARK for d in durations], dtype=np.int64)
    spans, first, size = [], 0, 0
    for i, n in enumerate(most):
        if i > first and size + n > block_landmarks:
            spans.append((first, i))
            first, size = i, 0
        size += int(n)
    if len(most):
        spans.append((first, len(most)))
    return spans


def landmark_block(
    features: FeatureStore, track_ids: Sequence[str], positions: Sequence[int], settings: FingerprintSettings,
    stem: Path,
) -> list[str]:  # fmt: skip
    """The landmarks of the tracks ``track_ids`` (owners ``positions``), sorted by hash (stably: track order among
    equal hashes) and saved as ``<stem>-<file>`` for each of :data:`FILES`; returns the paths."""
    found = [track_landmarks(features, {"track_id": tid}, settings) for tid in track_ids]
    hashes = np.concatenate([h for h, _ in found]) if found else np.zeros(0, np.uint32)
    frames = np.concatenate([f for _, f in found]).astype(np.int32) if found else np.zeros(0, np.int32)
    owner = np.repeat(np.asarray(positions, dtype=np.int32), [len(h) for h, _ in found])
    order = np.argsort(hashes, kind="stable")
    paths = [f"{stem}-{name}" for name in FILES]
    for path, array in zip(paths, (hashes[order], owner[order], frames[order]), strict=True):
        np.save(path, array)
    return paths


def _open_features(job: dict[str, Any]) -> dict[str, Any]:
    """A worker's context: the job with its feature store opened (once per worker)."""
    from embedtool.features.store import FeatureStore

    return {**job, "store": FeatureStore(Path(job["features"]))}


def _landmark_block_task(context: dict[str, Any], task: tuple[int, list[str], list[int]]) -> list[str]:
    at, track_ids, positions = task
    settings = FingerprintSettings.from_dict(context["settings"])
    return landmark_block(context["store"], track_ids, positions, settings, Path(context["dir"]) / f"block-{at:05d}")


def _load_block(paths: Sequence[str]) -> Landmarks:
    hashes, tracks, frames = (np.load(p, mmap_mode="r") for p in paths)
    return hashes, tracks, frames


def merge_sorted(blocks: Sequence[Landmarks], directory: Path, chunk: int) -> int:
    """Merge ``blocks`` (each sorted by hash; among equal hashes the earlier block first, as a stable sort of
    their concatenation orders them) into ``directory``'s :data:`FILES`, written through memory maps a hash range
    at a time: memory holds about ``chunk`` landmarks. Returns how many were written."""
    from numpy.lib.format import open_memmap

    total = sum(len(b[0]) for b in blocks)
    outputs = [
        open_memmap(Path(directory) / name, mode="w+", dtype=dtype, shape=(total,))
        for name, dtype in zip(FILES, (np.uint32, np.int32, np.int32), strict=True)
    ]
    # hash ranges of about ``chunk`` landmarks, from the blocks' own quantiles
    ranges = max(1, -(-total // max(1, chunk)))
    sample = np.concatenate(
        [
            np.asarray(b[0][np.linspace(0, len(b[0]) - 1, min(len(b[0]), 4 * ranges + 1)).astype(np.int64)])
            for b in blocks
            if len(b[0])
        ]
        or [np.zeros(0, np.uint32)]
    )
    edges = (
        np.unique(np.quantile(sample.astype(np.float64), np.linspace(0, 1, ranges + 1)[1:-1]).astype(np.int64))
        if len(sample)
        else np.zeros(0, np.int64)
    )
    bounds = [0, *edges.tolist(), 2**32]
    starts = [0] * len(blocks)
    written = 0
    for hi in bounds[1:]:
        parts = []
        for b, block in enumerate(blocks):
            stop = int(np.searchsorted(block[0], hi, side="left")) if hi < 2**32 else len(block[0])
            parts.append(tuple(np.asarray(a[starts[b] : stop]) for a in block))
            starts[b] = stop
        hashes = np.concatenate([p[0] for p in parts])
        if not len(hashes):
            continue
        order = np.argsort(hashes, kind="stable")
        n = len(hashes)
        for out, column in zip(outputs, range(3), strict=True):
            out[written : written + n] = np.concatenate([p[column] for p in parts])[order]
        written += n
    for out in outputs:
        out.flush()
    del outputs
    return written
