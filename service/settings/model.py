"""The settings model: one frozen dataclass per section, each validating itself.

:class:`Settings` holds one instance of every section (``[[calling_ae]]`` is a
tuple of entries). Every field documents itself in its ``metadata`` (written
with :func:`processing.settings.doc`), which the settings reference
(:mod:`service.settings.docs`) shows. Each section checks its own values in
``__post_init__`` and raises :class:`~service.errors.SettingsError` with every
problem it finds (the style of :class:`~processing.settings.ProcessingSettings`),
naming its fields by their keys; the loader says which section or entry the
values came from. :class:`Settings` checks what involves more than one entry.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from dicom_node.assembly.coverage import CoverageExpectation
from dicom_node.errors import TlsConfigurationError
from dicom_node.tls import client_context, server_context
from processing.backend import Device
from processing.settings import ProcessingSettings, doc
from service.errors import SettingsError
from service.passwords import parse_hash
from service.settings.values import (
    LOG_LEVELS,
    Destination,
    LogFormat,
    OtherStoragePolicy,
    ae_title_problems,
    coverage_problems,
    parse_destination,
    raise_problems,
)

__all__ = [
    "SECTIONS",
    "CallingAeSettings",
    "CompletionSettings",
    "ExportSettings",
    "HttpSettings",
    "LoggingSettings",
    "NodeSettings",
    "PriorsSettings",
    "QueueSettings",
    "ReceiveSettings",
    "RetentionSettings",
    "Section",
    "Settings",
    "TlsSettings",
]

_DAY_SECONDS = 86400.0


@dataclass(frozen=True, slots=True)
class NodeSettings:
    """The node's identity, network endpoints, storage and compute device."""

    ae_title: str = field(default="WBDWI", metadata=doc("AE title of the node (called AE)."))
    port: int = field(default=11112, metadata=doc("DICOM port (C-ECHO, C-STORE, MPPS)."))
    bind_address: str = field(
        default="0.0.0.0",
        metadata=doc("Address the DICOM listener binds to (HTTP: http.bind_address)."),
    )
    data_dir: Path = field(
        default=Path("wbdwi-data"),
        metadata=doc("Folder for the spool, the job store and the results (relative to cwd)."),
    )
    http_port: int = field(
        default=8080,
        metadata=doc("Port of the dashboard, /healthz, /readyz and /metrics; 0 turns HTTP off."),
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
    read_ahead_mb: int = field(
        default=512,
        metadata=doc(
            "Memory for input images read while a study arrives, by a second process at "
            "the lowest CPU priority, so that a complete exam is assembled at once instead "
            "of read then (about 0.7 ms per image; a whole-body exam needs some 40-200 MB; "
            "512 suits one scanner). 0 = off: the job reads its images when it starts "
            "(where bursts of images matter more than the time to results on a small "
            "server)."
        ),
    )
    min_free_disk_mb: int = field(
        default=1024,
        metadata=doc(
            "Free space the data folder must keep: below it the node processes no job "
            "(/readyz answers 503 with the reason; receiving and deliveries go on) until "
            "space returns. An exam's results take some 50-100 MB."
        ),
    )

    def __post_init__(self) -> None:
        problems = ae_title_problems(self.ae_title, "ae_title")
        if self.read_ahead_mb < 0:
            problems.append(f"read_ahead_mb must be 0 or more, got {self.read_ahead_mb}")
        if self.min_free_disk_mb < 0:
            problems.append(f"min_free_disk_mb must be 0 or more, got {self.min_free_disk_mb}")
        if not 1 <= self.port <= 65535:
            problems.append(f"port {self.port} is outside 1..65535")
        if not 0 <= self.http_port <= 65535:
            problems.append(f"http_port {self.http_port} is outside 0..65535 (0 = off)")
        if self.workers < 1:
            problems.append(f"workers must be at least 1, got {self.workers}")
        raise_problems(problems)


# PS3.8 D.1: a receiver announces a maximum PDU length; 0 (unlimited) is not offered,
# so that one PDU can never claim more memory than this.
MIN_PDU_BYTES = 4096
MAX_PDU_BYTES = 4 << 20


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
        default=60.0,
        metadata=doc(
            "An idle association (no PDU started for this many seconds) is aborted; see "
            "pdu_timeout_seconds for a PDU that has started."
        ),
    )
    max_pdu_bytes: int = field(
        default=131072,
        metadata=doc(
            f"Maximum PDU length we receive, {MIN_PDU_BYTES}..{MAX_PDU_BYTES} bytes "
            "(no unlimited: memory per association is bounded by it)."
        ),
    )
    max_instance_bytes: int = field(
        default=2 << 30,
        metadata=doc(
            "Largest data set accepted in one C-STORE, as received and once inflated; a larger "
            "one is refused (0xA700)."
        ),
    )
    max_inflation_ratio: int = field(
        default=200,
        metadata=doc(
            "A deflated data set may inflate to at most this many times its size (at least 64 "
            "KiB x this); more is refused (0xA700) before it is inflated further."
        ),
    )
    max_sequence_depth: int = field(
        default=16,
        metadata=doc("Sequences nested deeper than this are refused (0xC211)."),
    )
    associate_timeout_seconds: float = field(
        default=10.0,
        metadata=doc(
            "The whole A-ASSOCIATE-RQ must arrive within this many seconds, else the connection "
            "is aborted (ARTIM); with TLS, the handshake before it has the same limit."
        ),
    )
    pdu_timeout_seconds: float = field(
        default=30.0,
        metadata=doc(
            "Once its first byte has arrived, a PDU must arrive whole within this many seconds "
            "(a peer that trickles bytes does not extend it), else the association is aborted."
        ),
    )
    max_connections: int = field(
        default=64,
        metadata=doc(
            "Open TCP connections on the DICOM port, counted as they are accepted (before an "
            "A-ASSOCIATE-RQ); more are closed at once. At least max_associations."
        ),
    )
    max_connections_per_address: int = field(
        default=16,
        metadata=doc(
            "Open TCP connections from one source address; more from it are closed at once, so "
            "one peer cannot take every slot."
        ),
    )

    def __post_init__(self) -> None:
        problems = []
        if self.max_associations < 1:
            problems.append(f"max_associations must be at least 1, got {self.max_associations}")
        if not MIN_PDU_BYTES <= self.max_pdu_bytes <= MAX_PDU_BYTES:
            problems.append(
                f"max_pdu_bytes must be {MIN_PDU_BYTES}..{MAX_PDU_BYTES} (no unlimited), "
                f"got {self.max_pdu_bytes}"
            )
        if self.max_instance_bytes < 1 << 20:
            problems.append(
                f"max_instance_bytes must be at least 1 MiB, got {self.max_instance_bytes}"
            )
        if self.max_inflation_ratio < 2:
            problems.append(
                f"max_inflation_ratio must be at least 2, got {self.max_inflation_ratio}"
            )
        if not 1 <= self.max_sequence_depth <= 64:
            problems.append(f"max_sequence_depth must be 1..64, got {self.max_sequence_depth}")
        problems += _receive_limit_problems(self)
        for i, title in enumerate(self.calling_ae_allow):
            problems += ae_title_problems(title, f"calling_ae_allow[{i}]")
        raise_problems(problems)


