"""The patients' exam history: one row per processed exam, for comparisons (issue 6).

Every processed exam leaves its :class:`~processing.exam_summary.ExamSummary`
(as JSON), the UIDs of the SR and SEG that carry it, where it came from (this
node, or an SR fetched back from PACS) and a baseline flag. Comparisons read
the priors of a patient (patient ID **and** issuer: the same ID from two
issuers is two patients) from here.

Baselines
---------
With no flag set, the patient's first exam is the baseline. The radiologist
can mark another exam as a baseline (``wbdwi baseline PATIENT STUDY_UID``), for
example at a change of therapy as exam 4 in the TTL case study. Flags are kept, not
moved: the baseline in force for an exam is the latest flagged exam at or
before it (:meth:`HistoryStore.baseline_for`), so that processing an older exam
again still compares it with the baseline of its own therapy line.

PACS lookups
------------
``pacs_lookups`` remembers, per patient and priors peer, that the node's
earlier reports of the patient were fetched from that peer
(:meth:`HistoryStore.record_pacs_lookup`), so that the worker asks PACS once
per patient (see :mod:`service.priors`).

Storage
-------
SQLite in WAL mode (readers do not block the writer), in its own file next to
the job store. Every call opens a short-lived connection, so one store object
can be shared by threads and the CLI can change a baseline while the worker
runs; writes take the lock up front (``BEGIN IMMEDIATE``) and wait up to
``busy_timeout_s`` for it.

Behind a protocol
-----------------
Processing one exam needs only :class:`ExamHistory` (its priors, its
baseline, recording the processed exam and the PACS lookups). The node's
workers use the :class:`HistoryStore` itself. A worker on another host
(issue 15) writes no local database: it gets a :class:`HistorySnapshot` of
the patient's exams, whose writes are kept in memory and returned with the
result; the receiver applies them to its store (:meth:`HistorySnapshot.replay`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from processing.exam_summary import ExamSummary, chronological_key, exam_sort_key
from service.errors import HistoryError, UnknownExamError

__all__ = [
    "HISTORY_FILE",
    "ExamHistory",
    "HistoryEntry",
    "HistorySnapshot",
    "HistoryStore",
    "PatientKey",
    "SummarySource",
    "replay_writes",
]

#: File name of the history store in the node's data folder (``<data_dir>/history.sqlite3``).
HISTORY_FILE = "history.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS exam_history (
    patient_id TEXT NOT NULL,
    issuer_of_patient_id TEXT NOT NULL,
    study_instance_uid TEXT NOT NULL,
    study_date TEXT NOT NULL,
    study_time_key TEXT NOT NULL,
    summary_json TEXT NOT NULL,
    sr_sop_instance_uid TEXT NOT NULL,
    seg_sop_instance_uid TEXT NOT NULL,
    is_baseline INTEGER NOT NULL DEFAULT 0,
    source TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (patient_id, issuer_of_patient_id, study_instance_uid)
);
CREATE INDEX IF NOT EXISTS exam_history_by_date
    ON exam_history (patient_id, issuer_of_patient_id, study_date, study_time_key);
CREATE TABLE IF NOT EXISTS pacs_lookups (
    patient_id TEXT NOT NULL,
    issuer_of_patient_id TEXT NOT NULL,
    peer TEXT NOT NULL,
    looked_up_at TEXT NOT NULL,
    PRIMARY KEY (patient_id, issuer_of_patient_id, peer)
);
"""


class SummarySource(Enum):
    """Where a history row came from."""

    LOCAL = "local"  # processed by this node
    PACS = "pacs"  # rebuilt from this node's SR fetched back from PACS


