"""A reader's corrected Segmentation, read back onto the exam's grid (issue 11).

A radiologist edits the node's tumour-load SEG in a viewer (OHIF's
segmentation mode, 3D Slicer, any tool that writes DICOM SEG) and stores it
to PACS, which forwards it to the node. :func:`read_corrected_mask` turns it
into a boolean mask ``[z, y, x]`` on the grid of the exam it was drawn on:

- read with highdicom (:meth:`highdicom.seg.Segmentation.from_dataset`) when
  highdicom reads it (the node's own SEGs, highdicom-edited ones). A SEG
  highdicom refuses is read with pydicom alone and checked here: OHIF 3.13
  (dcmjs's writer) stores a Label Map SEG, RLE Lossless, whose per-frame
  functional groups have no Frame Content Sequence (so no Dimension Index
  Values) although a Dimension Index Sequence is declared; each frame
  carries its Plane Position (Patient) and its source image in the
  Derivation Image Sequence;
- BINARY, FRACTIONAL (a pixel counts when its fraction is at least 0.5) and
  LABELMAP (Label Map Segmentation Storage: every pixel whose value is a
  segment number other than 0, the background, which highdicom describes as
  segment 0; a value naming no segment of the Segment Sequence is an error)
  are accepted, in any transfer syntax pydicom decodes with the installed
  plugins (tested: uncompressed and RLE Lossless);
- the segments may come in any order and any number: **the union of every
  segment in the SEG is the tumour load** (the reader keeps what is disease
  and deletes what is not). The node's own ADC-class and per-lesion segments
  are subsets of its total-load segment, so the union is still the load. A
  BINARY or FRACTIONAL frame must name one of the SEG's segments (Segment
  Identification Sequence, per frame or shared);
- frames may be sparse (empty frames omitted) and in any order. Each frame is
  placed by its Plane Position (Patient) in the frame of reference (PS3.3
  C.7.6.16.2.3), checked against the exam's affine: same orientation (per
  frame), same pixel spacing, on a slice of the grid and on whole-pixel
  offsets (within a tenth of the slice spacing and of a pixel). A frame
  without a position is placed on the slice of its source image (Derivation
  Image Sequence > Source Image Sequence): one of the exam's source images,
  or one of the node's result images whose position the caller knows
  (``image_positions``); it must then have the exam's rows and columns.
  Resampling a SEG drawn on another grid is refused with
  :class:`~dicom_node.errors.SegmentationGeometryError`, whose message names
  what differs.

Which exam a SEG belongs to (:func:`check_refers_to_exam`): the same study,
and either a referenced series that is one of the exam's (its DWI series or a
result series of the node) or the exam's frame of reference.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from dicom_node.errors import (
    SegmentationGeometryError,
    SegmentationReadError,
    SegmentationReferenceError,
)
from processing.exam import DwiExam, index_to_patient

__all__ = [
    "FRACTIONAL_THRESHOLD",
    "SEGMENTATION_STORAGE_CLASSES",
    "CorrectedMask",
    "check_refers_to_exam",
    "frames_without_position",
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
#: How far off the grid a frame may lie, as a fraction of the slice spacing
#: (through the plane) and of the pixel spacing (in the plane).
_TOLERANCE_VOXEL = 0.1
_HIGHDICOM_REFUSALS = (ValueError, TypeError, AttributeError, KeyError, IndexError)


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


def read_segmentation(source: Path | str | Dataset) -> Dataset:
    """The SEG at ``source`` (a file, or a dataset already read).

    A :class:`highdicom.seg.Segmentation` (a copy) when highdicom reads it;
    otherwise the pydicom dataset itself (such as OHIF's SEG without Frame Content
    Sequence), which :func:`read_corrected_mask` checks frame by frame.

    Raises
    ------
    SegmentationReadError
        Not DICOM, or not a Segmentation.
    """
    name = str(source) if not isinstance(source, Dataset) else _uid_of(source)
    try:
        dataset = source if isinstance(source, Dataset) else pydicom.dcmread(source)
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise SegmentationReadError(f"SEG {name} cannot be read: {exc}") from exc
    sop_class = str(dataset.get("SOPClassUID", ""))
    if sop_class not in SEGMENTATION_STORAGE_CLASSES:
        raise SegmentationReadError(
            f"SEG {name} cannot be read: SOP class {sop_class or '(none)'} is not Segmentation "
            "or Label Map Segmentation Storage"
        )
    meta = getattr(dataset, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        raise SegmentationReadError(
            f"SEG {name} cannot be read: no Transfer Syntax UID (file meta information)"
        )
    try:
        return hd.seg.Segmentation.from_dataset(dataset, copy=True)
    except _HIGHDICOM_REFUSALS:
        # highdicom indexes frames by their Dimension Index Values; the node
        # places frames by position or source image and checks them itself.
        return dataset


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


def frames_without_position(seg: Dataset) -> int:
    """How many frames of ``seg`` have no Plane Position (Patient) (placed by source image)."""
    return sum(
        _position_of(seg, index) is None for index in range(_number_of_frames(seg, _uid_of(seg)))
    )


def read_corrected_mask(
    source: Path | str | Dataset,
    exam: DwiExam,
    *,
    known_series_uids: Collection[str] = (),
    image_positions: Mapping[str, Sequence[float]] | None = None,
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
    image_positions
        Image Position (Patient) of the node's result images of this exam, by
        SOP Instance UID: a frame without a position of its own that derives
        from one of them is placed at its position.

    Raises
    ------
    SegmentationReadError
        Unreadable, without any segment, a frame naming no segment of the SEG,
        or pixel data that cannot be decoded.
    SegmentationReferenceError
        Drawn on another study, series or frame of reference.
    SegmentationGeometryError
        A frame does not lie on the exam's grid, or cannot be placed.
    """
    seg = source if isinstance(source, hd.seg.Segmentation) else read_segmentation(source)
    uid = _uid_of(seg)
    check_refers_to_exam(seg, exam, known_series_uids=known_series_uids)
    kind = str(seg.get("SegmentationType", ""))
    items = list(seg.get("SegmentSequence", []))
    for order, item in enumerate(items, start=1):
        if item.get("SegmentNumber") is None:
            raise SegmentationReadError(
                f"SEG {uid}: item {order} of the Segment Sequence has no Segment Number"
            )
    descriptions = [
        item
        for item in items
        if not (kind == "LABELMAP" and int(item.SegmentNumber) == 0)  # the background
    ]
    if not descriptions:
        raise SegmentationReadError(f"SEG {uid} has no segment")
    labels = tuple(str(item.get("SegmentLabel", item.SegmentNumber)) for item in descriptions)
    numbers = frozenset(int(item.SegmentNumber) for item in descriptions)
    count = _number_of_frames(seg, uid)
    if kind != "LABELMAP":
        _check_segment_identification(seg, count, numbers, uid)
    frames = _foreground_frames(seg, kind, numbers, uid)
    if len(frames) != count:
        raise SegmentationReadError(
            f"SEG {uid}: the pixel data holds {len(frames)} frames, Number of Frames says {count}"
        )
    grid = _Grid.of(exam, uid)
    sources = _SourceSlices.of(exam, image_positions or {})
    mask = np.zeros(exam.shape[1:], dtype=bool)
    for index, foreground in enumerate(frames):
        grid.check_frame_geometry(seg, index)
        if foreground.any():
            position = _position_of(seg, index)
            if position is None:
                position = sources.position_of(seg, index, grid)
            grid.paste(mask, foreground, position, index)
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