def _receive_limit_problems(receive: ReceiveSettings) -> list[str]:
    """Problems with the connection caps and deadlines of the ``receive`` section."""
    problems = []
    for name in ("network_timeout_seconds", "associate_timeout_seconds", "pdu_timeout_seconds"):
        if not getattr(receive, name) > 0:
            problems.append(f"{name} must be more than 0, got {getattr(receive, name)}")
    if receive.max_connections < receive.max_associations:
        problems.append(
            f"max_connections ({receive.max_connections}) must be at least max_associations "
            f"({receive.max_associations})"
        )
    if not 1 <= receive.max_connections_per_address <= receive.max_connections:
        problems.append(
            f"max_connections_per_address must be 1..max_connections, got "
            f"{receive.max_connections_per_address}"
        )
    return problems


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

    def __post_init__(self) -> None:
        problems = [
            f"{name} cannot be negative, got {getattr(self, name)}"
            for name in ("quiet_seconds", "mpps_grace_seconds", "incomplete_extra_wait_seconds")
            if getattr(self, name) < 0
        ]
        problems += coverage_problems(self.expected_stations, self.expected_coverage_mm)
        raise_problems(problems)


@dataclass(frozen=True, slots=True)
class CallingAeSettings:
    """Settings for one sending AE (scanner); unset values follow the global ones.

    The AE title itself is checked by :class:`Settings` (valid, configured once):
    an instance also stands for a sender that is not configured
    (:meth:`Settings.for_calling_ae`), whatever title it used.
    """

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

    def __post_init__(self) -> None:
        problems = []
        if self.quiet_seconds is not None and self.quiet_seconds < 0:
            problems.append(f"quiet_seconds cannot be negative, got {self.quiet_seconds}")
        problems += coverage_problems(self.expected_stations, self.expected_coverage_mm)
        raise_problems(problems)


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
    associations_per_destination: int = field(
        default=2,
        metadata=doc(
            "Associations a delivery round opens to one destination at the same time, each "
            "sending its share of the files (the destination stores one file while the next "
            "comes); 1: one association. A destination that refuses the extra ones still "
            "gets every file, over the association it took."
        ),
    )

    def __post_init__(self) -> None:
        problems = []
        if self.associations_per_destination < 1:
            problems.append(
                "associations_per_destination must be at least 1, "
                f"got {self.associations_per_destination}"
            )
        if not 0 < self.backoff_initial_seconds <= self.backoff_max_seconds:
            problems.append("backoff_initial_seconds must be > 0 and <= backoff_max_seconds")
        if self.max_attempts < 1:
            problems.append(f"max_attempts must be at least 1, got {self.max_attempts}")
        names = [str(destination) for destination in self.destinations]
        if len(set(names)) != len(names):
            problems.append(f"destinations lists a destination twice: {names}")
        raise_problems(problems)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """The HTTP port (node.http_port): the dashboard, /healthz, /readyz and /metrics."""

    bind_address: str = field(
        default="127.0.0.1",
        metadata=doc(
            "Address the HTTP listener binds to: 127.0.0.1 serves this host only; 0.0.0.0 "
            "(every interface) only with users or token_hash set."
        ),
    )
    users: tuple[str, ...] = field(
        default=(),
        metadata=doc(
            "Dashboard accounts, NAME:HASH each; the hash is printed by 'python -m "
            "service.passwords'. They log in on the page or with HTTP basic auth."
        ),
    )
    token_hash: str = field(
        default="",
        metadata=doc(
            "Hash of a token (same tool) accepted as 'Authorization: Bearer TOKEN', for "
            "monitoring (/readyz, /metrics) and scripts; it also logs in on the page."
        ),
    )
    session_hours: float = field(
        default=12.0, metadata=doc("A dashboard login lasts this long (hours).")
    )

    def __post_init__(self) -> None:
        problems: list[str] = []
        seen: set[str] = set()
        for i, entry in enumerate(self.users):
            name, colon, stored = entry.partition(":")
            if not colon or not name.strip():
                problems.append(f"users[{i}] must be NAME:HASH")
                continue
            if name in seen:
                problems.append(f"users[{i}]: user {name!r} is configured twice")
            seen.add(name)
            try:
                parse_hash(stored)
            except ValueError as error:
                problems.append(f"users[{i}] ({name}): the hash {error}")
        if self.token_hash:
            try:
                parse_hash(self.token_hash)
            except ValueError as error:
                problems.append(f"token_hash {error}")
        if not 0 < self.session_hours <= 24 * 30:
            problems.append(f"session_hours must be > 0 and at most 720, got {self.session_hours}")
        raise_problems(problems)

    @property
    def has_credentials(self) -> bool:
        """True when a user or a token is configured."""
        return bool(self.users or self.token_hash)


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """Structured logs on standard error."""

    level: str = field(default="info", metadata=doc("debug, info, warning or error."))
    format: LogFormat = field(
        default=LogFormat.AUTO, metadata=doc("auto (console on a TTY, else JSON), json, console.")
    )

    def __post_init__(self) -> None:
        if self.level.strip().lower() not in LOG_LEVELS:
            raise SettingsError(f"level {self.level!r} is not one of {', '.join(LOG_LEVELS)}")


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

    def __post_init__(self) -> None:
        """Check the files by building the contexts the node will use."""
        problems = []
        if self.verify_clients and (not self.listener or self.ca_bundle is None):
            problems.append("verify_clients needs listener and ca_bundle")
        if (self.certificate is None) != (self.private_key is None):
            problems.append("certificate and private_key are set together")
        for name, path in (
            ("certificate", self.certificate),
            ("private_key", self.private_key),
            ("ca_bundle", self.ca_bundle),
        ):
            if path is not None and not path.is_file():
                problems.append(f"{name}: {path} is not a file")
        raise_problems(problems)
        try:
            self.listener_context()
            self.export_context()
        except TlsConfigurationError as error:
            raise SettingsError(str(error)) from None

    def listener_context(self) -> ssl.SSLContext | None:
        """Server context of the DICOM port, ``None`` without ``listener``.

        Raises :class:`~dicom_node.errors.TlsConfigurationError` for unusable files.
        """
        if not self.listener:
            return None
        if self.certificate is None or self.private_key is None:
            raise TlsConfigurationError("listener needs certificate and private_key")
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
class PriorsSettings:
    """Priors for the comparison with earlier exams: local history, and PACS when set.

    Where the node looks for a patient's earlier reports when its own history
    does not know the patient (``docs/response.md``), and what it does when that
    peer cannot be reached. ``pacs`` is kept as text (``AET@HOST:PORT``, empty:
    none) and checked with :func:`~service.settings.values.parse_destination`.
    """

    enabled: bool = field(
        default=True,
        metadata=doc(
            "Compare each exam with the patient's earlier exams (history in "
            "<data_dir>/history.sqlite3). Off: no comparison, no history kept."
        ),
    )
    pacs: str = field(
        default="",
        metadata=doc(
            "Query/retrieve SCP (C-FIND + C-GET, Study Root) asked for the node's earlier "
            "reports of a patient the local history has not looked up there yet, AET@HOST:PORT. "
            "Empty: local history only. The export destinations are NOT assumed to answer "
            "queries; name the peer here."
        ),
    )
    calling_aet: str = field(
        default="",
        metadata=doc(
            "Our AE title towards the priors peer (empty: node.ae_title); the PACS must know "
            "it as a modality allowed to C-GET."
        ),
    )
    timeout_seconds: float = field(
        default=30.0, metadata=doc("Association and DIMSE timeout towards the priors peer.")
    )
    retry_seconds: float = field(
        default=60.0,
        metadata=doc(
            "When the priors peer cannot be asked (unreachable, rejected, query failed): the "
            "job waits this long and tries again; other exams go on meanwhile."
        ),
    )
    max_wait_seconds: float = field(
        default=1800.0,
        metadata=doc(
            "How long a job waits for an unreachable priors peer in all; then it is processed "
            "with the local history and a warning (job, measurements.json, log). 0: never wait."
        ),
    )

    def __post_init__(self) -> None:
        problems = []
        if self.timeout_seconds <= 0:
            problems.append(f"timeout_seconds must be > 0, got {self.timeout_seconds}")
        if self.retry_seconds <= 0:
            problems.append(f"retry_seconds must be > 0, got {self.retry_seconds}")
        if self.max_wait_seconds < 0:
            problems.append(f"max_wait_seconds cannot be negative, got {self.max_wait_seconds}")
        if self.pacs:
            try:
                parse_destination(self.pacs)
            except SettingsError as error:
                problems.append(f"pacs: {error}")
        if self.calling_aet:
            problems += ae_title_problems(self.calling_aet, "calling_aet")
        raise_problems(problems)


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """Removal of the spool and results of delivered jobs (never before delivery)."""

    enabled: bool = field(
        default=True, metadata=doc("Run the retention cleaner. Off: nothing is ever removed.")
    )
    spool_days: float = field(
        default=30.0,
        metadata=doc(
            "Received instances of a study are removed this many days after every job of the "
            "study is done and every result file was acknowledged by every destination."
        ),
    )
    results_days: float = field(
        default=30.0,
        metadata=doc(
            "A job's result folder is removed this many days after its last result file was "
            "acknowledged by every destination. Without destinations the results folder is "
            "the delivery and is kept."
        ),
    )
    failed_days: float | None = field(
        default=None,
        metadata=doc(
            "Received instances of a study whose job failed are removed this many days after "
            "the failure (the job can then no longer be retried). Unset: kept until the job is "
            "retried and delivered. Results of failed jobs are never removed."
        ),
    )
    interval_seconds: float = field(
        default=3600.0, metadata=doc("How often the cleaner looks for what can be removed.")
    )

    @property
    def spool_seconds(self) -> float:
        """``spool_days`` in seconds."""
        return self.spool_days * _DAY_SECONDS

    @property
    def results_seconds(self) -> float:
        """``results_days`` in seconds."""
        return self.results_days * _DAY_SECONDS

    @property
    def failed_seconds(self) -> float | None:
        """``failed_days`` in seconds (``None``: kept)."""
        return None if self.failed_days is None else self.failed_days * _DAY_SECONDS

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be a finite number of days >= 0, got {value}"
            for name, value in (
                ("spool_days", self.spool_days),
                ("results_days", self.results_days),
                ("failed_days", self.failed_days),
            )
            if value is not None and not 0 <= value < float("inf")
        ]
        if not 0 < self.interval_seconds < float("inf"):
            problems.append(f"interval_seconds must be > 0, got {self.interval_seconds}")
        raise_problems(problems)


