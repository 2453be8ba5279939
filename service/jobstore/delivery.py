"""Delivery records: the outbox (one row per result file and destination) and the ledger.

A row in the ledger is a destination's acknowledgement of a SOP instance; it is
never sent there again. When a job's last pending row is settled the job
becomes ``done``, or ``failed`` when a row was dead-lettered.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence

from service.jobs import JobSpec, JobState, OutboxRecord, OutboxState
from service.jobstore.connection import StoreConnection
from service.jobstore.records import JobDelivery

__all__ = ["DeliveryRecords", "settle_job"]


class DeliveryRecords(StoreConnection):
    """The outbox, the ledger, and how deliveries settle a job."""

    def dead_letters(self) -> list[OutboxRecord]:
        """Deliveries that were given up (all of them)."""
        return self.outbox(state=OutboxState.DEAD, limit=None)

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

    def acknowledged_among(self, destination: str, sop_instance_uids: Sequence[str]) -> set[str]:
        """Those of ``sop_instance_uids`` the ledger says ``destination`` acknowledged
        (one query per 500, not one per instance)."""
        found: set[str] = set()
        uids = list(sop_instance_uids)
        with self._lock:
            for start in range(0, len(uids), 500):
                chunk = uids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                found.update(
                    row[0]
                    for row in self._db.execute(
                        "SELECT sop_instance_uid FROM ledger WHERE destination = ? "
                        f"AND sop_instance_uid IN ({marks})",
                        (destination, *chunk),
                    )
                )
        return found

    def mark_sent(self, outbox_id: int, *, durable: bool = True) -> None:
        """Record the destination's acknowledgement in the ledger; finish the job if complete.

        With ``durable=False`` the commit survives a crash of the process but
        is not forced to disk: the next durable transaction (the exporter makes
        the last acknowledgement of each C-STORE round durable) forces it with
        every earlier one (write-ahead log order). A power cut before that only
        sends the file again (same SOP Instance UID: the peer replaces it).
        """
        now = time.time()
        with self._transaction(durable=durable) as db:
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
            settle_job(db, row["job_id"], now)

    def mark_attempt_failed(
        self, outbox_id: int, error: str, next_try_at: float, *, max_attempts: int
    ) -> OutboxState:
        """Count a failed delivery; dead-letter it after ``max_attempts``."""
        now = time.time()
        with self._transaction() as db:
            row = db.execute(
                "SELECT job_id, attempts, state FROM outbox WHERE outbox_id = ?", (outbox_id,)
            ).fetchone()
            if row is None:
                raise KeyError(f"no outbox row {outbox_id}")
            if row["state"] != OutboxState.PENDING.value:
                # cancelled (or settled) while the exporter's round was under way: it stays so
                return OutboxState(row["state"])
            attempts = row["attempts"] + 1
            state = OutboxState.DEAD if attempts >= max_attempts else OutboxState.PENDING
            db.execute(
                "UPDATE outbox SET state = ?, attempts = ?, next_try_at = ?, last_error = ?, "
                "updated_at = ? WHERE outbox_id = ?",
                (state.value, attempts, next_try_at, error, now, outbox_id),
            )
            settle_job(db, row["job_id"], now)
        return state

    def retry_deliveries_now(self, destination: str | None = None) -> int:
        """Make the waiting deliveries (to ``destination``, or all) due now; how many.

        Back-off and the slow retry after a rejected association are skipped:
        for when the peer was fixed. The exporter reads the outbox at least
        once a second, so a running node sends them within about a second.
        """
        now = time.time()
        clause, parameters = (
            ("", ()) if destination is None else (" AND destination = ?", (destination,))
        )
        with self._transaction() as db:
            cursor = db.execute(
                f"UPDATE outbox SET next_try_at = ?, updated_at = ? WHERE state = ?{clause}",
                (now, now, OutboxState.PENDING.value, *parameters),
            )
        return int(cursor.rowcount)

    def cancel_deliveries(self, destination: str, who: str) -> int:
        """Give up every waiting delivery to ``destination``; how many were cancelled.

        The rows become ``cancelled`` (``last_error`` says by whom), so their
        jobs can finish (``done``: a cancelled delivery does not fail a job)
        and retention is no longer blocked. Acknowledged rows are untouched.
        """
        now = time.time()
        with self._transaction() as db:
            jobs = [
                row["job_id"]
                for row in db.execute(
                    "SELECT DISTINCT job_id FROM outbox WHERE state = ? AND destination = ?",
                    (OutboxState.PENDING.value, destination),
                ).fetchall()
            ]
            cursor = db.execute(
                "UPDATE outbox SET state = ?, last_error = ?, updated_at = ? "
                "WHERE state = ? AND destination = ?",
                (
                    OutboxState.CANCELLED.value,
                    f"cancelled by {who}",
                    now,
                    OutboxState.PENDING.value,
                    destination,
                ),
            )
            for job_id in jobs:
                settle_job(db, job_id, now)
        return int(cursor.rowcount)

    def outbox_counts(self) -> dict[tuple[str, OutboxState], int]:
        """Number of outbox rows per destination and state."""
        with self._lock:
            rows = self._db.execute(
                "SELECT destination, state, COUNT(*) FROM outbox GROUP BY destination, state"
            ).fetchall()
        return {(dest, OutboxState(state)): count for dest, state, count in rows}

    def job_deliveries(self) -> list[JobDelivery]:
        """Every job with its results folder and how much of its outbox is acknowledged.

        Cancelled rows (``wbdwi deliveries cancel``) do not count: a job whose other
        deliveries are acknowledged is delivered, and one whose every delivery was
        cancelled is treated as one without destinations (results kept).
        """
        query = (
            "SELECT j.job_id, j.study_uid, j.version, j.state, j.updated_at, j.spec, "
            "(SELECT COUNT(*) FROM outbox o WHERE o.job_id = j.job_id AND o.state != ?) "
            "AS outbox_rows, "
            "(SELECT COUNT(*) FROM outbox o JOIN ledger l ON l.destination = o.destination "
            " AND l.sop_instance_uid = o.sop_instance_uid "
            " WHERE o.job_id = j.job_id AND o.state = ?) AS acknowledged_rows, "
            "(SELECT MAX(l.acknowledged_at) FROM outbox o JOIN ledger l "
            " ON l.destination = o.destination AND l.sop_instance_uid = o.sop_instance_uid "
            " WHERE o.job_id = j.job_id) AS last_acknowledged_at "
            "FROM jobs j ORDER BY j.job_id"
        )
        with self._lock:
            rows = self._db.execute(
                query, (OutboxState.CANCELLED.value, OutboxState.SENT.value)
            ).fetchall()
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


def settle_job(db: sqlite3.Connection, job_id: int, now: float) -> None:
    """End an ``exporting`` job whose rows are all settled: ``done``, or ``failed`` with dead ones.

    A job still ``processing`` is left alone: its derived series may be delivered while
    it runs, and :meth:`~service.jobstore.queue.JobQueueRecords.finish_processing`
    settles it when it ends.
    """
    # Called for every acknowledgement: one index probe while rows wait (counting the
    # job's rows each time made a round of n files cost n^2/2 row visits).
    waiting = db.execute(
        "SELECT 1 FROM outbox WHERE job_id = ? AND state = ? LIMIT 1",
        (job_id, OutboxState.PENDING.value),
    ).fetchone()
    if waiting is not None:
        return
    dead = db.execute(
        "SELECT COUNT(*) FROM outbox WHERE job_id = ? AND state = ?",
        (job_id, OutboxState.DEAD.value),
    ).fetchone()[0]
    if dead:
        last = db.execute(
            "SELECT destination, last_error FROM outbox WHERE job_id = ? AND state = ? "
            "ORDER BY updated_at DESC LIMIT 1",
            (job_id, OutboxState.DEAD.value),
        ).fetchone()
        reason = (
            f"{dead} result file(s) dead-lettered for {last['destination']}: {last['last_error']}"
        )
        db.execute(
            "UPDATE jobs SET state = ?, reason = ?, updated_at = ? WHERE job_id = ? AND state != ?",
            (JobState.FAILED.value, reason, now, job_id, JobState.PROCESSING.value),
        )
    else:
        db.execute(
            "UPDATE jobs SET state = ?, reason = '', updated_at = ? WHERE job_id = ? AND state = ?",
            (JobState.DONE.value, now, job_id, JobState.EXPORTING.value),
        )
