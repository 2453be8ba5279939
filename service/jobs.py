"""Jobs as plain data, and the queue interface every backend implements.

A :class:`JobSpec` is everything a worker needs to process one exam, as JSON:
where the inputs are stored (never the pixels), the processing settings, where
the results go. Any worker loop calls :func:`service.worker.run_job` with one.

:mod:`service.queue_protocols` holds the seams between the node and its queue
backend (``JobQueue``, ``JobEvents``, ``Intake``, ``Outbox``). The embedded
backend is SQLite (:class:`service.jobstore.SqliteJobStore`); past one machine
the same protocols are implemented on a distributed queue engine.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicom_node.assembly.coverage import CoverageExpectation
from processing.quality import QualityAssessment

__all__ = [
    "PIPELINE_NAME",
    "ClientTlsSpec",
    "CorrectionSpec",
    "JobRecord",
    "JobSpec",
    "JobState",
    "OutboxRecord",
    "OutboxState",
    "PriorsSpec",
    "check_spec_compatible",
    "make_job_key",
    "results_folder",
    "settings_digest",
]

PIPELINE_NAME = "wbdwi"


class JobState(enum.Enum):
    """Life of an exam: ``receiving -> ready -> processing -> exporting -> done``, or ``failed``;
    ``ignored``: the study holds no diffusion-weighted series (a routing rule that sends every
    MR study): nothing to do, nothing to retry, its instances kept only for the spool time."""

    RECEIVING = "receiving"
    READY = "ready"
    PROCESSING = "processing"
    EXPORTING = "exporting"
    DONE = "done"
    FAILED = "failed"
    IGNORED = "ignored"


class OutboxState(enum.Enum):
    """One result file for one destination: waiting, acknowledged, given up (dead letter), or
    cancelled by an operator (``wbdwi deliveries cancel DEST``: the destination was removed)."""

    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"
    CANCELLED = "cancelled"


def make_job_key(study_uid: str, software_version: str, sop_instance_uids: Sequence[str]) -> str:
    """``study UID : pipeline/version : digest of the input instances``.

    The same study with the same inputs and software always gets the same key, so
    submitting it twice is a no-op; instances that arrive late change the digest
    and make a new job (a new version of the results).
    """
    digest = hashlib.sha256("\n".join(sorted(sop_instance_uids)).encode()).hexdigest()[:16]
    return f"{study_uid}:{PIPELINE_NAME}/{software_version}:{digest}"


@dataclass(frozen=True, slots=True)
class ClientTlsSpec:
    """DICOM TLS towards a peer, as plain data (the ``[tls]`` files; see
    :func:`dicom_node.tls.client_context`); empty paths are not used."""

    ca_bundle: str = ""
    certificate: str = ""
    private_key: str = ""
    check_hostname: bool = True

    def to_dict(self) -> dict[str, Any]:
        """JSON values."""
        return {
            "ca_bundle": self.ca_bundle,
            "certificate": self.certificate,
            "private_key": self.private_key,
            "check_hostname": self.check_hostname,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> ClientTlsSpec:
        """Parse :meth:`to_dict` output."""
        return cls(
            ca_bundle=str(payload.get("ca_bundle", "")),
            certificate=str(payload.get("certificate", "")),
            private_key=str(payload.get("private_key", "")),
            check_hostname=bool(payload.get("check_hostname", True)),
        )


@dataclass(frozen=True, slots=True)
class PriorsSpec:
    """Where a job finds the patient's earlier exams (issue 6), as plain data.

    Attributes
    ----------
    history_path
        The node's history store (``<data_dir>/history.sqlite3``).
    pacs
        ``AET@HOST:PORT`` of the query/retrieve SCP asked for the node's earlier
        reports (C-FIND + C-GET); empty: the local history only.
    calling_aet
        Our AE title towards ``pacs``.
    timeout_seconds
        Association and DIMSE timeout towards ``pacs``.
    continue_without_pacs
        When ``pacs`` cannot be asked: ``False`` raises
        :class:`service.worker.PriorsUnavailableError` (the worker defers the
        job and tries again); ``True`` goes on with the local history and
        records a warning (set by the worker once the wait is over).
    tls
        DICOM TLS towards ``pacs`` (``[tls] export`` on); ``None``: plain DICOM.
    """

    history_path: str
    pacs: str = ""
    calling_aet: str = ""
    timeout_seconds: float = 30.0
    continue_without_pacs: bool = False
    tls: ClientTlsSpec | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON values."""
        return {
            "history_path": self.history_path,
            "pacs": self.pacs,
            "calling_aet": self.calling_aet,
            "timeout_seconds": self.timeout_seconds,
            "continue_without_pacs": self.continue_without_pacs,
            "tls": None if self.tls is None else self.tls.to_dict(),
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> PriorsSpec:
        """Parse :meth:`to_dict` output; ``ValueError`` naming a missing field."""
        tls = payload.get("tls")
        if tls is not None and not isinstance(tls, Mapping):
            raise ValueError("job spec priors tls must be a JSON object or null")
        try:
            return cls(
                history_path=str(payload["history_path"]),
                pacs=str(payload.get("pacs", "")),
                calling_aet=str(payload.get("calling_aet", "")),
                timeout_seconds=float(payload.get("timeout_seconds", 30.0)),
                continue_without_pacs=bool(payload.get("continue_without_pacs", False)),
                tls=None if tls is None else ClientTlsSpec.from_dict(tls),
            )
        except KeyError as missing:
            raise ValueError(f"job spec priors lack the field {missing}") from None


@dataclass(frozen=True, slots=True)
class CorrectionSpec:
    """A reader's corrected SEG to apply to an exam the node processed (issue 11).

    Attributes
    ----------
    seg_path
        The stored SEG (a spool file).
    seg_sop_instance_uid
        Its SOP Instance UID (the corrected results' UIDs derive from it).
    corrected_output_dir
        Results folder of the job whose exam the SEG corrects (its automatic
        SR is the new report's predecessor); empty when the node processed no
        exam of the SEG's study.
    """

    seg_path: str
    seg_sop_instance_uid: str
    corrected_output_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON values."""
        return {
            "seg_path": self.seg_path,
            "seg_sop_instance_uid": self.seg_sop_instance_uid,
            "corrected_output_dir": self.corrected_output_dir,
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> CorrectionSpec:
        """Parse :meth:`to_dict` output; ``ValueError`` naming a missing field."""
        try:
            return cls(
                seg_path=str(payload["seg_path"]),
                seg_sop_instance_uid=str(payload["seg_sop_instance_uid"]),
                corrected_output_dir=str(payload.get("corrected_output_dir", "")),
            )
        except KeyError as missing:
            raise ValueError(f"job spec correction lacks the field {missing}") from None


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A job as plain JSON: identity, input references, settings and destinations.

    Attributes
    ----------
    job_key
        Study UID + pipeline + version + input digest (:func:`make_job_key`).
    job_id
        The queue's id of the job (``wbdwi retry JOB`` takes it).
    study_uid
        Study Instance UID of the exam.
    version
        1 for the first processing of a study, 2 when late instances came, ...
    input_paths
        Stored instances of the exam (spool files).
    output_dir
        Folder the result files are written to.
    destinations
        ``AET@HOST:PORT`` of each destination; empty keeps the results in ``output_dir``.
    device
        ``auto``, ``gpu`` or ``cpu``.
    processing
        Fields of :class:`processing.settings.ProcessingSettings` (JSON values).
    priors
        Where the patient's earlier exams are; ``None``: no comparison.
    correction
        A reader's corrected SEG: the job measures its mask instead of
        segmenting (``input_paths`` are the corrected job's inputs); ``None``
        for an exam's own processing.
    coverage
        What a complete exam of the sending scanner covers (stations, length);
        the worker adds the verdict's findings when the exam falls short.
        ``None``: nothing expected.
    software_version
        Version of the software that made the spec; a worker running another
        version refuses the job (:func:`check_spec_compatible`). Empty in specs
        stored before issue 15 (accepted by any worker).
    settings_digest
        :func:`settings_digest` of ``processing`` (empty in older specs).

    ``job_key`` identifies the job on every backend; ``job_id`` is the SQLite
    backend's row id (0 where a backend has none). ``input_paths`` and
    ``output_dir`` are storage keys (:mod:`service.storage`): relative to the
    storage folder, or absolute paths as the SQLite backend writes them.
    """

    job_key: str
    job_id: int
    study_uid: str
    version: int
    input_paths: tuple[str, ...]
    output_dir: str
    destinations: tuple[str, ...] = ()
    device: str = "auto"
    processing: Mapping[str, Any] = field(default_factory=dict)
    priors: PriorsSpec | None = None
    correction: CorrectionSpec | None = None
    coverage: CoverageExpectation | None = None
    software_version: str = ""
    settings_digest: str = ""

    def to_json(self) -> str:
        """Serialise to a JSON object (stable key order)."""
        payload = {
            "job_key": self.job_key,
            "job_id": self.job_id,
            "study_uid": self.study_uid,
            "version": self.version,
            "input_paths": list(self.input_paths),
            "output_dir": self.output_dir,
            "destinations": list(self.destinations),
            "device": self.device,
            "processing": dict(self.processing),
            "priors": None if self.priors is None else self.priors.to_dict(),
        }
        if self.correction is not None:
            payload["correction"] = self.correction.to_dict()
        if self.coverage is not None:
            payload["coverage"] = self.coverage.to_dict()
        if self.software_version:
            payload["software_version"] = self.software_version
        if self.settings_digest:
            payload["settings_digest"] = self.settings_digest
        return json.dumps(payload, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        """Parse :meth:`to_json` output; raises ``ValueError`` naming a missing field."""
        payload = json.loads(text)
        if not isinstance(payload, dict):
            raise ValueError("a job spec must be a JSON object")
        priors = payload.get("priors")
        if priors is not None and not isinstance(priors, dict):
            raise ValueError("job spec priors must be a JSON object or null")
        correction = payload.get("correction")
        if correction is not None and not isinstance(correction, dict):
            raise ValueError("job spec correction must be a JSON object or null")
        coverage = payload.get("coverage")
        if coverage is not None and not isinstance(coverage, dict):
            raise ValueError("job spec coverage must be a JSON object or null")
        try:
            return cls(
                job_key=str(payload["job_key"]),
                job_id=int(payload["job_id"]),
                study_uid=str(payload["study_uid"]),
                version=int(payload["version"]),
                input_paths=tuple(str(p) for p in payload["input_paths"]),
                output_dir=str(payload["output_dir"]),
                destinations=tuple(str(d) for d in payload.get("destinations", ())),
                device=str(payload.get("device", "auto")),
                processing=dict(payload.get("processing", {})),
                priors=None if priors is None else PriorsSpec.from_dict(priors),
                correction=None if correction is None else CorrectionSpec.from_dict(correction),
                coverage=None if coverage is None else CoverageExpectation.from_dict(coverage),
                software_version=str(payload.get("software_version", "")),
                settings_digest=str(payload.get("settings_digest", "")),
            )
        except KeyError as missing:
            raise ValueError(f"job spec lacks the field {missing}") from None


def settings_digest(processing: Mapping[str, Any]) -> str:
    """A short digest of the processing settings (sorted JSON, SHA-256, 16 hex digits)."""
    text = json.dumps(dict(processing), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_spec_compatible(spec: JobSpec, software_version: str) -> str | None:
    """Why a worker running ``software_version`` must not run ``spec``, or ``None``.

    A spec made by another software version is refused: its results would not
    be what its ``job_key`` promises. A spec without a version (stored before
    the field existed) is accepted; so is one whose ``settings_digest`` does
    not match its own ``processing`` only when the digest is empty.
    """
    if spec.software_version and spec.software_version != software_version:
        return (
            f"job {spec.job_key} was made for software version {spec.software_version} "
            f"and this worker runs {software_version}; it is left to a worker of that version"
        )
    if spec.settings_digest and spec.settings_digest != settings_digest(spec.processing):
        return (
            f"job {spec.job_key} carries processing settings that do not match its "
            f"settings digest {spec.settings_digest}; the spec was altered"
        )
    return None


@dataclass(frozen=True, slots=True)
class JobRecord:
    """What the queue knows about one job (for status, metrics and retries)."""

    job_id: int
    study_uid: str
    version: int
    state: JobState
    calling_ae: str
    reason: str
    job_key: str | None
    created_at: float
    updated_at: float
    last_instance_at: float
    instance_count: int
    attempts: int
    processing_seconds: float | None
    not_before: float = 0.0  # a deferred ready job is not claimed before this time
    quality: QualityAssessment | None = None  # verdict of the result (processed jobs)
    held_since: float | None = None  # receiving, held for incomplete coverage since then


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    """One result file queued for one destination."""

    outbox_id: int
    job_id: int
    destination: str
    path: str
    sop_instance_uid: str
    state: OutboxState
    attempts: int
    next_try_at: float
    last_error: str


def results_folder(results_dir: Path, study_uid: str, version: int) -> Path:
    """Where a job's result files go."""
    return results_dir / study_uid / f"v{version}"
