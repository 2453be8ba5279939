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
from collections.abc import Iterator
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
    """A backend's queue object, its ledger, and how to stop what runs it."""

    name: str
    queue: Any  # submit / status / retry / dead_letters
    ledger: SqliteJobStore
    stops: list[Any] = field(default_factory=list)

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
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    ledger = SqliteJobStore(tmp_path / "jobs.sqlite")
    if request.param == "sqlite":
        worker = Worker(ledger)
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop, 0.05), daemon=True)
        thread.start()
        yield Backend("sqlite", ledger, ledger)
        stop.set()
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
        queue.start()
        process = WorkerProcess(tmp_path, url, "conformance", 3).start()
        try:
            yield Backend("celery", queue, ledger)
        finally:
            process.stop()
            queue.stop()
    ledger.close()


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
