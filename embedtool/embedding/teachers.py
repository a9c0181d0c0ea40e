"""Teacher vectors: one vector per track from a pretrained network other than the workspace's model, computed once
and cached beside the embeddings; joined to the track descriptors when a classifier asks for them
(``classify.features: descriptors+aisfx``) and to the track embeddings when clustering does
(``cluster.features: embeddings+aisfx``). "Teacher" as in distillation: a network whose outputs another learns
from or sits beside (a model's *companion*, ``model.encoder``, is another thing: a second self-trained network
inside a model artefact).

The only teacher today is aisfx (``embedtool.model.aisfx``: a sound-effects network trained with labels, 512-d),
whose strengths complement the self-supervised model's (evaluation suite, docs/benchmarks.md "fusion ceiling").
It reads the audio itself at 44.1 kHz (the features artefact keeps 16 kHz log-Mels), so it costs a second decode of
every file and about 100 s of CPU per audio hour on two cores: opt-in.

Layout of ``<workspace>/teachers/<name>/``::

    vectors.npy     (tracks, dim) float16, rows in tracks.json's order
    tracks.json     the track ids of the rows
    meta.json       provenance (last): teacher name and version, dim, counts

Track ids are content-derived, so the cache survives re-extraction, re-training and re-export: only tracks without
a vector are computed, in chunks saved every ``save_every_s`` seconds (a killed run keeps what it had saved and
continues from there). Rows of tracks no longer in the library are kept until the next full save drops them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedtool.artefacts import atomic_write_json, read_member, read_meta, staged_dir, write_meta
from embedtool.errors import InputError, MissingArtefactError

KIND = "teacher-vectors"
FORMAT_VERSION = 1
TEACHERS = ("aisfx",)
TeacherProgress = Callable[[int, int], None]


def teacher_of(features: str) -> str | None:
    """The teacher a ``features`` setting joins ("descriptors+aisfx", "embeddings+aisfx" -> "aisfx"), or None."""
    return features.split("+", 1)[1] if "+" in features else None


def check_name(name: str) -> str:
    if name not in TEACHERS:
        raise InputError(f"Unknown teacher {name!r}: known are {', '.join(TEACHERS)}")
    return name


def teacher_network(name: str) -> Any:
    check_name(name)
    from embedtool.model.aisfx import AisfxEmbedder

    return AisfxEmbedder()


def _version(name: str) -> str:
    from embedtool.model import aisfx

    return aisfx.VERSION


def teacher_dim(name: str) -> int:
    from embedtool.model import aisfx

    check_name(name)
    return aisfx.DIM


def file_vector(name: str, path: Path | str, embedder: object | None = None) -> np.ndarray:
    """One audio file's teacher vector (float32), decoded at the teacher's own rate."""
    from embedtool.audio.decode import decode_file
    from embedtool.model import aisfx

    model = embedder or teacher_network(name)
    audio = decode_file(path, aisfx.SAMPLE_RATE).samples
    if audio.size == 0:
        raise InputError(f"{path}: decoded to no samples")
    return model.embed(audio)  # type: ignore[attr-defined]


@dataclass
class TeacherReport:
    name: str
    computed: int = 0
    reused: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # path -> why


def _read(directory: Path, name: str) -> tuple[list[str], np.ndarray]:
    """(track ids, vectors) of a saved teacher cache; empty when there is none or it was made by another
    version of the teacher (then everything is computed anew)."""
    if not (directory / "meta.json").is_file():
        return [], np.zeros((0, teacher_dim(name)), np.float16)
    meta = read_meta(directory, KIND, FORMAT_VERSION)
    if meta.config.get("name") != name or meta.config.get("version") != _version(name):
        return [], np.zeros((0, teacher_dim(name)), np.float16)
    ids = read_member(meta, directory, "tracks.json", lambda p: json.loads(p.read_text()))
    vectors = read_member(meta, directory, "vectors.npy", np.load)
    if len(ids) != len(vectors):
        raise MissingArtefactError(f"{directory}: {len(ids)} track ids for {len(vectors)} vectors; delete the folder")
    return list(ids), vectors


def _save(directory: Path, name: str, ids: list[str], vectors: np.ndarray) -> None:
    with staged_dir(directory) as out:
        np.save(out / "vectors.npy", np.asarray(vectors, dtype=np.float16))
        atomic_write_json(out / "tracks.json", ids)
        write_meta(
            out,
            KIND,
            FORMAT_VERSION,
            {"name": name, "version": _version(name), "dim": teacher_dim(name)},
            extra={"tracks": len(ids)},
        )


def ensure_teacher_vectors(
    directory: Path,
    tracks: Mapping[str, str],
    name: str = "aisfx",
    progress: TeacherProgress | None = None,
    save_every_s: float = 60.0,
) -> TeacherReport:
    """Compute the teacher vector of every track in ``tracks`` ({track id: audio path}) that the cache at
    ``directory`` lacks, saving in chunks; files that fail are reported, not fatal."""
    directory = Path(directory)
    check_name(name)
    ids, vectors = _read(directory, name)
    have = set(ids)
    todo = [(t, p) for t, p in tracks.items() if t not in have]
    report = TeacherReport(name, reused=len(tracks) - len(todo))
    if not todo:
        return report
    embedder = teacher_network(name)
    new_ids: list[str] = []
    new_rows: list[np.ndarray] = []
    last_save = time.monotonic()

    def flush() -> None:
        nonlocal ids, vectors, new_ids, new_rows
        if new_rows:
            ids = ids + new_ids
            vectors = np.concatenate([vectors, np.stack(new_rows).astype(np.float16)])
            new_ids, new_rows = [], []
            _save(directory, name, ids, vectors)

    for i, (track_id, path) in enumerate(todo, 1):
        try:
            new_rows.append(file_vector(name, path, embedder))
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
    ids, vectors = _read(Path(directory), check_name(name))
    row = {t: i for i, t in enumerate(ids)}
    missing = [t for t in track_ids if t not in row]
    if missing:
        raise MissingArtefactError(
            f"{len(missing)} of {len(track_ids)} tracks have no {name} vector in {directory} (computed by "
            f"`embedtool classify --features descriptors+{name}`; a file that could not be decoded has none)"
        )
    return vectors[[row[t] for t in track_ids]].astype(np.float32)
