"""Reading stored instances into DWI frames (header, b-value, geometry, pixels).

One file gives either DWI frames (one for a classic MR image, several for an
Enhanced MR image), or the reason it is not DWI input (a scanner ADC map, a T1
series, a structured report...), or the reason it was skipped (not DICOM).

Pixel data is decoded once. Native little-endian pixel data is viewed in place
with :func:`numpy.frombuffer` (no copy, no pydicom pixel handler); anything else
goes through pydicom's decoders (JPEG, JPEG-LS, JPEG 2000, RLE with the
installed plugins). Stored values are kept as they are, with the rescale slope
and intercept beside them, and are converted to float32 only when the grid is
composed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)

from dicom_node.assembly.bvalues import BValue, BValueSource, read_b_value, read_frame_b_value
from dicom_node.assembly.dicom_files import has_dicom_preamble
from dicom_node.errors import (
    GeometryMismatchError,
    MissingBValueError,
    UndecodablePixelDataError,
    UnreadableInstanceError,
)

__all__ = [
    "DERIVED_MAP_TOKENS",
    "DwiFrame",
    "DwiInstance",
    "NotDwiInstance",
    "SeriesHeader",
    "SkippedFile",
    "read_instance",
]

DERIVED_MAP_TOKENS: frozenset[str] = frozenset(
    {"ADC", "EADC", "EXP", "EXPONENTIAL", "EXP_ADC", "FA", "COLFA", "TENSOR", "CALC_BVALUE"}
)
"""ImageType values of maps the scanner computed from DWI (ADC, exponential ADC,
FA, calculated b-values): derived data, not acquired diffusion-weighted input."""

_NATIVE_LITTLE_ENDIAN = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}
)
_SUPPORTED_SOP_CLASSES = {MRImageStorage: "MR Image", EnhancedMRImageStorage: "Enhanced MR Image"}
_DIRECTIONAL = frozenset({"DIRECTIONAL", "BMATRIX"})


@dataclass(frozen=True, slots=True)
class SeriesHeader:
    """Series-level attributes, shared by all frames read from one series."""

    uid: str
    description: str
    number: int | None
    study_uid: str
    frame_of_reference_uid: str
    patient_id: str
    issuer_of_patient_id: str

    @property
    def sort_key(self) -> tuple[int, str]:
        return (self.number if self.number is not None else 1 << 30, self.uid)


@dataclass(frozen=True, slots=True)
class DwiFrame:
    """One diffusion-weighted image (or one frame of a multi-frame image).

    ``stored`` holds the stored pixel values; the modality value is
    ``stored * slope + intercept`` (PS3.3 C.11.1.1.2).
    """

    path: str
    sop_class_uid: str
    sop_instance_uid: str
    series: SeriesHeader
    frame_number: int | None
    b_value: float
    b_source: BValueSource
    position: tuple[float, float, float]
    orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]
    slice_spacing: float | None
    acquisition: str
    stored: NDArray[Any]
    slope: float
    intercept: float

    @property
    def shape(self) -> tuple[int, int]:
        rows, columns = self.stored.shape
        return (rows, columns)

    def max_value(self) -> float:
        """Largest modality value of the frame."""
        peak = float(self.stored.max()) * self.slope + self.intercept
        low = float(self.stored.min()) * self.slope + self.intercept
        return max(peak, low)


@dataclass(frozen=True, slots=True)
class DwiInstance:
    """A file that contributed DWI frames."""

    series: SeriesHeader
    frames: tuple[DwiFrame, ...]


@dataclass(frozen=True, slots=True)
class NotDwiInstance:
    """A DICOM instance that is not DWI input, and why."""

    series: SeriesHeader
    reason: str


@dataclass(frozen=True, slots=True)
class SkippedFile:
    """A file that is not a DICOM image at all, and why."""

    path: str
    reason: str


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _int_or_none(ds: Dataset, keyword: str) -> int | None:
    value = ds.get(keyword)
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _series_header(ds: Dataset) -> SeriesHeader:
    return SeriesHeader(
        uid=_text(ds, "SeriesInstanceUID"),
        description=_text(ds, "SeriesDescription"),
        number=_int_or_none(ds, "SeriesNumber"),
        study_uid=_text(ds, "StudyInstanceUID"),
        frame_of_reference_uid=_text(ds, "FrameOfReferenceUID"),
        patient_id=_text(ds, "PatientID"),
        issuer_of_patient_id=_text(ds, "IssuerOfPatientID"),
    )


def _image_type_tokens(values: object) -> list[str]:
    if values is None:
        return []
    if isinstance(values, str):
        return [v.strip().upper() for v in values.split("\\")]
    if isinstance(values, Sequence):
        return [str(v).strip().upper() for v in values]
    return [str(values).strip().upper()]


def _joined(image_type: list[str]) -> str:
    return "\\".join(image_type)


def _derived_map_reason(image_type: list[str]) -> str | None:
    found = [token for token in image_type if token in DERIVED_MAP_TOKENS]
    if not found:
        return None
    return (
        f"scanner-derived {found[0]} map (ImageType {_joined(image_type)}), "
        "not acquired diffusion-weighted images"
    )


def _floats(value: object, count: int, what: str, series: SeriesHeader, where: str) -> list[float]:
    try:
        numbers = [float(v) for v in value]  # type: ignore[attr-defined]
    except (TypeError, ValueError) as exc:
        raise GeometryMismatchError(
            f"{where}: {what} is missing or not numeric ({value!r})",
            series_uid=series.uid,
            series_description=series.description,
        ) from exc
    if len(numbers) != count:
        raise GeometryMismatchError(
            f"{where}: {what} has {len(numbers)} values, {count} expected",
            series_uid=series.uid,
            series_description=series.description,
        )
    return numbers


def _optional_float(value: object) -> float | None:
    try:
        return float(value) if value not in (None, "") else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _decode_stored(ds: Dataset, n_frames: int, series: SeriesHeader, path: str) -> NDArray[Any]:
    """Stored pixel values as ``[frames, rows, columns]``, decoded once."""
    transfer_syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", ExplicitVRLittleEndian)))

    def fail(reason: str) -> UndecodablePixelDataError:
        return UndecodablePixelDataError(
            f"instance {path}: {reason}",
            series_uid=series.uid,
            series_description=series.description,
        )

    if "PixelData" not in ds:
        raise fail("no PixelData (7FE0,0010)")
    rows, columns = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    bits_allocated = int(ds.get("BitsAllocated", 0))
    samples = int(ds.get("SamplesPerPixel", 1))
    if rows <= 0 or columns <= 0:
        raise fail(f"invalid matrix Rows={rows} Columns={columns}")
    if samples != 1:
        raise fail(f"SamplesPerPixel {samples}: colour images are not diffusion-weighted data")
    if transfer_syntax in _NATIVE_LITTLE_ENDIAN and bits_allocated in (8, 16):
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        dtype = np.dtype(f"<{'i' if signed else 'u'}{bits_allocated // 8}")
        raw = ds.PixelData
        count = n_frames * rows * columns
        if len(raw) < count * dtype.itemsize:
            raise fail(
                f"PixelData holds {len(raw)} bytes but {count * dtype.itemsize} are needed for "
                f"{n_frames} frame(s) of {rows}x{columns} at {bits_allocated} bits (truncated)"
            )
        stored: NDArray[Any] = np.frombuffer(raw, dtype=dtype, count=count)
        bits_stored = int(ds.get("BitsStored", bits_allocated))
        if bits_stored < bits_allocated:
            shift = bits_allocated - bits_stored
            # Unused high bits may hold overlay or garbage (PS3.5 8.1.1): mask, sign-extend.
            stored = (stored << shift) >> shift if signed else stored & ((1 << bits_stored) - 1)
        return stored.reshape(n_frames, rows, columns)
    try:
        decoded = np.asarray(ds.pixel_array)
    except Exception as exc:
        # pydicom raises several types (NotImplementedError, ValueError, RuntimeError,
        # decoder-specific errors); all mean the same thing here and are re-raised typed.
        raise fail(
            f"cannot decode pixel data in transfer syntax {transfer_syntax.name} "
            f"({transfer_syntax}): {exc}"
        ) from exc
    if decoded.size != n_frames * rows * columns:
        raise fail(f"decoded {decoded.size} pixels, expected {n_frames}x{rows}x{columns}")
    return decoded.reshape(n_frames, rows, columns)


def _no_pixels(ds: Dataset, n_frames: int) -> NDArray[Any]:
    """A read-only all-zero ``[frames, rows, columns]`` view that holds no memory.

    For frames read without their pixels (a coverage survey): the matrix is
    known, the values are not.
    """
    rows, columns = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    return np.broadcast_to(np.zeros((1, 1, 1), dtype=np.uint16), (n_frames, rows, columns))


def _rescale(item: Dataset | None) -> tuple[float, float]:
    if item is None:
        return 1.0, 0.0
    slope = _optional_float(item.get("RescaleSlope"))
    intercept = _optional_float(item.get("RescaleIntercept"))
    return (slope if slope else 1.0), (intercept if intercept is not None else 0.0)


def _looks_diffusion(ds: Dataset, image_type: list[str], b_value: BValue | None) -> bool:
    """Whether an image without a derived-map ImageType is diffusion-weighted.

    GE and Philips put their b-value element on every MR image (0 for T1/T2), so a
    private b = 0 alone is not enough: the image must also be EPI or say DIFFUSION.
    """
    if "DIFFUSION" in image_type:
        return True
    if b_value is None:
        return False
    if b_value.source in (BValueSource.STANDARD, BValueSource.ENHANCED) or b_value.value > 0:
        return True
    return "EP" in _image_type_tokens(ds.get("ScanningSequence"))


def _read_classic(
    ds: Dataset, path: str, series: SeriesHeader, pixels: bool
) -> DwiInstance | NotDwiInstance:
    image_type = _image_type_tokens(ds.get("ImageType"))
    derived = _derived_map_reason(image_type)
    if derived is not None:
        return NotDwiInstance(series, derived)
    if "MOSAIC" in image_type:
        return NotDwiInstance(series, "Siemens mosaic images are not supported (ImageType MOSAIC)")
    b_value = read_b_value(ds)
    if not _looks_diffusion(ds, image_type, b_value):
        return NotDwiInstance(
            series,
            "not diffusion-weighted: no b-value in (0018,9087) or vendor tags "
            f"(ImageType {_joined(image_type) or 'absent'})",
        )
    if b_value is None:
        raise MissingBValueError(
            f"instance {path} is a diffusion image (ImageType {_joined(image_type)}) but has no "
            "b-value in (0018,9087), Siemens (0019,xx0C) or CSA, GE (0043,xx39) or "
            "Philips (2001,xx03)",
            series_uid=series.uid,
            series_description=series.description,
        )
    where = f"instance {path}"
    position = _floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient", series, where)
    orientation = _floats(
        ds.get("ImageOrientationPatient"), 6, "ImageOrientationPatient", series, where
    )
    spacing = _floats(ds.get("PixelSpacing"), 2, "PixelSpacing", series, where)
    slope, intercept = _rescale(ds)
    stored = (_decode_stored(ds, 1, series, path) if pixels else _no_pixels(ds, 1))[0]
    frame = DwiFrame(
        path=path,
        sop_class_uid=_text(ds, "SOPClassUID"),
        sop_instance_uid=_text(ds, "SOPInstanceUID"),
        series=series,
        frame_number=None,
        b_value=b_value.value,
        b_source=b_value.source,
        position=(position[0], position[1], position[2]),
        orientation=(*orientation[:6],),  # type: ignore[arg-type]
        pixel_spacing=(spacing[0], spacing[1]),
        slice_spacing=_optional_float(ds.get("SpacingBetweenSlices"))
        or _optional_float(ds.get("SliceThickness")),
        acquisition=_text(ds, "AcquisitionNumber"),
        stored=stored,
        slope=slope,
        intercept=intercept,
    )
    return DwiInstance(series, (frame,))


def _functional_item(
    per_frame: Dataset | None, shared: Dataset | None, keyword: str
) -> Dataset | None:
    """The first item of functional group ``keyword``, per-frame first (PS3.3 C.7.6.16)."""
    for groups in (per_frame, shared):
        if groups is not None and keyword in groups:
            sequence = groups[keyword].value
            if sequence:
                item: Dataset = sequence[0]
                return item
    return None


def _isotropic_frames(
    per_frame_groups: Sequence[Dataset], shared: Dataset | None
) -> tuple[list[tuple[int, Dataset, BValue]], int]:
    """The frames that are isotropic diffusion images, and how many were directional.

    Returns
    -------
    list of (index, per-frame groups, b-value), int
        Frames with a b-value that are neither directional nor a derived map
        (by their Frame Type), and the number of directional frames left out.
    """
    candidates: list[tuple[int, Dataset, BValue]] = []
    directional = 0
    for index, groups in enumerate(per_frame_groups):
        b_value = read_frame_b_value(groups, shared)
        if b_value is None:
            continue
        diffusion = _functional_item(groups, shared, "MRDiffusionSequence")
        directionality = str(diffusion.get("DiffusionDirectionality", "")) if diffusion else ""
        if directionality.strip().upper() in _DIRECTIONAL:
            directional += 1
            continue
        frame_type = _functional_item(groups, shared, "MRImageFrameTypeSequence")
        if frame_type is not None and _derived_map_reason(
            _image_type_tokens(frame_type.get("FrameType"))
        ):
            continue
        candidates.append((index, groups, b_value))
    return candidates, directional


@dataclass(frozen=True, slots=True)
class _FrameGeometry:
    """Where one frame of an Enhanced MR image lies (Plane Position, Orientation, Measures)."""

    position: list[float]
    orientation: list[float]
    spacing: list[float]
    slice_spacing: float | None

    @classmethod
    def read(
        cls, groups: Dataset, shared: Dataset | None, series: SeriesHeader, where: str
    ) -> _FrameGeometry:
        """Read the frame's geometry, per-frame functional groups before shared ones."""
        position_item = _functional_item(groups, shared, "PlanePositionSequence")
        orientation_item = _functional_item(groups, shared, "PlaneOrientationSequence")
        measures = _functional_item(groups, shared, "PixelMeasuresSequence")
        position = _floats(
            position_item.get("ImagePositionPatient") if position_item else None,
            3,
            "ImagePositionPatient",
            series,
            where,
        )
        orientation = _floats(
            orientation_item.get("ImageOrientationPatient") if orientation_item else None,
            6,
            "ImageOrientationPatient",
            series,
            where,
        )
        spacing = _floats(
            measures.get("PixelSpacing") if measures else None, 2, "PixelSpacing", series, where
        )
        slice_spacing = None
        if measures is not None:
            slice_spacing = _optional_float(measures.get("SpacingBetweenSlices")) or (
                _optional_float(measures.get("SliceThickness"))
            )
        return cls(position, orientation, spacing, slice_spacing)


