"""The priors step of a job: place the exam in the patient's history before processing (issue 6).

:func:`find_priors` is what :func:`service.worker.run_job` calls between
assembly and processing, following ``docs/response.md`` ("Wiring"):

1. the study date and time from the exam's headers
   (:func:`dicom_node.study_header.read_study_date_time`);
2. the patient's earlier exams and baseline from the history store
   (:func:`service.priors_workflow.prepare_priors`), after fetching the node's
   earlier reports from the priors peer (C-FIND + C-GET) when one is
   configured and this patient was not looked up there yet; over DICOM TLS
   when ``[tls] export`` is on (:attr:`service.jobs.PriorsSpec.tls`).

The lookup is remembered per patient and peer
(:meth:`service.history.HistoryStore.record_pacs_lookup`): later exams of the
patient, and the same exam processed again, use the history alone, so the
same input with the same priors gives the same result UIDs. A lookup that
failed is not remembered: the next exam of the patient asks again.

When the peer cannot be asked, :class:`PriorsUnavailableError` tells the
worker to try the job again later; with
:attr:`service.jobs.PriorsSpec.continue_without_pacs` (set once the wait is
over) the exam is compared with the local history alone and a warning says so.
An exam without Patient ID or study date is processed without comparison, with
a warning: a comparison is a bonus, never a reason to withhold the results.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from dicom_node.errors import AssociationFailedError, PriorsError, StudyHeaderError
from dicom_node.send import Destination
from dicom_node.study_header import StudyDateTime, read_study_date_time
from dicom_node.tls import client_context
from processing.comparison import Comparison
from processing.exam import DwiExam
from service.errors import PriorsUnavailableError
from service.history import HistoryStore, PatientKey
from service.jobs import ClientTlsSpec, PriorsSpec
from service.priors_workflow import PreparedPriors, prepare_priors
from service.settings import parse_destination

__all__ = [
    "JobPriors",
    "comparison_block",
    "find_priors",
    "priors_peer",
]

LOGGER = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class JobPriors:
    """What the history knows about the exam before it is processed.

    ``prepared`` and ``history`` are ``None`` when no comparison is made
    (priors off, no Patient ID, no study date); ``warnings`` then say why,
    as they say when the priors peer could not be asked.
    """

    prepared: PreparedPriors | None
    history: HistoryStore | None
    when: StudyDateTime | None
    warnings: tuple[str, ...] = ()
    pacs_asked: str = ""

    @property
    def yellow_lower_um2s(self) -> float | None:
        """The baseline's 95th ADC centile, or ``None`` (processing default)."""
        return None if self.prepared is None else self.prepared.yellow_lower_um2s


def priors_peer(spec: PriorsSpec) -> Destination:
    """The query/retrieve peer of ``spec`` as a :class:`dicom_node.send.Destination`."""
    parsed = parse_destination(spec.pacs)
    return Destination(
        host=parsed.host,
        port=parsed.port,
        called_aet=parsed.ae_title,
        calling_aet=spec.calling_aet,
        timeout_s=spec.timeout_seconds,
    )


def find_priors(spec: PriorsSpec | None, exam: DwiExam) -> JobPriors:
    """The exam's priors (see the module docstring).

    Raises
    ------
    PriorsUnavailableError
        When the peer must be asked, cannot be, and ``spec.continue_without_pacs``
        is off.
    service.errors.HistoryError
        When the history store cannot be read or written.
    """
    if spec is None:
        return JobPriors(prepared=None, history=None, when=None)
    if not exam.patient_id:
        return JobPriors(
            prepared=None,
            history=None,
            when=None,
            warnings=(
                "the exam has no Patient ID: not compared with earlier exams and not kept "
                "in the history",
            ),
        )
    try:
        when = read_study_date_time(exam)
    except StudyHeaderError as error:
        return JobPriors(
            prepared=None,
            history=None,
            when=None,
            warnings=(f"not compared with earlier exams: {error}",),
        )
    history = HistoryStore(spec.history_path)
    patient = PatientKey(exam.patient_id, exam.issuer_of_patient_id)
    ask_pacs = bool(spec.pacs) and not history.pacs_looked_up(patient, spec.pacs)

    def prepare(peer: Destination | None) -> PreparedPriors:
        return prepare_priors(
            history,
            exam.patient_id,
            exam.issuer_of_patient_id,
            exam.study_instance_uid,
            when.study_date,
            study_time=when.study_time,
            pacs_peer=peer,
            refresh_from_pacs=peer is not None,
            pacs_tls=None if peer is None or spec.tls is None else _client_context(spec.tls),
        )

    if not ask_pacs:
        return JobPriors(prepared=prepare(None), history=history, when=when)
    try:
        prepared = prepare(priors_peer(spec))
    except (PriorsError, AssociationFailedError) as error:
        message = f"priors peer {spec.pacs} could not be asked: {error}"
        if not spec.continue_without_pacs:
            raise PriorsUnavailableError(message) from error
        LOGGER.warning("priors_pacs_unavailable", peer=spec.pacs, reason=str(error))
        return JobPriors(
            prepared=prepare(None),
            history=history,
            when=when,
            warnings=(f"{message}; compared with the node's local history only",),
        )
    history.record_pacs_lookup(patient, spec.pacs)
    LOGGER.info(
        "priors_fetched_from_pacs",
        peer=spec.pacs,
        fetched=prepared.fetched_from_pacs,
        skipped=len(prepared.skipped_from_pacs),
    )
    return JobPriors(
        prepared=prepared,
        history=history,
        when=when,
        warnings=tuple(
            f"a report in {spec.pacs} was not used: {reason}"
            for reason in prepared.skipped_from_pacs
        ),
        pacs_asked=spec.pacs,
    )


def _client_context(tls: ClientTlsSpec) -> ssl.SSLContext:
    """The client context of ``tls`` (``[tls]`` files; raises ``TlsConfigurationError``)."""
    return client_context(
        ca_bundle=Path(tls.ca_bundle) if tls.ca_bundle else None,
        certificate=Path(tls.certificate) if tls.certificate else None,
        private_key=Path(tls.private_key) if tls.private_key else None,
        check_hostname=tls.check_hostname,
    )


def comparison_block(
    spec: PriorsSpec | None, priors: JobPriors, comparison: Comparison | None
) -> dict[str, Any] | None:
    """The ``priors`` block of ``job.json``: what the exam was compared with, and where from."""
    if spec is None:
        return None
    prepared = priors.prepared
    return {
        "history": spec.history_path,
        "pacs": spec.pacs or None,
        "pacs_asked": priors.pacs_asked or None,
        "fetched_from_pacs": 0 if prepared is None else prepared.fetched_from_pacs,
        "priors": [] if prepared is None else [p.study_instance_uid for p in prepared.priors],
        "previous_study_uid": None if comparison is None else comparison.previous_study_uid,
        "baseline_study_uid": None if comparison is None else comparison.baseline_study_uid,
        "yellow_lower_um2s": priors.yellow_lower_um2s,
    }
