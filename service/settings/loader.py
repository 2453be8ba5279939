"""Loading the settings: defaults < TOML file < ``WBDWI_*`` environment < flags.

Each layer is a mapping ``{section: {key: value}}``; the layers are merged key
by key, and every section is then built from its merged values: each value is
coerced to its field's type (:func:`coerce_value`), unknown keys are refused
with a suggestion, and the section checks itself (:mod:`service.settings.model`).
A :class:`~service.errors.SettingsError` names the section or entry (and the
key) that is wrong.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from processing.settings import ProcessingSettings, settings_as_dict
from service.errors import SettingsError
from service.settings.model import SECTIONS, CallingAeSettings, Settings
from service.settings.values import Destination, parse_destination

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "coerce_value",
    "load_settings",
    "processing_settings_from_mapping",
    "processing_settings_to_mapping",
    "unwrap_optional",
]

#: Prefix of the environment variables, ``WBDWI_<SECTION>_<KEY>``.
ENV_PREFIX = "WBDWI_"
#: The environment variable that names the TOML file when no ``--config`` is given.
CONFIG_ENV = "WBDWI_CONFIG"

# The sections that are one table (and so have environment variables), by name.
_TABLES: dict[str, type[Any]] = {s.name: s.model for s in SECTIONS if not s.repeatable}


def unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """``(T, True)`` for a hint ``T | None``, else ``(hint, False)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        rest = [arg for arg in args if arg is not type(None)]
        if len(rest) == 1 and len(args) == 2:
            return rest[0], True
    return hint, False


def coerce_value(value: Any, hint: Any, where: str) -> Any:
    """Turn a TOML or environment value into the type ``hint``, or raise naming ``where``.

    Environment values arrive as text: lists are comma-separated, booleans
    true/false (1/0, yes/no, on/off), and an empty text leaves an optional
    setting unset.

    Raises
    ------
    SettingsError
        When ``value`` cannot be read as ``hint``.
    """
    inner, optional = unwrap_optional(hint)
    if optional and (value is None or (isinstance(value, str) and value.strip() == "")):
        return None
    if typing.get_origin(inner) is tuple:
        return _coerce_tuple(value, typing.get_args(inner), where)
    if inner is Destination:
        return value if isinstance(value, Destination) else parse_destination(str(value))
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        return _coerce_enum(value, inner, where)
    scalar = _SCALARS.get(inner)
    if scalar is not None:
        return scalar(value, where)
    if dataclasses.is_dataclass(inner) and isinstance(inner, type):
        if not isinstance(value, Mapping):
            raise SettingsError(f"{where}: expected a table, got {value!r}")
        return build_section(inner, value, where)
    raise SettingsError(f"{where}: unsupported setting type {inner!r}")


