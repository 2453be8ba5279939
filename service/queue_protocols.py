"""The seams between the node and its queue backend, as narrow protocols (issue 15).

Each consumer is typed against the narrowest protocol it needs, so a backend
other than SQLite (:class:`service.jobstore.SqliteJobStore`, the embedded
default) only has to provide what is used:

=====================  ===========================================================
:class:`JobEvents`     what a worker reports about one job: finished, finished
                       without results, failed, deferred (keyed by the spec, so a
                       push backend that hands the worker a spec fits as well as
                       the SQLite store, which the worker pulls from)
:class:`JobSource`     the pull side: claim the next ready job
:class:`JobQueue`      the operator side: submit (idempotent by ``job_key``),
                       status, jobs, cancel, retry (requeue), dead letters
:class:`Ledger`        a job queue the receiver dispatches from and applies
                       workers' reports to, by job id (the celery backend's
                       receiver keeps its jobs in one)
:class:`Intake`        what completion detection needs: receiving studies, their
                       instances, queueing a complete study
:class:`Outbox`        result files per destination, sent / failed, the ledger
:class:`RetentionRecords`  what the retention cleaner reads and forgets
=====================  ===========================================================

mypy checks that a backend conforms with a function that returns the backend
as the protocol (:func:`sqlite_conforms`); a new backend adds the
same function next to its code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from processing.quality import QualityAssessment
from service.jobs import JobRecord, JobSpec, JobState, OutboxRecord, OutboxState
from service.jobstore.records import (
    InstanceRow,
    JobDelivery,
    QueueOutcome,
    ReceivingStudy,
    StudySpool,
)

if TYPE_CHECKING:
    from service.jobstore import SqliteJobStore

__all__ = [
    "Intake",
    "JobEvents",
    "JobQueue",
    "JobSource",
    "Ledger",
    "Outbox",
    "RetentionRecords",
    "WorkerQueue",
    "sqlite_conforms",
]


class JobEvents(Protocol):
    """What a worker reports about the job it was given, whatever handed it over."""

    def job_finished(
        self,
        spec: JobSpec,
        results: Sequence[tuple[str, str]],
        processing_seconds: float,
        *,
        quality: QualityAssessment | None = None,
    ) -> None:
        """The job made ``results`` (``(path, sop_instance_uid)``); the receiver queues them
        for each of ``spec.destinations``."""
        ...

    def job_finished_without_results(
        self, spec: JobSpec, reason: str, processing_seconds: float, *, state: JobState
    ) -> None:
        """The job had nothing to produce (``done`` or ``ignored``, with a reason)."""
        ...

    def job_failed(self, spec: JobSpec, reason: str) -> None:
        """The job failed; ``reason`` is shown to the operator, the inputs are kept."""
        ...

    def job_deferred(self, spec: JobSpec, until: float, reason: str, *, now: float) -> None:
        """Give the job back, not to be started before ``until`` (``reason``: what it waits for)."""
        ...

    def job_deferred_since(self, spec: JobSpec) -> float | None:
        """When the job was first deferred (``None``: not since it last ran)."""
        ...


@runtime_checkable
class JobSource(Protocol):
    """A queue the worker pulls from."""

    def claim(self, now: float | None = None) -> JobSpec | None:
        """Take the oldest ready job (it becomes ``processing``), or ``None``."""
        ...


class WorkerQueue(JobSource, JobEvents, Protocol):
    """A pull backend: the worker claims and reports (the SQLite store)."""


class JobQueue(Protocol):
    """What the node and the operator commands need from a job queue backend."""

    def submit(self, spec: JobSpec) -> bool:
        """Queue a ready job; ``False`` (and nothing changes) when its ``job_key`` exists."""
        ...

    def status(self, job_id: int) -> JobRecord:
        """The job's current record; ``KeyError`` when unknown."""
        ...

    def jobs(self, *, job_id: int | None = None, limit: int = 1000) -> list[JobRecord]:
        """Job records, newest first."""
        ...

    def retry(self, job_id: int) -> JobRecord:
        """Requeue a failed job or its dead-lettered deliveries."""
        ...

    def cancel(self, job_id: int, who: str) -> JobRecord:
        """Cancel a job no worker has started (``receiving`` or ``ready``): it becomes
        ``failed`` with the reason ``cancelled by <who>`` and can be retried; ``ValueError``
        for a job that is processing or has ended, ``KeyError`` when unknown."""
        ...

    def dead_letters(self) -> list[OutboxRecord]:
        """Deliveries that were given up."""
        ...


