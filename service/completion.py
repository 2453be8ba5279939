"""Deciding when an exam is complete, and turning it into a queued job.

Rules, checked for every job still ``receiving`` (see ``docs/service.md``):

1. **MPPS lists the instances**: the scanner's MPPS is ``COMPLETED`` and every
   SOP instance its Performed Series Sequence references has arrived: ready now.
2. **MPPS without a list**: ``COMPLETED`` and no instance for
   ``mpps_grace_seconds`` after the later of the N-SET and the last instance.
3. **No MPPS** (or it lists instances that never came): the study has been
   quiet for the quiet period (global, or the calling AE's own).

An MPPS counts for the first version of a study's job, and for a later version
only when it completed after that version opened (instances that arrive after
processing started make a new version, which the earlier MPPS does not describe).

Late instances (:meth:`service.jobstore.SqliteJobStore.record_instance`): one
arriving while the study's job is ``ready`` (queued or deferred for priors)
puts that job back to ``receiving``; one arriving once processing started opens
the next version. Either way the job is queued with every stored instance of
the study. A later version is queued only once no earlier version is ``ready``
or ``processing``, so that the earlier SR exists to be named as its predecessor.
The job is queued only if no instance arrived since its inputs were listed.

A complete study whose coverage is not (fewer stations than the sending
scanner's ``expected_stations``, shorter than ``expected_coverage_mm``, a gap
between stations, a station without a b-value or with missing slices; surveyed
from the headers, :func:`dicom_node.assembly.assemble.survey_coverage`) is held for
``completion.incomplete_extra_wait_seconds`` more, counted again from the
latest arrival; then it is processed and its verdict says what is missing.

Once complete, the job's inputs are frozen into a :class:`~service.jobs.JobSpec`
(the study's stored MR instances, filtered by the calling AE's
``series_include`` patterns) and submitted to the queue.

A stored SEG (a reader's correction) needs no completion: each check queues a
correction job for every SEG that has none yet (:mod:`service.corrections`).
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from dicom_node.assembly.assemble import survey_coverage
from dicom_node.assembly.coverage import CoverageExpectation
from dicom_node.errors import DicomNodeError
from dicom_node.receive.scp import MR_STORAGE_CLASSES
from processing.quality import QualityFinding
from service.corrections import CORRECTION_JOB_PREFIX, correction_job_key
from service.history import HISTORY_FILE
from service.jobs import (
    ClientTlsSpec,
    CorrectionSpec,
    JobSpec,
    JobState,
    PriorsSpec,
    make_job_key,
    results_folder,
    settings_digest,
)
from service.jobstore import InstanceRow, QueueOutcome, ReceivingStudy
from service.queue_protocols import Intake
from service.settings import Settings, parse_destination, processing_settings_to_mapping

__all__ = [
    "CompletionDetector",
    "ReadyEstimate",
    "completion_reason",
    "priors_spec",
    "ready_estimate",
    "select_inputs",
]

LOGGER = structlog.get_logger(__name__)

_UNFINISHED = frozenset({JobState.RECEIVING, JobState.READY, JobState.PROCESSING})


def completion_reason(study: ReceivingStudy, settings: Settings, now: float) -> str | None:
    """Why the study is complete at ``now`` (for the log), or ``None`` when it is not yet."""
    quiet = settings.quiet_seconds_for(study.calling_ae)
    if _mpps_applies(study) and study.mpps_completed_at is not None:
        if study.mpps_instances_missing == 0:
            return "MPPS COMPLETED and every listed instance received"
        if study.mpps_instances_missing is None:
            settled_at = max(study.mpps_completed_at, study.last_instance_at)
            if now - settled_at >= settings.completion.mpps_grace_seconds:
                return "MPPS COMPLETED (grace period over)"
            return None
    if now - study.last_instance_at >= quiet:
        return f"no new instance for {quiet:g} s"
    return None


@dataclass(frozen=True, slots=True)
class ReadyEstimate:
    """When a receiving study becomes ready and by which rule (``wbdwi status``, dashboard).

    ``at`` is the earliest time the rule lets the study be queued (``now`` when
    it is complete already); more instances arriving move it later.
    """

    at: float
    rule: str

    def as_dict(self) -> dict[str, float | str]:
        """JSON values."""
        return {"at": self.at, "rule": self.rule}


def ready_estimate(study: ReceivingStudy, settings: Settings, now: float) -> ReadyEstimate:
    """When ``study`` becomes ready, by the rules :class:`CompletionDetector` applies.

    Held for incomplete coverage (and nothing arrived since the hold began):
    the end of the hold. Complete now: ``now``. A COMPLETED MPPS without a
    list of instances: the grace period after the later of the N-SET and the
    last instance. Otherwise the quiet period after the last instance (with an
    MPPS whose listed instances have not all arrived, said so).
    """
    completion = settings.completion
    if study.held_since is not None and study.last_instance_at <= study.held_since:
        return ReadyEstimate(
            study.held_since + completion.incomplete_extra_wait_seconds,
            f"held {completion.incomplete_extra_wait_seconds:g} s for incomplete coverage",
        )
    reason = completion_reason(study, settings, now)
    if reason is not None:
        return ReadyEstimate(now, f"complete: {reason}")
    quiet = settings.quiet_seconds_for(study.calling_ae)
    completed_at = study.mpps_completed_at
    if _mpps_applies(study) and completed_at is not None and study.mpps_instances_missing is None:
        settled = max(completed_at, study.last_instance_at)
        return ReadyEstimate(
            settled + completion.mpps_grace_seconds,
            f"MPPS COMPLETED: grace period of {completion.mpps_grace_seconds:g} s "
            "after the last instance",
        )
    rule = f"quiet period of {quiet:g} s after the last instance"
    if _mpps_applies(study) and study.mpps_instances_missing:
        rule += f" (MPPS lists {study.mpps_instances_missing} instance(s) not received)"
    return ReadyEstimate(study.last_instance_at + quiet, rule)


def _mpps_applies(study: ReceivingStudy) -> bool:
    """A COMPLETED MPPS describes this version of the study's job."""
    return study.mpps_completed_at is not None and (
        study.version == 1 or study.mpps_completed_at >= study.created_at
    )


