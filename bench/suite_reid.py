"""The evaluation suite's re-identification column: which of the corpus's files is a degraded excerpt from?

Per corpus (one of bench_suite's workspaces): up to ``excerpts`` files, drawn seeded; from each an excerpt of up
to ``seconds`` at a random offset (the whole file when it is shorter), real background mixed in at ``snr_db``
(bench_identify_real's: a babble of three prompts, or an ambience scene), then mp3 at ``kbps`` kbit/s, decoded
again by the product's query front end. Each system names the library file nearest to the excerpt (top-1):

- ``mfcc``: the excerpt's MFCC statistics against the files', standardised by the library's column statistics,
  cosine;
- ``untrained`` and ``general``: the excerpt's pooled embedding against the files' (mean of the half-segment
  windows' embeddings, re-normalised: what the export stores), cosine;
- ``musicnn`` and ``aisfx``: the excerpt's pooled vector against the files', cosine (bench_suite's pretrained
  baselines, when installed);
- ``identify``: what ``embedtool neighbours --mode identify`` answers (the workspace's index: the fingerprints
  of the fine peaks, then the embeddings' vote): right only when the right file is named *and* accepted.

Every excerpt is also asked as an *impostor*, its own file left out of the search (``exclude_track``): then any
answer identify accepts is wrong (``identify_impostors_accepted``).

``identify_outcomes`` says how identify came to each answer, for the excerpts with their file in the library and as
impostors: accepted by the fingerprints or by the embeddings (right or wrong), or refused because the embeddings'
confidence was below the calibrated threshold, because the fingerprints' best track was another one than the
embeddings' (a veto), or because the query was too short.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from _common import log
from bench_identify_real import audio_files, background_stretch, mix, mp3_roundtrip

MIN_SECONDS = 0.2  # files shorter than this give no excerpt: the mp3 round trip may cut them below 0.1 s


def _nearest(library: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Row of the library vector nearest (cosine) to each query."""

    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    return np.argmax(unit(queries) @ unit(library).T, axis=1)


