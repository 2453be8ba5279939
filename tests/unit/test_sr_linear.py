"""The report's per-finding work does not walk the whole grid or rebuild shared items."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dicom_node.writers import (
    WriterContext,
    build_computed_b_series,
    build_segmentation,
)
from dicom_node.writers.segment_references import SegmentReferences
from dicom_node.writers.sr import _box_of, _Spot
from processing.results import ProcessingResult


def test_the_spot_of_a_label_in_its_box_is_its_spot_on_the_whole_grid() -> None:
    rng = np.random.default_rng(7)
    # many small blobs with ties in slice areas and distances, touching the grid's edges
    labels, count = ndimage.label(rng.random((12, 40, 50)) > 0.8)
    assert count > 100
    boxes = ndimage.find_objects(labels)
    for label in range(1, count + 1):
        assert _Spot.of_label(labels, boxes, label) == _Spot.inside(labels == label)
    assert _Spot.of_label(labels, boxes, count + 1) is None  # no such label
    assert _Spot.of_label(labels, boxes, 0) is None


def test_a_box_keeps_the_first_of_equal_slices_and_distances() -> None:
    labels = np.zeros((6, 9, 9), dtype=np.int32)
    labels[2, 3:5, 3:5] = 4  # two slices of equal area: the first wins
    labels[4, 1:3, 6:8] = 4
    whole = _Spot.inside(labels == 4)
    assert whole == _Spot(2, 3, 3)  # four pixels equally near the centroid: the first
    assert _Spot.of_label(labels, ndimage.find_objects(labels), 4) == whole


def test_segments_citing_one_image_share_its_item(
    ctx: WriterContext, result: ProcessingResult
) -> None:
    geometric = build_computed_b_series(ctx, result.computed[0], result.body_mask).datasets
    output = build_segmentation(ctx, result, geometric)
    references = SegmentReferences()
    items: dict[str, list[object]] = {}
    assert output.lesion_dataset is not None
    cited_segments = [
        *((output.dataset, info) for info in output.classes.values()),
        *((output.lesion_dataset, info) for info in output.lesions.values()),
    ]
    for seg, info in cited_segments:
        if info.voxels:
            for item in references.reference(seg, info.number)[1:]:
                uid = item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                items.setdefault(uid, []).append(item)
    again = references.reference(output.dataset, 1)[1:]
    shared = [cited for cited in items.values() if len(cited) > 1]
    assert shared  # a lesion and its class cite its slices
    for cited in shared:
        assert all(item is cited[0] for item in cited)
    assert all(
        item is items[item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID][0] for item in again
    )


def test_spots_in_the_tumour_box_are_the_spots_on_the_whole_grid() -> None:
    rng = np.random.default_rng(11)
    grid = np.zeros((10, 30, 40), dtype=bool)
    grid[3:8, 5:20, 12:33] = rng.random((5, 15, 21)) > 0.6
    box = _box_of(grid)
    assert box == (slice(3, 8), slice(5, 20), slice(12, 33))
    origin = (3, 5, 12)
    assert _Spot.inside(grid[box], origin) == _Spot.inside(grid)
    some = grid & (rng.random(grid.shape) > 0.5)
    assert _Spot.inside(some[box], origin) == _Spot.inside(some)
    empty = np.zeros((2, 3, 4), dtype=bool)
    assert _box_of(empty) == (slice(0, 2), slice(0, 3), slice(0, 4))