def select_inputs(
    instances: list[InstanceRow], series_include: tuple[str, ...]
) -> list[InstanceRow]:
    """MR instances of the study, restricted to series matching ``series_include`` (if any)."""
    chosen = [row for row in instances if row.sop_class_uid in MR_STORAGE_CLASSES]
    if not series_include:
        return chosen
    patterns = [pattern.lower() for pattern in series_include]
    return [
        row
        for row in chosen
        if any(fnmatch.fnmatchcase(row.series_description.lower(), p) for p in patterns)
    ]


class CompletionDetector:
    """Polls receiving jobs and submits the complete ones.

    Parameters
    ----------
    store
        The job store.
    settings
        Node settings (quiet periods, destinations, processing settings).
    software_version
        Goes into the job key: a new software version processes again.
    clock
        Wall clock (injectable for tests).
    """

    def __init__(
        self,
        store: Intake,
        settings: Settings,
        software_version: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.software_version = software_version
        self._clock = clock
        self._wake = threading.Event()
        self._warned_missing: set[int] = set()
        self._noted_waiting: set[int] = set()
        # Coverage findings per receiving job, with the (instances, last arrival) surveyed.
        self._surveyed: dict[int, tuple[tuple[int, float], tuple[QualityFinding, ...]]] = {}

    def wake(self, *_: object) -> None:
        """Check soon (called when an MPPS completes)."""
        self._wake.set()

    def build_spec(self, study: ReceivingStudy, inputs: list[InstanceRow]) -> JobSpec:
        """The job spec of a complete study."""
        output_dir = results_folder(
            self.settings.results_dir.resolve(), study.study_uid, study.version
        )
        return JobSpec(
            job_key=make_job_key(
                study.study_uid, self.software_version, [row.sop_instance_uid for row in inputs]
            ),
            job_id=study.job_id,
            study_uid=study.study_uid,
            version=study.version,
            input_paths=tuple(row.path for row in inputs),
            output_dir=str(output_dir),
            destinations=tuple(str(d) for d in self.settings.export.destinations),
            device=self.settings.node.device.value,
            processing=processing_settings_to_mapping(self.settings.processing),
            priors=priors_spec(self.settings),
            coverage=self._expected(study),
            software_version=self.software_version,
            settings_digest=settings_digest(
                processing_settings_to_mapping(self.settings.processing)
            ),
        )

    def _expected(self, study: ReceivingStudy) -> CoverageExpectation | None:
        """What the sending scanner's complete exam covers; ``None`` when nothing is expected."""
        expected = self.settings.coverage_expected_for(study.calling_ae)
        if expected.stations is None and expected.min_extent_mm is None:
            return None
        return expected

    def check(self) -> list[int]:
        """Submit every complete study and every new correction; returns the submitted job ids."""
        now = self._clock()
        submitted: list[int] = self.submit_corrections()
        for study in self.store.receiving_studies():
            reason = completion_reason(study, self.settings, now)
            if reason is None:
                self._note_missing(study)
                continue
            with structlog.contextvars.bound_contextvars(
                job_id=study.job_id, study_uid=study.study_uid
            ):
                rules = self.settings.for_calling_ae(study.calling_ae)
                inputs = select_inputs(
                    self.store.study_instances(study.study_uid), rules.series_include
                )
                if self._hold_incomplete(study, inputs, now):
                    continue
                earlier = self.store.unfinished_earlier_version(study.study_uid, study.version)
                if earlier is not None:
                    self._note_waiting(study, earlier)
                    continue
                spec = self.build_spec(study, inputs)
                outcome = self.store.queue_receiving(spec, study.last_instance_at)
                if outcome is QueueOutcome.QUEUED:
                    submitted.append(study.job_id)
                    LOGGER.info(
                        "job_ready", reason=reason, version=study.version, instances=len(inputs)
                    )
                elif outcome is QueueOutcome.DUPLICATE:
                    LOGGER.info("job_discarded", reason="same inputs as an earlier job")
                # QueueOutcome.CHANGED: an instance arrived meanwhile; the next check decides
        return submitted

    def submit_corrections(self) -> list[int]:
        """Queue a correction job for every stored SEG without one; returns their job ids.

        The job corrects the study's latest exam job that finished processing
        (its inputs, its results folder); with none, it is queued all the same
        and ends ``done`` with the reason (see :mod:`service.corrections`).
        While an exam job of the study is still receiving, ready or processing,
        its SEGs wait for it.
        """
        submitted: list[int] = []
        pending = self.store.unclaimed_segmentations(CORRECTION_JOB_PREFIX)
        busy = (
            {
                job.study_uid
                for job in self.store.jobs()
                if job.state in _UNFINISHED
                and not (job.job_key or "").startswith(CORRECTION_JOB_PREFIX)
            }
            if pending
            else set()
        )
        for study_uid, seg in pending:
            if study_uid in busy:
                continue  # the exam is still being received or processed: correct its result
            exams = [
                spec for spec in self.store.processed_specs(study_uid) if spec.correction is None
            ]
            corrected = exams[0] if exams else None
            version = self.store.latest_version(study_uid) + 1
            spec = JobSpec(
                job_key=correction_job_key(seg.sop_instance_uid),
                job_id=0,
                study_uid=study_uid,
                version=version,
                input_paths=() if corrected is None else corrected.input_paths,
                output_dir=str(
                    results_folder(self.settings.results_dir.resolve(), study_uid, version)
                ),
                destinations=tuple(str(d) for d in self.settings.export.destinations),
                device=self.settings.node.device.value,
                processing=processing_settings_to_mapping(self.settings.processing),
                priors=priors_spec(self.settings),
                software_version=self.software_version,
                settings_digest=settings_digest(
                    processing_settings_to_mapping(self.settings.processing)
                ),
                correction=CorrectionSpec(
                    seg_path=seg.path,
                    seg_sop_instance_uid=seg.sop_instance_uid,
                    corrected_output_dir="" if corrected is None else corrected.output_dir,
                ),
            )
            if self.store.submit(spec):
                job_id = next(
                    job.job_id for job in self.store.jobs(limit=50) if job.job_key == spec.job_key
                )
                submitted.append(job_id)
                LOGGER.info(
                    "correction_ready",
                    job_id=job_id,
                    study_uid=study_uid,
                    seg_sop_instance_uid=seg.sop_instance_uid,
                    corrects_job=None if corrected is None else corrected.job_id,
                )
        return submitted

    def coverage_findings(
        self, study: ReceivingStudy, inputs: list[InstanceRow]
    ) -> tuple[QualityFinding, ...]:
        """What the study's coverage lacks (:mod:`dicom_node.assembly.coverage`), from its headers.

        Surveyed once per set of instances (the answer is kept until more
        arrive). A study whose headers cannot be surveyed has no finding here:
        assembly will give the reason.
        """
        key = (len(inputs), study.last_instance_at)
        cached = self._surveyed.get(study.job_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            coverage = survey_coverage(row.path for row in inputs)
        except (DicomNodeError, OSError) as error:
            LOGGER.warning("coverage_survey_failed", reason=str(error))
            findings: tuple[QualityFinding, ...] = ()
        else:
            findings = coverage.findings(self._expected(study) or CoverageExpectation())
        self._surveyed[study.job_id] = (key, findings)
        return findings

    def _hold_incomplete(
        self, study: ReceivingStudy, inputs: list[InstanceRow], now: float
    ) -> bool:
        """Whether a complete-looking study is held for its missing coverage.

        Not when the scanner's MPPS listed every instance and all arrived (an
        exam acquired short: nothing more will come). The hold starts when the
        study first looks complete with coverage missing, starts again when
        instances arrived since, and lasts
        ``completion.incomplete_extra_wait_seconds``; then the study is
        processed and the worker puts what is missing into the verdict.
        """
        wait = self.settings.completion.incomplete_extra_wait_seconds
        if wait <= 0 or not inputs:
            return False
        if _mpps_applies(study) and study.mpps_instances_missing == 0:
            return False  # the scanner listed every instance of the exam: nothing more comes
        findings = self.coverage_findings(study, inputs)
        if not findings:
            if study.held_since is not None:
                LOGGER.info("job_hold_ended", reason="coverage complete")
            self._surveyed.pop(study.job_id, None)
            return False
        since = study.held_since
        if since is None or study.last_instance_at > since:
            since = now
            until = time.strftime("%H:%M:%S", time.localtime(now + wait))
            missing = " ".join(finding.message for finding in findings)
            self.store.hold_receiving(
                study.job_id,
                since,
                f"held until {until} for the rest of the exam (incomplete coverage): {missing}",
            )
            LOGGER.warning(
                "job_held_incomplete",
                missing=[finding.code for finding in findings],
                reasons=[finding.message for finding in findings],
                hold_seconds=wait,
            )
        if now - since < wait:
            return True
        LOGGER.warning(
            "job_hold_over",
            missing=[finding.code for finding in findings],
            held_seconds=round(now - since, 1),
            action="processing; the verdict says what is missing",
        )
        self._surveyed.pop(study.job_id, None)
        return False

    def _note_waiting(self, study: ReceivingStudy, earlier: int) -> None:
        if study.job_id not in self._noted_waiting:
            self._noted_waiting.add(study.job_id)
            LOGGER.info(
                "job_waits_for_earlier_version",
                version=study.version,
                earlier_version=earlier,
                reason="the earlier version is still queued or processing",
            )

    def _note_missing(self, study: ReceivingStudy) -> None:
        missing = study.mpps_instances_missing
        if missing and study.job_id not in self._warned_missing:
            self._warned_missing.add(study.job_id)
            LOGGER.warning(
                "mpps_instances_missing",
                job_id=study.job_id,
                study_uid=study.study_uid,
                missing=missing,
                fallback="quiet period",
            )

    def run(
        self,
        stop: threading.Event,
        interval_seconds: float = 0.5,
        *,
        on_submitted: Callable[[], None] | None = None,
    ) -> None:
        """Check every ``interval_seconds`` (or at once when woken) until ``stop`` is set.

        ``on_submitted`` is called after a check that queued jobs (the node wakes its
        workers, which would otherwise find the job at their next look, up to 0.5 s later).
        """
        while not stop.is_set():
            submitted: list[int] = []
            try:
                submitted = self.check()
            except Exception:
                # A database hiccup must not end completion detection; log and go on.
                LOGGER.exception("completion_check_failed")
            if submitted and on_submitted is not None:
                on_submitted()
            self._wake.wait(interval_seconds)
            self._wake.clear()


def priors_spec(settings: Settings) -> PriorsSpec | None:
    """Where jobs find the patient's earlier exams (``None`` with ``priors.enabled`` off)."""
    priors = settings.priors
    if not priors.enabled:
        return None
    return PriorsSpec(
        history_path=str(settings.node.data_dir.resolve() / HISTORY_FILE),
        pacs=str(parse_destination(priors.pacs)) if priors.pacs else "",
        calling_aet=priors.calling_aet or settings.node.ae_title,
        timeout_seconds=priors.timeout_seconds,
        tls=_client_tls_spec(settings) if settings.tls.export else None,
    )


def _client_tls_spec(settings: Settings) -> ClientTlsSpec:
    tls = settings.tls
    return ClientTlsSpec(
        ca_bundle="" if tls.ca_bundle is None else str(tls.ca_bundle.resolve()),
        certificate="" if tls.certificate is None else str(tls.certificate.resolve()),
        private_key="" if tls.private_key is None else str(tls.private_key.resolve()),
        check_hostname=tls.check_hostname,
    )
