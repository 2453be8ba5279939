"""Running jobs: the pure :func:`run_job` and the loop that feeds it from the queue.

:func:`run_job` takes a :class:`~service.jobs.JobSpec` and nothing else: it
assembles the exam from the stored instances, processes it, and writes the
result objects into the spec's output folder. Any worker (this process's
:class:`Worker`, or a worker of a distributed queue) calls it the same way.
Running it twice on the same spec writes the same files with the same UIDs.

:class:`Worker` claims ready jobs one at a time. A job that fails (bad input,
unexpected exception) is marked ``failed`` with its reason; its inputs stay in
the spool, and the next job runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from dicom_node.assembly import assemble_exam
from dicom_node.errors import DicomNodeError
from dicom_node.export import read_result_identity
from dicom_node.write_results import write_results
from dicom_node.writers import installed_version
from processing.errors import ProcessingError
from processing.measurements import measurements_dict
from processing.pipeline import process_exam
from processing.results import ProcessingResult
from service.jobs import JobSpec
from service.jobstore import SqliteJobStore
from service.settings import processing_settings_from_mapping

__all__ = [
    "JOB_SUMMARY_FILE",
    "MEASUREMENTS_FILE",
    "JobOutcome",
    "Worker",
    "describe_failure",
    "run_job",
]

LOGGER = structlog.get_logger(__name__)

JOB_SUMMARY_FILE = "job.json"
MEASUREMENTS_FILE = "measurements.json"


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """What one run of a job produced."""

    result_files: tuple[str, ...]
    device: str
    timings_s: dict[str, float] = field(default_factory=dict)
    result: ProcessingResult | None = field(default=None, repr=False)


def run_job(spec: JobSpec) -> JobOutcome:
    """Assemble, process and write the results of one exam.

    Raises whatever the stages raise: :class:`dicom_node.errors.AssemblyError` for
    bad input, :class:`processing.errors.ProcessingError`,
    :class:`dicom_node.errors.WriterError`, ``OSError``.
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if not spec.input_paths:
        raise ValueError("the job has no MR instances to process (check series_include)")
    assembled = assemble_exam(Path(p) for p in spec.input_paths)
    timings["assemble"] = time.perf_counter() - started
    settings = processing_settings_from_mapping(spec.processing)
    started = time.perf_counter()
    result = process_exam(assembled.exam, settings, device=spec.device)
    timings["process"] = time.perf_counter() - started
    started = time.perf_counter()
    output_dir = Path(spec.output_dir)
    files = write_results(assembled.exam, result, output_dir)
    timings["write"] = time.perf_counter() - started
    summary = {
        "job_id": spec.job_id,
        "job_key": spec.job_key,
        "study_uid": spec.study_uid,
        "version": spec.version,
        "device": result.device,
        "instances_used": len(spec.input_paths),
        "series_ignored": [
            {"uid": s.uid, "description": s.description, "reason": s.reason}
            for s in assembled.series_ignored
        ],
        "result_files": [str(path.relative_to(output_dir)) for path in files],
        "timings_s": {**timings, **{f"process.{k}": v for k, v in result.timings_s.items()}},
    }
    (output_dir / JOB_SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    measurements = measurements_dict(
        result, study_instance_uid=spec.study_uid, software_version=installed_version()
    )
    (output_dir / MEASUREMENTS_FILE).write_text(json.dumps(measurements, indent=2))
    return JobOutcome(
        result_files=tuple(str(path) for path in files),
        device=result.device,
        timings_s=timings,
        result=result,
    )


def describe_failure(error: BaseException) -> str:
    """The reason recorded on a failed job: the error class and its message."""
    message = str(error).strip() or "no message"
    return f"{type(error).__name__}: {message}"


class Worker:
    """Claims ready jobs and runs them, one at a time.

    Parameters
    ----------
    store
        The job queue.
    runner
        The job function (:func:`run_job`; injectable for tests).
    on_finished
        Called with ``(spec, outcome or None, seconds)`` after each job.
    """

    def __init__(
        self,
        store: SqliteJobStore,
        runner: Callable[[JobSpec], JobOutcome] = run_job,
        on_finished: Callable[[JobSpec, JobOutcome | None, float], None] | None = None,
    ) -> None:
        self.store = store
        self.runner = runner
        self._on_finished = on_finished
        self._wake = threading.Event()
        self.current_job: int | None = None

    def wake(self, *_: object) -> None:
        """Look for work now."""
        self._wake.set()

    def run(self, stop: threading.Event, idle_seconds: float = 0.5) -> None:
        """Process jobs until ``stop`` is set (the current job is finished first)."""
        while not stop.is_set():
            try:
                spec = self.store.claim()
            except Exception:
                LOGGER.exception("job_claim_failed")
                spec = None
            if spec is None:
                self._wake.wait(idle_seconds)
                self._wake.clear()
                continue
            self.process(spec)

    def process(self, spec: JobSpec) -> JobOutcome | None:
        """Run one claimed job and record its outcome in the store."""
        self.current_job = spec.job_id
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(job_id=spec.job_id, study_uid=spec.study_uid):
            LOGGER.info("job_started", version=spec.version, instances=len(spec.input_paths))
            try:
                outcome = self.runner(spec)
                results = [
                    (path, read_result_identity(path).sop_instance_uid)
                    for path in outcome.result_files
                ]
            except Exception as error:
                # Job boundary: record the reason, keep the inputs, go on with other jobs.
                seconds = time.perf_counter() - started
                reason = describe_failure(error)
                expected = isinstance(error, DicomNodeError | ProcessingError)
                LOGGER.error(
                    "job_failed",
                    reason=reason,
                    seconds=round(seconds, 3),
                    exc_info=not expected,  # bad input needs its reason, not a traceback
                )
                self.store.fail(spec.job_id, reason)
                self.current_job = None
                if self._on_finished is not None:
                    self._on_finished(spec, None, seconds)
                return None
            seconds = time.perf_counter() - started
            self.store.finish_processing(spec.job_id, results, spec.destinations, seconds)
            LOGGER.info(
                "job_processed",
                device=outcome.device,
                result_files=len(results),
                seconds=round(seconds, 3),
                destinations=list(spec.destinations) or "results folder",
            )
        self.current_job = None
        if self._on_finished is not None:
            self._on_finished(spec, outcome, seconds)
        return outcome
