"""One settings object for the node: defaults < TOML file < ``WBDWI_*`` environment < flags.

Every setting is a field of a frozen dataclass in one of the sections below. The
field's ``metadata["help"]`` is its documentation, so that a settings reference
(:func:`describe_settings`) is generated from the model itself and never drifts
from the code.

File layout (every section and key optional)::

    [node]
    ae_title = "WBDWI"
    port = 11112

    [receive]
    calling_ae_allow = ["SCANNER1", "SCANNER2"]

    [completion]
    quiet_seconds = 60

    [[calling_ae]]            # per scanner; repeatable
    ae_title = "SCANNER1"
    quiet_seconds = 30
    series_include = ["*DWI*", "*diffusion*"]
    expected_stations = 5     # fewer: held, then processed with the verdict saying so

    [export]
    destinations = ["PACS@pacs.example.org:104"]

    [processing]              # fields of processing.settings.ProcessingSettings
    adc_min_b = 50

    [tls]                     # DICOM TLS (PS3.15 B.1), PEM files
    certificate = "/etc/wbdwi/node.crt"
    private_key = "/etc/wbdwi/node.key"
    ca_bundle = "/etc/wbdwi/hospital-ca.pem"
    listener = true

    [priors]                  # comparison with earlier exams (docs/response.md)
    pacs = "PACS@pacs.example.org:104"

    [retention]               # removal after delivery (docs/service.md)
    spool_days = 30

Environment variables are ``WBDWI_<SECTION>_<KEY>`` in upper case, for example
``WBDWI_NODE_PORT=104`` or ``WBDWI_EXPORT_DESTINATIONS=PACS@pacs:104,AI@ai:11112``
(lists are comma-separated). ``WBDWI_CONFIG`` names the TOML file when no
``--config`` flag is given. Per-calling-AE tables are set in the file only.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import enum
import inspect
import itertools
import os
import re
import ssl
import textwrap
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicom_node.coverage import CoverageExpectation
from dicom_node.tls import TlsConfigurationError, client_context, server_context
from processing.backend import Device
from processing.settings import ProcessingSettings, settings_as_dict
from service.priors_retention_settings import (
    PriorsSettings,
    RetentionSettings,
    doc,
    priors_settings_problems,
    retention_settings_problems,
)

__all__ = [
    "LOG_LEVELS",
    "CallingAeSettings",
    "CompletionSettings",
    "Destination",
    "ExportSettings",
    "LogFormat",
    "LoggingSettings",
    "NodeSettings",
    "OtherStoragePolicy",
    "ReceiveSettings",
    "SettingDoc",
    "Settings",
    "SettingsError",
    "TlsSettings",
    "describe_settings",
    "load_settings",
    "parse_destination",
    "processing_settings_from_mapping",
    "processing_settings_to_mapping",
    "validate_ae_title",
]

ENV_PREFIX = "WBDWI_"
CONFIG_ENV = "WBDWI_CONFIG"
LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """A setting has a bad value or an unknown name; the message names it and says why."""


class OtherStoragePolicy(enum.Enum):
    """What the SCP does with storage SOP classes that are not MR images."""

    ACCEPT_AND_IGNORE = "accept-and-ignore"
    REJECT = "reject"


class LogFormat(enum.Enum):
    """Log renderer: JSON lines, a human console renderer, or console on a TTY only."""

    AUTO = "auto"
    JSON = "json"
    CONSOLE = "console"


@dataclass(frozen=True, slots=True)
class Destination:
    """A DICOM peer that receives the results (C-STORE SCP), written ``AET@HOST:PORT``."""

    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """The node's identity, network endpoints, storage and compute device."""

    ae_title: str = field(default="WBDWI", metadata=doc("AE title of the node (called AE)."))
    port: int = field(default=11112, metadata=doc("DICOM port (C-ECHO, C-STORE, MPPS)."))
    bind_address: str = field(
        default="0.0.0.0", metadata=doc("Address the DICOM and HTTP listeners bind to.")
    )
    data_dir: Path = field(
        default=Path("wbdwi-data"),
        metadata=doc("Folder for the spool, the job store and the results (relative to cwd)."),
    )
    http_port: int = field(
        default=8080, metadata=doc("Port of /healthz, /readyz and /metrics; 0 turns HTTP off.")
    )
    device: Device = field(
        default=Device.AUTO, metadata=doc("Processing device: auto (GPU when usable), gpu, cpu.")
    )
    workers: int = field(
        default=1, metadata=doc("Exams processed at once (one per GPU is the norm).")
    )
    shutdown_grace_seconds: float = field(
        default=30.0,
        metadata=doc(
            "On SIGTERM, how long the current job may run on before it is left to resume "
            "at the next start."
        ),
    )


