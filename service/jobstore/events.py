"""What the worker reports about a job, keyed by its spec (the ``JobEvents`` seam).

The SQLite store keeps jobs by row id; these methods map the spec's
``job_id`` to the row-level methods of :mod:`service.jobstore.queue`.
"""

from __future__ import annotations

from collections.abc import Sequence

from processing.quality import QualityAssessment
from service.jobs import JobSpec, JobState
from service.jobstore.queue import JobQueueRecords

__all__ = ["JobEventRecords"]


class JobEventRecords(JobQueueRecords):
    """The worker's reports on the SQLite store."""

    def job_finished(
        self,
        spec: JobSpec,
        results: Sequence[tuple[str, str]],
        processing_seconds: float,
        *,
        quality: QualityAssessment | None = None,
    ) -> None:
        """Record the results and queue them per destination (:meth:`finish_processing`)."""
        self.finish_processing(
            spec.job_id, results, spec.destinations, processing_seconds, quality=quality
        )

    def job_finished_without_results(
        self, spec: JobSpec, reason: str, processing_seconds: float, *, state: JobState
    ) -> None:
        """End the job with a reason and nothing to send (:meth:`finish_without_results`)."""
        self.finish_without_results(spec.job_id, reason, processing_seconds, state=state)

    def job_failed(self, spec: JobSpec, reason: str) -> None:
        """Mark the job failed (:meth:`fail`)."""
        self.fail(spec.job_id, reason)

    def job_deferred(self, spec: JobSpec, until: float, reason: str, *, now: float) -> None:
        """Put the claimed job back to ``ready`` until ``until`` (:meth:`defer`)."""
        self.defer(spec.job_id, until, reason, now=now)

    def job_deferred_since(self, spec: JobSpec) -> float | None:
        """When the job was first deferred (:meth:`deferred_since`)."""
        return self.deferred_since(spec.job_id)
