"""A reader's SEG read back onto the exam grid: types, segment order, sparse frames, references."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from dicom_node.errors import (
    DicomNodeError,
    SegmentationGeometryError,
    SegmentationReadError,
    SegmentationReferenceError,
)
from dicom_node.readers.seg_reader import read_corrected_mask, read_segmentation
from dicom_node.writers import (
    DerivedSeries,
    WriterContext,
    build_computed_b_series,
    build_segmentation,
)
from processing.results import ProcessingResult
from tests.helpers.writer_fixtures import SyntheticExam


@pytest.fixture(scope="module")
def geometric(ctx: WriterContext, result: ProcessingResult) -> DerivedSeries:
    return build_computed_b_series(ctx, result.computed[0], result.body_mask)


def _description(number: int, label: str) -> hd.seg.SegmentDescription:
    return hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.NeoplasmSecondary,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )


def _reader_seg(
    sources: Sequence[Dataset],
    masks: Sequence[NDArray[np.bool_]],
    *,
    kind: str = "BINARY",
    reader: str = "Reader^Rita",
) -> hd.seg.Segmentation:
    """A SEG as a viewer writes it: segments numbered 1..n over the given masks."""
    stack = np.stack(masks, axis=-1)
    pixels: NDArray[np.generic] = stack.astype(np.uint8)
    if kind == "FRACTIONAL":
        pixels = (stack * 200).astype(np.float32) / 255.0  # 200/255 >= 0.5
    if kind == "LABELMAP":
        pixels = np.zeros(stack.shape[:-1], dtype=np.uint8)
        for number in range(stack.shape[-1]):
            pixels[stack[..., number]] = number + 1
    return hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=pixels,
        segmentation_type=kind,
        segment_descriptions=[_description(i + 1, f"lesion {i + 1}") for i in range(len(masks))],
        series_instance_uid=generate_uid(),
        series_number=300,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Reading Room",
        manufacturer_model_name="Viewer",
        software_versions="1",
        device_serial_number="1",
        content_creator_name=reader,
    )


def _lesion(result: ProcessingResult, label: int) -> NDArray[np.bool_]:
    return np.asarray(result.lesion_labels == label)


def test_binary_seg_of_two_segments_is_their_union(
    synthetic: SyntheticExam, result: ProcessingResult, geometric: DerivedSeries, tmp_path: Path
) -> None:
    first, second = _lesion(result, 1), _lesion(result, 2)
    seg = _reader_seg(geometric.datasets, [first, second])
    path = tmp_path / "seg.dcm"
    seg.save_as(path)
    read = read_corrected_mask(path, synthetic.exam)
    np.testing.assert_array_equal(read.mask, first | second)
    assert read.content_creator == "Reader^Rita"
    assert read.sop_instance_uid == seg.SOPInstanceUID
    assert read.segmentation_type == "BINARY"
    assert read.segment_labels == ("lesion 1", "lesion 2")


@pytest.mark.parametrize("kind", ["FRACTIONAL", "LABELMAP"])
def test_fractional_and_labelmap_seg(
    kind: str, synthetic: SyntheticExam, result: ProcessingResult, geometric: DerivedSeries
) -> None:
    first, third = _lesion(result, 1), _lesion(result, 3)
    seg = _reader_seg(geometric.datasets, [first, third], kind=kind)
    read = read_corrected_mask(seg, synthetic.exam)
    assert read.segmentation_type == kind
    np.testing.assert_array_equal(read.mask, first | third)


def test_fraction_below_one_half_is_not_tumour(
    synthetic: SyntheticExam, result: ProcessingResult, geometric: DerivedSeries
) -> None:
    seg = _reader_seg(geometric.datasets, [_lesion(result, 1)], kind="FRACTIONAL")
    faint = hd.seg.Segmentation(
        source_images=list(geometric.datasets),
        pixel_array=_lesion(result, 1).astype(np.float32) * 0.4,
        segmentation_type="FRACTIONAL",
        segment_descriptions=[_description(1, "faint")],
        series_instance_uid=generate_uid(),
        series_number=301,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Reading Room",
        manufacturer_model_name="Viewer",
        software_versions="1",
        device_serial_number="1",
    )
    assert read_corrected_mask(seg, synthetic.exam).mask.any()
    assert not read_corrected_mask(faint, synthetic.exam).mask.any()


def test_reordered_segments_and_frames_give_the_same_mask(
    ctx: WriterContext,
    synthetic: SyntheticExam,
    result: ProcessingResult,
    geometric: DerivedSeries,
) -> None:
    """The node's own SEG (total load, classes, lesions) with segments and frames reversed."""
    own = build_segmentation(ctx, result, geometric.datasets).dataset
    reordered = read_segmentation(own)
    order = list(range(len(reordered.PerFrameFunctionalGroupsSequence)))[::-1]
    frames = np.asarray(own.pixel_array)[order]
    reordered.PerFrameFunctionalGroupsSequence = [
        own.PerFrameFunctionalGroupsSequence[i] for i in order
    ]
    reordered.SegmentSequence = list(own.SegmentSequence)[::-1]
    packed = np.packbits(frames.reshape(-1), bitorder="little").tobytes()
    reordered.PixelData = packed + b"\0" * (len(packed) % 2)
    read = read_corrected_mask(reordered, synthetic.exam)
    np.testing.assert_array_equal(read.mask, result.tumour_mask)
    assert read.segment_labels[-1] == own.SegmentSequence[0].SegmentLabel


