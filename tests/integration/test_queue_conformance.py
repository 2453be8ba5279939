"""One conformance suite for both job-queue backends: ``sqlite`` and ``celery``.

Each test runs against the backend's receiver-side object with a real worker:
the ``sqlite`` job store with a :class:`service.worker.Worker` thread, and the
``celery`` backend (:class:`service.queue_celery.queue.CeleryJobQueue` on a
private RabbitMQ) with a ``wbdwi worker`` process. Both run the real
:func:`service.worker.run_job`. The celery half is skipped, with its reason,
where ``rabbitmq-server`` is not installed (a failure under ``CI=true``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicom_node.package_version import installed_version
from service.jobs import JobRecord, JobSpec, JobState, make_job_key
from service.jobstore import SqliteJobStore
from service.worker import Worker
from tests.helpers.celery_worker import WorkerProcess
from tests.helpers.node_harness import wait_for, write_phantom_exam
from tests.helpers.rabbitmq import RabbitMQ, running_rabbitmq

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    with running_rabbitmq(tmp_path_factory.mktemp("broker")) as running:
        yield running


@dataclass
class Backend:
    """A backend's queue object, its ledger, and what runs its jobs (started by :meth:`start`)."""

    name: str
    queue: Any  # the service.queue_protocols.JobQueue seam
    ledger: SqliteJobStore
    starts: list[Callable[[], None]] = field(default_factory=list)

    def start(self) -> Backend:
        """Start the workers (and, on celery, the dispatcher)."""
        for start in self.starts:
            start()
        self.starts.clear()
        return self

    def job_id(self, job_key: str) -> int:
        [record] = [r for r in self.ledger.jobs() if r.job_key == job_key]
        return record.job_id

    def settled(self, job_id: int, timeout: float = 90.0) -> JobRecord:
        """Wait until the job is done or failed; its record."""
        wait_for(
            lambda: self.queue.status(job_id).state in {JobState.DONE, JobState.FAILED},
            timeout,
            f"job {job_id} to settle on {self.name}",
            poll=0.1,
        )
        record: JobRecord = self.queue.status(job_id)
        return record