@dataclass(frozen=True, slots=True)
class PatientKey:
    """A patient: Patient ID and Issuer of Patient ID (empty when none was sent)."""

    patient_id: str
    issuer_of_patient_id: str = ""

    def __post_init__(self) -> None:
        if not self.patient_id:
            raise HistoryError("patient ID must not be empty")

    @classmethod
    def of(cls, summary: ExamSummary) -> PatientKey:
        """The patient of ``summary``."""
        return cls(summary.patient_id, summary.issuer_of_patient_id)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One recorded exam."""

    summary: ExamSummary
    is_baseline: bool
    source: SummarySource
    updated_at: str

    @property
    def study_instance_uid(self) -> str:
        """The exam's Study Instance UID."""
        return self.summary.study_instance_uid


class ExamHistory(Protocol):
    """What processing one exam needs from the patients' history."""

    def priors(
        self, patient: PatientKey, *, study_date: str, study_time: str = "", study_uid: str = ""
    ) -> list[HistoryEntry]:
        """The patient's exams strictly earlier than the given one, oldest first."""
        ...

    def baseline_for(
        self, patient: PatientKey, *, study_date: str, study_time: str = "", study_uid: str = ""
    ) -> HistoryEntry | None:
        """The baseline in force for the given exam."""
        ...

    def record_exam(
        self, summary: ExamSummary, *, source: SummarySource = SummarySource.LOCAL
    ) -> None:
        """Record an exam's summary (a local one is never replaced by one from PACS)."""
        ...

    def record_pacs_lookup(self, patient: PatientKey, peer: str) -> None:
        """Note that the patient's reports were fetched from ``peer``."""
        ...

    def pacs_looked_up(self, patient: PatientKey, peer: str) -> bool:
        """True when the patient's reports were fetched from ``peer`` before."""
        ...


def _priors_among(
    entries: Sequence[HistoryEntry], study_date: str, study_time: str, study_uid: str
) -> list[HistoryEntry]:
    """The entries (oldest first) strictly earlier than the given exam, never the exam itself."""
    key = chronological_key(study_date, study_time, study_uid)
    return [
        entry
        for entry in entries
        if exam_sort_key(entry.summary) < key and entry.study_instance_uid != study_uid
    ]


def _baseline_among(
    entries: Sequence[HistoryEntry], study_date: str, study_time: str, study_uid: str
) -> HistoryEntry | None:
    """The latest flagged entry at or before the exam, else the first earlier one, else ``None``."""
    key = chronological_key(study_date, study_time, study_uid)
    candidates = [entry for entry in entries if exam_sort_key(entry.summary) <= key]
    flagged = [entry for entry in candidates if entry.is_baseline]
    if flagged:
        return flagged[-1]
    earlier = [e for e in candidates if e.study_instance_uid != study_uid]
    return earlier[0] if earlier else None


