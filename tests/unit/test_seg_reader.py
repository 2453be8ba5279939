"""A reader's SEG read back onto the exam grid: types, segment order, sparse frames, references.

Besides highdicom's SEGs, the structure OHIF 3.13 stores (dcmjs's writer:
Label Map, RLE Lossless, per-frame groups without Frame Content Sequence,
frames known by position or source image), built here from the phantom
with :func:`tests.helpers.correction_fixtures.as_ohif_writes_it`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import RLELossless, generate_uid

from dicom_node.errors import (
    DicomNodeError,
    SegmentationGeometryError,
    SegmentationReadError,
    SegmentationReferenceError,
)
from dicom_node.readers.seg_reader import (
    frames_without_position,
    read_corrected_mask,
    read_segmentation,
)
from dicom_node.writers import (
    DerivedSeries,
    WriterContext,
    build_computed_b_series,
    build_segmentation,
)
from processing.results import ProcessingResult
from service.corrections import read_correction
from tests.helpers.correction_fixtures import as_ohif_writes_it
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
    # highdicom describes a label map's background as segment 0: not tumour, not listed
    assert read.segment_labels == ("lesion 1", "lesion 2")


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


# --- SEGs as OHIF 3.13 stores them (dcmjs): no Frame Content Sequence ---


def _all_lesions(result: ProcessingResult) -> NDArray[np.bool_]:
    return np.asarray(result.lesion_labels > 0)


def test_ohif_label_map_without_frame_content_is_read(
    synthetic: SyntheticExam, result: ProcessingResult, geometric: DerivedSeries, tmp_path: Path
) -> None:
    """OHIF's structure: RLE Label Map, sparse frames, segments reversed, renumbered with a gap."""
    lesions = [_lesion(result, label) for label in (1, 2, 3)]
    seg = _reader_seg(geometric.datasets, lesions, kind="LABELMAP")
    ohif = as_ohif_writes_it(seg, renumber={2: 5, 3: 8})
    assert ohif.file_meta.TransferSyntaxUID == RLELossless
    assert [int(item.SegmentNumber) for item in ohif.SegmentSequence] == [8, 5, 1]
    assert "DimensionIndexSequence" in ohif
    assert all("FrameContentSequence" not in i for i in ohif.PerFrameFunctionalGroupsSequence)
    union = _all_lesions(result)
    assert int(ohif.NumberOfFrames) == int(union.any(axis=(1, 2)).sum()) < synthetic.exam.shape[1]
    with pytest.raises(AttributeError, match="FrameContentSequence"):
        hd.seg.Segmentation.from_dataset(ohif)  # why the node reads these frames itself
    path = tmp_path / "ohif.dcm"
    ohif.save_as(path)
    read = read_corrected_mask(path, synthetic.exam)
    np.testing.assert_array_equal(read.mask, union)
    assert read.segmentation_type == "LABELMAP"
    assert read.segment_labels == ("lesion 3", "lesion 2", "lesion 1")
    assert read.sop_instance_uid == seg.SOPInstanceUID


@pytest.mark.parametrize("kind", ["BINARY", "FRACTIONAL"])
def test_binary_and_fractional_without_frame_content_are_read(
    kind: str, synthetic: SyntheticExam, result: ProcessingResult, geometric: DerivedSeries
) -> None:
    first, third = _lesion(result, 1), _lesion(result, 3)
    seg = _reader_seg(geometric.datasets, [first, third], kind=kind)
    ohif = as_ohif_writes_it(seg, renumber={1: 4}, rle=kind == "FRACTIONAL")
    assert "FrameContentSequence" not in ohif.PerFrameFunctionalGroupsSequence[0]
    read = read_corrected_mask(ohif, synthetic.exam)
    np.testing.assert_array_equal(read.mask, first | third)
    assert read.segmentation_type == kind
    assert read.segment_labels == ("lesion 2", "lesion 1")


