"""Priors and history around one processed exam: the priors step of an exam run (issue 6).

Two priors sources (:class:`service.exam_run.PriorsSource`) answer the same
question for :func:`service.exam_run.run_exam`, *which earlier exams of this
patient is the exam compared with*, with an :class:`ExamPriors`:

- :class:`HistoryPriors`, the node's: the history store, and the priors peer
  (PACS) when one is configured (:func:`find_priors`, below);
- :class:`SummaryFilePriors`, ``wbdwi process --prior``'s: the exam summaries
  of earlier runs' ``measurements.json`` files (:func:`load_prior`), with
  ``--baseline``.

:func:`find_priors` runs between assembly and processing, following
``docs/response.md`` ("Wiring"):

1. the study date and time from the exam's headers
   (:func:`dicom_node.assembly.study_header.read_study_date_time`);
2. the patient's earlier exams and baseline from the history store
   (:func:`prepare_priors`), after fetching the node's earlier reports from the
   priors peer (C-FIND + C-GET,
   :func:`dicom_node.scu.priors.fetch_prior_summaries`) when one is configured
   and this patient was not looked up there yet; over DICOM TLS when
   ``[tls] export`` is on (:attr:`service.jobs.PriorsSpec.tls`).

In order, for a follow-up exam::

    when = read_study_date_time(exam)                       # dicom_node.assembly.study_header
    prepared = prepare_priors(history, exam.patient_id, exam.issuer_of_patient_id,
                              exam.study_instance_uid, when.study_date,
                              study_time=when.study_time, pacs=PacsLookup(peer))
    result = process_exam(exam, settings, yellow_lower_um2s=prepared.yellow_lower_um2s)
    summary = summarize_exam(exam, result.stats, study_date=when.study_date, ...)
    comparison = compare_with_priors(summary, prepared, settings)
    written = write_results(exam, result, out, comparison=comparison,
                            prior_histograms=prepared.histograms_for(comparison))
    record_processed_exam(history, summary, written)

:func:`prepare_priors` is called **before** processing: the baseline's 95th
ADC centile is the yellow class bound of this exam.

The PACS lookup is remembered per patient and peer
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

import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import structlog

from dicom_node.assembly.study_header import StudyDateTime, read_study_date_time
from dicom_node.errors import AssociationFailedError, PriorsError, StudyHeaderError
from dicom_node.scu.priors import fetch_prior_summaries
from dicom_node.scu.send import Destination
from dicom_node.tls import client_context
from dicom_node.writers.key_images import comparison_histograms
from dicom_node.writers.write_results import written_instance_uid
from processing.comparison import (
    Comparison,
    compare_exams,
    response_settings_for,
    select_baseline,
    yellow_lower_bound,
)
from processing.errors import SummaryFormatError
from processing.exam import DwiExam
from processing.exam_summary import ExamSummary, chronological_key, exam_sort_key
from processing.measurements import summary_from_measurements
from processing.response import ResponseSettings
from processing.results import Histogram
from processing.settings import ProcessingSettings
from service.errors import PriorLoadError, PriorsUnavailableError
from service.history import ExamHistory, HistoryStore, PatientKey, SummarySource
from service.jobs import ClientTlsSpec, PriorsSpec
from service.settings import parse_destination

__all__ = [
    "MEASUREMENTS_FILE",
    "ExamPriors",
    "HistoryPriors",
    "PacsLookup",
    "PreparedPriors",
    "SummaryFilePriors",
    "compare_with_priors",
    "comparison_block",
    "find_priors",
    "load_prior",
    "prepare_priors",
    "priors_peer",
    "record_processed_exam",
    "with_result_uids",
]

LOGGER = structlog.get_logger(__name__)

#: The measurement report of a processed exam, beside its result objects.
MEASUREMENTS_FILE = "measurements.json"


@dataclass(frozen=True, slots=True)
class ExamPriors:
    """What a priors source knows about the exam before it is processed.

    ``prepared`` is ``None`` when no comparison is made (the node: priors
    off, no Patient ID, no study date); ``warnings`` then say why, as they
    say when the priors peer could not be asked. ``when`` is the exam's study
    date and time (``None``: the exam is not summarised). ``history`` is
    where the processed exam is recorded (``None``: nowhere, as offline).
    """

    prepared: PreparedPriors | None
    history: ExamHistory | None
    when: StudyDateTime | None
    warnings: tuple[str, ...] = ()
    pacs_asked: str = ""

    @property
    def yellow_lower_um2s(self) -> float | None:
        """The baseline's 95th ADC centile, or ``None`` (processing default)."""
        return None if self.prepared is None else self.prepared.yellow_lower_um2s


