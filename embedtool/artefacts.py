"""Artefact contracts shared by every stage: provenance metadata, compatibility checks, atomic writes.

Every artefact is a folder holding a ``meta.json`` (kind, format version, the configuration that made it,
tool version, the fingerprints of the artefacts it was built from, and its own fingerprint). ``meta.json`` is
written last, so a folder without it (or with a stale one) is never trusted by a later stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from embedtool._version import __version__
from embedtool.errors import IncompatibleArtefactError, MissingArtefactError

META_FILE = "meta.json"

# Which command makes each kind of artefact: used in "missing artefact" messages.
MADE_BY = {
    "features": "embedtool extract PATH",
    "split": "embedtool train",
    "model": "embedtool train",
    "embeddings": "embedtool embed",
    "index": "embedtool index",
    "clusters": "embedtool cluster",
    "classifier": "embedtool classify",
    "report": "embedtool evaluate",
}


@dataclass
class ArtefactMeta:
    kind: str
    format_version: int
    config: dict[str, Any]
    inputs: dict[str, str] = field(default_factory=dict)  # kind of input artefact -> its fingerprint
    extra: dict[str, Any] = field(default_factory=dict)  # stage-specific facts (counts, sizes, metrics)
    fingerprint: str = ""
    tool_version: str = __version__
    created: str = ""
    # setting ("n_mels", "train.width") -> fingerprint of its value when the artefact was written: an edited or
    # damaged meta.json is caught on open and the setting named (artefacts written before this have none)
    config_fingerprints: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "format_version": self.format_version,
            "fingerprint": self.fingerprint,
            "tool_version": self.tool_version,
            "created": self.created,
            "inputs": self.inputs,
            "config": self.config,
            "config_fingerprints": self.config_fingerprints,
            "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ArtefactMeta:
        return cls(
            kind=data["kind"],
            format_version=int(data["format_version"]),
            config=dict(data.get("config", {})),
            inputs=dict(data.get("inputs", {})),
            extra=dict(data.get("extra", {})),
            fingerprint=data.get("fingerprint", ""),
            tool_version=data.get("tool_version", ""),
            created=data.get("created", ""),
            config_fingerprints=dict(data.get("config_fingerprints") or {}),
        )


def fingerprint_of(*parts: Any) -> str:
    """A short stable hash of JSON-serialisable parts (settings, id lists...)."""
    digest = hashlib.blake2b(digest_size=8)
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def write_meta(
    directory: Path,
    kind: str,
    format_version: int,
    config: Mapping[str, Any],
    inputs: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
    fingerprint: str | None = None,
) -> ArtefactMeta:
    """Write ``meta.json`` atomically. Call it last, once everything else in the folder is in place."""
    meta = ArtefactMeta(
        kind=kind,
        format_version=format_version,
        config=dict(config),
        inputs=dict(inputs or {}),
        extra=dict(extra or {}),
        fingerprint=fingerprint or uuid.uuid4().hex[:16],
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        config_fingerprints=config_fingerprints(config),
    )
    atomic_write_json(Path(directory) / META_FILE, meta.to_dict())
    return meta


def read_meta(directory: Path, kind: str, format_version: int | None = None) -> ArtefactMeta:
    """Read and check an artefact's metadata; a clear error says which command makes it when it is missing."""
    directory = Path(directory)
    recover_replaced_dir(directory)
    path = directory / META_FILE
    if not path.is_file():
        hint = MADE_BY.get(kind, "the stage that makes it")
        raise MissingArtefactError(f"No {kind} artefact at {directory} (make it with `{hint}`).")
    try:
        meta = ArtefactMeta.from_dict(json.loads(path.read_text()))
    except (ValueError, KeyError) as exc:
        raise IncompatibleArtefactError(f"Unreadable metadata in {path}: {exc}") from exc
    if meta.kind != kind:
        raise IncompatibleArtefactError(f"{directory} holds a {meta.kind!r} artefact, not {kind!r}.")
    if format_version is not None and meta.format_version != format_version:
        raise IncompatibleArtefactError(
            f"{directory} has {kind} format version {meta.format_version}; this embedtool reads version "
            f"{format_version}. Re-run `{MADE_BY.get(kind, 'the stage')}` to rebuild it."
        )
    changed = changed_settings(meta)
    if changed:
        raise IncompatibleArtefactError(
            f"{path} was changed after it was written: {', '.join(changed)} no longer "
            f"{'is' if len(changed) == 1 else 'are'} what made the artefact. Its contents were made with other "
            f"settings: re-make it with `{MADE_BY.get(kind, 'the stage that makes it')}` (or restore the file)."
        )
    return meta


