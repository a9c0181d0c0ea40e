"""A setting's command-line flag, declared once in its dataclass field: ``metadata=option(help, ...)``. The CLI
builds its options from these (embedtool/cli/flags.py); the library only declares them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

FLAG = "embedtool.flag"  # the key of a field's metadata that holds its command-line flag


@dataclass(frozen=True)
class Flag:
    """How a setting is given on the command line: the one place its flag and help text are declared (the CLI
    builds its options from these). The flag is the setting's name, ``--`` + lower case with dashes
    (``neighbour_radius_s`` -> ``--neighbour-radius-s``), unless ``name`` says otherwise."""

    help: str
    name: str = ""  # the flag, when not the setting's own name
    short: str = ""  # a one-letter flag too (``-k``)
    old: tuple[str, ...] = ()  # earlier flags: still accepted, hidden from --help, with a warning
    choices: tuple[str, ...] = ()  # the values of a ``str`` setting that validate() accepts, listed in --help
    metavar: str = ""
    min: int | None = None

    def flag(self, setting: str) -> str:
        return self.name or "--" + setting.lower().replace("_", "-")


def option(
    help: str,
    *,
    flag: str = "",
    short: str = "",
    old: tuple[str, ...] = (),
    choices: tuple[str, ...] = (),
    metavar: str = "",
    min: int | None = None,
) -> dict[str, Flag]:
    """A dataclass field's ``metadata`` that makes the setting a command-line flag:
    ``radius: float = field(default=2.0, metadata=option("Neighbour radius (s).", old=("--radius",)))``."""
    return {FLAG: Flag(help, flag, short, tuple(old), tuple(choices), metavar, min)}


def flags_of(cls: type) -> dict[str, Flag]:
    """The settings of dataclass ``cls`` that are command-line flags, in declaration order -> their :class:`Flag`."""
    return {f.name: f.metadata[FLAG] for f in dataclasses.fields(cls) if FLAG in f.metadata}