@dataclass(frozen=True, slots=True)
class ReceiveSettings:
    """The storage SCP: who may send, what is accepted, how it is stored."""

    max_associations: int = field(
        default=16, metadata=doc("Concurrent associations accepted; more are rejected.")
    )
    calling_ae_allow: tuple[str, ...] = field(
        default=(), metadata=doc("Calling AE titles allowed to associate; empty allows any.")
    )
    check_called_ae: bool = field(
        default=True, metadata=doc("Reject associations whose called AE is not ours.")
    )
    other_storage: OtherStoragePolicy = field(
        default=OtherStoragePolicy.ACCEPT_AND_IGNORE,
        metadata=doc(
            "Non-MR storage classes: accept-and-ignore (answer success, do not keep) or reject "
            "(no presentation context)."
        ),
    )
    fsync: bool = field(
        default=True,
        metadata=doc(
            "fsync each received file before answering success (safe against power loss). "
            "Off: still safe against a process crash, faster."
        ),
    )
    network_timeout_seconds: float = field(
        default=60.0, metadata=doc("An idle association is closed after this many seconds.")
    )
    max_pdu_bytes: int = field(
        default=131072, metadata=doc("Maximum PDU length we receive (0 = unlimited).")
    )


@dataclass(frozen=True, slots=True)
class CompletionSettings:
    """When an exam counts as complete."""

    quiet_seconds: float = field(
        default=60.0,
        metadata=doc("Without MPPS: the study is complete this long after its last instance."),
    )
    mpps_grace_seconds: float = field(
        default=3.0,
        metadata=doc(
            "After MPPS COMPLETED: wait this long after the last instance for stragglers "
            "(skipped when every instance the MPPS lists has arrived)."
        ),
    )
    incomplete_extra_wait_seconds: float = field(
        default=300.0,
        metadata=doc(
            "An exam that looks complete but whose coverage is not (fewer stations than "
            "expected, a gap between stations, a station without a b-value or with missing "
            "slices) is held this much longer for the rest to arrive; then it is processed "
            "and its verdict says what is missing. 0: no hold."
        ),
    )
    expected_stations: int | None = field(
        default=None,
        metadata=doc(
            "Stations of a complete whole-body exam (e.g. 4-6); fewer is incomplete. "
            "Unset: not checked (per scanner: [[calling_ae]] expected_stations)."
        ),
    )
    expected_coverage_mm: float | None = field(
        default=None,
        metadata=doc(
            "Head-to-feet length of a complete exam in mm (vertex or skull base to mid-thigh, "
            "e.g. 1000); shorter is incomplete. Unset: not checked (per scanner: "
            "[[calling_ae]] expected_coverage_mm)."
        ),
    )


@dataclass(frozen=True, slots=True)
class CallingAeSettings:
    """Settings for one sending AE (scanner); unset values follow the global ones."""

    ae_title: str = field(metadata=doc("The scanner's calling AE title."))
    quiet_seconds: float | None = field(
        default=None, metadata=doc("Quiet period for this scanner (default: global).")
    )
    series_include: tuple[str, ...] = field(
        default=(),
        metadata=doc(
            "Glob patterns on SeriesDescription (case-insensitive) of the series to process; "
            "empty: all series (assembly picks the diffusion ones)."
        ),
    )
    expected_stations: int | None = field(
        default=None,
        metadata=doc("Stations of a complete exam from this scanner (default: global)."),
    )
    expected_coverage_mm: float | None = field(
        default=None,
        metadata=doc("Head-to-feet length of a complete exam, mm (default: global)."),
    )


