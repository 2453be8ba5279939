"""Priors from PACS: find and fetch this node's earlier reports of a patient (issue 6).

A new node, or one whose disk was rebuilt, learns a patient's history from the
reports it sent to PACS before:

1. **C-FIND, Study Root, STUDY level** (PS3.4 C.6.2): the patient's studies
   (Patient ID, and Issuer of Patient ID when known), with their date and time.
2. **C-FIND, SERIES level** in each study: SR series (Modality ``SR``) whose
   Manufacturer is this node's (and, when given, whose Series Description is
   the report's); then **IMAGE level** for the SOP Instance UIDs, keeping the
   most recent report of each study (a study processed again by a newer
   version has a newer report).
3. **C-GET** of those instances (PS3.4 C.4.3), over the same association the
   peer answers on, with the SCP role negotiated for the SR storage classes
   (PS3.7 D.3.3.4), so that no inbound connection to this node is needed.
4. Each retrieved report is checked (SR class, Manufacturer) and read back by
   :func:`dicom_node.readers.report_reader.read_measurement_report`.

A peer that does not return Manufacturer at SERIES level is not filtered on it
there; step 4 checks every retrieved instance anyway. Matching on Issuer of
Patient ID is done here (many archives do not match on it): a study whose
returned issuer differs from the patient's is skipped, an empty one is kept.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import build_role, evt
from pynetdicom.association import Association
from pynetdicom.status import code_to_category

from dicom_node.errors import PriorsError, ReportReadError
from dicom_node.readers.report_reader import (
    REPORT_SOP_CLASSES,
    is_node_report,
    read_measurement_report,
)
from dicom_node.scu.association import Context, associate, reactor_paused
from dicom_node.scu.send import Destination
from dicom_node.writers.common import MANUFACTURER
from processing.exam_summary import ExamSummary

__all__ = [
    "PriorFetch",
    "ReportHit",
    "StudyHit",
    "fetch_prior_summaries",
    "find_node_reports",
    "find_patient_studies",
    "retrieve_instances",
]

LOGGER = logging.getLogger(__name__)

_PENDING = (0xFF00, 0xFF01)
# PS3.4 C.6.2.1.1: Study Root Query/Retrieve Information Model FIND and GET.
StudyRootQueryRetrieveInformationModelFind = UID("1.2.840.10008.5.1.4.1.2.2.1")
StudyRootQueryRetrieveInformationModelGet = UID("1.2.840.10008.5.1.4.1.2.2.3")


@dataclass(frozen=True, slots=True)
class StudyHit:
    """One study of the patient found in PACS."""

    study_instance_uid: str
    study_date: str
    study_time: str
    issuer_of_patient_id: str


@dataclass(frozen=True, slots=True)
class ReportHit:
    """One report instance of this node found in PACS."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    content_date: str
    content_time: str


@dataclass(frozen=True, slots=True)
class PriorFetch:
    """What fetching the priors gave: the summaries, and why other reports were skipped."""

    summaries: tuple[ExamSummary, ...]
    skipped: tuple[str, ...]


def find_patient_studies(
    peer: Destination,
    patient_id: str,
    issuer_of_patient_id: str = "",
    *,
    tls: ssl.SSLContext | None = None,
) -> list[StudyHit]:
    """The patient's studies in ``peer`` (C-FIND STUDY level), oldest first.

    With ``tls`` (a client context, :func:`dicom_node.tls.client_context`) the
    association runs over DICOM TLS, the peer's certificate checked against
    ``peer.host``; the same holds for every function of this module.

    Raises
    ------
    PriorsError
        When the query fails (the status is in the message).
    AssociationFailedError
        When the peer cannot be reached or rejects the association.
    """
    if not patient_id:
        raise PriorsError("a patient ID is needed to look for priors")
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.PatientID = patient_id
    query.IssuerOfPatientID = ""
    query.StudyInstanceUID = ""
    query.StudyDate = ""
    query.StudyTime = ""
    hits = []
    with _association(peer, find=True, tls=tls) as assoc:
        for identifier in _find(assoc, query, peer):
            issuer = str(identifier.get("IssuerOfPatientID", "") or "")
            if issuer_of_patient_id and issuer and issuer != issuer_of_patient_id:
                continue
            if str(identifier.get("PatientID", patient_id)) != patient_id:
                continue  # a peer that matched loosely (wildcards, case)
            hits.append(
                StudyHit(
                    study_instance_uid=str(identifier.get("StudyInstanceUID", "")),
                    study_date=str(identifier.get("StudyDate", "") or ""),
                    study_time=str(identifier.get("StudyTime", "") or ""),
                    issuer_of_patient_id=issuer,
                )
            )
    return sorted(
        (hit for hit in hits if hit.study_instance_uid),
        key=lambda h: (h.study_date, h.study_time, h.study_instance_uid),
    )


