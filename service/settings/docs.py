"""The settings reference and the example TOML file, generated from the settings model.

Both documents are rendered from the model (:data:`~service.settings.model.SECTIONS`:
each section's fields, types, defaults and ``metadata["help"]``) and from the
declared flag table (:mod:`service.settings.flags`), so that they cannot drift
from the code; nothing is read back from source code or from a parser:

- ``deploy/wbdwi.example.toml`` (:func:`render_example_toml`): every setting
  commented out with its default, its type, environment variable, flag and
  what it does; uncommenting a key and changing its value is all it takes.
- ``docs/settings.md`` (:func:`render_settings_markdown`): one table per
  section with key, environment variable, flag, type, default and meaning.

Types are described in words by one function, :func:`describe_type`.
``tests/unit/test_settings_doc.py`` fails when the committed files differ from
what is generated here. Regenerate both with::

    python -m service.settings --write

(or print one with ``wbdwi settings --example-toml`` / ``--markdown``).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import sys
import textwrap
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processing.settings import HELP_KEY
from service.settings.flags import DATA_DIR_FLAG, SERVE_FLAGS, flags_by_setting
from service.settings.loader import CONFIG_ENV, ENV_PREFIX, unwrap_optional
from service.settings.model import SECTIONS, Settings
from service.settings.values import Destination

__all__ = [
    "EXAMPLE_TOML_PATH",
    "REGENERATE_COMMAND",
    "SETTINGS_MARKDOWN_PATH",
    "SettingEntry",
    "SettingsSection",
    "describe_type",
    "main",
    "render_effective_toml",
    "render_example_toml",
    "render_settings_markdown",
    "settings_sections",
    "toml_value",
]

#: Where the generated documents live, relative to the repository root.
EXAMPLE_TOML_PATH = Path("deploy/wbdwi.example.toml")
SETTINGS_MARKDOWN_PATH = Path("docs/settings.md")
#: The command that rewrites both documents (run in the repository root).
REGENERATE_COMMAND = "python -m service.settings --write"

_COMMENT_WIDTH = 88
# Values shown for fields that have no default (the key of an array-of-tables entry).
_EXAMPLE_VALUES: dict[tuple[str, str], Any] = {("calling_ae", "ae_title"): "SCANNER1"}
# Every flag that sets a setting, as the documents list them.
_DOCUMENTED_FLAGS = (DATA_DIR_FLAG, *SERVE_FLAGS)


@dataclass(frozen=True, slots=True)
class SettingEntry:
    """One setting as the documents show it.

    Attributes
    ----------
    section, key
        ``[section]`` and key in the TOML file.
    type_text
        The type in words (``integer``, ``list of text``, ``one of: auto, gpu, cpu``).
    default
        The default value (``None``: unset); for a field without a default, the
        example value shown in the example file.
    required
        The field has no default (a key of each ``[[table]]`` entry).
    env_var
        ``WBDWI_<SECTION>_<KEY>``, empty for settings that exist only in the file.
    flags
        Options of ``wbdwi serve`` that set it.
    help
        What it does.
    """

    section: str
    key: str
    type_text: str
    default: Any
    required: bool
    env_var: str
    flags: tuple[str, ...]
    help: str


@dataclass(frozen=True, slots=True)
class SettingsSection:
    """A ``[section]`` (or a repeatable ``[[section]]``) and its settings."""

    name: str
    summary: str
    repeatable: bool
    entries: tuple[SettingEntry, ...]


def describe_type(hint: Any) -> str:
    """The type of a settings field in words (``integer``, ``list of text``, ``path, optional``).

    Raises
    ------
    TypeError
        For a type the settings do not use.
    """
    inner, optional = unwrap_optional(hint)
    suffix = ", optional" if optional else ""
    if typing.get_origin(inner) is tuple:
        args = typing.get_args(inner)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"list of {_plural(args[0])}{suffix}"
        if len(set(args)) == 1:
            return f"list of {len(args)} {_plural(args[0])}{suffix}"
        return "list of " + ", ".join(describe_type(arg) for arg in args) + suffix
    return _describe_scalar(inner) + suffix


def _describe_scalar(inner: Any) -> str:
    if inner is Destination:
        return "AET@HOST:PORT"
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        return "one of: " + ", ".join(str(member.value) for member in inner)
    names = {bool: "boolean", int: "integer", float: "number", str: "text", Path: "path"}
    if inner in names:
        return names[inner]
    raise TypeError(f"the settings documents cannot describe the type {inner!r}")


def _plural(inner: Any) -> str:
    text = _describe_scalar(inner)
    plurals = {"boolean": "booleans", "integer": "integers", "number": "numbers", "path": "paths"}
    return plurals.get(text, text)


def toml_value(value: Any) -> str:
    """``value`` written as a TOML literal (``None`` as ``""``, which the loader reads as unset).

    Raises
    ------
    TypeError
        For a value type the settings do not use.
    """
    if isinstance(value, enum.Enum):
        return toml_value(value.value)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return _toml_scalar(value)


def _toml_scalar(value: Any) -> str:
    """One value that is neither an enum member nor a sequence, as :func:`toml_value` writes it."""
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str | Path | Destination):
        return json.dumps(str(value), ensure_ascii=False)
    raise TypeError(f"cannot write {value!r} ({type(value).__name__}) as a TOML value")


def settings_sections() -> list[SettingsSection]:
    """Every section and setting, in the order of :class:`~service.settings.model.Settings`.

    Raises
    ------
    LookupError
        When a field has no documentation (``metadata=doc(...)``).
    """
    flags = flags_by_setting(_DOCUMENTED_FLAGS)
    sections = []
    for name, cls, repeatable in SECTIONS:
        hints = typing.get_type_hints(cls)
        entries = []
        for field in dataclasses.fields(cls):
            help_text = field.metadata.get(HELP_KEY, "")
            if not help_text:
                raise LookupError(f"setting {name}.{field.name} has no metadata=doc(...)")
            required = (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            )
            if field.default is not dataclasses.MISSING:
                default = field.default
            elif field.default_factory is not dataclasses.MISSING:
                default = field.default_factory()
            else:
                default = _EXAMPLE_VALUES.get((name, field.name), "EXAMPLE")
            entries.append(
                SettingEntry(
                    section=name,
                    key=field.name,
                    type_text=describe_type(hints[field.name]),
                    default=default,
                    required=required,
                    env_var="" if repeatable else f"{ENV_PREFIX}{name}_{field.name}".upper(),
                    flags=flags.get((name, field.name), ()),
                    help=help_text,
                )
            )
        # The first paragraph of the class docstring; the rest is for programmers.
        summary = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        sections.append(SettingsSection(name, summary, repeatable, tuple(entries)))
    return sections


def _comment(text: str, indent: str = "# ") -> list[str]:
    return textwrap.wrap(
        text,
        width=_COMMENT_WIDTH,
        initial_indent=indent,
        subsequent_indent=indent,
        break_on_hyphens=False,
    )


_TOML_HEADER = f"""\
# wbdwi-node settings: every setting, its default and what it does.
#
# How to use this file: copy it, then edit the copy. Bare metal: copy it to
# /etc/wbdwi/wbdwi.toml; container: copy it on the host, mount the copy into the
# container (read-only) and name it with {CONFIG_ENV}. Every key is commented out
# with its default value ("#key = value"). In your copy, uncomment only the keys you change
# ("key = value") and leave the others commented, so that they follow the
# defaults of the installed version after an upgrade. With no file at all the
# node runs on these defaults. `wbdwi settings --example-toml` prints this text
# for the installed version.
#
# Precedence: flags of `wbdwi serve` > {ENV_PREFIX}<SECTION>_<KEY> environment variables >
# this file (--config FILE, or the file named by {CONFIG_ENV}) > defaults.
# In environment variables lists are comma-separated and booleans are
# true/false (also 1/0, yes/no, on/off). An empty string ("") leaves an
# optional setting unset. Unknown keys and bad values stop the node with a
# message that names the setting.
# The settings reference with the same content: docs/settings.md.
#
# For developers: deploy/wbdwi.example.toml in the source tree is generated from
# the settings model (service/settings/) by `{REGENERATE_COMMAND}`; to change
# it there, change the model and regenerate (tests/unit/test_settings_doc.py
# fails when the file is out of date).
"""


def render_example_toml() -> str:
    """The text of ``deploy/wbdwi.example.toml``."""
    lines = [_TOML_HEADER.rstrip("\n")]
    for section in settings_sections():
        lines.append("")
        lines.append("")
        header = f"[[{section.name}]]" if section.repeatable else f"[{section.name}]"
        lines.append("# " + "-" * (_COMMENT_WIDTH - 2))
        lines.extend(_comment(section.summary))
        if section.repeatable:
            lines.extend(
                _comment(
                    f"Repeat the whole [[{section.name}]] table once per entry; set in the "
                    "file only (no environment variables). Example entry:"
                )
            )
            lines.append("#" + header)
        else:
            lines.append(header)
        for entry in section.entries:
            lines.append("")
            lines.extend(_comment(entry.help))
            facts = [entry.type_text]
            if entry.required:
                facts.append("required in each entry")
            if entry.env_var:
                facts.append(f"env {entry.env_var}")
            if entry.flags:
                facts.append("flag " + ", ".join(entry.flags))
            lines.extend(_comment("; ".join(facts), indent="#   "))
            value = toml_value(entry.default)
            note = "  # unset" if entry.default is None else ""
            lines.append(f"#{entry.key} = {value}{note}")
    return "\n".join(lines) + "\n"


def render_effective_toml(settings: Settings) -> str:
    """``settings`` as a TOML file (every key set), which loads back to equal settings.

    ``wbdwi settings --effective`` prints it: the values in force after the
    file, the environment and the defaults are combined.
    """
    lines = [
        "# wbdwi-node settings in force (defaults < file < environment), from "
        "`wbdwi settings --effective`."
    ]
    for name, cls, repeatable in SECTIONS:
        value = getattr(settings, name)
        tables = list(value) if repeatable else [value]
        for table in tables:
            lines.append("")
            lines.append(f"[[{name}]]" if repeatable else f"[{name}]")
            for field in dataclasses.fields(cls):
                lines.append(f"{field.name} = {toml_value(getattr(table, field.name))}")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _default_cell(entry: SettingEntry) -> str:
    if entry.required:
        return "required"
    if entry.default is None:
        return "unset"
    return f"`{_cell(toml_value(entry.default))}`"


_MARKDOWN_HEADER = f"""\
# Settings reference