class Ledger(JobQueue, JobSource, Protocol):
    """The receiver's job ledger of a push backend: it claims ready jobs to publish them
    and applies the workers' reports by job id (``SqliteJobStore`` on the receiver)."""

    def finish_processing(
        self,
        job_id: int,
        results: Sequence[tuple[str, str]],
        destinations: Sequence[str],
        processing_seconds: float,
        *,
        quality: QualityAssessment | None = None,
    ) -> None:
        """Queue each result file ``(path, sop_instance_uid)`` for each destination."""
        ...

    def finish_without_results(
        self, job_id: int, reason: str, processing_seconds: float, *, state: JobState = ...
    ) -> None:
        """The job ends with nothing to send (``done`` or ``ignored``) and a reason."""
        ...

    def fail(self, job_id: int, reason: str) -> None:
        """Mark the job failed with its reason."""
        ...

    def defer(self, job_id: int, until: float, reason: str, *, now: float | None = None) -> None:
        """Put a claimed job back to ``ready``, not before ``until``."""
        ...

    def deferred_since(self, job_id: int) -> float | None:
        """When the job was first deferred (``None``: not since it last ran)."""
        ...


class Intake(Protocol):
    """What completion detection needs: receiving studies and how a complete one is queued."""

    def receiving_studies(self) -> list[ReceivingStudy]:
        """Studies still receiving instances."""
        ...

    def study_instances(self, study_uid: str) -> list[InstanceRow]:
        """The study's stored instances."""
        ...

    def unfinished_earlier_version(self, study_uid: str, version: int) -> int | None:
        """Job id of an earlier version of the study still unfinished, or ``None``."""
        ...

    def queue_receiving(self, spec: JobSpec, last_instance_at: float) -> QueueOutcome:
        """Turn the receiving job into a ready one with ``spec``."""
        ...

    def hold_receiving(self, job_id: int, since: float, reason: str) -> None:
        """Keep a receiving study waiting (incomplete coverage), with the reason."""
        ...

    def unclaimed_segmentations(self, job_key_prefix: str) -> list[tuple[str, InstanceRow]]:
        """Stored SEGs no correction job was made for yet, with their study UID."""
        ...

    def processed_specs(self, study_uid: str) -> list[JobSpec]:
        """Specs of the study's processed jobs, newest first."""
        ...

    def latest_version(self, study_uid: str) -> int:
        """The highest job version of the study (0: none)."""
        ...

    def submit(self, spec: JobSpec) -> bool:
        """Queue a ready job; ``False`` when its ``job_key`` exists."""
        ...

    def jobs(self, *, job_id: int | None = None, limit: int = 1000) -> list[JobRecord]:
        """Job records, newest first."""
        ...


class Outbox(Protocol):
    """Result files per destination and the sender ledger (what the exporter needs)."""

    def outbox(
        self,
        *,
        state: OutboxState | None = None,
        due_before: float | None = None,
        destination: str | None = None,
        limit: int | None = 10000,
    ) -> list[OutboxRecord]:
        """Queued deliveries, oldest due first."""
        ...

    def acknowledged(self, destination: str, sop_instance_uid: str) -> bool:
        """Whether the destination already acknowledged this instance (the ledger)."""
        ...

    def acknowledged_among(self, destination: str, sop_instance_uids: Sequence[str]) -> set[str]:
        """Those of ``sop_instance_uids`` the ledger says ``destination`` acknowledged."""
        ...

    def mark_sent(self, outbox_id: int, *, durable: bool = True) -> None:
        """The destination acknowledged the file (``durable=False``: not forced to disk yet)."""
        ...

    def mark_attempt_failed(
        self, outbox_id: int, error: str, next_try_at: float, *, max_attempts: int
    ) -> OutboxState:
        """A failed attempt: try again at ``next_try_at`` or give up after ``max_attempts``."""
        ...


class RetentionRecords(Protocol):
    """What the retention cleaner reads and forgets."""

    def job_deliveries(self) -> list[JobDelivery]:
        """Each job with how far its deliveries got."""
        ...

    def spooled_studies(self) -> list[StudySpool]:
        """Studies with instances in the spool."""
        ...

    def forget_study_instances(
        self, study_uid: str, allowed_states: Sequence[JobState]
    ) -> list[tuple[str, int]]:
        """Delete the study's instance rows when every job is in ``allowed_states``."""
        ...


def sqlite_conforms(
    store: SqliteJobStore,
) -> tuple[JobQueue, WorkerQueue, Ledger, Intake, Outbox, RetentionRecords]:
    """The SQLite store as every seam: mypy fails here when it stops conforming."""
    return (store, store, store, store, store, store)