def _coerce_tuple(value: Any, args: tuple[Any, ...], where: str) -> tuple[Any, ...]:
    if isinstance(value, str):
        items: list[Any] = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise SettingsError(f"{where}: expected a list, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        item_hints = [args[0]] * len(items)
    elif len(items) != len(args):
        raise SettingsError(f"{where}: expected {len(args)} values, got {len(items)}")
    else:
        item_hints = list(args)
    return tuple(
        coerce_value(item, hint, f"{where}[{i}]")
        for i, (item, hint) in enumerate(zip(items, item_hints, strict=True))
    )


def _coerce_enum(value: Any, kind: type[enum.Enum], where: str) -> enum.Enum:
    if isinstance(value, kind):
        return value
    text = str(value).strip().lower()
    for member in kind:
        if str(member.value).lower() == text or member.name.lower() == text:
            return member
    allowed = ", ".join(str(member.value) for member in kind)
    raise SettingsError(f"{where}: {value!r} is not one of {allowed}")


def _coerce_bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise SettingsError(f"{where}: {value!r} is not a boolean (true/false)")


def _coerce_int(value: Any, where: str) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise SettingsError(f"{where}: {value!r} is not an integer")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{where}: {value!r} is not an integer") from None


def _coerce_float(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise SettingsError(f"{where}: {value!r} is not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{where}: {value!r} is not a number") from None


def _coerce_path(value: Any, where: str) -> Path:
    return Path(str(value)).expanduser()


def _coerce_str(value: Any, where: str) -> str:
    if not isinstance(value, str | int | float):
        raise SettingsError(f"{where}: expected text, got {value!r}")
    return str(value)


_SCALARS: dict[Any, Any] = {
    bool: _coerce_bool,
    int: _coerce_int,
    float: _coerce_float,
    Path: _coerce_path,
    str: _coerce_str,
}


def build_section(cls: type[Any], values: Mapping[str, Any], where: str) -> Any:
    """Build the section dataclass ``cls`` from ``values``; its errors are located at ``where``.

    Raises
    ------
    SettingsError
        For an unknown key (with the closest known one), a value of the wrong
        type, or a value the section refuses (its message prefixed ``where:``).
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(names)}"
            raise SettingsError(f"unknown setting {where}.{key}{hint}")
        kwargs[key] = coerce_value(value, hints[key], f"{where}.{key}")
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init
        and f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        keys = ", ".join(f"{where}.{name}" for name in missing)
        raise SettingsError(f"missing required setting {keys}")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as error:
        raise SettingsError(f"{where}: {error}") from None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise SettingsError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"config file {path} is not valid TOML: {error}") from None


def _env_layer(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    layer: dict[str, dict[str, Any]] = {}
    known = {f"{ENV_PREFIX}{section.upper()}_": section for section in _TABLES}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        for prefix, section in known.items():
            if name.startswith(prefix):
                layer.setdefault(section, {})[name[len(prefix) :].lower()] = value
                break
        else:
            sections = ", ".join(f"{ENV_PREFIX}{s.upper()}_*" for s in _TABLES)
            raise SettingsError(f"unknown environment setting {name}; expected one of {sections}")
    return layer


def _merge(
    base: dict[str, Any], layer: Mapping[str, Mapping[str, Any]], origin: str
) -> dict[str, Any]:
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for section, values in layer.items():
        if section not in _TABLES:
            raise SettingsError(f"unknown section [{section}] in {origin}")
        merged.setdefault(section, {}).update(values)
    return merged


def load_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build :class:`Settings` from defaults, a TOML file, the environment and flags.

    Parameters
    ----------
    config_file
        TOML file; when ``None`` the ``WBDWI_CONFIG`` variable is used if set.
    env
        Environment (``os.environ`` when ``None``); only ``WBDWI_*`` names are read.
    overrides
        Values from command-line flags, ``{section: {key: value}}``; they win.

    Raises
    ------
    SettingsError
        A value has the wrong type or range, or a name is unknown (with a suggestion).
    """
    environment = os.environ if env is None else env
    if config_file is None and environment.get(CONFIG_ENV):
        config_file = Path(environment[CONFIG_ENV])
    file_values = _read_file(config_file) if config_file is not None else {}
    calling_ae_tables = file_values.pop("calling_ae", [])
    if not isinstance(calling_ae_tables, list):
        raise SettingsError("[[calling_ae]] must be an array of tables")
    origin_file = str(config_file) if config_file else "the config file"
    for section, values in file_values.items():
        if not isinstance(values, dict):
            raise SettingsError(f"{origin_file}: {section!r} must be a [section] table")
    merged = _merge({}, file_values, origin_file)
    merged = _merge(merged, _env_layer(environment), "the environment")
    merged = _merge(merged, overrides or {}, "the command line")
    sections = {
        name: build_section(cls, merged.get(name, {}), name) for name, cls in _TABLES.items()
    }
    calling = tuple(
        build_section(CallingAeSettings, table, f"calling_ae[{i}]")
        for i, table in enumerate(calling_ae_tables)
    )
    return Settings(calling_ae=calling, **sections)


def processing_settings_to_mapping(settings: ProcessingSettings) -> dict[str, Any]:
    """JSON values of the processing settings (for a :class:`service.jobs.JobSpec`)."""
    return settings_as_dict(settings)


def processing_settings_from_mapping(values: Mapping[str, Any]) -> ProcessingSettings:
    """Rebuild :class:`ProcessingSettings` from JSON values, checking names and types."""
    built: ProcessingSettings = build_section(ProcessingSettings, values, "processing")
    return built