def find_node_reports(
    peer: Destination,
    study_instance_uids: Sequence[str],
    *,
    manufacturer: str = MANUFACTURER,
    series_description: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> list[ReportHit]:
    """The most recent report of this node in each study (C-FIND SERIES, then IMAGE level)."""
    latest: dict[str, ReportHit] = {}
    with _association(peer, find=True, tls=tls) as assoc:
        for study_uid in study_instance_uids:
            series_uids = _report_series(
                assoc, peer, study_uid, manufacturer=manufacturer, description=series_description
            )
            for series_uid in filter(None, series_uids):
                for hit in _report_instances(assoc, peer, study_uid, series_uid):
                    known = latest.get(study_uid)
                    if known is None or (hit.content_date, hit.content_time) > (
                        known.content_date,
                        known.content_time,
                    ):
                        latest[study_uid] = hit
    return [latest[uid] for uid in study_instance_uids if uid in latest]


def _report_series(
    assoc: Association,
    peer: Destination,
    study_uid: str,
    *,
    manufacturer: str,
    description: str | None,
) -> list[str]:
    """Series UIDs of the SR series in ``study_uid`` from ``manufacturer`` (C-FIND SERIES).

    A peer that does not return Manufacturer, or Modality, is taken at its word;
    ``description`` (when given) must match the Series Description exactly.
    """
    series_query = Dataset()
    series_query.QueryRetrieveLevel = "SERIES"
    series_query.StudyInstanceUID = study_uid
    series_query.SeriesInstanceUID = ""
    series_query.Modality = "SR"
    series_query.Manufacturer = ""
    series_query.SeriesDescription = ""
    series_uids = []
    for identifier in _find(assoc, series_query, peer):
        returned_manufacturer = str(identifier.get("Manufacturer", "") or "")
        if returned_manufacturer and returned_manufacturer != manufacturer:
            continue
        returned_description = str(identifier.get("SeriesDescription", "") or "")
        if description is not None and returned_description != description:
            continue
        if str(identifier.get("Modality", "SR") or "SR") != "SR":
            continue
        series_uids.append(str(identifier.get("SeriesInstanceUID", "")))
    return series_uids


def _report_instances(
    assoc: Association, peer: Destination, study_uid: str, series_uid: str
) -> Iterator[ReportHit]:
    """The report instances of one series (C-FIND IMAGE): SR classes this node reads."""
    image_query = Dataset()
    image_query.QueryRetrieveLevel = "IMAGE"
    image_query.StudyInstanceUID = study_uid
    image_query.SeriesInstanceUID = series_uid
    image_query.SOPInstanceUID = ""
    image_query.SOPClassUID = ""
    image_query.ContentDate = ""
    image_query.ContentTime = ""
    for identifier in _find(assoc, image_query, peer):
        hit = ReportHit(
            study_instance_uid=study_uid,
            series_instance_uid=series_uid,
            sop_instance_uid=str(identifier.get("SOPInstanceUID", "")),
            sop_class_uid=str(identifier.get("SOPClassUID", "") or ""),
            content_date=str(identifier.get("ContentDate", "") or ""),
            content_time=str(identifier.get("ContentTime", "") or ""),
        )
        if not hit.sop_instance_uid:
            continue
        if hit.sop_class_uid and hit.sop_class_uid not in REPORT_SOP_CLASSES:
            continue
        yield hit


def retrieve_instances(
    peer: Destination, hits: Sequence[ReportHit], *, tls: ssl.SSLContext | None = None
) -> list[Dataset]:
    """Fetch the report instances with C-GET (IMAGE level), in the order of ``hits``.

    Raises
    ------
    PriorsError
        When a C-GET ends with a failure status or an instance does not arrive.
    """
    received: dict[str, Dataset] = {}

    def on_store(event: Any) -> int:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        received[str(dataset.SOPInstanceUID)] = dataset
        return 0x0000

    with _association(peer, find=False, on_store=on_store, tls=tls) as assoc:
        for hit in hits:
            query = Dataset()
            query.QueryRetrieveLevel = "IMAGE"
            query.StudyInstanceUID = hit.study_instance_uid
            query.SeriesInstanceUID = hit.series_instance_uid
            query.SOPInstanceUID = hit.sop_instance_uid
            final: int | None = None
            with reactor_paused(assoc):
                for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
                    if not status:
                        raise PriorsError(
                            f"C-GET of {hit.sop_instance_uid} from {peer}: no response "
                            "(timeout or association lost)"
                        )
                    final = int(status.Status)
            if final is None or code_to_category(final) not in ("Success", "Warning"):
                raise PriorsError(
                    f"C-GET of {hit.sop_instance_uid} from {peer} failed with status "
                    f"0x{final or 0:04X}"
                )
            if hit.sop_instance_uid not in received:
                raise PriorsError(
                    f"C-GET of {hit.sop_instance_uid} from {peer} ended with status "
                    f"0x{final:04X} but the instance never arrived"
                )
    return [received[hit.sop_instance_uid] for hit in hits]


def fetch_prior_summaries(
    peer: Destination,
    patient_id: str,
    issuer_of_patient_id: str = "",
    *,
    exclude_study_uid: str = "",
    manufacturer: str = MANUFACTURER,
    series_description: str | None = None,
    tls: ssl.SSLContext | None = None,
) -> PriorFetch:
    """Summaries of the patient's exams that this node reported to ``peer``.

    Reports that cannot be read (another layout, missing items) are skipped
    with the reason in :attr:`PriorFetch.skipped`, so that one bad report does
    not hide the others; query and network failures raise. With ``tls`` every
    association (C-FIND and C-GET) runs over DICOM TLS.
    """
    studies = [
        hit.study_instance_uid
        for hit in find_patient_studies(peer, patient_id, issuer_of_patient_id, tls=tls)
        if hit.study_instance_uid != exclude_study_uid
    ]
    if not studies:
        return PriorFetch(summaries=(), skipped=())
    hits = find_node_reports(
        peer,
        studies,
        manufacturer=manufacturer,
        series_description=series_description,
        tls=tls,
    )
    summaries: list[ExamSummary] = []
    skipped: list[str] = []
    for dataset in retrieve_instances(peer, hits, tls=tls):
        uid = str(dataset.get("SOPInstanceUID", ""))
        if not is_node_report(dataset, manufacturer):
            skipped.append(f"SR {uid}: not a report of this node (Manufacturer, SOP class)")
            continue
        try:
            summary = read_measurement_report(dataset)
        except ReportReadError as exc:
            skipped.append(str(exc))
            LOGGER.warning("prior report skipped: %s", exc)
            continue
        if summary.patient_id != patient_id or (
            issuer_of_patient_id
            and summary.issuer_of_patient_id
            and summary.issuer_of_patient_id != issuer_of_patient_id
        ):
            skipped.append(f"SR {uid}: belongs to another patient than the one asked for")
            continue
        summaries.append(summary)
    return PriorFetch(summaries=tuple(summaries), skipped=tuple(skipped))


def _association(
    peer: Destination,
    *,
    find: bool,
    on_store: Callable[..., Any] | None = None,
    tls: ssl.SSLContext | None = None,
) -> AbstractContextManager[Association]:
    if find:
        return associate(
            peer, [(StudyRootQueryRetrieveInformationModelFind, None)], purpose="C-FIND", tls=tls
        )
    contexts: list[Context] = [(StudyRootQueryRetrieveInformationModelGet, None)]
    contexts += [(sop_class, None) for sop_class in REPORT_SOP_CLASSES]
    return associate(
        peer,
        contexts,
        purpose="C-GET",
        tls=tls,
        ext_neg=[build_role(sop_class, scp_role=True) for sop_class in REPORT_SOP_CLASSES],
        evt_handlers=[] if on_store is None else [(evt.EVT_C_STORE, on_store)],
    )


def _find(assoc: Association, query: Dataset, peer: Destination) -> Iterator[Dataset]:
    level = query.QueryRetrieveLevel
    with reactor_paused(assoc):
        for status, identifier in assoc.send_c_find(
            query, StudyRootQueryRetrieveInformationModelFind
        ):
            if not status:
                raise PriorsError(
                    f"C-FIND ({level}) at {peer}: no response (timeout or association lost)"
                )
            code = int(status.Status)
            if code in _PENDING:
                if identifier is not None:
                    yield identifier
                continue
            if code_to_category(code) not in ("Success", "Warning"):
                comment = str(status.get("ErrorComment", "") or "")
                raise PriorsError(
                    f"C-FIND ({level}) at {peer} failed with status 0x{code:04X}"
                    + (f": {comment}" if comment else "")
                )