def test_sparse_frames_are_placed_by_position(
    synthetic: SyntheticExam, result: ProcessingResult, geometric: DerivedSeries
) -> None:
    """A lesion on a few slices only: empty frames are omitted, the others land on their slice."""
    lesion = _lesion(result, 2)
    seg = _reader_seg(geometric.datasets, [lesion])
    assert int(seg.NumberOfFrames) == int(lesion.any(axis=(1, 2)).sum())
    assert int(seg.NumberOfFrames) < synthetic.exam.shape[1]
    np.testing.assert_array_equal(read_corrected_mask(seg, synthetic.exam).mask, lesion)


def test_a_seg_of_another_study_is_refused(
    synthetic: SyntheticExam, result: ProcessingResult, geometric: DerivedSeries
) -> None:
    seg = _reader_seg(geometric.datasets, [_lesion(result, 1)])
    other = dataclasses.replace(synthetic.exam, study_instance_uid="1.2.826.0.1.99")
    with pytest.raises(SegmentationReferenceError, match="belongs to study"):
        read_corrected_mask(seg, other)


def test_a_seg_of_another_frame_of_reference_and_series_is_refused(
    synthetic: SyntheticExam, result: ProcessingResult, geometric: DerivedSeries
) -> None:
    seg = _reader_seg(geometric.datasets, [_lesion(result, 1)])
    other = dataclasses.replace(
        synthetic.exam, frame_of_reference_uid="1.2.826.0.1.98", sources=(), series_used=()
    )
    with pytest.raises(SegmentationReferenceError, match="frame of reference"):
        read_corrected_mask(seg, other)
    # the computed-b series the reader drew on is one of the node's result series
    read = read_corrected_mask(
        seg, other, known_series_uids={geometric.datasets[0].SeriesInstanceUID}
    )
    np.testing.assert_array_equal(read.mask, _lesion(result, 1))


def test_a_frame_between_slices_is_refused(
    synthetic: SyntheticExam, result: ProcessingResult, geometric: DerivedSeries
) -> None:
    seg = _reader_seg(geometric.datasets, [_lesion(result, 1)])
    position = seg.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    z = float(position.ImagePositionPatient[2])
    position.ImagePositionPatient[2] = z + synthetic.exam.spacing_mm[0] / 2
    with pytest.raises(SegmentationGeometryError, match="between voxels"):
        read_corrected_mask(seg, synthetic.exam)


def test_not_a_segmentation_is_a_read_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.dcm"
    path.write_bytes(b"not dicom at all")
    with pytest.raises(SegmentationReadError, match="cannot be read"):
        read_segmentation(path)
    assert issubclass(SegmentationReadError, DicomNodeError)
