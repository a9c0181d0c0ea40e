"""Errors a user can act on. Each carries the process exit status the CLI uses for it."""

from __future__ import annotations


class EmbedtoolError(Exception):
    """Base class: a clear, specific message for the user. Exit status 1."""

    exit_code = 1


class ConfigError(EmbedtoolError):
    """A bad configuration file, option or preset. Exit status 2 (usage error)."""

    exit_code = 2


class InputError(EmbedtoolError):
    """Unusable input: a missing, unreadable, empty or too-short audio file or folder."""

    exit_code = 1


class DiskSpaceError(EmbedtoolError):
    """Too little free space to write an artefact (refused before writing, with the numbers), or the disk filled
    up during a run (what was kept and how to resume are said). Exit status 1."""

    exit_code = 1


class WorkspaceUnwritableError(EmbedtoolError):
    """The workspace cannot be written at all (a read-only file system, no permission, a full disk when taking
    its lock): nothing was started, nothing in it changed. Exit status 1."""

    exit_code = 1


class ResourceLimitError(EmbedtoolError):
    """The machine ran out of something (memory, threads, open files) while reading or computing: not a damaged
    artefact; the message says what ran out. Exit status 1."""

    exit_code = 1


class WorkspaceBusyError(EmbedtoolError):
    """Another process is running a stage that writes to the same workspace (the message names its command and
    process id). Exit status 1: run again when it has finished."""

    exit_code = 1


class MissingArtefactError(EmbedtoolError):
    """A stage needs an artefact that has not been made yet (say which command makes it). Exit status 4."""

    exit_code = 4


class IncompatibleArtefactError(EmbedtoolError):
    """Two artefacts were made with settings that do not fit together. Exit status 5."""

    exit_code = 5


class DamagedArtefactError(IncompatibleArtefactError):
    """A file of an artefact is missing, cut short, altered or unreadable (the message names it and the command
    that re-makes it; `embedtool verify --repair` re-makes what is damaged). Exit status 5."""


class NoMatchError(EmbedtoolError):
    """`neighbours --mode identify` found no track above the threshold. Exit status 3."""

    exit_code = 3
