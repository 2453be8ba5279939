"""SQLite job store: received instances, MPPS, jobs, the outbox and the sender ledger.

One database file in WAL mode, one connection guarded by a lock (SQLite
serialises writers anyway; the lock keeps Python threads from tripping over one
connection). Instance rows are committed with ``synchronous=NORMAL``: a process
crash loses nothing, and after a power cut :meth:`SqliteJobStore.index_spool`
re-indexes from the spool, which was fsynced first. Every state change of a job
or a delivery is committed with ``synchronous=FULL``.

Tables
------
``instances``  one row per stored SOP instance (primary key: SOP Instance UID)
``mpps``       Modality Performed Procedure Steps (N-CREATE / N-SET)
``jobs``       one row per exam version; states in :class:`service.jobs.JobState`
``outbox``     one row per result file and destination, with attempts and next try
``ledger``     what each destination acknowledged (a job that runs twice never sends twice)

Schema version 2 added ``jobs.not_before`` and ``jobs.deferred_since`` (a job
waiting for priors from PACS); a version 1 store is upgraded in place at open.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from dicom_node.spool import SpooledInstance
from service.jobs import JobRecord, JobSpec, JobState, OutboxRecord, OutboxState

__all__ = [
    "InstanceRow",
    "JobDelivery",
    "JobStoreError",
    "ReceivingStudy",
    "SqliteJobStore",
    "StudySpool",
]

SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid TEXT NOT NULL,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    series_description TEXT NOT NULL,
    transfer_syntax_uid TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    path TEXT NOT NULL,
    size_bytes INTEGER NOT NULL,
    received_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_study ON instances (study_uid);
CREATE TABLE IF NOT EXISTS mpps (
    sop_instance_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    status TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    referenced_sop_uids TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS mpps_study ON mpps (study_uid);
CREATE TABLE IF NOT EXISTS jobs (
    job_id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_key TEXT UNIQUE,
    study_uid TEXT NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    spec TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    last_instance_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    processing_seconds REAL,
    not_before REAL NOT NULL DEFAULT 0,
    deferred_since REAL
);
CREATE INDEX IF NOT EXISTS jobs_study ON jobs (study_uid, version);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
CREATE TABLE IF NOT EXISTS outbox (
    outbox_id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id INTEGER NOT NULL REFERENCES jobs (job_id),
    destination TEXT NOT NULL,
    path TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try_at REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL,
    UNIQUE (job_id, destination, sop_instance_uid)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_try_at);
CREATE TABLE IF NOT EXISTS ledger (
    destination TEXT NOT NULL,
    sop_instance_uid TEXT NOT NULL,
    job_id INTEGER NOT NULL,
    acknowledged_at REAL NOT NULL,
    PRIMARY KEY (destination, sop_instance_uid)
);
"""

# Columns added after schema version 1, with their definitions (added in place at open).
_ADDED_JOB_COLUMNS = {
    "not_before": "REAL NOT NULL DEFAULT 0",
    "deferred_since": "REAL",
}

_OPEN_STATES = (JobState.RECEIVING.value, JobState.READY.value)


class JobStoreError(RuntimeError):
    """The job store cannot be opened (newer schema, not a database); the message says why."""


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """A stored instance as the job store knows it."""

    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    series_description: str
    calling_ae: str
    path: str
    received_at: float


@dataclass(frozen=True, slots=True)
class ReceivingStudy:
    """A job still receiving, with what completion detection needs to decide."""

    job_id: int
    study_uid: str
    version: int
    calling_ae: str
    created_at: float
    last_instance_at: float
    mpps_completed_at: float | None
    mpps_instances_missing: int | None  # None: no COMPLETED MPPS lists instances


