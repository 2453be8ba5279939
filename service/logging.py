"""Structured logging for the node, configured once at start.

JSON lines on standard error (a console renderer when standard error is a TTY),
with the context bound by the code that knows it: ``assoc_id`` and
``calling_ae`` in the DICOM handlers, ``job_id`` and ``study_uid`` in the worker
and exporter (:func:`structlog.contextvars.bound_contextvars`). Standard-library
loggers (pynetdicom) go through the same renderer.

Patient name and patient ID never reach a log line: :func:`drop_patient_identifiers`
removes such keys from every event, whatever the caller passed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from dicom_node.scu.association import pass_contextvars_to_association_threads
from service.settings import LogFormat, LoggingSettings

__all__ = ["PATIENT_KEYS", "configure_logging", "drop_patient_identifiers"]

PATIENT_KEYS = frozenset(
    {
        "patient_name",
        "patient_id",
        "patientname",
        "patientid",
        "patient_birth_date",
        "patientbirthdate",
        "other_patient_ids",
        "issuer_of_patient_id",
    }
)


def drop_patient_identifiers(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: remove patient-identifying keys from the event."""
    for key in list(event_dict):
        if key.lower().replace(" ", "_") in PATIENT_KEYS:
            del event_dict[key]
    return event_dict


def configure_logging(settings: LoggingSettings, stream: TextIO | None = None) -> None:
    """Configure structlog and the standard library loggers (call once, at start).

    Also has pynetdicom pass the context to its association threads
    (:func:`~dicom_node.scu.association.pass_contextvars_to_association_threads`),
    so that they see the context bound where the association was started.
    """
    output = sys.stderr if stream is None else stream
    level = logging.getLevelNamesMapping().get(settings.level.upper())
    if level is None:
        raise ValueError(f"logging.level {settings.level!r} is not debug, info, warning or error")
    use_console = settings.format is LogFormat.CONSOLE or (
        settings.format is LogFormat.AUTO and output.isatty()
    )
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=output.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        drop_patient_identifiers,
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info if not use_console else _identity,
            renderer,
        ],
    )
    handler = logging.StreamHandler(output)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # pynetdicom is chatty at INFO (every association); its warnings and errors stay.
    logging.getLogger("pynetdicom").setLevel(max(level, logging.WARNING))
    # highdicom narrates every copied module at INFO while writing results.
    logging.getLogger("highdicom").setLevel(max(level, logging.WARNING))
    pass_contextvars_to_association_threads()


def _identity(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    return event_dict
