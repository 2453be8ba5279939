"""What every result object shares: identity, deterministic UIDs, copied headers, geometry.

A :class:`WriterContext` is built once per exam by
:func:`dicom_node.writers.write_results.write_results` and handed to each writer. It
holds

- the node's identity (manufacturer, model, software version, algorithm) that
  goes into the General / Enhanced General Equipment modules, the Contributing
  Equipment Sequence (PS3.3 C.7.5.1) and the SEG/SR algorithm identification;
- a :class:`UidFactory` whose UIDs depend only on the input instance UIDs, the
  software version and the processing settings, so that processing the same
  input twice yields the same UIDs and PACS de-duplicates the results;
- the patient and study attributes of the input, read again from a source
  header (never from the pixels), and the MR acquisition attributes that a
  derived MR image must carry (Type 1 in the MR Image Module, PS3.3 C.8.3.1);
- the geometry of the composed exam grid (:class:`ExamGrid`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import highdicom as hd
import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sr.codedict import codes

from dicom_node.writers.errors import ResultGeometryError, SourceReferenceError, WriterError
from processing.exam import DwiExam, SourceRef

__all__ = [
    "ALGORITHM_NAME",
    "MANUFACTURER",
    "MODEL_NAME",
    "ExamGrid",
    "UidFactory",
    "WriterContext",
    "WriterIdentity",
    "check_on_grid",
    "computed_series_kind",
    "set_dimension_organization_uid",
]

MANUFACTURER = "wbdwi-node"
MODEL_NAME = "wbdwi-node WB-DWI analysis"
ALGORITHM_NAME = "wbdwi-node total tumour load"

# Namespace of the name-based (SHA-1, RFC 4122 version 5) UUIDs behind every
# result UID. Fixed forever: changing it would change every UID the node emits.
_UID_NAMESPACE = uuid.UUID("6f2b1c9e-4a57-5d0b-9c1e-3b8d2f7a6e14")

# Attributes of the Patient, Clinical Trial Subject, General Study and Patient
# Study modules copied verbatim from the input (PS3.3 C.7.1.1, C.7.2.1, C.7.2.2).
_PATIENT_STUDY_KEYWORDS = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "OtherPatientIDsSequence",
    "PatientBirthDate",
    "PatientSex",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "ReferringPhysicianName",
    "StudyDescription",
)

# MR acquisition attributes a derived MR image repeats from its source
# (MR Image Module, PS3.3 C.8.3.1). Type 1 ones get a DWI-EPI fallback below.
_MR_ACQUISITION_KEYWORDS = (
    "ScanningSequence",
    "SequenceVariant",
    "ScanOptions",
    "MRAcquisitionType",
    "SequenceName",
    "RepetitionTime",
    "EchoTime",
    "EchoTrainLength",
    "InversionTime",
    "MagneticFieldStrength",
    "ImagedNucleus",
    "ImagingFrequency",
    "NumberOfAverages",
)
_MR_TYPE1_FALLBACKS = {"ScanningSequence": "EP", "SequenceVariant": "NONE"}
_MR_TYPE2_KEYWORDS = ("ScanOptions", "MRAcquisitionType", "EchoTime", "EchoTrainLength")


@dataclass(frozen=True, slots=True)
class WriterIdentity:
    """Who made the results: written into every object.

    Parameters
    ----------
    software_version
        Version label of the node (SoftwareVersions, algorithm version).
    device_serial_number
        Serial number of this installation (Enhanced General Equipment Module,
        Type 1 in SEG and Parametric Map).
    institution_name
        Optional institution of the node (General Equipment Module, Type 3).
    """

    software_version: str
    device_serial_number: str
    institution_name: str = ""
    manufacturer: str = MANUFACTURER
    model_name: str = MODEL_NAME
    algorithm_name: str = ALGORITHM_NAME

    def __post_init__(self) -> None:
        if not self.software_version.strip():
            raise ValueError("software_version must not be empty")
        if not self.device_serial_number.strip():
            raise ValueError("device_serial_number must not be empty")


@dataclass(frozen=True, slots=True)
class UidFactory:
    """Deterministic DICOM UIDs for one exam's results.

    Each UID is ``2.25.<int>`` of a name-based UUID (RFC 4122 version 5,
    PS3.5 B.2) of ``seed`` and the given parts, so the same parts always give
    the same UID and different parts give different UIDs.
    """

    seed: str

    @classmethod
    def for_exam(
        cls,
        exam: DwiExam,
        software_version: str,
        settings_digest: str,
        device_class: str = "cpu",
    ) -> UidFactory:
        """Seed from the input instance UIDs, the software version, the settings and the device.

        ``device_class`` (``cpu`` or ``gpu``) enters the seed when it is not
        ``cpu`` (CPU UIDs stay what they were): the GPU's maps differ from the
        CPU's in the last float32 bits (``docs/algorithm.md``, section 9), so
        the same exam on the other device gives other bytes and must not
        reuse the same SOP Instance UIDs. On one device, runs are
        byte-identical and give the same UIDs.
        """
        digest = hashlib.sha256()
        for sop_uid in sorted({ref.sop_instance_uid for ref in exam.sources}):
            digest.update(sop_uid.encode("ascii"))
            digest.update(b"\0")
        digest.update(f"version={software_version}\0settings={settings_digest}".encode())
        if device_class != "cpu":
            digest.update(f"\0device={device_class}".encode())
        return cls(seed=digest.hexdigest())

    def uid(self, *parts: str | int | float) -> str:
        """The UID named by ``parts`` (e.g. ``("adc", "instance", 12)``)."""
        name = "/".join([self.seed, *(str(part) for part in parts)])
        return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


@dataclass(frozen=True, slots=True)
class ExamGrid:
    """Image Plane attributes of every slice of the composed exam grid (PS3.3 C.7.6.2)."""

    rows: int
    columns: int
    slices: int
    pixel_spacing: tuple[float, float]  # (between rows, between columns), mm
    slice_spacing: float
    orientation: tuple[float, float, float, float, float, float]  # row then column cosines
    positions: NDArray[np.float64]  # [z, 3] LPS mm of the first voxel of each slice

    @classmethod
    def from_exam(cls, exam: DwiExam) -> ExamGrid:
        """Derive slice positions and orientation from the exam affine."""
        affine = np.asarray(exam.affine, dtype=np.float64)
        _, slices, rows, columns = exam.shape
        slice_axis, column_axis, row_axis = affine[:3, 0], affine[:3, 1], affine[:3, 2]
        norms = [float(np.linalg.norm(axis)) for axis in (slice_axis, column_axis, row_axis)]
        if min(norms) <= 0.0:
            raise ResultGeometryError(f"exam affine has a zero-length axis: {affine.tolist()}")
        row_cosines = row_axis / norms[2]
        column_cosines = column_axis / norms[1]
        orientation = tuple(float(v) for v in (*row_cosines, *column_cosines))
        indices = np.arange(slices, dtype=np.float64)
        positions = indices[:, None] * slice_axis[None, :] + affine[:3, 3][None, :]
        return cls(
            rows=rows,
            columns=columns,
            slices=slices,
            pixel_spacing=(norms[1], norms[2]),
            slice_spacing=norms[0],
            orientation=orientation,  # type: ignore[arg-type]
            positions=positions,
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(z, y, x)``."""
        return (self.slices, self.rows, self.columns)


