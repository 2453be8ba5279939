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
  comparison needs (:mod:`dicom_node.readers.report_codes`): centroid in patient
  coordinates (``CENTROIDX/Y/Z``, mm) and mean computed high-b signal
  (``HIGHBMEAN``);
- the voxel volume of the exam grid (``VOXELVOL``, ml) in "Total tumour load";
- with a comparison (:mod:`dicom_node.writers.sr_comparison`): per lesion its
  suggested category, rule and changes; groups with the previous exam's and the
  baseline's study UID, date and whole-body changes; the suggested categories
  overall and per region, each labelled a suggestion for the radiologist.

Every tracked finding (the total, each ADC class with voxels, each lesion, other
foci) also has a TID 1410 location group, same Tracking UID: an Image Region
POINT on a pixel of the finding on the computed-b slice of its largest
cross-section, Tracking Identifier ``VIEWER_ARROW:<its identifier>`` and, as
first DCM 121106 "Comment", a label with its volume (and median ADC), e.g.
``Lesion 3 - pelvis: 12.43 ml, median ADC 812 x10-6 mm2/s``. OHIF 3.13 draws it
as an arrow and loads it into its measurement panel with that label (its
cornerstone ArrowAnnotate adapter); the numbers themselves stay in the groups
above, unchanged.

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
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from scipy import ndimage

from dicom_node.readers.report_codes import (
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
    other_foci,
    region_code,
)
from dicom_node.writers.segment_references import SegmentReferences
from dicom_node.writers.sr_comparison import comparison_groups, lesion_comparison_items
from dicom_node.writers.sr_document import build_document, declare_encoding, survey
from dicom_node.writers.sr_quality import (
    description_suffix,
    reliability_evaluation,
    reliability_texts,
)
from processing.comparison import Comparison, LesionAssessment
from processing.quality import Verdict
from processing.results import AdcClass, AdcStats, LesionStats, ProcessingResult

__all__ = [
    "ADC_UNIT",
    "COMMENT",
    "LOCAL_CODING_SCHEME",
    "NOTES_GROUP",
    "OTHER_FOCI_COUNT",
    "PERCENTILE_25",
    "PERCENTILE_75",
    "TOTAL_GROUP",
    "VIEWER_ARROW",
    "VOLUME_UNIT",
    "adc_statistic_codes",
    "build_measurement_report",
    "report_reference",
    "viewer_label",
]

LOCAL_CODING_SCHEME = "99WBDWI"
NOTES_GROUP = "Notes on this report"
TOTAL_GROUP = "Total tumour load"
COMMENT = Code("121106", "DCM", "Comment")
OTHER_FOCI_COUNT = Code("OTHERFOCI", LOCAL_CODING_SCHEME, "Number of other foci")
PERCENTILE_25 = Code("P25", LOCAL_CODING_SCHEME, "25th percentile")
PERCENTILE_75 = Code("P75", LOCAL_CODING_SCHEME, "75th percentile")
ADC_UNIT = codes.UCUM._10EMinus6SquareMillimetersPerSecond
VOLUME_UNIT = Code("ml", "UCUM", "milliliter")
_NO_UNITS = codes.UCUM.NoUnits
#: Tracking Identifier prefix of the location groups: the ArrowAnnotate tool of OHIF's
#: cornerstone3D adapters (``@cornerstonejs/adapters``, TID 1500 import), so that OHIF 3.13
#: loads each location into its measurement panel, labelled with the group's first
#: Comment (see docs/result-objects.md).
VIEWER_ARROW = "Cornerstone3DTools@^0.1.0:ArrowAnnotate"
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


_Group = (
    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
    | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
    | hd.sr.MeasurementsAndQualitativeEvaluations
)