<!-- GENERATED by `{REGENERATE_COMMAND}` from the settings model
(service/settings/); do not edit by hand. tests/unit/test_settings_doc.py
fails when this file is out of date. -->

Every setting of the node, generated from the settings model
(`service/settings/`, with the `[processing]` fields from
`processing/settings.py`). `deploy/wbdwi.example.toml` holds the same settings
as a commented TOML file to start a configuration from; `wbdwi settings
--example-toml` prints it for the installed version.

Precedence: flags of `wbdwi serve` > `{ENV_PREFIX}<SECTION>_<KEY>` environment
variables > the TOML file (`--config FILE`, or the file named by
`{CONFIG_ENV}`) > defaults. With no configuration at all the node runs on the
defaults below.

- **TOML file**: `[section]` tables with `key = value`; `[[calling_ae]]` is an
  array of tables, one per scanner, and exists only in the file.
- **Environment**: `{ENV_PREFIX}<SECTION>_<KEY>` in upper case, e.g.
  `{ENV_PREFIX}NODE_PORT=104`. Lists are comma-separated
  (`{ENV_PREFIX}EXPORT_DESTINATIONS=PACS@pacs:104,AI@ai:11112`), booleans are
  `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`), and an empty value
  leaves an optional setting unset. An unknown `{ENV_PREFIX}*` variable stops
  the node with the list of known prefixes.
