"""The example TOML and the settings reference are generated from the model and cannot drift."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import tomllib
from pathlib import Path

import pytest

from processing.backend import Device
from service.cli import main as wbdwi
from service.commands.serve import register as register_serve
from service.commands.serve import settings_from_args
from service.settings import (
    CallingAeSettings,
    Destination,
    ExportSettings,
    LogFormat,
    NodeSettings,
    Settings,
    load_settings,
)
from service.settings.docs import (
    EXAMPLE_TOML_PATH,
    REGENERATE_COMMAND,
    SETTINGS_MARKDOWN_PATH,
    describe_type,
    render_effective_toml,
    render_example_toml,
    render_settings_markdown,
    settings_sections,
)
from service.settings.flags import DATA_DIR_FLAG, SERVE_FLAGS, flag_overrides, flags_by_setting
from service.settings.model import SECTIONS

REPO = Path(__file__).resolve().parents[2]
_COMMENTED_TOML = re.compile(r"^#(\[\[?[a-z_]+\]\]?|[a-z_0-9]+ = .*)$")


def _assert_up_to_date(relative: Path, generated: str) -> None:
    committed = (REPO / relative).read_text(encoding="utf-8")
    if committed != generated:
        diff = "".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(keepends=True),
                    generated.splitlines(keepends=True),
                    f"{relative} (committed)",
                    f"{relative} (generated from the settings model)",
                )
            )[:40]
        )
        pytest.fail(
            f"{relative} is out of date with the settings model; regenerate it in the "
            f"repository root with:\n    {REGENERATE_COMMAND}\n{diff}",
            pytrace=False,
        )


def test_committed_example_toml_is_generated_from_the_model() -> None:
    _assert_up_to_date(EXAMPLE_TOML_PATH, render_example_toml())


def test_committed_settings_reference_is_generated_from_the_model() -> None:
    _assert_up_to_date(SETTINGS_MARKDOWN_PATH, render_settings_markdown())


def test_example_toml_loads_as_is_to_the_defaults(tmp_path: Path) -> None:
    example = tmp_path / "wbdwi.toml"
    example.write_text(render_example_toml(), encoding="utf-8")
    assert load_settings(example, env={}) == Settings()


def _uncommented(text: str) -> str:
    return "\n".join(
        line[1:] if _COMMENTED_TOML.match(line) else line for line in text.splitlines()
    )


def test_every_commented_default_loads_and_equals_the_default(tmp_path: Path) -> None:
    text = _uncommented(render_example_toml())
    table = tomllib.loads(text)
    # Every field of every section is in the file, as a key.
    for section in settings_sections():
        tables = table[section.name] if section.repeatable else [table[section.name]]
        for values in tables:
            assert set(values) == {entry.key for entry in section.entries}, section.name
    example = tmp_path / "wbdwi.toml"
    example.write_text(text, encoding="utf-8")
    loaded = load_settings(example, env={})
    # The one example [[calling_ae]] entry holds its defaults too.
    assert loaded == dataclasses.replace(
        Settings(), calling_ae=(CallingAeSettings(ae_title="SCANNER1"),)
    )


def test_reference_lists_every_setting_with_env_var_flag_and_default() -> None:
    markdown = render_settings_markdown()
    rows = {line.split(" | ")[0].strip("| `"): line for line in markdown.splitlines()}
    assert rows["port"].startswith("| `port` | `WBDWI_NODE_PORT` | `--port` | integer | `11112` |")
    assert "`--destination (repeatable)`" in rows["destinations"]
    assert "`WBDWI_EXPORT_DESTINATIONS`" in rows["destinations"]
    assert "| file only |" in rows["series_include"]
    assert "| unset |" in rows["results_dir"]
    for section in settings_sections():
        heading = f"## `[[{section.name}]]`" if section.repeatable else f"## `[{section.name}]`"
        assert heading in markdown
        for entry in section.entries:
            assert entry.help, f"{section.name}.{entry.key} has no help text"
            assert f"| `{entry.key}` |" in markdown


# A command-line value for each flag of the table, and the setting it must give.
_FLAG_SAMPLES: dict[str, tuple[list[str], object]] = {
    "--data-dir": (["--data-dir", "/srv/wbdwi"], Path("/srv/wbdwi")),
    "--port": (["--port", "104"], 104),
    "--aet": (["--aet", "NODE1"], "NODE1"),
    "--bind": (["--bind", "127.0.0.1"], "127.0.0.1"),
    "--quiet-seconds": (["--quiet-seconds", "12.5"], 12.5),
    "--mpps-grace-seconds": (["--mpps-grace-seconds", "4"], 4.0),
    "--destination": (
        ["--destination", "PACS@pacs:104", "--destination", "AI@ai:11112"],
        (Destination("PACS", "pacs", 104), Destination("AI", "ai", 11112)),
    ),
    "--http-port": (["--http-port", "0"], 0),
    "--device": (["--device", "cpu"], Device.CPU),
    "--calling-ae-allow": (["--calling-ae-allow", "MR1"], ("MR1",)),
    "--no-fsync": (["--no-fsync"], False),
    "--log-format": (["--log-format", "json"], LogFormat.JSON),
}


def _serve_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    register_serve(subparsers)
    return parser.parse_args(["serve", *argv])


def test_every_serve_flag_sets_its_setting_through_the_real_parser(tmp_path: Path) -> None:
    flags = (DATA_DIR_FLAG, *SERVE_FLAGS)
    assert {flag.option for flag in flags} == set(_FLAG_SAMPLES)
    for flag in flags:
        argv, expected = _FLAG_SAMPLES[flag.option]
        args = _serve_args(argv)
        assert flag_overrides(args, flags) == {flag.section: {flag.key: args.__dict__[flag.dest]}}
        args.config = None
        settings = settings_from_args(args)
        assert getattr(getattr(settings, flag.section), flag.key) == expected, flag.option
    # No flag given: nothing is overridden.
    assert flag_overrides(_serve_args([]), flags) == {}


def test_serve_help_lists_exactly_the_declared_flags() -> None:
    parser = argparse.ArgumentParser(prog="wbdwi")
    subparsers = parser.add_subparsers()
    register_serve(subparsers)
    help_text = subparsers.choices["serve"].format_help()
    options = set(re.findall(r"(?m)^  (?:-[a-z], )?(--[a-z-]+)", help_text))
    declared = {flag.option for flag in (DATA_DIR_FLAG, *SERVE_FLAGS)}
    # Every option of `wbdwi serve` sets a setting, except --config (and -h/--help) and
    # the process's role with its worker options (issue 15).
    assert options - declared == {"--help", "--config", "--role", "--queue", "--gpu", "--name"}
    assert declared <= options


def test_reference_flags_come_from_the_declared_table() -> None:
    flags = flags_by_setting((DATA_DIR_FLAG, *SERVE_FLAGS))
    assert flags[("node", "port")] == ("--port",)
    assert flags[("receive", "fsync")] == ("--no-fsync",)
    assert flags[("export", "destinations")] == ("--destination (repeatable)",)
    documented = {
        (section.name, entry.key): entry.flags
        for section in settings_sections()
        for entry in section.entries
    }
    assert {key: value for key, value in documented.items() if value} == flags


def test_sections_follow_the_settings_fields_and_every_type_is_described() -> None:
    assert [section.name for section in SECTIONS] == [
        field.name for field in dataclasses.fields(Settings)
    ]
    for section in settings_sections():
        for entry in section.entries:
            assert entry.type_text, f"{section.name}.{entry.key}"
    assert describe_type(tuple[float, float]) == "list of 2 numbers"
    assert describe_type(Path | None) == "path, optional"
    assert describe_type(tuple[Destination, ...]) == "list of AET@HOST:PORT"
    with pytest.raises(TypeError, match="cannot describe"):
        describe_type(dict)


def test_effective_settings_round_trip(tmp_path: Path) -> None:
    settings = dataclasses.replace(
        Settings(),
        node=NodeSettings(ae_title="NODE1", port=104, data_dir=tmp_path / "data"),
        export=ExportSettings(
            destinations=(Destination("PACS", "pacs.example.org", 104),),
            results_dir=tmp_path / "results",
        ),
        calling_ae=(
            CallingAeSettings("SCANNER1", quiet_seconds=30.0, series_include=("*DWI*",)),
            CallingAeSettings("SCANNER2"),
        ),
    )
    path = tmp_path / "effective.toml"
    path.write_text(render_effective_toml(settings), encoding="utf-8")
    assert load_settings(path, env={}) == settings


def test_wbdwi_settings_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert wbdwi(["settings", "--example-toml"]) == 0
    assert capsys.readouterr().out == render_example_toml()
    for name in [name for name in os.environ if name.startswith("WBDWI_")]:
        monkeypatch.delenv(name)
    config = tmp_path / "node.toml"
    config.write_text('[node]\nport = 104\n[receive]\nfsync = "maybe"\n', encoding="utf-8")
    assert wbdwi(["settings", "--effective", "--config", str(config)]) == 2
    assert "receive.fsync: 'maybe' is not a boolean" in capsys.readouterr().err
    config.write_text("[node]\nport = 104\n", encoding="utf-8")
    assert wbdwi(["settings", "--effective", "--config", str(config)]) == 0
    assert "\nport = 104\n" in capsys.readouterr().out
