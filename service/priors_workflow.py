"""Priors and history around one processed exam: what the worker calls (issue 6).

The worker's job for a follow-up exam, in order::

    when = read_study_date_time(exam)                       # dicom_node.study_header
    prepared = prepare_priors(history, exam.patient_id, exam.issuer_of_patient_id,
                              exam.study_instance_uid, when.study_date,
                              study_time=when.study_time, pacs_peer=peer)
    result = process_exam(exam, settings, yellow_lower_um2s=prepared.yellow_lower_um2s)
    summary = summarize_exam(exam, result.stats, study_date=when.study_date, ...)
    comparison = compare_with_priors(summary, prepared, settings)
    written = write_results(exam, result, out, comparison=comparison,
                            prior_histograms=prepared.histograms_for(comparison))
    record_processed_exam(history, summary, written)

:func:`prepare_priors` is called **before** processing: the baseline's 95th
ADC centile is the yellow class bound of this exam. It reads the local history
and, when the node has no earlier exam of the patient (a new or rebuilt node)
and a PACS peer is given, first fetches the node's earlier reports from PACS
(:func:`dicom_node.priors.fetch_prior_summaries`) into the history.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from dicom_node.priors import fetch_prior_summaries
from dicom_node.send import Destination
from dicom_node.write_results import written_instance_uid
from dicom_node.writers.key_images import comparison_histograms
from processing.comparison import (
    Comparison,
    compare_exams,
    response_settings_for,
    yellow_lower_bound,
)
from processing.exam_summary import ExamSummary
from processing.response import ResponseSettings
from processing.results import Histogram
from processing.settings import ProcessingSettings
from service.history import HistoryStore, PatientKey, SummarySource

__all__ = [
    "PreparedPriors",
    "compare_with_priors",
    "prepare_priors",
    "record_processed_exam",
]


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


def prepare_priors(
    history: HistoryStore,
    patient_id: str,
    issuer_of_patient_id: str,
    study_uid: str,
    study_date: str,
    *,
    study_time: str = "",
    pacs_peer: Destination | None = None,
    refresh_from_pacs: bool = False,
    pacs_tls: ssl.SSLContext | None = None,
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
        :func:`dicom_node.study_header.read_study_date_time`).
    pacs_peer
        Where to look for the node's earlier reports when the history has no
        earlier exam of the patient (or always, with ``refresh_from_pacs``).
        Summaries from PACS never replace ones this node computed.
    pacs_tls
        Client context for DICOM TLS towards ``pacs_peer``; ``None``: plain DICOM.

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
    if pacs_peer is not None and (refresh_from_pacs or not priors):
        fetch = fetch_prior_summaries(
            pacs_peer,
            patient_id,
            issuer_of_patient_id,
            exclude_study_uid=study_uid,
            tls=pacs_tls,
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
    history: HistoryStore, summary: ExamSummary, written: Sequence[Path]
) -> ExamSummary:
    """Record the processed exam with the SR and SEG UIDs of the files written.

    ``written`` is what :func:`dicom_node.write_results.write_results`
    returned. Returns the summary as recorded. A baseline mark the exam had
    is kept.
    """
    recorded = replace(
        summary,
        sr_sop_instance_uid=written_instance_uid(written, "sr"),
        seg_sop_instance_uid=written_instance_uid(written, "seg"),
    )
    history.record_exam(recorded, source=SummarySource.LOCAL)
    return recorded
