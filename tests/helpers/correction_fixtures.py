"""A reader's correction as a viewer writes it: the node's mask edited, saved as a highdicom SEG.

Shared by the offline (``tests/e2e/test_process_mask.py``) and the node
(``tests/integration/test_node_correction.py``) round trips.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from scipy import ndimage

from processing.exam import DwiExam
from processing.settings import ProcessingSettings

__all__ = ["edit_tumour_mask", "slice_ordered_images", "write_reader_seg"]

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
