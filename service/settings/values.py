"""The value types of the settings: AE titles, destinations and the enumerated choices.

Values are checked and coerced once, where they enter (the TOML file, the
environment, a flag); the rest of the node works with these types. The
``*_problems`` checks and :func:`raise_problems` are the one way the sections
of :mod:`service.settings.model` report what is wrong with their values.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from service.errors import SettingsError

__all__ = [
    "LOG_LEVELS",
    "Destination",
    "LogFormat",
    "OtherStoragePolicy",
    "ae_title_problems",
    "coverage_problems",
    "parse_destination",
    "raise_problems",
    "validate_ae_title",
]

LOG_LEVELS = ("debug", "info", "warning", "error")

_AE_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")
_DESTINATION = re.compile(r"^(?P<aet>[^@]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\[\]]+):(?P<port>\d+)$")


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


def validate_ae_title(value: str, what: str) -> str:
    """Return ``value`` stripped when it is a valid AE title (PS3.5 6.2, VR AE).

    Raises
    ------
    SettingsError
        Empty, longer than 16 characters, or holding a backslash or control
        character; the message starts with ``what``.
    """
    title = value.strip()
    if not title:
        raise SettingsError(f"{what}: an AE title cannot be empty")
    if len(title) > 16:
        raise SettingsError(f"{what}: AE title {title!r} is longer than 16 characters")
    if _AE_FORBIDDEN.search(title):
        raise SettingsError(f"{what}: AE title {title!r} contains a backslash or control character")
    return title


def parse_destination(text: str) -> Destination:
    """Parse ``AET@HOST:PORT`` (IPv6 hosts in brackets) into a :class:`Destination`.

    Raises
    ------
    SettingsError
        When ``text`` is not of that form, the port is outside 1..65535 or the
        AE title is invalid.
    """
    match = _DESTINATION.match(text.strip())
    if match is None:
        raise SettingsError(f"destination {text!r} must be written AET@HOST:PORT")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise SettingsError(f"destination {text!r}: port {port} is outside 1..65535")
    host = match["host"].strip("[]")
    return Destination(validate_ae_title(match["aet"], f"destination {text!r}"), host, port)


def raise_problems(problems: list[str]) -> None:
    """Raise one :class:`SettingsError` listing every problem found (none: return)."""
    if problems:
        raise SettingsError("; ".join(problems))


def ae_title_problems(value: str, key: str) -> list[str]:
    """What is wrong with the AE title ``value`` of the setting ``key`` (empty: nothing)."""
    try:
        validate_ae_title(value, key)
    except SettingsError as error:
        return [str(error)]
    return []


def coverage_problems(stations: int | None, extent_mm: float | None) -> list[str]:
    """What is wrong with an expected number of stations and head-to-feet length."""
    problems = []
    if stations is not None and stations < 1:
        problems.append(f"expected_stations must be at least 1, got {stations}")
    if extent_mm is not None and not extent_mm > 0:
        problems.append(f"expected_coverage_mm must be > 0 mm, got {extent_mm}")
    return problems