def test_frames_without_position_are_placed_on_the_node_image_they_derive_from(
    synthetic: SyntheticExam, result: ProcessingResult, geometric: DerivedSeries, tmp_path: Path
) -> None:
    """Drawn on the computed-b series: its images' positions come from the node's results."""
    lesion = _lesion(result, 2)
    ohif = as_ohif_writes_it(
        _reader_seg(geometric.datasets, [lesion], kind="LABELMAP"), positions=False
    )
    assert frames_without_position(ohif) == int(ohif.NumberOfFrames) > 0
    with pytest.raises(
        SegmentationGeometryError,
        match=r"frame 1 has no Plane Position \(Patient\) and its source images .* are none of "
        "the exam's or the node's; it cannot be placed",
    ):
        read_corrected_mask(ohif, synthetic.exam)
    positions = {str(ds.SOPInstanceUID): ds.ImagePositionPatient for ds in geometric.datasets}
    read = read_corrected_mask(ohif, synthetic.exam, image_positions=positions)
    np.testing.assert_array_equal(read.mask, lesion)
    # the node: the positions are read from the automatic run's results folder
    (tmp_path / "b1000").mkdir()
    for dataset in geometric.datasets:
        dataset.save_as(
            tmp_path / "b1000" / f"{dataset.SOPInstanceUID}.dcm", enforce_file_format=True
        )
    path = tmp_path / "ohif.dcm"
    ohif.save_as(path)
    prepared = read_correction(path, synthetic.exam, tmp_path)
    np.testing.assert_array_equal(prepared.mask.mask, lesion)


def _station_images(synthetic: SyntheticExam, series: int) -> list[Dataset]:
    """The exam's source images of one station series at the lowest b-value, in slice order."""
    exam = synthetic.exam
    refs = sorted(
        (
            ref
            for ref in exam.sources
            if ref.series_instance_uid == exam.series_used[series]
            and ref.b_value == exam.b_values[0]
        ),
        key=lambda ref: ref.slice_index,
    )
    return [pydicom.dcmread(ref.path) for ref in refs]


def test_frames_without_position_are_placed_on_the_exam_source_image_they_derive_from(
    synthetic: SyntheticExam, result: ProcessingResult
) -> None:
    """Drawn on the second station's series: its slices are known from the exam's sources."""
    images = _station_images(synthetic, 1)
    slices = sorted(
        ref.slice_index
        for ref in synthetic.exam.sources
        if str(ref.sop_instance_uid) in {str(ds.SOPInstanceUID) for ds in images}
    )
    assert slices == list(range(slices[0], slices[0] + len(images)))
    union = _all_lesions(result)
    drawn = np.zeros_like(union)
    drawn[slices[0] : slices[-1] + 1] = union[slices[0] : slices[-1] + 1]
    assert drawn.any()
    seg = _reader_seg(images, [drawn[slices[0] : slices[-1] + 1]], kind="LABELMAP")
    ohif = as_ohif_writes_it(seg, positions=False)
    read = read_corrected_mask(ohif, synthetic.exam)
    np.testing.assert_array_equal(read.mask, drawn)
    # a source image blended into two slices of the grid (a resampled station) cannot place it
    first = next(
        ref for ref in synthetic.exam.sources if ref.sop_instance_uid == images[0].SOPInstanceUID
    )
    blended = dataclasses.replace(first, slice_index=first.slice_index - 1)
    twice = dataclasses.replace(synthetic.exam, sources=(*synthetic.exam.sources, blended))
    dropped = as_ohif_writes_it(
        _reader_seg(images, [np.ones_like(drawn[slices[0] : slices[-1] + 1])], kind="LABELMAP"),
        positions=False,
    )
    with pytest.raises(SegmentationGeometryError, match=r"contributes to slices \[7, 8\]"):
        read_corrected_mask(dropped, twice)


# --- SEGs the node refuses, each with what is wrong ---


def _ohif(result: ProcessingResult, geometric: DerivedSeries, **options: bool) -> Dataset:
    seg = _reader_seg(geometric.datasets, [_lesion(result, 1), _lesion(result, 2)], kind="LABELMAP")
    return as_ohif_writes_it(seg, **options)


def test_another_orientation_is_refused(
    synthetic: SyntheticExam, result: ProcessingResult, geometric: DerivedSeries
) -> None:
    ohif = _ohif(result, geometric)
    last = len(ohif.PerFrameFunctionalGroupsSequence)
    item = ohif.PerFrameFunctionalGroupsSequence[-1].PlaneOrientationSequence[0]
    item.ImageOrientationPatient = [0, 1, 0, 1, 0, 0]
    with pytest.raises(
        SegmentationGeometryError,
        match=rf"frame {last}: orientation \[0.0, 1.0, 0.0, 1.0, 0.0, 0.0\] differs from the "
        r"exam's \[1.0, 0.0, 0.0, 0.0, 1.0, 0.0\]",
    ):
        read_corrected_mask(ohif, synthetic.exam)


