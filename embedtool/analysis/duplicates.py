"""Duplicates in a library: exact copies, near-copies (re-encodes, trimmed or gain-changed copies) and shared material
(one track holding an excerpt of another), found with the landmark fingerprints of the features.

- **exact copies** are the files ``extract`` found with the same content as a library track (the track id is the
  BLAKE2b of the file's bytes, so a copy is never a second track): they are read from the features' list of files
  not used (``errors.json``, "duplicate of ...").
- **near-copies and shared material**: every track's landmarks (the fingerprint peaks stored with the features, or
  for features made before them the log-Mel landmarks; ``indexing.fingerprint``) are looked up among every other
  track's. Hits that agree on one alignment (reference time - query time) and follow one another at most
  ``max_gap_s`` apart, at ``min_density`` aligned moments per second or more, form a *passage*: a time range in
  each track. A pair whose passages cover ``near_copy`` of both tracks' lengths is a near-copy; a pair sharing
  passages of ``min_shared_s`` or more otherwise is shared material, reported with its time ranges.

Copies are grouped (a recording and all its copies, exact or near, are one group); each shared-material pair is a
group of its own, said once for a recording and its copies. The landmarks are looked up in the index's fingerprint
files (memory-mapped, as identify reads them) when the index holds exactly the features' tracks; otherwise a table
of them is made in memory (about 10 MB per audio hour).
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedtool.analysis.options import DuplicatesOptions
from embedtool.audio.peaks import PeakSpectrum
from embedtool.indexing.fingerprint import (
    FingerprintIndex,
    FingerprintSettings,
    mel_landmarks,
    peak_landmarks,
    with_neighbour_bins,
)

if TYPE_CHECKING:
    from embedtool.features.store import FeatureStore
    from embedtool.progress import Progress

# How extract words a file whose content the library already holds (features/errors.json).
_DUPLICATE_REASON = re.compile(r"^duplicate of (?P<kept>.+) \(same content\)$")
MAX_ALIGNMENTS = 8  # alignments of one pair examined (a looped passage aligns at several offsets)


@dataclass
class Passage:
    """Material two tracks share: a time range in each (seconds) and the aligned moments that support it."""

    a_start_s: float
    a_end_s: float
    b_start_s: float
    b_end_s: float
    moments: int

    @property
    def seconds(self) -> float:
        return self.a_end_s - self.a_start_s


@dataclass
class Relation:
    """Two files and how they are related: "exact" (same bytes), "near-copy" or "shared"."""

    kind: str
    a: dict[str, Any]  # track_id, path, duration_s
    b: dict[str, Any]
    coverage_a: float  # the share of a's length the passages cover
    coverage_b: float
    offset_s: float  # b's time - a's time on the best-supported alignment
    passages: list[Passage] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["coverage_a"], out["coverage_b"] = round(self.coverage_a, 4), round(self.coverage_b, 4)
        out["offset_s"] = round(self.offset_s, 3)
        return out


@dataclass
class DuplicateGroup:
    """Copies of one recording ("copies": exact and near-copies together), or two tracks sharing material
    ("shared")."""

    group: int
    kind: str
    files: list[dict[str, Any]]  # track_id, path, duration_s
    relations: list[Relation]

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "kind": self.kind,
            "files": self.files,
            "relations": [r.to_dict() for r in self.relations],
        }


@dataclass
class DuplicatesReport:
    groups: list[DuplicateGroup]
    tracks: int  # library tracks compared
    source: str  # what the landmarks were made of: "peaks" or "mel"
    landmarks: int
    options: DuplicatesOptions
    seconds: float = 0.0
    table: str = "memory"  # where the landmarks were looked up: "memory" (made here) or "index" (its files)

    def counts(self) -> dict[str, int]:
        """Relations by kind."""
        out = {"exact": 0, "near-copy": 0, "shared": 0}
        for g in self.groups:
            for r in g.relations:
                out[r.kind] += 1
        return out

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per passage of each related pair (an exact copy: the whole file), group by group."""
        return [
            {
                "group": g.group,
                "kind": r.kind,
                "track_a": r.a["track_id"],
                "path_a": r.a["path"],
                "a_start_s": p.a_start_s,
                "a_end_s": p.a_end_s,
                "track_b": r.b["track_id"],
                "path_b": r.b["path"],
                "b_start_s": p.b_start_s,
                "b_end_s": p.b_end_s,
                "coverage_a": round(r.coverage_a, 3),
                "coverage_b": round(r.coverage_b, 3),
            }
            for g in self.groups
            for r in g.relations
            for p in r.passages
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "tracks": self.tracks,
            "source": self.source,
            "landmarks": self.landmarks,
            "table": self.table,
            "counts": self.counts(),
            "options": asdict(self.options),
            "seconds": round(self.seconds, 3),
            "groups": [g.to_dict() for g in self.groups],
        }