@dataclass(frozen=True, slots=True)
class HistoryPriors:
    """The node's priors source: its history, and the priors peer of ``spec``.

    ``spec`` ``None``: priors are off (no comparison, nothing recorded).
    ``history`` ``None``: the history store at ``spec.history_path`` (the
    node's workers); a worker on another host passes a
    :class:`~service.history.HistorySnapshot` and writes no database.
    """

    spec: PriorsSpec | None
    history: ExamHistory | None = None

    def find(self, exam: DwiExam) -> ExamPriors:
        """The exam's priors (:func:`find_priors`; raises :class:`PriorsUnavailableError`)."""
        return find_priors(self.spec, exam, history=self.history)


@dataclass(frozen=True, slots=True)
class SummaryFilePriors:
    """``wbdwi process``'s priors source: exam summaries of earlier runs (``--prior``).

    Parameters
    ----------
    summaries
        The patient's exams, as given (:func:`load_prior`); those not earlier
        than the exam are ignored.
    baseline_study_uid
        The baseline among them, or the exam's own UID (``--baseline``);
        ``None``: the earliest prior.
    """

    summaries: tuple[ExamSummary, ...] = ()
    baseline_study_uid: str | None = None

    @classmethod
    def from_paths(
        cls, paths: Sequence[Path], baseline_study_uid: str | None = None
    ) -> SummaryFilePriors:
        """The summaries of the runs at ``paths`` (raises :class:`PriorLoadError`)."""
        return cls(tuple(load_prior(path) for path in paths), baseline_study_uid)

    def find(self, exam: DwiExam) -> ExamPriors:
        """The summaries earlier than ``exam`` and its baseline.

        Raises
        ------
        dicom_node.errors.StudyHeaderError
            The exam's study date cannot be read.
        PriorLoadError
            A prior belongs to another patient, or the baseline is not among
            the priors.
        """
        when = read_study_date_time(exam)
        for prior in self.summaries:
            if (prior.patient_id, prior.issuer_of_patient_id) != (
                exam.patient_id,
                exam.issuer_of_patient_id,
            ):
                raise PriorLoadError(
                    f"prior study {prior.study_instance_uid} is of patient {prior.patient_id!r} "
                    f"(issuer {prior.issuer_of_patient_id!r}), not of this exam's patient "
                    f"{exam.patient_id!r} (issuer {exam.issuer_of_patient_id!r})"
                )
        try:
            baseline = select_baseline(
                self.summaries,
                study_uid=exam.study_instance_uid,
                study_date=when.study_date,
                study_time=when.study_time,
                baseline_study_uid=self.baseline_study_uid,
            )
        except ValueError as exc:
            raise PriorLoadError(str(exc)) from exc
        key = chronological_key(when.study_date, when.study_time, exam.study_instance_uid)
        prepared = PreparedPriors(
            study_instance_uid=exam.study_instance_uid,
            priors=tuple(p for p in self.summaries if exam_sort_key(p) < key),
            baseline=baseline,
            baseline_study_uid=self.baseline_study_uid,
        )
        return ExamPriors(prepared=prepared, history=None, when=when)


