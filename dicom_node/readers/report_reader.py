"""Read this node's TID 1500 Measurement Report back into an :class:`ExamSummary`.

A new or rebuilt node learns a patient's history from PACS
(:mod:`dicom_node.scu.priors`): it fetches the reports it wrote earlier and turns
each into the summary the comparison needs. The report's structure is the one
:mod:`dicom_node.writers.sr` writes (PS3.16 TID 1500):

- the group whose tracking identifier is ``Total tumour load`` (TID 1411, or a
  TID 1501 group with Volume 0 when nothing was segmented) holds the tDV
  (SCT 118565006 Volume, ml) and the ADC statistics: DCM 113041 ADC NUM items
  told apart by their derivation (CID 7464 mean, median, SD, percentiles;
  DCM 126051/126052 skewness and kurtosis; ``99WBDWI`` P25/P75);
- each ``Lesion N (...)`` group holds the lesion's Volume, ADC mean and
  median, its bone region as finding site, and the centroid and mean high-b
  items of :mod:`dicom_node.readers.report_codes`.

The voxel volume of the exam grid (``VOXELVOL`` in the "Total tumour load"
group) is read when present (NaN otherwise). The comparison groups and the
per-lesion categories of :mod:`dicom_node.writers.sr_comparison` are not read:
they describe this exam against its priors, and a later exam is compared anew.

Patient, study date and time come from the SR header (copied from the input
by the writer), the SEG UID from the referenced segment of the total (older
reports) or the first SEG among its source images (the class SEG), the software version
from the algorithm identification (TID 4019). The histogram and the
class volumes are not rebuilt (the report does not carry the histogram), so
those fields are ``None``; the comparison does not need them.

Reading is lenient where the standard allows variants (ADC in mm2/s, um2/s or
10-6.mm2/s) and strict where a number would otherwise be wrong: a missing
statistic, a duplicated item or an unknown unit is an error naming the group
and the item. A lesion group without the centroid or high-b items (a report
written before they were added) reads with NaN there: the summary is still
good for the whole-body changes, and lesion matching refuses it with a clear
message.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import (
    Comprehensive3DSRStorage,
    ComprehensiveSRStorage,
    EnhancedSRStorage,
    SegmentationStorage,
)

from dicom_node.errors import ReportReadError
from dicom_node.readers.report_codes import CENTROID_CODES, MEAN_HIGH_B, VOXEL_VOLUME
from dicom_node.writers.common import MANUFACTURER
from dicom_node.writers.seg import region_code
from dicom_node.writers.sr import adc_statistic_codes
from processing.errors import SummaryFormatError
from processing.exam_summary import ExamSummary
from processing.results import AdcStats, BodyRegion, LesionStats

__all__ = [
    "REPORT_SOP_CLASSES",
    "is_node_report",
    "read_measurement_report",
]

#: SR storage classes a TID 1500 report of this node can have.
REPORT_SOP_CLASSES = (Comprehensive3DSRStorage, EnhancedSRStorage, ComprehensiveSRStorage)

_TOTAL = "Total tumour load"
_LESION = re.compile(r"^Lesion (\d+)\b")
# Factor to 10^-6 mm2/s for each accepted ADC unit code (UCUM, CID 7277).
_ADC_UNITS = {"10-6.mm2/s": 1.0, "um2/s": 1.0, "mm2/s": 1e6, "um2/ms": 1000.0}
_VOLUME_UNITS = {"ml": 1.0, "mL": 1.0, "cm3": 1.0, "mm3": 1e-3, "l": 1000.0, "L": 1000.0}


def is_node_report(dataset: Dataset, manufacturer: str = MANUFACTURER) -> bool:
    """Whether ``dataset`` is an SR written by this node (SOP class and Manufacturer)."""
    return (
        str(dataset.get("SOPClassUID", "")) in REPORT_SOP_CLASSES
        and str(dataset.get("Manufacturer", "")) == manufacturer
    )


def read_measurement_report(dataset: Dataset) -> ExamSummary:
    """Rebuild the :class:`ExamSummary` of the exam that ``dataset`` reports on.

    Raises
    ------
    ReportReadError
        When the dataset is not a TID 1500 report of this node's layout, or an
        item the comparison needs is missing or malformed.
    """
    sop_instance_uid = str(dataset.get("SOPInstanceUID", ""))
    where = f"SR {sop_instance_uid or '(no SOP Instance UID)'}"
    report = _measurement_report(dataset, where)
    groups: list[Any] = [
        *report.get_volumetric_roi_measurement_groups(),
        *report.get_image_measurement_groups(),
    ]
    totals = [g for g in groups if str(g.tracking_identifier) == _TOTAL]
    if len(totals) != 1:
        raise ReportReadError(
            f"{where}: expected one '{_TOTAL}' measurement group, found {len(totals)}"
        )
    total = totals[0]
    total_items = list(total.get_measurements())
    tdv_ml = _volume(total_items, f"{where} '{_TOTAL}'")
    adc = _adc_statistics(total_items, f"{where} '{_TOTAL}'")
    voxel_volume_ml = _voxel_volume(total_items, f"{where} '{_TOTAL}'")

    lesions: list[LesionStats] = []
    for group in groups:
        match = _LESION.match(str(group.tracking_identifier))
        if match is not None:
            lesions.append(_lesion(group, int(match.group(1)), where))

    seg_uid = ""
    referenced = getattr(total, "referenced_segment", None)
    if referenced is not None:
        seg_uid = str(referenced.referenced_sop_instance_uid)
    else:  # since issue 11: a TID 1501 total naming the class SEG first among its sources
        seg_uid = _first_segmentation_source(total)
    try:
        return ExamSummary(
            study_instance_uid=str(dataset.get("StudyInstanceUID", "")),
            study_date=str(dataset.get("StudyDate", "")),
            study_time=str(dataset.get("StudyTime", "")),
            patient_id=str(dataset.get("PatientID", "")),
            issuer_of_patient_id=str(dataset.get("IssuerOfPatientID", "")),
            tdv_ml=tdv_ml,
            adc=adc,
            histogram=None,
            classes=None,
            lesions=tuple(sorted(lesions, key=lambda lesion: lesion.label)),
            sr_sop_instance_uid=sop_instance_uid,
            seg_sop_instance_uid=seg_uid,
            software_version=_software_version(dataset),
            voxel_volume_ml=voxel_volume_ml,
        )
    except SummaryFormatError as exc:
        raise ReportReadError(f"{where}: header cannot identify the exam: {exc}") from exc


def _first_segmentation_source(group: Any) -> str:
    """SOP Instance UID of the first SEG among a group's IMAGE items (``""`` if none)."""
    for item in group[0].get("ContentSequence", []):
        if item.get("ValueType") != "IMAGE":
            continue
        for reference in item.get("ReferencedSOPSequence", []):
            if reference.get("ReferencedSOPClassUID") == SegmentationStorage:
                return str(reference.ReferencedSOPInstanceUID)
    return ""


