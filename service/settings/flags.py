"""The command-line flags that set settings, declared once as a table.

``wbdwi serve`` adds its options from :data:`SERVE_FLAGS` and turns the parsed
values into loader overrides with :func:`flag_overrides`; the settings
reference lists the same table (:func:`flags_by_setting`). ``--data-dir``
(:data:`DATA_DIR_FLAG`) is shared with the commands that open a node's data
folder (``status``, ``retry``, ``settings``, ...).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DATA_DIR_FLAG",
    "SERVE_FLAGS",
    "SettingFlag",
    "add_setting_flags",
    "flag_overrides",
    "flags_by_setting",
]


@dataclass(frozen=True, slots=True)
class SettingFlag:
    """A command-line option that overrides one setting.

    Parameters
    ----------
    option
        The option, e.g. ``--port``.
    section, key
        The setting it overrides (``[section] key``).
    help
        The option's help text.
    value_type
        Converts the option's text (``None``: kept as text).
    metavar
        Name of the value in the usage line.
    choices
        The allowed values (empty: any).
    repeatable
        The option may be given several times; the setting gets the list.
    switch_value
        For an option without a value (a switch): the setting's value when it is given.
    """

    option: str
    section: str
    key: str
    help: str
    value_type: type[Any] | None = None
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    repeatable: bool = False
    switch_value: bool | None = None

    @property
    def dest(self) -> str:
        """The attribute of the parsed namespace that holds the option's value."""
        return self.option.removeprefix("--").replace("-", "_")

    @property
    def label(self) -> str:
        """The option as the settings reference shows it."""
        return f"{self.option} (repeatable)" if self.repeatable else self.option


DATA_DIR_FLAG = SettingFlag(
    "--data-dir", "node", "data_dir", "data folder (spool, jobs)", value_type=Path, metavar="DIR"
)

#: The options of ``wbdwi serve`` that set a setting, in the order of its ``--help``
#: (after ``--config`` and ``--data-dir``).
SERVE_FLAGS: tuple[SettingFlag, ...] = (
    SettingFlag("--port", "node", "port", "DICOM port (default 11112)", value_type=int),
    SettingFlag("--aet", "node", "ae_title", "our AE title (default WBDWI)"),
    SettingFlag("--bind", "node", "bind_address", "listen address (default 0.0.0.0)"),
    SettingFlag(
        "--quiet-seconds",
        "completion",
        "quiet_seconds",
        "study complete after N s quiet",
        value_type=float,
    ),
    SettingFlag(
        "--mpps-grace-seconds",
        "completion",
        "mpps_grace_seconds",
        "wait after MPPS COMPLETED",
        value_type=float,
    ),
    SettingFlag(
        "--destination",
        "export",
        "destinations",
        "result destination (repeatable; replaces the configured list)",
        metavar="AET@HOST:PORT",
        repeatable=True,
    ),
    SettingFlag(
        "--http-port", "node", "http_port", "health/metrics port (0 = off)", value_type=int
    ),
    SettingFlag("--device", "node", "device", "processing device", choices=("auto", "gpu", "cpu")),
    SettingFlag(
        "--calling-ae-allow",
        "receive",
        "calling_ae_allow",
        "allowed calling AE (repeatable; default any)",
        metavar="AET",
        repeatable=True,
    ),
    SettingFlag(
        "--no-fsync", "receive", "fsync", "do not fsync received files", switch_value=False
    ),
    SettingFlag(
        "--log-format",
        "logging",
        "format",
        "log lines as JSON, as readable console text, or auto: console on a terminal, "
        "else JSON (default auto)",
        choices=("auto", "json", "console"),
    ),
)


def add_setting_flags(parser: argparse.ArgumentParser, flags: Sequence[SettingFlag]) -> None:
    """Add ``flags`` to ``parser`` as options (each defaults to ``None``: not given)."""
    for flag in flags:
        options: dict[str, Any] = {"dest": flag.dest}
        if flag.help:
            options["help"] = flag.help
        if flag.switch_value is not None:
            options["action"] = "store_const"
            options["const"] = flag.switch_value
        else:
            if flag.repeatable:
                options["action"] = "append"
            if flag.value_type is not None:
                options["type"] = flag.value_type
            if flag.metavar is not None:
                options["metavar"] = flag.metavar
            if flag.choices:
                options["choices"] = list(flag.choices)
        parser.add_argument(flag.option, **options)


def flag_overrides(
    args: argparse.Namespace, flags: Sequence[SettingFlag]
) -> dict[str, dict[str, Any]]:
    """The settings the given options override, ``{section: {key: value}}`` (for the loader)."""
    overrides: dict[str, dict[str, Any]] = {}
    for flag in flags:
        value = getattr(args, flag.dest, None)
        if value is not None:
            overrides.setdefault(flag.section, {})[flag.key] = value
    return overrides


def flags_by_setting(flags: Sequence[SettingFlag]) -> dict[tuple[str, str], tuple[str, ...]]:
    """``(section, key)`` to the labels of the options that set it, in table order."""
    labels: dict[tuple[str, str], list[str]] = {}
    for flag in flags:
        labels.setdefault((flag.section, flag.key), []).append(flag.label)
    return {setting: tuple(found) for setting, found in labels.items()}
