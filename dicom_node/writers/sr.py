"""The numbers as a TID 1500 Measurement Report (Comprehensive 3D SR, PS3.16 TID 1500).

Content, all under one observation context whose observer is this node (a
device: TID 1004), procedure SCT 426252008 "Magnetic resonance imaging of whole
body", title DCM 126000 "Imaging Measurement Report":

- "Total tumour load" (TID 1411, referencing SEG segment 1): Volume (tDV, ml)
  and the ADC statistics of the segmented volume in 10^-6 mm2/s: mean, median,
  SD, 5/10/25/75/90/95th centiles, skewness and (excess) kurtosis, unit ``1``;
- one group per ADC class (red, yellow, green; referencing SEG segments 2-4)
  with its Volume, the class bounds in the algorithm parameters;
- one group per lesion (referencing its own SEG segment) with Volume, ADC mean
  and median, the bone region as finding site, and the items a later
  comparison needs (:mod:`dicom_node.report_codes`): centroid in patient
  coordinates (``CENTROIDX/Y/Z``, mm) and mean computed high-b signal
  (``HIGHBMEAN``);
- the voxel volume of the exam grid (``VOXELVOL``, ml) in "Total tumour load";
- with a comparison (:mod:`dicom_node.writers.sr_comparison`): per lesion its
  suggested category, rule and changes; groups with the previous exam's and the
  baseline's study UID, date and whole-body changes; the suggested categories
  overall and per region, each labelled a suggestion for the radiologist.

Every group names the finding (SCT 14799000 "Neoplasm, secondary", category
SCT 49755003) and the algorithm (name, version, parameters); every ADC value
references the ADC Parametric Map it was read from (source of measurement). The
tracking UIDs and IDs are those of the SEG segments.

Notes about the report itself (why the exam was not compared with earlier
ones, or only with the node's own history because the PACS could not be
asked) go into a last group, "Notes on this report", as TEXT items DCM 121106
"Comment", so that the radiologist reading the report sees them. The notes
are part of the seed of the report's SOP Instance UID: the same exam with
other notes is another instance.

When nothing was segmented there is no SEG: the report holds one TID 1501
group "Total tumour load" with Finding DCM 111286 "No abnormality", Volume
0 ml and the qualitative evaluation SCT 14799000 "Neoplasm, secondary" =
SCT 272519000 "Absent".

The 25th and 75th centiles have no standard code (CID 7464/7465 stop at the
5/10/90/95th); they, and the items above, use the private coding scheme
``99WBDWI``, declared in the Coding Scheme Identification Sequence (PS3.3
C.12.1.1.3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from dicom_node.report_codes import (
    ARBITRARY_UNIT,
    CENTROID_CODES,
    MEAN_HIGH_B,
    MILLIMETRE,
    VOXEL_VOLUME,
)
from dicom_node.writers.common import WriterContext
from dicom_node.writers.errors import WriterError
from dicom_node.writers.seg import (
    SEGMENT_CATEGORY,
    SEGMENT_TYPE,
    SegmentationOutput,
    SegmentInfo,
    region_code,
)
from dicom_node.writers.sr_comparison import comparison_groups, lesion_comparison_items
from processing.comparison import Comparison, LesionAssessment
from processing.results import AdcClass, AdcStats, LesionStats, ProcessingResult

__all__ = [
    "ADC_UNIT",
    "COMMENT",
    "LOCAL_CODING_SCHEME",
    "NOTES_GROUP",
    "PERCENTILE_25",
    "PERCENTILE_75",
    "VOLUME_UNIT",
    "adc_statistic_codes",
    "build_measurement_report",
]

LOCAL_CODING_SCHEME = "99WBDWI"
NOTES_GROUP = "Notes on this report"
COMMENT = Code("121106", "DCM", "Comment")
PERCENTILE_25 = Code("P25", LOCAL_CODING_SCHEME, "25th percentile")
PERCENTILE_75 = Code("P75", LOCAL_CODING_SCHEME, "75th percentile")
ADC_UNIT = codes.UCUM._10EMinus6SquareMillimetersPerSecond
VOLUME_UNIT = Code("ml", "UCUM", "milliliter")
_NO_UNITS = codes.UCUM.NoUnits
_PROCEDURE = codes.SCT.MagneticResonanceImagingOfWholeBody


def adc_statistic_codes() -> dict[str, Code]:
    """Derivation code of each :class:`AdcStats` field (CID 7464/7465 or ``99WBDWI``)."""
    return {
        "mean": codes.SCT.Mean,
        "median": codes.SCT.Median,
        "sd": codes.SCT.StandardDeviation,
        "p5": codes.SCT.FifthPercentile,
        "p10": codes.SCT.TenthPercentile,
        "p25": PERCENTILE_25,
        "p75": PERCENTILE_75,
        "p90": codes.SCT.NinetiethPercentile,
        "p95": codes.SCT.NinetyFifthPercentile,
        "skewness": codes.DCM.Skewness,
        "kurtosis": codes.DCM.Kurtosis,
    }


def _volume(ml: float) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=codes.SCT.Volume, value=float(ml), unit=VOLUME_UNIT)


def _adc(
    value: float, derivation: Code, adc_map: hd.sr.SourceImageForMeasurement
) -> hd.sr.Measurement:
    dimensionless = derivation in (codes.DCM.Skewness, codes.DCM.Kurtosis)
    return hd.sr.Measurement(
        name=codes.DCM.ApparentDiffusionCoefficient,
        value=float(value),
        unit=_NO_UNITS if dimensionless else ADC_UNIT,
        derivation=derivation,
        method=codes.DCM.MonoExponentialDiffusionModel,
        referenced_images=[adc_map],
    )


def _adc_statistics(
    stats: AdcStats, adc_map: hd.sr.SourceImageForMeasurement
) -> list[hd.sr.Measurement]:
    return [
        _adc(getattr(stats, field), code, adc_map) for field, code in adc_statistic_codes().items()
    ]


def _voxel_volume(ml: float) -> list[hd.sr.Measurement]:
    if not (math.isfinite(ml) and ml > 0):
        return []
    return [hd.sr.Measurement(name=VOXEL_VOLUME, value=float(ml), unit=VOLUME_UNIT)]


def _position_items(lesion: LesionStats) -> list[hd.sr.Measurement]:
    """Centroid (mm, LPS) and mean high-b of a lesion: what lesion matching needs later."""
    items = [
        hd.sr.Measurement(name=code, value=float(value), unit=MILLIMETRE)
        for code, value in zip(CENTROID_CODES, lesion.centroid_mm, strict=True)
    ]
    if math.isfinite(lesion.mean_high_b):
        items.append(
            hd.sr.Measurement(
                name=MEAN_HIGH_B, value=float(lesion.mean_high_b), unit=ARBITRARY_UNIT
            )
        )
    return items


def _tracking(info: SegmentInfo) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(uid=info.tracking_uid, identifier=info.label)


def _observation_context(ctx: WriterContext, person_observer: str = "") -> hd.sr.ObservationContext:
    """The node as device observer; with ``person_observer``, that person too (TID 1003)."""
    identity = ctx.identity
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=ctx.uids.uid("device", identity.device_serial_number),
        name=identity.algorithm_name,
        manufacturer_name=identity.manufacturer,
        model_name=identity.model_name,
        serial_number=identity.device_serial_number,
    )
    person = None
    if person_observer:
        person = hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name=person_observer
            ),
        )
    return hd.sr.ObservationContext(
        observer_person_context=person,
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=device,
        ),
    )


def _algorithm(ctx: WriterContext, parameters: Sequence[str]) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=ctx.identity.algorithm_name,
        version=ctx.identity.software_version,
        parameters=list(parameters) or None,
        manufacturer=ctx.identity.manufacturer,
    )


def _groups_with_disease(
    ctx: WriterContext,
    result: ProcessingResult,
    segmentation: SegmentationOutput,
    adc_map: hd.sr.SourceImageForMeasurement,
    digest_parameters: list[str],
    *,
    comparison: Comparison | None,
) -> list[hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations]:
    stats = result.stats
    seg = segmentation.dataset
    bone = [hd.sr.FindingSite(anatomic_location=codes.SCT.Bone)]

    def group(
        info: SegmentInfo,
        measurements: list[hd.sr.Measurement],
        sites: list[hd.sr.FindingSite] | None,
        parameters: list[str],
        *,
        evaluations: list[hd.sr.QualitativeEvaluation] | None = None,
        extra: list[hd.sr.ContentItem] | None = None,
    ) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
        built = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=_tracking(info),
            referenced_segment=hd.sr.ReferencedSegment.from_segmentation(seg, info.number),
            finding_type=SEGMENT_TYPE,
            finding_category=SEGMENT_CATEGORY,
            algorithm_id=_algorithm(ctx, parameters),
            finding_sites=sites,
            measurements=measurements,
            qualitative_evaluations=evaluations or None,
        )
        if extra:
            built[0].ContentSequence.extend(extra)
        return built

    assessments: dict[int, LesionAssessment] = {}
    if comparison is not None:
        assessments = {a.label: a for a in comparison.lesions if a.label is not None}
    total_measurements = [_volume(stats.tdv_ml), *_voxel_volume(ctx.exam.voxel_volume_ml)]
    if stats.adc is not None:
        total_measurements += _adc_statistics(stats.adc, adc_map)
    groups = [group(segmentation.total, total_measurements, bone, digest_parameters)]

    bounds = stats.classes
    class_parameters = [
        f"yellow lower bound {bounds.yellow_lower_um2s:g} 10-6.mm2/s "
        f"({bounds.yellow_lower_source})",
        f"green lower bound {bounds.green_lower_um2s:g} 10-6.mm2/s",
    ]
    class_volumes = {
        AdcClass.RED: bounds.red_ml,
        AdcClass.YELLOW: bounds.yellow_ml,
        AdcClass.GREEN: bounds.green_ml,
    }
    for adc_class, info in segmentation.classes.items():
        if info.voxels == 0:
            continue  # an empty segment has no frame to reference; see _empty_class_groups
        groups.append(group(info, [_volume(class_volumes[adc_class])], bone, class_parameters))

    for lesion in stats.lesions:
        info = segmentation.lesions[lesion.label]
        code = region_code(lesion.region)
        sites = [hd.sr.FindingSite(anatomic_location=code)] if code is not None else None
        measurements = [
            _volume(lesion.volume_ml),
            _adc(lesion.adc_mean, codes.SCT.Mean, adc_map),
            _adc(lesion.adc_median, codes.SCT.Median, adc_map),
            *_position_items(lesion),
        ]
        evaluations: list[hd.sr.QualitativeEvaluation] = []
        extra: list[hd.sr.ContentItem] = []
        assessment = assessments.get(lesion.label)
        if assessment is not None and comparison is not None:
            changes, evaluations, extra = lesion_comparison_items(
                assessment, comparison.settings.lesion_adc_statistic
            )
            measurements += changes
        groups.append(
            group(
                info, measurements, sites, digest_parameters, evaluations=evaluations, extra=extra
            )
        )
    return groups


def _empty_class_groups(
    ctx: WriterContext,
    segmentation: SegmentationOutput,
) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """ADC classes without voxels: a TID 1501 group stating Volume 0 ml."""
    groups = []
    for info in segmentation.classes.values():
        if info.voxels:
            continue
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(info),
                finding_type=SEGMENT_TYPE,
                finding_category=SEGMENT_CATEGORY,
                algorithm_id=_algorithm(ctx, []),
                finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Bone)],
                measurements=[_volume(0.0)],
            )
        )
    return groups


def build_measurement_report(
    ctx: WriterContext,
    result: ProcessingResult,
    *,
    segmentation: SegmentationOutput | None,
    parametric_map: Dataset,
    evidence: Sequence[Dataset],
    comparison: Comparison | None = None,
    notes: Sequence[str] = (),
    predecessors: Sequence[Dataset] = (),
    person_observer: str = "",
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 Measurement Report.

    Parameters
    ----------
    ctx
        The shared writer context.
    result
        Processing result whose ``stats`` are reported.
    segmentation
        The SEG and its segment map, or ``None`` when the tumour mask is empty.
    parametric_map
        The ADC Parametric Map (referenced as the real world value map).
    evidence
        Every other instance the report relies on (derived series, source
        images); recorded in the Current Requested Procedure Evidence Sequence.
    comparison
        The comparison of this exam with earlier ones, when it has any (see
        :mod:`dicom_node.writers.sr_comparison`).
    notes
        Sentences for the reader of the report (e.g. why there is no
        comparison), each a "Comment" in the group "Notes on this report".
    predecessors
        Earlier reports this one replaces (e.g. the automatic report of an
        exam whose SEG a reader corrected): Predecessor Documents Sequence
        (PS3.3 C.17.2.3).
    person_observer
        Name of a person observer (DICOM PN, e.g. a SEG's Content Creator's
        Name), added beside the node's device observer (TID 1002).

    Raises
    ------
    WriterError
        When a SEG is missing although disease was segmented (or present
        although nothing was), or highdicom rejects the content.
    """
    has_disease = result.stats.tdv_ml > 0 or bool(result.stats.lesions)
    if has_disease and segmentation is None:
        raise WriterError("the SR for an exam with segmented disease needs its SEG")
    if not has_disease and segmentation is not None:
        raise WriterError("a SEG was given for an exam without segmented disease (tDV 0 ml)")
    if comparison is not None and comparison.current_study_uid != ctx.exam.study_instance_uid:
        raise WriterError(
            f"the comparison is of study {comparison.current_study_uid}, not of the exam's study "
            f"{ctx.exam.study_instance_uid}"
        )
    adc_map = hd.sr.SourceImageForMeasurement(
        referenced_sop_class_uid=parametric_map.SOPClassUID,
        referenced_sop_instance_uid=parametric_map.SOPInstanceUID,
    )
    digest_parameters = (
        [f"settings digest {result.settings_digest}"] if result.settings_digest else []
    )
    imaging_measurements: list[
        hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    first_evidence: list[Dataset] = []
    if segmentation is not None:
        imaging_measurements += _groups_with_disease(
            ctx, result, segmentation, adc_map, digest_parameters, comparison=comparison
        )
        imaging_measurements += _empty_class_groups(ctx, segmentation)
        first_evidence.append(segmentation.dataset)
    else:
        imaging_measurements.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=ctx.uids.uid("tracking", "total-tumour-load"),
                    identifier="Total tumour load",
                ),
                finding_type=codes.DCM.NoAbnormality,
                finding_category=SEGMENT_CATEGORY,
                algorithm_id=_algorithm(ctx, digest_parameters),
                finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Bone)],
                measurements=[_volume(0.0), *_voxel_volume(ctx.exam.voxel_volume_ml)],
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(name=SEGMENT_TYPE, value=codes.SCT.Absent)
                ],
                source_images=[
                    hd.sr.SourceImageForMeasurementGroup(
                        referenced_sop_class_uid=parametric_map.SOPClassUID,
                        referenced_sop_instance_uid=parametric_map.SOPInstanceUID,
                    )
                ],
            )
        )
    if comparison is not None:
        imaging_measurements += comparison_groups(
            ctx, comparison, _algorithm(ctx, digest_parameters)
        )
    if notes:
        imaging_measurements.append(_notes_group(ctx, notes, _algorithm(ctx, digest_parameters)))
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(ctx, person_observer),
        procedure_reported=_PROCEDURE,
        imaging_measurements=imaging_measurements,
        title=codes.DCM.ImagingMeasurementReport,
    )
    try:
        sr = hd.sr.Comprehensive3DSR(
            evidence=[*first_evidence, parametric_map, *evidence],
            content=report,
            series_instance_uid=ctx.uids.uid("sr", "series"),
            series_number=ctx.series_number("sr"),
            # Other notes, other content: another instance (no notes: the UID as before).
            sop_instance_uid=ctx.uids.uid("sr", "instance", *notes),
            instance_number=1,
            manufacturer=ctx.identity.manufacturer,
            is_complete=True,
            is_final=False,
            is_verified=False,
            institution_name=ctx.identity.institution_name or None,
            contributing_equipment=ctx.contributing_equipment(
                "Measurements of the tumour load, ADC statistics and lesions"
            ),
            previous_versions=list(predecessors) or None,
        )
    except ValueError as exc:
        raise WriterError(f"Measurement Report could not be built: {exc}") from exc
    sr.SeriesDescription = "Tumour load report wbdwi"
    sr.ManufacturerModelName = ctx.identity.model_name
    sr.SoftwareVersions = ctx.identity.software_version
    sr.DeviceSerialNumber = ctx.identity.device_serial_number
    if _uses_local_codes(sr):
        scheme = Dataset()  # declares the private scheme of the 99WBDWI codes
        scheme.CodingSchemeDesignator = LOCAL_CODING_SCHEME
        scheme.CodingSchemeName = "wbdwi-node local codes"
        scheme.CodingSchemeResponsibleOrganization = ctx.identity.manufacturer
        sr.CodingSchemeIdentificationSequence = [scheme]
    return sr


def _notes_group(
    ctx: WriterContext, notes: Sequence[str], algorithm: hd.sr.AlgorithmIdentification
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=ctx.uids.uid("tracking", "notes"), identifier=NOTES_GROUP
        ),
        algorithm_id=algorithm,
    )
    container: Dataset = group[0]
    container.ContentSequence.extend(
        hd.sr.TextContentItem(
            name=COMMENT, value=note, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
        )
        for note in notes
    )
    return group


def _uses_local_codes(dataset: Dataset) -> bool:
    """Whether any content item names or holds a code of the private scheme."""
    stack = list(dataset.get("ContentSequence", []))
    while stack:
        item = stack.pop()
        for keyword in (
            "ConceptNameCodeSequence",
            "ConceptCodeSequence",
            "MeasurementUnitsCodeSequence",
        ):
            for code in item.get(keyword, []):
                if code.get("CodingSchemeDesignator") == LOCAL_CODING_SCHEME:
                    return True
        for measured in item.get("MeasuredValueSequence", []):
            stack.append(measured)
        stack.extend(item.get("ContentSequence", []))
    return False
