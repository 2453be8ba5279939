"""What travels over RabbitMQ: job envelopes (to workers) and job events (to the receiver).

Both are plain JSON objects. The envelope wraps the portable
:class:`~service.jobs.JobSpec` with what a worker checks before it runs the
job: the software version the receiver runs and the digest of the processing
settings in the spec. An event says what became of one job (``started``,
``finished`` with its result files and verdict, ``no_results``, ``failed``,
``waiting`` for its priors peer, or ``refused`` by a worker of another
version); the receiver applies it to its ledger, idempotently by ``job_key``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from processing.quality import QualityAssessment
from service.jobs import JobSpec, settings_digest

__all__ = ["EVENT_KINDS", "JobEnvelope", "JobEvent", "settings_digest"]

#: Every kind of :class:`JobEvent`.
EVENT_KINDS = ("started", "finished", "no_results", "failed", "waiting", "refused")


@dataclass(frozen=True, slots=True)
class JobEnvelope:
    """One job as published to a device-class queue.

    Attributes
    ----------
    spec
        The job spec's JSON (:meth:`JobSpec.to_json`).
    job_key
        The spec's ``job_key`` (repeated so a dead-lettered message names its job).
    job_id
        The receiver's ledger id of the job.
    software_version
        Version of the receiver; a worker of another version refuses the job.
    settings_digest
        :func:`settings_digest` of the spec's processing settings; a worker
        refuses a spec whose settings do not match it (damaged in transit or
        edited by hand).
    history
        The patient's exam history for a job with priors
        (:meth:`service.history.HistorySnapshot.to_dict`): the worker reads its
        priors from it and writes no database; ``None``: no priors.
    """

    spec: str
    job_key: str
    job_id: int
    software_version: str
    settings_digest: str
    history: Mapping[str, Any] | None = None

    @classmethod
    def for_spec(
        cls, spec: JobSpec, software_version: str, history: Mapping[str, Any] | None = None
    ) -> JobEnvelope:
        """The envelope of ``spec`` published by a receiver of ``software_version``."""
        return cls(
            spec=spec.to_json(),
            job_key=spec.job_key,
            job_id=spec.job_id,
            software_version=software_version,
            settings_digest=settings_digest(spec.processing),
            history=history,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON values."""
        return {
            "spec": self.spec,
            "job_key": self.job_key,
            "job_id": self.job_id,
            "software_version": self.software_version,
            "settings_digest": self.settings_digest,
            "history": None if self.history is None else dict(self.history),
        }

    @classmethod
    def from_dict(cls, payload: object) -> JobEnvelope:
        """Parse :meth:`to_dict` output; ``ValueError`` naming what is wrong."""
        if not isinstance(payload, Mapping):
            raise ValueError("a job envelope must be a JSON object")
        history = payload.get("history")
        if history is not None and not isinstance(history, Mapping):
            raise ValueError("job envelope history must be a JSON object or null")
        try:
            return cls(
                spec=str(payload["spec"]),
                job_key=str(payload["job_key"]),
                job_id=int(payload["job_id"]),
                software_version=str(payload["software_version"]),
                settings_digest=str(payload["settings_digest"]),
                history=None if history is None else dict(history),
            )
        except KeyError as missing:
            raise ValueError(f"job envelope lacks the field {missing}") from None

    def refusal(self, worker_version: str) -> str:
        """Why a worker of ``worker_version`` must not run this job; empty when it may."""
        if self.software_version != worker_version:
            return (
                f"job {self.job_key} was made by wbdwi {self.software_version}; this worker "
                f"runs wbdwi {worker_version} and leaves it to a worker of the same version "
                f"(results of one exam come from one software version)"
            )
        digest = settings_digest(JobSpec.from_json(self.spec).processing)
        if digest != self.settings_digest:
            return (
                f"job {self.job_key}: its processing settings digest to {digest}, the receiver "
                f"sent {self.settings_digest} (the spec was changed after it was published)"
            )
        return ""


@dataclass(frozen=True, slots=True)
class JobEvent:
    """What a worker reports about one job.

    Attributes
    ----------
    kind
        One of :data:`EVENT_KINDS`.
    job_key, job_id
        The job.
    worker
        Name of the worker (``celery`` node name) that sends it.
    results
        ``finished``: ``(path, sop_instance_uid)`` of each result file.
    quality
        ``finished``: the result's verdict (:meth:`QualityAssessment.as_dict`).
    seconds
        ``finished``/``failed``/``no_results``: processing time.
    reason
        ``failed``/``refused``/``waiting``/``no_results``: why, in plain words.
    device
        ``finished``: the device the job ran on.
    history
        ``finished``: what the job wrote to the patient's history
        (:meth:`service.history.HistorySnapshot.writes`), for the receiver to
        record; ``None``: nothing.
    """

    kind: str
    job_key: str
    job_id: int
    worker: str
    results: tuple[tuple[str, str], ...] = ()
    quality: Mapping[str, Any] | None = None
    seconds: float = 0.0
    reason: str = ""
    device: str = ""
    history: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown job event kind {self.kind!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON values."""
        return {
            "kind": self.kind,
            "job_key": self.job_key,
            "job_id": self.job_id,
            "worker": self.worker,
            "results": [list(pair) for pair in self.results],
            "quality": None if self.quality is None else dict(self.quality),
            "seconds": self.seconds,
            "reason": self.reason,
            "device": self.device,
            "history": None if self.history is None else dict(self.history),
        }

    @classmethod
    def from_dict(cls, payload: object) -> JobEvent:
        """Parse :meth:`to_dict` output; ``ValueError`` naming what is wrong."""
        if not isinstance(payload, Mapping):
            raise ValueError("a job event must be a JSON object")
        quality = payload.get("quality")
        if quality is not None and not isinstance(quality, Mapping):
            raise ValueError("job event quality must be a JSON object or null")
        history = payload.get("history")
        if history is not None and not isinstance(history, Mapping):
            raise ValueError("job event history must be a JSON object or null")
        try:
            return cls(
                kind=str(payload["kind"]),
                job_key=str(payload["job_key"]),
                job_id=int(payload["job_id"]),
                worker=str(payload.get("worker", "")),
                results=tuple((str(p), str(u)) for p, u in payload.get("results", ())),
                quality=None if quality is None else dict(quality),
                seconds=float(payload.get("seconds", 0.0)),
                reason=str(payload.get("reason", "")),
                device=str(payload.get("device", "")),
                history=None if history is None else dict(history),
            )
        except KeyError as missing:
            raise ValueError(f"job event lacks the field {missing}") from None

    def assessment(self) -> QualityAssessment | None:
        """The verdict as a :class:`QualityAssessment` (``None`` when not sent)."""
        return None if self.quality is None else QualityAssessment.from_dict(self.quality)