@pytest.fixture(params=["sqlite", "celery"])
def idle_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A backend whose workers have not started yet (``backend.start()`` starts them)."""
    ledger = SqliteJobStore(tmp_path / "jobs.sqlite")
    if request.param == "sqlite":
        worker = Worker(ledger)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop, 0.05), daemon=True)
        yield Backend("sqlite", ledger, ledger, [thread.start])
        stop.set()
        if thread.is_alive():
            thread.join(timeout=60)
    else:
        from service.queue_celery.queue import CeleryJobQueue
        from service.queue_celery.receiver import CeleryReceiver

        rabbit: RabbitMQ = request.getfixturevalue("broker")
        url = rabbit.vhost_url(f"c-{uuid.uuid4().hex[:8]}")
        receiver = CeleryReceiver(
            ledger,
            broker_url=url,
            delivery_limit=3,
            device_class="cpu",
            software_version=installed_version(),
        )
        queue = CeleryJobQueue(ledger, receiver)
        process = WorkerProcess(tmp_path, url, "conformance", 3)
        started: list[WorkerProcess] = []
        try:
            yield Backend(
                "celery", queue, ledger, [queue.start, lambda: started.append(process.start())]
            )
        finally:
            for running in started:
                running.stop()
            queue.stop()
    ledger.close()


@pytest.fixture
def backend(idle_backend: Backend) -> Backend:
    """A backend with its workers running."""
    return idle_backend.start()


def _spec(tmp_path: Path, inputs: list[Path] | None = None, study_uid: str = "") -> JobSpec:
    uid = study_uid or f"2.25.{uuid.uuid4().int}"
    paths = [str(p) for p in inputs] if inputs else [str(tmp_path / "gone" / f"{uid}.dcm")]
    return JobSpec(
        job_key=make_job_key(uid, installed_version(), paths),
        job_id=0,
        study_uid=uid,
        version=1,
        input_paths=tuple(paths),
        output_dir=str(tmp_path / "results" / uid / "v1"),
        device="cpu",
    )


def test_submit_is_idempotent_by_job_key(backend: Backend, tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    assert backend.queue.submit(spec) is True
    assert backend.queue.submit(spec) is False
    job_id = backend.job_id(spec.job_key)
    backend.settled(job_id)
    assert backend.queue.submit(spec) is False  # also once it has run
    assert [r.job_key for r in backend.ledger.jobs()] == [spec.job_key]
    assert backend.queue.status(job_id).attempts == 1  # run once, not once per submit


def test_status_names_the_failure_reason_and_an_unknown_job_is_a_key_error(
    backend: Backend, tmp_path: Path
) -> None:
    spec = _spec(tmp_path)
    backend.queue.submit(spec)
    record = backend.settled(backend.job_id(spec.job_key))
    assert record.state is JobState.FAILED
    assert "InputsMissingError: 1 of 1 input files are no longer in the spool" in record.reason
    with pytest.raises(KeyError):
        backend.queue.status(999_999)


def test_retry_requeues_a_failed_job_and_it_runs_again(backend: Backend, tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    backend.queue.submit(spec)
    job_id = backend.job_id(spec.job_key)
    assert backend.settled(job_id).state is JobState.FAILED
    requeued = backend.queue.retry(job_id)
    assert requeued.state in {JobState.READY, JobState.PROCESSING}
    wait_for(lambda: backend.queue.status(job_id).attempts == 2, 60, "the second attempt")
    record = backend.settled(job_id)
    assert record.state is JobState.FAILED and record.attempts == 2


@pytest.mark.slow
def test_an_exam_runs_to_done_with_results_and_no_dead_letters(
    backend: Backend, tmp_path: Path
) -> None:
    files = write_phantom_exam(tmp_path / "exam")
    uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    spec = _spec(tmp_path, files, uid)
    started = time.monotonic()
    backend.queue.submit(spec)
    record = backend.settled(backend.job_id(spec.job_key), timeout=180)
    assert record.state is JobState.DONE, record.reason
    assert record.quality is not None and record.processing_seconds is not None
    assert record.processing_seconds < time.monotonic() - started
    assert list(Path(spec.output_dir).rglob("*.dcm"))  # result files written
    assert backend.queue.dead_letters() == []


def test_cancel_fails_a_queued_job_with_who_cancelled_it_and_retry_brings_it_back(
    idle_backend: Backend, tmp_path: Path
) -> None:
    queue = idle_backend.queue
    cancelled, other = _spec(tmp_path), _spec(tmp_path)
    assert queue.submit(cancelled) and queue.submit(other)
    job_id = idle_backend.job_id(cancelled.job_key)
    record = queue.cancel(job_id, "operator alice")
    assert (record.state, record.reason, record.attempts) == (
        JobState.FAILED,
        "cancelled by operator alice",
        0,
    )
    with pytest.raises(ValueError, match=f"job {job_id} is failed; only a receiving or ready"):
        queue.cancel(job_id, "operator alice")
    with pytest.raises(KeyError):
        queue.cancel(999_999, "operator alice")

    idle_backend.start()
    other_id = idle_backend.job_id(other.job_key)
    assert idle_backend.settled(other_id).attempts == 1  # the workers run
    after = queue.status(job_id)
    assert (after.state, after.reason, after.attempts) == (
        JobState.FAILED,
        "cancelled by operator alice",
        0,
    )  # never handed to a worker
    assert [r.job_id for r in queue.jobs(job_id=job_id)] == [job_id]

    assert queue.retry(job_id).state in {JobState.READY, JobState.PROCESSING}
    assert idle_backend.settled(job_id).attempts == 1  # it runs once retried
    with pytest.raises(ValueError, match=f"job {other_id} is failed; only a receiving or ready"):
        queue.cancel(other_id, "operator alice")  # ended: nothing to cancel