def _measurement_report(dataset: Dataset, where: str) -> hd.sr.MeasurementReport:
    sop_class = str(dataset.get("SOPClassUID", ""))
    readers: dict[str, Any] = {
        Comprehensive3DSRStorage: hd.sr.Comprehensive3DSR,
        EnhancedSRStorage: hd.sr.EnhancedSR,
        ComprehensiveSRStorage: hd.sr.ComprehensiveSR,
    }
    reader = readers.get(sop_class)
    if reader is None:
        raise ReportReadError(
            f"{where}: SOP class {sop_class or '(none)'} is not an SR class this node writes"
        )
    try:
        sr = reader.from_dataset(dataset, copy=True)
    except (ValueError, AttributeError, TypeError, KeyError) as exc:
        raise ReportReadError(f"{where}: not a readable structured report: {exc}") from exc
    content = sr.content
    if not isinstance(content, hd.sr.MeasurementReport):
        raise ReportReadError(
            f"{where}: content is not a TID 1500 Measurement Report (got {type(content).__name__})"
        )
    return content


def _find(
    items: Sequence[hd.sr.Measurement], name: Any, derivation: Any | None = None
) -> list[hd.sr.Measurement]:
    found = []
    for item in items:
        if item.name != name:
            continue
        item_derivation = item.derivation
        if derivation is None:
            if item_derivation is None:
                found.append(item)
        elif item_derivation is not None and item_derivation == derivation:
            found.append(item)
    return found


def _one(items: list[hd.sr.Measurement], what: str, where: str) -> hd.sr.Measurement:
    if len(items) != 1:
        raise ReportReadError(f"{where}: expected one {what} item, found {len(items)}")
    return items[0]


def _value(item: hd.sr.Measurement, what: str, where: str) -> float:
    value = float(item.value)
    if not math.isfinite(value):
        raise ReportReadError(f"{where}: {what} is not a finite number ({item.value!r})")
    return value


