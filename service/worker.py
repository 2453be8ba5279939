"""Running jobs: the pure :func:`run_job` and the loop that feeds it from the queue.

:func:`run_job` takes a :class:`~service.jobs.JobSpec` and nothing else: it
assembles the exam from the stored instances, compares it with the patient's
earlier exams (:mod:`service.priors`), processes it, and writes the result
objects into the spec's output folder. Any worker (this process's
:class:`Worker`, or a worker of a distributed queue) calls it the same way.
Running it twice on the same spec (and the same priors) writes the same files
with the same UIDs.

:class:`Worker` claims ready jobs one at a time. A job that fails (bad input,
unexpected exception) is marked ``failed`` with its reason; its inputs stay in
the spool, and the next job runs. A job whose priors peer (PACS) cannot be
asked is put back with a delay (:class:`~service.errors.PriorsUnavailableError`)
and tried again; once it has waited ``max_wait_seconds`` it runs with the local
history and a warning (``docs/service.md``, "Priors").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

import structlog

from dicom_node.assembly.read_ahead import InstanceCache
from dicom_node.errors import DicomNodeError, NoDiffusionSeriesError
from dicom_node.scu.export import read_result_identity
from processing.backend import Device, disable_gpu, is_device_error, use_gpu_index
from processing.errors import ProcessingError
from processing.pipeline import process_exam
from processing.quality import QualityAssessment, Verdict
from processing.results import ProcessingResult
from service.corrections import check_correction_target, prepare_correction
from service.durable_json import write_json_durably
from service.errors import (
    InputsMissingError,
    JobRefusedError,
    NothingToCorrectError,
    PriorsUnavailableError,
)
from service.exam_run import MEASUREMENTS_FILE, ExamRequest, describe_failure, run_exam
from service.history import ExamHistory
from service.jobs import JobSpec, JobState, check_spec_compatible, results_folder
from service.priors import HistoryPriors, comparison_block
from service.queue_protocols import JobEvents, JobSource
from service.settings import processing_settings_from_mapping

__all__ = [
    "JOB_SUMMARY_FILE",
    "MEASUREMENTS_FILE",
    "JobOutcome",
    "PriorsWait",
    "Worker",
    "WorkerIdentity",
    "run_job",
    "warm_up_gpu",
]

LOGGER = structlog.get_logger(__name__)

JOB_SUMMARY_FILE = "job.json"


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """What one run of a job produced."""

    result_files: tuple[str, ...]
    device: str
    timings_s: dict[str, float] = field(default_factory=dict)
    result: ProcessingResult | None = field(default=None, repr=False)
    warnings: tuple[str, ...] = ()
    comparison: dict[str, object] | None = None  # measurements.json "comparison"
    gpu_fallback: str = ""  # why the job ran again on the CPU after failing on the GPU
    quality: QualityAssessment = field(default_factory=QualityAssessment)  # the verdict


@dataclass(frozen=True, slots=True)
class PriorsWait:
    """How the worker waits for an unreachable priors peer (``[priors]`` settings)."""

    retry_seconds: float = 60.0
    max_wait_seconds: float = 1800.0


def run_job(
    spec: JobSpec,
    *,
    history: ExamHistory | None = None,
    instances: InstanceCache | None = None,
    on_results_ready: Callable[[JobSpec, list[tuple[str, str]]], None] | None = None,
) -> JobOutcome:
    """Assemble, compare with priors, process and write the results of one exam.

    The job spec turned into :func:`service.exam_run.run_exam`'s arguments,
    and its run into a :class:`JobOutcome` and ``job.json``. With
    ``spec.priors`` the exam is placed in the patient's history (see
    :mod:`service.priors`): the baseline's 95th ADC centile bounds the
    yellow class, the comparison goes into the SR, the key images and
    ``measurements.json``, and the exam is recorded in the history with the
    UIDs of its SR and SEG: in ``history`` when given (a worker on another
    host: a :class:`~service.history.HistorySnapshot`, whose writes the
    receiver replays), else in the store at ``spec.priors.history_path``.

    Raises whatever the stages raise: :class:`dicom_node.errors.AssemblyError` for
    bad input, :class:`processing.errors.ProcessingError`,
    :class:`dicom_node.errors.WriterError`, ``OSError``;
    :class:`~service.errors.InputsMissingError` when spooled inputs are gone;
    :class:`~service.errors.PriorsUnavailableError` when the priors peer
    cannot be asked and ``spec.priors.continue_without_pacs`` is off.

    ``instances``: the node's read-ahead cache (:mod:`dicom_node.assembly.read_ahead`),
    which holds the input files read while they arrived. ``on_results_ready``:
    given ``(spec, [(path, sop_instance_uid), ...])`` of the derived series and
    the Parametric Map as soon as they are written, while the SEG and SR are
    made (the node queues them for delivery then; the job's outcome lists them
    again with the rest).
    """
    if spec.correction is not None:
        check_correction_target(spec.correction)
    if not spec.input_paths:
        raise ValueError("the job has no MR instances to process (check series_include)")
    missing = [path for path in spec.input_paths if not Path(path).is_file()]
    if missing:
        raise InputsMissingError(
            f"{len(missing)} of {len(spec.input_paths)} input files are no longer in the spool "
            f"(removed by retention or by hand), e.g. {missing[0]}; send the exam again"
        )
    output_dir = Path(spec.output_dir)
    request = ExamRequest(
        inputs=tuple(Path(p) for p in spec.input_paths),
        output_dir=output_dir,
        settings=processing_settings_from_mapping(spec.processing),
        device=spec.device,
        coverage=spec.coverage,
        # a later version (late images) names the reports it replaces
        earlier_versions=(
            tuple(
                results_folder(output_dir.parent.parent, spec.study_uid, number)
                for number in range(1, spec.version)
            )
            if spec.correction is None
            else ()
        ),
    )
    run = run_exam(
        request,
        HistoryPriors(spec.priors, history=history),
        None if spec.correction is None else partial(prepare_correction, spec),
        instances=instances,
        on_derived_written=(
            None
            if on_results_ready is None
            else lambda written: on_results_ready(spec, [(str(p), uid) for p, uid in written])
        ),
    )
    result = run.result
    warnings = (*run.notes, *([run.gpu_fallback] if run.gpu_fallback else []))
    summary = {
        "job_id": spec.job_id,
        "job_key": spec.job_key,
        "study_uid": spec.study_uid,
        "version": spec.version,
        "device": result.device,
        "instances_used": len(spec.input_paths),
        "series_ignored": [
            {"uid": s.uid, "description": s.description, "reason": s.reason}
            for s in run.assembled.series_ignored
        ],
        "result_files": [str(path.relative_to(output_dir)) for path in run.files],
        "timings_s": {**run.timings_s, **{f"process.{k}": v for k, v in result.timings_s.items()}},
        "priors": comparison_block(spec.priors, run.priors, run.comparison),
        "warnings": list(warnings),
        "gpu_fallback": run.gpu_fallback or None,
        "verdict": result.quality.verdict.value,
        "verdict_reasons": [finding.code for finding in result.quality.findings],
    }
    if run.correction is not None:
        summary["correction"] = run.correction.describe()
    write_json_durably(output_dir / JOB_SUMMARY_FILE, summary)
    return JobOutcome(
        result_files=tuple(str(path) for path in run.files),
        device=result.device,
        timings_s=run.timings_s,
        result=result,
        warnings=warnings,
        comparison=run.measurements.get("comparison"),
        quality=result.quality,
        gpu_fallback=run.gpu_fallback,
    )


def warm_up_gpu(device: Device | str) -> bool:
    """Process a tiny synthetic exam on the GPU, so that the first job finds its kernels compiled.

    CuPy compiles each kernel at its first use (about a hundred for a job);
    the node runs this in a thread at start. When the GPU fails on the
    synthetic exam and ``device`` is ``auto``, the GPU is switched off for the
    process (:func:`~processing.backend.disable_gpu`) and jobs run on the CPU.

    Returns
    -------
    bool
        Whether the synthetic exam went through on the GPU.
    """
    from processing.phantom import make_phantom  # only the warm-up needs the phantom

    started = time.perf_counter()
    try:
        exam = make_phantom("small", snr=0.0, seed=0).to_exam()
        process_exam(exam, device=Device.GPU)
    except Exception as error:  # the GPU path failed on known-good input
        reason = f"GPU warm-up on a synthetic exam failed ({describe_failure(error)})"
        if Device.coerce(device) is Device.AUTO:
            disable_gpu(f"{reason}; processing on the CPU until the node restarts")
        LOGGER.error("gpu_warmup_failed", reason=reason, exc_info=not is_device_error(error))
        return False
    LOGGER.info("gpu_warmed_up", seconds=round(time.perf_counter() - started, 3))
    return True


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    """Who a :class:`Worker` is.

    Attributes
    ----------
    name
        The worker's name in the log (``worker-1``, ...).
    gpu_index
        The CUDA device this worker's thread uses (``None``: the process's
        current device, 0 unless ``CUDA_VISIBLE_DEVICES`` says otherwise).
    software_version
        When given, a job made for another version is refused
        (:class:`JobRefusedError`, :func:`service.jobs.check_spec_compatible`):
        workers of a distributed queue pass their version; the embedded node,
        the only worker of its queue, does not.
    """

    name: str = "worker-1"
    gpu_index: int | None = None
    software_version: str | None = None


class Worker:
    """Runs jobs one at a time: claims them (pull backend) or is handed them (:meth:`process`).

    One Worker per thread or process: each has its own current job, counters
    and GPU.

    Parameters
    ----------
    store
        Where the worker reports each job's outcome (:class:`~service.queue_protocols.JobEvents`);
        when it can also claim jobs (the SQLite store), :meth:`run` pulls from it.
    runner
        The job function (:func:`run_job`; injectable for tests).
    on_finished
        Called with ``(spec, outcome or None, seconds)`` after each job (not
        after a job put back to wait for its priors).
    priors_wait
        How a job waits for an unreachable priors peer.
    clock
        Wall clock (injectable for tests).
    room
        Asked before each claim: the reason no job may start now (the data
        folder's disk almost full: :class:`service.disk.DiskGuard`), or ``None``.
    source
        Where :meth:`run` claims jobs; default: ``store`` when it can claim.
    identity
        Name, GPU and software version of this worker (default: ``worker-1``,
        the process's current device, no version check).
    """

    def __init__(
        self,
        store: JobEvents,
        runner: Callable[[JobSpec], JobOutcome] = run_job,
        on_finished: Callable[[JobSpec, JobOutcome | None, float], None] | None = None,
        *,
        priors_wait: PriorsWait | None = None,
        clock: Callable[[], float] = time.time,
        room: Callable[[], str | None] | None = None,
        source: JobSource | None = None,
        identity: WorkerIdentity | None = None,
    ) -> None:
        self.store = store
        self.source = source if source is not None else _pull_source(store)
        identity = identity or WorkerIdentity()
        self.name = identity.name
        self.gpu_index = identity.gpu_index
        self.software_version = identity.software_version
        self.runner = runner
        self._on_finished = on_finished
        self.priors_wait = priors_wait or PriorsWait()
        self._clock = clock
        self._room = room
        self._wake = threading.Event()
        self.current_job: int | None = None
        self._claim_error = ""
        self.jobs_ignored = 0  # studies without DWI, since start

    def wake(self, *_: object) -> None:
        """Look for work now."""
        self._wake.set()

    def select_gpu(self) -> None:
        """Make this worker's GPU current for the calling thread (nothing when ``gpu_index`` is
        ``None``); a GPU that cannot be selected is logged and the job runs where
        :func:`processing.backend.select_backend` puts it."""
        if self.gpu_index is None:
            return
        reason = use_gpu_index(self.gpu_index)
        if reason is None:
            LOGGER.info("worker_gpu_selected", worker=self.name, gpu=self.gpu_index)
        else:
            LOGGER.error("worker_gpu_unavailable", worker=self.name, reason=reason)

    def run(self, stop: threading.Event, idle_seconds: float = 0.5) -> None:
        """Claim and process jobs until ``stop`` is set (the current job is finished first).

        Raises
        ------
        TypeError
            The worker has no source to claim from (a push backend calls :meth:`process`).
        """
        if self.source is None:
            raise TypeError(f"{self.name} has no job source to claim from; call process(spec)")
        self.select_gpu()
        while not stop.is_set():
            spec = None if self._room is not None and self._room() else self._claim()
            if spec is None:
                self._wake.wait(idle_seconds)
                self._wake.clear()
                continue
            self.process(spec)

    def _claim(self) -> JobSpec | None:
        """The next ready job; a failing claim is logged once per distinct error, not per try."""
        try:
            assert self.source is not None  # run() checked
            spec = self.source.claim(self._clock())
        except Exception as error:
            text = f"{type(error).__name__}: {error}"
            if text != self._claim_error:
                LOGGER.exception("job_claim_failed", reason=text)
                self._claim_error = text
            return None
        if self._claim_error:
            LOGGER.info("job_claim_recovered")
            self._claim_error = ""
        return spec

    def process(self, spec: JobSpec) -> JobOutcome | None:
        """Run one job and report its outcome to the store.

        Raises
        ------
        JobRefusedError
            The job was made for another software version (only with
            ``software_version`` set); nothing is reported, the backend hands
            the job to another worker.
        """
        if self.software_version is not None:
            refusal = check_spec_compatible(spec, self.software_version)
            if refusal is not None:
                LOGGER.warning(
                    "job_refused", worker=self.name, job_key=spec.job_key, reason=refusal
                )
                raise JobRefusedError(refusal)
        self.current_job = spec.job_id
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(job_id=spec.job_id, study_uid=spec.study_uid):
            LOGGER.info("job_started", version=spec.version, instances=len(spec.input_paths))
            try:
                outcome = self._run_or_defer(spec)
                if outcome is None:
                    self.current_job = None
                    return None
                results = [
                    (path, read_result_identity(path).sop_instance_uid)
                    for path in outcome.result_files
                ]
            except NoDiffusionSeriesError as not_dwi:
                # A study without DWI (a routing rule sending every MR study): not a failure.
                seconds = time.perf_counter() - started
                LOGGER.info("job_ignored", reason=str(not_dwi))
                self.store.job_finished_without_results(
                    spec, str(not_dwi), seconds, state=JobState.IGNORED
                )
                self.jobs_ignored += 1
                self.current_job = None
                return None
            except NothingToCorrectError as nothing:
                # A SEG that corrects no exam of this node: kept, reported, nothing changes.
                seconds = time.perf_counter() - started
                LOGGER.warning("correction_ignored", reason=str(nothing))
                self.store.job_finished_without_results(
                    spec, str(nothing), seconds, state=JobState.DONE
                )
                self.current_job = None
                return None
            except Exception as error:
                # Job boundary: record the reason, keep the inputs, go on with other jobs.
                seconds = time.perf_counter() - started
                reason = describe_failure(error)
                expected = isinstance(error, DicomNodeError | ProcessingError | InputsMissingError)
                LOGGER.error(
                    "job_failed",
                    reason=reason,
                    seconds=round(seconds, 3),
                    exc_info=not expected,  # bad input needs its reason, not a traceback
                )
                self.store.job_failed(spec, reason)
                self.current_job = None
                if self._on_finished is not None:
                    self._on_finished(spec, None, seconds)
                return None
            seconds = time.perf_counter() - started
            self.store.job_finished(spec, results, seconds, quality=outcome.quality)
            verdict = outcome.quality.verdict
            # A result the reader must doubt is worth a warning in the log.
            log = LOGGER.info if verdict is Verdict.OK else LOGGER.warning
            log(
                "job_processed",
                verdict=verdict.value,
                verdict_reasons=[finding.code for finding in outcome.quality.findings],
                device=outcome.device,
                result_files=len(results),
                seconds=round(seconds, 3),
                destinations=list(spec.destinations) or "results folder",
                compared_with=(outcome.comparison or {}).get("prior_study_uid"),
            )
            for warning in outcome.warnings:
                LOGGER.warning("job_warning", warning=warning)
        self.current_job = None
        if self._on_finished is not None:
            self._on_finished(spec, outcome, seconds)
        return outcome

    def _run_or_defer(self, spec: JobSpec) -> JobOutcome | None:
        """Run the job; ``None`` when it was put back to wait for its priors peer."""
        try:
            return self.runner(spec)
        except PriorsUnavailableError as error:
            if spec.priors is None:
                raise
            now = self._clock()
            since = self.store.job_deferred_since(spec)
            waited = 0.0 if since is None else now - since
            wait = self.priors_wait
            if waited < wait.max_wait_seconds:
                until = now + min(wait.retry_seconds, wait.max_wait_seconds - waited)
                next_try = time.strftime("%H:%M:%S", time.localtime(until))
                self.store.job_deferred(
                    spec,
                    until,
                    f"waiting for priors (next try {next_try}, processed with the local history "
                    f"after {wait.max_wait_seconds:g} s): {error}",
                    now=now,
                )
                LOGGER.warning(
                    "job_waiting_for_priors",
                    reason=str(error),
                    waited_seconds=round(waited, 1),
                    retry_in_seconds=round(until - now, 1),
                )
                return None
            LOGGER.warning(
                "priors_wait_over",
                reason=str(error),
                waited_seconds=round(waited, 1),
                action="processing with the local history",
            )
            return self.runner(
                replace(spec, priors=replace(spec.priors, continue_without_pacs=True))
            )


def _pull_source(store: JobEvents) -> JobSource | None:
    """The store itself when it can claim jobs (a pull backend such as SQLite)."""
    return store if isinstance(store, JobSource) else None
