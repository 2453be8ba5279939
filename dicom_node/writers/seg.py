"""The tumour load as two BINARY highdicom Segmentations (PS3.3 A.51).

OHIF 3.13 collapses the segments of one SEG into a single label map: where
segments overlap, one of them hides the others (a total-load segment hid the
ADC classes). So the node writes two SEGs whose segments never overlap:

1. the **class SEG** (folder ``seg``, "Tumour load by ADC class"): segments
   1 "ADC class red", 2 "ADC class yellow", 3 "ADC class green", the voxels of
   each ADC colour class with the class colours as recommended display
   colours. Together they are the tumour mask, so a reader who edits this SEG
   edits the tumour load; a viewer shows the classes in their colours;
2. the **lesion SEG** (folder ``seg_lesions``): one segment per lesion
   (connected component) in the order of ``stats.lesions``, labelled with its
   number, bone region and volume ("Lesion 3 - lumbosacral spine, 12.4 ml"),
   each in its own colour (none of the class colours), and, when the
   statistics sum small components as "other foci", one last segment
   "Other foci" with those voxels. Each lesion group of the SR references
   exactly its voxels.

The total tumour load is the union of either SEG's segments; it has no segment
of its own (it would overlap every other segment), but a tracking UID that the
SR uses.

Every segment: category SCT 49755003 "Morphologically abnormal structure",
type SCT 14799000 "Neoplasm, secondary", algorithm type AUTOMATIC with the
algorithm identification (name, version, family DCM 123105 "Histogram
Analysis": thresholds on the computed-b signal and on ADC), a tracking UID and
tracking ID that the SR reuses. Anatomic region SCT 272673000 "Bone" (or the
bone region of the lesion); none for lesions outside the named bone regions.

BINARY, uncompressed, empty frames omitted; frames are pixel-aligned with the
geometric source series (the computed-b series the segmentation was made on,
one derived MR image per slice of the exam grid). The SEG references **only
that series** (Referenced Series Sequence and the frames' derivation images):
OHIF attaches a SEG to the first series of its Referenced Series Sequence it
has loaded, so listing the original station series made it attach the SEG to
a station and hang. The chain back to the acquisition goes through the
computed-b images, whose Source Image Sequence names the original b-value
images of each slice.
Only the slices that hold tumour are passed to highdicom, as one label map
per SEG (each voxel's segment number; the segments of a SEG never overlap):
memory ``slices_with_tumour x rows x columns`` bytes whatever the number of
segments, and voxel counts from one pass over the labels, not one per segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from dicom_node.writers.common import WriterContext, check_on_grid, set_dimension_organization_uid
from dicom_node.writers.errors import EmptySegmentationError, ResultGeometryError, WriterError
from processing.results import AdcClass, BodyRegion, ExamStats, LesionStats, ProcessingResult

__all__ = [
    "ADC_CLASS_RGB",
    "LESION_PALETTE",
    "OTHER_FOCI_RGB",
    "SEGMENT_CATEGORY",
    "SEGMENT_TYPE",
    "TOTAL_TUMOUR_RGB",
    "SegmentInfo",
    "SegmentationOutput",
    "build_segmentation",
    "lesion_label",
    "other_foci",
    "region_code",
]

SEGMENT_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure  # SCT 49755003
SEGMENT_TYPE = codes.SCT.NeoplasmSecondary  # SCT 14799000
ADC_CLASS_RGB: dict[AdcClass, tuple[int, int, int]] = {
    AdcClass.RED: (230, 30, 30),
    AdcClass.YELLOW: (250, 210, 0),
    AdcClass.GREEN: (30, 180, 60),
}
TOTAL_TUMOUR_RGB = (0, 150, 255)  # the total load in pictures (key images)
# Lesion colours, cycled: blues, violets, cyans and pinks, none of them a class colour.
LESION_PALETTE: tuple[tuple[int, int, int], ...] = (
    (0, 130, 255),
    (220, 60, 220),
    (0, 200, 200),
    (140, 90, 255),
    (255, 105, 180),
    (0, 160, 140),
    (100, 180, 255),
    (170, 60, 140),
)
OTHER_FOCI_RGB = (160, 160, 160)

_REGION_CODES: dict[BodyRegion, Code] = {
    BodyRegion.SKULL: codes.SCT.Skull,
    BodyRegion.CERVICAL_SPINE: codes.SCT.CervicalSpine,
    BodyRegion.DORSAL_SPINE: codes.SCT.ThoracicSpine,
    BodyRegion.LUMBOSACRAL_SPINE: codes.SCT.LumboSacralSpine,
    BodyRegion.THORAX: codes.SCT.BoneStructureOfThorax,
    BodyRegion.PELVIS: codes.SCT.BoneStructureOfPelvis,
    BodyRegion.LIMBS: codes.SCT.Extremity,
}


def region_code(region: BodyRegion) -> Code | None:
    """SNOMED CT code of a reporting region (``None`` for ``OTHER``)."""
    return _REGION_CODES.get(region)


def lesion_label(index: int, lesion: LesionStats) -> str:
    """``Lesion 3 - lumbosacral spine, 12.4 ml``: segment label and SR tracking identifier.

    The SR reader matches ``^Lesion (\\d+)``; at most 64 characters (LO).
    """
    region = "other site" if lesion.region is BodyRegion.OTHER else lesion.region.value
    return f"Lesion {index} - {region.replace('_', ' ')}, {lesion.volume_ml:.1f} ml"[:64]


def other_foci(stats: ExamStats) -> tuple[int, float]:
    """``(count, ml)`` of the small components summed as "other foci" (0, 0.0 when none)."""
    return int(stats.other_foci_count), float(stats.other_foci_ml)


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """One tracked finding as the SR needs it.

    ``number`` is the segment number in ``sop_instance_uid`` (0 and ``""`` for
    the total tumour load, which has no segment of its own).
    """

    number: int
    label: str
    tracking_uid: str
    tracking_id: str
    voxels: int
    sop_instance_uid: str = ""


@dataclass(frozen=True, slots=True)
class SegmentationOutput:
    """The class SEG, the lesion SEG and where each tracked finding is."""

    dataset: hd.seg.Segmentation  # class SEG: red, yellow, green (folder "seg")
    lesion_dataset: hd.seg.Segmentation | None  # lesions and other foci (folder "seg_lesions")
    total: SegmentInfo  # tracking only: the union of the class segments
    classes: dict[AdcClass, SegmentInfo]
    lesions: dict[int, SegmentInfo]  # lesion label -> segment of lesion_dataset
    other: SegmentInfo | None = None  # the "other foci" segment of lesion_dataset

    def datasets(self) -> tuple[hd.seg.Segmentation, ...]:
        """Both SEGs (the lesion SEG when there is one)."""
        return (
            (self.dataset,)
            if self.lesion_dataset is None
            else (
                self.dataset,
                self.lesion_dataset,
            )
        )


def _class_label(adc_class: AdcClass, yellow_lower: float, green_lower: float) -> str:
    if adc_class is AdcClass.RED:
        return f"ADC class red (< {yellow_lower:g})"
    if adc_class is AdcClass.YELLOW:
        return f"ADC class yellow ({yellow_lower:g}-{green_lower:g})"
    return f"ADC class green (>= {green_lower:g})"


class _SegmentBuilder:
    """Segments of one SEG: descriptions and infos; the pixels come as one label map."""

    def __init__(
        self,
        ctx: WriterContext,
        kind: str,
        algorithm: hd.AlgorithmIdentificationSequence,
        sub: slice,
    ) -> None:
        self.ctx = ctx
        self.kind = kind
        self.sop_instance_uid = ctx.uids.uid(kind, "instance")
        self.algorithm = algorithm
        self.sub = sub
        self.descriptions: list[hd.seg.SegmentDescription] = []

    def add(
        self,
        label: str,
        tracking_id: str,
        voxels: int,
        rgb: tuple[int, int, int],
        regions: list[Code] | None,
    ) -> SegmentInfo:
        """Describe the next segment (number ``len(descriptions) + 1``) of ``voxels`` voxels."""
        number = len(self.descriptions) + 1
        info = SegmentInfo(
            number=number,
            label=label,
            tracking_uid=self.ctx.uids.uid("tracking", tracking_id),
            tracking_id=tracking_id,
            voxels=voxels,
            sop_instance_uid=self.sop_instance_uid,
        )
        self.descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=label,
                segmented_property_category=SEGMENT_CATEGORY,
                segmented_property_type=SEGMENT_TYPE,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=self.algorithm,
                tracking_uid=info.tracking_uid,
                tracking_id=tracking_id,
                anatomic_regions=regions,
                display_color=hd.color.CIELabColor.from_rgb(*rgb),
            )
        )
        return info

    def label_map(
        self,
        numbers: NDArray[np.integer],
        lookup: NDArray[np.integer],
        inside: NDArray[np.bool_] | None = None,
    ) -> NDArray[np.unsignedinteger]:
        """``lookup[numbers]`` on the tumour slices: each voxel's segment number (0: none).

        Voxels not ``inside`` (when given) are in no segment.

        The segments of one SEG never overlap, so highdicom takes them as one
        label map (uint8, or uint16 beyond 255 segments) instead of a stack of
        one mask per segment: the same frames, without the stack's memory
        (slices x rows x columns x segments) or its overlap check.
        """
        dtype = np.uint8 if len(self.descriptions) <= np.iinfo(np.uint8).max else np.uint16
        labels: NDArray[np.unsignedinteger] = lookup.astype(dtype)[numbers[self.sub]]
        if inside is not None:
            labels[~inside[self.sub]] = 0
        return labels

    def build(
        self,
        geometric_source: Sequence[Dataset],
        labels: NDArray[np.unsignedinteger],
        *,
        content_label: str,
        content_description: str,
        series_description: str,
    ) -> hd.seg.Segmentation:
        """The SEG of the described segments; ``labels`` from :meth:`label_map`."""
        ctx = self.ctx
        try:
            seg = hd.seg.Segmentation(
                source_images=list(geometric_source[self.sub]),
                pixel_array=labels,
                segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
                segment_descriptions=self.descriptions,
                series_instance_uid=ctx.uids.uid(self.kind, "series"),
                series_number=ctx.series_number(self.kind),
                sop_instance_uid=self.sop_instance_uid,
                instance_number=1,
                manufacturer=ctx.identity.manufacturer,
                manufacturer_model_name=ctx.identity.model_name,
                software_versions=ctx.identity.software_version,
                device_serial_number=ctx.identity.device_serial_number,
                content_label=content_label,
                content_description=content_description,
                omit_empty_frames=True,
                contributing_equipment=ctx.contributing_equipment(
                    "Tumour-load segmentation of computed high-b and ADC"
                ),
            )
        except ValueError as exc:
            raise WriterError(f"Segmentation ({self.kind}) could not be built: {exc}") from exc
        seg.SeriesDescription = series_description
        seg.BodyPartExamined = ctx.body_part_examined
        set_dimension_organization_uid(seg, ctx.uids.uid(self.kind, "dimension-organization"))
        ctx.stamp_series(seg)
        return seg


def _check_labels(
    mask: NDArray[np.bool_],
    classes: NDArray[np.integer],
    lesions: NDArray[np.integer],
    lesion_stats: Sequence[LesionStats],
) -> None:
    """The checks of :func:`build_segmentation` on the tumour mask and its label maps."""
    if not mask.any():
        raise EmptySegmentationError(
            "the tumour mask is empty: no SEG is written for an exam without segmented disease"
        )
    # a label outside the mask: more labelled voxels on the grid than in the mask
    outside = (
        np.count_nonzero(labels) != np.count_nonzero(labels[mask]) for labels in (classes, lesions)
    )
    if any(outside):
        raise ResultGeometryError("ADC class or lesion labels lie outside the tumour mask")
    class_values = {adc_class.value for adc_class in AdcClass}
    if not np.isin(classes[mask], list(class_values)).all():
        raise ResultGeometryError(
            "tumour voxels without an ADC class: the class SEG must cover the tumour mask"
        )
    labels_present = set(np.unique(lesions[mask]).tolist()) - {0}
    labels_reported = {lesion.label for lesion in lesion_stats}
    if any(label <= 0 for label in labels_reported):
        raise ResultGeometryError(
            f"lesion labels must be positive (0 is no lesion), got {sorted(labels_reported)[:10]}"
        )
    if labels_present != labels_reported:
        raise ResultGeometryError(
            f"lesion labels in the map {sorted(labels_present)[:10]} differ from the lesions "
            f"reported in the statistics {sorted(labels_reported)[:10]}"
        )


def _lesion_segmentation(
    by_lesion: _SegmentBuilder,
    result: ProcessingResult,
    geometric_source: Sequence[Dataset],
    lesion_counts: NDArray[np.integer],
) -> tuple[hd.seg.Segmentation | None, dict[int, SegmentInfo], SegmentInfo | None]:
    """The lesion SEG (lesions, then other foci), its lesion segments and other foci.

    ``lesion_counts[label]``: tumour voxels of each lesion label (0: of no lesion).
    """
    lesion_infos: dict[int, SegmentInfo] = {}
    lesion_numbers = np.zeros(len(lesion_counts), dtype=np.intp)
    for index, lesion in enumerate(result.stats.lesions, start=1):
        code = region_code(lesion.region)
        info = by_lesion.add(
            lesion_label(index, lesion),
            f"lesion-{index}",
            int(lesion_counts[lesion.label]),
            LESION_PALETTE[(index - 1) % len(LESION_PALETTE)],
            [code] if code is not None else None,
        )
        lesion_infos[lesion.label] = info
        lesion_numbers[lesion.label] = info.number
    other_info: SegmentInfo | None = None
    rest = int(lesion_counts[0])  # tumour voxels of no lesion
    if rest:
        count, volume = other_foci(result.stats)
        volume = volume or float(rest) * by_lesion.ctx.exam.voxel_volume_ml
        counted = f" ({count})" if count else ""
        label = f"Other foci{counted}, {volume:.1f} ml"
        other_info = by_lesion.add(label, "other-foci", rest, OTHER_FOCI_RGB, [codes.SCT.Bone])
        lesion_numbers[0] = other_info.number
    lesion_seg = None
    if by_lesion.descriptions:
        lesion_seg = by_lesion.build(
            geometric_source,
            by_lesion.label_map(
                np.asarray(result.lesion_labels),
                lesion_numbers,
                inside=np.asarray(result.tumour_mask, dtype=bool),
            ),
            content_label="LESIONS",
            content_description="Lesions of the tumour load, numbered as in the report",
            series_description="Tumour load lesions (SEG) wbdwi",
        )
    return lesion_seg, lesion_infos, other_info


def build_segmentation(
    ctx: WriterContext,
    result: ProcessingResult,
    geometric_source: Sequence[Dataset],
) -> SegmentationOutput:
    """Build the class SEG and the lesion SEG of the tumour mask.

    ``geometric_source`` is the computed-b series (one image per slice of the
    exam grid) the segmentation was made on; it is the only series the SEGs
    reference.

    Raises
    ------
    EmptySegmentationError
        When the tumour mask is empty (write no SEG; the SR says so).
    ResultGeometryError
        When a mask or label map is not on the exam grid, the class or lesion
        labels fall outside the tumour mask, a tumour voxel has no ADC class,
        or the geometric source does not have one image per slice.
    """
    grid = ctx.grid
    mask = np.asarray(result.tumour_mask, dtype=bool)
    classes = np.asarray(result.class_labels)
    lesions = np.asarray(result.lesion_labels)
    check_on_grid("tumour mask", mask, grid)
    check_on_grid("ADC class labels", classes, grid)
    check_on_grid("lesion labels", lesions, grid)
    if len(geometric_source) != grid.slices:
        raise ResultGeometryError(
            f"SEG needs one source image per slice ({grid.slices}), got {len(geometric_source)}"
        )
    _check_labels(mask, classes, lesions, result.stats.lesions)
    labels_reported = {lesion.label for lesion in result.stats.lesions}
    class_values = [adc_class.value for adc_class in AdcClass]

    occupied = np.flatnonzero(mask.any(axis=(1, 2)))
    sub = slice(int(occupied[0]), int(occupied[-1]) + 1)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ctx.identity.algorithm_name,
        family=codes.DCM.HistogramAnalysis,
        version=ctx.identity.software_version,
        parameters={"settings_digest": result.settings_digest} if result.settings_digest else None,
    )
    class_volumes = result.stats.classes
    bone = [codes.SCT.Bone]

    # voxels per class and per lesion label (checked above: classes 1-3, lesions > 0)
    class_counts = np.bincount(classes[mask], minlength=max(class_values) + 1)
    lesion_counts = np.bincount(lesions[mask], minlength=max(labels_reported, default=0) + 1)

    by_class = _SegmentBuilder(ctx, "seg", algorithm, sub)
    class_infos: dict[AdcClass, SegmentInfo] = {}
    class_numbers = np.zeros(len(class_counts), dtype=np.intp)
    for adc_class in AdcClass:
        label = _class_label(
            adc_class, class_volumes.yellow_lower_um2s, class_volumes.green_lower_um2s
        )
        info = by_class.add(
            label,
            f"adc-class-{adc_class.name.lower()}",
            int(class_counts[adc_class.value]),
            ADC_CLASS_RGB[adc_class],
            bone,
        )
        class_infos[adc_class] = info
        class_numbers[adc_class.value] = info.number
    class_seg = by_class.build(
        geometric_source,
        by_class.label_map(classes, class_numbers),
        content_label="ADCCLASSES",
        content_description="Tumour load by ADC class (red, yellow, green)",
        series_description="Tumour load by ADC class (SEG) wbdwi",
    )

    lesion_seg, lesion_infos, other_info = _lesion_segmentation(
        _SegmentBuilder(ctx, "seg-lesions", algorithm, sub),
        result,
        geometric_source,
        lesion_counts,
    )
    total = SegmentInfo(
        number=0,
        label="Total tumour load",
        tracking_uid=ctx.uids.uid("tracking", "total-tumour-load"),
        tracking_id="total-tumour-load",
        voxels=int(class_counts.sum()),
    )
    return SegmentationOutput(
        dataset=class_seg,
        lesion_dataset=lesion_seg,
        total=total,
        classes=class_infos,
        lesions=lesion_infos,
        other=other_info,
    )
