"""A simulated MR scanner: writes a numerical phantom as a scanner would send it.

The output is the test bench for everything downstream (assembly, the SCP, the
demo). It mimics what real whole-body DWI exams look like on the wire:

- one study per exam, one frame of reference shared by all series;
- stations overlapping by a few slices, written as the scanner acquired them
  (the overlapping slices appear once in each station);
- the series split of the vendor: one series per station with all b-values
  (``station``), one per station and b-value (``station-b``), or one
  whole-body series (``body``, stations told apart by AcquisitionNumber, or by
  StackID for Enhanced MR);
- the b-value where each vendor keeps it (see :mod:`dicom_node.assembly.bvalues`),
  private creators optionally reserved in a non-default block;
- uint16 pixels with RescaleSlope/RescaleIntercept: one slope for the exam, or
  (Philips) one per image, so that a reader must apply it;
- distractors in the same study: the scanner's own ADC series (ImageType
  DERIVED\\PRIMARY\\DIFFUSION\\ADC, carrying the vendor b-value tag like GE
  does) and a T1-weighted series (with b = 0 in the GE/Philips private element,
  as those vendors write it on every MR image).

Series and instance UIDs derive from (patient id, scenario, seed, vendor,
split), so that writing the same phantom twice gives identical files. The study
and frame-of-reference UIDs are the phantom's own (``Phantom.study_instance_uid``,
``frame_of_reference_uid``) when it has them, so that the assembled exam carries
the same identity as ``Phantom.to_exam()``.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from dicom_node.simulator.enhanced_mr import EnhancedFrame, write_enhanced_mr
from dicom_node.simulator.vendor_tags import Vendor, add_private_b_value, vendor_identity

__all__ = [
    "PhantomLike",
    "PhantomStationLike",
    "SeriesSplit",
    "Vendor",
    "exam_uid",
    "format_ds",
    "write_exam",
]

MAX_STORED_VALUE = 4000
"""Largest stored pixel value (a 12-bit scanner range with headroom)."""


class PhantomStationLike(Protocol):
    """One station of a phantom: a run of slices of the common grid."""

    @property
    def first_slice(self) -> int: ...

    @property
    def n_slices(self) -> int: ...


class PhantomLike(Protocol):
    """What the scanner needs from :class:`processing.phantom.Phantom`."""

    @property
    def signal(self) -> NDArray[np.float32]: ...

    @property
    def b_values(self) -> Sequence[float]: ...

    @property
    def affine(self) -> NDArray[np.float64]: ...

    @property
    def spacing_mm(self) -> tuple[float, float, float]: ...

    @property
    def stations(self) -> Sequence[PhantomStationLike]: ...

    @property
    def patient_id(self) -> str: ...

    @property
    def scenario(self) -> str: ...

    @property
    def seed(self) -> int: ...


class SeriesSplit(enum.Enum):
    """How the scanner splits the DWI acquisition into series."""

    STATION = "station"
    STATION_B = "station-b"
    BODY = "body"


def format_ds(value: float) -> str:
    """Format a number as a Decimal String of at most 16 characters (PS3.5 6.2)."""
    text = f"{value:.8g}"
    return "0" if text in {"-0", "0"} else text


def exam_uid(phantom: PhantomLike, vendor: Vendor, split: SeriesSplit, *parts: str) -> UID:
    """A deterministic UID for one entity of the exam written from ``phantom``."""
    sources = [phantom.patient_id, phantom.scenario, str(phantom.seed), vendor.value, split.value]
    return generate_uid(entropy_srcs=[*sources, *parts])


_BASELINE_DATETIME = dt.datetime(2026, 1, 5, 8, 30, 0)
_FOLLOW_UP_INTERVAL = dt.timedelta(weeks=13)


@dataclass(frozen=True, slots=True)
class _Exam:
    """Everything shared by the series of one written exam."""

    phantom: PhantomLike
    vendor: Vendor
    split: SeriesSplit
    out_dir: Path
    study_uid: UID
    frame_of_reference_uid: UID
    study_datetime: dt.datetime
    exam_slope: float
    private_block: int
    ge_b_value_offset: bool
    siemens_csa: bool

    def uid(self, *parts: str) -> UID:
        return exam_uid(self.phantom, self.vendor, self.split, *parts)


# Each keyword is one option of the simulated scanner (a flag of `wbdwi phantom`).
def write_exam(  # noqa: PLR0913
    phantom: PhantomLike,
    out_dir: Path | str,
    *,
    vendor: Vendor | str = Vendor.STANDARD,
    split: SeriesSplit | str = SeriesSplit.STATION,
    distractors: bool = True,
    private_block: int = 0x10,
    ge_b_value_offset: bool = False,
    siemens_csa: bool = True,
    study_datetime: dt.datetime | None = None,
) -> list[Path]:
    """Write ``phantom`` as the DICOM files a scanner would send.

    Parameters
    ----------
    phantom
        A :class:`processing.phantom.Phantom` (or anything with its fields).
    out_dir
        Folder to write into; one sub-folder per series is created.
    vendor
        Header flavour: ``standard``, ``siemens``, ``ge``, ``philips`` or
        ``enhanced`` (Enhanced MR Image Storage, multi-frame).
    split
        ``station``, ``station-b`` or ``body`` (see :class:`SeriesSplit`).
    distractors
        Also write a scanner ADC series and a T1 series into the same study.
    private_block
        The block (0x10..0xFF) private creators reserve.
    ge_b_value_offset
        GE: add 10^9 to the b-value as some GE software does.
    siemens_csa
        Siemens: also write the CSA image header with ``B_value``.
    study_datetime
        Defaults to 2026-01-05 08:30 for the ``baseline`` scenario and 13 weeks
        later for any other scenario, so that follow-ups sort after baselines.

    Returns
    -------
    list of Path
        Every file written, in writing order.
    """
    vendor = Vendor(vendor)
    split = SeriesSplit(split)
    signal = np.asarray(phantom.signal, dtype=np.float32)
    if signal.ndim != 4 or signal.shape[0] != len(phantom.b_values):
        raise ValueError(
            f"phantom signal must be [b, z, y, x] with one plane per b-value, got {signal.shape}"
        )
    if not phantom.stations:
        raise ValueError("phantom has no stations")
    if study_datetime is None:
        study_datetime = _BASELINE_DATETIME
        if phantom.scenario != "baseline":
            study_datetime += _FOLLOW_UP_INTERVAL
    key = (phantom, vendor, split)
    peak = float(signal.max())
    exam_slope = float(format_ds(peak / MAX_STORED_VALUE)) if peak > 0 else 1.0
    exam = _Exam(
        phantom=phantom,
        vendor=vendor,
        split=split,
        out_dir=Path(out_dir),
        study_uid=UID(getattr(phantom, "study_instance_uid", None) or exam_uid(*key, "study")),
        frame_of_reference_uid=UID(
            getattr(phantom, "frame_of_reference_uid", None) or exam_uid(*key, "frame")
        ),
        study_datetime=study_datetime,
        exam_slope=exam_slope,
        private_block=private_block,
        ge_b_value_offset=ge_b_value_offset,
        siemens_csa=siemens_csa,
    )
    exam.out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if distractors:
        written += _write_t1_series(exam, series_number=2)
    for series_number, (description, images) in enumerate(_dwi_series(exam), start=10):
        if vendor is Vendor.ENHANCED:
            written.append(_write_enhanced_dwi(exam, series_number, description, images))
        else:
            written += _write_classic_dwi(exam, series_number, description, images)
    if distractors:
        written += _write_adc_series(exam, series_number=100)
    return written


@dataclass(frozen=True, slots=True)
class _Image:
    """One DWI image to write: grid slice ``z`` of station ``station`` at b index ``b_index``."""

    station: int
    b_index: int
    z: int


def _station_images(phantom: PhantomLike, station: int, b_indices: Sequence[int]) -> list[_Image]:
    info = phantom.stations[station]
    return [
        _Image(station, b_index, z)
        for b_index in b_indices
        for z in range(info.first_slice, info.first_slice + info.n_slices)
    ]


def _dwi_series(exam: _Exam) -> Iterator[tuple[str, list[_Image]]]:
    phantom = exam.phantom
    all_b = list(range(len(phantom.b_values)))
    n_stations = len(phantom.stations)
    if exam.split is SeriesSplit.BODY:
        images = [img for k in range(n_stations) for img in _station_images(phantom, k, all_b)]
        yield "WB DWI STIR trace", images
        return
    for k in range(n_stations):
        if exam.split is SeriesSplit.STATION:
            yield f"WB DWI st{k + 1} trace", _station_images(phantom, k, all_b)
        else:
            for b_index, b in enumerate(phantom.b_values):
                yield f"WB DWI st{k + 1} b{round(b)}", _station_images(phantom, k, [b_index])


# ----------------------------------------------------------------------------- headers


def _geometry(phantom: PhantomLike) -> tuple[list[str], list[str], NDArray[np.float64]]:
    """ImageOrientationPatient, PixelSpacing and the affine as float64."""
    affine = np.asarray(phantom.affine, dtype=np.float64)
    _, dy, dx = phantom.spacing_mm
    row_direction = affine[:3, 2] / dx  # along a row: increasing column index x
    column_direction = affine[:3, 1] / dy  # down a column: increasing row index y
    orientation = [format_ds(v) for v in (*row_direction, *column_direction)]
    return orientation, [format_ds(dy), format_ds(dx)], affine


def _position(affine: NDArray[np.float64], z: float) -> list[str]:
    point = affine[:3, 3] + z * affine[:3, 0]
    return [format_ds(round(float(v), 4)) for v in point]


def _common_header(exam: _Exam, series_number: int, description: str) -> Dataset:
    """Patient, study, series, equipment and frame-of-reference attributes."""
    phantom = exam.phantom
    identity = vendor_identity(exam.vendor)
    when = exam.study_datetime
    series_time = when + dt.timedelta(minutes=series_number % 60)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.InstanceCreationDate = when.strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = when.strftime("%Y%m%d")
    ds.StudyTime = when.strftime("%H%M%S")
    ds.SeriesTime = series_time.strftime("%H%M%S")
    ds.Modality = "MR"
    ds.Manufacturer = identity.manufacturer
    ds.ManufacturerModelName = identity.model_name
    ds.SoftwareVersions = identity.software_versions
    ds.StationName = identity.station_name
    ds.DeviceSerialNumber = "40123"
    ds.InstitutionName = "Simulated Hospital"
    ds.ReferringPhysicianName = "REFERRER^SIM"
    ds.StudyDescription = "MR Whole Body DWI"
    ds.SeriesDescription = description
    ds.ProtocolName = description
    ds.PatientName = f"PHANTOM^{phantom.patient_id}"
    ds.PatientID = phantom.patient_id
    ds.IssuerOfPatientID = "WBDWI-SIM"
    ds.PatientBirthDate = "19580312"
    ds.PatientSex = "M"
    ds.PatientAge = "067Y"
    ds.PatientWeight = "78"
    ds.PatientPosition = "HFS"
    ds.BodyPartExamined = "WHOLEBODY"
    ds.StudyInstanceUID = exam.study_uid
    ds.StudyID = "1"
    ds.AccessionNumber = "A" + exam.study_uid.replace(".", "")[-15:]
    ds.SeriesInstanceUID = exam.uid("series", str(series_number))
    ds.SeriesNumber = series_number
    ds.FrameOfReferenceUID = exam.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.MagneticFieldStrength = "1.5"
    ds.ImagedNucleus = "1H"
    ds.ImagingFrequency = "63.68"
    return ds


def _mr_acquisition(ds: Dataset, *, diffusion: bool) -> None:
    if diffusion:
        ds.ScanningSequence = ["EP", "IR"]
        ds.SequenceVariant = ["SK", "SP", "MP"]
        ds.ScanOptions = ["IR", "FS"]
        ds.RepetitionTime = "6800"
        ds.EchoTime = "68"
        ds.InversionTime = "180"
        ds.EchoTrainLength = "1"
        ds.NumberOfAverages = "4"
    else:
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = ["SK", "SP"]
        ds.ScanOptions = ""
        ds.RepetitionTime = "550"
        ds.EchoTime = "12"
        ds.EchoTrainLength = "3"
        ds.NumberOfAverages = "1"
    ds.MRAcquisitionType = "2D"
    ds.FlipAngle = "90"


def _file_meta(sop_class_uid: UID, transfer_syntax: UID) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "WBDWI_SIM_1"
    return meta


def _classic_template(
    exam: _Exam, series_number: int, description: str, image_type: list[str]
) -> Dataset:
    """A classic MR Image Storage header with everything but the per-image values."""
    ds = _common_header(exam, series_number, description)
    orientation, pixel_spacing, _ = _geometry(exam.phantom)
    transfer_syntax = ImplicitVRLittleEndian if exam.vendor is Vendor.GE else ExplicitVRLittleEndian
    ds.file_meta = _file_meta(MRImageStorage, transfer_syntax)
    ds.SOPClassUID = MRImageStorage
    ds.ImageType = image_type
    ds.ImageOrientationPatient = orientation
    ds.PixelSpacing = pixel_spacing
    signal_shape = exam.phantom.signal.shape
    ds.Rows = signal_shape[2]
    ds.Columns = signal_shape[3]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    return ds


def _write_file(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(path, enforce_file_format=True)
    return path


def _series_folder(exam: _Exam, series_number: int, description: str) -> Path:
    slug = "".join(c if c.isalnum() else "_" for c in description).strip("_")
    return exam.out_dir / f"S{series_number:03d}_{slug}"


def _quantise(values: NDArray[np.float32], slope: float) -> NDArray[np.uint16]:
    stored = np.clip(np.rint(values / slope), 0, np.iinfo(np.uint16).max)
    little_endian: NDArray[np.uint16] = stored.astype("<u2")
    return little_endian


def _image_slope(exam: _Exam, image_signal: NDArray[np.float32]) -> float:
    """Philips scales each image to its own range; the others use one exam slope."""
    if exam.vendor is not Vendor.PHILIPS:
        return exam.exam_slope
    floor = exam.exam_slope * MAX_STORED_VALUE * 1e-3
    return float(format_ds(max(float(image_signal.max()), floor) / MAX_STORED_VALUE))


# ----------------------------------------------------------------------------- DWI


def _write_classic_dwi(
    exam: _Exam, series_number: int, description: str, images: list[_Image]
) -> list[Path]:
    phantom = exam.phantom
    ds = _classic_template(
        exam, series_number, description, ["ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW"]
    )
    _mr_acquisition(ds, diffusion=True)
    slice_spacing = phantom.spacing_mm[0]
    ds.SliceThickness = format_ds(slice_spacing)
    ds.SpacingBetweenSlices = format_ds(slice_spacing)
    ds.RescaleIntercept = "0"
    ds.RescaleType = "US"
    _, _, affine = _geometry(phantom)
    folder = _series_folder(exam, series_number, description)
    written = []
    for instance_number, image in enumerate(images, start=1):
        b_value = float(phantom.b_values[image.b_index])
        pixels = phantom.signal[image.b_index, image.z]
        slope = _image_slope(exam, pixels)
        ds.SOPInstanceUID = exam.uid("dwi", str(series_number), str(instance_number))
        ds.InstanceNumber = instance_number
        ds.AcquisitionNumber = image.station + 1
        acquired = exam.study_datetime + dt.timedelta(minutes=10 + 4 * image.station)
        ds.AcquisitionTime = ds.ContentTime = acquired.strftime("%H%M%S")
        ds.ImagePositionPatient = _position(affine, image.z)
        ds.SliceLocation = ds.ImagePositionPatient[2]
        ds.SequenceName = f"*ep_b{round(b_value)}t" if exam.vendor is Vendor.SIEMENS else "EPI_DWI"
        _set_b_value(ds, exam, b_value)
        ds.RescaleSlope = format_ds(slope)
        ds.PixelData = _quantise(pixels, slope).tobytes()
        written.append(_write_file(ds, folder / f"IM{instance_number:05d}.dcm"))
    return written


def _set_b_value(ds: Dataset, exam: _Exam, b_value: float) -> None:
    if exam.vendor is Vendor.STANDARD:
        ds.DiffusionBValue = b_value
        return
    add_private_b_value(
        ds,
        exam.vendor,
        b_value,
        block=exam.private_block,
        ge_offset=exam.ge_b_value_offset,
        siemens_csa=exam.siemens_csa,
    )


def _write_enhanced_dwi(
    exam: _Exam, series_number: int, description: str, images: list[_Image]
) -> Path:
    phantom = exam.phantom
    ds = _common_header(exam, series_number, description)
    orientation, pixel_spacing, affine = _geometry(phantom)
    frames = []
    in_stack_counter: dict[tuple[int, int], int] = {}
    for image in images:
        key = (image.station, image.b_index)
        in_stack_counter[key] = in_stack_counter.get(key, 0) + 1
        frames.append(
            EnhancedFrame(
                pixels=_quantise(phantom.signal[image.b_index, image.z], exam.exam_slope),
                position=_position(affine, image.z),
                b_value=float(phantom.b_values[image.b_index]),
                b_index=image.b_index + 1,
                stack_id=str(image.station + 1),
                in_stack_position=in_stack_counter[key],
            )
        )
    ds.SOPInstanceUID = exam.uid("dwi", str(series_number), "1")
    ds.InstanceNumber = 1
    acquired = exam.study_datetime + dt.timedelta(minutes=10)
    ds.AcquisitionDateTime = acquired.strftime("%Y%m%d%H%M%S")
    ds.ContentTime = acquired.strftime("%H%M%S")
    write_enhanced_mr(
        ds,
        frames,
        orientation=orientation,
        pixel_spacing=pixel_spacing,
        slice_thickness=format_ds(phantom.spacing_mm[0]),
        rescale_slope=format_ds(exam.exam_slope),
        dimension_organization_uid=exam.uid("dimension-organization", str(series_number)),
    )
    ds.file_meta = _file_meta(ds.SOPClassUID, ExplicitVRLittleEndian)
    folder = _series_folder(exam, series_number, description)
    return _write_file(ds, folder / "IM00001.dcm")


# ----------------------------------------------------------------------------- distractors


def _write_adc_series(exam: _Exam, series_number: int) -> list[Path]:
    """The scanner's own ADC map (10^-6 mm2/s), one image per grid slice of every station."""
    phantom = exam.phantom
    b_values = [float(b) for b in phantom.b_values]
    low, high = int(np.argmin(b_values)), int(np.argmax(b_values))
    description = "WB DWI ADC"
    ds = _classic_template(
        exam, series_number, description, ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]
    )
    _mr_acquisition(ds, diffusion=True)
    ds.SliceThickness = ds.SpacingBetweenSlices = format_ds(phantom.spacing_mm[0])
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "10-6.mm2/s"
    _, _, affine = _geometry(phantom)
    folder = _series_folder(exam, series_number, description)
    signal = phantom.signal
    floor = 0.05 * float(signal[low].max())
    written = []
    images = [
        img for k in range(len(phantom.stations)) for img in _station_images(phantom, k, [low])
    ]
    for instance_number, image in enumerate(images, start=1):
        s_low = signal[low, image.z].astype(np.float64)
        s_high = signal[high, image.z].astype(np.float64)
        valid = (s_low > floor) & (s_high > 0)
        ratio = np.divide(s_low, s_high, out=np.ones_like(s_low), where=valid)
        adc = np.where(valid, np.log(ratio) / (b_values[high] - b_values[low]) * 1e6, 0.0)
        ds.SOPInstanceUID = exam.uid("adc", str(instance_number))
        ds.InstanceNumber = instance_number
        ds.AcquisitionNumber = image.station + 1
        ds.ImagePositionPatient = _position(affine, image.z)
        ds.SliceLocation = ds.ImagePositionPatient[2]
        if exam.vendor is not Vendor.ENHANCED:
            _set_b_value(ds, exam, b_values[high])
        ds.PixelData = np.clip(np.rint(adc), 0, 4095).astype("<u2").tobytes()
        written.append(_write_file(ds, folder / f"IM{instance_number:05d}.dcm"))
    return written