def _volume(items: Sequence[hd.sr.Measurement], where: str) -> float:
    item = _one(_find(items, codes.SCT.Volume), "Volume", where)
    unit = str(item.unit.value)
    if unit not in _VOLUME_UNITS:
        raise ReportReadError(f"{where}: Volume unit {unit!r} is not a volume unit")
    return _value(item, "Volume", where) * _VOLUME_UNITS[unit]


def _voxel_volume(items: Sequence[hd.sr.Measurement], where: str) -> float:
    """The exam grid's voxel volume (ml); NaN for a report written before it was added."""
    found = _find(items, VOXEL_VOLUME)
    if not found:
        return math.nan
    item = _one(found, VOXEL_VOLUME.meaning, where)
    unit = str(item.unit.value)
    if unit not in _VOLUME_UNITS:
        raise ReportReadError(f"{where}: {VOXEL_VOLUME.meaning} unit {unit!r} is not a volume unit")
    return _value(item, VOXEL_VOLUME.meaning, where) * _VOLUME_UNITS[unit]


def _adc_value(item: hd.sr.Measurement, what: str, where: str, *, dimensionless: bool) -> float:
    unit = str(item.unit.value)
    value = _value(item, what, where)
    if dimensionless:
        if unit != "1":
            raise ReportReadError(f"{where}: {what} should have unit '1', got {unit!r}")
        return value
    if unit not in _ADC_UNITS:
        known = ", ".join(_ADC_UNITS)
        raise ReportReadError(f"{where}: {what} unit {unit!r} is not an ADC unit ({known})")
    return value * _ADC_UNITS[unit]


def _adc_statistics(items: Sequence[hd.sr.Measurement], where: str) -> AdcStats | None:
    adc_code = codes.DCM.ApparentDiffusionCoefficient
    if not any(item.name == adc_code for item in items):
        return None
    values: dict[str, float] = {}
    for field, derivation in adc_statistic_codes().items():
        what = f"ADC {derivation.meaning}"
        item = _one(_find(items, adc_code, derivation), what, where)
        values[field] = _adc_value(
            item, what, where, dimensionless=field in ("skewness", "kurtosis")
        )
    return AdcStats(**values)


def _lesion(group: Any, label: int, report_where: str) -> LesionStats:
    where = f"{report_where} '{group.tracking_identifier}'"
    items = list(group.get_measurements())
    adc_code = codes.DCM.ApparentDiffusionCoefficient
    adc_mean = _adc_value(
        _one(_find(items, adc_code, codes.SCT.Mean), "ADC mean", where),
        "ADC mean",
        where,
        dimensionless=False,
    )
    adc_median = _adc_value(
        _one(_find(items, adc_code, codes.SCT.Median), "ADC median", where),
        "ADC median",
        where,
        dimensionless=False,
    )
    centroid_items = [_find(items, code) for code in CENTROID_CODES]
    if not any(centroid_items):
        centroid = [math.nan, math.nan, math.nan]  # older layout: the comparison will say so
    else:
        centroid = []
        for code, found in zip(CENTROID_CODES, centroid_items, strict=True):
            item = _one(found, code.meaning, where)
            if str(item.unit.value) != "mm":
                raise ReportReadError(
                    f"{where}: {code.meaning} should be in mm, got {item.unit.value!r}"
                )
            centroid.append(_value(item, code.meaning, where))
    high_b_items = _find(items, MEAN_HIGH_B)
    high_b = (
        _value(_one(high_b_items, MEAN_HIGH_B.meaning, where), "high-b", where)
        if high_b_items
        else math.nan
    )
    return LesionStats(
        label=label,
        volume_ml=_volume(items, where),
        adc_mean=adc_mean,
        adc_median=adc_median,
        centroid_mm=(centroid[0], centroid[1], centroid[2]),
        region=_region(group),
        mean_high_b=high_b,
    )


def _region(group: Any) -> BodyRegion:
    sites = [site.value for site in group.finding_sites]
    for region in BodyRegion:
        code = region_code(region)
        if code is not None and any(site == code for site in sites):
            return region
    return BodyRegion.OTHER


def _software_version(dataset: Dataset) -> str:
    """The Algorithm Version (DCM 111003, TID 4019) of the report's first measurement group."""
    stack = list(dataset.get("ContentSequence", []))
    while stack:
        item = stack.pop(0)
        names = item.get("ConceptNameCodeSequence", [])
        if (
            item.get("ValueType") == "TEXT"
            and names
            and names[0].CodeValue == "111003"
            and names[0].CodingSchemeDesignator == "DCM"
        ):
            return str(item.TextValue)
        stack[:0] = list(item.get("ContentSequence", []))
    return ""