- **Defaults** are shown as TOML values; *unset* means no value (the
  description says what applies then).
- Unknown keys and bad values stop the node with a message that names the
  setting (and a suggestion for a misspelt key).
"""


def render_settings_markdown() -> str:
    """The text of ``docs/settings.md``."""
    lines = [_MARKDOWN_HEADER.rstrip("\n")]
    for section in settings_sections():
        title = f"[[{section.name}]]" if section.repeatable else f"[{section.name}]"
        lines += ["", f"## `{title}`", "", section.summary]
        if section.repeatable:
            lines += [
                "",
                f"Repeatable, in the file only: one `[[{section.name}]]` table per entry.",
            ]
        lines += [
            "",
            "| key | environment variable | flag | type | default | description |",
            "|---|---|---|---|---|---|",
        ]
        for entry in section.entries:
            env = f"`{entry.env_var}`" if entry.env_var else "file only"
            flags = ", ".join(f"`{_cell(flag)}`" for flag in entry.flags) or ""
            lines.append(
                f"| `{entry.key}` | {env} | {flags} | {_cell(entry.type_text)} | "
                f"{_default_cell(entry)} | {_cell(entry.help)} |"
            )
    return "\n".join(lines) + "\n"


def _write(root: Path) -> list[Path]:
    written = []
    for relative, text in (
        (EXAMPLE_TOML_PATH, render_example_toml()),
        (SETTINGS_MARKDOWN_PATH, render_settings_markdown()),
    ):
        target = root / relative
        if not target.parent.is_dir():
            raise FileNotFoundError(
                f"{target.parent} does not exist: run this in the repository root or pass --root"
            )
        target.write_text(text, encoding="utf-8")
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m service.settings``: print or write the generated documents."""
    parser = argparse.ArgumentParser(
        prog="python -m service.settings",
        description="Generate deploy/wbdwi.example.toml and docs/settings.md from the "
        "settings model.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--example-toml", action="store_true", help="print the example TOML")
    mode.add_argument("--markdown", action="store_true", help="print the settings reference")
    mode.add_argument(
        "--write",
        action="store_true",
        help=f"write {EXAMPLE_TOML_PATH} and {SETTINGS_MARKDOWN_PATH} under --root",
    )
    parser.add_argument(
        "--root", type=Path, default=Path(), help="repository root (default: current folder)"
    )
    args = parser.parse_args(argv)
    if args.example_toml:
        sys.stdout.write(render_example_toml())
    elif args.markdown:
        sys.stdout.write(render_settings_markdown())
    else:
        try:
            written = _write(args.root)
        except OSError as error:
            print(f"service.settings: {error}", file=sys.stderr)
            return 2
        for path in written:
            print(f"wrote {path}")
    return 0
