"""Intake records: stored instances (and the receiving job they open or touch) and MPPS.

Also the spool's side of retention: which studies the spool holds, and the
one-transaction check-and-forget of a study's instance rows.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence

from dicom_node.readers.seg_reader import SEGMENTATION_STORAGE_CLASSES
from dicom_node.receive.spool import SpooledInstance
from service.jobs import JobState
from service.jobstore.connection import StoreConnection
from service.jobstore.records import InstanceRow, ReceivingStudy, StudySpool

__all__ = ["IntakeRecords"]

_REOPENED = "an instance arrived after the exam was queued: waiting to queue it again"


class IntakeRecords(StoreConnection):
    """Instances, MPPS and receiving studies."""

    def has_instance(self, sop_instance_uid: str) -> bool:
        """True when this SOP instance is already stored."""
        with self._lock:
            row = self._db.execute(
                "SELECT 1 FROM instances WHERE sop_instance_uid = ?", (sop_instance_uid,)
            ).fetchone()
        return row is not None

    def record_instance(self, instance: SpooledInstance) -> bool:
        """Record a stored instance and attach it to the study's receiving job.

        The instance joins the study's latest exam job while it is ``receiving``.
        A ``ready`` job (queued or deferred for priors, not started) goes back to
        ``receiving``, same version, so that it is queued again with every
        instance. Once processing has started (``processing``, ``exporting``,
        ``done``, ``failed``), a new version of the job is opened; completion
        detection queues it with every instance of the study.
        A Segmentation (a reader's correction) is recorded without touching the
        study's jobs: :meth:`unclaimed_segmentations` finds it.
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
            if instance.sop_class_uid not in SEGMENTATION_STORAGE_CLASSES:
                self._touch_study(db, instance.study_uid, instance.calling_ae, instance.received_at)
        return True

    def unclaimed_segmentations(self, job_key_prefix: str) -> list[tuple[str, InstanceRow]]:
        """Stored SEGs with no job keyed ``job_key_prefix + SOP Instance UID``, oldest first.

        Returns ``(study_uid, row)`` pairs.
        """
        classes = sorted(SEGMENTATION_STORAGE_CLASSES)
        marks = ",".join("?" * len(classes))
        with self._lock:
            rows = self._db.execute(
                "SELECT study_uid, sop_instance_uid, sop_class_uid, series_uid, "
                "series_description, calling_ae, path, received_at FROM instances i "
                f"WHERE sop_class_uid IN ({marks}) AND NOT EXISTS (SELECT 1 FROM jobs j "
                "WHERE j.job_key = ? || i.sop_instance_uid) ORDER BY received_at",
                (*classes, job_key_prefix),
            ).fetchall()
        return [
            (
                str(row["study_uid"]),
                InstanceRow(
                    sop_instance_uid=row["sop_instance_uid"],
                    sop_class_uid=row["sop_class_uid"],
                    series_uid=row["series_uid"],
                    series_description=row["series_description"],
                    calling_ae=row["calling_ae"],
                    path=row["path"],
                    received_at=row["received_at"],
                ),
            )
            for row in rows
        ]

    @staticmethod
    def _touch_study(db: sqlite3.Connection, study_uid: str, calling_ae: str, at: float) -> None:
        # The study's latest exam job (corrections aside: service.corrections).
        latest = db.execute(
            "SELECT job_id, version, state FROM jobs WHERE study_uid = ? "
            "AND (job_key IS NULL OR job_key NOT LIKE 'correction:%') "
            "ORDER BY version DESC LIMIT 1",
            (study_uid,),
        ).fetchone()
        now = time.time()
        if latest is not None and latest["state"] == JobState.RECEIVING.value:
            db.execute(
                "UPDATE jobs SET last_instance_at = MAX(last_instance_at, ?), updated_at = ? "
                "WHERE job_id = ?",
                (at, now, latest["job_id"]),
            )
            return
        if latest is not None and latest["state"] == JobState.READY.value:
            # Queued (or deferred for priors) but not started: its frozen input list
            # lacks this instance, so it goes back to receiving and completion
            # detection queues it again with every instance of the study. A
            # deferred job keeps its "not before" time and its first deferral.
            db.execute(
                "UPDATE jobs SET state = ?, job_key = NULL, spec = NULL, reason = ?, "
                "held_since = NULL, last_instance_at = MAX(last_instance_at, ?), "
                "updated_at = ? WHERE job_id = ?",
                (JobState.RECEIVING.value, _REOPENED, at, now, latest["job_id"]),
            )
            return
        # No job yet, or the latest one started processing (or ended): a new version.
        newest = db.execute(
            "SELECT MAX(version) FROM jobs WHERE study_uid = ?", (study_uid,)
        ).fetchone()[0]
        db.execute(
            "INSERT INTO jobs (study_uid, version, state, calling_ae, created_at, updated_at, "
            "last_instance_at) VALUES (?,?,?,?,?,?,?)",
            (
                study_uid,
                1 if newest is None else newest + 1,
                JobState.RECEIVING.value,
                calling_ae,
                now,
                now,
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
                "SELECT job_id, study_uid, version, calling_ae, created_at, last_instance_at, "
                "held_since FROM jobs WHERE state = ?",
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
                        held_since=job["held_since"],
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

    def hold_receiving(self, job_id: int, since: float, reason: str) -> None:
        """Mark a receiving job held since ``since`` (incomplete coverage), with the reason.

        ``wbdwi status`` shows the reason; the job stays ``receiving`` until
        completion detection submits it.
        """
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET held_since = ?, reason = ?, updated_at = ? WHERE job_id = ? "
                "AND state = ?",
                (since, reason, time.time(), job_id, JobState.RECEIVING.value),
            )

    def instance_totals(self) -> tuple[int, int]:
        """Stored instances and their bytes."""
        with self._lock:
            count, size = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM instances"
            ).fetchone()
        return int(count), int(size)

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
