"""ADC Parametric Map and tumour-load SEG: read back with highdicom, equal the arrays."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicom_node.writers import (
    DerivedSeries,
    EmptySegmentationError,
    ResultGeometryError,
    WriterContext,
    build_computed_b_series,
    build_parametric_map,
    build_segmentation,
)
from dicom_node.writers.seg import ADC_CLASS_RGB, LESION_PALETTE
from processing.results import AdcClass, ProcessingResult
from tests.helpers.writer_fixtures import SyntheticExam


@pytest.fixture(scope="module")
def geometric(ctx: WriterContext, result: ProcessingResult) -> DerivedSeries:
    return build_computed_b_series(ctx, result.computed[0], result.body_mask)


def _round_trip(dataset: pydicom.Dataset, tmp_path: Path) -> pydicom.Dataset:
    path = tmp_path / "object.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def test_parametric_map_reads_back_with_the_adc_values(
    ctx: WriterContext,
    result: ProcessingResult,
    geometric: DerivedSeries,
    synthetic: SyntheticExam,
    tmp_path: Path,
) -> None:
    pm = build_parametric_map(ctx, result, geometric.datasets)
    back = hd.pm.ParametricMap.from_dataset(_round_trip(pm, tmp_path))
    frames = back.pixel_array
    assert frames.dtype == np.float32
    positions = [
        [float(v) for v in item.PlanePositionSequence[0].ImagePositionPatient]
        for item in back.PerFrameFunctionalGroupsSequence
    ]
    by_position = {tuple(np.round(p, 3)): i for i, p in enumerate(positions)}
    for z in range(ctx.grid.slices):
        frame = by_position[tuple(np.round(ctx.grid.positions[z], 3))]
        np.testing.assert_array_equal(
            frames[frame], np.where(result.adc_valid[z], result.adc[z], 0)
        )
    mapping = back.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "10-6.mm2/s"
    items = mapping.QuantityDefinitionSequence
    codes = {(item.ConceptNameCodeSequence[0].CodeValue, item.ValueType) for item in items}
    assert ("246205007", "CODE") in codes  # Quantity = ADC
    assert ("370129005", "CODE") in codes  # Measurement Method = mono-exponential
    b_values = [float(i.NumericValue) for i in items if i.ValueType == "NUMERIC"]
    assert b_values == list(synthetic.exam.b_values)
    assert back.BodyPartExamined == "WHOLEBODY"
    assert back.SoftwareVersions == "9.9"
    # Only the geometric source series: OHIF overlays the first referenced series.
    assert [item.SeriesInstanceUID for item in back.ReferencedSeriesSequence] == [
        geometric.series_instance_uid
    ]
    referenced = {
        item.ReferencedSOPInstanceUID
        for item in back.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    }
    assert referenced == {ds.SOPInstanceUID for ds in geometric.datasets}
    assert not {ref.sop_instance_uid for ref in synthetic.exam.sources} & set(
        _all_referenced_uids(back)
    )
    # Display: one window with a one-value explanation (not "A\D\C"), dated series.
    voi = back.SharedFunctionalGroupsSequence[0].FrameVOILUTSequence[0]
    assert (float(voi.WindowCenter), float(voi.WindowWidth)) == (1000.0, 2000.0)
    assert voi["WindowCenterWidthExplanation"].VM == 1
    assert voi.WindowCenterWidthExplanation == "ADC 10^-6 mm2/s"
    assert back.SeriesDescription == "ADC map (float, 10^-6 mm2/s) wbdwi"
    assert back.SeriesDate == ctx.content_datetime.strftime("%Y%m%d")
    assert back.SeriesTime == ctx.content_datetime.strftime("%H%M%S")


def _all_referenced_uids(dataset: pydicom.Dataset) -> list[str]:
    """Every Referenced SOP Instance UID anywhere in ``dataset``."""
    found: list[str] = []
    for element in dataset.iterall():
        if element.keyword == "ReferencedSOPInstanceUID":
            found.append(str(element.value))
    return found


def test_parametric_map_needs_one_source_per_slice(
    ctx: WriterContext, result: ProcessingResult, geometric: DerivedSeries
) -> None:
    with pytest.raises(ResultGeometryError, match="one source image per slice"):
        build_parametric_map(ctx, result, geometric.datasets[:-1])


def test_segmentation_segments_equal_the_masks(
    ctx: WriterContext,
    result: ProcessingResult,
    geometric: DerivedSeries,
    synthetic: SyntheticExam,
    tmp_path: Path,
) -> None:
    output = build_segmentation(ctx, result, geometric.datasets)
    assert output.lesion_dataset is not None
    by_class = hd.seg.Segmentation.from_dataset(_round_trip(output.dataset, tmp_path))
    by_lesion = hd.seg.Segmentation.from_dataset(_round_trip(output.lesion_dataset, tmp_path))
    sources = [ds.SOPInstanceUID for ds in geometric.datasets]

    def segment(seg: hd.seg.Segmentation, number: int) -> np.ndarray:
        pixels = seg.get_pixels_by_source_instance(
            sources, segment_numbers=[number], assert_missing_frames_are_empty=True
        )
        return pixels[..., 0] > 0

    for back in (by_class, by_lesion):
        assert back.SegmentationType == "BINARY"
        # exactly the series it was drawn on; no station series anywhere
        assert [item.SeriesInstanceUID for item in back.ReferencedSeriesSequence] == [
            geometric.series_instance_uid
        ]
        assert not {ref.sop_instance_uid for ref in synthetic.exam.sources} & set(
            _all_referenced_uids(back)
        )
        assert back.SeriesDate == ctx.content_datetime.strftime("%Y%m%d")
        assert back.NumberOfFrames < ctx.grid.slices * back.number_of_segments  # empty omitted
    assert output.dataset.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian

    # Class SEG: red, yellow, green first and only, in their colours, no overlap,
    # together the tumour mask.
    assert by_class.number_of_segments == 3
    union = np.zeros_like(result.tumour_mask)
    for number, adc_class in enumerate(AdcClass, start=1):
        info = output.classes[adc_class]
        assert info.number == number
        voxels = segment(by_class, number)
        np.testing.assert_array_equal(voxels, result.class_labels == adc_class.value)
        assert not (voxels & union).any()
        union |= voxels
        description = by_class.get_segment_description(number)
        assert description.segment_label.startswith(f"ADC class {adc_class.name.lower()}")
        colour = hd.color.CIELabColor.from_dicom_value(
            description.RecommendedDisplayCIELabValue
        ).to_rgb()
        assert np.abs(np.subtract(colour, ADC_CLASS_RGB[adc_class])).max() <= 2
        assert description.tracking_uid == info.tracking_uid
        assert description.segmented_property_category.value == "49755003"
        assert description.segmented_property_type.value == "14799000"
        assert description.anatomic_regions[0].value == "272673000"
        assert description.algorithm_identification[0].AlgorithmVersion == "9.9"
    np.testing.assert_array_equal(union, result.tumour_mask)
    assert by_class.SeriesDescription == "Tumour load by ADC class (SEG) wbdwi"

    # Lesion SEG: one segment per lesion, labelled with number, region and volume.
    assert by_lesion.number_of_segments == len(result.stats.lesions)
    colours = set()
    for index, lesion in enumerate(result.stats.lesions, start=1):
        info = output.lesions[lesion.label]
        assert info.sop_instance_uid == by_lesion.SOPInstanceUID
        np.testing.assert_array_equal(
            segment(by_lesion, info.number), result.lesion_labels == lesion.label
        )
        description = by_lesion.get_segment_description(info.number)
        region = lesion.region.value.replace("_", " ") if lesion.region.value != "other" else ""
        assert description.segment_label.startswith(f"Lesion {index} - {region}")
        assert description.segment_label.endswith(f", {lesion.volume_ml:.1f} ml")
        rgb = hd.color.CIELabColor.from_dicom_value(
            description.RecommendedDisplayCIELabValue
        ).to_rgb()
        colours.add(tuple(rgb))
        for class_rgb in ADC_CLASS_RGB.values():
            assert np.abs(np.subtract(rgb, class_rgb)).max() > 30
    assert len(colours) == min(len(result.stats.lesions), len(LESION_PALETTE))
    assert output.other is None  # every tumour voxel belongs to a listed lesion


def test_other_foci_get_one_segment(
    ctx: WriterContext, result: ProcessingResult, geometric: DerivedSeries, tmp_path: Path
) -> None:
    """Bounded output: the last lesion unlisted, summed as other foci, is one grey segment."""
    last = result.stats.lesions[-1]
    lesions = np.where(result.lesion_labels == last.label, 0, result.lesion_labels)
    stats = dataclasses.replace(
        result.stats,
        lesions=result.stats.lesions[:-1],
        other_foci_count=1,
        other_foci_ml=last.volume_ml,
    )
    bounded = dataclasses.replace(result, lesion_labels=lesions, stats=stats)
    output = build_segmentation(ctx, bounded, geometric.datasets)
    assert output.other is not None and output.lesion_dataset is not None
    back = hd.seg.Segmentation.from_dataset(_round_trip(output.lesion_dataset, tmp_path))
    assert back.number_of_segments == len(result.stats.lesions)
    description = back.get_segment_description(output.other.number)
    assert description.segment_label == f"Other foci (1), {last.volume_ml:.1f} ml"
    pixels = back.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in geometric.datasets],
        segment_numbers=[output.other.number],
        assert_missing_frames_are_empty=True,
    )
    np.testing.assert_array_equal(pixels[..., 0] > 0, result.lesion_labels == last.label)


def test_segmentation_allows_an_empty_class(
    ctx: WriterContext, result: ProcessingResult, geometric: DerivedSeries, tmp_path: Path
) -> None:
    classes = result.class_labels.copy()
    classes[classes == AdcClass.GREEN.value] = AdcClass.YELLOW.value
    output = build_segmentation(
        ctx, dataclasses.replace(result, class_labels=classes), geometric.datasets
    )
    assert output.classes[AdcClass.GREEN].voxels == 0
    back = hd.seg.Segmentation.from_dataset(_round_trip(output.dataset, tmp_path))
    assert back.number_of_segments == 3  # the green segment keeps its number, without frames


def test_segmentation_refuses_bad_input(
    ctx: WriterContext, result: ProcessingResult, geometric: DerivedSeries
) -> None:
    empty = dataclasses.replace(
        result,
        tumour_mask=np.zeros_like(result.tumour_mask),
        class_labels=np.zeros_like(result.class_labels),
        lesion_labels=np.zeros_like(result.lesion_labels),
    )
    with pytest.raises(EmptySegmentationError, match="tumour mask is empty"):
        build_segmentation(ctx, empty, geometric.datasets)
    with pytest.raises(ResultGeometryError, match="tumour mask has shape"):
        build_segmentation(
            ctx, dataclasses.replace(result, tumour_mask=result.tumour_mask[1:]), geometric.datasets
        )
    stray = result.lesion_labels.copy()
    stray[0, 0, 0] = 1
    with pytest.raises(ResultGeometryError, match="outside the tumour mask"):
        build_segmentation(
            ctx, dataclasses.replace(result, lesion_labels=stray), geometric.datasets
        )
    unclassed = result.class_labels.copy()
    unclassed[result.tumour_mask.nonzero()[0][0], ...] = 0
    with pytest.raises(ResultGeometryError, match="without an ADC class"):
        build_segmentation(
            ctx, dataclasses.replace(result, class_labels=unclassed), geometric.datasets
        )
    stats = dataclasses.replace(result.stats, lesions=result.stats.lesions[:-1])
    with pytest.raises(ResultGeometryError, match="differ from the lesions reported"):
        build_segmentation(ctx, dataclasses.replace(result, stats=stats), geometric.datasets)
    with pytest.raises(ResultGeometryError, match="one source image per slice"):
        build_segmentation(ctx, result, geometric.datasets[1:])


def test_pm_and_segs_are_the_same_objects_when_built_twice(
    ctx: WriterContext, result: ProcessingResult, geometric: DerivedSeries, tmp_path: Path
) -> None:
    """Same input, same bytes: highdicom's random Dimension Organization UID is replaced."""

    def encoded(dataset: pydicom.Dataset, name: str) -> bytes:
        path = tmp_path / name
        dataset.save_as(path, enforce_file_format=True)
        return path.read_bytes()

    first_seg, second_seg = (build_segmentation(ctx, result, geometric.datasets) for _ in "ab")
    first_pm, second_pm = (build_parametric_map(ctx, result, geometric.datasets) for _ in "ab")
    pairs = [
        (first_pm, second_pm),
        (first_seg.dataset, second_seg.dataset),
        (first_seg.lesion_dataset, second_seg.lesion_dataset),
    ]
    uids = set()
    for first, second in pairs:
        assert first is not None and second is not None
        differing = [e.keyword for e in first if e.tag in second and e.value != second[e.tag].value]
        assert differing == [], [(str(first[k].value), str(second[k].value)) for k in differing]
        assert encoded(first, "1.dcm") == encoded(second, "2.dcm")
        [organization] = first.DimensionOrganizationSequence
        assert {item.DimensionOrganizationUID for item in first.DimensionIndexSequence} == {
            organization.DimensionOrganizationUID
        }
        uids.add(organization.DimensionOrganizationUID)
    assert len(uids) == 3  # one per object
