"""Artefact contracts shared by every stage: provenance metadata, compatibility checks, atomic writes.

Every artefact is a folder holding a ``meta.json`` (kind, format version, the configuration that made it,
tool version, the fingerprints of the artefacts it was built from, and its own fingerprint). ``meta.json`` is
written last, so a folder without it (or with a stale one) is never trusted by a later stage.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, ClassVar, TypeVar

import numpy as np

from embedtool._version import __version__
from embedtool.errors import (
    DamagedArtefactError,
    DiskSpaceError,
    EmbedtoolError,
    IncompatibleArtefactError,
    MissingArtefactError,
    ResourceLimitError,
)

META_FILE = "meta.json"
HASH_CHUNK = 1 << 20
T = TypeVar("T")

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


def remake_hint(kind: str) -> str:
    """How to re-make an artefact of ``kind``: its command, or verify's repair."""
    return f"Re-make it with `{MADE_BY.get(kind, 'the stage that makes it')}` (or `embedtool verify --repair`)."


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
    # damaged meta.json is caught on open and the setting named (empty where the writer recorded none)
    config_fingerprints: dict[str, str] = field(default_factory=dict)
    # file (relative to the folder) -> {"size": bytes, "blake2b": hex} when written: sizes are checked on every
    # open, contents by `embedtool verify` and when a read fails (empty where the writer recorded none)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

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
            "files": self.files,
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
            files={str(k): dict(v) for k, v in (data.get("files") or {}).items()},
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
    files: Iterable[str] | None = None,
    known_checksums: Mapping[str, Mapping[str, Any]] | None = None,
) -> ArtefactMeta:
    """Write ``meta.json`` atomically. Call it last, once everything else in the folder is in place.

    ``meta.json`` records the size and checksum of ``files`` (names relative to ``directory``; default: every file
    in it, see :func:`artefact_files`); ``known_checksums`` are reused for files of the same name and size (give
    only those of files that never change once written)."""
    directory = Path(directory)
    names = artefact_files(directory) if files is None else list(files)
    meta = ArtefactMeta(
        kind=kind,
        format_version=format_version,
        config=dict(config),
        inputs=dict(inputs or {}),
        extra=dict(extra or {}),
        fingerprint=fingerprint or uuid.uuid4().hex[:16],
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        config_fingerprints=config_fingerprints(config),
        files=checksum_files(directory, names, known_checksums),
    )
    atomic_write_json(directory / META_FILE, meta.to_dict())
    return meta


def read_meta(
    directory: Path, kind: str, format_version: int | None = None, small_hashes: bool = True, oldest: int | None = None
) -> ArtefactMeta:
    """Read and check an artefact's metadata; a clear error says which command makes it when it is missing. The
    files it lists are checked: sizes, and the contents of the small ones (``small_hashes``; `verify`, which
    hashes every file itself, turns it off). ``format_version`` is the newest layout read, ``oldest`` (default: the
    same) the oldest."""
    directory = Path(directory)
    finish_swaps(directory.parent)
    recover_replaced_dir(directory)
    path = directory / META_FILE
    if not path.is_file():
        hint = MADE_BY.get(kind, "the stage that makes it")
        raise MissingArtefactError(f"No {kind} artefact at {directory} (make it with `{hint}`).")
    try:
        meta = ArtefactMeta.from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        if resource_shortage(exc) is not None:
            raise ResourceLimitError(
                f"Ran out of {resource_shortage(exc)} while reading {path} ({_brief(exc)}); the file is not damaged."
            ) from exc
        raise DamagedArtefactError(f"Unreadable metadata in {path} ({_brief(exc)}). {remake_hint(kind)}") from exc
    if meta.kind != kind:
        raise IncompatibleArtefactError(f"{directory} holds a {meta.kind!r} artefact, not {kind!r}.")
    if format_version is not None and not (oldest or format_version) <= meta.format_version <= format_version:
        versions = f"{oldest} to {format_version}" if oldest and oldest < format_version else str(format_version)
        raise IncompatibleArtefactError(
            f"{directory} has {kind} format version {meta.format_version}; this embedtool reads version "
            f"{versions}. Re-run `{MADE_BY.get(kind, 'the stage')}` to rebuild it."
        )
    changed = changed_settings(meta)
    if changed:
        raise IncompatibleArtefactError(
            f"{path} was changed after it was written: {', '.join(changed)} no longer "
            f"{'is' if len(changed) == 1 else 'are'} what made the artefact. Its contents were made with other "
            f"settings: re-make it with `{MADE_BY.get(kind, 'the stage that makes it')}` (or restore the file)."
        )
    problems = list(damaged_files(directory, meta, hashes=SMALL_FILES if small_hashes else False).values())
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DamagedArtefactError(f"The {kind} at {directory} is damaged: {problems[0]}{more}. {remake_hint(kind)}")
    return meta