def check_on_grid(name: str, array: NDArray[np.generic], grid: ExamGrid) -> None:
    """Raise :class:`ResultGeometryError` unless ``array`` has the grid's ``(z, y, x)`` shape."""
    if tuple(array.shape) != grid.shape:
        raise ResultGeometryError(
            f"{name} has shape {tuple(array.shape)} but the exam grid is {grid.shape} (z, y, x)"
        )


def _read_header(path: str) -> Dataset:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except (OSError, InvalidDicomError) as exc:
        raise SourceReferenceError(f"cannot read source header {path!r}: {exc}") from exc


def _sources_by_slice(exam: DwiExam, grid: ExamGrid) -> dict[int, tuple[SourceRef, ...]]:
    """The exam's source references of each grid slice; raise unless every slice has one."""
    by_slice: dict[int, list[SourceRef]] = defaultdict(list)
    for ref in exam.sources:
        if not 0 <= ref.slice_index < grid.slices:
            raise SourceReferenceError(
                f"source {ref.sop_instance_uid} has slice_index {ref.slice_index} outside "
                f"the exam grid of {grid.slices} slices"
            )
        by_slice[ref.slice_index].append(ref)
    missing = [z for z in range(grid.slices) if z not in by_slice]
    if missing:
        raise SourceReferenceError(
            f"exam slices {missing[:10]} have no source references "
            f"({len(missing)} of {grid.slices})"
        )
    return {z: tuple(refs) for z, refs in by_slice.items()}


def _series_headers(exam: DwiExam) -> dict[str, Dataset]:
    """The header of the first source of each input series; raise when one is of another study."""
    first_by_series: dict[str, SourceRef] = {}
    for ref in exam.sources:
        first_by_series.setdefault(ref.series_instance_uid, ref)
    headers = {uid: _read_header(ref.path) for uid, ref in first_by_series.items()}
    for series_uid, header in headers.items():
        if header.get("StudyInstanceUID") != exam.study_instance_uid:
            raise SourceReferenceError(
                f"source series {series_uid} belongs to study "
                f"{header.get('StudyInstanceUID')!r}, not the exam's study "
                f"{exam.study_instance_uid}"
            )
    return headers


