"""MPPS SCU: tell a node that an exam started and which instances it produced.

What a scanner does (PS3.4 annex F): N-CREATE a Modality Performed Procedure
Step with status ``IN PROGRESS`` when the exam starts, then N-SET it to
``COMPLETED`` with the Performed Series Sequence listing every series and SOP
instance it made. ``wbdwi send --mpps`` uses this to play the scanner.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import generate_uid
from pynetdicom.association import Association

from dicom_node.errors import SendError
from dicom_node.receive.scp import MODALITY_PERFORMED_PROCEDURE_STEP
from dicom_node.scu.association import associate, reactor_paused
from dicom_node.scu.send import Destination

__all__ = [
    "PerformedExam",
    "PerformedSeries",
    "complete_mpps",
    "create_mpps",
    "performed_exam",
]


@dataclass(frozen=True, slots=True)
class PerformedSeries:
    """One series the exam produced, with its instances ``(SOP class, SOP instance)``."""

    series_uid: str
    description: str
    protocol_name: str
    instances: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class PerformedExam:
    """What an MPPS describes: the study, the patient attributes and the series."""

    study_uid: str
    patient: Dataset
    modality: str
    study_id: str
    accession_number: str
    series: tuple[PerformedSeries, ...]

    @property
    def instance_count(self) -> int:
        """Instances over all series."""
        return sum(len(s.instances) for s in self.series)


_PATIENT_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
)


def performed_exam(paths: Sequence[Path | str]) -> PerformedExam:
    """Read the headers of an exam's files into a :class:`PerformedExam`.

    Raises :class:`~dicom_node.errors.SendError` when the files are not one study.
    """
    series: dict[str, tuple[str, str, list[tuple[str, str]]]] = {}
    first: Dataset | None = None
    studies: set[str] = set()
    for path in paths:
        try:
            header = dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError) as error:
            raise SendError(f"{path} is not a readable DICOM file: {error}") from None
        first = first or header
        studies.add(str(header.StudyInstanceUID))
        entry = series.setdefault(
            str(header.SeriesInstanceUID),
            (str(header.get("SeriesDescription", "")), str(header.get("ProtocolName", "")), []),
        )
        entry[2].append((str(header.SOPClassUID), str(header.SOPInstanceUID)))
    if first is None:
        raise SendError("no files to describe in an MPPS")
    if len(studies) != 1:
        raise SendError(f"an MPPS describes one study; the files hold {len(studies)}")
    patient = Dataset()
    for keyword in _PATIENT_KEYWORDS:
        setattr(patient, keyword, first.get(keyword, ""))
    return PerformedExam(
        study_uid=studies.pop(),
        patient=patient,
        modality=str(first.get("Modality", "MR")),
        study_id=str(first.get("StudyID", "")),
        accession_number=str(first.get("AccessionNumber", "")),
        series=tuple(
            PerformedSeries(uid, description, protocol, tuple(instances))
            for uid, (description, protocol, instances) in series.items()
        ),
    )


def _association(destination: Destination) -> AbstractContextManager[Association]:
    return associate(destination, [(MODALITY_PERFORMED_PROCEDURE_STEP, None)], purpose="MPPS")


def _now() -> tuple[str, str]:
    now = dt.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def create_mpps(destination: Destination, exam: PerformedExam) -> str:
    """N-CREATE an ``IN PROGRESS`` MPPS for ``exam``; returns its SOP Instance UID.

    Attributes follow PS3.4 F.7.2.1 (Table F.7.2-1).
    """
    date, time = _now()
    attributes = Dataset()
    step = Dataset()
    step.StudyInstanceUID = exam.study_uid
    step.AccessionNumber = exam.accession_number
    step.RequestedProcedureID = ""
    step.RequestedProcedureDescription = ""
    step.ScheduledProcedureStepID = ""
    step.ScheduledProcedureStepDescription = ""
    step.ReferencedStudySequence = DicomSequence()
    attributes.ScheduledStepAttributesSequence = DicomSequence([step])
    attributes.update(exam.patient)
    attributes.ReferencedPatientSequence = DicomSequence()
    attributes.PerformedProcedureStepID = date + time
    attributes.PerformedStationAETitle = destination.calling_aet
    attributes.PerformedStationName = ""
    attributes.PerformedLocation = ""
    attributes.PerformedProcedureStepStartDate = date
    attributes.PerformedProcedureStepStartTime = time
    attributes.PerformedProcedureStepStatus = "IN PROGRESS"
    attributes.PerformedProcedureStepDescription = "whole-body DWI"
    attributes.PerformedProcedureTypeDescription = ""
    attributes.ProcedureCodeSequence = DicomSequence()
    attributes.PerformedProcedureStepEndDate = None
    attributes.PerformedProcedureStepEndTime = None
    attributes.Modality = exam.modality
    attributes.StudyID = exam.study_id
    attributes.PerformedProtocolCodeSequence = DicomSequence()
    attributes.PerformedSeriesSequence = DicomSequence()
    mpps_uid = str(generate_uid())
    with _association(destination) as association, reactor_paused(association):
        status, _ = association.send_n_create(
            attributes, MODALITY_PERFORMED_PROCEDURE_STEP, mpps_uid
        )
    _check(status, "N-CREATE", destination)
    return mpps_uid


def complete_mpps(destination: Destination, mpps_uid: str, exam: PerformedExam) -> None:
    """N-SET the MPPS to ``COMPLETED`` with every performed series and instance (F.7.2.2)."""
    date, time = _now()
    modifications = Dataset()
    modifications.PerformedProcedureStepStatus = "COMPLETED"
    modifications.PerformedProcedureStepEndDate = date
    modifications.PerformedProcedureStepEndTime = time
    items = []
    for series in exam.series:
        item = Dataset()
        item.PerformingPhysicianName = ""
        item.ProtocolName = series.protocol_name
        item.OperatorsName = ""
        item.SeriesInstanceUID = series.series_uid
        item.SeriesDescription = series.description
        item.RetrieveAETitle = ""
        images = []
        for sop_class, sop_instance in series.instances:
            image = Dataset()
            image.ReferencedSOPClassUID = sop_class
            image.ReferencedSOPInstanceUID = sop_instance
            images.append(image)
        item.ReferencedImageSequence = DicomSequence(images)
        item.ReferencedNonImageCompositeSOPInstanceSequence = DicomSequence()
        items.append(item)
    modifications.PerformedSeriesSequence = DicomSequence(items)
    with _association(destination) as association, reactor_paused(association):
        status, _ = association.send_n_set(
            modifications, MODALITY_PERFORMED_PROCEDURE_STEP, mpps_uid
        )
    _check(status, "N-SET", destination)


def _check(status: Dataset, operation: str, destination: Destination) -> None:
    if "Status" not in status:
        raise SendError(f"no {operation} response from {destination}")
    code = int(status.Status)
    if code != 0x0000:
        raise SendError(f"{operation} of the MPPS at {destination} failed: status 0x{code:04X}")
