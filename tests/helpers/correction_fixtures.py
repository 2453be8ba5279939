"""A reader's correction as a viewer writes it: the node's mask edited, saved as a highdicom SEG.

Shared by the offline (``tests/e2e/test_process_mask.py``) and the node
(``tests/integration/test_node_correction.py``) round trips, and by the SEG
reader's tests (:func:`as_ohif_writes_it`: a SEG in the structure OHIF 3.13's
dcmjs writer stores).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from io import BytesIO
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import RLELossless, generate_uid
from scipy import ndimage

from processing.exam import DwiExam
from processing.settings import ProcessingSettings

__all__ = ["as_ohif_writes_it", "edit_tumour_mask", "slice_ordered_images", "write_reader_seg"]

_STRUCTURE = ndimage.generate_binary_structure(3, ProcessingSettings().lesion_connectivity)


def edit_tumour_mask(
    tumour: NDArray[np.bool_], inside: NDArray[np.bool_]
) -> tuple[NDArray[np.bool_], int]:
    """Remove the largest lesion, add a 2x3x3 block inside ``inside`` and away from disease.

    Returns the edited mask and the number of voxels removed.
    """
    labels, count = ndimage.label(tumour, structure=_STRUCTURE)
    assert count >= 2, "the phantom exam should show at least two lesions"
    sizes = np.bincount(labels.ravel())[1:]
    largest = labels == int(np.argmax(sizes)) + 1
    edited = tumour & ~largest
    candidates = np.argwhere(inside & ~ndimage.binary_dilation(tumour, iterations=4))
    z, y, x = (int(v) for v in candidates[len(candidates) // 2])
    edited[z : z + 2, y : y + 3, x : x + 3] = True
    return edited, int(largest.sum())


def slice_ordered_images(folder: Path, exam: DwiExam) -> list[pydicom.Dataset]:
    """The images of a result series (one per slice), in the exam's slice order."""
    inverse = np.linalg.inv(np.asarray(exam.affine, dtype=np.float64)[:3, :3])
    origin = np.asarray(exam.affine, dtype=np.float64)[:3, 3]

    def slice_index(dataset: pydicom.Dataset) -> float:
        position = np.asarray([float(v) for v in dataset.ImagePositionPatient])
        return float((inverse @ (position - origin))[0])

    images: list[pydicom.Dataset] = sorted(
        (pydicom.dcmread(path) for path in folder.glob("*.dcm")), key=slice_index
    )
    assert [round(slice_index(ds)) for ds in images] == list(range(exam.shape[1]))
    return images


def write_reader_seg(
    sources: Sequence[pydicom.Dataset],
    mask: NDArray[np.bool_],
    path: Path,
    *,
    reader: str = "Reader^Rita",
) -> str:
    """``mask`` as a BINARY SEG of two segments (the last lesion first); returns its UID.

    ``sources`` are the images ``mask``'s slices were drawn on, in the same order.
    """
    labels, _ = ndimage.label(mask, structure=_STRUCTURE)
    last = labels == labels.max()
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.NeoplasmSecondary,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, label in ((1, "one lesion"), (2, "the others"))
    ]
    seg = hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=np.stack([last, mask & ~last], axis=-1).astype(np.uint8),
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=400,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Reading Room",
        manufacturer_model_name="Viewer",
        software_versions="1",
        device_serial_number="1",
        content_creator_name=reader,
    )
    seg.save_as(path)
    return str(seg.SOPInstanceUID)


def as_ohif_writes_it(
    seg: Dataset,
    *,
    renumber: Mapping[int, int] | None = None,
    positions: bool = True,
    rle: bool = True,
) -> Dataset:
    """``seg`` (a highdicom SEG) in the structure OHIF 3.13's SEG writer (dcmjs) stores.

    As read back from a file: the per-frame functional groups keep their
    Derivation Image Sequence and Plane Position Sequence and repeat the
    shared Plane Orientation, but have **no Frame Content Sequence** (no
    Dimension Index Values, although the Dimension Index Sequence stays);
    the Segment Sequence lists the segments in reverse order, without the
    background segment 0 that highdicom describes in a label map. ``renumber``
    changes segment numbers (in the Segment Sequence, the frames' Segment
    Identification and a label map's pixel values), such as OHIF leaving a
    gap where the reader deleted a segment. ``positions=False`` drops every
    frame's Plane Position (frames known by their source image only).
    ``rle``: RLE Lossless, as OHIF stores it (8-bit pixels only, so not for
    BINARY). ``seg`` must be uncompressed.
    """
    dataset = _reread(seg)
    orientation = dataset.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence
    for item in dataset.PerFrameFunctionalGroupsSequence:
        del item.FrameContentSequence
        item.PlaneOrientationSequence = copy.deepcopy(orientation)
        if not positions:
            del item.PlanePositionSequence
        if renumber and "SegmentIdentificationSequence" in item:
            identification = item.SegmentIdentificationSequence[0]
            number = int(identification.ReferencedSegmentNumber)
            identification.ReferencedSegmentNumber = renumber.get(number, number)
    pixels = np.asarray(dataset.pixel_array)
    if renumber:
        for description in dataset.SegmentSequence:
            number = int(description.SegmentNumber)
            description.SegmentNumber = renumber.get(number, number)
        if dataset.SegmentationType == "LABELMAP":
            remapped = pixels.copy()
            for old, new in renumber.items():
                remapped[pixels == old] = new
            pixels = remapped
            dataset.PixelData = pixels.tobytes()
    described = [item for item in dataset.SegmentSequence if int(item.SegmentNumber) != 0]
    dataset.SegmentSequence = described[::-1]
    if rle:
        dataset.compress(RLELossless, pixels, generate_instance_uid=False)
    return _reread(dataset)


def _reread(dataset: Dataset) -> Dataset:
    """``dataset`` written and read back: a plain pydicom dataset, as from the spool."""
    buffer = BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(BytesIO(buffer.getvalue()))