def _patient_study(reference: Dataset, patient_id: str) -> Dataset:
    """Patient and General Study attributes copied from the reference input header."""
    patient_study = Dataset()
    for keyword in _PATIENT_STUDY_KEYWORDS:
        if keyword in reference:
            patient_study[keyword] = reference[keyword]
    for keyword in ("PatientName", "PatientBirthDate", "PatientSex"):
        patient_study.setdefault(keyword, None)  # Type 2: present, maybe empty
    for keyword in ("StudyDate", "StudyTime", "StudyID", "AccessionNumber"):
        patient_study.setdefault(keyword, None)
    patient_study.setdefault("ReferringPhysicianName", None)
    patient_study.PatientID = reference.get("PatientID", patient_id) or patient_id
    return patient_study


def _mr_acquisition(reference: Dataset) -> Dataset:
    """MR acquisition attributes of the input, with fallbacks for Type 1 and empty Type 2."""
    mr_acquisition = Dataset()
    for keyword in _MR_ACQUISITION_KEYWORDS:
        if keyword in reference and reference[keyword].value not in (None, ""):
            mr_acquisition[keyword] = reference[keyword]
    for keyword, fallback in _MR_TYPE1_FALLBACKS.items():
        mr_acquisition.setdefault(keyword, fallback)
    for keyword in _MR_TYPE2_KEYWORDS:
        mr_acquisition.setdefault(keyword, None)
    return mr_acquisition


def _acquisition_equipment(reference: Dataset) -> Dataset:
    """The scanner's General Equipment attributes that the input has (not empty)."""
    equipment = Dataset()
    for keyword in (
        "Manufacturer",
        "ManufacturerModelName",
        "DeviceSerialNumber",
        "SoftwareVersions",
        "InstitutionName",
        "StationName",
    ):
        if keyword in reference and reference[keyword].value not in (None, ""):
            equipment[keyword] = reference[keyword]
    return equipment


