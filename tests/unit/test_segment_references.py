"""SR segment references from one pass over the SEG's frames equal highdicom's per-segment walk."""

from __future__ import annotations

import copy

import highdicom as hd
import pytest

from dicom_node.writers import (
    WriterContext,
    WriterIdentity,
    build_computed_b_series,
    build_segmentation,
)
from dicom_node.writers.errors import WriterError
from dicom_node.writers.segment_references import SegmentReferences
from tests.helpers.writer_fixtures import make_result, write_synthetic_exam


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory: pytest.TempPathFactory) -> object:
    synthetic = write_synthetic_exam(tmp_path_factory.mktemp("exam"))
    identity = WriterIdentity(software_version="9.9", device_serial_number="SN-42")
    ctx = WriterContext.create(synthetic.exam, identity, "d", computed_b_values=[1000.0])
    result = make_result(synthetic)
    geometric = build_computed_b_series(ctx, result.computed[0], result.body_mask).datasets
    return build_segmentation(ctx, result, geometric)


def test_every_segment_reference_equals_highdicoms(segmentation: object) -> None:
    references = SegmentReferences()
    compared = 0
    for seg in segmentation.datasets():  # type: ignore[attr-defined]
        numbers = sorted({int(s.SegmentNumber) for s in seg.SegmentSequence})
        assert numbers
        for number in numbers:
            ours = references.reference(seg, number)
            theirs = hd.sr.ReferencedSegment.from_segmentation(seg, number)
            assert ours == theirs, f"segment {number} of {seg.SeriesDescription}"
            assert len(ours) == len(theirs)
            assert [item.to_json() for item in ours] == [item.to_json() for item in theirs]
            compared += 1
    assert compared >= 3


def test_a_segment_without_frames_is_refused(segmentation: object) -> None:
    seg = segmentation.dataset  # type: ignore[attr-defined]
    with pytest.raises(WriterError, match="no frame of segment 999"):
        SegmentReferences().reference(seg, 999)


def test_a_seg_naming_its_one_segment_in_the_shared_groups(segmentation: object) -> None:
    # highdicom writes a SEG of one segment with the Segment Identification Sequence in the
    # shared functional groups; from_segmentation then failed (AttributeError) and so did
    # writing an exam with one lesion.
    seg = copy.deepcopy(segmentation.dataset)  # type: ignore[attr-defined]
    identification = seg.PerFrameFunctionalGroupsSequence[0].SegmentIdentificationSequence
    sources = set()
    for frame in seg.PerFrameFunctionalGroupsSequence:
        del frame.SegmentIdentificationSequence
        for derivation in frame.DerivationImageSequence:
            sources |= {s.ReferencedSOPInstanceUID for s in derivation.SourceImageSequence}
    identification[0].ReferencedSegmentNumber = 1
    seg.SharedFunctionalGroupsSequence[0].SegmentIdentificationSequence = identification
    with pytest.raises(AttributeError):
        hd.sr.ReferencedSegment.from_segmentation(seg, 1)
    reference = SegmentReferences().reference(seg, 1)
    named = {item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for item in reference[1:]}
    assert named == sources
