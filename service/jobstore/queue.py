"""The job queue: submit, claim, finish, fail, defer, retry, and what a job looks like."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import replace

from processing.quality import QualityAssessment, Verdict
from service.jobs import JobRecord, JobSpec, JobState, OutboxState
from service.jobstore.connection import StoreConnection
from service.jobstore.delivery import settle_job
from service.jobstore.records import QueueOutcome

__all__ = ["JobQueueRecords"]


class JobQueueRecords(StoreConnection):
    """Job rows from ``ready`` to ``done`` or ``failed`` (:class:`service.jobs.JobQueue`)."""

    def submit(self, spec: JobSpec) -> bool:
        """Queue a ready job; ``False`` when its ``job_key`` is already known."""
        now = time.time()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM jobs WHERE job_key = ?", (spec.job_key,)).fetchone():
                return False
            updated = db.execute(
                "UPDATE jobs SET state = ?, job_key = ?, spec = ?, updated_at = ?, reason = '' "
                "WHERE job_id = ? AND state = ?",
                (
                    JobState.READY.value,
                    spec.job_key,
                    spec.to_json(),
                    now,
                    spec.job_id,
                    JobState.RECEIVING.value,
                ),
            ).rowcount
            if updated == 0:
                job_id = db.execute(
                    "INSERT INTO jobs (job_key, study_uid, version, state, calling_ae, "
                    "created_at, updated_at, last_instance_at) VALUES (?,?,?,?,?,?,?,?)",
                    (
                        spec.job_key,
                        spec.study_uid,
                        spec.version,
                        JobState.READY.value,
                        "",
                        now,
                        now,
                        now,
                    ),
                ).lastrowid
                assert job_id is not None
                db.execute(
                    "UPDATE jobs SET spec = ? WHERE job_id = ?",
                    (replace(spec, job_id=job_id).to_json(), job_id),
                )
        return True

    def queue_receiving(self, spec: JobSpec, last_instance_at: float) -> QueueOutcome:
        """Queue the receiving job ``spec.job_id`` of a complete study, in one transaction.

        ``last_instance_at`` is the job's last arrival when ``spec`` was built
        from the study's instances: when an instance arrived since, its input list
        would lack it, so nothing changes (:attr:`QueueOutcome.CHANGED`; the next
        check builds the spec again). A spec whose key an earlier job has (the
        same inputs) closes the receiving job ``done`` with that reason.
        """
        now = time.time()
        with self._transaction() as db:
            row = db.execute(
                "SELECT last_instance_at FROM jobs WHERE job_id = ? AND state = ?",
                (spec.job_id, JobState.RECEIVING.value),
            ).fetchone()
            if row is None or row["last_instance_at"] != last_instance_at:
                return QueueOutcome.CHANGED
            if db.execute("SELECT 1 FROM jobs WHERE job_key = ?", (spec.job_key,)).fetchone():
                db.execute(
                    "UPDATE jobs SET state = ?, reason = ?, updated_at = ? WHERE job_id = ?",
                    (
                        JobState.DONE.value,
                        "same inputs as an earlier job of this study",
                        now,
                        spec.job_id,
                    ),
                )
                return QueueOutcome.DUPLICATE
            db.execute(
                "UPDATE jobs SET state = ?, job_key = ?, spec = ?, updated_at = ?, reason = '' "
                "WHERE job_id = ?",
                (JobState.READY.value, spec.job_key, spec.to_json(), now, spec.job_id),
            )
        return QueueOutcome.QUEUED

    def unfinished_earlier_version(self, study_uid: str, version: int) -> int | None:
        """An earlier version of the study still ``ready`` or ``processing`` (``None``: none).

        A later version waits for it (an exam or a reader's correction), so that
        its SR exists to be named as the later report's predecessor and its
        results are not sent after the later ones.
        """
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(version) FROM jobs WHERE study_uid = ? AND version < ? "
                "AND state IN (?, ?)",
                (study_uid, version, JobState.READY.value, JobState.PROCESSING.value),
            ).fetchone()
        return None if row[0] is None else int(row[0])

    def claim(self, now: float | None = None) -> JobSpec | None:
        """Take the oldest ready job that is due (see :meth:`defer`); it becomes ``processing``."""
        due = time.time() if now is None else now
        with self._transaction() as db:
            row = db.execute(
                "SELECT job_id, spec FROM jobs WHERE state = ? AND not_before <= ? "
                "ORDER BY updated_at, job_id LIMIT 1",
                (JobState.READY.value, due),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state = ?, attempts = attempts + 1, updated_at = ? "
                "WHERE job_id = ?",
                (JobState.PROCESSING.value, time.time(), row["job_id"]),
            )
        return JobSpec.from_json(row["spec"])

    def finish_processing(
        self,
        job_id: int,
        results: Sequence[tuple[str, str]],
        destinations: Sequence[str],
        processing_seconds: float,
        *,
        quality: QualityAssessment | None = None,
    ) -> None:
        """Queue each result file ``(path, sop_instance_uid)`` for each destination.

        The job becomes ``exporting``, or ``done`` when there is no destination.
        ``quality`` (the result's reliability verdict and reasons) is kept with
        the job for ``wbdwi status`` and the metrics.
        """
        now = time.time()
        verdict = None if quality is None else quality.verdict.value
        quality_json = None if quality is None else json.dumps(quality.as_dict())
        state = JobState.EXPORTING if destinations and results else JobState.DONE
        with self._transaction() as db:
            _queue_results(db, job_id, results, destinations, now)
            db.execute(
                "UPDATE jobs SET state = ?, reason = '', processing_seconds = ?, updated_at = ?, "
                "not_before = 0, deferred_since = NULL, verdict = ?, quality = ? WHERE job_id = ?",
                (state.value, processing_seconds, now, verdict, quality_json, job_id),
            )
            if state is JobState.EXPORTING:
                # rows queued early (queue_results_early) may be settled already
                settle_job(db, job_id, now)

    def queue_results_early(
        self, job_id: int, results: Sequence[tuple[str, str]], destinations: Sequence[str]
    ) -> int:
        """Queue result files of a job still ``processing`` (its derived series, written
        before its SEG and SR); :meth:`finish_processing` queues the rest. How many rows.

        The job's state does not change; the exporter delivers these rows meanwhile.
        """
        if not destinations or not results:
            return 0
        with self._transaction() as db:
            return _queue_results(db, job_id, results, destinations, time.time())

    def finish_without_results(
        self,
        job_id: int,
        reason: str,
        processing_seconds: float,
        *,
        state: JobState = JobState.DONE,
    ) -> None:
        """A job with nothing to produce ends with a reason: ``done`` (a SEG correcting no
        exam) or ``ignored`` (a study without a diffusion-weighted series)."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = ?, reason = ?, processing_seconds = ?, updated_at = ?, "
                "not_before = 0, deferred_since = NULL WHERE job_id = ?",
                (state.value, reason, processing_seconds, time.time(), job_id),
            )

    def processed_specs(self, study_uid: str) -> list[JobSpec]:
        """Specs of the study's jobs past processing (``exporting``, ``done``), newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT spec FROM jobs WHERE study_uid = ? AND state IN (?, ?) "
                "AND spec IS NOT NULL ORDER BY version DESC, job_id DESC",
                (study_uid, JobState.EXPORTING.value, JobState.DONE.value),
            ).fetchall()
        return [JobSpec.from_json(row["spec"]) for row in rows]

    def latest_version(self, study_uid: str) -> int:
        """The highest job version of the study (0 when it has no job)."""
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(version) FROM jobs WHERE study_uid = ?", (study_uid,)
            ).fetchone()
        return int(row[0] or 0)

    def fail(self, job_id: int, reason: str) -> None:
        """Mark a job failed with its reason; its inputs stay in the spool."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = ?, reason = ?, updated_at = ?, not_before = 0, "
                "deferred_since = NULL WHERE job_id = ?",
                (JobState.FAILED.value, reason, time.time(), job_id),
            )

    def cancel(self, job_id: int, who: str) -> JobRecord:
        """Cancel a job no worker has started: ``receiving`` or ``ready`` becomes ``failed``.

        The reason reads ``cancelled by <who>``; the inputs stay in the spool, so
        ``wbdwi retry`` queues a cancelled ready job again (a cancelled receiving
        job had no input list yet: sending the study again makes a new version).
        The check and the change are one transaction, so a worker cannot claim
        the job in between.

        Raises ``KeyError`` for an unknown job and ``ValueError`` for a job that is
        processing or has ended (a running job is not interrupted).
        """
        self.status(job_id)  # KeyError for an unknown job
        now = time.time()
        with self._transaction() as db:
            updated = db.execute(
                "UPDATE jobs SET state = ?, reason = ?, updated_at = ?, not_before = 0, "
                "deferred_since = NULL, held_since = NULL WHERE job_id = ? AND state IN (?, ?)",
                (
                    JobState.FAILED.value,
                    f"cancelled by {who}",
                    now,
                    job_id,
                    JobState.RECEIVING.value,
                    JobState.READY.value,
                ),
            ).rowcount
        if updated == 0:
            state = self.status(job_id).state
            raise ValueError(
                f"job {job_id} is {state.value}; only a receiving or ready job can be "
                "cancelled (a running job is not interrupted)"
            )
        return self.status(job_id)

    def defer(self, job_id: int, until: float, reason: str, *, now: float | None = None) -> None:
        """Put a claimed job back to ``ready``, not to be claimed before ``until``.

        ``reason`` says what it waits for (``wbdwi status`` shows it); the time
        of the first deferral is kept (:meth:`deferred_since`) until the job
        finishes, fails or is retried.
        """
        at = time.time() if now is None else now
        with self._transaction() as db:
            updated = db.execute(
                "UPDATE jobs SET state = ?, reason = ?, not_before = ?, "
                "deferred_since = COALESCE(deferred_since, ?), updated_at = ? "
                "WHERE job_id = ? AND state = ?",
                (JobState.READY.value, reason, until, at, at, job_id, JobState.PROCESSING.value),
            ).rowcount
        if updated == 0:
            raise ValueError(f"job {job_id} is not processing; only a claimed job can be deferred")

    def deferred_since(self, job_id: int) -> float | None:
        """When the job was first deferred (``None``: never, or not since it last ran)."""
        with self._lock:
            row = self._db.execute(
                "SELECT deferred_since FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
        if row is None:
            raise KeyError(f"no job {job_id}")
        value = row["deferred_since"]
        return None if value is None else float(value)

    def status(self, job_id: int) -> JobRecord:
        """The record of one job; ``KeyError`` when there is none."""
        records = self.jobs(job_id=job_id)
        if not records:
            raise KeyError(f"no job {job_id}")
        return records[0]

    def jobs(self, *, job_id: int | None = None, limit: int = 1000) -> list[JobRecord]:
        """Job records, newest first (or the one ``job_id``).

        ``instance_count`` is the job's own inputs once they are frozen into its
        spec (each version keeps its count when a later one arrives), and the
        study's stored instances while it is receiving (or has no spec yet).
        """
        query = (
            "SELECT j.*, (SELECT COUNT(*) FROM instances i WHERE i.study_uid = j.study_uid) "
            "AS instance_count FROM jobs j"
        )
        parameters: tuple[object, ...] = ()
        if job_id is not None:
            query += " WHERE j.job_id = ?"
            parameters = (job_id,)
        query += " ORDER BY j.job_id DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*parameters, limit)).fetchall()
        return [
            JobRecord(
                job_id=row["job_id"],
                study_uid=row["study_uid"],
                version=row["version"],
                state=JobState(row["state"]),
                calling_ae=row["calling_ae"],
                reason=row["reason"],
                job_key=row["job_key"],
                created_at=row["created_at"],
                updated_at=row["updated_at"],
                last_instance_at=row["last_instance_at"],
                instance_count=_input_count(row["state"], row["spec"], row["instance_count"]),
                attempts=row["attempts"],
                processing_seconds=row["processing_seconds"],
                not_before=row["not_before"],
                quality=_quality(row["quality"]),
                held_since=row["held_since"],
            )
            for row in rows
        ]

    def retry(self, job_id: int) -> JobRecord:
        """Requeue a failed job: dead deliveries go back to pending, else it is reprocessed.

        Raises ``KeyError`` for an unknown job and ``ValueError`` when the job is not
        failed and has no dead-lettered delivery.
        """
        with self._lock:
            record = self.status(job_id)
            now = time.time()
            with self._transaction() as db:
                revived = db.execute(
                    "UPDATE outbox SET state = ?, attempts = 0, next_try_at = ?, updated_at = ? "
                    "WHERE job_id = ? AND state = ?",
                    (OutboxState.PENDING.value, now, now, job_id, OutboxState.DEAD.value),
                ).rowcount
                if revived:
                    db.execute(
                        "UPDATE jobs SET state = ?, reason = '', updated_at = ? WHERE job_id = ?",
                        (JobState.EXPORTING.value, now, job_id),
                    )
                elif record.state is JobState.FAILED:
                    if record.job_key is None:
                        raise ValueError(
                            f"job {job_id} failed before it was queued; nothing to retry"
                        )
                    db.execute(
                        "UPDATE jobs SET state = ?, reason = '', updated_at = ?, not_before = 0, "
                        "deferred_since = NULL WHERE job_id = ?",
                        (JobState.READY.value, now, job_id),
                    )
                else:
                    raise ValueError(
                        f"job {job_id} is {record.state.value}, not failed, and has no "
                        "dead-lettered delivery"
                    )
            # read under the same lock: a worker of this process may claim it at once
            return self.status(job_id)

    def resume_after_restart(self) -> int:
        """Put jobs caught in ``processing`` back to ``ready``; returns how many."""
        with self._transaction() as db:
            return db.execute(
                "UPDATE jobs SET state = ?, updated_at = ? WHERE state = ?",
                (JobState.READY.value, time.time(), JobState.PROCESSING.value),
            ).rowcount

    def verdict_counts(self) -> dict[Verdict, int]:
        """Processed jobs by the verdict of their result (every verdict present, zero when none).

        Every processed version of a study counts once; jobs processed before
        verdicts were recorded count under none.
        """
        with self._lock:
            rows = self._db.execute(
                "SELECT verdict, COUNT(*) FROM jobs WHERE verdict IS NOT NULL GROUP BY verdict"
            ).fetchall()
        counts = dict.fromkeys(Verdict, 0)
        counts.update({Verdict(verdict): count for verdict, count in rows})
        return counts

    def job_counts(self) -> dict[JobState, int]:
        """Number of jobs in each state (every state present, zero when none)."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        counts = dict.fromkeys(JobState, 0)
        counts.update({JobState(state): count for state, count in rows})
        return counts


def _quality(text: str | None) -> QualityAssessment | None:
    """The stored verdict of a job (``None``: not processed, or before verdicts were kept)."""
    if text is None:
        return None
    return QualityAssessment.from_dict(json.loads(text))


def _input_count(state: str, spec: str | None, study_instances: int) -> int:
    """The job's frozen inputs (its spec's input paths), or the study's count while receiving."""
    if state == JobState.RECEIVING.value or not spec:
        return study_instances
    paths = json.loads(spec).get("input_paths")
    return len(paths) if isinstance(paths, list) else study_instances


def _queue_results(
    db: sqlite3.Connection,
    job_id: int,
    results: Sequence[tuple[str, str]],
    destinations: Sequence[str],
    now: float,
) -> int:
    """One pending outbox row per result file and destination (kept when there already)."""
    cursor = db.executemany(
        "INSERT OR IGNORE INTO outbox (job_id, destination, path, sop_instance_uid, "
        "state, next_try_at, updated_at) VALUES (?,?,?,?,?,?,?)",
        [
            (job_id, destination, path, uid, OutboxState.PENDING.value, now, now)
            for destination in destinations
            for path, uid in results
        ],
    )
    return int(cursor.rowcount)