def _read_enhanced(
    ds: Dataset, path: str, series: SeriesHeader, pixels: bool
) -> DwiInstance | NotDwiInstance:
    image_type = _image_type_tokens(ds.get("ImageType"))
    derived = _derived_map_reason(image_type)
    if derived is not None:
        return NotDwiInstance(series, derived)
    shared_sequence = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_sequence[0] if shared_sequence else None
    per_frame_groups = ds.get("PerFrameFunctionalGroupsSequence") or []
    n_frames = _int_or_none(ds, "NumberOfFrames") or 1
    if len(per_frame_groups) != n_frames:
        raise UnreadableInstanceError(
            f"instance {path}: NumberOfFrames {n_frames} but {len(per_frame_groups)} "
            "per-frame functional group items",
            series_uid=series.uid,
            series_description=series.description,
        )
    candidates, directional = _isotropic_frames(per_frame_groups, shared)
    if not candidates:
        if directional:
            reason = (
                f"only directional diffusion frames ({directional}); no isotropic (trace) images"
            )
        else:
            reason = "not diffusion-weighted: no b-value in any MR Diffusion Sequence"
        return NotDwiInstance(series, reason)
    stored = _decode_stored(ds, n_frames, series, path) if pixels else _no_pixels(ds, n_frames)
    frames = []
    sop_class_uid = _text(ds, "SOPClassUID")
    sop_instance_uid = _text(ds, "SOPInstanceUID")
    for index, groups, b_value in candidates:
        where = f"instance {path} frame {index + 1}"
        geometry = _FrameGeometry.read(groups, shared, series, where)
        content = _functional_item(groups, None, "FrameContentSequence")
        slope, intercept = _rescale(
            _functional_item(groups, shared, "PixelValueTransformationSequence")
        )
        position, orientation, spacing = geometry.position, geometry.orientation, geometry.spacing
        frames.append(
            DwiFrame(
                path=path,
                sop_class_uid=sop_class_uid,
                sop_instance_uid=sop_instance_uid,
                series=series,
                frame_number=index + 1,
                b_value=b_value.value,
                b_source=b_value.source,
                position=(position[0], position[1], position[2]),
                orientation=(*orientation[:6],),  # type: ignore[arg-type]
                pixel_spacing=(spacing[0], spacing[1]),
                slice_spacing=geometry.slice_spacing,
                acquisition=_text(content, "StackID") if content is not None else "",
                stored=stored[index],
                slope=slope,
                intercept=intercept,
            )
        )
    return DwiInstance(series, tuple(frames))


