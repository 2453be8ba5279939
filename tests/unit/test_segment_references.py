"""SR segment references from one pass over the SEG's frames equal highdicom's per-segment walk."""

from __future__ import annotations

import highdicom as hd
import pytest

from dicom_node.writers import (
    WriterContext,
    WriterIdentity,
    build_computed_b_series,
    build_segmentation,
)
from dicom_node.writers.segment_references import SegmentReferences
from tests.writer_fixtures import make_result, write_synthetic_exam


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


def test_a_segment_without_frames_is_refused_as_highdicom_refuses_it(segmentation: object) -> None:
    seg = segmentation.dataset  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="No frame information"):
        SegmentReferences().reference(seg, 999)