@dataclass(frozen=True, slots=True)
class ExportSettings:
    """Where results go and how delivery is retried."""

    destinations: tuple[Destination, ...] = field(
        default=(),
        metadata=doc("Result destinations, AET@HOST:PORT; none: results stay in results_dir."),
    )
    results_dir: Path | None = field(
        default=None, metadata=doc("Folder for result files (default: <data_dir>/results).")
    )
    backoff_initial_seconds: float = field(
        default=1.0, metadata=doc("First retry delay after a failed delivery.")
    )
    backoff_max_seconds: float = field(
        default=600.0, metadata=doc("Retry delay cap (the delay doubles up to it).")
    )
    max_attempts: int = field(
        default=40, metadata=doc("Delivery attempts before a result is dead-lettered.")
    )
    rejected_retry_seconds: float = field(
        default=600.0,
        metadata=doc(
            "Retry delay after the destination rejected the association (a configuration "
            "problem: AE titles), so that a misconfigured PACS is not hammered."
        ),
    )
    timeout_seconds: float = field(
        default=30.0, metadata=doc("Association and DIMSE timeout of the sender.")
    )


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """Structured logs on standard error."""

    level: str = field(default="info", metadata=doc("debug, info, warning or error."))
    format: LogFormat = field(
        default=LogFormat.AUTO, metadata=doc("auto (console on a TTY, else JSON), json, console.")
    )


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """DICOM TLS (PS3.15 B.1) on the listener and towards the destinations."""

    certificate: Path | None = field(
        default=None,
        metadata=doc(
            "PEM certificate (chain) of the node: served on the listener, and presented to "
            "destinations that ask for a client certificate."
        ),
    )
    private_key: Path | None = field(
        default=None, metadata=doc("PEM private key of the certificate.")
    )
    ca_bundle: Path | None = field(
        default=None,
        metadata=doc(
            "PEM CA certificates trusted for peers: the scanners' client certificates "
            "(verify_clients) and the destinations' server certificates (export; unset: "
            "the system's CAs)."
        ),
    )
    listener: bool = field(
        default=False,
        metadata=doc("The DICOM port speaks TLS (needs certificate and private_key)."),
    )
    verify_clients: bool = field(
        default=False,
        metadata=doc(
            "Require a client certificate signed by ca_bundle on the listener (mutual TLS)."
        ),
    )
    export: bool = field(
        default=False,
        metadata=doc(
            "Associate with the destinations, the priors peer (and `wbdwi echo` peers) over TLS."
        ),
    )
    check_hostname: bool = field(
        default=True,
        metadata=doc("Check that a destination's certificate names the host we connect to."),
    )

    def listener_context(self) -> ssl.SSLContext | None:
        """Server context of the DICOM port, ``None`` without ``listener``.

        Raises :class:`~dicom_node.tls.TlsConfigurationError` for unusable files.
        """
        if not self.listener:
            return None
        if self.certificate is None or self.private_key is None:
            raise TlsConfigurationError("tls.listener needs tls.certificate and tls.private_key")
        return server_context(
            self.certificate,
            self.private_key,
            ca_bundle=self.ca_bundle,
            verify_clients=self.verify_clients,
        )

    def client_context(self) -> ssl.SSLContext:
        """Client context for associations the node opens (export, echo)."""
        return client_context(
            ca_bundle=self.ca_bundle,
            certificate=self.certificate,
            private_key=self.private_key,
            check_hostname=self.check_hostname,
        )

    def export_context(self) -> ssl.SSLContext | None:
        """Client context towards the destinations, ``None`` without ``export``."""
        return self.client_context() if self.export else None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the node is configured with, passed down explicitly."""

    node: NodeSettings = field(default_factory=NodeSettings)
    receive: ReceiveSettings = field(default_factory=ReceiveSettings)
    completion: CompletionSettings = field(default_factory=CompletionSettings)
    calling_ae: tuple[CallingAeSettings, ...] = ()
    export: ExportSettings = field(default_factory=ExportSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    processing: ProcessingSettings = field(default_factory=ProcessingSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    priors: PriorsSettings = field(default_factory=PriorsSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)

    @property
    def results_dir(self) -> Path:
        """Where result files are written."""
        return self.export.results_dir or self.node.data_dir / "results"

    def for_calling_ae(self, ae_title: str) -> CallingAeSettings:
        """The per-scanner settings of ``ae_title`` (global values when it has none)."""
        for entry in self.calling_ae:
            if entry.ae_title == ae_title.strip():
                return entry
        return CallingAeSettings(ae_title=ae_title.strip())

    def coverage_expected_for(self, ae_title: str) -> CoverageExpectation:
        """What a complete exam from ``ae_title`` covers (its own values, else the global)."""
        own = self.for_calling_ae(ae_title)
        completion = self.completion
        stations = own.expected_stations
        extent = own.expected_coverage_mm
        configured = stations is not None or extent is not None
        return CoverageExpectation(
            stations=completion.expected_stations if stations is None else stations,
            min_extent_mm=completion.expected_coverage_mm if extent is None else extent,
            source=f"calling AE {own.ae_title}" if configured else "this node",
        )

    def quiet_seconds_for(self, ae_title: str) -> float:
        """The quiet period that applies to studies sent by ``ae_title``."""
        own = self.for_calling_ae(ae_title).quiet_seconds
        return self.completion.quiet_seconds if own is None else own


# Sections that are a single table, by name; ``calling_ae`` is an array of tables.
_SECTIONS: dict[str, type[Any]] = {
    "node": NodeSettings,
    "receive": ReceiveSettings,
    "completion": CompletionSettings,
    "export": ExportSettings,
    "logging": LoggingSettings,
    "processing": ProcessingSettings,
    "tls": TlsSettings,
    "priors": PriorsSettings,
    "retention": RetentionSettings,
}

_AE_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")
_DESTINATION = re.compile(r"^(?P<aet>[^@]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\[\]]+):(?P<port>\d+)$")


def validate_ae_title(value: str, what: str) -> str:
    """Return ``value`` stripped when it is a valid AE title (PS3.5 6.2, VR AE)."""
    title = value.strip()
    if not title:
        raise SettingsError(f"{what}: an AE title cannot be empty")
    if len(title) > 16:
        raise SettingsError(f"{what}: AE title {title!r} is longer than 16 characters")
    if _AE_FORBIDDEN.search(title):
        raise SettingsError(f"{what}: AE title {title!r} contains a backslash or control character")
    return title


def parse_destination(text: str) -> Destination:
    """Parse ``AET@HOST:PORT`` (IPv6 hosts in brackets) into a :class:`Destination`."""
    match = _DESTINATION.match(text.strip())
    if match is None:
        raise SettingsError(f"destination {text!r} must be written AET@HOST:PORT")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise SettingsError(f"destination {text!r}: port {port} is outside 1..65535")
    host = match["host"].strip("[]")
    return Destination(validate_ae_title(match["aet"], f"destination {text!r}"), host, port)


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Turn a TOML or environment value into the field's type, or raise naming ``where``."""
    inner, optional = _unwrap_optional(hint)
    if optional and (value is None or (isinstance(value, str) and value.strip() == "")):
        return None
    origin = typing.get_origin(inner)
    if origin is tuple:
        args = typing.get_args(inner)
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
            _coerce(item, hint, f"{where}[{i}]")
            for i, (item, hint) in enumerate(zip(items, item_hints, strict=True))
        )
    if inner is Destination:
        if isinstance(value, Destination):
            return value
        return parse_destination(str(value))
    if isinstance(inner, type) and issubclass(inner, enum.Enum):
        if isinstance(value, inner):
            return value
        text = str(value).strip().lower()
        for member in inner:
            if str(member.value).lower() == text or member.name.lower() == text:
                return member
        allowed = ", ".join(str(member.value) for member in inner)
        raise SettingsError(f"{where}: {value!r} is not one of {allowed}")
    if inner is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise SettingsError(f"{where}: {value!r} is not a boolean (true/false)")
    if inner is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise SettingsError(f"{where}: {value!r} is not an integer")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{where}: {value!r} is not an integer") from None
    if inner is float:
        if isinstance(value, bool):
            raise SettingsError(f"{where}: {value!r} is not a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise SettingsError(f"{where}: {value!r} is not a number") from None
    if inner is Path:
        return Path(str(value)).expanduser()
    if inner is str:
        if not isinstance(value, str | int | float):
            raise SettingsError(f"{where}: expected text, got {value!r}")
        return str(value)
    if dataclasses.is_dataclass(inner) and isinstance(inner, type):
        if not isinstance(value, Mapping):
            raise SettingsError(f"{where}: expected a table, got {value!r}")
        return _build_section(inner, value, where)
    raise SettingsError(f"{where}: unsupported setting type {inner!r}")


def _build_section(cls: type[Any], values: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(names)}"
            raise SettingsError(f"unknown setting {where}.{key}{hint}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as error:
        raise SettingsError(f"{where}: {error}") from None
    except ValueError as error:
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
    known = {f"{ENV_PREFIX}{section.upper()}_": section for section in _SECTIONS}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        for prefix, section in known.items():
            if name.startswith(prefix):
                layer.setdefault(section, {})[name[len(prefix) :].lower()] = value
                break
        else:
            sections = ", ".join(f"{ENV_PREFIX}{s.upper()}_*" for s in _SECTIONS)
            raise SettingsError(f"unknown environment setting {name}; expected one of {sections}")
    return layer


def _merge(
    base: dict[str, Any], layer: Mapping[str, Mapping[str, Any]], origin: str
) -> dict[str, Any]:
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for section, values in layer.items():
        if section not in _SECTIONS:
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
        name: _build_section(cls, merged.get(name, {}), name) for name, cls in _SECTIONS.items()
    }
    calling = tuple(
        _build_section(CallingAeSettings, table, f"calling_ae[{i}]")
        for i, table in enumerate(calling_ae_tables)
    )
    settings = Settings(calling_ae=calling, **sections)
    _validate(settings)
    return settings


def processing_settings_to_mapping(settings: ProcessingSettings) -> dict[str, Any]:
    """JSON values of the processing settings (for a :class:`service.jobs.JobSpec`)."""
    return settings_as_dict(settings)


def processing_settings_from_mapping(values: Mapping[str, Any]) -> ProcessingSettings:
    """Rebuild :class:`ProcessingSettings` from JSON values, checking names and types."""
    built: ProcessingSettings = _build_section(ProcessingSettings, values, "processing")
    return built


def _validate(settings: Settings) -> None:
    node, receive, export = settings.node, settings.receive, settings.export
    validate_ae_title(node.ae_title, "node.ae_title")
    if not 1 <= node.port <= 65535:
        raise SettingsError(f"node.port {node.port} is outside 1..65535")
    if not 0 <= node.http_port <= 65535:
        raise SettingsError(f"node.http_port {node.http_port} is outside 0..65535 (0 = off)")
    if node.workers < 1:
        raise SettingsError(f"node.workers must be at least 1, got {node.workers}")
    if receive.max_associations < 1:
        raise SettingsError(
            f"receive.max_associations must be at least 1, got {receive.max_associations}"
        )
    for i, title in enumerate(receive.calling_ae_allow):
        validate_ae_title(title, f"receive.calling_ae_allow[{i}]")
    completion = settings.completion
    if (
        completion.quiet_seconds < 0
        or completion.mpps_grace_seconds < 0
        or completion.incomplete_extra_wait_seconds < 0
    ):
        raise SettingsError("completion periods cannot be negative")
    _validate_expected_coverage(
        "completion", completion.expected_stations, completion.expected_coverage_mm
    )
    seen: set[str] = set()
    for i, entry in enumerate(settings.calling_ae):
        title = validate_ae_title(entry.ae_title, f"calling_ae[{i}].ae_title")
        if title in seen:
            raise SettingsError(f"calling_ae[{i}]: {title!r} is configured twice")
        seen.add(title)
        if entry.quiet_seconds is not None and entry.quiet_seconds < 0:
            raise SettingsError(f"calling_ae[{i}].quiet_seconds cannot be negative")
        _validate_expected_coverage(
            f"calling_ae[{i}]", entry.expected_stations, entry.expected_coverage_mm
        )
    if (
        export.backoff_initial_seconds <= 0
        or export.backoff_max_seconds < export.backoff_initial_seconds
    ):
        raise SettingsError(
            "export.backoff_initial_seconds must be > 0 and <= export.backoff_max_seconds"
        )
    if export.max_attempts < 1:
        raise SettingsError(f"export.max_attempts must be at least 1, got {export.max_attempts}")
    names = [str(d) for d in export.destinations]
    if len(set(names)) != len(names):
        raise SettingsError(f"export.destinations lists a destination twice: {names}")
    if settings.logging.level.strip().lower() not in LOG_LEVELS:
        raise SettingsError(
            f"logging.level {settings.logging.level!r} is not one of {', '.join(LOG_LEVELS)}"
        )
    _validate_tls(settings.tls)
    _validate_priors_and_retention(settings)


def _validate_expected_coverage(where: str, stations: int | None, extent: float | None) -> None:
    if stations is not None and stations < 1:
        raise SettingsError(f"{where}.expected_stations must be at least 1, got {stations}")
    if extent is not None and not extent > 0:
        raise SettingsError(f"{where}.expected_coverage_mm must be > 0 mm, got {extent}")


def _validate_priors_and_retention(settings: Settings) -> None:
    problems = priors_settings_problems(settings.priors) + retention_settings_problems(
        settings.retention
    )
    if problems:
        raise SettingsError("; ".join(problems))
    if settings.priors.pacs:
        try:
            parse_destination(settings.priors.pacs)
        except SettingsError as error:
            raise SettingsError(f"priors.pacs: {error}") from None
    if settings.priors.calling_aet:
        validate_ae_title(settings.priors.calling_aet, "priors.calling_aet")


def _validate_tls(tls: TlsSettings) -> None:
    """Check the TLS files by building the contexts the node will use."""
    if tls.verify_clients and (not tls.listener or tls.ca_bundle is None):
        raise SettingsError("tls.verify_clients needs tls.listener and tls.ca_bundle")
    if (tls.certificate is None) != (tls.private_key is None):
        raise SettingsError("tls.certificate and tls.private_key are set together")
    for name in ("certificate", "private_key", "ca_bundle"):
        path = getattr(tls, name)
        if path is not None and not path.is_file():
            raise SettingsError(f"tls.{name}: {path} is not a file")
    try:
        tls.listener_context()
        tls.export_context()
    except TlsConfigurationError as error:
        raise SettingsError(f"tls: {error}") from None


@dataclass(frozen=True, slots=True)
class SettingDoc:
    """One row of the settings reference."""

    section: str
    key: str
    type_name: str
    default: str
    env_var: str
    help: str


def _type_name(hint: Any) -> str:
    inner, optional = _unwrap_optional(hint)
    origin = typing.get_origin(inner)
    if origin is tuple:
        name = f"list of {_type_name(typing.get_args(inner)[0])}"
    elif inner is Destination:
        name = "AET@HOST:PORT"
    elif isinstance(inner, type) and issubclass(inner, enum.Enum):
        name = " | ".join(str(member.value) for member in inner)
    elif isinstance(inner, type):
        name = {"str": "text", "Path": "path"}.get(inner.__name__, inner.__name__)
    else:
        name = str(inner)
    return f"{name} (optional)" if optional else name


def _default_text(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "(required)"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, tuple):
        return "[" + ", ".join(str(item) for item in value) + "]"
    return "(unset)" if value is None else str(value)


def _attribute_docstrings(cls: type[Any]) -> dict[str, str]:
    """Docstrings written under dataclass fields (the style of ``ProcessingSettings``)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0]
    docs: dict[str, str] = {}
    if not isinstance(body, ast.ClassDef):
        return docs
    statements = body.body
    for current, following in itertools.pairwise(statements):
        if (
            isinstance(current, ast.AnnAssign)
            and isinstance(current.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[current.target.id] = " ".join(following.value.value.split())
    return docs


def describe_settings() -> list[SettingDoc]:
    """Every setting with its type, default, environment variable and help text."""
    rows: list[SettingDoc] = []
    sections: list[tuple[str, type[Any]]] = [*_SECTIONS.items(), ("calling_ae", CallingAeSettings)]
    for section, cls in sections:
        hints = typing.get_type_hints(cls)
        docstrings = _attribute_docstrings(cls)
        for f in dataclasses.fields(cls):
            env_var = (
                "" if section == "calling_ae" else f"{ENV_PREFIX}{section.upper()}_{f.name.upper()}"
            )
            rows.append(
                SettingDoc(
                    section=section,
                    key=f.name,
                    type_name=_type_name(hints[f.name]),
                    default=_default_text(f),
                    env_var=env_var,
                    help=str(f.metadata.get("help", docstrings.get(f.name, ""))),
                )
            )
    return rows
