"""The celery backend behind the job-queue operations the node and its commands use.

:class:`CeleryJobQueue` answers ``submit``, ``status``, ``jobs``, ``cancel``,
``retry`` and ``dead_letters`` (:class:`service.queue_protocols.JobQueue`) from
the receiver's ledger (the SQLite job store), as the ``sqlite`` backend does,
and starts the jobs on RabbitMQ through a
:class:`~service.queue_celery.receiver.CeleryReceiver` instead of local worker
threads. ``submit`` is idempotent by ``job_key``: the ledger records the key
before anything is published, and a key it knows is not published again.
"""

from __future__ import annotations

import threading

from service.jobs import JobRecord, JobSpec, OutboxRecord
from service.queue_celery.receiver import CeleryReceiver
from service.queue_protocols import JobQueue, Ledger

__all__ = ["CeleryJobQueue", "celery_conforms"]


class CeleryJobQueue:
    """Ledger + broker: the receiver side of the celery backend.

    Parameters
    ----------
    ledger
        The receiver's job ledger (its SQLite job store).
    receiver
        Publishes the ledger's ready jobs and applies the workers' reports.
    """

    def __init__(self, ledger: Ledger, receiver: CeleryReceiver) -> None:
        self.ledger = ledger
        self.receiver = receiver
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the dispatcher and the event consumer threads."""
        for name, target in (
            ("dispatcher", self.receiver.run_dispatcher),
            ("queue-events", self.receiver.run_events),
        ):
            thread = threading.Thread(target=target, args=(self._stop,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop both threads (a job already published stays in RabbitMQ)."""
        self._stop.set()
        self.receiver.wake()
        for thread in self._threads:
            thread.join(timeout=timeout)
        self._threads.clear()

    def submit(self, spec: JobSpec) -> bool:
        """Record a ready job and publish it; ``False`` (nothing published) when its key exists."""
        created = self.ledger.submit(spec)
        if created:
            self.receiver.wake()
        return created

    def status(self, job_id: int) -> JobRecord:
        """The job's record in the ledger; ``KeyError`` when unknown."""
        return self.ledger.status(job_id)

    def jobs(self, *, job_id: int | None = None, limit: int = 1000) -> list[JobRecord]:
        """Job records in the ledger, newest first."""
        return self.ledger.jobs(job_id=job_id, limit=limit)

    def cancel(self, job_id: int, who: str) -> JobRecord:
        """Cancel a job not yet published (``receiving`` or ``ready``); see
        :meth:`service.queue_protocols.JobQueue.cancel`. A published job (``processing``)
        is already in RabbitMQ and is not interrupted: ``ValueError``."""
        return self.ledger.cancel(job_id, who)

    def retry(self, job_id: int) -> JobRecord:
        """Make a failed job ready again (it is published again) or requeue its dead deliveries."""
        record = self.ledger.retry(job_id)
        self.receiver.wake()
        return record

    def fail(self, job_id: int, reason: str) -> None:
        """Mark the job failed; a report that arrives for it later is ignored."""
        self.ledger.fail(job_id, reason)

    def dead_letters(self) -> list[OutboxRecord]:
        """Deliveries that were given up (the ledger's outbox)."""
        return self.ledger.dead_letters()


def celery_conforms(queue: CeleryJobQueue) -> JobQueue:
    """The celery backend as the job-queue seam: mypy fails here when it stops conforming."""
    return queue