def find_duplicates(
    features: FeatureStore,
    options: DuplicatesOptions | None = None,
    progress: Progress | None = None,
    index: tuple[FingerprintIndex, list[str]] | None = None,
) -> DuplicatesReport:
    """Every exact copy, near-copy and shared passage among the features' tracks (see the module doc). ``index``:
    an index's landmark fingerprints (memory-mapped) and the track id of each of their track positions; when they
    hold exactly the features' tracks, made as these would be, they are read instead of a table made here, so
    memory holds one track's landmarks at a time."""
    t0 = time.perf_counter()
    options = options or DuplicatesOptions()
    source = "peaks" if features.has_peaks() else "mel"
    fp = FingerprintSettings.for_source(source)
    if source == "peaks":
        fps = PeakSpectrum(features.settings.sample_rate).frames_per_second
    else:
        fps = features.settings.frames_per_second

    def landmarks_of(track: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        if source == "peaks":
            return peak_landmarks(*features.peaks(track["track_id"]), fp)
        return mel_landmarks(np.asarray(features.mel(track["track_id"]), np.float32), fps, fp)

    table: _Landmarks | FingerprintIndex
    if index is not None and index[0].settings == fp and sorted(index[1]) == sorted(features.track_ids()):
        table, tracks, held = index[0], [features.track(tid) for tid in index[1]], "index"
        per_track = None
    else:
        tracks, held = [features.track(tid) for tid in features.track_ids()], "memory"
        per_track = []
        for i, t in enumerate(tracks):
            per_track.append(landmarks_of(t))
            if progress:
                progress("landmarks", i + 1, len(tracks))
        table = _Landmarks(per_track)
    files = [_file(t) for t in tracks]
    relations: list[Relation] = []
    for a in range(len(tracks)):
        own = per_track[a] if per_track is not None else landmarks_of(tracks[a])
        for b, offset, passages in _shared_with(a, own, table, fp, fps, options):
            relation = _relate(files[a], files[b], offset, passages, options)
            if relation is not None:
                relations.append(relation)
        if progress:
            progress("compare", a + 1, len(tracks))
    relations += _exact_copies(features, {f["path"]: f for f in files})
    return DuplicatesReport(
        _group(relations), len(tracks), source, len(table.hashes), options, time.perf_counter() - t0, held
    )


def _file(track: dict[str, Any]) -> dict[str, Any]:
    return {"track_id": track["track_id"], "path": track["path"], "duration_s": round(float(track["duration_s"]), 3)}


class _Landmarks:
    """Every track's landmarks, sorted by hash: (hash, track, frame)."""

    def __init__(self, per_track: list[tuple[np.ndarray, np.ndarray]]):
        hashes = np.concatenate([h for h, _ in per_track]) if per_track else np.zeros(0, np.uint32)
        frames = np.concatenate([f for _, f in per_track]) if per_track else np.zeros(0, np.int64)
        tracks = np.repeat(np.arange(len(per_track), dtype=np.int32), [len(h) for h, _ in per_track])
        order = np.argsort(hashes, kind="stable")
        # 12 bytes a landmark (about 10 MB per audio hour)
        self.hashes, self.tracks, self.frames = hashes[order], tracks[order], frames[order].astype(np.int32)


def _shared_with(
    a: int,
    landmarks: tuple[np.ndarray, np.ndarray],
    table: _Landmarks | FingerprintIndex,
    fp: FingerprintSettings,
    fps: float,
    options: DuplicatesOptions,
) -> list[tuple[int, float, list[Passage]]]:
    """The later tracks (b > a) that share passages with track ``a``: (b, the best alignment's offset in seconds,
    the passages)."""
    hashes, qframes = landmarks
    if len(hashes) == 0:
        return []
    lo = np.searchsorted(table.hashes, hashes, side="left")
    count = np.searchsorted(table.hashes, hashes, side="right") - lo
    use = (count > 0) & (count <= fp.max_postings)  # a hash this common (silence, a drone) says nothing
    lo, count, qframes = lo[use], count[use], qframes[use]
    if count.sum() == 0:
        return []
    rows = np.repeat(lo - np.cumsum(count) + count, count) + np.arange(count.sum())
    qf = np.repeat(qframes, count)
    other = table.tracks[rows].astype(np.int64)
    later = other > a  # each pair once
    rows, qf, other = rows[later], qf[later], other[later]
    if len(rows) == 0:
        return []
    g = fp.geometry
    offsets = table.frames[rows].astype(np.int64) - qf
    key = (other << 32) + (np.floor_divide(offsets, g.offset_bin) + (1 << 31))
    order = np.argsort(key, kind="stable")
    key, qf, offsets = key[order], qf[order], offsets[order]
    keys, first, counts = np.unique(key, return_index=True, return_counts=True)
    smoothed = with_neighbour_bins(keys, counts)
    # A passage needs min_density moments a second for min_shared_s: fewer hits on an alignment cannot make one.
    least = max(fp.min_hits, int(options.min_density * options.min_shared_s))
    candidates = np.flatnonzero(smoothed >= least)
    by_track: dict[int, list[int]] = {}
    for i in candidates[np.argsort(-smoothed[candidates], kind="stable")]:
        by_track.setdefault(int(keys[i] >> 32), []).append(int(i))
    out = []
    max_gap = max(1, round(options.max_gap_s * fps))
    for b, picks in by_track.items():
        passages: list[Passage] = []
        taken: list[int] = []
        best_offset = None
        for i in picks:
            bin_ = int(keys[i] & 0xFFFFFFFF)
            if any(abs(bin_ - t) <= 2 for t in taken):
                continue  # a neighbour of an alignment already read
            taken.append(bin_)
            start, stop = np.searchsorted(key, [keys[i] - 1, keys[i] + 2])
            found = _passages(qf[start:stop], offsets[start:stop], g.support_bin, max_gap, fps, options)
            # Music repeats itself a beat or a bar apart, so a passage also aligns, more weakly, at offsets near
            # its own: such an echo lies over a passage already found in both tracks and is dropped (the same
            # material at another place of either track is not).
            found = [p for p in found if not any(_echo(p, q) for q in passages)]
            if found and best_offset is None:
                best_offset = float(np.median(offsets[start:stop])) / fps
            passages += found
            if len(taken) >= MAX_ALIGNMENTS:
                break
        if passages:
            out.append((b, best_offset or 0.0, sorted(passages, key=lambda p: p.a_start_s)))
    return out


def _passages(
    qframes: np.ndarray,
    offsets: np.ndarray,
    support_bin: int,
    max_gap: int,
    fps: float,
    options: DuplicatesOptions,
) -> list[Passage]:
    """The runs of hits of one alignment (frames at most ``max_gap`` apart) dense and long enough to report."""
    order = np.argsort(qframes, kind="stable")
    qframes, offsets = qframes[order], offsets[order]
    breaks = np.flatnonzero(np.diff(qframes) > max_gap) + 1
    out = []
    for run_q, run_off in zip(np.split(qframes, breaks), np.split(offsets, breaks), strict=True):
        # The run's ends are where its moments are dense: chance hits on the same alignment just outside the
        # shared material (a few, a second or two apart) would otherwise stretch it.
        at = np.unique(run_q // support_bin) * support_bin
        reach = round(0.5 * fps)
        around = np.searchsorted(at, at + reach, side="right") - np.searchsorted(at, at - reach, side="left")
        dense = at[around >= options.min_density / 2]
        if len(dense) == 0:
            continue
        inside = (run_q >= dense[0]) & (run_q < dense[-1] + support_bin)
        run_q, run_off = run_q[inside], run_off[inside]
        moments = len(np.unique(run_q // support_bin))
        start, end = int(run_q[0]), int(run_q[-1]) + support_bin  # a moment's frames belong to it
        seconds = (end - start) / fps
        if seconds < options.min_shared_s or moments < options.min_density * seconds:
            continue
        shift = int(np.median(run_off))
        out.append(
            Passage(
                round(start / fps, 3),
                round(end / fps, 3),
                round(max(0, start + shift) / fps, 3),
                round(max(0, end + shift) / fps, 3),
                moments,
            )
        )
    return out


def _echo(p: Passage, q: Passage) -> bool:
    """Whether most of ``p`` lies over ``q`` in both tracks."""

    def over(a0: float, a1: float, b0: float, b1: float) -> float:
        return max(0.0, min(a1, b1) - max(a0, b0)) / max(a1 - a0, 1e-9)

    return over(p.a_start_s, p.a_end_s, q.a_start_s, q.a_end_s) > 0.5 and (
        over(p.b_start_s, p.b_end_s, q.b_start_s, q.b_end_s) > 0.5
    )


def _covered(ranges: list[tuple[float, float]]) -> float:
    """Seconds the union of ``ranges`` covers."""
    total, reach = 0.0, -np.inf
    for start, end in sorted(ranges):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def _relate(
    a: dict[str, Any], b: dict[str, Any], offset_s: float, passages: list[Passage], options: DuplicatesOptions
) -> Relation | None:
    cover_a = min(1.0, _covered([(p.a_start_s, p.a_end_s) for p in passages]) / max(a["duration_s"], 1e-9))
    cover_b = min(1.0, _covered([(p.b_start_s, p.b_end_s) for p in passages]) / max(b["duration_s"], 1e-9))
    if cover_a >= options.near_copy and cover_b >= options.near_copy:
        kind = "near-copy"
    elif max(p.seconds for p in passages) >= options.min_shared_s:
        kind = "shared"
    else:
        return None
    return Relation(kind, a, b, cover_a, cover_b, offset_s, passages)


def _exact_copies(features: FeatureStore, by_path: dict[str, dict[str, Any]]) -> list[Relation]:
    """The files extract skipped as copies of a library track (same bytes), where they still exist."""
    import json

    from embedtool.features.extract import ERRORS_FILE

    listed = features.directory / ERRORS_FILE
    try:
        entries = json.loads(listed.read_text()) if listed.is_file() else []
    except (OSError, ValueError):
        return []  # the list of skipped files is advisory: an unreadable one finds no exact copies
    out = []
    for entry in entries if isinstance(entries, list) else []:
        match = _DUPLICATE_REASON.match(str(entry.get("reason", ""))) if isinstance(entry, dict) else None
        if match is None or match["kept"] not in by_path or not Path(str(entry.get("path"))).is_file():
            continue
        kept = by_path[match["kept"]]
        copy = {**kept, "path": str(entry["path"])}
        whole = Passage(0.0, kept["duration_s"], 0.0, kept["duration_s"], 0)
        out.append(Relation("exact", kept, copy, 1.0, 1.0, 0.0, [whole]))
    return out


def _group(relations: list[Relation]) -> list[DuplicateGroup]:
    """Copies joined into groups (a recording and all its copies), each shared-material pair a group of its own;
    the largest groups first."""
    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    copies = [r for r in relations if r.kind != "shared"]
    for r in copies:
        parent[root(r.a["path"])] = root(r.b["path"])
    members: dict[str, dict[str, dict[str, Any]]] = {}
    linked: dict[str, list[Relation]] = {}
    for r in copies:
        top = root(r.a["path"])
        members.setdefault(top, {}).update({r.a["path"]: r.a, r.b["path"]: r.b})
        linked.setdefault(top, []).append(r)
    groups = [
        DuplicateGroup(0, "copies", sorted(members[top].values(), key=lambda f: f["path"]), linked[top])
        for top in members
    ]
    groups.sort(key=lambda g: (-len(g.files), g.files[0]["path"]))
    shared = [r for r in relations if r.kind == "shared"]
    shared.sort(key=lambda r: (-max(p.seconds for p in r.passages), r.a["path"], r.b["path"]))
    # A passage shared with one copy of a recording is shared with all of them: said once, for the first pair.
    said: set[tuple[str, str]] = set()
    for r in shared:
        pair = tuple(sorted((root(r.a["path"]), root(r.b["path"]))))
        if pair not in said:
            said.add(pair)  # type: ignore[arg-type]
            groups.append(DuplicateGroup(0, "shared", [r.a, r.b], [r]))
    for number, g in enumerate(groups, 1):
        g.group = number
    return groups
