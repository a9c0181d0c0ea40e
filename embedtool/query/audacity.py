"""A query's answer as an Audacity label track (File > Import > Labels, beside the query's audio): one
``start<TAB>end<TAB>text`` line per match, seconds of the query, over the range the match covers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from embedtool.features.naming import display_name
from embedtool.query.searcher import QueryResult


def audacity_labels(result: QueryResult, roots: Sequence[str] = ()) -> str:
    """The label track of one answer: each match labelled with its rank, track (its path relative to the library
    folder among ``roots`` holding it), matched range and score; an identify query without a match is one
    "no match" label over the whole query."""
    lines = []
    if result.mode == "identify" and result.no_match:
        lines.append(f"0.000000\t{result.query.duration_s:.6f}\tno match")
    for m in result.matches:
        track = display_name({"track_id": m.track_id, "path": m.path}, list(roots))
        lines.append(
            f"{m.query_start_s:.6f}\t{m.query_end_s:.6f}\t{m.rank}. {track} "
            f"@ {m.ref_start_s:.1f}-{m.ref_end_s:.1f} s (score {m.score:.3f})"
        )
    return "\n".join(lines) + "\n"


class LabelTrackWriter:
    """Label tracks of several answers in one folder, each file named after its query (``clip.txt``; a second
    query of the same name gets ``clip-2.txt``)."""

    def __init__(self, directory: Path, roots: Sequence[str] = ()):
        self.directory, self.roots = Path(directory), list(roots)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.used: set[str] = set()

    def write(self, source: str, result: QueryResult) -> Path:
        """Write the label track of ``result``, the answer to the query ``source``; returns its file."""
        stem = Path(source).stem or "query"
        name, n = stem, 1
        while name in self.used:
            n += 1
            name = f"{stem}-{n}"
        self.used.add(name)
        path = self.directory / f"{name}.txt"
        path.write_text(audacity_labels(result, self.roots), encoding="utf-8")
        return path