def _number_of_frames(seg: Dataset, uid: str) -> int:
    count = int(seg.get("NumberOfFrames", 1) or 1)
    per_frame = seg.get("PerFrameFunctionalGroupsSequence")
    if per_frame is not None and len(per_frame) != count:
        raise SegmentationReadError(
            f"SEG {uid}: Number of Frames is {count} but the Per-Frame Functional Groups "
            f"Sequence has {len(per_frame)} items"
        )
    return count


def _check_segment_identification(
    seg: Dataset, count: int, numbers: frozenset[int], uid: str
) -> None:
    """Every BINARY or FRACTIONAL frame names one of the SEG's segments."""
    for index in range(count):
        item = _functional_group(seg, index, "SegmentIdentificationSequence")
        if item is None or "ReferencedSegmentNumber" not in item:
            raise SegmentationReadError(
                f"SEG {uid}: frame {index + 1} names no segment (no Segment Identification "
                "Sequence)"
            )
        number = int(item.ReferencedSegmentNumber)
        if number not in numbers:
            raise SegmentationReadError(
                f"SEG {uid}: frame {index + 1} belongs to segment {number}, which the Segment "
                f"Sequence does not describe (segments {sorted(numbers)})"
            )


def _foreground_frames(
    seg: Dataset, kind: str, numbers: frozenset[int], uid: str
) -> NDArray[np.bool_]:
    """Every stored frame as a boolean ``[frames, rows, columns]`` (any segment)."""
    if kind not in ("BINARY", "FRACTIONAL", "LABELMAP"):
        raise SegmentationReadError(f"SEG {uid}: segmentation type {kind!r} is not supported")
    try:
        pixels = np.asarray(seg.pixel_array)
    except (ValueError, TypeError, AttributeError, NotImplementedError, RuntimeError) as exc:
        raise SegmentationReadError(f"SEG {uid}: pixel data cannot be decoded: {exc}") from exc
    if pixels.ndim == 2:
        pixels = pixels[None]
    if kind == "FRACTIONAL":
        maximum = float(seg.get("MaximumFractionalValue", 255) or 255)
        return np.asarray(pixels.astype(np.float64) / maximum >= FRACTIONAL_THRESHOLD)
    if kind == "LABELMAP":
        values = {int(v) for v in np.unique(pixels)} - {0}
        unknown = sorted(values - numbers)
        if unknown:
            raise SegmentationReadError(
                f"SEG {uid}: label map values {unknown} name no segment of the Segment Sequence "
                f"(segments {sorted(numbers)}); which segment the reader meant is unknown"
            )
    return np.asarray(pixels != 0)


