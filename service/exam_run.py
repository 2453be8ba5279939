"""One exam through the pipeline: the entry point of the node and of ``wbdwi process``.

:func:`run_exam` is the only place that strings the stages together; the
node's job (:func:`service.worker.run_job`) and the offline command
(:func:`service.commands.process.run_offline`) each turn their own input
(a job spec; command-line arguments) into its arguments and its
:class:`ExamRun` into their own outcome (a job outcome; an exit status and
printed lines). In order:

1. assembly of the input files (:func:`dicom_node.assembly.assemble.assemble_exam`),
   and the reader's SEG on the exam's grid when the run is a correction;
2. the priors (:class:`PriorsSource`: the node's history store and PACS, or
   the summary files of earlier runs; :mod:`service.priors`), whose baseline
   sets the yellow class bound;
3. processing on the device (:func:`process_on_device`, which reruns a job
   that failed on the GPU on the CPU under ``auto``), or the reader's mask
   measured (:func:`processing.pipeline.measure_tumour_mask`);
4. coverage findings (:func:`dicom_node.assembly.coverage.with_coverage_findings`);
5. the exam summary and the comparison with the priors;
6. the result objects (:func:`dicom_node.writers.write_results.write_results`),
   and the summary recorded with the UIDs of its SR and SEG;
7. ``measurements.json`` (:func:`service.durable_json.write_json_durably`).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import structlog

from dicom_node.assembly.assemble import AssembledExam, assemble_exam
from dicom_node.assembly.coverage import CoverageExpectation, with_coverage_findings
from dicom_node.assembly.dwi_frames import read_instance
from dicom_node.assembly.read_ahead import InstanceCache, ReadResult
from dicom_node.package_version import installed_version
from dicom_node.writers.write_results import earlier_version_reports, write_results
from processing.backend import Device, is_device_error, recheck_gpu, select_backend
from processing.comparison import Comparison, doubtful_reference_notes
from processing.errors import BackendUnavailableError, ProcessingError
from processing.exam import DwiExam
from processing.exam_summary import ExamSummary, summarize_exam
from processing.measurements import measurements_dict
from processing.pipeline import measure_tumour_mask, process_exam
from processing.response import ResponseSettings
from processing.results import ProcessingResult
from processing.settings import ProcessingSettings
from service.corrections import PreparedCorrection
from service.durable_json import write_json_durably
from service.priors import (
    MEASUREMENTS_FILE,
    ExamPriors,
    compare_with_priors,
    record_processed_exam,
    with_result_uids,
)

__all__ = [
    "MEASUREMENTS_FILE",
    "CorrectionReader",
    "ExamRequest",
    "ExamRun",
    "PriorsSource",
    "describe_failure",
    "process_on_device",
    "run_exam",
]

LOGGER = structlog.get_logger(__name__)

#: Reads the reader's SEG onto the assembled exam's grid (a correction run).
CorrectionReader = Callable[[DwiExam], PreparedCorrection]


class PriorsSource(Protocol):
    """Where the patient's earlier exams come from.

    :class:`service.priors.HistoryPriors` (the node: history store and PACS)
    and :class:`service.priors.SummaryFilePriors` (``wbdwi process --prior``).
    """

    def find(self, exam: DwiExam) -> ExamPriors:
        """The exam's priors, known before it is processed."""
        ...


@dataclass(frozen=True, slots=True)
class ExamRequest:
    """What to process, where to, and how.

    Attributes
    ----------
    inputs
        The exam's DICOM files.
    output_dir
        Where the result objects and ``measurements.json`` go (created when missing).
    settings, device
        Processing settings and device (``auto`` reruns a GPU failure on the CPU).
    coverage
        What a complete exam covers; an exam that falls short gets findings.
    earlier_versions
        Results folders of earlier versions of the exam, whose reports the
        new one replaces (Predecessor Documents).
    yellow_lower_um2s
        The yellow class bound, overriding the baseline's.
    response_settings
        Response rules (default: those of ``settings``' detection limit).
    """

    inputs: tuple[Path, ...]
    output_dir: Path
    settings: ProcessingSettings
    device: Device | str = Device.AUTO
    coverage: CoverageExpectation | None = None
    earlier_versions: tuple[Path, ...] = ()
    yellow_lower_um2s: float | None = None
    response_settings: ResponseSettings | None = None


