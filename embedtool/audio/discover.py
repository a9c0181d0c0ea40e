"""Finding audio files under the folders a user gives: recursive, symlink-safe, hidden files skipped."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from embedtool.errors import InputError

# What soundfile (libsndfile 1.2) or PyAV (FFmpeg) can decode; matched case-insensitively.
AUDIO_EXTENSIONS = frozenset(
    {
        ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".caf",
        ".w64", ".rf64", ".m4a", ".m4b", ".aac", ".mp4", ".alac", ".wma", ".wv", ".ape", ".mka", ".webm",
    }
)  # fmt: skip


@dataclass(frozen=True)
class FoundFile:
    path: Path  # absolute, normalised, not resolved through symlinks (the path the user knows)
    root: Path  # the folder (or file) given by the user, absolute
    relative: Path  # path relative to root ('' parts for a root that is itself a file)

    @property
    def folder_label(self) -> str | None:
        """The first folder level under the root (folder-of-folders layout); None for files directly in it."""
        return self.relative.parts[0] if len(self.relative.parts) > 1 else None


def _absolute(path: Path) -> Path:
    return Path(os.path.normpath(os.path.abspath(os.path.expanduser(str(path)))))


def discover_audio(
    roots: Iterable[Path | str],
    follow_symlinks: bool = True,
    extensions: Iterable[str] = AUDIO_EXTENSIONS,
    skipped: list[tuple[str, str]] | None = None,
) -> list[FoundFile]:
    """All audio files under ``roots`` (files may be given directly), sorted by path, each listed once.

    Hidden files and folders (name starting with '.') are skipped. Symlinked folders are followed when
    ``follow_symlinks`` is set, but a folder already visited (same device and inode) is never entered twice,
    so symlink loops end. A missing root, or one that is neither a folder nor a file, is an :class:`InputError`.
    What cannot be looked at — dangling or looping symlinks, FIFOs, sockets and devices, unreadable subfolders,
    a symlink to a folder scanned already — is appended to ``skipped`` as (path, reason), never dropped silently.
    """
    exts = {e.lower() for e in extensions}
    found: dict[Path, FoundFile] = {}
    notes = skipped if skipped is not None else []
    for given in roots:
        root = _absolute(Path(given))
        if not root.exists():
            raise InputError(f"{given}: no such file or folder")
        if root.is_file():
            if root.suffix.lower() not in exts:
                raise InputError(f"{given}: not an audio file (known extensions: {', '.join(sorted(exts))})")
            found.setdefault(root, FoundFile(root, root, Path(root.name)))
            continue
        if not root.is_dir():
            raise InputError(f"{given}: {_special_kind(root)}, not an audio file or folder")
        if not os.access(root, os.R_OK | os.X_OK):
            raise InputError(f"{given}: folder is unreadable (permission denied)")
        _walk(root, follow_symlinks, exts, found, notes)
    return sorted(found.values(), key=lambda f: str(f.path))


def _walk(
    root: Path, follow_symlinks: bool, exts: set[str], found: dict[Path, FoundFile], skipped: list[tuple[str, str]]
) -> None:
    visited: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
        except OSError as exc:
            skipped.append((str(folder), f"folder cannot be read ({exc.strerror or exc})"))
            continue
        key = (st.st_dev, st.st_ino)
        if key in visited:
            if folder.is_symlink():
                skipped.append((str(folder), "symlink to a folder scanned already (a loop, or a second path to it)"))
            continue
        visited.add(key)
        try:
            entries = list(os.scandir(folder))
        except PermissionError:
            skipped.append((str(folder), "folder is unreadable (permission denied)"))
            continue
        except OSError as exc:
            skipped.append((str(folder), f"folder cannot be read ({exc.strerror or exc})"))
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            why = _unusable(entry)
            if why is not None:
                skipped.append((str(path), why))
            elif entry.is_dir(follow_symlinks=follow_symlinks):
                stack.append(path)
            elif entry.is_file(follow_symlinks=follow_symlinks) and path.suffix.lower() in exts:
                found.setdefault(path, FoundFile(path, root, path.relative_to(root)))


def _unusable(entry: os.DirEntry) -> str | None:
    """Why a directory entry can be neither scanned nor decoded (None when it can, or is simply not audio)."""
    try:
        st = os.stat(entry.path)  # through symlinks
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if entry.is_symlink():
            return "dangling symlink (its target is missing)"
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
        return None
    return f"{_special_kind(Path(entry.path))}, not a regular file"


def _special_kind(path: Path) -> str:
    """What a path that is neither a regular file nor a folder is, in words."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return "not readable"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"
