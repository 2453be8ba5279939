"""The ``[priors]`` and ``[retention]`` sections of the node settings.

They live here to keep :mod:`service.settings` readable; that module lists them
among its sections, so they load, validate and appear in the settings
reference like every other section. Each field's ``metadata["help"]`` is its
documentation.

``[priors]``: where the node looks for a patient's earlier reports when its
own history does not know the patient (issue 6, ``docs/response.md``), and
what it does when that peer cannot be reached. ``[retention]``: when the spool
and the results of delivered jobs are removed (``docs/service.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "PriorsSettings",
    "RetentionSettings",
    "doc",
    "priors_settings_problems",
    "retention_settings_problems",
]

_DAY_SECONDS = 86400.0


def doc(text: str) -> dict[str, str]:
    """A settings field's documentation, as its ``metadata`` (read by the settings reference)."""
    return {"help": text}


@dataclass(frozen=True, slots=True)
class PriorsSettings:
    """Priors for the comparison with earlier exams: local history, and PACS when set.

    ``pacs`` is typed as text here (``AET@HOST:PORT``) and parsed by
    :func:`service.settings.parse_destination` when the settings are checked.
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


def priors_settings_problems(priors: PriorsSettings) -> list[str]:
    """What is wrong with the ``[priors]`` values (empty: nothing); ``pacs`` is parsed elsewhere."""
    problems = []
    if priors.timeout_seconds <= 0:
        problems.append(f"priors.timeout_seconds must be > 0, got {priors.timeout_seconds}")
    if priors.retry_seconds <= 0:
        problems.append(f"priors.retry_seconds must be > 0, got {priors.retry_seconds}")
    if priors.max_wait_seconds < 0:
        problems.append(
            f"priors.max_wait_seconds cannot be negative, got {priors.max_wait_seconds}"
        )
    return problems


def retention_settings_problems(retention: RetentionSettings) -> list[str]:
    """What is wrong with the ``[retention]`` values (empty: nothing)."""
    problems = []
    for name in ("spool_days", "results_days", "failed_days"):
        value = getattr(retention, name)
        if value is not None and not 0 <= value < float("inf"):
            problems.append(f"retention.{name} must be a finite number of days >= 0, got {value}")
    if not 0 < retention.interval_seconds < float("inf"):
        problems.append(f"retention.interval_seconds must be > 0, got {retention.interval_seconds}")
    return problems
