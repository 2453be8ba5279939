"""The tumour mask as a BINARY highdicom Segmentation (PS3.3 A.51).

Segments, in this fixed order so that numbers mean the same in every SEG the
node writes:

1. "Total tumour load": the whole tumour mask;
2. "ADC class red", 3. "ADC class yellow", 4. "ADC class green": the voxels of
   each ADC colour class, with the class colours as recommended display colours;
5. onwards: one segment per lesion (connected component), in the order of
   ``stats.lesions``, so that each lesion group of the SR can reference exactly
   its voxels.

Every segment: category SCT 49755003 "Morphologically abnormal structure",
type SCT 14799000 "Neoplasm, secondary", algorithm type AUTOMATIC with the
algorithm identification (name, version, family DCM 123105 "Histogram
Analysis": thresholds on the computed-b signal and on ADC), a tracking UID and
tracking ID that the SR reuses. Anatomic region SCT 272673000 "Bone" (or the
bone region of the lesion); none for lesions outside the named bone regions.

BINARY, uncompressed, empty frames omitted; frames are pixel-aligned with the
geometric source series (one derived MR image per slice of the exam grid);
the original b-value images are referenced too.
Only the slices that hold tumour are passed to highdicom, which keeps memory
to ``slices_with_tumour x rows x columns x segments`` booleans.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from dicom_node.writers.common import WriterContext, check_on_grid
from dicom_node.writers.errors import EmptySegmentationError, ResultGeometryError, WriterError
from processing.results import AdcClass, BodyRegion, ProcessingResult

__all__ = [
    "ADC_CLASS_RGB",
    "SEGMENT_CATEGORY",
    "SEGMENT_TYPE",
    "TOTAL_TUMOUR_RGB",
    "SegmentInfo",
    "SegmentationOutput",
    "build_segmentation",
    "region_code",
]

SEGMENT_CATEGORY = codes.SCT.MorphologicallyAbnormalStructure  # SCT 49755003
SEGMENT_TYPE = codes.SCT.NeoplasmSecondary  # SCT 14799000
ADC_CLASS_RGB: dict[AdcClass, tuple[int, int, int]] = {
    AdcClass.RED: (230, 30, 30),
    AdcClass.YELLOW: (250, 210, 0),
    AdcClass.GREEN: (30, 180, 60),
}
TOTAL_TUMOUR_RGB = (0, 150, 255)

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


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """One segment as the SR needs it."""

    number: int
    label: str
    tracking_uid: str
    tracking_id: str
    voxels: int


@dataclass(frozen=True, slots=True)
class SegmentationOutput:
    """The SEG and where each of its segments came from."""

    dataset: hd.seg.Segmentation
    total: SegmentInfo
    classes: dict[AdcClass, SegmentInfo]
    lesions: dict[int, SegmentInfo]  # lesion label -> segment


def _class_label(adc_class: AdcClass, yellow_lower: float, green_lower: float) -> str:
    if adc_class is AdcClass.RED:
        return f"ADC class red (< {yellow_lower:g})"
    if adc_class is AdcClass.YELLOW:
        return f"ADC class yellow ({yellow_lower:g}-{green_lower:g})"
    return f"ADC class green (>= {green_lower:g})"


def build_segmentation(
    ctx: WriterContext,
    result: ProcessingResult,
    geometric_source: Sequence[Dataset],
) -> SegmentationOutput:
    """Build the SEG of the tumour mask, its ADC classes and its lesions.

    Raises
    ------
    EmptySegmentationError
        When the tumour mask is empty (write no SEG; the SR says so).
    ResultGeometryError
        When a mask or label map is not on the exam grid, the class or lesion
        labels fall outside the tumour mask, or the geometric source does not
        have one image per slice.
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
    if not mask.any():
        raise EmptySegmentationError(
            "the tumour mask is empty: no SEG is written for an exam without segmented disease"
        )
    if np.any(classes[~mask]) or np.any(lesions[~mask]):
        raise ResultGeometryError("ADC class or lesion labels lie outside the tumour mask")
    lesion_stats = result.stats.lesions
    labels_present = set(np.unique(lesions[mask]).tolist()) - {0}
    labels_reported = {lesion.label for lesion in lesion_stats}
    if labels_present != labels_reported:
        raise ResultGeometryError(
            f"lesion labels in the map {sorted(labels_present)[:10]} differ from the lesions "
            f"reported in the statistics {sorted(labels_reported)[:10]}"
        )

    occupied = np.flatnonzero(mask.any(axis=(1, 2)))
    sub = slice(int(occupied[0]), int(occupied[-1]) + 1)
    algorithm = hd.AlgorithmIdentificationSequence(
        name=ctx.identity.algorithm_name,
        family=codes.DCM.HistogramAnalysis,
        version=ctx.identity.software_version,
        parameters={"settings_digest": result.settings_digest} if result.settings_digest else None,
    )
    class_volumes = result.stats.classes

    planes: list[np.ndarray] = []
    descriptions: list[hd.seg.SegmentDescription] = []
    infos: list[SegmentInfo] = []

    def add(
        label: str,
        tracking_id: str,
        voxels: np.ndarray,
        rgb: tuple[int, int, int],
        regions: list[Code] | None,
    ) -> SegmentInfo:
        number = len(descriptions) + 1
        info = SegmentInfo(
            number=number,
            label=label,
            tracking_uid=ctx.uids.uid("tracking", tracking_id),
            tracking_id=tracking_id,
            voxels=int(voxels.sum()),
        )
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=label,
                segmented_property_category=SEGMENT_CATEGORY,
                segmented_property_type=SEGMENT_TYPE,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_uid=info.tracking_uid,
                tracking_id=tracking_id,
                anatomic_regions=regions,
                display_color=hd.color.CIELabColor.from_rgb(*rgb),
            )
        )
        planes.append(voxels[sub])
        infos.append(info)
        return info

    bone = [codes.SCT.Bone]
    total = add("Total tumour load", "total-tumour-load", mask, TOTAL_TUMOUR_RGB, bone)
    class_infos: dict[AdcClass, SegmentInfo] = {}
    for adc_class in AdcClass:
        label = _class_label(
            adc_class, class_volumes.yellow_lower_um2s, class_volumes.green_lower_um2s
        )
        class_infos[adc_class] = add(
            label,
            f"adc-class-{adc_class.name.lower()}",
            classes == adc_class.value,
            ADC_CLASS_RGB[adc_class],
            bone,
        )
    lesion_infos: dict[int, SegmentInfo] = {}
    for index, lesion in enumerate(lesion_stats, start=1):
        code = region_code(lesion.region)
        lesion_infos[lesion.label] = add(
            f"Lesion {index} ({lesion.region.value.replace('_', ' ')})",
            f"lesion-{index}",
            lesions == lesion.label,
            TOTAL_TUMOUR_RGB,
            [code] if code is not None else None,
        )

    pixel_array = np.stack(planes, axis=-1)
    try:
        seg = hd.seg.Segmentation(
            source_images=list(geometric_source[sub]),
            pixel_array=pixel_array,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=ctx.uids.uid("seg", "series"),
            series_number=ctx.series_number("seg"),
            sop_instance_uid=ctx.uids.uid("seg", "instance"),
            instance_number=1,
            manufacturer=ctx.identity.manufacturer,
            manufacturer_model_name=ctx.identity.model_name,
            software_versions=ctx.identity.software_version,
            device_serial_number=ctx.identity.device_serial_number,
            content_label="TUMOURLOAD",
            content_description="Total tumour load, ADC classes and lesions",
            omit_empty_frames=True,
            contributing_equipment=ctx.contributing_equipment(
                "Tumour-load segmentation of computed high-b and ADC"
            ),
        )
    except ValueError as exc:
        raise WriterError(f"Segmentation could not be built: {exc}") from exc
    ctx.add_source_references(seg)
    seg.SeriesDescription = "Tumour load SEG wbdwi"
    seg.BodyPartExamined = ctx.body_part_examined
    return SegmentationOutput(dataset=seg, total=total, classes=class_infos, lesions=lesion_infos)
