"""What the server knows about one workspace, opened once: tracks, the Searcher, clusters, the classifier, the map.

No web framework here: :class:`Library` answers in plain dicts, and raises the library's own errors
(:mod:`embedtool.errors`) that the app turns into 4xx answers. Nothing is written to the workspace.

Artefacts that are missing are not an error at start: the server opens what exists, and a request that needs a
missing one gets the message of the error that opening it raised (which names the command that makes it).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedtool.errors import EmbedtoolError, InputError, MissingArtefactError

if TYPE_CHECKING:
    from embedtool.analysis.classifier_store import SavedClassifier
    from embedtool.query.searcher import Mode, Searcher
    from embedtool.workspace import Workspace

MAX_TRACKS_LISTED = 200
# The columns of a search exported as CSV by the page: those of `embedtool neighbours --format csv` (a test holds
# the two lists equal; this layer may not import the CLI's).
EXPORT_COLUMNS = (
    "query", "mode", "rank", "track_id", "path", "label", "score", "windows", "query_start_s", "query_end_s",
    "ref_start_s", "ref_end_s", "no_match", "confidence", "decided_by", "fingerprint_hits", "error",
)  # fmt: skip


class NotFound(EmbedtoolError):
    """A track, file or artefact the client asked for does not exist (or may not be served): HTTP 404."""


class Library:
    """The workspace's artefacts, loaded once and shared by every request (searches are serialised by a lock:
    the encoder and FAISS are not shared between threads)."""

    def __init__(self, workspace: Workspace):
        self.workspace = workspace
        self._lock = threading.Lock()
        self._map_lock = threading.Lock()  # the first map takes seconds (t-SNE): searches need not wait for it
        self._map: dict[str, Any] | None = None
        self._duplicates_lock = threading.Lock()  # found once, on the first request (seconds for a large library)
        self._duplicates: dict[str, Any] | None = None
        self.searcher: Searcher | None = None
        self.searcher_error: EmbedtoolError | None = None
        self.tracks: list[dict[str, Any]] = []
        self._roots: dict[str, str] = {}  # track id -> the extract root it was found under
        self._envelopes: dict[tuple[str, int], dict[str, Any]] = {}  # (track id, bins) -> envelope
        self._verified: dict[str, str] = {}  # track id -> path, mtime, size of a file outside its root found its own
        self._open_searcher()
        self._open_tracks()
        self.classifier: SavedClassifier | None = None
        self.classifier_error: EmbedtoolError | None = None
        self._open_classifier()

    # --- opening -------------------------------------------------------------------------------------------
    def _open_searcher(self) -> None:
        from embedtool.query.searcher import Searcher

        try:
            self.searcher = Searcher.open(self.workspace)
        except EmbedtoolError as exc:
            self.searcher_error = exc

    def _open_tracks(self) -> None:
        """The searchable tracks (the index's table); their extract roots from the features table, which bound
        what may be streamed."""
        from embedtool.features.store import FeatureStore

        try:
            features = FeatureStore(self.workspace.features)
            self._roots = {t["track_id"]: t["root"] for t in features.tracks}
            source: list[dict[str, Any]] = list(features.tracks)
        except EmbedtoolError:
            features, source = None, []
        if self.searcher is not None:
            source = list(self.searcher.tables.tracks)  # labels as the features have them now (Searcher.open)
        self.tracks = [_track_row(t) for t in source]
        self._by_id = {t["track_id"]: t for t in self.tracks}

    def _open_classifier(self) -> None:
        from embedtool.analysis.classifier_store import SavedClassifier

        try:
            self.classifier = SavedClassifier(self.workspace.classifier)
            if self.searcher is not None:
                self.classifier.check_encoder(self.searcher.encoder)
        except EmbedtoolError as exc:
            self.classifier, self.classifier_error = None, exc

    def status(self) -> dict[str, Any]:
        """Which features the page can offer, and why not when one is missing."""
        from embedtool.analysis.cluster_store import ClusterStore

        clusters = ClusterStore.exists(self.workspace.clusters)
        return {
            "workspace": str(self.workspace.root),
            "tracks": len(self.tracks),
            "search": self.searcher is not None,
            "search_error": None if self.searcher_error is None else str(self.searcher_error),
            "classify": self.classifier is not None,
            "classify_error": None if self.classifier_error is None else str(self.classifier_error),
            "classes": list(self.classifier.classifier.classes) if self.classifier is not None else [],
            "clusters": clusters,
            "report": self.latest_report() is not None,
            "identify_threshold": self.searcher.threshold if self.searcher is not None else None,
        }

    # --- tracks --------------------------------------------------------------------------------------------
    def find_tracks(self, query: str = "", limit: int = 50) -> list[dict[str, Any]]:
        """Tracks whose id, file name or path contains every word of ``query`` (case-insensitive); all tracks
        (up to ``limit``) for an empty query."""
        words = query.lower().split()
        limit = max(1, min(int(limit), MAX_TRACKS_LISTED))
        found = [t for t in self.tracks if all(w in t["_haystack"] for w in words)]
        return [_public(t) for t in found[:limit]]

    def track(self, track_id: str) -> dict[str, Any]:
        try:
            return self._by_id[track_id]
        except KeyError:
            raise NotFound(f"No library track with id {track_id!r}.") from None

    def audio_file(self, track_id: str) -> Path:
        """The file of a library track. One that resolves outside the folder it was extracted from (a symlink)
        is served only when its bytes are still those the track was made from (its id is their hash): a library
        that links to files elsewhere plays, a link swapped to another file afterwards is refused (NotFound), as
        is a file that is gone."""
        track = self.track(track_id)
        path = Path(track["path"])
        real = Path(os.path.realpath(path))
        if not real.is_file():
            raise NotFound(f"The file of track {track_id} is gone: {path}")
        root = self._roots.get(track_id)
        if root is not None and not real.is_relative_to(os.path.realpath(root)):
            if not self._same_content(track_id, real):
                raise NotFound(
                    f"The file of track {track_id} now leads outside the library folder {root} to a file that is "
                    "not the one extracted (re-run `embedtool extract` if it was replaced on purpose)."
                )
        return real

    def _same_content(self, track_id: str, real: Path) -> bool:
        """Whether ``real`` still holds the bytes track ``track_id`` was made from (hashed once per path and
        modification time)."""
        from embedtool.features.extract import file_hash

        stat = real.stat()
        key = f"{real}:{stat.st_mtime_ns}:{stat.st_size}"
        if self._verified.get(track_id) == key:
            return True
        if file_hash(real) != track_id:
            return False
        self._verified[track_id] = key
        return True

    def envelope(self, track_id: str, bins: int = 200) -> dict[str, Any]:
        """The track's loudness over time in ``bins`` steps (0..1, the loudest frame of each step, over a 60 dB
        range), from its stored log-Mel features: what the page draws a result's timeline with."""
        from embedtool.features.store import FeatureStore

        self.track(track_id)
        key = (track_id, bins)
        if key in self._envelopes:
            return self._envelopes[key]
        store = self.searcher.features if self.searcher is not None else None
        try:
            store = store or FeatureStore(self.workspace.features)
        except EmbedtoolError:
            raise NotFound(f"No features for track {track_id}: run `embedtool extract`.") from None
        if store.tracks.index_of(track_id) is None:
            raise NotFound(f"No features for track {track_id}: run `embedtool extract`.")
        mel = np.asarray(store.mel(track_id), dtype=np.float32)
        db = 10 * np.log10(np.maximum(np.exp(mel).sum(axis=1), 1e-12)) if len(mel) else np.zeros(1, np.float32)
        starts = np.minimum(np.linspace(0, len(db), bins + 1).astype(int)[:-1], len(db) - 1)
        steps = np.maximum.reduceat(db, starts)  # each step's loudest frame
        levels = np.clip((steps - (db.max() - 60.0)) / 60.0, 0.0, 1.0)
        answer = {"track_id": track_id, "duration_s": self._by_id[track_id]["duration_s"],
                  "levels": [round(float(v), 3) for v in levels]}  # fmt: skip
        if len(self._envelopes) > 512:
            self._envelopes.clear()
        self._envelopes[key] = answer
        return answer

    # --- search --------------------------------------------------------------------------------------------
    def _need_searcher(self) -> Searcher:
        if self.searcher is None:
            assert self.searcher_error is not None
            raise self.searcher_error
        return self.searcher

    def search_track(self, track_id: str, mode: Mode, k: int) -> dict[str, Any]:
        """A library track's answer. A track shorter than the shortest usable query (a 20 ms drum hit) is
        searched padded with silence to that length, and the answer's ``note`` says so."""
        searcher = self._need_searcher()
        track = self.track(track_id)  # an unknown id is a 404, not a decoding attempt of a client string
        shortest = searcher.options.min_query_seconds
        note = None
        with self._lock:
            if track["duration_s"] + 1e-9 < shortest and searcher.features is not None:
                result = self._search_padded(searcher, track_id, mode, k)
                note = (
                    f"This track is {track['duration_s']:.3f} s long, shorter than the shortest usable query "
                    f"({shortest:g} s): it was searched padded with silence to that length."
                )
            else:
                result = searcher.query_track(track_id, mode=mode, k=k)
        answer = self._answer(result.to_dict())
        answer["note"] = note
        answer["query"]["name"] = track["name"]
        return answer

    def search_seeds(self, track_ids: list[str], mode: Mode, k: int, combine: str | None = None) -> dict[str, Any]:
        """One answer for several library tracks together, "more like these" (:mod:`embedtool.query.seeds`): the
        seeds' own tracks are left out; ``combine`` is ``mean`` or ``rrf`` (default: the measured choice, mean)."""
        from embedtool.query.seeds import DEFAULT_COMBINE, more_like_these

        searcher = self._need_searcher()
        if mode != "similar":
            raise InputError("Several seeds are answered in similar mode only: identify takes one query.")
        names = {tid: self.track(tid)["name"] for tid in track_ids}  # an unknown id is a 404
        with self._lock:
            result = more_like_these(searcher, list(names), k=k, combine=combine or DEFAULT_COMBINE)
        answer = self._answer(result.to_dict())
        for seed in answer["query"]["seeds"]:
            seed["name"] = names.get(seed["library_track"], seed["given"])
            seed.pop("source", None)
        return answer

    def _search_padded(self, searcher: Searcher, track_id: str, mode: Mode, k: int) -> Any:
        from embedtool.features.windows import silence_floor

        assert searcher.features is not None
        mel = np.asarray(searcher.features.mel(track_id), dtype=np.float32)
        frames = searcher.settings.seconds_to_frames(searcher.options.min_query_seconds) + 1
        pad = np.full(
            (max(0, frames - len(mel)), mel.shape[1]), silence_floor(searcher.settings.log_offset), np.float32
        )
        exclude = track_id if mode == "similar" and not searcher.options.include_self else None
        result = searcher.query_mel(np.concatenate([mel, pad]), mode=mode, k=k, exclude_track=exclude)
        result.query = result.query.located(self._by_id[track_id].get("path"), track_id)
        return result

    def search_file(self, path: Path, mode: Mode, k: int) -> dict[str, Any]:
        searcher = self._need_searcher()
        with self._lock:
            result = searcher.query_file(path, mode=mode, k=k)
        answer = result.to_dict()
        answer["query"].pop("source", None)  # a temporary file's name means nothing to the client
        return self._answer(answer)

    def _answer(self, answer: dict[str, Any]) -> dict[str, Any]:
        """The searcher's answer with each match's display name and its track's duration (for its timeline)."""
        for m in answer["matches"]:
            track = self._by_id.get(m["track_id"])
            m["name"] = track["name"] if track else m["track_id"]
            m["duration_s"] = track["duration_s"] if track else None
        answer.setdefault("note", None)
        return answer

    # --- classify ------------------------------------------------------------------------------------------
    def classify_file(self, path: Path) -> dict[str, Any]:
        from embedtool.analysis.classifier_store import predict_files

        if self.classifier is None:
            assert self.classifier_error is not None
            raise self.classifier_error
        searcher = self._need_searcher()
        with self._lock:
            (prediction,) = predict_files(
                self.workspace.classifier, self.workspace.model, [path], encoder=searcher.encoder
            )
        answer = prediction.to_dict()
        answer.pop("path", None)
        return answer

    # --- duplicates ---------------------------------------------------------------------------------------
    def duplicates(self) -> dict[str, Any]:
        """The library's exact copies, near-copies and shared material (as ``embedtool duplicates`` finds them with
        its default thresholds), found on the first request and kept; each file is named as the page names tracks,
        and ``playable`` says whether its audio is served (a library track, not an exact copy's other path)."""
        with self._duplicates_lock:
            if self._duplicates is None:
                self._duplicates = self._find_duplicates()
            return self._duplicates

    def _find_duplicates(self) -> dict[str, Any]:
        from embedtool.analysis.duplicates import find_duplicates
        from embedtool.features.store import FeatureStore

        def shown(f: dict[str, Any]) -> dict[str, Any]:
            known = self._by_id.get(f["track_id"])
            playable = known is not None and known.get("path") == f.get("path")
            return {**{k: v for k, v in f.items() if k != "path"}, "name": _name(f.get("path"), f["track_id"]),
                    "playable": playable}  # fmt: skip

        found = find_duplicates(FeatureStore(self.workspace.features)).to_dict()
        for group in found["groups"]:
            group["files"] = [shown(f) for f in group["files"]]
            for r in group["relations"]:
                r["a"], r["b"] = shown(r["a"]), shown(r["b"])
        return found

    # --- clusters and the map ------------------------------------------------------------------------------
    def clusters(self) -> dict[str, Any]:
        """The clusters artefact's summary: k, sizes, label make-up, exemplars (with names)."""
        from embedtool.analysis.cluster_store import ClusterStore

        summary = ClusterStore(self.workspace.clusters).summary()
        for entries in summary.get("exemplars", {}).values():
            for e in entries:
                e["name"] = _name(e.get("path"), e["track_id"])
                e.pop("path", None)
        summary.pop("figures", None)
        return summary

    def map(self) -> dict[str, Any]:
        """Every track (sampled as ``cluster`` samples) at its 2-D position, with its label and cluster.

        ``cluster`` keeps only a picture of its map, so the projection is recomputed here, once, with its
        options (method, seed, sample size) over the same track vectors; colours come from its assignments.
        """
        with self._map_lock:
            if self._map is None:
                self._map = self._make_map()
            return self._map

    def _make_map(self) -> dict[str, Any]:
        from embedtool.analysis.cluster_store import ClusterStore
        from embedtool.analysis.options import ClusterOptions
        from embedtool.analysis.projection import project_2d
        from embedtool.embedding.store import EmbeddingStore

        store = EmbeddingStore(self.workspace.embeddings)
        store.use_current_labels(self.workspace.features)
        options, assigned = ClusterOptions(), {}
        try:
            clusters = ClusterStore(self.workspace.clusters)
            known = {k: v for k, v in clusters.config.items() if k in ("seed", "max_points", "projection")}
            options = ClusterOptions(**known)
            assigned = clusters.track_clusters()
        except MissingArtefactError:
            pass  # no clusters yet: the map is coloured by label only
        tracks = sorted(store.tracks, key=lambda t: t["row"])
        rows = np.arange(len(tracks))
        if len(rows) > options.max_points:
            rows = np.sort(np.random.default_rng(options.seed).choice(len(rows), options.max_points, replace=False))
        vectors = np.asarray(store.track_vectors(), dtype=np.float32)
        coords, method = project_2d(vectors[rows], options.projection, options.seed)
        segments = store.segment_vectors()
        points = []
        for (x, y), r in zip(coords.tolist(), rows.tolist(), strict=True):
            t = tracks[r]
            # The window that stands for the track when it is played from the map: its segment nearest its mean.
            seg_rows, _ = store.segments_of(t["track_id"])
            best = int(seg_rows[int(np.argmax(segments[seg_rows] @ vectors[r]))]) if len(seg_rows) else None
            points.append(
                {
                    "track_id": t["track_id"],
                    "name": _name(t.get("path"), t["track_id"]),
                    "label": t.get("label"),
                    "cluster": assigned.get(t["track_id"]),
                    "x": round(x, 4),
                    "y": round(y, 4),
                    "exemplar_start_s": 0.0 if best is None else float(store.segment_starts[best]),
                    "exemplar_end_s": store.segment_seconds if best is None else float(store.segment_ends[best]),
                }
            )
        return {"method": method, "points": points, "has_clusters": bool(assigned)}

    # --- the report ----------------------------------------------------------------------------------------
    def latest_report(self) -> Path | None:
        from embedtool.inspect import latest_report

        return latest_report(self.workspace.reports)

    def report_file(self, name: str) -> Path:
        """A file of the latest report by its plain name (a figure); nothing outside that folder."""
        folder = self.latest_report()
        if folder is None:
            raise NotFound("No evaluate report yet (make one with `embedtool evaluate`).")
        files = {p.name: p for p in folder.iterdir() if p.is_file() and not p.is_symlink()}
        if name not in files:
            raise NotFound(f"The report has no file {name!r}.")
        return files[name]


def _name(path: str | None, track_id: str) -> str:
    """The file with its folder (which often names the album or class)."""
    if not path:
        return track_id
    return "/".join(Path(path).parts[-2:])


def _track_row(t: dict[str, Any]) -> dict[str, Any]:
    name = _name(t.get("path"), t["track_id"])
    row = {
        "track_id": t["track_id"],
        "name": name,
        "path": t.get("path"),
        "label": t.get("label"),
        "duration_s": round(float(t.get("duration_s") or 0.0), 3),
    }
    row["_haystack"] = " ".join(str(v) for v in (t["track_id"], name, t.get("path") or "")).lower()
    return row


def _public(t: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in t.items() if not k.startswith("_")}


def require_nonempty(value: str, what: str) -> str:
    value = (value or "").strip()
    if not value:
        raise InputError(f"Empty {what}: give one.")
    return value
