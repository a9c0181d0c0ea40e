"""Finding audio files under the folders a user gives: recursive, symlink-safe, hidden files skipped."""

from __future__ import annotations

import os
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


def is_audio_file(path: Path, extensions: Iterable[str] = AUDIO_EXTENSIONS) -> bool:
    return path.suffix.lower() in set(extensions)


def discover_audio(
    roots: Iterable[Path | str],
    follow_symlinks: bool = True,
    extensions: Iterable[str] = AUDIO_EXTENSIONS,
) -> list[FoundFile]:
    """All audio files under ``roots`` (files may be given directly), sorted by path, each listed once.

    Hidden files and folders (name starting with '.') are skipped. Symlinked folders are followed when
    ``follow_symlinks`` is set, but a folder already visited (same device and inode) is never entered twice,
    so symlink loops end. A missing root is an :class:`InputError`.
    """
    exts = {e.lower() for e in extensions}
    found: dict[Path, FoundFile] = {}
    for given in roots:
        root = _absolute(Path(given))
        if not root.exists():
            raise InputError(f"{given}: no such file or folder")
        if root.is_file():
            if root.suffix.lower() not in exts:
                raise InputError(f"{given}: not an audio file (known extensions: {', '.join(sorted(exts))})")
            found.setdefault(root, FoundFile(root, root, Path(root.name)))
            continue
        if not os.access(root, os.R_OK | os.X_OK):
            raise InputError(f"{given}: folder is unreadable (permission denied)")
        visited: set[tuple[int, int]] = set()
        stack = [root]
        while stack:
            folder = stack.pop()
            try:
                st = folder.stat()
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in visited:
                continue
            visited.add(key)
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue  # an unreadable subfolder is skipped, like a hidden one
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                path = Path(entry.path)
                try:
                    if entry.is_dir(follow_symlinks=follow_symlinks):
                        stack.append(path)
                    elif entry.is_file(follow_symlinks=follow_symlinks) and path.suffix.lower() in exts:
                        found.setdefault(path, FoundFile(path, root, path.relative_to(root)))
                except OSError:
                    continue  # a dangling symlink
    return sorted(found.values(), key=lambda f: str(f.path))