@dataclass(frozen=True, slots=True)
class JobDelivery:
    """A job with what retention needs: its state, results folder and acknowledgements.

    ``outbox_rows`` counts every (result file, destination) row; ``acknowledged_rows``
    those that are ``sent`` **and** in the ledger.
    """

    job_id: int
    study_uid: str
    version: int
    state: JobState
    updated_at: float
    output_dir: str | None
    outbox_rows: int
    acknowledged_rows: int
    last_acknowledged_at: float | None

    @property
    def delivered(self) -> bool:
        """Every result file acknowledged by every destination (``False`` without any)."""
        return self.outbox_rows > 0 and self.acknowledged_rows == self.outbox_rows


@dataclass(frozen=True, slots=True)
class StudySpool:
    """What the spool holds of one study."""

    study_uid: str
    instances: int
    size_bytes: int
    last_received_at: float


class SqliteJobStore:
    """The embedded :class:`service.jobs.JobQueue` backend and the node's intake records.

    Parameters
    ----------
    path
        Database file (created with its folder when missing).
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self._synchronous = ""
        self._db = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        try:
            self._open_schema()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise JobStoreError(f"job store {path} cannot be opened: {error}") from error
        except BaseException:
            self._db.close()
            raise

    def _open_schema(self) -> None:
        """Set the connection up; create, upgrade or refuse the schema."""
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=30000")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, 1, SCHEMA_VERSION):
            raise JobStoreError(
                f"job store {self.path} has schema version {version}; this node expects "
                f"{SCHEMA_VERSION} (a newer node wrote it: upgrade this one, or restore the "
                "data folder's backup)"
            )
        with self._lock:
            self._db.executescript(_SCHEMA)
            present = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for column, definition in _ADDED_JOB_COLUMNS.items():
                if column not in present:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {definition}")
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            wanted = "FULL" if durable else "NORMAL"
            if wanted != self._synchronous:
                self._db.execute(f"PRAGMA synchronous={wanted}")
                self._synchronous = wanted
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # ------------------------------------------------------------------ intake
    def has_instance(self, sop_instance_uid: str) -> bool:
        """True when this SOP instance is already stored."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()
        return row is not None

    def record_instance(self, instance: SpooledInstance) -> bool:
        """Record a stored instance and attach it to the study's receiving job.

        The study's latest job keeps receiving while it is ``receiving`` or ``ready``;
        once processing has started (or ended), a new version of the job is opened.
        Returns False when the SOP instance was already recorded.
        """
        with self._transaction(durable=False) as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO instances VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    instance.sop_instance_uid,
                    instance.sop_class_uid,
                    instance.study_uid,
                    instance.series_uid,
                    instance.series_description,
                    instance.transfer_syntax_uid,
                    instance.calling_ae,
                    str(instance.path),
                    instance.size_bytes,
                    instance.received_at,
                ),
            )
            if cursor.rowcount == 0:
                return False
            self._touch_study(db, instance.study_uid, instance.calling_ae, instance.received_at)
        return True

    @staticmethod
    def _touch_study(db: sqlite3.Connection, study_uid: str, calling_ae: str, at: float) -> None:
        latest = db.execute(
            "SELECT job_id, state, version FROM jobs WHERE study_uid = ? "
            "ORDER BY version DESC LIMIT 1",
            (study_uid,),
        ).fetchone()
        if latest is not None and latest["state"] in _OPEN_STATES:
            db.execute(
                "UPDATE jobs SET last_instance_at = MAX(last_instance_at, ?), updated_at = ? "
                "WHERE job_id = ?",
                (at, time.time(), latest["job_id"]),
            )
            return
        version = 1 if latest is None else latest["version"] + 1
        db.execute(
            "INSERT INTO jobs (study_uid, version, state, calling_ae, created_at, updated_at, "
            "last_instance_at) VALUES (?,?,?,?,?,?,?)",
            (
                study_uid,
                version,
                JobState.RECEIVING.value,
                calling_ae,
                time.time(),
                time.time(),
                at,
            ),
        )

    def known_instance_paths(self) -> set[str]:
        """Paths of every recorded instance (for re-indexing the spool)."""
        with self._lock:
            return {row[0] for row in self._db.execute("SELECT path FROM instances")}

    def record_mpps(
        self,
        sop_instance_uid: str,
        *,
        study_uid: str | None,
        status: str,
        calling_ae: str,
        referenced_sop_uids: Sequence[str] = (),
    ) -> str | None:
        """Create or update an MPPS; returns its study UID (``None`` when still unknown)."""
        now = time.time()
        with self._transaction() as db:
            existing = db.execute(
                "SELECT study_uid, referenced_sop_uids FROM mpps WHERE sop_instance_uid = ?",
                (sop_instance_uid,),
            ).fetchone()
            if existing is None:
                db.execute(
                    "INSERT INTO mpps VALUES (?,?,?,?,?,?)",
                    (
                        sop_instance_uid,
                        study_uid or "",
                        status,
                        calling_ae,
                        json.dumps(sorted(referenced_sop_uids)),
                        now,
                    ),
                )
                return study_uid
            study = study_uid or existing["study_uid"]
            references = (
                sorted(referenced_sop_uids)
                if referenced_sop_uids
                else json.loads(existing["referenced_sop_uids"])
            )
            db.execute(
                "UPDATE mpps SET study_uid = ?, status = ?, referenced_sop_uids = ?, "
                "updated_at = ? WHERE sop_instance_uid = ?",
                (study, status, json.dumps(references), now, sop_instance_uid),
            )
            return study or None

    def mpps_status(self, sop_instance_uid: str) -> str | None:
        """The recorded Performed Procedure Step Status (``None``: no such MPPS)."""
        with self._lock:
            row = self._db.execute(
                "SELECT status FROM mpps WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()
        return None if row is None else str(row["status"])

    def mpps_exists(self, sop_instance_uid: str) -> bool:
        """True when an MPPS with this SOP instance UID was created."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM mpps WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()
        return row is not None

    def receiving_studies(self) -> list[ReceivingStudy]:
        """Jobs in ``receiving`` with their last instance time and MPPS completion."""
        with self._lock:
            jobs = self._db.execute(
                "SELECT job_id, study_uid, version, calling_ae, created_at, last_instance_at "
                "FROM jobs WHERE state = ?",
                (JobState.RECEIVING.value,),
            ).fetchall()
            studies: list[ReceivingStudy] = []
            for job in jobs:
                completed = self._db.execute(
                    "SELECT updated_at, referenced_sop_uids FROM mpps WHERE study_uid = ? "
                    "AND status = 'COMPLETED'",
                    (job["study_uid"],),
                ).fetchall()
                completed_at = max((row["updated_at"] for row in completed), default=None)
                references = sorted(
                    {uid for row in completed for uid in json.loads(row["referenced_sop_uids"])}
                )
                missing = None
                if references:
                    present = 0
                    for start in range(0, len(references), 500):
                        chunk = references[start : start + 500]
                        marks = ",".join("?" * len(chunk))
                        present += self._db.execute(
                            f"SELECT COUNT(*) FROM instances WHERE sop_instance_uid IN ({marks})",
                            chunk,
                        ).fetchone()[0]
                    missing = len(references) - present
                studies.append(
                    ReceivingStudy(
                        job_id=job["job_id"],
                        study_uid=job["study_uid"],
                        version=job["version"],
                        calling_ae=job["calling_ae"],
                        created_at=job["created_at"],
                        last_instance_at=job["last_instance_at"],
                        mpps_completed_at=completed_at,
                        mpps_instances_missing=missing,
                    )
                )
        return studies

    def study_instances(self, study_uid: str) -> list[InstanceRow]:
        """Every stored instance of a study, in order of arrival."""
        with self._lock:
            rows = self._db.execute(
                "SELECT sop_instance_uid, sop_class_uid, series_uid, series_description, "
                "calling_ae, path, received_at FROM instances WHERE study_uid = ? "
                "ORDER BY received_at, sop_instance_uid",
                (study_uid,),
            ).fetchall()
        return [InstanceRow(**dict(row)) for row in rows]

    def discard_receiving(self, job_id: int, reason: str) -> None:
        """Close a receiving job that turned out to duplicate an earlier one."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = ?, reason = ?, updated_at = ? WHERE job_id = ? "
                "AND state = ?",
                (JobState.DONE.value, reason, time.time(), job_id, JobState.RECEIVING.value),
            )

    # ------------------------------------------------------------------- queue
    def submit(self, spec: JobSpec) -> bool:
        """Queue a ready job; ``False`` when its ``job_key`` is already known."""
        now = time.time()
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM jobs WHERE job_key = ?", (spec.job_key,)).fetchone():
                return False
            updated = db.execute(
                "UPDATE jobs SET state = ?, job_key = ?, spec = ?, updated_at = ? "
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
    ) -> None:
        """Queue each result file ``(path, sop_instance_uid)`` for each destination.

        The job becomes ``exporting``, or ``done`` when there is no destination.
        """
        now = time.time()
        state = JobState.EXPORTING if destinations and results else JobState.DONE
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO outbox (job_id, destination, path, sop_instance_uid, "
                "state, next_try_at, updated_at) VALUES (?,?,?,?,?,?,?)",
                [
                    (job_id, destination, path, uid, OutboxState.PENDING.value, now, now)
                    for destination in destinations
                    for path, uid in results
                ],
            )
            db.execute(
                "UPDATE jobs SET state = ?, reason = '', processing_seconds = ?, updated_at = ?, "
                "not_before = 0, deferred_since = NULL WHERE job_id = ?",
                (state.value, processing_seconds, now, job_id),
            )

    def fail(self, job_id: int, reason: str) -> None:
        """Mark a job failed with its reason; its inputs stay in the spool."""
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = ?, reason = ?, updated_at = ?, not_before = 0, "
                "deferred_since = NULL WHERE job_id = ?",
                (JobState.FAILED.value, reason, time.time(), job_id),
            )

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
        """Job records, newest first (or the one ``job_id``)."""
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
                instance_count=row["instance_count"],
                attempts=row["attempts"],
                processing_seconds=row["processing_seconds"],
                not_before=row["not_before"],
            )
            for row in rows
        ]

    def retry(self, job_id: int) -> JobRecord:
        """Requeue a failed job: dead deliveries go back to pending, else it is reprocessed.

        Raises ``KeyError`` for an unknown job and ``ValueError`` when the job is not
        failed and has no dead-lettered delivery.
        """
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
                    raise ValueError(f"job {job_id} failed before it was queued; nothing to retry")
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
        return self.status(job_id)

    def dead_letters(self) -> list[OutboxRecord]:
        """Deliveries that were given up (all of them)."""
        return self.outbox(state=OutboxState.DEAD, limit=None)

    # ------------------------------------------------------------------ outbox
    def outbox(
        self,
        *,
        state: OutboxState | None = None,
        due_before: float | None = None,
        destination: str | None = None,
        limit: int | None = 10000,
    ) -> list[OutboxRecord]:
        """Outbox rows, filtered; ordered by job and id (``limit=None``: every row)."""
        clauses: list[str] = []
        parameters: list[object] = []
        if state is not None:
            clauses.append("state = ?")
            parameters.append(state.value)
        if due_before is not None:
            clauses.append("next_try_at <= ?")
            parameters.append(due_before)
        if destination is not None:
            clauses.append("destination = ?")
            parameters.append(destination)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM outbox{where} ORDER BY job_id, outbox_id LIMIT ?",
                (*parameters, -1 if limit is None else limit),
            ).fetchall()
        return [
            OutboxRecord(
                outbox_id=row["outbox_id"],
                job_id=row["job_id"],
                destination=row["destination"],
                path=row["path"],
                sop_instance_uid=row["sop_instance_uid"],
                state=OutboxState(row["state"]),
                attempts=row["attempts"],
                next_try_at=row["next_try_at"],
                last_error=row["last_error"],
            )
            for row in rows
        ]

    def acknowledged(self, destination: str, sop_instance_uid: str) -> bool:
        """True when the ledger says ``destination`` already acknowledged this instance."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM ledger WHERE destination = ? AND sop_instance_uid = ?",
                (destination, sop_instance_uid),
            ).fetchone()
        return row is not None

    def mark_sent(self, outbox_id: int) -> None:
        """Record the destination's acknowledgement in the ledger; finish the job if complete."""
        now = time.time()
        with self._transaction() as db:
            row = db.execute(
                "SELECT job_id, destination, sop_instance_uid FROM outbox WHERE outbox_id = ?",
                (outbox_id,),
            ).fetchone()
            if row is None:
                raise KeyError(f"no outbox row {outbox_id}")
            db.execute(
                "INSERT OR IGNORE INTO ledger VALUES (?,?,?,?)",
                (row["destination"], row["sop_instance_uid"], row["job_id"], now),
            )
            db.execute(
                "UPDATE outbox SET state = ?, last_error = '', updated_at = ? WHERE outbox_id = ?",
                (OutboxState.SENT.value, now, outbox_id),
            )
            self._settle_job(db, row["job_id"], now)

    def mark_attempt_failed(
        self, outbox_id: int, error: str, next_try_at: float, *, max_attempts: int
    ) -> OutboxState:
        """Count a failed delivery; dead-letter it after ``max_attempts``."""
        now = time.time()
        with self._transaction() as db:
            row = db.execute(
                "SELECT job_id, attempts FROM outbox WHERE outbox_id = ?", (outbox_id,)
            ).fetchone()
            if row is None:
                raise KeyError(f"no outbox row {outbox_id}")
            attempts = row["attempts"] + 1
            state = OutboxState.DEAD if attempts >= max_attempts else OutboxState.PENDING
            db.execute(
                "UPDATE outbox SET state = ?, attempts = ?, next_try_at = ?, last_error = ?, "
                "updated_at = ? WHERE outbox_id = ?",
                (state.value, attempts, next_try_at, error, now, outbox_id),
            )
            self._settle_job(db, row["job_id"], now)
        return state

    @staticmethod
    def _settle_job(db: sqlite3.Connection, job_id: int, now: float) -> None:
        counts = dict(
            db.execute(
                "SELECT state, COUNT(*) FROM outbox WHERE job_id = ? GROUP BY state", (job_id,)
            ).fetchall()
        )
        if counts.get(OutboxState.PENDING.value, 0):
            return
        dead = counts.get(OutboxState.DEAD.value, 0)
        if dead:
            last = db.execute(
                "SELECT destination, last_error FROM outbox WHERE job_id = ? AND state = ? "
                "ORDER BY updated_at DESC LIMIT 1",
                (job_id, OutboxState.DEAD.value),
            ).fetchone()
            reason = (
                f"{dead} result file(s) dead-lettered for {last['destination']}: "
                f"{last['last_error']}"
            )
            db.execute(
                "UPDATE jobs SET state = ?, reason = ?, updated_at = ? WHERE job_id = ?",
                (JobState.FAILED.value, reason, now, job_id),
            )
        else:
            db.execute(
                "UPDATE jobs SET state = ?, reason = '', updated_at = ? WHERE job_id = ? "
                "AND state = ?",
                (JobState.DONE.value, now, job_id, JobState.EXPORTING.value),
            )

    # ------------------------------------------------------------- operations
    def resume_after_restart(self) -> int:
        """Put jobs caught in ``processing`` back to ``ready``; returns how many."""
        with self._transaction() as db:
            return db.execute(
                "UPDATE jobs SET state = ?, updated_at = ? WHERE state = ?",
                (JobState.READY.value, time.time(), JobState.PROCESSING.value),
            ).rowcount

    def job_counts(self) -> dict[JobState, int]:
        """Number of jobs in each state (every state present, zero when none)."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        counts = dict.fromkeys(JobState, 0)
        counts.update({JobState(state): count for state, count in rows})
        return counts

    def outbox_counts(self) -> dict[tuple[str, OutboxState], int]:
        """Number of outbox rows per destination and state."""
        with self._lock:
            rows = self._db.execute(
                "SELECT destination, state, COUNT(*) FROM outbox GROUP BY destination, state"
            ).fetchall()
        return {(dest, OutboxState(state)): count for dest, state, count in rows}

    def instance_totals(self) -> tuple[int, int]:
        """Stored instances and their bytes."""
        with self._lock:
            count, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM instances"
            ).fetchone()
        return int(count), int(size)

    # --------------------------------------------------------------- retention
    def job_deliveries(self) -> list[JobDelivery]:
        """Every job with its results folder and how much of its outbox is acknowledged."""
        query = (
            "SELECT j.job_id, j.study_uid, j.version, j.state, j.updated_at, j.spec, "
            "(SELECT COUNT(*) FROM outbox o WHERE o.job_id = j.job_id) AS outbox_rows, "
            "(SELECT COUNT(*) FROM outbox o JOIN ledger l ON l.destination = o.destination "
            " AND l.sop_instance_uid = o.sop_instance_uid "
            " WHERE o.job_id = j.job_id AND o.state = ?) AS acknowledged_rows, "
            "(SELECT MAX(l.acknowledged_at) FROM outbox o JOIN ledger l "
            " ON l.destination = o.destination AND l.sop_instance_uid = o.sop_instance_uid "
            " WHERE o.job_id = j.job_id) AS last_acknowledged_at "
            "FROM jobs j ORDER BY j.job_id"
        )
        with self._lock:
            rows = self._db.execute(query, (OutboxState.SENT.value,)).fetchall()
        return [
            JobDelivery(
                job_id=row["job_id"],
                study_uid=row["study_uid"],
                version=row["version"],
                state=JobState(row["state"]),
                updated_at=row["updated_at"],
                output_dir=None
                if row["spec"] is None
                else JobSpec.from_json(row["spec"]).output_dir,
                outbox_rows=row["outbox_rows"],
                acknowledged_rows=row["acknowledged_rows"],
                last_acknowledged_at=row["last_acknowledged_at"],
            )
            for row in rows
        ]

    def spooled_studies(self) -> list[StudySpool]:
        """Studies with instances in the spool, with their count, bytes and last arrival."""
        with self._lock:
            rows = self._db.execute(
                "SELECT study_uid, COUNT(*), COALESCE(SUM(size_bytes), 0), MAX(received_at) "
                "FROM instances GROUP BY study_uid ORDER BY study_uid"
            ).fetchall()
        return [StudySpool(row[0], int(row[1]), int(row[2]), float(row[3])) for row in rows]

    def forget_study_instances(
        self, study_uid: str, allowed_states: Sequence[JobState]
    ) -> list[tuple[str, int]]:
        """Delete the study's instance rows if every job of the study is in ``allowed_states``.

        Checked and deleted in one transaction, so an instance arriving meanwhile
        (which opens a ``receiving`` job) keeps the study. Returns the
        ``(path, size_bytes)`` of the rows deleted (empty when the check failed);
        the caller deletes the files.
        """
        allowed = {state.value for state in allowed_states}
        with self._transaction() as db:
            states = {
                row[0]
                for row in db.execute("SELECT state FROM jobs WHERE study_uid = ?", (study_uid,))
            }
            if not states or not states <= allowed:
                return []
            rows = db.execute(
                "SELECT path, size_bytes FROM instances WHERE study_uid = ?", (study_uid,)
            ).fetchall()
            db.execute("DELETE FROM instances WHERE study_uid = ?", (study_uid,))
        return [(str(row[0]), int(row[1])) for row in rows]

    def ping(self) -> None:
        """Raise ``sqlite3.Error`` when the database cannot be read."""
        with self._lock:
            self._db.execute("SELECT 1 FROM jobs LIMIT 1").fetchall()
