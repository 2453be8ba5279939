"""What the job store returns besides :mod:`service.jobs` records: rows for intake and retention."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from service.jobs import JobState

__all__ = ["InstanceRow", "JobDelivery", "QueueOutcome", "ReceivingStudy", "StudySpool"]


class QueueOutcome(enum.Enum):
    """What :meth:`~service.jobstore.SqliteJobStore.queue_receiving` did with a complete study."""

    QUEUED = "queued"
    """The receiving job is now ``ready`` with the spec."""
    DUPLICATE = "duplicate"
    """An earlier job has the same key (same inputs): the receiving job is closed ``done``."""
    CHANGED = "changed"
    """An instance arrived after the spec was built: nothing changed; check again."""


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """A stored instance as the job store knows it."""

    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    series_description: str
    calling_ae: str
    path: str
    received_at: float


@dataclass(frozen=True, slots=True)
class ReceivingStudy:
    """A job still receiving, with what completion detection needs to decide."""

    job_id: int
    study_uid: str
    version: int
    calling_ae: str
    created_at: float
    last_instance_at: float
    mpps_completed_at: float | None
    mpps_instances_missing: int | None  # None: no COMPLETED MPPS lists instances
    held_since: float | None = None  # held for incomplete coverage since (None: not held)


@dataclass(frozen=True, slots=True)
class JobDelivery:
    """A job with what retention needs: its state, results folder and acknowledgements.

    ``outbox_rows`` counts every (result file, destination) row; ``acknowledged_rows``
    those that are ``sent`` **and** in the ledger.
    """

    job_id: int
    study_uid: str
    version: int
    state: JobState
    updated_at: float
    output_dir: str | None
    outbox_rows: int
    acknowledged_rows: int
    last_acknowledged_at: float | None

    @property
    def delivered(self) -> bool:
        """Every result file acknowledged by every destination (``False`` without any)."""
        return self.outbox_rows > 0 and self.acknowledged_rows == self.outbox_rows


@dataclass(frozen=True, slots=True)
class StudySpool:
    """What the spool holds of one study."""

    study_uid: str
    instances: int
    size_bytes: int
    last_received_at: float