class ArtefactStore:
    """What the artefacts' stores share: the folder, its ``meta.json`` read and checked (one of an older layout
    brought to the current one by the store's :meth:`_upgrade`, the one place that knows older layouts), and the
    provenance it records."""

    KIND: ClassVar[str]
    FORMAT_VERSION: ClassVar[int]
    OLDEST_FORMAT: ClassVar[int] = 1  # the oldest layout :meth:`_upgrade` reads

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        meta = read_meta(self.directory, self.KIND, self.FORMAT_VERSION, oldest=self.OLDEST_FORMAT)
        self.meta: ArtefactMeta = self._upgrade(meta) if meta.format_version < self.FORMAT_VERSION else meta

    def _upgrade(self, meta: ArtefactMeta) -> ArtefactMeta:
        """``meta`` of an older layout (``meta.format_version``) in the terms of the current one; the store's
        readers then know one layout."""
        return meta

    @property
    def fingerprint(self) -> str:
        return self.meta.fingerprint

    def input_fingerprint(self, kind: str) -> str:
        """The fingerprint of the ``kind`` artefact this one was made from ("" when it records none)."""
        return self.meta.inputs.get(kind, "")

    @property
    def model_fingerprint(self) -> str:
        return self.input_fingerprint("model")


# --- checksums and guarded reads ---------------------------------------------------------------------------


def file_checksum(path: Path) -> dict[str, Any]:
    """``{"size": bytes, "blake2b": hex}`` of a file, read in blocks."""
    digest = hashlib.blake2b(digest_size=16)
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return {"size": size, "blake2b": digest.hexdigest()}


def artefact_files(directory: Path) -> list[str]:
    """Every file under ``directory`` ('/'-separated, relative) but its ``meta.json`` and hidden temporaries."""
    directory = Path(directory)
    names = []
    for path in directory.rglob("*"):
        relative = path.relative_to(directory)
        if path.is_file() and relative.as_posix() != META_FILE and not relative.name.startswith("."):
            names.append(relative.as_posix())
    return sorted(names)