def load_prior(path: Path) -> ExamSummary:
    """The exam summary of an earlier ``wbdwi process`` run.

    ``path`` is that run's output folder or its ``measurements.json``.

    Raises
    ------
    PriorLoadError
        When the file is missing, not JSON, or has no valid ``exam_summary``.
    """
    file = path / MEASUREMENTS_FILE if path.is_dir() else path
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PriorLoadError(
            f"prior {path}: no {MEASUREMENTS_FILE} (give the --out folder of an earlier run)"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PriorLoadError(f"prior {file}: cannot be read as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PriorLoadError(f"prior {file}: expected a JSON object")
    try:
        return summary_from_measurements(data, str(file))
    except SummaryFormatError as exc:
        raise PriorLoadError(str(exc)) from exc


def priors_peer(spec: PriorsSpec) -> Destination:
    """The query/retrieve peer of ``spec`` as a :class:`dicom_node.scu.send.Destination`."""
    parsed = parse_destination(spec.pacs)
    return Destination(
        host=parsed.host,
        port=parsed.port,
        called_aet=parsed.ae_title,
        calling_aet=spec.calling_aet,
        timeout_s=spec.timeout_seconds,
    )


def find_priors(
    spec: PriorsSpec | None, exam: DwiExam, *, history: ExamHistory | None = None
) -> ExamPriors:
    """The exam's priors (see the module docstring).

    ``history`` is where the patient's exams are read and the processed exam
    recorded; ``None``: the history store at ``spec.history_path``.

    Raises
    ------
    PriorsUnavailableError
        When the peer must be asked, cannot be, and ``spec.continue_without_pacs``
        is off.
    service.errors.HistoryError
        When the history store cannot be read or written.
    """
    if spec is None:
        return ExamPriors(prepared=None, history=None, when=None)
    if not exam.patient_id:
        return ExamPriors(
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
        return ExamPriors(
            prepared=None,
            history=None,
            when=None,
            warnings=(f"not compared with earlier exams: {error}",),
        )
    if history is None:
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
            pacs=None
            if peer is None
            else PacsLookup(
                peer,
                tls=None if spec.tls is None else _client_context(spec.tls),
                refresh=True,
            ),
        )

    if not ask_pacs:
        return ExamPriors(prepared=prepare(None), history=history, when=when)
    try:
        prepared = prepare(priors_peer(spec))
    except (PriorsError, AssociationFailedError) as error:
        message = f"priors peer {spec.pacs} could not be asked: {error}"
        if not spec.continue_without_pacs:
            raise PriorsUnavailableError(message) from error
        LOGGER.warning("priors_pacs_unavailable", peer=spec.pacs, reason=str(error))
        return ExamPriors(
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
    return ExamPriors(
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
    spec: PriorsSpec | None, priors: ExamPriors, comparison: Comparison | None
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


@dataclass(frozen=True, slots=True)
class PreparedPriors:
    """What the history knows about an exam before it is processed.

    Attributes
    ----------
    study_instance_uid
        The exam the priors are for.
    priors
        The patient's exams earlier than it, oldest first.
    baseline
        The baseline in force for it (``None`` when it has no earlier exam and
        is not itself marked).
    baseline_study_uid
        The UID to give :func:`~processing.comparison.compare_exams` (the exam's
        own UID when it is marked as a baseline itself), ``None`` without one.
    fetched_from_pacs
        How many summaries were fetched from PACS into the history.
    skipped_from_pacs
        Reports found in PACS that could not be read, with the reason.
    """

    study_instance_uid: str
    priors: tuple[ExamSummary, ...]
    baseline: ExamSummary | None
    baseline_study_uid: str | None
    fetched_from_pacs: int = 0
    skipped_from_pacs: tuple[str, ...] = ()

    @property
    def yellow_lower_um2s(self) -> float | None:
        """The yellow class bound for processing: the baseline's 95th ADC centile, or ``None``."""
        return None if self.baseline is None else yellow_lower_bound(self.baseline)

    def histograms_for(self, comparison: Comparison | None) -> list[tuple[str, Histogram]]:
        """The previous exam's and the baseline's histograms for the histogram key image."""
        if comparison is None:
            return []
        return comparison_histograms(comparison, self.priors)


@dataclass(frozen=True, slots=True)
class PacsLookup:
    """Where :func:`prepare_priors` looks for the node's earlier reports.

    Attributes
    ----------
    peer
        The priors peer (query/retrieve SCP), asked when the history has no
        earlier exam of the patient, or always with ``refresh``. Summaries
        from PACS never replace ones this node computed.
    tls
        Client context for DICOM TLS towards ``peer``; ``None``: plain DICOM.
    refresh
        Ask ``peer`` even when the history has earlier exams of the patient.
    """

    peer: Destination
    tls: ssl.SSLContext | None = None
    refresh: bool = False


def prepare_priors(
    history: ExamHistory,
    patient_id: str,
    issuer_of_patient_id: str,
    study_uid: str,
    study_date: str,
    *,
    study_time: str = "",
    pacs: PacsLookup | None = None,
) -> PreparedPriors:
    """The priors and the baseline of an exam about to be processed.

    Parameters
    ----------
    history
        The node's history store.
    patient_id, issuer_of_patient_id
        The exam's patient (the issuer may be empty).
    study_uid, study_date, study_time
        The exam (DICOM DA and TM from its headers, see
        :func:`dicom_node.assembly.study_header.read_study_date_time`).
    pacs
        Where to look for the node's earlier reports (:class:`PacsLookup`);
        ``None``: the history alone.

    Raises
    ------
    service.errors.HistoryError
        When the patient ID is empty or the store cannot be read.
    dicom_node.errors.PriorsError, dicom_node.errors.AssociationFailedError
        When PACS is asked and the query or retrieve fails: the caller decides
        whether to retry the job or go on with the local history.
    """
    patient = PatientKey(patient_id, issuer_of_patient_id)

    def earlier() -> list[ExamSummary]:
        entries = history.priors(
            patient, study_date=study_date, study_time=study_time, study_uid=study_uid
        )
        return [entry.summary for entry in entries]

    priors = earlier()
    fetched = 0
    skipped: tuple[str, ...] = ()
    if pacs is not None and (pacs.refresh or not priors):
        fetch = fetch_prior_summaries(
            pacs.peer,
            patient_id,
            issuer_of_patient_id,
            exclude_study_uid=study_uid,
            tls=pacs.tls,
        )
        for summary in fetch.summaries:
            history.record_exam(summary, source=SummarySource.PACS)
        fetched, skipped = len(fetch.summaries), fetch.skipped
        priors = earlier()
    entry = history.baseline_for(
        patient, study_date=study_date, study_time=study_time, study_uid=study_uid
    )
    return PreparedPriors(
        study_instance_uid=study_uid,
        priors=tuple(priors),
        baseline=None if entry is None else entry.summary,
        baseline_study_uid=None if entry is None else entry.study_instance_uid,
        fetched_from_pacs=fetched,
        skipped_from_pacs=skipped,
    )


def compare_with_priors(
    summary: ExamSummary,
    prepared: PreparedPriors,
    settings: ProcessingSettings,
    response: ResponseSettings | None = None,
) -> Comparison | None:
    """The exam's comparison with its priors; ``None`` when it has none (a first exam).

    The rules get the detection limit of ``settings``.

    Raises
    ------
    ValueError
        When ``prepared`` was made for another study.
    """
    if prepared.study_instance_uid != summary.study_instance_uid:
        raise ValueError(
            f"priors prepared for study {prepared.study_instance_uid} used for study "
            f"{summary.study_instance_uid}"
        )
    if not prepared.priors:
        return None
    return compare_exams(
        summary,
        prepared.priors,
        baseline_study_uid=prepared.baseline_study_uid,
        settings=response_settings_for(settings, response),
    )


def record_processed_exam(
    history: ExamHistory, summary: ExamSummary, written: Sequence[Path]
) -> ExamSummary:
    """Record the processed exam with the SR and SEG UIDs of the files written.

    ``written`` is what :func:`dicom_node.writers.write_results.write_results`
    returned. Returns the summary as recorded. A baseline mark the exam had
    is kept.
    """
    recorded = with_result_uids(summary, written)
    history.record_exam(recorded, source=SummarySource.LOCAL)
    return recorded


def with_result_uids(summary: ExamSummary, written: Sequence[Path]) -> ExamSummary:
    """``summary`` naming the SR and SEG among the files written (``write_results``)."""
    return replace(
        summary,
        sr_sop_instance_uid=written_instance_uid(written, "sr"),
        seg_sop_instance_uid=written_instance_uid(written, "seg"),
    )
