"""The commands' options, built from the settings' own declarations.

A setting that is a flag says so once, in its dataclass field (``metadata=config.option(help, ...)``): its flag
is its name (``neighbour_radius_s`` -> ``--neighbour-radius-s``), and its help, choices and default are read from
there. A command names the sections it takes with :func:`takes`; each flagged setting of them becomes one option
(a flag several sections share, like evaluate's ``--seed``, sets them all), earlier spellings stay accepted as
hidden options that warn, and the values given reach the command as :class:`Flags`: the ``overrides`` of
``ProjectConfig.settings``.

    @app.command()
    @handle_errors
    @takes("cluster")
    def cluster(ctx: typer.Context, ..., flags: Flags) -> None:
        options = flags.settings(app_context(ctx).config, "cluster")
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import typer
from typer.models import ArgumentInfo

from embedtool.cli.common import THREADS_OPTION, err_console, use_threads
from embedtool.config import PRESETS, ProjectConfig, section_class
from embedtool.flag import Flag, flags_of

F = TypeVar("F", bound=Callable[..., Any])
PresetName = Literal[PRESETS]  # type: ignore[valid-type]  # --preset's choices: every preset name


@dataclass(frozen=True)
class Use:
    """A section a command takes, and which of its flagged settings (all of them unless ``only`` names some)."""

    section: str
    only: tuple[str, ...] = ()


def uses(section: str, *only: str) -> Use:
    return Use(section, only)


class Flags:
    """The values a command's generated options were given, by section (None: not given)."""

    def __init__(self, values: dict[str, dict[str, Any]]):
        self._values = values

    def __getitem__(self, section: str) -> dict[str, Any]:
        """The section's overrides (setting -> value or None), as ``ProjectConfig.settings`` takes them."""
        return dict(self._values.get(section, {}))

    def given(self, section: str) -> set[str]:
        """The section's settings given on the command line (not the preset)."""
        return {key for key, value in self._values.get(section, {}).items() if value is not None and key != "preset"}

    def settings(self, config: ProjectConfig, section: str) -> Any:
        """The section's settings: preset < embedtool.yaml < these flags."""
        return config.settings(section, self[section])


@dataclass
class _Option:
    """One generated option: its parameter, the settings it sets, and its hidden earlier spellings."""

    flag: str
    param: inspect.Parameter
    targets: list[tuple[str, str]]
    old: list[tuple[str, inspect.Parameter]] = field(default_factory=list)


def takes(*sections: str | Use, preset: str = "", threads: bool = False) -> Callable[[F], F]:
    """Give the decorated command an option per flagged setting of ``sections`` (and ``--preset``, for the section
    ``preset`` names), inserted after its arguments; the command receives their values as ``flags: Flags``. With
    ``threads``, ``--threads N`` too, applied (``threads.fix_threads``) before the command runs."""
    options = _options([s if isinstance(s, Use) else Use(s) for s in sections], preset)
    extra = [_parameter("threads", int, THREADS_OPTION)] if threads else []

    def decorate(func: F) -> F:
        signature = inspect.signature(func)
        own = [p for p in signature.parameters.values() if p.name != "flags"]
        clash = {p.name for p in own} & {o.param.name for o in options}
        if clash:
            raise TypeError(f"{func.__name__}: parameters {sorted(clash)} are also generated options")
        leading = [i + 1 for i, p in enumerate(own) if p.name == "ctx" or isinstance(p.default, ArgumentInfo)]
        at = max(leading, default=0)
        generated = [p for o in options for p in (o.param, *(old for _, old in o.old))] + extra

        @functools.wraps(func)
        def command(*args: Any, **kwargs: Any) -> Any:
            if threads:
                use_threads(kwargs.pop("threads"))
            return func(*args, flags=_collect(options, kwargs), **kwargs)

        parameters = [*own[:at], *generated, *own[at:]]
        command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        annotations = {k: v for k, v in func.__annotations__.items() if k != "flags"}
        command.__annotations__ = {**annotations, **{p.name: p.annotation for p in generated}}
        return command  # type: ignore[return-value]

    return decorate


def _collect(options: list[_Option], kwargs: dict[str, Any]) -> Flags:
    """Take the generated options' values out of ``kwargs``: an earlier spelling warns, and counts where the
    current flag was not given."""
    values: dict[str, dict[str, Any]] = {}
    for option in options:
        value = kwargs.pop(option.param.name)
        for old, param in option.old:
            given = kwargs.pop(param.name)
            if given is not None:
                err_console.print(f"[yellow]warning[/] {old} is deprecated: use {option.flag}", highlight=False)
                value = given if value is None else value
        for section, key in option.targets:
            values.setdefault(section, {})[key] = value
    return Flags(values)


def _options(sections: list[Use], preset: str) -> list[_Option]:
    options: dict[str, _Option] = {}
    if preset:
        param = _parameter("preset", PresetName, typer.Option(None, "--preset", help=_PRESET_HELP))
        options["--preset"] = _Option("--preset", param, [(preset, "preset")])
    for use in sections:
        cls = section_class(use.section)
        flags = flags_of(cls)
        unknown = set(use.only) - set(flags)
        if unknown:
            raise TypeError(f"{use.section}: {sorted(unknown)} are not flags (give them option() metadata)")
        hints = typing.get_type_hints(cls)
        for key, flag in flags.items():
            if use.only and key not in use.only:
                continue
            name = flag.flag(key)
            if name in options:  # one flag, several sections (evaluate's --seed)
                options[name].targets.append((use.section, key))
                continue
            kind = _cli_type(hints[key], flag)
            default = default_text(use.section, key)
            python_name = name.lstrip("-").replace("-", "_")  # named as the flag, which is unique in a command
            param = _parameter(python_name, kind, _typer_option(name, flag, kind, default))
            old = [(o, _parameter(f"{python_name}__old{i}", kind, _typer_option(o, flag, kind, default, hidden=True)))
                   for i, o in enumerate(flag.old)]  # fmt: skip
            options[name] = _Option(name, param, [(use.section, key)], old)
    return list(options.values())


_PRESET_HELP = "Starting values of every option (a recipe): " + ", ".join(PRESETS) + "."


def _parameter(name: str, kind: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=kind | None)


def _typer_option(name: str, flag: Flag, kind: Any, default: str, hidden: bool = False) -> Any:
    decls = [f"{name}/--no-{name[2:]}" if kind is bool else name, *([flag.short] if flag.short else [])]
    extra: dict[str, Any] = {}
    if flag.metavar:
        extra["metavar"] = flag.metavar
    if flag.min is not None:
        extra["min"] = flag.min
    return typer.Option(None, *decls, help=flag.help, show_default=default, hidden=hidden, **extra)


def _cli_type(hint: Any, flag: Flag) -> Any:
    """The type the command line parses a setting as: its own, its choices, or text the configuration converts
    (``C``: a number or 'auto')."""
    if flag.choices:
        return Literal[flag.choices]  # type: ignore[valid-type]
    if typing.get_origin(hint) is Literal or hint in (bool, int, float, str):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(rest) == 1:
            return _cli_type(rest[0], flag)
    return str


def default_text(section: str, key: str) -> str:
    """What a setting left unset means: the section's built-in default (``embedtool.yaml`` may set another), for
    ``show_default`` in ``--help``. Reads only the section's dataclass (no torch)."""
    cls = section_class(section)
    value = getattr(cls.from_preset("default") if hasattr(cls, "from_preset") else cls(), key)
    return "none" if value in ("", None) else str(value)
