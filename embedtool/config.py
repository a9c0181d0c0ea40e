"""Configuration: ``embedtool.yaml`` sections, presets, and flag overrides.

Precedence, lowest first: the section's preset (``default`` unless the file or a flag names another), the
values in ``embedtool.yaml``, then command-line flags. Every section is a dataclass owned by its stage; this
module only knows where each one lives, so a stage's options are declared once, next to the code using them.

Example ``embedtool.yaml``::

    workspace: my-library        # artefacts go here (default: ./embedtool-workspace)
    preset: default              # preset for every section that has presets (e.g. `thesis`)
    features: {sample_rate: 16000, n_mels: 64}
    train: {epochs: 10, device: auto}
    engine: {name: ray, cluster: "head-node:6379"}   # where extract and embed run (``engine: ray`` for short)
"""

from __future__ import annotations

import dataclasses
import importlib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from embedtool.errors import ConfigError

CONFIG_FILE = "embedtool.yaml"
DEFAULT_WORKSPACE = "embedtool-workspace"

# section name in embedtool.yaml -> "module:DataclassName" holding that stage's options
SECTIONS: dict[str, str] = {
    "features": "embedtool.audio.settings:FeatureSettings",
    "extract": "embedtool.features.options:ExtractOptions",
    "train": "embedtool.model.settings:TrainSettings",
    "embed": "embedtool.embedding.options:EmbedOptions",
    "index": "embedtool.indexing.options:IndexOptions",
    "neighbours": "embedtool.query.options:NeighbourOptions",
    "cluster": "embedtool.analysis.options:ClusterOptions",
    "classify": "embedtool.analysis.options:ClassifyOptions",
    "evaluate": "embedtool.analysis.options:EvaluateOptions",
    "duplicates": "embedtool.analysis.options:DuplicatesOptions",
    "engine": "embedtool.engine.base:EngineOptions",
}
TOP_LEVEL_KEYS = ("workspace", "preset")
# Every preset name (``preset:`` in embedtool.yaml, ``--preset``): each section with presets takes them all, a name
# that changes nothing in a section giving its default values there.
PRESETS = ("default", "thesis", "tile2vec", "contrastive", "distil")

T = TypeVar("T")


@dataclass
class ProjectConfig:
    """The parsed ``embedtool.yaml`` (or an empty one when there is none)."""

    path: Path | None = None
    workspace: str | None = None
    preset: str | None = None
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def settings(self, section: str, overrides: Mapping[str, Any] | None = None) -> Any:
        """Build a section's dataclass: preset, then file values, then non-None ``overrides`` (flags)."""
        cls = section_class(section)
        return build_settings(
            cls,
            self.sections.get(section, {}),
            overrides or {},
            section=section,
            default_preset=self.preset,
        )


def section_class(section: str) -> type:
    if section not in SECTIONS:
        raise ConfigError(f"Unknown configuration section {section!r}; valid: {', '.join(SECTIONS)}")
    module_name, class_name = SECTIONS[section].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def find_config_file(start: Path | None = None) -> Path | None:
    """The ``embedtool.yaml`` in ``start`` (default: the cwd) or the nearest folder above it, as git finds
    ``.git``; None when there is none up to the filesystem root."""
    folder = Path(start or Path.cwd()).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / CONFIG_FILE).is_file():
            return candidate / CONFIG_FILE
    return None


def load_project_config(path: Path | None = None, search_dir: Path | None = None) -> ProjectConfig:
    """Read ``embedtool.yaml``: explicit ``path``, else the nearest one in ``search_dir`` (default: the cwd) or a
    folder above it (:func:`find_config_file`); an empty configuration when there is none."""
    if path is None:
        found = find_config_file(search_dir)
        if found is None:
            return ProjectConfig()
        path = found
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"Configuration file not found: {path}")
    try:
        data = safe_load_yaml(path.read_text(encoding="utf-8"), str(path)) or {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, not {type(data).__name__}")
    valid = list(TOP_LEVEL_KEYS) + list(SECTIONS)
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(valid)}")
    for key in TOP_LEVEL_KEYS:
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ConfigError(f"{path}: {key!r} must be a single name or path, not {data[key]!r}")
    if isinstance(data.get("engine"), str):  # ``engine: ray`` is short for ``engine: {name: ray}``
        data["engine"] = {"name": data["engine"]}
    sections: dict[str, dict[str, Any]] = {}
    for name in SECTIONS:
        value = data.get(name) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: section {name!r} must be a mapping of options")
        sections[name] = value
    labels = sections["extract"].get("labels")
    if isinstance(labels, str) and labels and not Path(labels).expanduser().is_absolute():
        # Like ``workspace:``, a relative labels file is relative to the configuration file, not the cwd.
        sections["extract"] = {**sections["extract"], "labels": str((path.parent / labels).resolve())}
    config = ProjectConfig(path=path, workspace=data.get("workspace"), preset=data.get("preset"), sections=sections)
    # Validate every section now so that a typo is reported before any work starts.
    for name, values in sections.items():
        if values:
            config.settings(name)
    return config


