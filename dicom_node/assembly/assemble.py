"""Exam assembly: from the stored instances of one study to the :class:`DwiExam`.

Steps (rules in ``docs/assembly.md``):

1. read every file once (:mod:`dicom_node.assembly.dwi_frames`): header, b-value from
   every known place (:mod:`dicom_node.assembly.bvalues`), geometry, pixels decoded once;
2. keep the diffusion-weighted images; ignore, with a reason, the scanner's
   ADC/FA/exponential/calculated-b maps and every non-diffusion series; skip
   files that are not DICOM images;
3. check that the DWI images belong to one study and one frame of reference and
   carry at least two b-values;
4. compose the stations onto one cranio-caudal grid (:mod:`dicom_node.assembly.stations`),
   applying rescale slope/intercept, and keep per output slice the source
   instances used.

Bad input raises a subclass of :class:`~dicom_node.errors.AssemblyError` whose
message names the series and the reason.

:func:`survey_coverage` is the light look at a study still arriving: the
headers only, grouped into stations (:func:`dicom_node.assembly.stations.survey_stations`),
to see whether a station or a b-value is missing
(:class:`~dicom_node.assembly.coverage.ExamCoverage`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from dicom_node.assembly.coverage import ExamCoverage
from dicom_node.assembly.dwi_frames import (
    DwiFrame,
    DwiInstance,
    NotDwiInstance,
    SeriesHeader,
    SkippedFile,
    read_instance,
)
from dicom_node.assembly.stations import compose_stations, survey_stations
from dicom_node.errors import MultipleStudiesError, NoDiffusionSeriesError, SingleBValueError
from processing.exam import DwiExam

__all__ = ["AssembledExam", "IgnoredSeries", "SkippedFile", "assemble_exam", "survey_coverage"]


@dataclass(frozen=True, slots=True)
class IgnoredSeries:
    """A series of the study that is not DWI input.

    Parameters
    ----------
    uid, description
        SeriesInstanceUID and SeriesDescription.
    reason
        Why it was left out (e.g. "scanner-derived ADC map ...").
    instances
        How many instances of the series were read.
    """

    uid: str
    description: str
    reason: str
    instances: int = 0


@dataclass(frozen=True, slots=True)
class AssembledExam:
    """The assembled exam and an account of everything that was not used.

    Attributes
    ----------
    exam
        What processing consumes.
    series_ignored
        Series of the study left out, with reasons.
    files_skipped
        Files that are not DICOM images (truth files, DICOMDIR ...).
    b_value_sources
        Where the b-values were read from (e.g. ``"Siemens (0019,xx0C)"``).
    resampled_stations
        1-based stations that were off the common grid and resampled along z.
    notes
        Other facts worth logging (instances ignored inside a used series).
    coverage
        The stations composed (extent along the body axis, b-values), for the
        coverage findings of the verdict.
    """

    exam: DwiExam
    series_ignored: tuple[IgnoredSeries, ...] = ()
    files_skipped: tuple[SkippedFile, ...] = ()
    b_value_sources: tuple[str, ...] = ()
    resampled_stations: tuple[int, ...] = ()
    notes: tuple[str, ...] = ()
    coverage: ExamCoverage | None = None

    def summary(self) -> dict[str, object]:
        """The JSON-ready summary printed by ``wbdwi inspect``."""
        exam = self.exam
        return {
            "b_values": list(exam.b_values),
            "shape": list(exam.shape),
            "spacing_mm": [round(v, 6) for v in exam.spacing_mm],
            "stations": exam.stations,
            "series_used": list(exam.series_used),
            "series_ignored": [
                {"uid": s.uid, "description": s.description, "reason": s.reason}
                for s in self.series_ignored
            ],
            "study_instance_uid": exam.study_instance_uid,
            "frame_of_reference_uid": exam.frame_of_reference_uid,
            "b_value_sources": list(self.b_value_sources),
            "resampled_stations": list(self.resampled_stations),
            "files_skipped": len(self.files_skipped),
        }


def _describe(series: SeriesHeader) -> str:
    return f"{series.uid} ({series.description})" if series.description else series.uid


def _check_single_study(frames: list[DwiFrame]) -> SeriesHeader:
    by_series = {f.series.uid: f.series for f in frames}
    headers = sorted(by_series.values(), key=lambda h: h.sort_key)
    first = headers[0]
    for header in headers[1:]:
        if header.study_uid != first.study_uid:
            raise MultipleStudiesError(
                f"StudyInstanceUID {header.study_uid} differs from {first.study_uid} of series "
                f"{_describe(first)}: assemble one study at a time",
                series_uid=header.uid,
                series_description=header.description,
            )
        if header.frame_of_reference_uid != first.frame_of_reference_uid:
            raise MultipleStudiesError(
                f"FrameOfReferenceUID {header.frame_of_reference_uid or '(absent)'} differs from "
                f"{first.frame_of_reference_uid or '(absent)'} of series {_describe(first)}: "
                "positions cannot be placed on one grid",
                series_uid=header.uid,
                series_description=header.description,
            )
    return first


def assemble_exam(
    paths: Iterable[Path | str],
    *,
    read: Callable[[str], DwiInstance | NotDwiInstance | SkippedFile] = read_instance,
) -> AssembledExam:
    """Assemble the whole-body DWI exam from the files of one study.

    Parameters
    ----------
    paths
        The stored files (any order). Non-DICOM files are skipped and reported.
    read
        How a file is read: :func:`read_instance`, or the node's read-ahead cache
        (:meth:`dicom_node.assembly.read_ahead.InstanceCache.read`), which gives
        what it returned for the file as it is now.

    Returns
    -------
    AssembledExam
        The :class:`~processing.exam.DwiExam` and the account of ignored series
        and skipped files.

    Raises
    ------
    AssemblyError
        One of its documented subclasses (see :mod:`dicom_node.errors`), with a
        message naming the series and the reason.
    """
    frames: list[DwiFrame] = []
    skipped: list[SkippedFile] = []
    not_dwi: dict[str, tuple[SeriesHeader, Counter[str]]] = {}
    for path in sorted(str(p) for p in paths):
        result = read(path)
        if isinstance(result, SkippedFile):
            skipped.append(result)
        elif isinstance(result, NotDwiInstance):
            entry = not_dwi.setdefault(result.series.uid, (result.series, Counter()))
            entry[1][result.reason] += 1
        elif isinstance(result, DwiInstance):
            frames.extend(result.frames)

    used_uids = {f.series.uid for f in frames}
    notes = []
    ignored = []
    for uid, (header, reasons) in not_dwi.items():
        reason, _ = reasons.most_common(1)[0]
        count = sum(reasons.values())
        if uid in used_uids:
            notes.append(f"{count} instance(s) of series {_describe(header)} ignored: {reason}")
        else:
            ignored.append(IgnoredSeries(uid, header.description, reason, count))

    if not frames:
        listing = "; ".join(f"{s.uid} ({s.description}): {s.reason}" for s in ignored)
        raise NoDiffusionSeriesError(
            "no diffusion-weighted series among the input"
            + (
                f" (ignored: {listing})"
                if listing
                else f" ({len(skipped)} file(s) skipped as not DICOM images)"
                if skipped
                else " (no DICOM images given)"
            )
        )
    first = _check_single_study(frames)
    b_keys = sorted({round(f.b_value) for f in frames})
    if len(b_keys) < 2:
        series_list = ", ".join(
            _describe(h) for h in sorted({f.series for f in frames}, key=lambda h: h.sort_key)
        )
        raise SingleBValueError(
            f"only one b-value ({b_keys[0]} s/mm2) in the diffusion series {series_list}: "
            "an ADC needs at least two",
            series_uid=first.uid,
            series_description=first.description,
        )

    composed = compose_stations(frames)
    for repeat in composed.superseded:
        ignored.append(IgnoredSeries(repeat.series.uid, repeat.series.description, repeat.reason))
    used = composed.series_used
    exam = DwiExam(
        signal=composed.signal,
        b_values=composed.b_values,
        affine=composed.affine,
        spacing_mm=composed.spacing_mm,
        study_instance_uid=first.study_uid,
        frame_of_reference_uid=first.frame_of_reference_uid,
        patient_id=first.patient_id,
        issuer_of_patient_id=first.issuer_of_patient_id,
        stations=composed.stations,
        series_used=tuple(h.uid for h in used),
        sources=composed.sources,
    )
    used_set = set(exam.series_used)
    sources = sorted({f.b_source.value for f in frames if f.series.uid in used_set})
    return AssembledExam(
        exam=exam,
        series_ignored=tuple(ignored),
        files_skipped=tuple(skipped),
        b_value_sources=tuple(sources),
        resampled_stations=composed.resampled_stations,
        notes=tuple(notes),
        coverage=composed.coverage,
    )


def survey_coverage(paths: Iterable[Path | str]) -> ExamCoverage:
    """The stations of the diffusion-weighted images among ``paths``, headers only.

    Files that are not DWI (other series, the scanner's ADC map, non-DICOM
    files) are passed over; nothing is checked beyond a common body axis.

    Raises
    ------
    AssemblyError
        A DWI header cannot be read or placed (no b-value, no geometry, mixed
        orientations).
    """
    frames: list[DwiFrame] = []
    for path in sorted(str(p) for p in paths):
        result = read_instance(path, pixels=False)
        if isinstance(result, DwiInstance):
            frames.extend(result.frames)
    return survey_stations(frames)
