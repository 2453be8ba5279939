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
from processing.results import AdcClass, ProcessingResult
from tests.writer_fixtures import SyntheticExam


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
    referenced = {item.ReferencedSOPInstanceUID for item in back.SourceImageSequence}
    assert {ref.sop_instance_uid for ref in synthetic.exam.sources} <= referenced
    assert {ds.SOPInstanceUID for ds in geometric.datasets} <= referenced


def test_parametric_map_needs_one_source_per_slice(
    ctx: WriterContext, result: ProcessingResult, geometric: DerivedSeries
) -> None:
    with pytest.raises(ResultGeometryError, match="one source image per slice"):
        build_parametric_map(ctx, result, geometric.datasets[:-1])


def test_segmentation_segments_equal_the_masks(
    ctx: WriterContext, result: ProcessingResult, geometric: DerivedSeries, tmp_path: Path
) -> None:
    output = build_segmentation(ctx, result, geometric.datasets)
    back = hd.seg.Segmentation.from_dataset(_round_trip(output.dataset, tmp_path))
    assert back.SegmentationType == "BINARY"
    assert output.dataset.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    sources = [ds.SOPInstanceUID for ds in geometric.datasets]
    lesion_labels = [lesion.label for lesion in result.stats.lesions]
    assert back.number_of_segments == 4 + len(lesion_labels)

    def segment(number: int) -> np.ndarray:
        pixels = back.get_pixels_by_source_instance(
            sources, segment_numbers=[number], assert_missing_frames_are_empty=True
        )
        return pixels[..., 0] > 0

    np.testing.assert_array_equal(segment(output.total.number), result.tumour_mask)
    for adc_class, info in output.classes.items():
        np.testing.assert_array_equal(segment(info.number), result.class_labels == adc_class.value)
    for label, info in output.lesions.items():
        np.testing.assert_array_equal(segment(info.number), result.lesion_labels == label)
    # empty frames are omitted: fewer frames than slices x segments
    assert back.NumberOfFrames < ctx.grid.slices * back.number_of_segments
    description = back.get_segment_description(1)
    assert description.segmented_property_category.value == "49755003"
    assert description.segmented_property_type.value == "14799000"
    assert description.anatomic_regions[0].value == "272673000"
    assert description.algorithm_identification[0].AlgorithmVersion == "9.9"
    assert description.tracking_uid == output.total.tracking_uid
    red = back.get_segment_description(output.classes[AdcClass.RED].number)
    colour = hd.color.CIELabColor.from_dicom_value(red.RecommendedDisplayCIELabValue)
    assert colour.to_rgb()[0] > 200  # red stays red


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
    assert back.number_of_segments == 4 + len(result.stats.lesions)


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
    stats = dataclasses.replace(result.stats, lesions=result.stats.lesions[:-1])
    with pytest.raises(ResultGeometryError, match="differ from the lesions reported"):
        build_segmentation(ctx, dataclasses.replace(result, stats=stats), geometric.datasets)
    with pytest.raises(ResultGeometryError, match="one source image per slice"):
        build_segmentation(ctx, result, geometric.datasets[1:])
