"""A reader's corrected Segmentation, read back onto the exam's grid (issue 11).

A radiologist edits the node's tumour-load SEG in a viewer (OHIF's
segmentation mode, 3D Slicer, any tool that writes DICOM SEG) and stores it
to PACS, which forwards it to the node. :func:`read_corrected_mask` turns it
into a boolean mask ``[z, y, x]`` on the grid of the exam it was drawn on:

- read with highdicom (:func:`highdicom.seg.segread`); BINARY, FRACTIONAL (a
  pixel counts when its fraction is at least 0.5) and LABELMAP (Label Map
  Segmentation Storage, every non-zero label) are accepted;
- the segments may come in any order and any number: **the union of every
  segment in the SEG is the tumour load** (the reader keeps what is disease
  and deletes what is not). The node's own ADC-class and per-lesion segments
  are subsets of its total-load segment, so the union is still the load;
- frames may be sparse (empty frames omitted) and in any order: each frame is
  placed by its Plane Position (Patient) in the frame of reference (PS3.3
  C.7.6.16.2.3), checked against the exam's affine: same orientation, same
  pixel spacing, on a slice of the grid and on whole-pixel offsets (within
  a tenth of a voxel). Resampling a SEG drawn on another grid is refused with
  :class:`~dicom_node.errors.SegmentationGeometryError`.

Which exam a SEG belongs to (:func:`check_refers_to_exam`): the same study,
and either a referenced series that is one of the exam's (its DWI series or a
result series of the node) or the exam's frame of reference.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_node.errors import (
    SegmentationGeometryError,
    SegmentationReadError,
    SegmentationReferenceError,
)
from processing.exam import DwiExam

__all__ = [
    "FRACTIONAL_THRESHOLD",
    "SEGMENTATION_STORAGE_CLASSES",
    "CorrectedMask",
    "check_refers_to_exam",
    "read_corrected_mask",
    "read_segmentation",
    "referenced_series_uids",
]

#: Segmentation Storage and Label Map Segmentation Storage (PS3.4 B.5).
SEGMENTATION_STORAGE_CLASSES: frozenset[str] = frozenset(
    {"1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7"}
)
#: A FRACTIONAL pixel belongs to its segment when its fraction is at least this.
FRACTIONAL_THRESHOLD = 0.5
_TOLERANCE_VOXEL = 0.1  # how far off a whole voxel a frame may lie


@dataclass(frozen=True, slots=True)
class CorrectedMask:
    """A reader's SEG on the exam grid.

    Attributes
    ----------
    mask
        Union of every segment, ``[z, y, x]`` on the exam's grid (read-only).
    sop_instance_uid, series_instance_uid
        The SEG's identity (the corrected results' UIDs derive from the first).
    content_creator
        Content Creator's Name (the reader), ``""`` when the SEG has none.
    segment_labels
        The labels of the segments taken, in the SEG's order.
    segmentation_type
        ``BINARY``, ``FRACTIONAL`` or ``LABELMAP``.
    """

    mask: NDArray[np.bool_]
    sop_instance_uid: str
    series_instance_uid: str
    content_creator: str
    segment_labels: tuple[str, ...]
    segmentation_type: str


def read_segmentation(source: Path | str | Dataset) -> hd.seg.Segmentation:
    """The SEG at ``source`` (a file, or a dataset already read) as a highdicom Segmentation.

    Raises
    ------
    SegmentationReadError
        Not a Segmentation, or highdicom cannot read it.
    """
    name = str(source) if not isinstance(source, Dataset) else _uid_of(source)
    try:
        if isinstance(source, Dataset):
            return hd.seg.Segmentation.from_dataset(source, copy=True)
        return hd.seg.segread(source)
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise SegmentationReadError(f"SEG {name} cannot be read: {exc}") from exc


def referenced_series_uids(seg: Dataset) -> frozenset[str]:
    """Series UIDs of the SEG's Referenced Series Sequence (and its source images)."""
    found = {str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])}
    for study in seg.get("StudiesContainingOtherReferencedInstancesSequence", []):
        found.update(
            str(item.SeriesInstanceUID) for item in study.get("ReferencedSeriesSequence", [])
        )
    return frozenset(found)