MAX_YAML_NODES = 10_000  # an embedtool.yaml is a few dozen values; aliases may not expand it beyond this


def safe_load_yaml(text: str, where: str) -> Any:
    """YAML's safe loader, refusing a document whose aliases expand to more than :data:`MAX_YAML_NODES` values
    anywhere in it (a "billion laughs" bomb inside a section would otherwise grow to gigabytes when a value is
    printed or checked). Every embedtool.yaml is read through this."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = _expanded_size(node, {})
        if size > MAX_YAML_NODES:
            raise ConfigError(
                f"{where}: its aliases (*name) expand to more than {MAX_YAML_NODES} values; refused (a YAML "
                "bomb?). Write the values out instead of nesting aliases."
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node: yaml.Node, seen: dict[int, int]) -> int:
    """How many values ``node`` stands for with every alias written out (shared nodes counted once per use,
    each computed once, so a bomb is measured without being expanded)."""
    key = id(node)
    if key in seen:
        return seen[key]
    seen[key] = MAX_YAML_NODES + 1  # a node inside itself (recursive alias) counts as too big
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, seen) + _expanded_size(v, seen) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, seen) for v in node.value)
    else:
        size = 1
    seen[key] = min(size, MAX_YAML_NODES + 1)
    return seen[key]


def build_settings(
    cls: type[T],
    file_values: Mapping[str, Any],
    overrides: Mapping[str, Any],
    section: str = "",
    default_preset: str | None = None,
) -> T:
    """Layer preset < file values < overrides into an instance of the dataclass ``cls``."""
    where = f"section {section!r}" if section else cls.__name__
    names = [f.name for f in dataclasses.fields(cls)]
    explicit = {k: v for k, v in overrides.items() if v is not None}
    for source, values in (("configuration", file_values), ("options", explicit)):
        unknown = sorted(set(values) - set(names) - {"preset"})
        if unknown:
            raise ConfigError(
                f"Unknown {source} key(s) in {where}: {', '.join(unknown)}; valid keys: {', '.join(names)}"
            )
    preset = explicit.get("preset") or file_values.get("preset") or default_preset
    if hasattr(cls, "from_preset"):
        base = cls.from_preset(preset or "default")  # type: ignore[attr-defined]
    else:
        if preset not in (None, "default") and "preset" in (explicit or file_values):
            raise ConfigError(f"{where} has no presets (got preset {preset!r})")
        base = cls()
    hints = typing.get_type_hints(cls)
    changes: dict[str, Any] = {}
    for values in (file_values, explicit):
        for key, value in values.items():
            if key == "preset" and "preset" not in names:
                continue
            changes[key] = coerce(value, hints[key], f"{where}.{key}")
    instance = dataclasses.replace(base, **changes)
    validate = getattr(instance, "validate", None)
    if callable(validate):
        validate()
    return instance


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert a YAML/flag value to the annotated type, with a clear error when it cannot be."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError:
                pass
        choices = " or ".join(_describe(arg) for arg in args if arg is not type(None))
        raise ConfigError(f"{where} must be {choices}, not {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where} must be one of {', '.join(map(repr, args))}, not {value!r}")
        return value
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, not {value!r}")
        item = args[0] if args else Any
        items = [coerce(v, item, where) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.lower() in ("true", "yes", "on", "1")
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ConfigError(f"{where} must be an integer, not {value!r}")
        try:
            number = float(value)
        except ValueError as exc:
            raise ConfigError(f"{where} must be an integer, not {value!r}") from exc
        if not number.is_integer():
            raise ConfigError(f"{where} must be an integer, not {value!r}")
        return int(number)
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, not {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where} must be a number, not {value!r}") from exc
    if hint is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where} must be a string, not {value!r}")
        return str(value)
    return value


def _describe(hint: Any) -> str:
    """What a value of this type looks like, for error messages."""
    if typing.get_origin(hint) is typing.Literal:
        return ", ".join(map(repr, typing.get_args(hint)))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def settings_dict(settings: Any) -> dict[str, Any]:
    """A dataclass's settings as plain JSON-able values (tuples as lists), for provenance metadata."""
    out = {}
    for key, value in dataclasses.asdict(settings).items():
        out[key] = list(value) if isinstance(value, tuple) else value
    return out