def _write_t1_series(exam: _Exam, series_number: int) -> list[Path]:
    """A T1-weighted whole-body series (every other grid slice, double thickness)."""
    phantom = exam.phantom
    description = "WB T1 TSE"
    ds = _classic_template(exam, series_number, description, ["ORIGINAL", "PRIMARY", "M", "ND"])
    _mr_acquisition(ds, diffusion=False)
    ds.SliceThickness = ds.SpacingBetweenSlices = format_ds(2 * phantom.spacing_mm[0])
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = format_ds(exam.exam_slope)
    ds.SequenceName = "*tse2d1_3"
    if exam.vendor in (Vendor.GE, Vendor.PHILIPS):
        # GE and Philips carry their b-value element on every MR image, 0 when not DWI.
        _set_b_value(ds, exam, 0.0)
    _, _, affine = _geometry(phantom)
    folder = _series_folder(exam, series_number, description)
    low = int(np.argmin([float(b) for b in phantom.b_values]))
    written = []
    for instance_number, z in enumerate(range(0, phantom.signal.shape[1], 2), start=1):
        ds.SOPInstanceUID = exam.uid("t1", str(instance_number))
        ds.InstanceNumber = instance_number
        ds.AcquisitionNumber = 1
        ds.ImagePositionPatient = _position(affine, z)
        ds.SliceLocation = ds.ImagePositionPatient[2]
        ds.PixelData = _quantise(phantom.signal[low, z], exam.exam_slope).tobytes()
        written.append(_write_file(ds, folder / f"IM{instance_number:05d}.dcm"))
    return written
