"""How a track is named, both ways: what tables print (its path relative to its library folder, and an id prefix)
and the one rule that turns any such name back into the track, for every command and the library alike.

A name is, in this order: a track id; a path (absolute, relative to the current folder, or relative to a library
folder); the end of a path (``fantasy/sad.ogg``) that only one track's path ends with; or a prefix of a track id
of at least :data:`MIN_PREFIX` characters that only one track's id starts with. A name that fits several tracks,
or an id prefix shorter than that, is an :class:`InputError` listing the candidates.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from embedtool.errors import InputError
from embedtool.tracktable import TrackTable

MIN_PREFIX = 6  # characters of a track id that name it (ids are 32+ hex digits: 6 leave collisions unlikely)
SHOWN_ID = 8  # characters of the id that tables print next to the path
LISTED = 8  # candidates an ambiguity error lists

T = TypeVar("T", bound=Mapping[str, Any])


def library_roots(features_dir: Path) -> list[str]:
    """The library folders recorded in a features artefact's ``meta.json`` ([] when it has none or cannot be
    read): what tables show paths relative to. Reads only that file (no track table)."""
    try:
        extra = json.loads((Path(features_dir) / "meta.json").read_text()).get("extra") or {}
    except (OSError, ValueError, AttributeError):
        return []
    return [str(r) for r in extra.get("roots") or []]


def relative_path(path: str | None, roots: Sequence[str] = ()) -> str:
    """``path`` relative to the (deepest) library folder holding it, '/'-separated; the last two parts (folder and
    file) when no folder holds it; '' without a path."""
    if not path:
        return ""
    holding = [r for r in roots if r and _is_under(path, r)]
    if holding:
        root = max(holding, key=len)
        return Path(os.path.relpath(path, root)).as_posix()
    return "/".join(Path(path).parts[-2:])


def display_name(track: Mapping[str, Any], roots: Sequence[str] = ()) -> str:
    """What a table prints for a track: its relative path and the start of its id, both accepted back."""
    tid = str(track["track_id"])
    rel = relative_path(track.get("path"), roots)
    return f"{rel} {tid[:SHOWN_ID]}" if rel else tid


def find_track(tracks: Sequence[T], name: str, roots: Sequence[str] = ()) -> T | None:
    """The track ``name`` names (see the module docstring), None when it names none; an :class:`InputError`
    listing the candidates when it names several or is a too-short id prefix. Scans the id and path columns
    (for a :class:`TrackTable`, in Arrow's compute kernels, with no dict per track) and reads only matching rows."""
    name = name.strip()
    if not name:
        return None
    exact = _where(tracks, "track_id", "in", [name])
    if exact:
        return tracks[exact[0]]
    # Stored paths are absolute but not resolved through symlinks (the path the user knows).
    given = Path(name).expanduser()
    candidates = [os.path.normpath(os.path.abspath(given))]
    if not given.is_absolute():
        candidates += [os.path.normpath(os.path.join(root, given)) for root in roots if root]
    by_path = [tracks[i] for i in _where(tracks, "path", "in", candidates)]
    if by_path:
        return _one(by_path, name, roots, "path")
    suffix = "/" + Path(os.path.normpath(given)).as_posix().lstrip("/")
    if not given.is_absolute() and not name.startswith(("./", "../")):
        ends = [tracks[i] for i in _where(tracks, "path", "ends", [suffix])]
        if ends:
            return _one(ends, name, roots, "end of a path")
    prefixed = [tracks[i] for i in _where(tracks, "track_id", "starts", [name.lower()])]
    if prefixed and len(name) < MIN_PREFIX:
        raise InputError(
            f"{name!r} is too short to name a track: an id prefix needs {MIN_PREFIX}+ characters "
            f"(it starts {len(prefixed)} track id(s): {_listing(prefixed, roots)})."
        )
    if prefixed:
        return _one(prefixed, name, roots, "id prefix")
    if given.exists():  # the same file reached through a symlinked folder (or a link of the same file name)
        resolved = os.path.realpath(given)
        for i in _where(tracks, "path", "ends", ["/" + given.name, "/" + os.path.basename(resolved)]):
            if os.path.realpath(tracks[i]["path"]) == resolved:  # one system call per same-named track only
                return tracks[i]
    return None


def _where(tracks: Sequence[Mapping[str, Any]], column: str, test: str, values: list[str]) -> list[int]:
    """Rows whose ``column`` is one of ``values`` (``in``), or ends or starts with one of them."""
    if isinstance(tracks, TrackTable):
        import pyarrow as pa
        import pyarrow.compute as pc

        col = tracks.table.column(column)
        if test == "in":
            mask = pc.is_in(col, value_set=pa.array(values, pa.string()))
        else:
            kernel = pc.ends_with if test == "ends" else pc.starts_with
            mask = functools.reduce(pc.or_, [kernel(col, pattern=v) for v in values])
        return np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False)).tolist()
    found = []
    for i, t in enumerate(tracks):
        value = _posix(t.get(column)) if column == "path" else str(t.get(column) or "")
        if (
            (value in values)
            if test == "in"
            else any(value.endswith(v) if test == "ends" else value.startswith(v) for v in values)
        ):
            found.append(i)
    return found


def _posix(path: str | None) -> str:
    return (path or "").replace(os.sep, "/") if os.sep != "/" else (path or "")


def _one(found: Sequence[T], name: str, roots: Sequence[str], how: str) -> T:
    if len(found) == 1:
        return found[0]
    raise InputError(
        f"{name!r} names {len(found)} tracks (as {how}): {_listing(found, roots)}; give more of the path or the id."
    )


def _listing(tracks: Sequence[Mapping[str, Any]], roots: Sequence[str]) -> str:
    shown = ", ".join(display_name(t, roots) for t in tracks[:LISTED])
    return shown + (f" and {len(tracks) - LISTED} more" if len(tracks) > LISTED else "")


def _is_under(path: str, root: str) -> bool:
    root = root.rstrip("/") + "/"
    return path.startswith(root)
