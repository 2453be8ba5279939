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
from pathlib import Path

import structlog

from dicom_node.scp import MR_STORAGE_CLASSES
from service.corrections import CORRECTION_JOB_PREFIX, correction_job_key
from service.history import HISTORY_FILE
from service.jobs import ClientTlsSpec, CorrectionSpec, JobSpec, PriorsSpec, make_job_key
from service.jobstore import InstanceRow, ReceivingStudy, SqliteJobStore
from service.settings import Settings, parse_destination, processing_settings_to_mapping

__all__ = [
    "CompletionDetector",
    "completion_reason",
    "priors_spec",
    "results_folder",
    "select_inputs",
]

LOGGER = structlog.get_logger(__name__)


def completion_reason(study: ReceivingStudy, settings: Settings, now: float) -> str | None:
    """Why the study is complete at ``now`` (for the log), or ``None`` when it is not yet."""
    quiet = settings.quiet_seconds_for(study.calling_ae)
    mpps_applies = study.mpps_completed_at is not None and (
        study.version == 1 or study.mpps_completed_at >= study.created_at
    )
    if mpps_applies and study.mpps_completed_at is not None:
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
        store: SqliteJobStore,
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
        )

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
                spec = self.build_spec(study, inputs)
                if self.store.submit(spec):
                    submitted.append(study.job_id)
                    LOGGER.info(
                        "job_ready", reason=reason, version=study.version, instances=len(inputs)
                    )
                else:
                    self.store.discard_receiving(
                        study.job_id, "same inputs as an earlier job of this study"
                    )
                    LOGGER.info("job_discarded", reason="same inputs as an earlier job")
        return submitted

    def submit_corrections(self) -> list[int]:
        """Queue a correction job for every stored SEG without one; returns their job ids.

        The job corrects the study's latest exam job that finished processing
        (its inputs, its results folder); with none, it is queued all the same
        and ends ``done`` with the reason (see :mod:`service.corrections`).
        """
        submitted: list[int] = []
        for study_uid, seg in self.store.unclaimed_segmentations(CORRECTION_JOB_PREFIX):
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

    def run(self, stop: threading.Event, interval_seconds: float = 0.5) -> None:
        """Check every ``interval_seconds`` (or at once when woken) until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.check()
            except Exception:
                # A database hiccup must not end completion detection; log and go on.
                LOGGER.exception("completion_check_failed")
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


def results_folder(results_dir: Path, study_uid: str, version: int) -> Path:
    """Where a job's result files go."""
    return results_dir / study_uid / f"v{version}"
