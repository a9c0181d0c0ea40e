"""The train/validation split artefact (``<workspace>/split``): by track or by group, seeded, persisted.

Layout: ``split.parquet`` (track_id, group, label, subset) and ``meta.json`` (written last).

Rules:

- The unit of splitting is the group (tracks sharing a ``group`` value, e.g. an album, are never split) when
  ``split_by="group"`` and the track has a group; otherwise the track itself.
- First draw: units are stratified by label (a unit's most common label; unlabelled units form one stratum),
  shuffled with the seed, and ``round(val_fraction * units)`` of them go to validation, shared out over the
  strata by largest remainder. A stratum never gives away its last training unit, so a label with a single
  unit stays in training (and a library of one group has no validation tracks).
- Later runs keep every existing assignment. A new track joins its group's subset when the group is already
  assigned; otherwise a seeded hash of its unit decides (validation when the hash falls below
  ``val_fraction``), so the split is stable as a library grows. Removed tracks drop out.
- Changing the seed, ``val_fraction`` or ``split_by`` draws a new split.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from embedtool.artefacts import fingerprint_of, read_member, read_meta, staged_dir, write_meta
from embedtool.errors import IncompatibleArtefactError, MissingArtefactError

KIND = "split"
FORMAT_VERSION = 1
TABLE = "split.parquet"
SCHEMA = pa.schema([("track_id", pa.string()), ("group", pa.string()), ("label", pa.string()), ("subset", pa.string())])


def load_split(split_dir: Path) -> dict[str, str]:
    """track_id -> "train" | "val" from a split artefact."""
    split_dir = Path(split_dir)
    meta = read_meta(split_dir, KIND, FORMAT_VERSION)
    table = read_member(meta, split_dir, TABLE, lambda path: pq.read_table(path, columns=["track_id", "subset"]))
    return dict(zip(table.column("track_id").to_pylist(), table.column("subset").to_pylist(), strict=True))


def split_config(seed: int, val_fraction: float, split_by: str) -> dict[str, Any]:
    return {"seed": int(seed), "val_fraction": float(val_fraction), "split_by": split_by}


def unit_of(track: dict[str, Any], split_by: str) -> str:
    group = track.get("group")
    return f"group:{group}" if split_by == "group" and group not in (None, "") else f"track:{track['track_id']}"


def _hash_unit(seed: int, unit: str) -> float:
    digest = hashlib.blake2b(f"{seed}:{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def draw_split(tracks: list[dict[str, Any]], seed: int, val_fraction: float, split_by: str) -> dict[str, str]:
    """A fresh stratified, grouped split of ``tracks`` (rows with track_id, group, label)."""
    units: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in tracks:
        units[unit_of(t, split_by)].append(t)
    strata: dict[str, list[str]] = defaultdict(list)
    for unit, members in sorted(units.items()):
        labels = Counter(t.get("label") or "" for t in members)
        strata[min(labels, key=lambda lab: (-labels[lab], lab))].append(unit)
    rng = np.random.default_rng(seed)
    target = int(round(val_fraction * len(units)))
    if val_fraction > 0 and target == 0 and len(units) >= 2:
        target = 1
    quotas, remainders = {}, []
    for name, members in sorted(strata.items()):
        rng.shuffle(members)
        exact = val_fraction * len(members)
        quotas[name] = min(int(exact), len(members) - 1)
        remainders.append((-(exact - int(exact)), -len(members), name))
    left = target - sum(quotas.values())
    for _, _, name in sorted(remainders):
        if left <= 0:
            break
        if quotas[name] < len(strata[name]) - 1:
            quotas[name] += 1
            left -= 1
    # Strata that had no fractional remainder may still have units to give.
    for name in sorted(strata, key=lambda n: -len(strata[n])):
        while left > 0 and quotas[name] < len(strata[name]) - 1:
            quotas[name] += 1
            left -= 1
    subset_of_unit = {}
    for name, members in strata.items():
        for i, unit in enumerate(members):
            subset_of_unit[unit] = "val" if i < quotas[name] else "train"
    return {t["track_id"]: subset_of_unit[unit_of(t, split_by)] for t in tracks}


def update_split(
    tracks: list[dict[str, Any]],
    previous: dict[str, str],
    seed: int,
    val_fraction: float,
    split_by: str,
) -> dict[str, str]:
    """Keep ``previous`` assignments, assign new tracks by group or by seeded hash, drop removed ones."""
    unit_subset: dict[str, str] = {}
    for t in tracks:
        if t["track_id"] in previous:
            unit_subset.setdefault(unit_of(t, split_by), previous[t["track_id"]])
    out = {}
    for t in tracks:
        if t["track_id"] in previous:
            out[t["track_id"]] = previous[t["track_id"]]
            continue
        unit = unit_of(t, split_by)
        if unit not in unit_subset:
            unit_subset[unit] = "val" if _hash_unit(seed, unit) < val_fraction else "train"
        out[t["track_id"]] = unit_subset[unit]
    return out


def ensure_split(
    split_dir: Path,
    tracks: list[dict[str, Any]],
    features_fingerprint: str,
    seed: int,
    val_fraction: float,
    split_by: str,
) -> tuple[dict[str, str], str]:
    """Make or update the split artefact for ``tracks``; returns (assignments, split fingerprint).

    Rewrites the artefact only when something changed, so its fingerprint is stable across runs.
    """
    split_dir = Path(split_dir)
    config = split_config(seed, val_fraction, split_by)
    previous: dict[str, str] | None = None
    old_fp = None
    try:
        meta = read_meta(split_dir, KIND, FORMAT_VERSION)
        if meta.config == config:
            previous = load_split(split_dir)
            old_fp = meta.fingerprint
    except (MissingArtefactError, IncompatibleArtefactError):
        previous = None
    if previous is None:
        assignments = draw_split(tracks, seed, val_fraction, split_by)
    else:
        assignments = update_split(tracks, previous, seed, val_fraction, split_by)
    fingerprint = fingerprint_of(config, sorted(assignments.items()))
    if fingerprint == old_fp:
        return assignments, fingerprint
    rows = sorted(tracks, key=lambda t: t["track_id"])
    table = pa.Table.from_pydict(
        {
            "track_id": [t["track_id"] for t in rows],
            "group": [t.get("group") for t in rows],
            "label": [t.get("label") for t in rows],
            "subset": [assignments[t["track_id"]] for t in rows],
        },
        schema=SCHEMA,
    )
    counts = Counter(assignments.values())
    with staged_dir(split_dir) as staging:
        pq.write_table(table, staging / TABLE)
        write_meta(
            staging,
            KIND,
            FORMAT_VERSION,
            config,
            inputs={"features": features_fingerprint},
            extra={
                "train_tracks": counts.get("train", 0),
                "val_tracks": counts.get("val", 0),
                "updated": previous is not None,
            },
            fingerprint=fingerprint,
        )
    return assignments, fingerprint
