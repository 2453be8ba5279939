"""What the node remembers of one processed exam: :class:`ExamSummary`.

An exam summary is the part of a :class:`~processing.results.ProcessingResult`
that later exams are compared with: the identity of the study (UID, date, time,
patient), the total diffusion volume, the ADC statistics (the baseline's 95th
centile sets the yellow class bound, TTL case study), the histogram, the class
volumes, the lesion table (volume, ADC, centroid in patient coordinates, body
region, mean computed high-b signal), the reliability verdict with its reasons
(:class:`~processing.quality.QualityAssessment`, so that a comparison can say
that a prior's numbers were doubtful) and the UIDs of the SR and SEG that carry
them in PACS.

It is plain data with a JSON round trip (:meth:`ExamSummary.to_dict` /
:meth:`ExamSummary.from_dict`): the history store keeps that JSON, the SR
parser in :mod:`dicom_node.scu.priors` rebuilds it from PACS, and
``measurements.json`` can be turned into it. Non-finite floats are written as
``null`` (JSON has no NaN) and read back as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from processing.errors import SummaryFormatError
from processing.exam import DwiExam
from processing.quality import QualityAssessment
from processing.results import (
    AdcStats,
    BodyRegion,
    ClassVolumes,
    ExamStats,
    Histogram,
    LesionStats,
)

__all__ = [
    "SUMMARY_SCHEMA_VERSION",
    "ExamSummary",
    "chronological_key",
    "exam_sort_key",
    "summarize_exam",
]

#: Version of the JSON layout written by :meth:`ExamSummary.to_dict`.
SUMMARY_SCHEMA_VERSION = 1

_ADC_FIELDS = (
    "mean",
    "median",
    "sd",
    "p5",
    "p10",
    "p25",
    "p75",
    "p90",
    "p95",
    "skewness",
    "kurtosis",
)


@dataclass(frozen=True, slots=True)
class ExamSummary:
    """The numbers of one processed exam that later exams are compared with.

    Parameters
    ----------
    study_instance_uid
        Study Instance UID of the exam.
    study_date, study_time
        DICOM DA (``YYYYMMDD``) and TM (``HHMMSS[.ffffff]``, may be empty) of the
        study; they order the exams of a patient.
    patient_id, issuer_of_patient_id
        Patient ID and its issuer (empty when the scanner sent none); together
        they identify the patient in the history store.
    tdv_ml
        Total diffusion volume, ml.
    adc
        ADC statistics of the segmented volume (um2/s), ``None`` when nothing
        was segmented.
    histogram
        Fixed-bin ADC histogram, ``None`` when not known (for example an SR that
        does not carry it).
    classes
        Volumes of the ADC colour classes, ``None`` when not known.
    lesions
        The lesion table; ``label`` identifies a lesion within this exam.
    sr_sop_instance_uid, seg_sop_instance_uid
        The node's SR and SEG for this exam (empty when not written yet).
    software_version
        Version of the node that produced the numbers (empty when unknown).
    voxel_volume_ml
        Volume of one voxel of the exam grid, ml (NaN when unknown, e.g. rebuilt
        from a report); sets the sampling-noise floor of lesion growth.
    quality
        The reliability verdict of the exam's result with its reasons; ``None``
        when not known (a summary written before verdicts existed, or rebuilt
        from a report that does not carry it).
    other_foci_count, other_foci_ml
        Components beyond the listed ``lesions`` (only the largest are listed;
        ``ExamStats.other_foci_count``): how many and their volume. A comparison
        cannot call a lesion new when the reference exam left foci unlisted.
    """

    study_instance_uid: str
    study_date: str
    study_time: str
    patient_id: str
    issuer_of_patient_id: str
    tdv_ml: float
    adc: AdcStats | None
    histogram: Histogram | None
    classes: ClassVolumes | None
    lesions: tuple[LesionStats, ...]
    sr_sop_instance_uid: str = ""
    seg_sop_instance_uid: str = ""
    software_version: str = ""
    voxel_volume_ml: float = math.nan
    quality: QualityAssessment | None = None
    other_foci_count: int = 0
    other_foci_ml: float = 0.0

    def __post_init__(self) -> None:
        if not self.study_instance_uid:
            raise SummaryFormatError("study_instance_uid: must not be empty")
        _check_da(self.study_date)
        _check_tm(self.study_time)
        if not self.patient_id:
            raise SummaryFormatError("patient_id: must not be empty")
        if not math.isfinite(self.tdv_ml) or self.tdv_ml < 0:
            raise SummaryFormatError(f"tdv_ml: must be a finite volume >= 0, got {self.tdv_ml}")
        labels = [lesion.label for lesion in self.lesions]
        if len(set(labels)) != len(labels):
            raise SummaryFormatError(f"lesions: labels must be unique, got {labels}")

    def lesion(self, label: int) -> LesionStats:
        """The lesion with ``label``; ``KeyError`` naming the label and study when absent."""
        for candidate in self.lesions:
            if candidate.label == label:
                return candidate
        raise KeyError(f"lesion {label} not in study {self.study_instance_uid}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (non-finite floats become ``None``)."""
        return {
            "schema": SUMMARY_SCHEMA_VERSION,
            "study_instance_uid": self.study_instance_uid,
            "study_date": self.study_date,
            "study_time": self.study_time,
            "patient_id": self.patient_id,
            "issuer_of_patient_id": self.issuer_of_patient_id,
            "tdv_ml": _num_out(self.tdv_ml),
            "adc": None
            if self.adc is None
            else {name: _num_out(getattr(self.adc, name)) for name in _ADC_FIELDS},
            "histogram": None
            if self.histogram is None
            else {
                "bin_edges_um2s": [_num_out(e) for e in self.histogram.bin_edges_um2s],
                "counts": list(self.histogram.counts),
                "voxel_volume_ml": _num_out(self.histogram.voxel_volume_ml),
            },
            "classes": None if self.classes is None else _classes_out(self.classes),
            "lesions": [_lesion_out(lesion) for lesion in self.lesions],
            "sr_sop_instance_uid": self.sr_sop_instance_uid,
            "seg_sop_instance_uid": self.seg_sop_instance_uid,
            "software_version": self.software_version,
            "voxel_volume_ml": _num_out(self.voxel_volume_ml),
            "quality": None if self.quality is None else _quality_out(self.quality),
            "other_foci_count": self.other_foci_count,
            "other_foci_ml": _num_out(self.other_foci_ml),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExamSummary:
        """Rebuild a summary written by :meth:`to_dict`.

        Raises
        ------
        SummaryFormatError
            When a field is missing or has the wrong type, naming the field.
        """
        schema = data.get("schema")
        if schema != SUMMARY_SCHEMA_VERSION:
            raise SummaryFormatError(f"schema: expected {SUMMARY_SCHEMA_VERSION}, got {schema!r}")
        adc_data = data.get("adc")
        histogram_data = data.get("histogram")
        classes_data = data.get("classes")
        lesions_data = _get(data, "lesions", list)
        return cls(
            study_instance_uid=_get(data, "study_instance_uid", str),
            study_date=_get(data, "study_date", str),
            study_time=_get(data, "study_time", str),
            patient_id=_get(data, "patient_id", str),
            issuer_of_patient_id=_get(data, "issuer_of_patient_id", str),
            tdv_ml=_num_in(data, "tdv_ml"),
            adc=None
            if adc_data is None
            else AdcStats(**{name: _num_in(adc_data, name, "adc.") for name in _ADC_FIELDS}),
            histogram=None if histogram_data is None else _histogram_in(histogram_data),
            classes=None if classes_data is None else _classes_in(classes_data),
            lesions=tuple(
                _lesion_in(item, f"lesions[{index}].") for index, item in enumerate(lesions_data)
            ),
            sr_sop_instance_uid=str(data.get("sr_sop_instance_uid", "")),
            seg_sop_instance_uid=str(data.get("seg_sop_instance_uid", "")),
            software_version=str(data.get("software_version", "")),
            voxel_volume_ml=_num_in(data, "voxel_volume_ml")
            if "voxel_volume_ml" in data
            else math.nan,
            quality=_quality_in(data.get("quality")),
            other_foci_count=_get(data, "other_foci_count", int)
            if "other_foci_count" in data
            else 0,
            other_foci_ml=_num_in(data, "other_foci_ml") if "other_foci_ml" in data else 0.0,
        )


def summarize_exam(
    exam: DwiExam,
    stats: ExamStats,
    *,
    study_date: str,
    study_time: str = "",
    sr_sop_instance_uid: str = "",
    seg_sop_instance_uid: str = "",
    software_version: str = "",
    quality: QualityAssessment | None = None,
) -> ExamSummary:
    """Summary of one processed exam (identity from ``exam``, numbers from ``stats``).

    ``study_date`` and ``study_time`` come from the DICOM header (the exam does
    not carry them); ``quality`` is the result's verdict (with every finding,
    also those the node added).
    """
    return ExamSummary(
        study_instance_uid=exam.study_instance_uid,
        study_date=study_date,
        study_time=study_time,
        patient_id=exam.patient_id,
        issuer_of_patient_id=exam.issuer_of_patient_id,
        tdv_ml=stats.tdv_ml,
        adc=stats.adc,
        histogram=stats.histogram,
        classes=stats.classes,
        lesions=stats.lesions,
        sr_sop_instance_uid=sr_sop_instance_uid,
        seg_sop_instance_uid=seg_sop_instance_uid,
        software_version=software_version,
        voxel_volume_ml=exam.voxel_volume_ml,
        quality=quality,
        other_foci_count=stats.other_foci_count,
        other_foci_ml=stats.other_foci_ml,
    )


def exam_sort_key(summary: ExamSummary) -> tuple[str, str, str]:
    """Chronological order of a patient's exams: date, then time, then UID (for ties)."""
    return chronological_key(summary.study_date, summary.study_time, summary.study_instance_uid)


def chronological_key(study_date: str, study_time: str, study_uid: str) -> tuple[str, str, str]:
    """The order key of :func:`exam_sort_key` from the raw DICOM values."""
    _check_da(study_date)
    _check_tm(study_time)
    return (study_date, _normalised_tm(study_time), study_uid)


def _normalised_tm(tm: str) -> str:
    """TM padded to ``HHMMSS.ffffff`` so that string order is time order."""
    if not tm:
        return ""
    whole, _, fraction = tm.partition(".")
    return f"{whole.ljust(6, '0')}.{fraction.ljust(6, '0')}"


def _check_da(value: str) -> None:
    if len(value) != 8 or not value.isdigit():
        raise SummaryFormatError(f"study_date: expected DICOM DA 'YYYYMMDD', got {value!r}")


def _check_tm(value: str) -> None:
    if not value:
        return
    whole, _, fraction = value.partition(".")
    if (
        len(whole) not in (2, 4, 6)
        or not whole.isdigit()
        or (fraction and (not fraction.isdigit() or len(fraction) > 6))
    ):
        raise SummaryFormatError(f"study_time: expected DICOM TM 'HHMMSS[.ffffff]', got {value!r}")


def _num_out(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _get(data: Mapping[str, Any], key: str, kind: type, prefix: str = "") -> Any:
    if not isinstance(data, Mapping):
        raise SummaryFormatError(f"{prefix.rstrip('.') or 'summary'}: expected an object")
    if key not in data:
        raise SummaryFormatError(f"{prefix}{key}: missing")
    value = data[key]
    if not isinstance(value, kind):
        raise SummaryFormatError(
            f"{prefix}{key}: expected {kind.__name__}, got {type(value).__name__}"
        )
    return value


def _num_in(data: Mapping[str, Any], key: str, prefix: str = "") -> float:
    if not isinstance(data, Mapping):
        raise SummaryFormatError(f"{prefix.rstrip('.')}: expected an object")
    if key not in data:
        raise SummaryFormatError(f"{prefix}{key}: missing")
    value = data[key]
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SummaryFormatError(f"{prefix}{key}: expected a number, got {type(value).__name__}")
    return float(value)


def _histogram_in(data: Mapping[str, Any]) -> Histogram:
    edges = _get(data, "bin_edges_um2s", list, "histogram.")
    counts = _get(data, "counts", list, "histogram.")
    if len(edges) != len(counts) + 1:
        raise SummaryFormatError(
            f"histogram: {len(edges)} bin edges for {len(counts)} counts (need counts + 1)"
        )
    if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
        raise SummaryFormatError("histogram.counts: expected integers >= 0")
    if not all(isinstance(e, int | float) and not isinstance(e, bool) for e in edges):
        raise SummaryFormatError("histogram.bin_edges_um2s: expected numbers")
    return Histogram(
        bin_edges_um2s=tuple(float(e) for e in edges),
        counts=tuple(int(c) for c in counts),
        voxel_volume_ml=_num_in(data, "voxel_volume_ml", "histogram."),
    )


def _classes_out(classes: ClassVolumes) -> dict[str, Any]:
    return {
        "red_ml": _num_out(classes.red_ml),
        "yellow_ml": _num_out(classes.yellow_ml),
        "green_ml": _num_out(classes.green_ml),
        "yellow_lower_um2s": _num_out(classes.yellow_lower_um2s),
        "green_lower_um2s": _num_out(classes.green_lower_um2s),
        "yellow_lower_source": classes.yellow_lower_source,
    }


def _classes_in(data: Mapping[str, Any]) -> ClassVolumes:
    prefix = "classes."
    return ClassVolumes(
        red_ml=_num_in(data, "red_ml", prefix),
        yellow_ml=_num_in(data, "yellow_ml", prefix),
        green_ml=_num_in(data, "green_ml", prefix),
        yellow_lower_um2s=_num_in(data, "yellow_lower_um2s", prefix),
        green_lower_um2s=_num_in(data, "green_lower_um2s", prefix),
        yellow_lower_source=_get(data, "yellow_lower_source", str, prefix),
    )


def _quality_out(quality: QualityAssessment) -> dict[str, Any]:
    data = quality.as_dict()
    data["measures"] = {
        name: _num_out(value) if isinstance(value, float) else value
        for name, value in data["measures"].items()
    }
    for reason in data["reasons"]:
        for key in ("value", "limit"):
            if isinstance(reason[key], float):
                reason[key] = _num_out(reason[key])
    return data


def _quality_in(data: object) -> QualityAssessment | None:
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise SummaryFormatError("quality: expected an object or null")
    try:
        return QualityAssessment.from_dict(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise SummaryFormatError(f"quality: {exc}") from None


def _lesion_out(lesion: LesionStats) -> dict[str, Any]:
    return {
        "label": lesion.label,
        "volume_ml": _num_out(lesion.volume_ml),
        "adc_mean": _num_out(lesion.adc_mean),
        "adc_median": _num_out(lesion.adc_median),
        "centroid_mm": [_num_out(c) for c in lesion.centroid_mm],
        "region": lesion.region.value,
        "mean_high_b": _num_out(lesion.mean_high_b),
    }


def _lesion_in(data: Mapping[str, Any], prefix: str) -> LesionStats:
    label = _get(data, "label", int, prefix)
    centroid = _get(data, "centroid_mm", list, prefix)
    if len(centroid) != 3 or not all(
        isinstance(c, int | float) and not isinstance(c, bool) for c in centroid
    ):
        raise SummaryFormatError(f"{prefix}centroid_mm: expected 3 numbers, got {centroid!r}")
    region_value = _get(data, "region", str, prefix)
    try:
        region = BodyRegion(region_value)
    except ValueError:
        known = ", ".join(r.value for r in BodyRegion)
        raise SummaryFormatError(
            f"{prefix}region: unknown body region {region_value!r} (known: {known})"
        ) from None
    return LesionStats(
        label=label,
        volume_ml=_num_in(data, "volume_ml", prefix),
        adc_mean=_num_in(data, "adc_mean", prefix),
        adc_median=_num_in(data, "adc_median", prefix),
        centroid_mm=(float(centroid[0]), float(centroid[1]), float(centroid[2])),
        region=region,
        mean_high_b=_num_in(data, "mean_high_b", prefix),
    )
