"""``wbdwi process``: assemble and process a folder of DICOM files offline.

No network: the DWI exam under ``DIR`` is assembled, processed on the chosen
device and the measurement report is written to ``OUT/measurements.json``,
beside the DICOM result objects (Parametric Map, derived MR series, SEG, SR,
key images; one file per instance, see :mod:`dicom_node.writers.write_results`).
:func:`run_offline` turns the arguments into a call of
:func:`service.exam_run.run_exam` (the entry point the node uses too), with
the priors from files (:class:`service.priors.SummaryFilePriors`).

Comparison offline (issue 6): ``--prior EARLIER_OUT`` (repeatable) reads the
``exam_summary`` of an earlier run's ``measurements.json``. The priors earlier
than this exam (by study date and time from its headers) are compared with it;
the baseline is the earliest of them, or ``--baseline STUDY_UID``. The
baseline's 95th ADC centile sets the yellow class bound (``--yellow-lower``
overrides it), ``measurements.json`` gains ``comparison``, the SR the
comparison groups, and the key images the prior histograms and the trend chart.

A reader's correction offline (issue 11): ``--mask SEG`` measures the SEG's
segments (their union, :mod:`dicom_node.readers.seg_reader`) instead of segmenting,
and writes only the reader-corrected SEG, SR and key images
(:class:`dicom_node.writers.write_results.ReaderCorrection`); ``--replaces AUTO_OUT``
names the automatic run's output folder, whose SR the corrected one replaces
(Predecessor Documents) and whose result series the SEG may be drawn on.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from dicom_node.assembly.coverage import CoverageExpectation
from processing.backend import Device
from processing.comparison import Comparison
from processing.errors import BackendUnavailableError, ProcessingError
from processing.exam_summary import ExamSummary
from processing.quality import QualityAssessment
from processing.response import ResponseSettings
from processing.results import ProcessingResult
from processing.settings import ProcessingSettings
from service.errors import PriorLoadError

__all__ = [
    "OfflineOptions",
    "OfflineRun",
    "register",
    "run",
    "run_offline",
    "verdict_lines",
]


@dataclass(frozen=True, slots=True)
class OfflineRun:
    """What :func:`run_offline` produced."""

    result: ProcessingResult
    assembled: Any  # dicom_node.assembly.assemble.AssembledExam
    measurements_path: Path
    measurements: dict[str, Any]
    dicom_files: tuple[Path, ...] = ()
    summary: ExamSummary | None = None
    comparison: Comparison | None = None
    gpu_fallback: str = ""  # why the exam ran again on the CPU after failing on the GPU


def register(subparsers: Any) -> None:
    """Add the ``process`` subcommand."""
    parser = subparsers.add_parser(
        "process",
        help="process the DWI exam in a folder offline and write measurements.json",
        description=(
            "Read every DICOM file under DIR, assemble the whole-body DWI exam, compute ADC, "
            "computed high-b, the tumour segmentation and its statistics, and write "
            "OUT/measurements.json. Bad input: the reason on stderr, exit status 2."
        ),
    )
    parser.add_argument(
        "folder", type=Path, metavar="DIR", help="folder with the exam's DICOM files"
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="OUT",
        help="output folder (created when missing)",
    )
    parser.add_argument(
        "--device",
        choices=[d.value for d in Device],
        default=Device.AUTO.value,
        help="auto: GPU when CuPy and a CUDA device are present (default); gpu; cpu",
    )
    parser.add_argument(
        "--yellow-lower",
        type=float,
        default=None,
        metavar="UM2S",
        help=(
            "lower bound of the yellow ADC class, um2/s (default: the baseline's 95th centile "
            "with --prior, else the processing default)"
        ),
    )
    parser.add_argument(
        "--prior",
        type=Path,
        action="append",
        default=[],
        metavar="EARLIER_OUT",
        help=(
            "output folder (or measurements.json) of an earlier run of the same patient; "
            "repeatable. Exams earlier than this one are compared with it"
        ),
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="STUDY_UID",
        help="study UID of the baseline among the priors (or this exam's own); default: the first",
    )
    parser.add_argument(
        "--mask",
        type=Path,
        default=None,
        metavar="SEG",
        help=(
            "a reader's corrected DICOM SEG of this exam: its segments (their union) are the "
            "tumour load; writes the reader-corrected SEG, SR and key images"
        ),
    )
    parser.add_argument(
        "--replaces",
        type=Path,
        default=None,
        metavar="AUTO_OUT",
        help="with --mask: output folder of the automatic run whose SR the corrected one replaces",
    )
    parser.add_argument(
        "--expected-stations",
        type=_positive_int,
        default=None,
        metavar="N",
        help="stations of a complete exam; fewer makes the verdict unreliable (default: no check)",
    )
    parser.add_argument(
        "--expected-coverage-mm",
        type=_positive_float,
        default=None,
        metavar="MM",
        help="head-to-feet length of a complete exam; shorter makes the verdict unreliable",
    )
    parser.set_defaults(func=run)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a length > 0, got {text}")
    return value


@dataclass(frozen=True, slots=True)
class OfflineOptions:
    """How :func:`run_offline` processes the exam, beyond settings and device.

    Attributes
    ----------
    yellow_lower_um2s
        The yellow class bound (``--yellow-lower``), overriding the baseline's.
    priors
        Summaries of the same patient's exams (``--prior``; :func:`service.priors.load_prior`);
        those not earlier than this exam are ignored. The exam is compared
        with the earlier ones (:func:`processing.comparison.compare_exams`,
        with the detection limit of the settings).
    baseline_study_uid
        The baseline among the priors (``--baseline``), default the earliest;
        its 95th ADC centile sets the yellow class bound unless
        ``yellow_lower_um2s`` is given.
    response_settings
        Response rules (default: those of the settings' detection limit).
    mask
        A reader's SEG (``--mask``): its segments are measured instead of the
        segmentation, and only the reader-corrected SEG, SR and key images are
        written.
    replaces
        With ``mask``: the automatic run's output folder (``--replaces``),
        whose SR is the predecessor.
    coverage
        What a complete exam covers (stations, head-to-feet length); an exam
        that falls short gets findings in its verdict
        (:mod:`dicom_node.assembly.coverage`).
    """

    yellow_lower_um2s: float | None = None
    priors: Sequence[ExamSummary] = ()
    baseline_study_uid: str | None = None
    response_settings: ResponseSettings | None = None
    mask: Path | None = None
    replaces: Path | None = None
    coverage: CoverageExpectation | None = None


def run_offline(
    folder: Path,
    out: Path,
    settings: ProcessingSettings,
    device: Device | str = Device.AUTO,
    options: OfflineOptions = OfflineOptions(),
) -> OfflineRun:
    """Assemble and process the exam under ``folder``; write measurements and DICOM results.

    The exam runs through :func:`service.exam_run.run_exam`: under device
    ``auto`` a failure on the GPU reruns it on the CPU (``gpu_fallback`` says
    why). The result objects of :func:`dicom_node.writers.write_results.write_results`
    into ``out`` first, then ``out/measurements.json`` (its ``exam_summary``
    names the SR and SEG written). ``options``: priors, baseline, yellow
    class bound, coverage and a reader's mask (:class:`OfflineOptions`).

    Raises
    ------
    NotADirectoryError
        ``folder`` is not a directory.
    dicom_node.errors.AssemblyError
        The files do not make a usable DWI exam.
    processing.errors.ProcessingError
        The exam's signal cannot be processed.
    processing.errors.BackendUnavailableError
        ``device="gpu"`` without CuPy or a CUDA device.
    dicom_node.errors.WriterError
        A result object cannot be written.
    dicom_node.errors.StudyHeaderError
        The exam's study date cannot be read.
    PriorLoadError
        A prior belongs to another patient, or the baseline is not among the priors.
    dicom_node.errors.SegmentationReadError
        ``mask`` cannot be read, or was drawn on another exam or grid.
    """
    from dicom_node.assembly.dicom_files import find_dicom_files
    from service.corrections import read_correction
    from service.exam_run import ExamRequest, run_exam
    from service.priors import SummaryFilePriors

    mask = options.mask
    run = run_exam(
        ExamRequest(
            inputs=tuple(find_dicom_files(folder)),
            output_dir=out,
            settings=settings,
            device=device,
            coverage=options.coverage,
            yellow_lower_um2s=options.yellow_lower_um2s,
            response_settings=options.response_settings,
        ),
        SummaryFilePriors(tuple(options.priors), options.baseline_study_uid),
        None
        if mask is None
        else partial(read_correction, mask, corrected_output_dir=options.replaces),
    )
    return OfflineRun(
        result=run.result,
        assembled=run.assembled,
        measurements_path=run.measurements_path,
        measurements=run.measurements,
        dicom_files=run.files,
        summary=run.summary,
        comparison=run.comparison,
        gpu_fallback=run.gpu_fallback,
    )


def run(args: argparse.Namespace) -> int:
    """Process and write; 2 with the reason on stderr when the input is not usable."""
    from dicom_node.errors import (
        AssemblyError,
        SegmentationReadError,
        StudyHeaderError,
        WriterError,
    )
    from service.priors import load_prior

    if args.yellow_lower is not None and not 0 <= args.yellow_lower < float("inf"):
        print(
            f"wbdwi process: --yellow-lower must be a finite ADC >= 0, got {args.yellow_lower}",
            file=sys.stderr,
        )
        return 2
    try:
        priors = [load_prior(path) for path in args.prior]
        outcome = run_offline(
            args.folder,
            args.out,
            ProcessingSettings(),
            args.device,
            OfflineOptions(
                yellow_lower_um2s=args.yellow_lower,
                priors=priors,
                baseline_study_uid=args.baseline,
                mask=args.mask,
                replaces=args.replaces,
                coverage=CoverageExpectation(
                    stations=args.expected_stations,
                    min_extent_mm=args.expected_coverage_mm,
                    source="--expected-stations/--expected-coverage-mm",
                ),
            ),
        )
    except (
        NotADirectoryError,
        AssemblyError,
        ProcessingError,
        BackendUnavailableError,
        WriterError,
        StudyHeaderError,
        PriorLoadError,
        SegmentationReadError,
    ) as exc:
        print(f"wbdwi process: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if outcome.gpu_fallback:
        print(f"wbdwi process: warning: {outcome.gpu_fallback}", file=sys.stderr)
    summary = outcome.measurements
    print(
        f"wbdwi process: tDV {summary['tdv_ml']:.1f} ml, {len(summary['lesions'])} lesions, "
        f"device {summary['device']}, {summary['timings_s']['total']:.2f} s -> "
        f"{outcome.measurements_path} and {len(outcome.dicom_files)} DICOM files"
    )
    comparison = summary.get("comparison")
    if comparison is not None:
        regions = ", ".join(f"{k} {v}" for k, v in comparison["rac_by_region"].items())
        change = comparison["tdv_change_pct"]
        print(
            f"wbdwi process: against {comparison['prior_study_uid']} (baseline "
            f"{comparison['baseline_study_uid']}): tDV "
            f"{'n/a' if change is None else f'{change:+.0f} %'}, suggested RAC overall "
            f"{comparison['rac_overall']} ({regions or 'no region'}); "
            "a suggestion for the radiologist"
        )
    elif args.prior:
        print("wbdwi process: no prior is earlier than this exam; no comparison")
    for line in verdict_lines(outcome.result.quality):
        print(f"wbdwi process: {line}")
    return 0


def verdict_lines(quality: QualityAssessment) -> list[str]:
    """The verdict in plain words, then one line per reason (the last lines ``process`` prints)."""
    verdict = quality.verdict
    lines = [f"verdict {verdict.value}: {verdict.meaning}"]
    lines.extend(
        f"  {finding.severity.value}: {finding.message} [{finding.code}]"
        for finding in quality.findings
    )
    return lines