@dataclass(frozen=True, slots=True)
class WriterContext:
    """Everything the writers share for one exam (see the module docstring)."""

    exam: DwiExam
    identity: WriterIdentity
    uids: UidFactory
    grid: ExamGrid
    patient_study: Dataset
    mr_acquisition: Dataset
    acquisition_equipment: Dataset
    body_part_examined: str
    slice_thickness: float
    first_series_number: int
    series_kinds: tuple[str, ...]
    content_datetime: datetime
    sources_by_slice: dict[int, tuple[SourceRef, ...]] = field(repr=False)

    @classmethod
    def create(
        cls,
        exam: DwiExam,
        identity: WriterIdentity,
        settings_digest: str,
        *,
        computed_b_values: Sequence[float] = (),
        content_datetime: datetime | None = None,
        device_class: str = "cpu",
    ) -> WriterContext:
        """Read the source headers that the writers need and fix the UIDs.

        ``device_class`` is the class of the device that computed the result
        (``cpu`` or ``gpu``; see :meth:`UidFactory.for_exam`).

        ``computed_b_values`` fixes the series numbers: Parametric Map, ADC,
        one series per computed b-value, class SEG, lesion SEG, SR, key
        images, in that order,
        from the next thousand above the highest series number of the DWI input
        (scanners number their own series, distractors included, well below).

        Raises
        ------
        SourceReferenceError
            When the exam has no source references, a slice has none, or a
            referenced file cannot be read or belongs to another study.
        """
        if not exam.sources:
            raise SourceReferenceError(
                "the exam has no source references; results must reference their input"
            )
        grid = ExamGrid.from_exam(exam)
        sources_by_slice = _sources_by_slice(exam, grid)
        headers = _series_headers(exam)
        reference = headers[exam.sources[0].series_instance_uid]
        series_numbers = [int(h.SeriesNumber) for h in headers.values() if h.get("SeriesNumber")]
        highest = max(series_numbers, default=0)
        thickness = reference.get("SliceThickness")
        return cls(
            exam=exam,
            identity=identity,
            uids=UidFactory.for_exam(
                exam, identity.software_version, settings_digest, device_class
            ),
            grid=grid,
            patient_study=_patient_study(reference, exam.patient_id),
            mr_acquisition=_mr_acquisition(reference),
            acquisition_equipment=_acquisition_equipment(reference),
            body_part_examined=str(reference.get("BodyPartExamined", "") or "WHOLEBODY"),
            slice_thickness=float(thickness) if thickness else grid.slice_spacing,
            first_series_number=(highest // 1000 + 1) * 1000,
            series_kinds=(
                "adc-pm",
                "adc",
                *(computed_series_kind(b) for b in computed_b_values),
                "seg",
                "seg-lesions",
                "sr",
                "key-images",
            ),
            content_datetime=content_datetime or datetime.now().replace(microsecond=0),
            sources_by_slice=sources_by_slice,
        )

    def series_number(self, kind: str) -> int:
        """Series number of the result series ``kind`` (above every input series number)."""
        if kind not in self.series_kinds:
            raise WriterError(f"no series number for {kind!r}; known: {self.series_kinds}")
        return self.first_series_number + self.series_kinds.index(kind)

    def stamp_series(self, dataset: Dataset) -> None:
        """Series, Content and Instance Creation Date/Time of a result: when the node made it.

        Every result series carries the processing time (``content_datetime``)
        as its Series Date/Time, so that viewers list it with a date and a
        later version of the results is told apart from an earlier one; the
        acquisition keeps its Study Date and the source references.
        """
        when = self.content_datetime
        dataset.SeriesDate = when.strftime("%Y%m%d")
        dataset.SeriesTime = when.strftime("%H%M%S")
        dataset.ContentDate = dataset.SeriesDate
        dataset.ContentTime = dataset.SeriesTime
        # highdicom stamps the wall clock on the instance and on the equipment
        # item it adds for itself; the same input must give the same object.
        dataset.InstanceCreationDate = dataset.SeriesDate
        dataset.InstanceCreationTime = dataset.SeriesTime
        for item in dataset.get("ContributingEquipmentSequence", []):
            if "ContributionDateTime" in item:
                item.ContributionDateTime = when.strftime("%Y%m%d%H%M%S")

    def contributing_equipment(self, description: str) -> list[hd.ContributingEquipment]:
        """The scanner that acquired the input and this node that processed it (PS3.3 C.7.5.1)."""
        items: list[hd.ContributingEquipment] = []
        scanner = self.acquisition_equipment
        if "Manufacturer" in scanner:
            items.append(
                hd.ContributingEquipment(
                    manufacturer=str(scanner.Manufacturer),
                    purpose_of_reference=codes.DCM.AcquisitionEquipment,
                    manufacturer_model_name=_optional_str(scanner, "ManufacturerModelName"),
                    device_serial_number=_optional_str(scanner, "DeviceSerialNumber"),
                    institution_name=_optional_str(scanner, "InstitutionName"),
                    station_name=_optional_str(scanner, "StationName"),
                )
            )
        items.append(
            hd.ContributingEquipment(
                manufacturer=self.identity.manufacturer,
                purpose_of_reference=codes.DCM.ProcessingEquipment,
                manufacturer_model_name=self.identity.model_name,
                software_versions=self.identity.software_version,
                device_serial_number=self.identity.device_serial_number,
                institution_name=self.identity.institution_name or None,
                contribution_datetime=self.content_datetime,
                contribution_description=description,
            )
        )
        return items

    def _instances(self) -> dict[str, tuple[SourceRef, list[int]]]:
        """Distinct source instances in exam order, with their referenced frames."""
        instances: dict[str, tuple[SourceRef, list[int]]] = {}
        for ref in self.exam.sources:
            _, frames = instances.setdefault(ref.sop_instance_uid, (ref, []))
            if ref.frame_number is not None:
                frames.append(ref.frame_number)
        return instances

    def source_evidence(self) -> list[Dataset]:
        """One minimal dataset (identity only) per source instance, for SR evidence."""
        evidence = []
        for ref, _ in self._instances().values():
            item = Dataset()
            item.SOPClassUID = ref.sop_class_uid
            item.SOPInstanceUID = ref.sop_instance_uid
            item.SeriesInstanceUID = ref.series_instance_uid
            item.StudyInstanceUID = self.exam.study_instance_uid
            evidence.append(item)
        return evidence


def set_dimension_organization_uid(dataset: Dataset, uid: str) -> None:
    """Give a multi-frame object's dimension organization a reproducible UID.

    highdicom draws a random Dimension Organization UID (0020,9164) for each
    object it builds; the node's outputs are a function of their input, so the
    same input must give byte-identical objects (a re-sent study, a rebuilt node).
    The UID is set in the Dimension Organization Sequence and in every item of
    the Dimension Index Sequence, which must agree (PS3.3 C.7.6.17).
    """
    for keyword in ("DimensionOrganizationSequence", "DimensionIndexSequence"):
        for item in dataset.get(keyword, []):
            item.DimensionOrganizationUID = uid


def computed_series_kind(b_value: float) -> str:
    """Name of the derived series of one computed b-value (UIDs, series numbers, folders)."""
    return f"computed-b{b_value:g}"


def _optional_str(dataset: Dataset, keyword: str) -> str | None:
    value = dataset.get(keyword)
    if value is None or value == "":
        return None
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "\\".join(str(v) for v in value)
    return str(value)
