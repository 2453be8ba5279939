"""The job store's tables, schema version and in-place upgrades.

Tables
------
``instances``  one row per stored SOP instance (primary key: SOP Instance UID)
``mpps``       Modality Performed Procedure Steps (N-CREATE / N-SET)
``jobs``       one row per exam version; states in :class:`service.jobs.JobState`
``outbox``     one row per result file and destination, with attempts and next try
``ledger``     what each destination acknowledged (a job that runs twice never sends twice)

Schema version 2 added ``jobs.not_before`` and ``jobs.deferred_since`` (a job
waiting for priors from PACS); version 3 added ``jobs.verdict`` and
``jobs.quality`` (the reliability verdict of a processed job and its reasons, as
the JSON of :meth:`processing.quality.QualityAssessment.as_dict`) and
``jobs.held_since`` (a receiving exam held because its coverage looks
incomplete). Older stores are upgraded in place at open.
A store of a newer version is refused (:class:`JobStoreError`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from service.errors import JobStoreError

__all__ = ["SCHEMA_VERSION", "open_database"]

SCHEMA_VERSION = 3


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
-- the completion detector looks for stored SEGs (readers' corrections) every check
CREATE INDEX IF NOT EXISTS instances_class ON instances (sop_class_uid);
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
    deferred_since REAL,
    verdict TEXT,
    quality TEXT,
    held_since REAL
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
CREATE INDEX IF NOT EXISTS outbox_job_state ON outbox (job_id, state);
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
    "verdict": "TEXT",
    "quality": "TEXT",
    "held_since": "REAL",
}


def open_database(path: Path) -> sqlite3.Connection:
    """Open (creating its folder) and set up the database; create, upgrade or refuse the schema.

    Raises
    ------
    JobStoreError
        The file is not an SQLite database, or a newer node wrote its schema.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30.0)
    try:
        _set_up(db, path)
    except sqlite3.DatabaseError as error:
        db.close()
        raise JobStoreError(f"job store {path} cannot be opened: {error}") from error
    except BaseException:
        db.close()
        raise
    return db


def _set_up(db: sqlite3.Connection, path: Path) -> None:
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA foreign_keys=ON")
    db.execute("PRAGMA busy_timeout=30000")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, 1, 2, SCHEMA_VERSION):
        raise JobStoreError(
            f"job store {path} has schema version {version}; this node expects "
            f"{SCHEMA_VERSION} (a newer node wrote it: upgrade this one, or restore the "
            "data folder's backup)"
        )
    db.executescript(_SCHEMA)
    present = {row[1] for row in db.execute("PRAGMA table_info(jobs)")}
    for column, definition in _ADDED_JOB_COLUMNS.items():
        if column not in present:
            db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {definition}")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