class HistoryStore:
    """SQLite store of exam summaries per patient (see the module docstring).

    Parameters
    ----------
    path
        Database file; its folder is created when missing.
    busy_timeout_s
        How long a call waits for another writer's lock before failing.
    """

    def __init__(self, path: Path | str, *, busy_timeout_s: float = 30.0) -> None:
        self._path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise HistoryError(
                    f"history store {self._path}: SQLite refused WAL journal mode (got {mode}); "
                    "put the data folder on a local file system"
                )
            conn.executescript(_SCHEMA)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def record_exam(
        self, summary: ExamSummary, *, source: SummarySource = SummarySource.LOCAL
    ) -> None:
        """Insert or replace the exam's summary; an existing baseline flag is kept.

        A summary rebuilt from PACS never replaces one this node computed
        itself (the local one has the histogram and every number at full
        precision).
        """
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._write() as conn:
            row = conn.execute(
                "SELECT source FROM exam_history WHERE patient_id = ? AND "
                "issuer_of_patient_id = ? AND study_instance_uid = ?",
                (summary.patient_id, summary.issuer_of_patient_id, summary.study_instance_uid),
            ).fetchone()
            if (
                row is not None
                and row[0] == SummarySource.LOCAL.value
                and source is SummarySource.PACS
            ):
                return
            conn.execute(
                "INSERT INTO exam_history (patient_id, issuer_of_patient_id, study_instance_uid, "
                "study_date, study_time_key, summary_json, sr_sop_instance_uid, "
                "seg_sop_instance_uid, is_baseline, source, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?) "
                "ON CONFLICT (patient_id, issuer_of_patient_id, study_instance_uid) DO UPDATE SET "
                "study_date = excluded.study_date, study_time_key = excluded.study_time_key, "
                "summary_json = excluded.summary_json, "
                "sr_sop_instance_uid = excluded.sr_sop_instance_uid, "
                "seg_sop_instance_uid = excluded.seg_sop_instance_uid, "
                "source = excluded.source, updated_at = excluded.updated_at",
                (
                    summary.patient_id,
                    summary.issuer_of_patient_id,
                    summary.study_instance_uid,
                    summary.study_date,
                    exam_sort_key(summary)[1],
                    json.dumps(summary.to_dict(), allow_nan=False, sort_keys=True),
                    summary.sr_sop_instance_uid,
                    summary.seg_sop_instance_uid,
                    source.value,
                    now,
                ),
            )

    def get(self, patient: PatientKey, study_instance_uid: str) -> HistoryEntry:
        """The recorded exam; :class:`UnknownExamError` when absent."""
        with self._connect() as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM exam_history WHERE patient_id = ? AND "
                "issuer_of_patient_id = ? AND study_instance_uid = ?",
                (patient.patient_id, patient.issuer_of_patient_id, study_instance_uid),
            ).fetchone()
        if row is None:
            raise UnknownExamError(
                f"study {study_instance_uid} is not in the history of this patient "
                "(check the patient ID, its issuer and the study UID)"
            )
        return self._entry(row)

    def exams(self, patient: PatientKey) -> list[HistoryEntry]:
        """All recorded exams of ``patient``, oldest first."""
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM exam_history WHERE patient_id = ? AND "
                "issuer_of_patient_id = ?",
                (patient.patient_id, patient.issuer_of_patient_id),
            ).fetchall()
        entries = [self._entry(row) for row in rows]
        return sorted(entries, key=lambda e: exam_sort_key(e.summary))

    def priors(
        self, patient: PatientKey, *, study_date: str, study_time: str = "", study_uid: str = ""
    ) -> list[HistoryEntry]:
        """The patient's exams strictly earlier than the given one, oldest first.

        The given exam is ordered by date, time, then UID, as
        :func:`~processing.exam_summary.exam_sort_key`; an entry with
        ``study_uid`` itself is never a prior.
        """
        return _priors_among(self.exams(patient), study_date, study_time, study_uid)

    def set_baseline(self, patient: PatientKey, study_instance_uid: str) -> None:
        """Mark an exam as a baseline (for it and the exams after it)."""
        self._flag(patient, study_instance_uid, baseline=True)

    def clear_baseline(self, patient: PatientKey, study_instance_uid: str) -> None:
        """Remove an exam's baseline mark."""
        self._flag(patient, study_instance_uid, baseline=False)

    def baseline_for(
        self, patient: PatientKey, *, study_date: str, study_time: str = "", study_uid: str = ""
    ) -> HistoryEntry | None:
        """The baseline in force for the given exam (known before it is processed).

        The latest flagged exam at or before it (the exam itself when it is
        recorded and flagged); with none flagged, the patient's first exam when
        it is earlier; ``None`` when the given exam is the first.
        """
        return _baseline_among(self.exams(patient), study_date, study_time, study_uid)

    def record_pacs_lookup(self, patient: PatientKey, peer: str) -> None:
        """Note that the patient's reports were fetched from ``peer`` (``AET@HOST:PORT``)."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        with self._write() as conn:
            conn.execute(
                "INSERT INTO pacs_lookups VALUES (?, ?, ?, ?) ON CONFLICT "
                "(patient_id, issuer_of_patient_id, peer) DO UPDATE SET "
                "looked_up_at = excluded.looked_up_at",
                (patient.patient_id, patient.issuer_of_patient_id, peer, now),
            )

    def pacs_looked_up(self, patient: PatientKey, peer: str) -> bool:
        """True when the patient's reports were fetched from ``peer`` before."""
        with self._connect() as conn:
            row = conn.execute(
                "SELECT 1 FROM pacs_lookups WHERE patient_id = ? AND issuer_of_patient_id = ? "
                "AND peer = ?",
                (patient.patient_id, patient.issuer_of_patient_id, peer),
            ).fetchone()
        return row is not None

    def _flag(self, patient: PatientKey, study_instance_uid: str, *, baseline: bool) -> None:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE exam_history SET is_baseline = ? WHERE patient_id = ? AND "
                "issuer_of_patient_id = ? AND study_instance_uid = ?",
                (
                    int(baseline),
                    patient.patient_id,
                    patient.issuer_of_patient_id,
                    study_instance_uid,
                ),
            )
            if cursor.rowcount == 0:
                raise UnknownExamError(
                    f"cannot {'set' if baseline else 'clear'} baseline: study "
                    f"{study_instance_uid} is not in the history of this patient "
                    "(process it first, or fetch the priors from PACS)"
                )

    @staticmethod
    def _entry(row: tuple[str, int, str, str]) -> HistoryEntry:
        summary_json, is_baseline, source, updated_at = row
        return HistoryEntry(
            summary=ExamSummary.from_dict(json.loads(summary_json)),
            is_baseline=bool(is_baseline),
            source=SummarySource(source),
            updated_at=updated_at,
        )

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self._path, timeout=self._busy_timeout_s, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
            conn.execute("PRAGMA synchronous = FULL")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")


