"""Teachers: pretrained networks other than the workspace's model, whose outputs are computed once per file and
cached in the workspace. They serve twice:

- *beside* the model: a track's teacher vector (the mean of its blocks' outputs) joins its descriptor when a
  classifier asks for it (``classify.features: descriptors+aisfx``) and its embedding when clustering does
  (``cluster.features: embeddings+aisfx``);
- *as targets* when training distils them (``train.distil_teachers``): each training segment's target is the
  overlap-weighted mean of the outputs of the teacher blocks it covers (:meth:`TeacherOutputs.segment_targets`).

"Teacher" as in distillation (a model's *companion*, ``model.encoder``, is another thing: a second self-trained
network inside a model artefact). The only teacher today is aisfx (``embedtool.model.aisfx``: a sound-effects
network trained with labels, 512 numbers per 2.3 s block), whose strengths complement the self-supervised
model's (docs/benchmarks.md "Fusion ceiling"). It reads the audio itself at 44.1 kHz (the features artefact keeps
16 kHz log-Mels), so it costs a second decode of every file and about 100 s of CPU per audio hour: opt-in.

Layout of ``<workspace>/teachers/<name>/``::

    chunk-00000.npz   ids (the chunk's track ids), counts (blocks per track), blocks (float16, dim wide)
    chunk-00001.npz   ... one per save; written once, never changed
    meta.json         provenance (last): teacher name and version, dim, block length, counts, the chunks' checksums

Track ids are content-derived, so the cache survives re-extraction, re-training and re-export: only tracks without
outputs are computed, and what has been computed is saved as a new chunk every ``save_every_s`` seconds, so a
killed pass keeps all but its last minute and continues from there. A cache made by another teacher version or
layout is replaced, not mixed with new outputs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedtool.artefacts import (
    atomic_file,
    read_member,
    read_meta,
    recorded_checksums,
    staged_dir,
    write_meta,
)
from embedtool.errors import InputError, MissingArtefactError

KIND = "teacher-outputs"
FORMAT_VERSION = 2
TEACHERS = ("aisfx",)
TeacherProgress = Callable[[int, int], None]
_CHUNK = "chunk-{:05d}.npz"


def teacher_of(features: str) -> str | None:
    """The teacher a ``features`` setting joins ("descriptors+aisfx", "embeddings+aisfx" -> "aisfx"), or None."""
    return features.split("+", 1)[1] if "+" in features else None


def check_name(name: str) -> str:
    if name not in TEACHERS:
        raise InputError(f"Unknown teacher {name!r}: known are {', '.join(TEACHERS)}")
    return name


def teacher_network(name: str) -> Any:
    """The teacher's network, ready to run on CPU (``embed_blocks(audio)``, ``embed(audio)``)."""
    check_name(name)
    from embedtool.model.aisfx import AisfxEmbedder

    return AisfxEmbedder()


def teacher_version(name: str) -> str:
    """What a cache records of the teacher, so outputs of another version are never reused."""
    from embedtool.model import aisfx

    check_name(name)
    return aisfx.VERSION


def teacher_dim(name: str) -> int:
    from embedtool.model import aisfx

    check_name(name)
    return aisfx.DIM


def block_seconds(name: str) -> float:
    """The length of audio one teacher output describes (its blocks do not overlap)."""
    from embedtool.model import aisfx

    check_name(name)
    return aisfx.BLOCK_FRAMES * aisfx.HOP / aisfx.SAMPLE_RATE


def _decode(name: str, path: Path | str) -> np.ndarray:
    from embedtool.audio.decode import decode_file
    from embedtool.model import aisfx

    audio = decode_file(path, aisfx.SAMPLE_RATE).samples
    if audio.size == 0:
        raise InputError(f"{path}: decoded to no samples")
    return audio


def file_blocks(name: str, path: Path | str, embedder: object | None = None) -> np.ndarray:
    """The teacher's outputs of an audio file's consecutive blocks, (blocks, dim) float32."""
    model = embedder or teacher_network(name)
    return model.embed_blocks(_decode(name, path))  # type: ignore[attr-defined]


def file_vector(name: str, path: Path | str, embedder: object | None = None) -> np.ndarray:
    """One audio file's teacher vector (float32): the mean of its blocks' outputs."""
    return file_blocks(name, path, embedder).mean(axis=0)