def config_fingerprints(config: Mapping[str, Any]) -> dict[str, str]:
    """A fingerprint per setting, two levels deep ("n_mels", "train.width"), of a configuration."""
    out = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            for sub, inner in value.items():
                out[f"{key}.{sub}"] = fingerprint_of(inner)
        else:
            out[str(key)] = fingerprint_of(value)
    return out


def changed_settings(meta: ArtefactMeta) -> list[str]:
    """Settings of ``meta.config`` whose value is no longer the one recorded when it was written, each as
    ``name (now value)``; settings added or removed count too. Empty for artefacts written before the check."""
    if not meta.config_fingerprints:
        return []
    now = config_fingerprints(meta.config)
    changed = []
    for key in sorted(set(now) | set(meta.config_fingerprints)):
        if now.get(key) != meta.config_fingerprints.get(key):
            value = _setting(meta.config, key)
            changed.append(f"{key} (now {value!r})" if key in now else f"{key} (removed)")
    return changed


def _setting(config: Mapping[str, Any], key: str) -> Any:
    head, _, rest = key.partition(".")
    value = config.get(head)
    return value.get(rest) if rest and isinstance(value, Mapping) else value


def settings_differences(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    """Human-readable list of settings that differ, e.g. ``["sample_rate: 16000 != 22050"]``."""
    diffs = []
    for key in sorted(set(expected) | set(actual)):
        a, b = expected.get(key, "<unset>"), actual.get(key, "<unset>")
        if _normalise(a) != _normalise(b):
            diffs.append(f"{key}: {a!r} != {b!r}")
    return diffs


def _normalise(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def check_compatible(
    expected: Mapping[str, Any], actual: Mapping[str, Any], what: str, keys: list[str] | None = None
) -> None:
    """Refuse to combine artefacts whose settings differ, naming each difference.

    ``what`` describes the pair, e.g. "model vs features"; ``keys`` limits the comparison to these settings.
    """
    if keys is not None:
        expected = {k: expected.get(k, "<unset>") for k in keys}
        actual = {k: actual.get(k, "<unset>") for k in keys}
    diffs = settings_differences(expected, actual)
    if diffs:
        raise IncompatibleArtefactError(f"Incompatible {what}: " + "; ".join(diffs))


# --- atomic file and folder writes -------------------------------------------------------------------------


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it (os.umask alone must set one to read
    one, which another thread could catch in between)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """Write ``path`` through a temporary file in its folder, renamed into place when the block ends without
    error: a reader never sees half a file. The file gets the process umask's mode (0644 by default), as a plain
    ``open`` would; mkstemp alone would leave it readable by its owner only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path) as fh:
        fh.write(data)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=False, default=str) + "\n").encode())


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Save an ``.npy`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as fh:
        np.save(fh, array)


@contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Build an artefact folder aside and swap it into place only when the block finishes without error.

    The previous artefact stays untouched until the swap; an interrupted build leaves only a ``.staging``
    folder, which the next run removes. The swap is two renames; if a crash falls between them,
    :func:`recover_replaced_dir` restores the previous folder the next time anything reads it.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.with_name(f".{final.name}.staging")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    replace_dir(staging, final)


def replace_dir(new: Path, final: Path) -> None:
    """Move ``new`` to ``final``, keeping the old ``final`` until the new one is in place."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)


def recover_replaced_dir(final: Path) -> None:
    """Undo a swap interrupted between its two renames (see :func:`staged_dir`)."""
    final = Path(final)
    old = final.with_name(f".{final.name}.old")
    if not final.exists() and old.exists():
        os.replace(old, final)


def dir_size_bytes(directory: Path) -> int:
    directory = Path(directory)
    if not directory.exists():
        return 0
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