@dataclass(frozen=True, slots=True)
class _Spot:
    """Where a finding is shown: one of its pixels, on the slice of its largest cross-section."""

    slice_index: int
    column: int
    row: int

    @classmethod
    def inside(
        cls, voxels: NDArray[np.bool_], origin: tuple[int, int, int] = (0, 0, 0)
    ) -> _Spot | None:
        """The pixel of ``voxels`` nearest the centroid of its largest cross-section.

        A pixel of the finding itself: the centroid of a ring-shaped or curved
        finding can lie outside it. ``None`` if ``voxels`` is empty.
        ``voxels`` may be a box of the grid that holds the whole finding, whose
        first voxel is ``origin`` (slice, row, column) of the grid: the spot is
        the same as on the whole grid (the same pixels in the same order, the
        first of equal slices or distances).
        """
        areas = voxels.sum(axis=(1, 2))
        if not areas.any():
            return None
        z = int(np.argmax(areas))
        rows, columns = np.nonzero(voxels[z])
        rows += origin[1]
        columns += origin[2]
        distance = (rows - rows.mean()) ** 2 + (columns - columns.mean()) ** 2
        nearest = int(np.argmin(distance))
        return cls(z + origin[0], int(columns[nearest]), int(rows[nearest]))

    @classmethod
    def of_label(
        cls, labels: NDArray[np.integer], boxes: Sequence[tuple[slice, ...] | None], label: int
    ) -> _Spot | None:
        """:meth:`inside` the voxels of ``label``, looked at in its box only.

        ``boxes``: :func:`scipy.ndimage.find_objects` of ``labels`` (one pass
        for all labels, instead of one pass over the grid per label).
        """
        box = boxes[label - 1] if 0 < label <= len(boxes) else None
        if box is None:
            return None
        origin = (int(box[0].start), int(box[1].start), int(box[2].start))
        return cls.inside(labels[box] == label, origin)

    def point(self) -> NDArray[np.float64]:
        """The pixel's centre as one (column, row) pair (PS3.3 C.18.6.1.2, origin at the
        top left corner of the top left pixel)."""
        return np.asarray([[self.column + 0.5, self.row + 0.5]], dtype=np.float64)

    def region(self, images: Sequence[Dataset]) -> hd.sr.ImageRegion:
        """The :meth:`point` as an Image Region POINT on the slice's geometric source image.

        A POINT, which OHIF 3.13 draws as an arrow at the finding, and which its
        ArrowAnnotate adapter loads into the measurement panel with the group's
        label (see :data:`VIEWER_ARROW`). Not an ELLIPSE (no adapter loads one
        without an area NUM in the group) and not a 4- or 5-point POLYLINE
        (taken for OHIF's RectangleROI tool, which lists the rectangle's area
        and pixel statistics instead of the report's numbers).
        """
        image = images[self.slice_index]
        return hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POINT,
            graphic_data=self.point(),
            source_image=hd.sr.SourceImageForRegion(
                referenced_sop_class_uid=image.SOPClassUID,
                referenced_sop_instance_uid=image.SOPInstanceUID,
            ),
        )


def _box_of(voxels: NDArray[np.bool_]) -> tuple[slice, ...]:
    """The smallest box of the grid that holds every voxel of ``voxels`` (the grid if none)."""
    boxes = ndimage.find_objects(voxels.view(np.uint8))
    return tuple(boxes[0]) if boxes else tuple(slice(0, size) for size in voxels.shape)