_QUEUE_BACKENDS = ("sqlite", "celery")


@dataclass(frozen=True, slots=True)
class QueueSettings:
    """Where jobs wait and who runs them: this node, or workers on other hosts (issue 15)."""

    backend: str = field(
        default="sqlite",
        metadata=doc(
            "sqlite: one host, the node's own workers run the jobs, no extra service. celery: "
            "the receiver publishes each job to RabbitMQ (broker_url) and 'wbdwi worker' "
            "processes on any host run them; they need the spool and results folders on "
            "shared storage (storage_root)."
        ),
    )
    broker_url: str = field(
        default="amqp://guest:guest@localhost:5672//",
        metadata=doc("RabbitMQ of the celery backend (amqp://USER:PASSWORD@HOST:PORT/VHOST)."),
    )
    delivery_limit: int = field(
        default=5,
        metadata=doc(
            "celery: a job handed back more than this many times (its worker died, or "
            "refused it) is dead-lettered and marked failed with the reason: a poison exam "
            "runs delivery_limit + 1 times at most (RabbitMQ x-delivery-limit)."
        ),
    )
    storage_root: Path | None = field(
        default=None,
        metadata=doc(
            "celery: where this host mounts the shared folder (NFS, ...) holding data_dir and "
            "the results folder; each host sets its own mount point and jobs name their files "
            "relative to it. Unset: jobs carry the receiver's absolute paths (the share mounted "
            "at the same path on every host)."
        ),
    )

    def __post_init__(self) -> None:
        problems = []
        if self.backend not in _QUEUE_BACKENDS:
            problems.append(
                f"backend must be one of {', '.join(_QUEUE_BACKENDS)}, got {self.backend!r}"
            )
        if not 1 <= self.delivery_limit <= 1000:
            problems.append(f"delivery_limit must be 1-1000, got {self.delivery_limit}")
        if self.backend == "celery" and not self.broker_url.startswith(("amqp://", "amqps://")):
            problems.append(
                f"broker_url must be an amqp:// or amqps:// URL, got {self.broker_url!r}"
            )
        raise_problems(problems)


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
    queue: QueueSettings = field(default_factory=QueueSettings)
    http: HttpSettings = field(default_factory=HttpSettings)

    def __post_init__(self) -> None:
        """The ``[[calling_ae]]`` entries: valid AE titles, each configured once."""
        problems = []
        seen: set[str] = set()
        for i, entry in enumerate(self.calling_ae):
            where = f"calling_ae[{i}]"
            title_problems = ae_title_problems(entry.ae_title, f"{where}.ae_title")
            title = entry.ae_title.strip()
            if title_problems:
                problems += title_problems
            elif title in seen:
                problems.append(f"{where}: {title!r} is configured twice")
            seen.add(title)
        raise_problems(problems)

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


class Section(NamedTuple):
    """A field of :class:`Settings`: a ``[name]`` table, or a repeatable ``[[name]]`` one."""

    name: str
    model: type[Any]
    repeatable: bool


#: Every section, in the order of :class:`Settings` (and of the generated documents).
SECTIONS: tuple[Section, ...] = (
    Section("node", NodeSettings, repeatable=False),
    Section("receive", ReceiveSettings, repeatable=False),
    Section("completion", CompletionSettings, repeatable=False),
    Section("calling_ae", CallingAeSettings, repeatable=True),
    Section("export", ExportSettings, repeatable=False),
    Section("logging", LoggingSettings, repeatable=False),
    Section("processing", ProcessingSettings, repeatable=False),
    Section("tls", TlsSettings, repeatable=False),
    Section("priors", PriorsSettings, repeatable=False),
    Section("retention", RetentionSettings, repeatable=False),
    Section("queue", QueueSettings, repeatable=False),
    Section("http", HttpSettings, repeatable=False),
)