def test_another_pixel_spacing_is_refused(
    synthetic: SyntheticExam, result: ProcessingResult, geometric: DerivedSeries
) -> None:
    ohif = _ohif(result, geometric)
    ohif.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PixelSpacing = [3.3, 3.3]
    with pytest.raises(
        SegmentationGeometryError,
        match=r"frame 1: pixel spacing \(3.3, 3.3\) mm differs from the exam's \(4, 4\) mm",
    ):
        read_corrected_mask(ohif, synthetic.exam)


@pytest.mark.parametrize(("fraction", "accepted"), [(0.05, True), (0.3, False)])
def test_a_frame_off_the_grid_is_refused_beyond_a_tenth_of_a_slice(
    fraction: float,
    accepted: bool,
    synthetic: SyntheticExam,
    result: ProcessingResult,
    geometric: DerivedSeries,
) -> None:
    ohif = _ohif(result, geometric)
    position = ohif.PerFrameFunctionalGroupsSequence[1].PlanePositionSequence[0]
    shift = fraction * synthetic.exam.spacing_mm[0]
    position.ImagePositionPatient = [
        *position.ImagePositionPatient[:2],
        position.ImagePositionPatient[2] + shift,
    ]
    if accepted:
        read = read_corrected_mask(ohif, synthetic.exam)
        np.testing.assert_array_equal(read.mask, _lesion(result, 1) | _lesion(result, 2))
        return
    with pytest.raises(
        SegmentationGeometryError,
        match=r"frame 2 at .* mm lies between voxels of the exam grid .*1.50 mm off slice \d+, "
        r"tolerance 0.1 of a slice \(0.5 mm\)",
    ):
        read_corrected_mask(ohif, synthetic.exam)


def test_a_frame_with_neither_position_nor_source_image_is_refused(
    synthetic: SyntheticExam, result: ProcessingResult, geometric: DerivedSeries
) -> None:
    ohif = _ohif(result, geometric, positions=False)
    for item in ohif.PerFrameFunctionalGroupsSequence:
        del item.DerivationImageSequence
    with pytest.raises(
        SegmentationGeometryError,
        match=r"frame 1 has no Plane Position \(Patient\) and no source image \(Derivation "
        r"Image Sequence\); it cannot be placed",
    ):
        read_corrected_mask(ohif, synthetic.exam)


def test_a_label_naming_no_segment_is_refused(
    synthetic: SyntheticExam, result: ProcessingResult, geometric: DerivedSeries
) -> None:
    ohif = _ohif(result, geometric)
    ohif.SegmentSequence = [item for item in ohif.SegmentSequence if item.SegmentNumber != 2]
    with pytest.raises(
        SegmentationReadError,
        match=r"label map values \[2\] name no segment of the Segment Sequence \(segments \[1\]\)",
    ):
        read_corrected_mask(ohif, synthetic.exam)


def test_a_binary_frame_of_an_undescribed_segment_is_refused(
    synthetic: SyntheticExam, result: ProcessingResult, geometric: DerivedSeries
) -> None:
    seg = _reader_seg(geometric.datasets, [_lesion(result, 1), _lesion(result, 2)])
    ohif = as_ohif_writes_it(seg, rle=False)
    ohif.PerFrameFunctionalGroupsSequence[0].SegmentIdentificationSequence[
        0
    ].ReferencedSegmentNumber = 9
    with pytest.raises(
        SegmentationReadError,
        match=r"frame 1 belongs to segment 9, which the Segment Sequence does not describe",
    ):
        read_corrected_mask(ohif, synthetic.exam)


def test_a_segment_without_number_is_refused(
    synthetic: SyntheticExam, result: ProcessingResult, geometric: DerivedSeries
) -> None:
    ohif = _ohif(result, geometric)
    del ohif.SegmentSequence[1].SegmentNumber
    with pytest.raises(
        SegmentationReadError, match="item 2 of the Segment Sequence has no Segment Number"
    ):
        read_corrected_mask(ohif, synthetic.exam)


def test_a_dataset_that_is_not_a_segmentation_is_refused(geometric: DerivedSeries) -> None:
    with pytest.raises(SegmentationReadError, match="is not Segmentation or Label Map"):
        read_segmentation(geometric.datasets[0])