@dataclass
class TeacherReport:
    name: str
    computed: int = 0
    reused: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # path -> why


class TeacherOutputs:
    """A teacher cache as read: every stored track's block outputs (float16, in memory)."""

    def __init__(self, name: str, ids: list[str], counts: np.ndarray, blocks: np.ndarray) -> None:
        self.name = name
        self.dim = teacher_dim(name)
        self.block_s = block_seconds(name)
        self.blocks = blocks
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._rows = {t: (int(starts[i]), int(starts[i + 1])) for i, t in enumerate(ids)}
        self._stats: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def empty(cls, name: str) -> TeacherOutputs:
        return cls(name, [], np.zeros(0, np.int64), np.zeros((0, teacher_dim(name)), np.float16))

    def __contains__(self, track_id: object) -> bool:
        return track_id in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def track_ids(self) -> list[str]:
        return list(self._rows)

    def block_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Each output dimension's mean and standard deviation over every stored block (float32): distillation
        compares standardised outputs, as a network's ReLU outputs share one large positive mean direction that
        would otherwise dominate a cosine."""
        if self._stats is None:
            blocks = self.blocks.astype(np.float32)
            mean = blocks.mean(axis=0) if len(blocks) else np.zeros(self.dim, np.float32)
            std = blocks.std(axis=0) if len(blocks) else np.ones(self.dim, np.float32)
            self._stats = mean, np.maximum(std, 1e-6)
        return self._stats

    def blocks_of(self, track_id: str) -> np.ndarray:
        start, stop = self._rows[track_id]
        return self.blocks[start:stop]

    def vectors(self, track_ids: list[str]) -> np.ndarray:
        """(len(track_ids), dim) float32: each track's mean block output; raises when some are missing."""
        missing = [t for t in track_ids if t not in self._rows]
        if missing:
            raise MissingArtefactError(
                f"{len(missing)} of {len(track_ids)} tracks have no {self.name} outputs (computed by "
                f"`embedtool classify --features descriptors+{self.name}` or `train --distil-teachers {self.name}`; "
                "a file that could not be decoded has none)"
            )
        out = np.zeros((len(track_ids), self.dim), np.float32)
        for i, t in enumerate(track_ids):
            out[i] = self.blocks_of(t).astype(np.float32).mean(axis=0)
        return out

    def segment_targets(self, track_id: str, starts_s: np.ndarray, length_s: float) -> np.ndarray:
        """(len(starts_s), dim) float32: for each segment [start, start + length) of the track, the mean of the
        outputs of the blocks it overlaps, weighted by the overlap (a segment past the last whole block takes the
        last block). All zeros when the track has no outputs."""
        if track_id not in self._rows:
            return np.zeros((len(starts_s), self.dim), np.float32)
        blocks = self.blocks_of(track_id)  # float16: only the rows a segment covers are converted
        n, b = len(blocks), self.block_s
        out = np.zeros((len(starts_s), self.dim), np.float32)
        for row, t0 in enumerate(np.asarray(starts_s, dtype=np.float64)):
            t1 = t0 + length_s
            first = min(int(t0 // b), n - 1)
            last = min(int(np.ceil(t1 / b)) - 1, n - 1)
            if last <= first:
                out[row] = blocks[first].astype(np.float32)
                continue
            edges = np.arange(first, last + 2) * b
            weights = np.minimum(edges[1:], t1) - np.maximum(edges[:-1], t0)
            weights[-1] = max(weights[-1], 0.0) + max(t1 - edges[-1], 0.0)  # the tail past the last block
            weights = np.clip(weights, 0.0, None)
            out[row] = weights @ blocks[first : last + 1].astype(np.float32) / max(weights.sum(), 1e-9)
        return out


def _current_meta(directory: Path, name: str) -> Any | None:
    """The cache's meta when it is this teacher's, of this version and layout; None otherwise (no cache yet, or one
    to be replaced)."""
    try:
        raw = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(raw, dict) or (raw.get("kind"), raw.get("format_version")) != (KIND, FORMAT_VERSION):
        return None  # another layout (the older cache of track vectors): made anew
    meta = read_meta(directory, KIND, FORMAT_VERSION)  # a damaged or hand-edited cache is an error, not replaced
    if meta.config.get("name") != name or meta.config.get("version") != teacher_version(name):
        return None
    return meta


def read_teacher_outputs(directory: Path, name: str = "aisfx") -> TeacherOutputs:
    """Everything the cache at ``directory`` holds (empty when there is none, or it is another version's)."""
    directory = Path(directory)
    check_name(name)
    meta = _current_meta(directory, name)
    if meta is None:
        return TeacherOutputs.empty(name)
    ids: list[str] = []
    counts: list[np.ndarray] = []
    blocks: list[np.ndarray] = []
    for chunk in meta.extra.get("chunks", []):
        data = read_member(meta, directory, chunk, lambda p: dict(np.load(p, allow_pickle=False)))
        ids += [str(t) for t in data["ids"]]
        counts.append(data["counts"])
        blocks.append(data["blocks"])
    if not ids:
        return TeacherOutputs.empty(name)
    return TeacherOutputs(name, ids, np.concatenate(counts), np.concatenate(blocks))


def _write_chunk(directory: Path, name: str, ids: list[str], rows: list[np.ndarray]) -> None:
    """Save one chunk, then the meta naming it (last): a kill before the meta leaves the cache as it was. Without a
    usable cache (none yet, or another version's) the folder is made anew, aside, and swapped in."""
    meta = _current_meta(directory, name)
    chunks = [] if meta is None else list(meta.extra.get("chunks", []))
    tracks = len(ids) + (0 if meta is None else int(meta.extra.get("tracks", 0)))
    config = {"name": name, "version": teacher_version(name), "dim": teacher_dim(name)}
    extra = {"tracks": tracks, "block_s": block_seconds(name)}

    def write(folder: Path, known: dict[str, Any]) -> None:
        chunk = _CHUNK.format(len(chunks))
        with atomic_file(folder / chunk) as f:
            counts = np.array([len(r) for r in rows], np.int32)
            np.savez(f, ids=np.array(ids), counts=counts, blocks=np.concatenate(rows).astype(np.float16))
        names = [*chunks, chunk]
        write_meta(folder, KIND, FORMAT_VERSION, config, extra={**extra, "chunks": names}, files=names,
                   known_checksums=known)  # fmt: skip

    if meta is None:
        with staged_dir(directory) as out:
            write(out, {})
    else:
        write(directory, recorded_checksums(directory))


def ensure_teacher_outputs(
    directory: Path,
    tracks: Mapping[str, str],
    name: str = "aisfx",
    progress: TeacherProgress | None = None,
    save_every_s: float = 60.0,
) -> TeacherReport:
    """Compute the teacher's block outputs of every track in ``tracks`` ({track id: audio path}) that the cache at
    ``directory`` lacks, saving a chunk every ``save_every_s`` seconds; files that fail are reported, not fatal."""
    directory = Path(directory)
    check_name(name)
    have = read_teacher_outputs(directory, name)
    todo = [(t, p) for t, p in tracks.items() if t not in have]
    report = TeacherReport(name, reused=len(tracks) - len(todo))
    if not todo:
        return report
    embedder = teacher_network(name)
    new_ids: list[str] = []
    new_rows: list[np.ndarray] = []
    last_save = time.monotonic()

    def flush() -> None:
        nonlocal new_ids, new_rows
        if new_rows:
            _write_chunk(directory, name, new_ids, new_rows)
            new_ids, new_rows = [], []

    for i, (track_id, path) in enumerate(todo, 1):
        try:
            new_rows.append(file_blocks(name, path, embedder))
            new_ids.append(track_id)
            report.computed += 1
        except Exception as exc:  # an unreadable or vanished file: reported, the others go on
            report.failed[str(path)] = f"{type(exc).__name__}: {exc}"
        if time.monotonic() - last_save > save_every_s:
            flush()
            last_save = time.monotonic()
        if progress is not None:
            progress(i, len(todo))
    flush()
    return report


def teacher_dir(workspace_root: Path, name: str) -> Path:
    """Where a workspace keeps the cache of teacher ``name``."""
    return Path(workspace_root) / "teachers" / check_name(name)


def load_teacher_vectors(directory: Path, track_ids: list[str], name: str = "aisfx") -> np.ndarray:
    """(len(track_ids), dim) float32 teacher vectors in ``track_ids``' order; raises when some are missing."""
    return read_teacher_outputs(Path(directory), check_name(name)).vectors(track_ids)