def _functional_group(seg: Dataset, index: int, sequence: str) -> Any:
    """The frame's item of a functional group sequence (per-frame first, then shared)."""
    per_frame = seg.get("PerFrameFunctionalGroupsSequence", [])
    if index < len(per_frame) and sequence in per_frame[index] and per_frame[index][sequence]:
        return per_frame[index][sequence][0]
    shared = seg.get("SharedFunctionalGroupsSequence", [])
    if shared and sequence in shared[0] and shared[0][sequence]:
        return shared[0][sequence][0]
    return None


def _position_of(seg: Dataset, index: int) -> NDArray[np.float64] | None:
    item = _functional_group(seg, index, "PlanePositionSequence")
    if item is None or not item.get("ImagePositionPatient"):
        return None
    position = np.asarray([float(v) for v in item.ImagePositionPatient], dtype=np.float64)
    if position.shape != (3,):
        raise SegmentationGeometryError(
            f"SEG {_uid_of(seg)}: frame {index + 1}: Image Position (Patient) has "
            f"{position.size} values, not 3"
        )
    return position


def _source_images(seg: Dataset, index: int) -> Iterator[tuple[str, int | None]]:
    """``(SOP Instance UID, frame number)`` of the frame's source images (Derivation Image)."""
    per_frame = seg.get("PerFrameFunctionalGroupsSequence", [])
    derivations = per_frame[index].get("DerivationImageSequence", []) if per_frame else []
    for derivation in derivations:
        for source in derivation.get("SourceImageSequence", []):
            if "ReferencedSOPInstanceUID" not in source:
                continue
            frames = source.get("ReferencedFrameNumber")
            if frames is None or frames == "":
                yield str(source.ReferencedSOPInstanceUID), None
                continue
            values = (
                frames if isinstance(frames, Sequence) and not isinstance(frames, str) else [frames]
            )
            for frame in values:
                yield str(source.ReferencedSOPInstanceUID), int(frame)


