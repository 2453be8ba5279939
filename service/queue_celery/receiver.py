"""The receiver side of the celery backend: publish ready jobs, apply what workers report.

The receiver's SQLite job store stays the ledger: a job is recorded there
(idempotent by ``job_key``) before anything is published, its state and reason
are what ``wbdwi status`` shows, and its outbox sends each result file once to
each destination. Two threads connect the ledger to RabbitMQ:

- the **dispatcher** claims each ready job (it becomes ``processing``) and
  publishes its :class:`~service.queue_celery.messages.JobEnvelope` to the
  device-class queue, waiting for the broker's confirm. When the broker cannot
  be reached the job is put back (``ready``, tried again a few seconds later,
  the reason in ``wbdwi status``); nothing is lost, it waits.
- the **event consumer** reads ``wbdwi.events`` and ``wbdwi.dead``. A
  ``finished`` report of a job still ``processing`` records its result files and
  queues them for the destinations; a second ``finished`` of the same job (a
  worker that was thought dead, a job published twice after a restart) is
  ignored, so each result reaches the PACS once. ``failed`` marks the job
  failed with the worker's reason; ``waiting`` puts it back until its priors
  peer answers (``[priors]``); a dead letter marks the job failed with why it
  was given up. A report is acknowledged only once the ledger has it.

On a restart of the receiver, jobs left ``processing`` are made ready again
(:meth:`~service.jobstore.SqliteJobStore.resume_after_restart`) and published
again; a job whose first message is still in the broker may then run twice,
and its second report is ignored.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pydicom
import structlog
from pydicom.errors import InvalidDicomError

from service.errors import HistoryError, StorageKeyError
from service.history import HistorySnapshot, HistoryStore, PatientKey, replay_writes
from service.jobs import JobSpec, JobState
from service.queue_celery.config import (
    DEAD_LETTER_EXCHANGE,
    TASK_NAME,
    dead_queue,
    events_queue,
    job_queue_name,
    make_app,
)
from service.queue_celery.messages import JobEnvelope, JobEvent
from service.queue_protocols import Ledger
from service.storage import Storage, portable_spec
from service.worker import PriorsWait

__all__ = ["BROKER_RETRY_SECONDS", "CeleryReceiver", "device_class_for"]

LOGGER = structlog.get_logger(__name__)

#: How long a job waits before it is published again when the broker was unreachable.
BROKER_RETRY_SECONDS = 5.0
_PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0.5, "interval_step": 1, "interval_max": 2}


def device_class_for(device: str) -> str:
    """The job queue of a node whose ``node.device`` is ``device`` (``cpu``: cpu, else gpu)."""
    return "cpu" if device == "cpu" else "gpu"


class CeleryReceiver:
    """Publishes the ledger's ready jobs to RabbitMQ and applies the workers' reports to it.

    Parameters
    ----------
    store
        The ledger (the node's job store).
    broker_url, delivery_limit
        ``[queue]`` settings.
    device_class
        Queue the jobs go to (``gpu`` or ``cpu``).
    software_version
        Written into every envelope; workers of another version refuse the job.
    on_finished
        Called with ``(job_id, ok)`` after a report that ends processing (the
        node wakes its exporter and counts jobs).
    priors_wait
        How long a job waits for an unreachable priors peer.
    storage
        The shared storage as this host mounts it (``[queue] storage_root``):
        published specs name their files by keys of it and the workers'
        result keys are resolved in it (:mod:`service.storage`); ``None``
        (unset): absolute paths, the share mounted at the same path on every host.
    """

    def __init__(  # noqa: PLR0913 - keyword-only: each is one [queue] or node setting
        self,
        store: Ledger,
        *,
        broker_url: str,
        delivery_limit: int,
        device_class: str,
        software_version: str,
        on_finished: Callable[[int, bool, float], None] | None = None,
        priors_wait: PriorsWait | None = None,
        clock: Callable[[], float] = time.time,
        storage: Storage | None = None,
    ) -> None:
        self.store = store
        self.storage = storage
        self.app = make_app(broker_url, delivery_limit)
        self.delivery_limit = delivery_limit
        self.queue_name = job_queue_name(device_class)
        self.device_class = device_class
        self.software_version = software_version
        self._on_finished = on_finished
        self.priors_wait = priors_wait or PriorsWait()
        self._clock = clock
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._refusals: dict[int, str] = {}
        self._started_by: dict[int, list[str]] = {}
        self._published: dict[int, JobSpec] = {}
        self.published = 0
        self.broker_connected = False

    # ------------------------------------------------------------ dispatcher
    def wake(self, *_: object) -> None:
        """Look for ready jobs now."""
        self._wake.set()

    def run_dispatcher(self, stop: threading.Event, idle_seconds: float = 0.5) -> None:
        """Publish ready jobs until ``stop`` is set."""
        while not stop.is_set():
            try:
                published = self.dispatch_due()
            except Exception:
                LOGGER.exception("job_dispatch_failed")
                published = 0
            if not published:
                self._wake.wait(idle_seconds)
                self._wake.clear()

    def dispatch_due(self) -> int:
        """Publish every due ready job; how many were published."""
        count = 0
        while True:
            spec = self.store.claim(self._clock())
            if spec is None:
                return count
            if self.publish(spec):
                count += 1
            else:
                return count

    def publish(self, spec: JobSpec) -> bool:
        """Publish one claimed job; on a broker error put it back and return ``False``."""
        spec = self._after_priors_wait(spec)
        try:
            wire = spec if self.storage is None else portable_spec(spec, self.storage)
        except StorageKeyError as outside:
            # No worker could find the file: the job fails with the reason, nothing is published.
            self.store.fail(spec.job_id, f"not published to the workers: {outside}")
            LOGGER.error("job_not_portable", job_id=spec.job_id, reason=str(outside))
            if self._on_finished is not None:
                self._on_finished(spec.job_id, False, 0.0)
            return True
        envelope = JobEnvelope.for_spec(wire, self.software_version, self._history(spec))
        with self._lock:
            self._published[spec.job_id] = spec
        try:
            self.app.send_task(
                TASK_NAME,
                args=[envelope.to_dict()],
                queue=self.queue_name,
                routing_key=self.device_class,
                task_id=f"{spec.job_id}-{time.time_ns()}",
                retry=True,
                retry_policy=_PUBLISH_RETRY,
            )
        except Exception as error:
            # The broker is away (restart, network): the job waits in the ledger.
            now = self._clock()
            reason = f"waiting for the queue broker ({self.queue_name}): {error}"
            self.store.defer(spec.job_id, now + BROKER_RETRY_SECONDS, reason, now=now)
            LOGGER.warning("job_publish_failed", job_id=spec.job_id, reason=str(error))
            return False
        self.published += 1
        LOGGER.info("job_published", job_id=spec.job_id, queue=self.queue_name)
        return True

    def _after_priors_wait(self, spec: JobSpec) -> JobSpec:
        """A job that waited long enough for its priors peer goes on with the local history."""
        if spec.priors is None:
            return spec
        since = self.store.deferred_since(spec.job_id)
        if since is None or self._clock() - since < self.priors_wait.max_wait_seconds:
            return spec
        LOGGER.warning("priors_wait_over", job_id=spec.job_id, action="local history")
        return replace(spec, priors=replace(spec.priors, continue_without_pacs=True))

    # -------------------------------------------------------------- events
    def run_events(self, stop: threading.Event) -> None:
        """Consume the workers' reports and the dead letters until ``stop``; reconnects."""
        while not stop.is_set():
            try:
                self._consume(stop)
            except Exception as error:
                self.broker_connected = False
                LOGGER.warning("queue_events_disconnected", reason=str(error))
                stop.wait(2.0)

    def _consume(self, stop: threading.Event) -> None:
        with self.app.connection_for_read() as connection:
            connection.ensure_connection(max_retries=1)
            channel = connection.channel()
            dead_queue()(channel).declare()
            consumer = connection.Consumer(
                [events_queue(), dead_queue()],
                callbacks=[self._on_message],
                accept=["json"],
                prefetch_count=16,
            )
            with consumer:
                self.broker_connected = True
                LOGGER.info("queue_events_connected", queue=self.queue_name)
                while not stop.is_set():
                    try:
                        connection.drain_events(timeout=1.0)
                    except TimeoutError:
                        connection.heartbeat_check()

    def _on_message(self, body: Any, message: Any) -> None:
        exchange = str((message.delivery_info or {}).get("exchange", ""))
        try:
            if exchange == DEAD_LETTER_EXCHANGE:
                self.apply_dead_letter(body, dict(message.headers or {}))
            else:
                self.apply_event(JobEvent.from_dict(body))
        except (ValueError, KeyError, TypeError, IndexError) as error:
            # Not a message of this software: said once, not retried forever.
            LOGGER.error("queue_message_unreadable", exchange=exchange, reason=str(error))
        except Exception:
            LOGGER.exception("queue_message_not_applied")
            message.requeue()
            time.sleep(1.0)
            return
        message.ack()

    def _processing(self, job_id: int) -> bool:
        try:
            return self.store.status(job_id).state is JobState.PROCESSING
        except KeyError:
            return False

    def apply_event(self, event: JobEvent) -> bool:
        """Apply one report to the ledger; ``False`` when it changed nothing (a duplicate)."""
        job_id = event.job_id
        log = LOGGER.bind(job_id=job_id, worker=event.worker)
        with self._lock:
            if event.kind == "started":
                self._started_by.setdefault(job_id, []).append(event.worker)
                log.info("job_started_on_worker")
                return True
            if event.kind == "refused":
                self._refusals[job_id] = f"{event.worker}: {event.reason}"
                log.warning("job_refused_by_worker", reason=event.reason)
                return True
            if not self._processing(job_id):
                log.info("job_report_ignored", kind=event.kind, reason="job not processing")
                return False
            if event.kind == "finished":
                spec = self._spec(job_id)
                self._record_history(spec, event)
                self.store.finish_processing(
                    job_id,
                    self._local_results(event.results),
                    spec.destinations,
                    event.seconds,
                    quality=event.assessment(),
                )
                log.info(
                    "job_processed",
                    result_files=len(event.results),
                    seconds=round(event.seconds, 3),
                    device=event.device,
                )
            elif event.kind == "no_results":
                self.store.finish_without_results(job_id, event.reason, event.seconds)
            elif event.kind == "failed":
                self.store.fail(job_id, f"{event.reason} (worker {event.worker})")
                log.error("job_failed", reason=event.reason)
            else:  # waiting: the priors peer could not be asked
                now = self._clock()
                until = now + self.priors_wait.retry_seconds
                self.store.defer(job_id, until, f"waiting for priors: {event.reason}", now=now)
                self.wake()
                return True
            self._forget(job_id)
        if self._on_finished is not None:
            self._on_finished(job_id, event.kind != "failed", event.seconds)
        return True

    def apply_dead_letter(self, body: Any, headers: dict[str, Any]) -> bool:
        """Mark the job of a dead-lettered task message failed with why it was given up."""
        args = body[0] if isinstance(body, list | tuple) else body.get("args")
        envelope = JobEnvelope.from_dict(args[0])
        job_id = envelope.job_id
        with self._lock:
            if not self._processing(job_id):
                LOGGER.info("dead_letter_ignored", job_id=job_id, reason="job not processing")
                return False
            deaths = headers.get("x-death") or [{}]
            death = deaths[0] if isinstance(deaths, list) and deaths else {}
            why = str(death.get("reason", "delivery_limit")) if isinstance(death, dict) else ""
            workers = self._started_by.get(job_id, [])
            reason = (
                f"given up by the queue broker ({why}) after {self.delivery_limit + 1} deliveries "
                f"of {self.queue_name} without a result: each worker died during the job "
                f"(crash, kill, host down) or refused it"
            )
            if workers:
                reason += f"; started on {', '.join(workers)}"
            if job_id in self._refusals:
                reason += f"; last refusal: {self._refusals[job_id]}"
            self.store.fail(job_id, reason)
            self._forget(job_id)
        LOGGER.error("job_dead_lettered", job_id=job_id, reason=reason)
        if self._on_finished is not None:
            self._on_finished(job_id, False, 0.0)
        return True

    def _history(self, spec: JobSpec) -> dict[str, Any] | None:
        """The patient's exams for a job with priors (the worker writes no database)."""
        if spec.priors is None:
            return None
        patient = _patient_of(spec.input_paths)
        if patient is None:  # no patient ID (or no readable input): no comparison
            return HistorySnapshot([]).to_dict()
        store = HistoryStore(spec.priors.history_path)
        looked_up = [
            (patient, peer)
            for peer in (spec.priors.pacs,)
            if peer and store.pacs_looked_up(patient, peer)
        ]
        return HistorySnapshot(store.exams(patient), looked_up).to_dict()

    def _record_history(self, spec: JobSpec, event: JobEvent) -> None:
        """Record in the receiver's history what the worker's job wrote to its snapshot."""
        if spec.priors is None or event.history is None:
            return
        try:
            count = replay_writes(event.history, HistoryStore(spec.priors.history_path))
        except (ValueError, HistoryError) as error:
            # The results still go out; the exam is missing from later comparisons.
            LOGGER.error("history_not_recorded", job_id=spec.job_id, reason=str(error))
            return
        LOGGER.info("history_recorded", job_id=spec.job_id, exams=count)

    def _local_results(self, results: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        """The workers' result keys as paths of this host (absolute paths stay)."""
        if self.storage is None:
            return list(results)
        return [(str(self.storage.path(key)), uid) for key, uid in results]

    def _spec(self, job_id: int) -> JobSpec:
        """The spec this receiver published (a job is ``processing`` only after that)."""
        spec = self._published.get(job_id)
        if spec is None:
            raise KeyError(f"job {job_id} is processing but was not published by this receiver")
        return spec

    def _forget(self, job_id: int) -> None:
        self._refusals.pop(job_id, None)
        self._started_by.pop(job_id, None)
        self._published.pop(job_id, None)


def _patient_of(paths: Sequence[str]) -> PatientKey | None:
    """Patient ID and issuer of the first readable input, or ``None`` (no ID, nothing readable)."""
    for path in paths:
        try:
            header = pydicom.dcmread(
                path, stop_before_pixels=True, specific_tags=["PatientID", "IssuerOfPatientID"]
            )
        except (OSError, InvalidDicomError):
            continue
        patient_id = str(header.get("PatientID", "") or "").strip()
        issuer = str(header.get("IssuerOfPatientID", "") or "").strip()
        return PatientKey(patient_id, issuer) if patient_id else None
    return None
