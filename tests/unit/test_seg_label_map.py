"""The SEGs are built from one label map each: the same bytes as from one mask per segment."""

from __future__ import annotations

import dataclasses
import io
from datetime import datetime
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest

import dicom_node.writers.seg as seg_module
from dicom_node.writers import (
    DerivedSeries,
    ResultGeometryError,
    WriterContext,
    WriterIdentity,
    build_computed_b_series,
    build_segmentation,
)
from processing.results import ProcessingResult
from tests.helpers.writer_fixtures import SyntheticExam


@pytest.fixture(scope="module")
def fixed_ctx(synthetic: SyntheticExam) -> WriterContext:
    identity = WriterIdentity(software_version="9.9", device_serial_number="SN")
    return WriterContext.create(
        synthetic.exam,
        identity,
        "d",
        computed_b_values=[1000.0],
        content_datetime=datetime(2026, 12, 3, 12, 0, 0, 123456),
    )


@pytest.fixture(scope="module")
def geometric(fixed_ctx: WriterContext, result: ProcessingResult) -> DerivedSeries:
    return build_computed_b_series(fixed_ctx, result.computed[0], result.body_mask)


def _part10(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _bounded(result: ProcessingResult) -> ProcessingResult:
    """The last lesion unlisted, summed as other foci: a lesion SEG with an "Other foci" segment."""
    last = result.stats.lesions[-1]
    stats = dataclasses.replace(
        result.stats, lesions=result.stats.lesions[:-1], other_foci_count=1, other_foci_ml=0.0
    )
    lesions = np.where(result.lesion_labels == last.label, 0, result.lesion_labels)
    return dataclasses.replace(result, lesion_labels=lesions, stats=stats)


@pytest.mark.parametrize("bounded", [False, True], ids=["lesions", "with-other-foci"])
def test_label_maps_give_the_bytes_of_one_mask_per_segment(
    fixed_ctx: WriterContext,
    result: ProcessingResult,
    geometric: DerivedSeries,
    monkeypatch: pytest.MonkeyPatch,
    bounded: bool,
) -> None:
    exam_result = _bounded(result) if bounded else result
    stacks: list[np.ndarray] = []
    real = hd.seg.Segmentation

    def from_masks(*, pixel_array: np.ndarray, **kwargs: Any) -> hd.seg.Segmentation:
        """highdicom given one boolean mask per described segment, as the writer did before."""
        numbers = [d.segment_number for d in kwargs["segment_descriptions"]]
        stack = np.stack([pixel_array == number for number in numbers], axis=-1)
        stacks.append(stack)
        return real(pixel_array=stack, **kwargs)

    ours = build_segmentation(fixed_ctx, exam_result, geometric.datasets)
    with monkeypatch.context() as patch:
        patch.setattr(seg_module.hd.seg, "Segmentation", from_masks)
        masks = build_segmentation(fixed_ctx, exam_result, geometric.datasets)
    assert ours.lesion_dataset is not None and masks.lesion_dataset is not None
    assert (ours.other is not None) is bounded
    assert _part10(ours.dataset) == _part10(masks.dataset)
    assert _part10(ours.lesion_dataset) == _part10(masks.lesion_dataset)

    # the masks were the findings' voxels, and the counts are theirs
    class_stack, lesion_stack = stacks
    occupied = np.flatnonzero(exam_result.tumour_mask.any(axis=(1, 2)))
    sub = slice(int(occupied[0]), int(occupied[-1]) + 1)
    for adc_class, info in ours.classes.items():
        voxels = exam_result.class_labels == adc_class.value
        np.testing.assert_array_equal(class_stack[..., info.number - 1], voxels[sub])
        assert info.voxels == int(voxels.sum())
    for label, info in ours.lesions.items():
        voxels = exam_result.lesion_labels == label
        np.testing.assert_array_equal(lesion_stack[..., info.number - 1], voxels[sub])
        assert info.voxels == int(voxels.sum())
    if ours.other is not None:
        rest = exam_result.tumour_mask & (exam_result.lesion_labels == 0)
        np.testing.assert_array_equal(lesion_stack[..., ours.other.number - 1], rest[sub])
        assert ours.other.voxels == int(rest.sum()) > 0
    assert ours.total.voxels == int(exam_result.tumour_mask.sum())


def test_label_map_widens_beyond_255_segments(fixed_ctx: WriterContext) -> None:
    algorithm = hd.AlgorithmIdentificationSequence(
        name="a", family=pydicom.sr.codedict.codes.DCM.HistogramAnalysis, version="1"
    )
    builder = seg_module._SegmentBuilder(fixed_ctx, "seg-lesions", algorithm, slice(1, 3))
    numbers = np.arange(4 * 2 * 2, dtype=np.int32).reshape(4, 2, 2)
    inside = numbers % 2 == 1
    for count in range(300):
        builder.add(f"s{count}", f"s{count}", 1, (0, 0, 0), None)
        if count == 254:
            lookup = np.arange(16) * 10
            small = builder.label_map(numbers, lookup, inside=inside)
            assert small.dtype == np.uint8
            np.testing.assert_array_equal(small, np.where(inside, numbers * 10, 0)[1:3])
    lookup = np.arange(16) + 290
    wide = builder.label_map(numbers, lookup)
    assert wide.dtype == np.uint16
    np.testing.assert_array_equal(wide, (numbers + 290)[1:3])


def test_lesion_labels_must_be_positive(
    fixed_ctx: WriterContext, result: ProcessingResult, geometric: DerivedSeries
) -> None:
    first = result.stats.lesions[0]
    lesions = np.where(result.lesion_labels == first.label, -1, result.lesion_labels)
    stats = dataclasses.replace(
        result.stats,
        lesions=(dataclasses.replace(first, label=-1), *result.stats.lesions[1:]),
    )
    wrong = dataclasses.replace(result, lesion_labels=lesions, stats=stats)
    with pytest.raises(ResultGeometryError, match="lesion labels must be positive"):
        build_segmentation(fixed_ctx, wrong, geometric.datasets)