def _body_spot(result: ProcessingResult) -> _Spot:
    """Where to show a report without disease: the body on the middle slice (or the slice)."""
    body = np.asarray(result.body_mask, dtype=bool)
    z = body.shape[0] // 2
    if not body[z].any():
        return _Spot(z, body.shape[2] // 2, body.shape[1] // 2)
    spot = _Spot.inside(body[z : z + 1])
    assert spot is not None  # the slice has body pixels
    return _Spot(z, spot.column, spot.row)


def _name(label: str) -> str:
    """A segment label without the rounded volume it ends with (``Lesion 3 - pelvis``)."""
    return re.sub(r", [0-9.]+ ml$", "", label)


def viewer_label(
    name: str, volume_ml: float, adc_median: float | None = None, remark: str = ""
) -> str:
    """The label a viewer shows at a finding: ``Lesion 3 - pelvis: 12.43 ml, median ADC 812
    x10-6 mm2/s`` (volume and median ADC as in the group's NUM items, rounded)."""
    text = f"{name}: {volume_ml:.2f} ml"
    if adc_median is not None and math.isfinite(adc_median):
        text += f", median ADC {adc_median:.0f} x10-6 mm2/s"
    return text + (f"; {remark}" if remark else "")


def _text(name: Code, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(
        name=name, value=value, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )


class _Groups:
    """Builds the measurement groups of one report (see the module docstring)."""

    def __init__(
        self,
        ctx: WriterContext,
        result: ProcessingResult,
        geometric_source: Sequence[Dataset],
        digest_parameters: list[str],
    ) -> None:
        if len(geometric_source) != ctx.grid.slices:
            raise WriterError(
                f"the SR locates its findings on the geometric source: one image per slice "
                f"({ctx.grid.slices}) needed, got {len(geometric_source)}"
            )
        self.ctx = ctx
        self.result = result
        self.images = geometric_source
        self.located: dict[int, Dataset] = {}  # slice index -> image a location is drawn on
        self.segment_references = SegmentReferences()  # each SEG's frames walked once
        self.digest = digest_parameters
        # one TID 4019 per parameter list, shared by the groups that cite it (same items)
        self.algorithms: dict[tuple[str, ...], hd.sr.AlgorithmIdentification] = {}
        self.quality = result.quality
        self.total_uid = ctx.uids.uid("tracking", "total-tumour-load")
        self.bone = [hd.sr.FindingSite(anatomic_location=codes.SCT.Bone)]
        # Numbers are marked with the verdict when it is not ok (reported, never silently).
        self.marks = (
            [reliability_evaluation(self.quality)] if self.quality.verdict is not Verdict.OK else []
        )

    def algorithm(self, parameters: Sequence[str] = ()) -> hd.sr.AlgorithmIdentification:
        key = tuple(parameters or self.digest)
        algorithm = self.algorithms.get(key)
        if algorithm is None:
            algorithm = self.algorithms[key] = _algorithm(self.ctx, key)
        return algorithm

    def location(
        self,
        uid: str,
        identifier: str,
        spot: _Spot,
        sites: list[hd.sr.FindingSite] | None,
        *,
        label: str,
        finding: Code = SEGMENT_TYPE,
        evaluations: Sequence[hd.sr.QualitativeEvaluation] = (),
        texts: Sequence[str] = (),
    ) -> hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations:
        """TID 1410 group: where a tracked finding is (a pixel of it on its largest slice).

        Same Tracking UID as the finding's numbers; Tracking Identifier
        ``VIEWER_ARROW:<the finding's identifier>``; first Comment ``label``
        (what OHIF shows at the arrow and in its measurement panel), then ``texts``.
        """
        self.located[spot.slice_index] = self.images[spot.slice_index]
        built = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=uid, identifier=f"{VIEWER_ARROW}:{identifier}"
            ),
            referenced_region=spot.region(self.images),
            finding_type=finding,
            finding_category=SEGMENT_CATEGORY,
            algorithm_id=self.algorithm(),
            finding_sites=sites,
            qualitative_evaluations=list(evaluations) or None,
        )
        built[0].ContentSequence.extend(_text(COMMENT, text) for text in [label, *texts])
        return built

    def total_location(
        self,
        spot: _Spot,
        volume_ml: float,
        adc_median: float | None,
        *,
        finding: Code = SEGMENT_TYPE,
        remark: str = "",
    ) -> _Group:
        """First group of the report: the total's location, the verdict and its reasons."""
        verdict = self.quality.verdict
        if verdict is not Verdict.OK:
            remark = ", ".join(filter(None, [remark, f"reliability {verdict.value.upper()}"]))
        return self.location(
            self.total_uid,
            TOTAL_GROUP,
            spot,
            self.bone,
            label=viewer_label(TOTAL_GROUP, volume_ml, adc_median, remark),
            finding=finding,
            evaluations=[reliability_evaluation(self.quality)],
            texts=reliability_texts(self.quality),
        )

    def about_total(
        self,
        identifier: str,
        *,
        measurements: Sequence[hd.sr.Measurement] = (),
        texts: Sequence[str] = (),
    ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
        """TID 1501 group without a location of its own: tracked as part of the total."""
        built = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=self.total_uid, identifier=identifier),
            finding_type=SEGMENT_TYPE,
            finding_category=SEGMENT_CATEGORY,
            algorithm_id=self.algorithm(),
            finding_sites=self.bone,
            measurements=list(measurements) or None,
        )
        built[0].ContentSequence.extend(_text(COMMENT, text) for text in texts)
        return built

    def segment_group(  # noqa: PLR0913 - keyword-only: each is one part of a TID 1411 group
        self,
        info: SegmentInfo,
        *,
        seg: Dataset,
        measurements: list[hd.sr.Measurement],
        sites: list[hd.sr.FindingSite] | None,
        parameters: Sequence[str],
        spot: _Spot | None,
        label: str,
        evaluations: Sequence[hd.sr.QualitativeEvaluation] = (),
        extra: Sequence[hd.sr.ContentItem] = (),
    ) -> list[_Group]:
        """TID 1411 group on its SEG segment, then its TID 1410 location labelled ``label``."""
        tracking = _tracking(info)
        built = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking,
            referenced_segment=self.segment_references.reference(seg, info.number),
            finding_type=SEGMENT_TYPE,
            finding_category=SEGMENT_CATEGORY,
            algorithm_id=self.algorithm(parameters),
            finding_sites=sites,
            measurements=measurements,
            qualitative_evaluations=[*self.marks, *evaluations] or None,
        )
        built[0].ContentSequence.extend(extra)
        if spot is None:  # a segment always has voxels; keep the group displayable anyway
            raise WriterError(f"segment {info.label!r} has no voxels to locate")
        return [built, self.location(info.tracking_uid, info.label, spot, sites, label=label)]

    def with_disease(
        self,
        segmentation: SegmentationOutput,
        adc_map: hd.sr.SourceImageForMeasurement,
        comparison: Comparison | None,
    ) -> list[_Group]:
        ctx, result, stats = self.ctx, self.result, self.result.stats
        mask = np.asarray(result.tumour_mask, dtype=bool)
        classes = np.asarray(result.class_labels)
        lesions = np.asarray(result.lesion_labels)
        # every spot but the lesions' is looked for in the box of the tumour and its classes
        box = _box_of(mask | (classes != 0))
        origin = (int(box[0].start), int(box[1].start), int(box[2].start))
        total_spot = _Spot.inside(mask[box], origin)
        if total_spot is None:
            raise WriterError("a SEG was given but the tumour mask is empty")
        median = stats.adc.median if stats.adc is not None else None
        groups: list[_Group] = [self.total_location(total_spot, stats.tdv_ml, median)]

        total_measurements = [_volume(stats.tdv_ml), *_voxel_volume(ctx.exam.voxel_volume_ml)]
        if stats.adc is not None:
            total_measurements += _adc_statistics(stats.adc, adc_map)
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=self.total_uid, identifier=TOTAL_GROUP
                ),
                finding_type=SEGMENT_TYPE,
                finding_category=SEGMENT_CATEGORY,
                algorithm_id=self.algorithm(),
                finding_sites=self.bone,
                measurements=total_measurements,
                qualitative_evaluations=self.marks or None,
                # the union of these SEGs' segments is the tumour load
                source_images=[
                    hd.sr.SourceImageForMeasurementGroup(
                        referenced_sop_class_uid=seg.SOPClassUID,
                        referenced_sop_instance_uid=seg.SOPInstanceUID,
                    )
                    for seg in segmentation.datasets()
                ],
            )
        )

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
        empty: list[_Group] = []
        for adc_class, info in segmentation.classes.items():
            if info.voxels == 0:
                # no frame to reference, no place to show: Volume 0 ml, tracked with the total
                empty.append(self.about_total(info.label, measurements=[_volume(0.0)]))
                continue
            groups += self.segment_group(
                info,
                seg=segmentation.dataset,
                measurements=[_volume(class_volumes[adc_class])],
                sites=self.bone,
                parameters=class_parameters,
                spot=_Spot.inside(classes[box] == adc_class.value, origin),
                label=viewer_label(info.label, class_volumes[adc_class]),
            )
        groups += empty

        assessments: dict[int, LesionAssessment] = {}
        if comparison is not None:
            assessments = {a.label: a for a in comparison.lesions if a.label is not None}
        lesion_seg = segmentation.lesion_dataset
        boxes = ndimage.find_objects(lesions) if stats.lesions else []
        for lesion in stats.lesions:
            info = segmentation.lesions[lesion.label]
            assert lesion_seg is not None  # lesions have segments
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
            groups += self.segment_group(
                info,
                seg=lesion_seg,
                measurements=measurements,
                sites=sites,
                parameters=self.digest,
                spot=_Spot.of_label(lesions, boxes, lesion.label),
                label=viewer_label(_name(info.label), lesion.volume_ml, lesion.adc_median),
                evaluations=evaluations,
                extra=extra,
            )
        other = segmentation.other
        if other is not None and lesion_seg is not None:
            count, volume = other_foci(stats)
            volume = volume or other.voxels * ctx.exam.voxel_volume_ml
            measurements = [_volume(volume)]
            if count:
                measurements.append(
                    hd.sr.Measurement(name=OTHER_FOCI_COUNT, value=float(count), unit=_NO_UNITS)
                )
            groups += self.segment_group(
                other,
                seg=lesion_seg,
                measurements=measurements,
                sites=self.bone,
                parameters=self.digest,
                spot=_Spot.inside(mask[box] & (lesions[box] == 0), origin),
                label=viewer_label(_name(other.label), volume),
            )
        return groups

    def without_disease(self, parametric_map: Dataset) -> list[_Group]:
        ctx = self.ctx
        return [
            self.total_location(
                _body_spot(self.result),
                0.0,
                None,
                finding=codes.DCM.NoAbnormality,
                remark="no abnormality",
            ),
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(
                    uid=self.total_uid, identifier=TOTAL_GROUP
                ),
                finding_type=codes.DCM.NoAbnormality,
                finding_category=SEGMENT_CATEGORY,
                algorithm_id=self.algorithm(),
                finding_sites=self.bone,
                measurements=[_volume(0.0), *_voxel_volume(ctx.exam.voxel_volume_ml)],
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(name=SEGMENT_TYPE, value=codes.SCT.Absent),
                    *self.marks,
                ],
                source_images=[
                    hd.sr.SourceImageForMeasurementGroup(
                        referenced_sop_class_uid=parametric_map.SOPClassUID,
                        referenced_sop_instance_uid=parametric_map.SOPInstanceUID,
                    )
                ],
            ),
        ]