@dataclass(frozen=True, slots=True)
class _Grid:
    """The exam's grid: how a SEG frame maps onto it, and the geometry it must have."""

    affine: NDArray[np.float64]
    inverse: NDArray[np.float64]
    shape: tuple[int, int, int]
    cosines: NDArray[np.float64]
    pixel_spacing: tuple[float, float]
    slice_spacing: float
    uid: str

    @classmethod
    def of(cls, exam: DwiExam, uid: str) -> _Grid:
        affine = np.asarray(exam.affine, dtype=np.float64)
        column_axis, row_axis = affine[:3, 1], affine[:3, 2]
        dy, dx = float(np.linalg.norm(column_axis)), float(np.linalg.norm(row_axis))
        return cls(
            affine=affine,
            inverse=np.asarray(np.linalg.inv(affine[:3, :3]), dtype=np.float64),
            shape=exam.shape[1:],
            cosines=np.concatenate([row_axis / dx, column_axis / dy]),
            pixel_spacing=(dy, dx),
            slice_spacing=float(np.linalg.norm(affine[:3, 0])),
            uid=uid,
        )

    def check_frame_geometry(self, seg: Dataset, index: int) -> None:
        """The frame's orientation and pixel spacing, when it states them, are the exam's."""
        orientation = _functional_group(seg, index, "PlaneOrientationSequence")
        if orientation is not None and orientation.get("ImageOrientationPatient"):
            cosines = np.asarray([float(v) for v in orientation.ImageOrientationPatient])
            if cosines.shape != (6,) or not np.allclose(cosines, self.cosines, atol=1e-3):
                raise SegmentationGeometryError(
                    f"SEG {self.uid}: frame {index + 1}: orientation "
                    f"{cosines.round(4).tolist()} differs from the exam's "
                    f"{self.cosines.round(4).tolist()} (drawn on another series' grid?)"
                )
        elif _position_of(seg, index) is not None:
            raise SegmentationGeometryError(
                f"SEG {self.uid}: frame {index + 1} has a position but no Plane Orientation "
                "(Patient); it cannot be placed"
            )
        measures = _functional_group(seg, index, "PixelMeasuresSequence")
        if measures is not None and measures.get("PixelSpacing"):
            spacing = tuple(float(v) for v in measures.PixelSpacing)
            if len(spacing) != 2 or not np.allclose(spacing, self.pixel_spacing, rtol=1e-3):
                dy, dx = self.pixel_spacing
                raise SegmentationGeometryError(
                    f"SEG {self.uid}: frame {index + 1}: pixel spacing {spacing} mm differs from "
                    f"the exam's ({dy:g}, {dx:g}) mm (drawn on another series' grid?)"
                )
        elif _position_of(seg, index) is not None:
            raise SegmentationGeometryError(
                f"SEG {self.uid}: frame {index + 1} has a position but no Pixel Measures "
                "(pixel spacing); it cannot be placed"
            )

    def paste(
        self,
        mask: NDArray[np.bool_],
        foreground: NDArray[np.bool_],
        position: NDArray[np.float64],
        index: int,
    ) -> None:
        """Or the frame's foreground into ``mask`` at the voxel its position names."""
        zyx = self.inverse @ (position - self.affine[:3, 3])
        whole = np.rint(zyx)
        if np.abs(zyx - whole).max() > _TOLERANCE_VOXEL:
            dz = abs(float(zyx[0] - whole[0])) * self.slice_spacing
            raise SegmentationGeometryError(
                f"SEG {self.uid}: frame {index + 1} at {position.round(2).tolist()} mm lies "
                f"between voxels of the exam grid (index {zyx.round(2).tolist()}: {dz:.2f} mm "
                f"off slice {int(whole[0])}, tolerance {_TOLERANCE_VOXEL:g} of a slice "
                f"({_TOLERANCE_VOXEL * self.slice_spacing:g} mm) and of a pixel)"
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


@dataclass(frozen=True, slots=True)
class _SourceSlices:
    """Where a frame without a position lies: the position of the image it derives from."""

    slices: Mapping[tuple[str, int | None], frozenset[int]]
    positions: Mapping[str, Sequence[float]]

    @classmethod
    def of(cls, exam: DwiExam, positions: Mapping[str, Sequence[float]]) -> _SourceSlices:
        slices: dict[tuple[str, int | None], set[int]] = {}
        for ref in exam.sources:
            slices.setdefault((ref.sop_instance_uid, ref.frame_number), set()).add(ref.slice_index)
        return cls({key: frozenset(value) for key, value in slices.items()}, positions)

    def position_of(self, seg: Dataset, index: int, grid: _Grid) -> NDArray[np.float64]:
        """The frame's top-left position, from its source images (all must agree)."""
        uid = grid.uid
        references = list(_source_images(seg, index))
        found: dict[str, NDArray[np.float64]] = {}
        for sop, frame in references:
            position = self._position(sop, frame, grid, index)
            if position is not None:
                found[sop if frame is None else f"{sop} frame {frame}"] = position
        if not found:
            named = (
                f"its source images ({', '.join(sop for sop, _ in references[:3])}) are none "
                "of the exam's or the node's"
                if references
                else "no source image (Derivation Image Sequence)"
            )
            raise SegmentationGeometryError(
                f"SEG {uid}: frame {index + 1} has no Plane Position (Patient) and {named}; "
                "it cannot be placed"
            )
        first = next(iter(found.values()))
        for name, position in found.items():
            if not np.allclose(position, first, atol=_TOLERANCE_VOXEL * min(grid.pixel_spacing)):
                raise SegmentationGeometryError(
                    f"SEG {uid}: frame {index + 1} derives from images at different positions "
                    f"({first.round(2).tolist()} and {position.round(2).tolist()} mm, {name}); "
                    "it cannot be placed"
                )
        rows, columns = int(seg.Rows), int(seg.Columns)
        if (rows, columns) != grid.shape[1:]:
            raise SegmentationGeometryError(
                f"SEG {uid}: frame {index + 1} is placed by its source image but has "
                f"{rows} x {columns} pixels, the exam's grid {grid.shape[1]} x {grid.shape[2]}"
            )
        return first

    def _position(
        self, sop: str, frame: int | None, grid: _Grid, index: int
    ) -> NDArray[np.float64] | None:
        if sop in self.positions:
            return np.asarray([float(v) for v in self.positions[sop]], dtype=np.float64)
        slices = self.slices.get((sop, frame))
        if slices is None and frame == 1:  # single-frame images referenced as frame 1
            slices = self.slices.get((sop, None))
        if slices is None:
            return None
        if len(slices) != 1:
            raise SegmentationGeometryError(
                f"SEG {grid.uid}: frame {index + 1} derives from image {sop}, which contributes "
                f"to slices {sorted(slices)} of the exam grid (resampled station); it cannot be "
                "placed without a Plane Position (Patient)"
            )
        (z,) = slices
        zyx = np.asarray([float(z), 0.0, 0.0])
        return np.asarray(index_to_patient(grid.affine, zyx), dtype=np.float64)