def check_refers_to_exam(
    seg: Dataset, exam: DwiExam, *, known_series_uids: Collection[str] = ()
) -> None:
    """Raise unless ``seg`` was drawn on ``exam``.

    It must be of the exam's study, and reference one of the exam's series
    (its DWI series, or ``known_series_uids``: the node's result series of the
    exam) or lie in the exam's frame of reference.

    Raises
    ------
    SegmentationReferenceError
        With the SEG's UID and what differs.
    """
    uid = _uid_of(seg)
    study = str(seg.get("StudyInstanceUID", ""))
    if study != exam.study_instance_uid:
        raise SegmentationReferenceError(
            f"SEG {uid} belongs to study {study or '(none)'}, not to the exam's study "
            f"{exam.study_instance_uid}"
        )
    series = {*exam.series_used, *(ref.series_instance_uid for ref in exam.sources)}
    series.update(known_series_uids)
    if referenced_series_uids(seg) & series:
        return
    frame_of_reference = str(seg.get("FrameOfReferenceUID", ""))
    if frame_of_reference and frame_of_reference == exam.frame_of_reference_uid:
        return
    raise SegmentationReferenceError(
        f"SEG {uid} references none of the exam's series and lies in frame of reference "
        f"{frame_of_reference or '(none)'}, not the exam's {exam.frame_of_reference_uid}"
    )


def read_corrected_mask(
    source: Path | str | Dataset | hd.seg.Segmentation,
    exam: DwiExam,
    *,
    known_series_uids: Collection[str] = (),
) -> CorrectedMask:
    """The union of the SEG's segments on the exam's grid (see the module docstring).

    Parameters
    ----------
    source
        The SEG: a file, a dataset, or a highdicom Segmentation.
    exam
        The exam it was drawn on.
    known_series_uids
        Result series of the node for this exam (a SEG drawn on the node's
        computed-b series references one of them).

    Raises
    ------
    SegmentationReadError
        Unreadable, or without any segment.
    SegmentationReferenceError
        Drawn on another study, series or frame of reference.
    SegmentationGeometryError
        A frame does not lie on the exam's grid.
    """
    seg = source if isinstance(source, hd.seg.Segmentation) else read_segmentation(source)
    uid = _uid_of(seg)
    check_refers_to_exam(seg, exam, known_series_uids=known_series_uids)
    kind = str(seg.SegmentationType)
    descriptions = list(seg.get("SegmentSequence", []))
    if not descriptions:
        raise SegmentationReadError(f"SEG {uid} has no segment")
    labels = tuple(str(item.get("SegmentLabel", item.SegmentNumber)) for item in descriptions)
    frames = _foreground_frames(seg, kind, uid)
    mask = np.zeros(exam.shape[1:], dtype=bool)
    placement = _Placement.of(seg, exam, uid)
    for index, foreground in enumerate(frames):
        if foreground.any():
            placement.paste(mask, foreground, _frame_position(seg, index, uid), index)
    mask.flags.writeable = False
    return CorrectedMask(
        mask=mask,
        sop_instance_uid=uid,
        series_instance_uid=str(seg.get("SeriesInstanceUID", "")),
        content_creator=str(seg.get("ContentCreatorName", "") or ""),
        segment_labels=labels,
        segmentation_type=kind,
    )


def _uid_of(dataset: Dataset) -> str:
    return str(dataset.get("SOPInstanceUID", "(no SOP Instance UID)"))


def _foreground_frames(seg: Dataset, kind: str, uid: str) -> NDArray[np.bool_]:
    """Every stored frame as a boolean ``[frames, rows, columns]`` (any segment)."""
    try:
        pixels = np.asarray(seg.pixel_array)
    except (ValueError, TypeError, AttributeError, NotImplementedError) as exc:
        raise SegmentationReadError(f"SEG {uid}: pixel data cannot be decoded: {exc}") from exc
    if pixels.ndim == 2:
        pixels = pixels[None]
    if kind == "FRACTIONAL":
        maximum = float(seg.get("MaximumFractionalValue", 255) or 255)
        return np.asarray(pixels.astype(np.float64) / maximum >= FRACTIONAL_THRESHOLD)
    if kind in ("BINARY", "LABELMAP"):
        return np.asarray(pixels != 0)
    raise SegmentationReadError(f"SEG {uid}: segmentation type {kind!r} is not supported")