def _replacement_note(predecessor: Dataset) -> str:
    """The sentence that says which earlier report this one replaces."""
    date, time = str(predecessor.get("ContentDate", "")), str(predecessor.get("ContentTime", ""))
    when = f" of {date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 else ""
    if when and len(time) >= 4:
        when += f" {time[:2]}:{time[2:4]}"
    return (
        f"This report replaces the earlier report{when} "
        f"(SR {predecessor.SOPInstanceUID}), listed as its predecessor; "
        "that report stays in PACS for reference."
    )


def build_measurement_report(  # noqa: PLR0913 - keyword-only: each object the report cites
    ctx: WriterContext,
    result: ProcessingResult,
    *,
    segmentation: SegmentationOutput | None,
    parametric_map: Dataset,
    evidence: Sequence[Dataset],
    geometric_source: Sequence[Dataset],
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
    geometric_source
        The computed-b series the segmentation was made on (one image per
        slice): each finding's location (TID 1410 image region) is drawn on it.
    comparison
        The comparison of this exam with earlier ones, when it has any (see
        :mod:`dicom_node.writers.sr_comparison`).
    notes
        Sentences for the reader of the report (e.g. why there is no
        comparison), each a "Comment" in the group "Notes on this report".
    predecessors
        Earlier reports this one replaces (the report of an earlier version
        of the exam's results, or the automatic report of an exam whose SEG a
        reader corrected): Predecessor Documents Sequence (PS3.3 C.17.2.3),
        and a note per report saying that this one replaces it. Datasets with
        the Study, Series, SOP Class and SOP Instance UIDs (and Content
        Date/Time for the note), e.g. :func:`report_reference` of the file.
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
    builder = _Groups(ctx, result, geometric_source, digest_parameters)
    first_evidence: list[Dataset] = []
    if segmentation is not None:
        imaging_measurements = builder.with_disease(segmentation, adc_map, comparison)
        first_evidence += segmentation.datasets()
    else:
        imaging_measurements = builder.without_disease(parametric_map)
    if comparison is not None:
        imaging_measurements += comparison_groups(
            ctx, comparison, builder.algorithm(), tracking_uid=builder.total_uid
        )
    all_notes = [*(_replacement_note(p) for p in predecessors), *notes]
    if all_notes:
        imaging_measurements.append(builder.about_total(NOTES_GROUP, texts=all_notes))
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(ctx, person_observer),
        procedure_reported=_PROCEDURE,
        imaging_measurements=imaging_measurements,
        title=codes.DCM.ImagingMeasurementReport,
        # TID 1600 Image Library: the computed-b images the locations are drawn on
        referenced_images=[builder.located[z] for z in sorted(builder.located)],
    )
    root = report[0]
    assert isinstance(root, hd.sr.ContainerContentItem)  # TID 1500's root container
    tree = survey(root, LOCAL_CODING_SCHEME)

    def build(content: Dataset, cited: Sequence[Dataset]) -> hd.sr.Comprehensive3DSR:
        return hd.sr.Comprehensive3DSR(
            evidence=cited,
            content=content,
            series_instance_uid=ctx.uids.uid("sr", "series"),
            series_number=ctx.series_number("sr"),
            # Other notes, predecessors, observer or reasons for doubt: another instance
            # (none of them: the UID as before).
            sop_instance_uid=ctx.uids.uid(
                "sr", "instance", *_instance_seed(notes, predecessors, person_observer, result)
            ),
            # a report that replaces others sorts after them in a viewer
            instance_number=1 + len(predecessors),
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

    try:
        sr = build_document(
            root, [*first_evidence, parametric_map, *evidence], tree.referenced, build
        )
    except ValueError as exc:
        raise WriterError(f"Measurement Report could not be built: {exc}") from exc
    revised = " (revised)" if predecessors else ""
    sr.SeriesDescription = f"Tumour load report{revised}{description_suffix(result.quality)} wbdwi"
    ctx.stamp_series(sr)
    sr.ManufacturerModelName = ctx.identity.model_name
    sr.SoftwareVersions = ctx.identity.software_version
    sr.DeviceSerialNumber = ctx.identity.device_serial_number
    if tree.uses_scheme:
        scheme = Dataset()  # declares the private scheme of the 99WBDWI codes
        scheme.CodingSchemeDesignator = LOCAL_CODING_SCHEME
        scheme.CodingSchemeName = "wbdwi-node local codes"
        scheme.CodingSchemeResponsibleOrganization = ctx.identity.manufacturer
        sr.CodingSchemeIdentificationSequence = [scheme]
    declare_encoding(sr)  # last: the finished document
    return sr


def _instance_seed(
    notes: Sequence[str],
    predecessors: Sequence[Dataset],
    person_observer: str,
    result: ProcessingResult,
) -> list[str]:
    """What, besides the exam, makes another report instance (nothing: the plain UID)."""
    parts = [*notes]
    parts += [f"replaces={p.SOPInstanceUID}" for p in predecessors]
    if person_observer:
        parts.append(f"observer={person_observer}")
    parts += [f"quality={f.code}:{f.severity.value}" for f in result.quality.findings]
    return parts


def report_reference(path: Path | str) -> Dataset:
    """The identity of a report file, as ``predecessors`` of a report that replaces it.

    Study, Series, SOP Class and SOP Instance UIDs and Content Date/Time, read
    from the header of ``path``.

    Raises
    ------
    WriterError
        When the file cannot be read or is not an SR document.
    """
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, InvalidDicomError) as exc:
        raise WriterError(f"cannot read the earlier report {path}: {exc}") from exc
    if "ContentSequence" not in header or "SOPInstanceUID" not in header:
        raise WriterError(f"{path} is not an SR document (no content or no SOP Instance UID)")
    reference = Dataset()
    for keyword in (
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPClassUID",
        "SOPInstanceUID",
        "ContentDate",
        "ContentTime",
    ):
        if keyword in header:
            reference[keyword] = header[keyword]
    return reference
