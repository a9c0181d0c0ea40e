"""Track labels: from the folder layout (``root/<label>/...``) or from a CSV/TSV file.

A labels file has a path and a label per row and optionally a group (tracks of one group never straddle the
train/validation split: an album, a session, a game). With a header row the columns are found by name
(``path``/``file``/``filename``, ``label``/``class``/``genre``, ``group``; extra columns are ignored); without
one they are taken in the order path, label, group. Relative paths are relative to the labels file's folder.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from embedtool.errors import InputError

PATH_NAMES = ("path", "file", "filename", "filepath")
LABEL_NAMES = ("label", "class", "genre", "category")
GROUP_NAMES = ("group", "album", "session")


@dataclass(frozen=True)
class LabelEntry:
    label: str | None
    group: str | None


class LabelTable:
    """Labels read from a file, looked up by a file's absolute path (symlinks resolved as a fallback)."""

    def __init__(self, source: Path, entries: dict[str, LabelEntry]):
        self.source = source
        self.entries = entries
        self._resolved: dict[str, str] | None = None
        self.matched: set[str] = set()

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, path: Path) -> LabelEntry | None:
        key = os.path.normpath(os.path.abspath(path))
        if key in self.entries:
            self.matched.add(key)
            return self.entries[key]
        if self._resolved is None:  # the same file reached through a symlink on either side
            self._resolved = {os.path.realpath(k): k for k in self.entries}
        key = self._resolved.get(os.path.realpath(path))
        if key is None:
            return None
        self.matched.add(key)
        return self.entries[key]

    def unmatched(self) -> list[str]:
        return sorted(set(self.entries) - self.matched)


def read_labels_file(path: Path | str) -> LabelTable:
    """Parse a CSV or TSV labels file; raises :class:`InputError` naming the file and line for bad rows."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"Labels file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"Labels file {path} is unreadable: {exc}") from exc
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        raise InputError(f"Labels file {path} is empty")
    delimiter = "\t" if "\t" in lines[0] else ","
    rows = list(csv.reader(lines, delimiter=delimiter))
    header = [c.strip().lower() for c in rows[0]]
    if any(name in header for name in PATH_NAMES) and any(name in header for name in LABEL_NAMES):
        cols = (
            _column(header, PATH_NAMES),
            _column(header, LABEL_NAMES),
            _column(header, GROUP_NAMES),
        )
        body, first_line = rows[1:], 2
    else:
        cols = (0, 1, 2)
        body, first_line = rows, 1
    base = Path(os.path.abspath(path)).parent
    entries: dict[str, LabelEntry] = {}
    for lineno, row in enumerate(body, start=first_line):
        p_col, l_col, g_col = cols
        if len(row) <= max(p_col, l_col):
            raise InputError(
                f"{path}, line {lineno}: expected at least a path and a label separated by "
                f"{'a tab' if delimiter == chr(9) else 'a comma'}, got {delimiter.join(row)!r}"
            )
        file_path = row[p_col].strip()
        if not file_path:
            raise InputError(f"{path}, line {lineno}: empty path")
        label = row[l_col].strip() or None
        group = (row[g_col].strip() or None) if g_col is not None and g_col < len(row) else None
        key = os.path.normpath(os.path.join(base, os.path.expanduser(file_path)))
        previous = entries.get(key)
        if previous is not None and previous != LabelEntry(label, group):
            raise InputError(f"{path}, line {lineno}: {file_path} is listed twice with different labels")
        entries[key] = LabelEntry(label, group)
    return LabelTable(path, entries)


def _column(header: list[str], names: tuple[str, ...]) -> int | None:
    for name in names:
        if name in header:
            return header.index(name)
    return None