@dataclass(frozen=True, slots=True)
class ExamRun:
    """What :func:`run_exam` produced.

    Attributes
    ----------
    result
        The processing result, with its coverage findings.
    assembled
        The assembled exam (and the series it ignored).
    priors
        What the priors source found.
    files
        The result objects written, in writing order.
    measurements_path, measurements
        ``measurements.json`` and its content.
    summary
        The exam summary as recorded (naming its SR and SEG); ``None`` when
        the exam is not summarised (the node without priors).
    comparison
        The comparison with the priors; ``None`` without an earlier exam.
    notes
        The sentences of the report (``measurements.json`` ``warnings``).
    gpu_fallback
        Why the exam was processed again on the CPU after the GPU failed
        (empty when it was not).
    timings_s
        Seconds per stage: ``assemble``, ``priors``, ``process``, ``write``.
    correction
        The reader's correction measured, or ``None``.
    """

    result: ProcessingResult
    assembled: AssembledExam
    priors: ExamPriors
    files: tuple[Path, ...]
    measurements_path: Path
    measurements: dict[str, Any] = field(repr=False)
    summary: ExamSummary | None = None
    comparison: Comparison | None = None
    notes: tuple[str, ...] = ()
    gpu_fallback: str = ""
    timings_s: dict[str, float] = field(default_factory=dict)
    correction: PreparedCorrection | None = None


def run_exam(
    request: ExamRequest,
    priors: PriorsSource,
    correction: CorrectionReader | None = None,
    *,
    instances: InstanceCache | None = None,
    on_derived_written: Callable[[list[tuple[Path, str]]], None] | None = None,
) -> ExamRun:
    """Assemble, compare with priors, process and write the results of one exam.

    Parameters
    ----------
    request
        The input files, the output folder and the processing choices.
    priors
        The priors source; its baseline's 95th ADC centile bounds the yellow
        class unless ``request.yellow_lower_um2s`` is given.
    correction
        Reads a reader's SEG onto the exam: its mask is measured instead of
        the segmentation (no GPU fallback), and the reader-corrected SEG, SR
        and key images are written. ``None``: the automatic run.
    instances
        The node's read-ahead cache: the input files it read while they arrived
        are taken from it (and dropped from it once assembled); ``None``: every
        file is read now.
    on_derived_written
        Given the derived MR series and the Parametric Map as soon as they are
        written, before the SEG, SR and key images (see
        :func:`~dicom_node.writers.write_results.write_results`).

    Raises
    ------
    dicom_node.errors.AssemblyError
        The files do not make a usable DWI exam.
    processing.errors.ProcessingError
        The exam cannot be processed (:class:`BackendUnavailableError` for
        ``device = gpu`` without a usable GPU).
    dicom_node.errors.WriterError, OSError
        A result cannot be written.
    Exception
        Whatever ``correction`` and ``priors.find`` raise (see their sources).
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    assembled = _assemble(request.inputs, instances, started)
    exam = assembled.exam
    prepared_correction = None if correction is None else correction(exam)
    timings["assemble"] = time.perf_counter() - started
    version = installed_version()
    started = time.perf_counter()
    found = priors.find(exam)
    timings["priors"] = time.perf_counter() - started
    started = time.perf_counter()
    yellow = request.yellow_lower_um2s
    result, gpu_fallback = _process(
        exam, request, prepared_correction, found.yellow_lower_um2s if yellow is None else yellow
    )
    result = with_coverage_findings(result, assembled.coverage, request.coverage)
    timings["process"] = time.perf_counter() - started
    started = time.perf_counter()
    summary, comparison = _compare(exam, result, found, request, version)
    prepared = found.prepared
    notes = found.warnings
    if comparison is not None and prepared is not None:
        notes = (*notes, *doubtful_reference_notes(comparison, prepared.priors))
    request.output_dir.mkdir(parents=True, exist_ok=True)
    # The writers make ~10^5 short-lived objects; the cyclic collector would walk the
    # exam, its result and everything else alive each time it runs (0.15-0.25 s on the
    # reference exam). What exists now stays alive through the write: set it aside.
    gc.freeze()
    try:
        files = write_results(
            exam,
            result,
            request.output_dir,
            version_label=version,
            comparison=comparison,
            prior_histograms=prepared.histograms_for(comparison) if prepared is not None else (),
            report_notes=notes,
            correction=None if prepared_correction is None else prepared_correction.writer,
            earlier_reports=(
                earlier_version_reports(request.earlier_versions)
                if request.earlier_versions
                else ()
            ),
            on_derived_written=on_derived_written,
        )
    finally:
        gc.unfreeze()
    if summary is not None:
        summary = (
            with_result_uids(summary, files)
            if found.history is None
            else record_processed_exam(found.history, summary, files)
        )
    timings["write"] = time.perf_counter() - started
    measurements = measurements_dict(
        result,
        study_instance_uid=exam.study_instance_uid,
        software_version=version,
        summary=summary,
        comparison=comparison,
    )
    measurements["timings_s"] = {"assemble": timings["assemble"], **measurements["timings_s"]}
    measurements["warnings"] = list(notes)
    if prepared_correction is not None:
        measurements["correction"] = prepared_correction.describe()
    path = request.output_dir / MEASUREMENTS_FILE
    write_json_durably(path, measurements)
    return ExamRun(
        result=result,
        assembled=assembled,
        priors=found,
        files=tuple(files),
        measurements_path=path,
        measurements=measurements,
        summary=summary,
        comparison=comparison,
        notes=tuple(notes),
        gpu_fallback=gpu_fallback,
        timings_s=timings,
        correction=prepared_correction,
    )


def _process(
    exam: DwiExam,
    request: ExamRequest,
    correction: PreparedCorrection | None,
    yellow_lower_um2s: float | None,
) -> tuple[ProcessingResult, str]:
    """The exam processed (GPU fallback under ``auto``), or the reader's mask measured."""
    if correction is None:
        return process_on_device(
            exam, request.settings, request.device, yellow_lower_um2s=yellow_lower_um2s
        )
    result = measure_tumour_mask(
        exam,
        correction.mask.mask,
        request.settings,
        device=request.device,
        yellow_lower_um2s=yellow_lower_um2s,
    )
    return result, ""


