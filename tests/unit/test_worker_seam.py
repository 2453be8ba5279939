"""The worker behind the queue seam (issue 15): pushed specs, version refusal, one Worker each."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
import structlog

from processing.backend import use_gpu_index
from processing.quality import QualityAssessment
from service.errors import InputsMissingError, JobRefusedError
from service.jobs import JobSpec, JobState
from service.jobstore import SqliteJobStore
from service.worker import JobOutcome, Worker, WorkerIdentity


class RecordedEvents:
    """A push backend's side of :class:`service.queue_protocols.JobEvents`: it only records."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def job_finished(
        self,
        spec: JobSpec,
        results: Sequence[tuple[str, str]],
        processing_seconds: float,
        *,
        quality: QualityAssessment | None = None,
    ) -> None:
        self.events.append(("finished", spec.job_key, str(len(results))))

    def job_finished_without_results(
        self, spec: JobSpec, reason: str, processing_seconds: float, *, state: JobState
    ) -> None:
        self.events.append(("without_results", spec.job_key, reason))

    def job_failed(self, spec: JobSpec, reason: str) -> None:
        self.events.append(("failed", spec.job_key, reason))

    def job_deferred(self, spec: JobSpec, until: float, reason: str, *, now: float) -> None:
        self.events.append(("deferred", spec.job_key, reason))

    def job_deferred_since(self, spec: JobSpec) -> float | None:
        return None


def _spec(version: str = "1.0") -> JobSpec:
    return JobSpec(
        job_key="1.2.3:wbdwi/1.0:abc",
        job_id=0,
        study_uid="1.2.3",
        version=1,
        input_paths=("spool/missing.dcm",),
        output_dir="results/1.2.3/v1",
        software_version=version,
    )


def _missing_inputs(spec: JobSpec) -> JobOutcome:
    raise InputsMissingError(
        f"1 of 1 input files are no longer in the spool: {spec.input_paths[0]}"
    )


def test_a_pushed_spec_is_reported_to_the_events_seam() -> None:
    events = RecordedEvents()
    worker = Worker(events, _missing_inputs, identity=WorkerIdentity(software_version="1.0"))
    assert worker.source is None  # nothing to claim from: the backend pushes
    assert worker.process(_spec()) is None
    assert events.events == [
        (
            "failed",
            "1.2.3:wbdwi/1.0:abc",
            "InputsMissingError: 1 of 1 input files are no longer in the spool: spool/missing.dcm",
        )
    ]
    assert worker.current_job is None


def test_a_worker_of_another_version_refuses_and_reports_nothing() -> None:
    events = RecordedEvents()
    ran: list[JobSpec] = []

    def runner(spec: JobSpec) -> JobOutcome:
        ran.append(spec)
        raise AssertionError("a refused job must not run")

    worker = Worker(events, runner, identity=WorkerIdentity(software_version="1.1"))
    with pytest.raises(JobRefusedError, match=r"software version 1\.0 and this worker runs 1\.1"):
        worker.process(_spec("1.0"))
    assert ran == [] and events.events == []


def test_a_push_worker_cannot_run_a_pull_loop() -> None:
    worker = Worker(RecordedEvents(), _missing_inputs, identity=WorkerIdentity(name="gpu-2"))
    with pytest.raises(TypeError, match="gpu-2 has no job source"):
        worker.run(threading.Event())


def test_each_worker_of_the_sqlite_store_has_its_own_state(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    try:
        first = Worker(store, _missing_inputs, identity=WorkerIdentity(name="worker-1"))
        second = Worker(store, _missing_inputs, identity=WorkerIdentity("worker-2", gpu_index=1))
        assert first.source is store and second.source is store
        first.current_job = 5
        first.jobs_ignored = 2
        assert second.current_job is None and second.jobs_ignored == 0
        assert (second.name, second.gpu_index) == ("worker-2", 1)
    finally:
        store.close()


def test_a_gpu_that_does_not_exist_is_named() -> None:
    reason = use_gpu_index(10_000)
    assert reason is not None and reason.startswith("GPU 10000 ")


def test_a_worker_without_its_gpu_logs_why_and_goes_on() -> None:
    worker = Worker(RecordedEvents(), _missing_inputs, identity=WorkerIdentity(gpu_index=10_000))
    with structlog.testing.capture_logs() as logs:
        worker.select_gpu()
    assert [entry["event"] for entry in logs] == ["worker_gpu_unavailable"]
    assert logs[0]["reason"].startswith("GPU 10000 ")