def read_instance(
    path: Path | str, *, pixels: bool = True
) -> DwiInstance | NotDwiInstance | SkippedFile:
    """Read one stored file.

    ``pixels=False`` reads the header only (up to the pixel data): the frames'
    ``stored`` arrays are all-zero views of the right matrix, good for geometry
    and b-values (a coverage survey), not for composing.

    Returns
    -------
    DwiInstance
        The DWI frames of the file, pixels decoded.
    NotDwiInstance
        A DICOM image that is not DWI input, with the reason.
    SkippedFile
        Not a DICOM image at all (no ``DICM`` marker and unreadable, a DICOMDIR,
        a file without SOP Class or series).

    Raises
    ------
    UnreadableInstanceError
        A file with the ``DICM`` marker whose header cannot be parsed.
    MissingBValueError, GeometryMismatchError, UndecodablePixelDataError
        A DWI image without b-value, without usable geometry, or with pixel data
        that cannot be decoded.
    """
    path = Path(path)
    name = str(path)
    try:
        ds = dcmread(path, force=False, stop_before_pixels=not pixels)
    except InvalidDicomError:
        return SkippedFile(name, "not a DICOM file (no DICM marker, not a raw dataset)")
    except Exception as exc:
        # Parser failures surface as many types (EOFError, ValueError, struct.error ...).
        if has_dicom_preamble(path):
            raise UnreadableInstanceError(
                f"instance {name}: header cannot be parsed: {exc}"
            ) from exc
        return SkippedFile(name, f"not a DICOM file ({exc})")
    sop_class = UID(_text(ds, "SOPClassUID"))
    if not sop_class or not _text(ds, "SeriesInstanceUID"):
        return SkippedFile(name, "no SOP Class or Series Instance UID (e.g. a DICOMDIR)")
    series = _series_header(ds)
    if sop_class not in _SUPPORTED_SOP_CLASSES:
        return NotDwiInstance(series, f"not an MR image (SOP Class {sop_class.name or sop_class})")
    if sop_class == EnhancedMRImageStorage:
        return _read_enhanced(ds, name, series, pixels)
    return _read_classic(ds, name, series, pixels)