def _functional_group(seg: Dataset, index: int, sequence: str) -> Any:
    """The frame's item of a functional group sequence (per-frame first, then shared)."""
    per_frame = seg.get("PerFrameFunctionalGroupsSequence", [])
    if index < len(per_frame) and sequence in per_frame[index]:
        return per_frame[index][sequence][0]
    shared = seg.get("SharedFunctionalGroupsSequence", [])
    if shared and sequence in shared[0]:
        return shared[0][sequence][0]
    return None


def _frame_position(seg: Dataset, index: int, uid: str) -> NDArray[np.float64]:
    item = _functional_group(seg, index, "PlanePositionSequence")
    if item is None or "ImagePositionPatient" not in item:
        raise SegmentationGeometryError(
            f"SEG {uid}: frame {index + 1} has no Plane Position (Patient); it cannot be placed"
        )
    return np.asarray([float(v) for v in item.ImagePositionPatient], dtype=np.float64)


@dataclass(frozen=True, slots=True)
class _Placement:
    """How a SEG frame maps onto the exam grid: the inverse affine and the checked geometry."""

    inverse: NDArray[np.float64]
    origin: NDArray[np.float64]
    shape: tuple[int, int, int]
    uid: str

    @classmethod
    def of(cls, seg: Dataset, exam: DwiExam, uid: str) -> _Placement:
        affine = np.asarray(exam.affine, dtype=np.float64)
        column_axis, row_axis = affine[:3, 1], affine[:3, 2]
        dy, dx = float(np.linalg.norm(column_axis)), float(np.linalg.norm(row_axis))
        orientation = _functional_group(seg, 0, "PlaneOrientationSequence")
        measures = _functional_group(seg, 0, "PixelMeasuresSequence")
        if orientation is None or measures is None:
            raise SegmentationGeometryError(
                f"SEG {uid} has no Plane Orientation or Pixel Measures; it cannot be placed"
            )
        cosines = np.asarray([float(v) for v in orientation.ImageOrientationPatient])
        expected = np.concatenate([row_axis / dx, column_axis / dy])
        if not np.allclose(cosines, expected, atol=1e-3):
            raise SegmentationGeometryError(
                f"SEG {uid}: orientation {cosines.round(4).tolist()} differs from the exam's "
                f"{expected.round(4).tolist()} (drawn on another series' grid?)"
            )
        spacing = tuple(float(v) for v in measures.PixelSpacing)
        if not np.allclose(spacing, (dy, dx), rtol=1e-3):
            raise SegmentationGeometryError(
                f"SEG {uid}: pixel spacing {spacing} mm differs from the exam's ({dy:g}, {dx:g}) "
                "mm (drawn on another series' grid?)"
            )
        return cls(
            inverse=np.asarray(np.linalg.inv(affine[:3, :3]), dtype=np.float64),
            origin=affine[:3, 3],
            shape=exam.shape[1:],
            uid=uid,
        )

    def paste(
        self,
        mask: NDArray[np.bool_],
        foreground: NDArray[np.bool_],
        position: NDArray[np.float64],
        index: int,
    ) -> None:
        """Or the frame's foreground into ``mask`` at the voxel its position names."""
        zyx = self.inverse @ (position - self.origin)
        whole = np.rint(zyx)
        if np.abs(zyx - whole).max() > _TOLERANCE_VOXEL:
            raise SegmentationGeometryError(
                f"SEG {self.uid}: frame {index + 1} at {position.round(2).tolist()} mm lies "
                f"between voxels of the exam grid (index {zyx.round(2).tolist()})"
            )
        z, y0, x0 = (int(v) for v in whole)
        rows, columns = np.nonzero(foreground)
        ys, xs = rows + y0, columns + x0
        nz, ny, nx = self.shape
        if not 0 <= z < nz or ys.min() < 0 or xs.min() < 0 or ys.max() >= ny or xs.max() >= nx:
            raise SegmentationGeometryError(
                f"SEG {self.uid}: frame {index + 1} has segmented pixels outside the exam grid "
                f"(slice {z} of {nz})"
            )
        mask[z, ys, xs] = True