def _compare(
    exam: DwiExam,
    result: ProcessingResult,
    found: ExamPriors,
    request: ExamRequest,
    version: str,
) -> tuple[ExamSummary | None, Comparison | None]:
    """The exam's summary and its comparison with the priors (``None`` when not made)."""
    if found.prepared is None or found.when is None:
        return None, None
    summary = summarize_exam(
        exam,
        result.stats,
        study_date=found.when.study_date,
        study_time=found.when.study_time,
        software_version=version,
        quality=result.quality,
    )
    comparison = compare_with_priors(
        summary, found.prepared, request.settings, request.response_settings
    )
    return summary, comparison


def process_on_device(
    exam: DwiExam,
    settings: ProcessingSettings,
    device: Device | str,
    *,
    yellow_lower_um2s: float | None = None,
) -> tuple[ProcessingResult, str]:
    """Process ``exam`` on ``device``; under ``auto`` a job that fails on the GPU runs on the CPU.

    A failure on the GPU that is not a verdict on the input
    (:class:`~processing.errors.ProcessingError`) reruns the job on the CPU
    and is logged (``gpu_job_rerun_on_cpu``). When the failure is a CUDA or
    CuPy error, :func:`~processing.backend.recheck_gpu` probes the device
    again: after a sticky error (the context stays broken) the GPU is off for
    the rest of the process and later jobs go to the CPU straight away. With
    ``device = gpu`` a CUDA error fails the job with
    :class:`~processing.errors.BackendUnavailableError` naming it.

    Returns
    -------
    tuple of (ProcessingResult, str)
        The result, and why the job was rerun on the CPU (empty when it was not).
    """
    wanted = Device.coerce(device)
    backend = select_backend(wanted)
    if not backend.is_gpu:
        return process_exam(
            exam, settings, device=Device.CPU, yellow_lower_um2s=yellow_lower_um2s
        ), ""
    try:
        return process_exam(
            exam, settings, device=Device.GPU, yellow_lower_um2s=yellow_lower_um2s
        ), ""
    except ProcessingError as error:
        if not isinstance(error, BackendUnavailableError):
            raise  # the input's fault: the CPU would say the same
        failure: Exception = error
    except Exception as error:  # any GPU-side failure: the CPU is the reference
        failure = error
    reason = describe_failure(failure)
    device_error = is_device_error(failure)
    still_usable, detail = recheck_gpu(failure) if device_error else (True, "")
    if wanted is Device.GPU:
        LOGGER.error("gpu_job_failed", reason=reason, gpu_still_usable=still_usable)
        if device_error:
            raise BackendUnavailableError(
                f"the job failed on the GPU ({reason}); device gpu was requested "
                "(device auto reruns such a job on the CPU)"
            ) from failure
        raise failure
    LOGGER.warning(
        "gpu_job_rerun_on_cpu",
        reason=reason,
        cuda_error=device_error,
        gpu_still_usable=still_usable,
        **({"gpu_status": detail} if not still_usable else {}),
        exc_info=not device_error,  # a GPU-only bug needs its traceback
    )
    result = process_exam(exam, settings, device=Device.CPU, yellow_lower_um2s=yellow_lower_um2s)
    note = f"processed on the CPU after the GPU failed ({reason})"
    if not still_usable:
        note += "; the GPU is off until the node restarts"
    return result, note


def describe_failure(error: BaseException) -> str:
    """The reason recorded on a failed job: the error class and its message."""
    message = str(error).strip() or "no message"
    return f"{type(error).__name__}: {message}"


def _assemble(
    inputs: tuple[Path, ...], instances: InstanceCache | None, started: float
) -> AssembledExam:
    """Assemble the exam, taking what the read-ahead read (dropped from it then); logged."""
    read_before = 0
    if instances is None:
        assembled = assemble_exam(inputs)
    else:
        cache = instances

        def read(path: str) -> ReadResult:
            nonlocal read_before
            found = cache.lookup(path)
            if found is None:
                return read_instance(path)
            read_before += 1
            return found

        try:
            assembled = assemble_exam(inputs, read=read)
        finally:
            cache.discard(inputs)
    LOGGER.info(
        "exam_assembled",
        instances=len(inputs),
        read_ahead=read_before,  # of them read while they arrived
        seconds=round(time.perf_counter() - started, 3),
    )
    return assembled