def checksum_files(
    directory: Path, names: Iterable[str], known: Mapping[str, Mapping[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """:func:`file_checksum` of each of ``names`` in ``directory``; ``known`` ones of the same size are reused."""
    out = {}
    for name in sorted(names):
        path = Path(directory) / name
        old = (known or {}).get(name)
        if old and old.get("blake2b") and old.get("size") == path.stat().st_size:
            out[name] = {"size": int(old["size"]), "blake2b": str(old["blake2b"])}
        else:
            out[name] = file_checksum(path)
    return out


def recorded_checksums(directory: Path) -> dict[str, dict[str, Any]]:
    """The file checksums the folder's ``meta.json`` records; empty when it has none or cannot be read."""
    try:
        files = json.loads((Path(directory) / META_FILE).read_text()).get("files") or {}
        return {str(k): dict(v) for k, v in files.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


SMALL_FILE_BYTES = 64 << 20  # a file up to this size is hashed on every open (the model, a classifier, tables)
SMALL_FILES_BUDGET = 128 << 20  # ... up to this many bytes per open, smallest files first
SMALL_FILES = "small"  # damaged_files(hashes=SMALL_FILES): hash what is cheap, compare sizes of the rest


def damaged_files(directory: Path, meta: ArtefactMeta, hashes: bool | str = False) -> dict[str, str]:
    """What is wrong with the files ``meta.json`` lists (name -> what): missing, another size, and (``hashes``)
    other contents. Sizes cost a ``stat`` per file; hashes read every byte. With ``hashes=SMALL_FILES`` (every
    open) the files that are cheap to hash are hashed (each up to :data:`SMALL_FILE_BYTES`, smallest first up to
    :data:`SMALL_FILES_BUDGET` in all; never the bulk: feature shards, segment vectors, the segment index): one flipped
    byte in a classifier's weights is refused, while opening a big library still costs a ``stat`` per shard."""
    problems = {}
    sizes: dict[str, int] = {}
    for name, recorded in sorted(meta.files.items()):
        try:
            path = member_path(Path(directory), name, meta.kind)
        except DamagedArtefactError:  # listed, never followed: the entry is the damage (a repair drops it)
            problems[name] = f"meta.json lists {name!r}, a file outside the folder (tampered with)"
            continue
        try:
            size = path.stat().st_size
        except OSError:
            problems[name] = f"{path} is missing"
            continue
        if size != recorded.get("size"):
            problems[name] = f"{path} is {size} bytes, it was {recorded.get('size')} when written"
        else:
            sizes[name] = size
    if hashes == SMALL_FILES:
        budget, chosen = SMALL_FILES_BUDGET, []
        for name in sorted(sizes, key=lambda n: (sizes[n], n)):
            if sizes[name] > SMALL_FILE_BYTES or sizes[name] > budget or _bulk(name):
                continue
            budget -= sizes[name]
            chosen.append(name)
    else:
        chosen = list(sizes) if hashes else []
    for name in chosen:
        path = Path(directory) / name
        if _altered(path, meta.files[name].get("blake2b")):
            problems[name] = f"{path} was altered after it was written (its checksum differs)"
    return dict(sorted(problems.items()))


def _bulk(name: str) -> bool:
    """A file of the bulk data whose size is checked on open but which is hashed by `verify` only: feature
    shards, segment vector shards, the segment index."""
    return name.startswith("shards/") or name.startswith("segments-") or name == "segments.faiss"


def member_path(directory: Path, name: str, kind: str) -> Path:
    """``directory / name`` for a file name an artefact's own meta or tables give; a name that leads outside the
    folder (absolute, ``..``) is refused as damage rather than followed."""
    pure = PurePosixPath(name)
    if not name or pure.is_absolute() or ".." in pure.parts or "\\" in name or "\0" in name:
        raise DamagedArtefactError(
            f"The {kind} at {directory} names a file {name!r} outside its folder: the artefact was tampered with. "
            + remake_hint(kind)
        )
    return Path(directory) / name


def read_member(meta: ArtefactMeta, directory: Path, name: str, read: Callable[[Path], T]) -> T:
    """``read(directory / name)`` for a file of the artefact ``meta`` describes: any error reading or decoding it
    (truncated, altered, deleted, foreign) becomes a :class:`DamagedArtefactError` naming the file, whether its
    checksum still matches, and the command that re-makes it. Every store reads its files through this."""
    path = member_path(Path(directory), name, meta.kind)
    try:
        return read(path)
    except EmbedtoolError:
        raise
    except FileNotFoundError:
        raise DamagedArtefactError(f"{path} is missing from the {meta.kind}. {remake_hint(meta.kind)}") from None
    except Exception as exc:  # whatever numpy, pyarrow, FAISS or torch raise on a bad file
        ran_out = resource_shortage(exc)
        if ran_out is not None:  # the machine ran out of something: the file is not to blame
            raise ResourceLimitError(
                f"Ran out of {ran_out} while reading {path} ({_brief(exc)}). The file is not damaged: free some "
                "memory, raise the limit (ulimit) or run fewer jobs at once, and run the command again."
            ) from exc
        altered = _altered(path, meta.files.get(name, {}).get("blake2b"))
        note = "; it is not the file that was written (its checksum differs)" if altered else ""
        raise DamagedArtefactError(f"Cannot read {path} ({_brief(exc)}){note}. {remake_hint(meta.kind)}") from exc


_SHORTAGES = (  # (what ran out, words that say so in an error's message)
    ("threads", ("failed to launch worker thread", "can't start new thread", "cannot start new thread")),
    ("memory", ("cannot allocate memory", "bad_alloc", "out of memory", "failed to allocate", "memoryerror")),
    ("open files", ("too many open files",)),
    ("threads or processes", ("resource temporarily unavailable",)),
)
_SHORTAGE_ERRNOS = {
    errno.ENOMEM: "memory",
    errno.EMFILE: "open files",
    errno.ENFILE: "open files",
    errno.EAGAIN: "threads or processes",
}


def resource_shortage(exc: BaseException) -> str | None:
    """What the machine ran out of, when ``exc`` (or what caused it) says so: "memory", "threads", "open
    files"...; None for any other error. Such an error says nothing about the file being read."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MemoryError):
            return "memory"
        if isinstance(current, OSError) and current.errno in _SHORTAGE_ERRNOS:
            return _SHORTAGE_ERRNOS[current.errno]
        text = str(current).lower()
        for what, words in _SHORTAGES:
            if any(word in text for word in words):
                return what
        current = current.__cause__ or current.__context__
    return None


def _altered(path: Path, recorded: str | None) -> bool:
    """Whether the file's contents differ from the checksum recorded when it was written (False when unknown)."""
    try:
        return bool(recorded) and file_checksum(path)["blake2b"] != recorded
    except OSError:
        return False


def _brief(exc: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    lines = str(exc).strip().splitlines()
    text = lines[0][:200] if lines else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
    ``name (now value)``; settings added or removed count too. Empty when the meta.json records no setting
    fingerprints."""
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


SWAP_JOURNAL = ".swap-journal.json"  # in a workspace: staged artefacts being moved into place together
SWAP_LOCK = ".swap.lock"


def swap_together(
    root: Path, moves: Sequence[tuple[Path, Path]], step: Callable[[int, int], None] | None = None
) -> None:
    """Move several staged folders or files (``(staged, final)`` under ``root``) into place as one change: a
    journal naming them all is written first, and whoever reads an artefact of ``root`` next finishes the moves
    a crash interrupted (:func:`finish_swaps`), so a reader finds every artefact old or every one new. ``step``
    is told (moves done, moves) after each."""
    root = Path(root)
    entries = [[Path(a).relative_to(root).as_posix(), Path(b).relative_to(root).as_posix()] for a, b in moves]
    atomic_write_json(root / SWAP_JOURNAL, {"moves": entries})
    finish_swaps(root, step)


def finish_swaps(root: Path, step: Callable[[int, int], None] | None = None) -> None:
    """Carry out the moves of an interrupted :func:`swap_together` in ``root`` (nothing when there is none).
    Every move is idempotent, and those who finish them take a lock of their own: two readers never race."""
    root = Path(root)
    journal = root / SWAP_JOURNAL
    if not journal.is_file():
        return
    import fcntl

    try:
        fd = os.open(root / SWAP_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError:  # a read-only workspace: no writer can be part-way through a swap in it
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            moves = json.loads(journal.read_text())["moves"]
        except (OSError, ValueError, KeyError, TypeError):
            return  # already finished by another process (or not ours to read)
        for done, (staged_name, final_name) in enumerate(moves, 1):
            staged, final = root / staged_name, root / final_name
            if not (staged.resolve().is_relative_to(root.resolve()) and final.resolve().is_relative_to(root.resolve())):
                continue  # a journal naming paths outside the workspace is not followed
            if staged.is_dir():
                replace_dir(staged, final)
            elif staged.is_file():
                os.replace(staged, final)
            else:
                recover_replaced_dir(final)
            if step:
                step(done, len(moves))
        journal.unlink(missing_ok=True)
    finally:
        os.close(fd)


def check_free_space(directory: Path, needed_bytes: int, what: str) -> None:
    """Refuse (:class:`DiskSpaceError`, with the numbers) to write about ``needed_bytes`` of ``what`` under
    ``directory`` when the disk holding it has less free space than that."""
    directory = Path(directory)
    existing = next((p for p in (directory, *directory.parents) if p.exists()), directory)
    free = shutil.disk_usage(existing).free
    if needed_bytes > free:
        raise DiskSpaceError(
            f"Not enough free space for {what}: about {needed_bytes / 1e6:,.1f} MB to write to {directory}, "
            f"{free / 1e6:,.1f} MB free. Free some space, or use a workspace on a larger disk (--workspace)."
        )


def dir_size_bytes(directory: Path) -> int:
    directory = Path(directory)
    if not directory.exists():
        return 0
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
