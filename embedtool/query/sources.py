"""What a batch of queries names, expanded into one query each: a folder stands for every audio file under it, a
list file for its lines (each a file, folder or library track), anything else (a file, a library track's id or
path) for itself."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from embedtool.audio.discover import discover_audio
from embedtool.errors import InputError


def expand_queries(queries: Sequence[str | Path], list_file: Path | str | None = None) -> list[str]:
    """The queries in order, ``list_file``'s lines after ``queries``; a folder is replaced by the audio files under
    it (sorted by path). Raises :class:`InputError` when nothing is given, the list file is missing, or a folder
    holds no audio."""
    given = [str(q) for q in queries]
    if list_file is not None:
        list_file = Path(list_file)
        if not list_file.is_file():
            raise InputError(f"--list {list_file}: no such file")
        given += [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    if not given:
        raise InputError("No query given: name audio files, folders, library tracks, or --list FILE.")
    sources: list[str] = []
    for item in given:
        path = Path(item).expanduser()
        if path.is_dir():
            found = discover_audio([path])
            if not found:
                raise InputError(f"{item}: no audio files in this folder")
            sources += [str(f.path) for f in found]
        else:
            sources.append(item)
    return sources