_COLUMNS = "summary_json, is_baseline, source, updated_at"


class HistorySnapshot:
    """One patient's history in memory, for a worker that writes no database (issue 15).

    Reads answer as :class:`HistoryStore` would from the same rows; writes
    change the snapshot and are kept in order (:attr:`recorded`,
    :attr:`lookups`) for the receiver to apply to its store (:meth:`replay`).

    Parameters
    ----------
    entries
        The patient's recorded exams (``HistoryStore.exams``).
    looked_up
        ``(patient, peer)`` pairs whose PACS lookup is already recorded.
    """

    def __init__(
        self,
        entries: Iterable[HistoryEntry],
        looked_up: Iterable[tuple[PatientKey, str]] = (),
    ) -> None:
        self._entries = {
            (PatientKey.of(entry.summary), entry.study_instance_uid): entry for entry in entries
        }
        self._looked_up = set(looked_up)
        self.recorded: list[tuple[ExamSummary, SummarySource]] = []
        self.lookups: list[tuple[PatientKey, str]] = []

    def exams(self, patient: PatientKey) -> list[HistoryEntry]:
        """The patient's exams in the snapshot, oldest first."""
        entries = [entry for (who, _), entry in self._entries.items() if who == patient]
        return sorted(entries, key=lambda e: exam_sort_key(e.summary))

    def priors(
        self, patient: PatientKey, *, study_date: str, study_time: str = "", study_uid: str = ""
    ) -> list[HistoryEntry]:
        """As :meth:`HistoryStore.priors`."""
        return _priors_among(self.exams(patient), study_date, study_time, study_uid)

    def baseline_for(
        self, patient: PatientKey, *, study_date: str, study_time: str = "", study_uid: str = ""
    ) -> HistoryEntry | None:
        """As :meth:`HistoryStore.baseline_for`."""
        return _baseline_among(self.exams(patient), study_date, study_time, study_uid)

    def record_exam(
        self, summary: ExamSummary, *, source: SummarySource = SummarySource.LOCAL
    ) -> None:
        """As :meth:`HistoryStore.record_exam`, in memory; kept for :meth:`replay`."""
        key = (PatientKey.of(summary), summary.study_instance_uid)
        old = self._entries.get(key)
        if old is not None and old.source is SummarySource.LOCAL and source is SummarySource.PACS:
            return
        self._entries[key] = HistoryEntry(
            summary=summary,
            is_baseline=False if old is None else old.is_baseline,
            source=source,
            updated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        self.recorded.append((summary, source))

    def record_pacs_lookup(self, patient: PatientKey, peer: str) -> None:
        """As :meth:`HistoryStore.record_pacs_lookup`, in memory; kept for :meth:`replay`."""
        self._looked_up.add((patient, peer))
        self.lookups.append((patient, peer))

    def pacs_looked_up(self, patient: PatientKey, peer: str) -> bool:
        """As :meth:`HistoryStore.pacs_looked_up`."""
        return (patient, peer) in self._looked_up

    def replay(self, store: ExamHistory) -> None:
        """Apply the snapshot's writes, in order, to ``store`` (the receiver's history)."""
        for summary, source in self.recorded:
            store.record_exam(summary, source=source)
        for patient, peer in self.lookups:
            store.record_pacs_lookup(patient, peer)

    def to_dict(self) -> dict[str, Any]:
        """The snapshot's exams and PACS lookups as JSON values (sent to a worker)."""
        return {
            "entries": [
                {
                    "summary": entry.summary.to_dict(),
                    "is_baseline": entry.is_baseline,
                    "source": entry.source.value,
                    "updated_at": entry.updated_at,
                }
                for entry in self._entries.values()
            ],
            "looked_up": [
                [p.patient_id, p.issuer_of_patient_id, peer] for p, peer in self._looked_up
            ],
        }

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> HistorySnapshot:
        """Parse :meth:`to_dict` output; ``ValueError`` naming what is wrong."""
        try:
            entries = [
                HistoryEntry(
                    summary=ExamSummary.from_dict(item["summary"]),
                    is_baseline=bool(item["is_baseline"]),
                    source=SummarySource(item["source"]),
                    updated_at=str(item["updated_at"]),
                )
                for item in payload.get("entries", ())
            ]
            looked_up = [
                (PatientKey(str(pid), str(issuer)), str(peer))
                for pid, issuer, peer in payload.get("looked_up", ())
            ]
        except (KeyError, TypeError, ValueError, HistoryError) as error:
            raise ValueError(f"history snapshot is not readable: {error!r}") from None
        return cls(entries, looked_up)

    def writes(self) -> dict[str, Any]:
        """What :meth:`replay` would apply, as JSON values (returned by a worker)."""
        return {
            "recorded": [[summary.to_dict(), source.value] for summary, source in self.recorded],
            "lookups": [[p.patient_id, p.issuer_of_patient_id, peer] for p, peer in self.lookups],
        }


def replay_writes(payload: Mapping[str, Any], store: ExamHistory) -> int:
    """Apply :meth:`HistorySnapshot.writes` output to ``store``; how many exams it recorded.

    Raises ``ValueError`` naming what is wrong (nothing is applied then).
    """
    try:
        recorded = [
            (ExamSummary.from_dict(summary), SummarySource(source))
            for summary, source in payload.get("recorded", ())
        ]
        lookups = [
            (PatientKey(str(pid), str(issuer)), str(peer))
            for pid, issuer, peer in payload.get("lookups", ())
        ]
    except (KeyError, TypeError, ValueError, HistoryError) as error:
        raise ValueError(f"history writes are not readable: {error!r}") from None
    for summary, source in recorded:
        store.record_exam(summary, source=source)
    for patient, peer in lookups:
        store.record_pacs_lookup(patient, peer)
    return len(recorded)


def _conforms(store: HistoryStore, snapshot: HistorySnapshot) -> tuple[ExamHistory, ExamHistory]:
    """mypy checks here that both histories implement :class:`ExamHistory`."""
    return (store, snapshot)
