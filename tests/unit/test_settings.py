"""Settings: defaults, TOML file, WBDWI_* environment and flags, in that order of precedence."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from processing.backend import Device
from service.settings import (
    Destination,
    ExportSettings,
    NodeSettings,
    OtherStoragePolicy,
    SettingsError,
    load_settings,
    parse_destination,
    processing_settings_from_mapping,
    processing_settings_to_mapping,
)
from service.settings.docs import settings_sections


def test_defaults_without_any_configuration() -> None:
    settings = load_settings(env={})
    assert settings.node.port == 11112
    assert settings.node.ae_title == "WBDWI"
    assert settings.node.data_dir == Path("wbdwi-data")
    assert settings.completion.quiet_seconds == 60.0
    assert settings.receive.calling_ae_allow == ()
    assert settings.export.destinations == ()
    assert settings.export.backoff_initial_seconds == 1.0
    assert settings.export.backoff_max_seconds == 600.0
    assert settings.node.device is Device.AUTO
    assert settings.results_dir == Path("wbdwi-data") / "results"


def test_precedence_flags_over_env_over_file(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        '[node]\nport = 104\nae_title = "FILEAE"\nhttp_port = 9000\n'
        "[completion]\nquiet_seconds = 30\n"
        '[export]\ndestinations = ["PACS@pacs.example.org:104"]\n'
    )
    env = {"WBDWI_NODE_PORT": "2104", "WBDWI_COMPLETION_QUIET_SECONDS": "20"}
    settings = load_settings(config, env=env, overrides={"node": {"port": 3104}})
    assert settings.node.port == 3104  # flag
    assert settings.completion.quiet_seconds == 20.0  # env over file
    assert settings.node.ae_title == "FILEAE"  # file over default
    assert settings.node.http_port == 9000
    assert settings.export.destinations == (Destination("PACS", "pacs.example.org", 104),)


def test_config_file_named_by_environment(tmp_path: Path) -> None:
    config = tmp_path / "x.toml"
    config.write_text('[node]\nae_title = "ENVFILE"\n')
    assert load_settings(env={"WBDWI_CONFIG": str(config)}).node.ae_title == "ENVFILE"


def test_environment_lists_and_enums() -> None:
    settings = load_settings(
        env={
            "WBDWI_EXPORT_DESTINATIONS": "A@h1:104, B@[::1]:11112",
            "WBDWI_RECEIVE_CALLING_AE_ALLOW": "SCANNER1,SCANNER2",
            "WBDWI_RECEIVE_OTHER_STORAGE": "reject",
            "WBDWI_RECEIVE_FSYNC": "off",
            "WBDWI_NODE_DEVICE": "CPU",
        }
    )
    assert settings.export.destinations == (
        Destination("A", "h1", 104),
        Destination("B", "::1", 11112),
    )
    assert settings.receive.calling_ae_allow == ("SCANNER1", "SCANNER2")
    assert settings.receive.other_storage is OtherStoragePolicy.REJECT
    assert settings.receive.fsync is False
    assert settings.node.device is Device.CPU


def test_per_calling_ae_settings(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        "[completion]\nquiet_seconds = 90\n"
        '[[calling_ae]]\nae_title = "MR1"\nquiet_seconds = 15\nseries_include = ["*DWI*"]\n'
    )
    settings = load_settings(config, env={})
    assert settings.quiet_seconds_for("MR1") == 15.0
    assert settings.quiet_seconds_for("OTHER") == 90.0
    assert settings.for_calling_ae("MR1").series_include == ("*DWI*",)
    assert settings.for_calling_ae("OTHER").series_include == ()


def test_a_calling_ae_entry_without_its_title_names_the_missing_key(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text("[[calling_ae]]\nquiet_seconds = 15\n")
    with pytest.raises(SettingsError) as raised:
        load_settings(config, env={})
    assert str(raised.value) == "missing required setting calling_ae[0].ae_title"


def test_processing_section_maps_onto_processing_settings(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        "[processing]\nadc_min_b = 100\ncomputed_b_values = [1000, 1500]\n"
        "adc_window_um2s = [400, 2000]\n"
    )
    processing = load_settings(config, env={}).processing
    assert processing.adc_min_b == 100.0
    assert processing.computed_b_values == (1000.0, 1500.0)
    assert processing.adc_window_um2s == (400.0, 2000.0)
    mapping = processing_settings_to_mapping(processing)
    assert processing_settings_from_mapping(mapping) == processing


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[node]\nprot = 104\n", "did you mean 'port'"),
        ("[node]\nport = 70000\n", "outside 1..65535"),
        ('[node]\nport = "abc"\n', "not an integer"),
        ('[node]\nae_title = "MUCH_TOO_LONG_AE_TITLE"\n', "longer than 16"),
        ('[export]\ndestinations = ["pacs:104"]\n', "AET@HOST:PORT"),
        ("[nodes]\nport = 1\n", "unknown section [nodes]"),
        ("[processing]\nadc_window_um2s = [2000, 400]\n", "low < high"),
        ("[processing]\nadc_window_um2s = [1, 2, 3]\n", "expected 2 values"),
        ('[[calling_ae]]\nae_title = "A"\n[[calling_ae]]\nae_title = "A"\n', "twice"),
        ("[export]\nmax_attempts = 0\n", "at least 1"),
        ("node = 3\n", "must be a [section] table"),
        ("[receive]\nmax_connections = 8\n", "must be at least max_associations"),
        ("[receive]\nmax_connections_per_address = 0\n", "max_connections_per_address must"),
        ("[receive]\npdu_timeout_seconds = 0\n", "pdu_timeout_seconds must be more than 0"),
    ],
)
def test_bad_values_are_named(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(SettingsError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_settings(config, env={})


def test_unknown_environment_setting_is_refused() -> None:
    with pytest.raises(SettingsError, match="WBDWI_NODES_PORT"):
        load_settings(env={"WBDWI_NODES_PORT": "1"})


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "absent.toml", env={})
    broken = tmp_path / "broken.toml"
    broken.write_text("[node\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(broken, env={})


def test_parse_destination_forms() -> None:
    assert parse_destination("PACS@10.0.0.5:104") == Destination("PACS", "10.0.0.5", 104)
    assert str(parse_destination("AI@[fe80::1]:11112")) == "AI@fe80::1:11112"
    with pytest.raises(SettingsError, match="outside"):
        parse_destination("PACS@h:0")


def test_reference_covers_every_setting_with_help_and_env_name() -> None:
    rows = [entry for section in settings_sections() for entry in section.entries]
    keys = {(row.section, row.key) for row in rows}
    assert ("node", "port") in keys
    assert ("processing", "adc_min_b") in keys
    assert ("calling_ae", "series_include") in keys
    port = next(row for row in rows if (row.section, row.key) == ("node", "port"))
    assert port.env_var == "WBDWI_NODE_PORT"
    assert port.default == 11112
    missing_help = [f"{row.section}.{row.key}" for row in rows if not row.help]
    assert missing_help == []


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: NodeSettings(port=0), "port 0 is outside 1..65535"),
        (lambda: NodeSettings(workers=0, http_port=-1), "http_port -1 .*; workers must be at"),
        (lambda: ExportSettings(backoff_initial_seconds=0), "backoff_initial_seconds must be > 0"),
    ],
)
def test_each_section_checks_itself_when_built(build: Callable[[], object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        build()


def test_the_loader_names_the_section_or_entry_of_a_bad_value(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^node: port 0 is outside 1\.\.65535$"):
        load_settings(env={"WBDWI_NODE_PORT": "0"})
    config = tmp_path / "node.toml"
    config.write_text('[[calling_ae]]\nae_title = "MR1"\nquiet_seconds = -1\n')
    with pytest.raises(SettingsError, match=r"^calling_ae\[0\]: quiet_seconds cannot be"):
        load_settings(config, env={})
    config.write_text('[[calling_ae]]\nae_title = "MUCH_TOO_LONG_AE_TITLE"\n')
    with pytest.raises(SettingsError, match=r"^calling_ae\[0\]\.ae_title: AE title"):
        load_settings(config, env={})