def _pooled(encoder: Any, mel: np.ndarray) -> np.ndarray:
    from embedtool.embedding.pooling import pool_track

    _, vectors = encoder.embed_track(np.asarray(mel, dtype=np.float32), max(1, encoder.segment_frames // 2))
    return pool_track(vectors)


def excerpts(
    ws: Any,
    background: Path,
    folder: Path,
    n: int,
    seconds: float,
    snr_db: float,
    kbps: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Degraded excerpts of up to ``n`` library files as mp3 files in ``folder``: [{row, track_id, path}]."""
    from embedtool.audio.decode import decode_file
    from embedtool.features.store import FeatureStore

    features = FeatureStore(ws.features)
    sr = features.settings.sample_rate
    tracks = sorted(features.track_ids())
    rng = np.random.default_rng(seed)
    picks = sorted(rng.choice(len(tracks), size=min(n, len(tracks)), replace=False).tolist())
    noise = audio_files(background)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for row in picks:
        track = features.track(tracks[row])
        audio = decode_file(track["path"], sr).samples
        length = min(len(audio), int(seconds * sr))
        if length < MIN_SECONDS * sr:  # below what a query may be (neighbours.min_query_seconds, 0.1 s)
            continue
        start = int(rng.integers(0, len(audio) - length + 1))
        clean = audio[start : start + length]
        noisy = mix(clean, background_stretch(noise, len(clean), sr, rng), snr_db)
        path = folder / f"excerpt-{row:05d}.mp3"
        path.write_bytes(mp3_roundtrip(noisy, sr, kbps))
        out.append({"row": row, "track_id": tracks[row], "path": str(path)})
    return out


def reidentification(
    ws: Any,
    background: Path,
    pretrained: dict[str, Any] | None = None,
    excerpts_per_corpus: int = 60,
    seconds: float = 3.0,
    snr_db: float = 10.0,
    kbps: int = 128,
    seed: int = 0,
) -> dict[str, Any]:
    """Top-1 re-identification per system on one workspace (extracted and embedded with its model); the index is
    built here when missing. ``pretrained[name]({id: path}) -> {id: vector} | None`` adds a pretrained system: the
    library's vectors by track id and the excerpts' by the ids given."""
    from embedtool import pipeline
    from embedtool.analysis.baselines import baseline_vector
    from embedtool.analysis.evaluate import untrained_encoder
    from embedtool.audio.peaks import PeakTracker
    from embedtool.embedding.store import EmbeddingStore
    from embedtool.errors import InputError
    from embedtool.features.frontend import featurise_query
    from embedtool.features.store import FeatureStore
    from embedtool.model.encoder import Encoder
    from embedtool.query.searcher import Searcher

    pipeline.index(ws)  # anew: the model or its export may have changed since the last run
    features = FeatureStore(ws.features)
    tracks = sorted(features.track_ids())
    folder = ws.root / "reid-excerpts"
    shutil.rmtree(folder, ignore_errors=True)  # made anew each run
    queries = excerpts(ws, background, folder, excerpts_per_corpus, seconds, snr_db, kbps, seed)
    truth = np.array([q["row"] for q in queries])
    encoders = {"untrained": untrained_encoder(ws, seed), "general": Encoder.load(ws.model)}
    library_mels = [np.asarray(features.mel(t), dtype=np.float32) for t in tracks]
    library: dict[str, np.ndarray] = {
        "mfcc": np.stack([baseline_vector(m, "mfcc") for m in library_mels]),
        "untrained": np.stack([_pooled(encoders["untrained"], m) for m in library_mels]),
    }
    del library_mels
    export = EmbeddingStore(ws.embeddings)  # the general model's track vectors: the export already pooled them
    row_of = {t["track_id"]: t["row"] for t in export.tracks}
    library["general"] = np.asarray(export.track_vectors(), dtype=np.float32)[[row_of[t] for t in tracks]]
    searcher = Searcher.open(ws)
    vectors: dict[str, list[np.ndarray]] = {name: [] for name in library}
    identified: list[bool] = []
    impostors_accepted: list[bool] = []
    outcomes: dict[str, Counter[str]] = {"library": Counter(), "impostor": Counter()}
    for q in queries:
        tracker = PeakTracker(features.settings.sample_rate)
        mel, _ = featurise_query(q["path"], features.settings, on_block=tracker.push)
        vectors["mfcc"].append(baseline_vector(mel, "mfcc"))
        for name, encoder in encoders.items():
            vectors[name].append(_pooled(encoder, mel))
        peaks = tracker.finish()
        try:
            answer = searcher.query_mel(mel, mode="identify", k=5, peaks=peaks)
            # the same excerpt as an impostor: its own file left out, any accepted answer is wrong
            alone = searcher.query_mel(mel, mode="identify", k=5, peaks=peaks, exclude_track=q["track_id"])
        except InputError:  # e.g. too short for the query stage: a miss (and no answer), as for a user
            identified.append(False)
            impostors_accepted.append(False)
            outcomes["library"]["refused: too short"] += 1
            outcomes["impostor"]["refused: too short"] += 1
            continue
        outcomes["library"][outcome(answer, q["track_id"])] += 1
        outcomes["impostor"][outcome(alone, None)] += 1
        identified.append(answer.best is not None and answer.best.track_id == q["track_id"] and not answer.no_match)
        impostors_accepted.append(alone.best is not None and not alone.no_match)
    mean, std = library["mfcc"].mean(axis=0), library["mfcc"].std(axis=0) + 1e-9
    library["mfcc"] = (library["mfcc"] - mean) / std
    found = {"mfcc": (np.stack(vectors["mfcc"]) - mean) / std}
    found.update({name: np.stack(vectors[name]) for name in encoders})
    figures = {name: float(np.mean(_nearest(library[name], found[name]) == truth)) for name in found}
    figures["identify"] = float(np.mean(identified))
    ids = [f"excerpt-{q['row']:05d}" for q in queries]
    for name, lookup in (pretrained or {}).items():
        got = lookup({i: q["path"] for i, q in zip(ids, queries, strict=True)})
        if got is not None and all(i in got for i in ids + tracks):
            nearest = _nearest(np.stack([got[t] for t in tracks]), np.stack([got[i] for i in ids]))
            figures[name] = float(np.mean(nearest == truth))
    log(f"{ws.root.parent.name}: re-identification of {len(queries)} excerpts: {figures}")
    impostors = float(np.mean(impostors_accepted)) if impostors_accepted else float("nan")
    log(f"{ws.root.parent.name}: identify accepted {impostors:.1%} of the excerpts with their own file left out")
    for which, counts in outcomes.items():
        log(f"{ws.root.parent.name}: identify's outcomes ({which}): {dict(sorted(counts.items()))}")
    return {
        "excerpts": len(queries),
        "seconds": seconds,
        "snr_db": snr_db,
        "kbps": kbps,
        "top1": figures,
        "identify_impostors_accepted": impostors,
        "identify_outcomes": {which: dict(sorted(counts.items())) for which, counts in outcomes.items()},
    }


def outcome(answer: Any, truth: str | None) -> str:
    """How identify came to ``answer`` (see the module doc); ``truth`` is the excerpt's track (None: an impostor,
    whose every accepted answer is wrong)."""
    if not answer.no_match:
        right = answer.best is not None and answer.best.track_id == truth
        return f"accepted by {answer.decided_by}: {'right' if right else 'wrong'}"
    if answer.confidence is not None and answer.threshold is not None and answer.confidence >= answer.threshold:
        return "refused: the fingerprints named another track"
    return "refused: below the threshold"
