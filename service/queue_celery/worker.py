"""The worker side of the celery backend: the task that runs one job, and one worker process.

A worker consumes one device-class queue (``wbdwi.gpu`` or ``wbdwi.cpu``)
with one pool process (one job at a time, one device: ``--gpu N`` sets
``CUDA_VISIBLE_DEVICES`` before anything touches the GPU). For each message it

1. refuses a job made by another software version (or whose settings do not
   match their digest): it reports ``refused`` to the receiver and rejects the
   message with requeue, so that another worker takes it. The quorum queue
   counts each delivery; after ``[queue] delivery_limit`` deliveries the
   message is dead-lettered and the receiver marks the job failed with the
   refusal as its reason, so a job no worker may run cannot circulate forever;
2. reports ``started``, runs the job through :func:`service.worker.run_job`
   (inputs and outputs on the shared storage named in the spec), and reports
   ``finished`` (result files with their SOP Instance UIDs, the verdict),
   ``no_results``, ``waiting`` (priors peer unreachable) or ``failed`` with
   the reason;
3. returns, and only then is the message acknowledged (``task_acks_late``).

A worker that dies mid-job (``kill -9``, a crash in native code, the host going
down) never acknowledges: RabbitMQ hands the message to another worker. If the
first worker's report still arrives, the receiver keeps the first ``finished``
and ignores the second (its ledger is idempotent by ``job_key``).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import structlog

from dicom_node.errors import DicomNodeError
from dicom_node.scu.export import read_result_identity
from processing.errors import ProcessingError
from service.errors import InputsMissingError, NothingToCorrectError, PriorsUnavailableError
from service.exam_run import describe_failure
from service.history import ExamHistory, HistorySnapshot
from service.jobs import JobSpec
from service.queue_celery.config import TASK_NAME, events_queue, job_queue_name, make_app
from service.queue_celery.messages import JobEnvelope, JobEvent
from service.storage import LocalStorage, Storage, localize_spec
from service.worker import JobOutcome, run_job

__all__ = ["JobRunner", "WorkerOptions", "register_task", "run_worker", "worker_argv"]

LOGGER = structlog.get_logger(__name__)

# Retry a report while the broker is away (restart, network): the job's result
# must not be lost because the events queue could not be reached for a while.
_PUBLISH_RETRY = {"max_retries": None, "interval_start": 1, "interval_step": 2, "interval_max": 10}


class JobRunner(Protocol):
    """What runs one job (:func:`service.worker.run_job`; tests inject their own)."""

    def __call__(self, spec: JobSpec, /, *, history: ExamHistory | None = None) -> JobOutcome:
        """Run ``spec``; priors are read from and the exam recorded in ``history``."""
        ...


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """One worker process.

    Attributes
    ----------
    broker_url
        RabbitMQ (``[queue] broker_url``).
    delivery_limit
        ``[queue] delivery_limit`` (the queue's ``x-delivery-limit``; every
        worker and the receiver must agree on it).
    queue
        Device class consumed: ``gpu`` or ``cpu``.
    device
        ``auto``, ``gpu`` or ``cpu``: what the jobs run on here.
    gpu
        GPU index (``CUDA_VISIBLE_DEVICES``); ``None``: every GPU visible.
    name
        Worker name (default ``wbdwi-QUEUE[GPU]@HOST-PID``).
    software_version
        This worker's version (the installed package's).
    storage_root
        Where this host mounts the shared storage (``[queue] storage_root``):
        the spec's keys are resolved under it and the result files are
        reported as keys of it; empty: the spec's paths are used as they are
        (absolute paths of the receiver), and a spec naming its files by keys
        is refused (left to a worker that has the share).
    """

    broker_url: str
    delivery_limit: int
    queue: str
    device: str
    software_version: str
    gpu: int | None = None
    name: str = ""
    storage_root: str = ""

    def storage(self) -> Storage | None:
        """The shared storage as this host mounts it, or ``None``."""
        return LocalStorage(Path(self.storage_root)) if self.storage_root else None

    def worker_name(self) -> str:
        """The Celery node name (unique per process)."""
        if self.name:
            return self.name
        gpu = "" if self.gpu is None else str(self.gpu)
        return f"wbdwi-{self.queue}{gpu}@{socket.gethostname()}-{os.getpid()}"


def _publish_event(app: Any, event: JobEvent) -> None:
    """Send ``event`` to the receiver (persistent, confirmed, retried while the broker is away)."""
    with app.producer_or_acquire() as producer:
        producer.publish(
            event.to_dict(),
            exchange="",
            routing_key=events_queue().name,
            serializer="json",
            delivery_mode=2,
            declare=[events_queue()],
            retry=True,
            retry_policy=_PUBLISH_RETRY,
        )


def _results(outcome: JobOutcome, storage: Storage | None) -> tuple[tuple[str, str], ...]:
    return tuple(
        (
            path if storage is None else storage.key(Path(path)),
            read_result_identity(path).sop_instance_uid,
        )
        for path in outcome.result_files
    )


def _storage_refusal(spec: JobSpec, storage: Storage | None) -> str | None:
    """Why a worker without shared storage must leave ``spec`` to others, or ``None``."""
    if storage is not None or all(PurePosixPath(p).is_absolute() for p in spec.input_paths):
        return None
    return (
        f"job {spec.job_key} names its files relative to the shared storage and this worker "
        "has no [queue] storage_root (where this host mounts the share)"
    )


def _run(
    spec: JobSpec,
    runner: JobRunner,
    worker: str,
    storage: Storage | None = None,
    history: HistorySnapshot | None = None,
) -> JobEvent:
    """Run the job (its keys resolved in ``storage``, its priors in ``history``); the event
    that reports how it ended (with the history's writes for the receiver to record)."""
    started = time.perf_counter()

    def event(kind: str, **fields: Any) -> JobEvent:
        seconds = time.perf_counter() - started
        return JobEvent(kind, spec.job_key, spec.job_id, worker, seconds=seconds, **fields)

    try:
        local = spec if storage is None else localize_spec(spec, storage)
        outcome = runner(local, history=history)
        results = _results(outcome, storage)
    except PriorsUnavailableError as error:
        return event("waiting", reason=str(error))
    except NothingToCorrectError as nothing:
        return event("no_results", reason=str(nothing))
    except Exception as error:
        # Job boundary: the reason goes to the receiver's ledger; the worker goes on.
        expected = isinstance(error, DicomNodeError | ProcessingError | InputsMissingError)
        LOGGER.error("job_failed", reason=describe_failure(error), exc_info=not expected)
        return event("failed", reason=describe_failure(error))
    return event(
        "finished",
        results=results,
        quality=outcome.quality.as_dict(),
        device=outcome.device,
        history=None if history is None else history.writes(),
    )


def register_task(
    app: Any,
    options: WorkerOptions,
    runner: JobRunner = run_job,
) -> Any:
    """Register :data:`~service.queue_celery.config.TASK_NAME` on ``app`` for this worker."""
    from celery.exceptions import Reject

    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def run_job_task(task: Any, envelope: object) -> None:
        worker = str(task.request.hostname or options.worker_name())
        try:
            job = JobEnvelope.from_dict(envelope)
            refusal = job.refusal(options.software_version)
            spec = JobSpec.from_json(job.spec)
            # A job with priors reads the patient's history from the envelope: no local database.
            history = None
            if spec.priors is not None:
                history = (
                    HistorySnapshot([])
                    if job.history is None
                    else HistorySnapshot.from_dict(job.history)
                )
        except ValueError as error:
            # Not a job this software can read: refuse it (dead-lettered after the limit).
            LOGGER.error("job_unreadable", reason=str(error))
            raise Reject(f"unreadable job message: {error}", requeue=True) from None
        refusal = refusal or _storage_refusal(spec, options.storage()) or ""
        if refusal:
            LOGGER.warning("job_refused", job_id=job.job_id, reason=refusal)
            _publish_event(
                app,
                JobEvent(
                    kind="refused",
                    job_key=job.job_key,
                    job_id=job.job_id,
                    worker=worker,
                    reason=refusal,
                ),
            )
            time.sleep(1.0)  # let a matching worker take it first
            raise Reject(refusal, requeue=True)
        spec = replace(spec, device=options.device)
        with structlog.contextvars.bound_contextvars(job_id=spec.job_id, study_uid=spec.study_uid):
            LOGGER.info("job_started", worker=worker, instances=len(spec.input_paths))
            _publish_event(
                app,
                JobEvent(kind="started", job_key=spec.job_key, job_id=spec.job_id, worker=worker),
            )
            event = _run(spec, runner, worker, options.storage(), history)
            _publish_event(app, event)
            LOGGER.info("job_reported", kind=event.kind, seconds=round(event.seconds, 3))

    return run_job_task


def worker_argv(options: WorkerOptions, loglevel: str = "INFO") -> list[str]:
    """``celery worker`` arguments: one queue, one pool process, no gossip/mingle."""
    return [
        "worker",
        f"--queues={job_queue_name(options.queue)}",
        "--concurrency=1",
        "--pool=prefork",
        f"--hostname={options.worker_name()}",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def run_worker(
    options: WorkerOptions,
    runner: JobRunner = run_job,
    extra_argv: Sequence[str] = (),
) -> None:
    """Run one worker until SIGTERM (a warm shutdown: the current job finishes first)."""
    if options.gpu is not None:
        # Before any GPU library is loaded in this process or its pool process.
        os.environ["CUDA_VISIBLE_DEVICES"] = str(options.gpu)
    job_queue_name(options.queue)  # a clear error for a wrong --queue
    app = make_app(options.broker_url, options.delivery_limit)
    register_task(app, options, runner)
    LOGGER.info(
        "worker_starting",
        name=options.worker_name(),
        queue=job_queue_name(options.queue),
        device=options.device,
        gpu=options.gpu,
        version=options.software_version,
    )
    app.worker_main(argv=[*worker_argv(options), *extra_argv])
