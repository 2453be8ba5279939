"""Retention: remove the spool and results of delivered jobs after a set time, never before.

Rules (``[retention]`` settings; policy in ``docs/service.md``, "Retention"):

- **Spool** of a study (its received instances, files and rows): removed
  ``spool_days`` after the latest of: the last instance received, each job of
  the study becoming done, each acknowledgement. Only when *every* job of the
  study is ``done`` and every outbox row of every destination of each job is
  ``sent`` and in the ledger. A job still receiving, ready, processing or
  exporting keeps the study. A ``failed`` job keeps it too, unless
  ``failed_days`` is set: then it may go ``failed_days`` after the failure
  (the job can no longer be retried; ``wbdwi retry`` then says that the inputs
  are gone).
- **Results** of a job (its ``<results>/<study>/v<N>/`` folder): removed
  ``results_days`` after its last acknowledgement, only when the job is
  ``done`` and every outbox row is acknowledged. Without destinations the
  folder *is* the delivery and is kept; results of failed jobs are kept.

The decision and the row deletion of a study's spool happen in one job store
transaction (:meth:`service.jobstore.SqliteJobStore.forget_study_instances`),
so an instance arriving meanwhile keeps the study. Files are deleted after the
rows; a crash in between leaves files that the start-up scan indexes again as
a new (duplicate) version, which completion discards and a later pass
removes. Nothing outside the spool and results folders is ever deleted.

:func:`plan_retention` is pure (a clock value in, decisions out) and is what
``wbdwi status`` shows; :class:`RetentionCleaner` runs it periodically in the
node and removes what is due.
"""

from __future__ import annotations

import enum
import errno
import shutil
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from service.jobs import JobState
from service.jobstore import JobDelivery, StudySpool
from service.queue_protocols import RetentionRecords
from service.settings import RetentionSettings

__all__ = [
    "Removal",
    "RetentionCleaner",
    "RetentionCounters",
    "RetentionItem",
    "RetentionKind",
    "RetentionPlan",
    "WaitingOn",
    "plan_retention",
]

LOGGER = structlog.get_logger(__name__)

_UNFINISHED = (JobState.RECEIVING, JobState.READY, JobState.PROCESSING, JobState.EXPORTING)


class RetentionKind(enum.Enum):
    """What is removed: a study's received instances, or one job's result folder."""

    SPOOL = "spool"
    RESULTS = "results"


class WaitingOn(enum.Enum):
    """Why something is not removed yet."""

    AGE = "age"  # delivered; removable at ``due_at``
    UNFINISHED_JOB = "unfinished job"  # a job of the study is not done yet
    UNACKNOWLEDGED = "unacknowledged delivery"  # done but not every row acknowledged
    FAILED_JOB = "failed job"  # kept until retried (or failed_days)
    NO_DESTINATION = "no destination"  # the results folder is the delivery


@dataclass(frozen=True, slots=True)
class RetentionItem:
    """One retention decision.

    ``waiting_on`` is ``None`` when the item is due now; ``due_at`` is when it
    becomes due (``None`` while it waits on something other than age).
    """

    kind: RetentionKind
    study_uid: str
    job_id: int | None
    due_at: float | None
    waiting_on: WaitingOn | None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    """Every decision of one pass, at time ``now``."""

    now: float
    items: tuple[RetentionItem, ...]

    @property
    def due(self) -> list[RetentionItem]:
        """What may be removed now."""
        return [item for item in self.items if item.waiting_on is None]

    @property
    def waiting(self) -> list[RetentionItem]:
        """What is kept, with the reason."""
        return [item for item in self.items if item.waiting_on is not None]

    def waiting_counts(self) -> dict[tuple[RetentionKind, WaitingOn], int]:
        """How many items wait, per kind and reason."""
        counts: Counter[tuple[RetentionKind, WaitingOn]] = Counter()
        for item in self.items:
            if item.waiting_on is not None:
                counts[(item.kind, item.waiting_on)] += 1
        return dict(counts)

    def next_due_at(self) -> float | None:
        """The earliest time something waiting on age becomes removable."""
        times = [i.due_at for i in self.waiting if i.waiting_on is WaitingOn.AGE and i.due_at]
        return min(times, default=None)


@dataclass(frozen=True, slots=True)
class Removal:
    """What one removal deleted."""

    kind: RetentionKind
    study_uid: str
    job_id: int | None
    files: int
    size_bytes: int


def _delivered_at(job: JobDelivery) -> float:
    return max(job.updated_at, job.last_acknowledged_at or 0.0)


def _job_blocks_spool(job: JobDelivery, settings: RetentionSettings) -> RetentionItem | None:
    """Why this job keeps its study's spool (``None``: it does not, apart from age)."""

    def waiting(on: WaitingOn, detail: str) -> RetentionItem:
        return RetentionItem(RetentionKind.SPOOL, job.study_uid, job.job_id, None, on, detail)

    if job.state in _UNFINISHED:
        return waiting(WaitingOn.UNFINISHED_JOB, f"job {job.job_id} is {job.state.value}")
    if job.state is JobState.FAILED and settings.failed_seconds is None:
        return waiting(
            WaitingOn.FAILED_JOB,
            f"job {job.job_id} failed: kept until retried (retention.failed_days unset)",
        )
    if job.state is JobState.DONE and job.outbox_rows and not job.delivered:
        return waiting(
            WaitingOn.UNACKNOWLEDGED,
            f"job {job.job_id}: {job.acknowledged_rows} of {job.outbox_rows} deliveries "
            "acknowledged",
        )
    return None


def _spool_item(
    study: StudySpool, jobs: list[JobDelivery], settings: RetentionSettings, now: float
) -> RetentionItem:
    if not jobs:
        return RetentionItem(
            RetentionKind.SPOOL,
            study.study_uid,
            None,
            None,
            WaitingOn.UNFINISHED_JOB,
            "no job for the study yet",
        )
    for job in jobs:
        blocked = _job_blocks_spool(job, settings)
        if blocked is not None:
            return blocked
    due_at = study.last_received_at + settings.spool_seconds
    for job in jobs:
        if job.state is JobState.FAILED:
            failed_seconds = settings.failed_seconds
            assert failed_seconds is not None  # _job_blocks_spool kept it otherwise
            due_at = max(due_at, job.updated_at + failed_seconds)
        else:
            due_at = max(due_at, _delivered_at(job) + settings.spool_seconds)
    latest = jobs[-1].job_id
    if now >= due_at:
        return RetentionItem(RetentionKind.SPOOL, study.study_uid, latest, due_at, None)
    return RetentionItem(
        RetentionKind.SPOOL,
        study.study_uid,
        latest,
        due_at,
        WaitingOn.AGE,
        f"{study.instances} instances, removable after {_when(due_at)}",
    )


def _results_item(job: JobDelivery, settings: RetentionSettings, now: float) -> RetentionItem:
    def item(due_at: float | None, on: WaitingOn | None, detail: str = "") -> RetentionItem:
        return RetentionItem(RetentionKind.RESULTS, job.study_uid, job.job_id, due_at, on, detail)

    if job.state is JobState.FAILED:
        return item(None, WaitingOn.FAILED_JOB, f"job {job.job_id} failed: results kept")
    if job.state not in (JobState.DONE, JobState.IGNORED):
        return item(None, WaitingOn.UNFINISHED_JOB, f"job {job.job_id} is {job.state.value}")
    if not job.outbox_rows:
        return item(None, WaitingOn.NO_DESTINATION, "no destination: the results are kept")
    if not job.delivered:
        return item(
            None,
            WaitingOn.UNACKNOWLEDGED,
            f"{job.acknowledged_rows} of {job.outbox_rows} deliveries acknowledged",
        )
    due_at = _delivered_at(job) + settings.results_seconds
    if now >= due_at:
        return item(due_at, None)
    return item(due_at, WaitingOn.AGE, f"removable after {_when(due_at)}")


def plan_retention(
    jobs: Iterable[JobDelivery],
    studies: Iterable[StudySpool],
    settings: RetentionSettings,
    now: float,
) -> RetentionPlan:
    """Decide, for every spooled study and every job with a results folder, what may go.

    ``jobs`` with an ``output_dir`` that no longer exists are left out (their
    results were removed already).
    """
    by_study: dict[str, list[JobDelivery]] = defaultdict(list)
    job_list = sorted(jobs, key=lambda j: j.job_id)
    for job in job_list:
        by_study[job.study_uid].append(job)
    items = [
        _spool_item(study, by_study.get(study.study_uid, []), settings, now) for study in studies
    ]
    items += [
        _results_item(job, settings, now)
        for job in job_list
        if job.output_dir is not None and Path(job.output_dir).is_dir()
    ]
    return RetentionPlan(now=now, items=tuple(items))


@dataclass(slots=True)
class RetentionCounters:
    """Counters since start (read by the metrics endpoint)."""

    runs: int = 0
    failures: int = 0
    removed_files: dict[RetentionKind, int] = field(
        default_factory=lambda: dict.fromkeys(RetentionKind, 0)
    )
    removed_bytes: dict[RetentionKind, int] = field(
        default_factory=lambda: dict.fromkeys(RetentionKind, 0)
    )
    waiting: dict[tuple[RetentionKind, WaitingOn], int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, removal: Removal) -> None:
        """Count one removal."""
        with self._lock:
            self.removed_files[removal.kind] += removal.files
            self.removed_bytes[removal.kind] += removal.size_bytes


class RetentionCleaner:
    """Removes what :func:`plan_retention` says is due, every ``interval_seconds``.

    Parameters
    ----------
    store
        The job store.
    settings
        The ``[retention]`` settings.
    spool_dir, results_dir
        The only folders anything is deleted from.
    clock
        Wall clock (injectable for tests).
    """

    def __init__(
        self,
        store: RetentionRecords,
        settings: RetentionSettings,
        *,
        spool_dir: Path,
        results_dir: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.spool_dir = spool_dir.resolve()
        self.results_dir = results_dir.resolve()
        self.counters = RetentionCounters()
        self._clock = clock
        self._wake = threading.Event()

    def wake(self, *_: object) -> None:
        """Run a pass now."""
        self._wake.set()

    def plan(self) -> RetentionPlan:
        """The decisions at the current time."""
        return plan_retention(
            self.store.job_deliveries(), self.store.spooled_studies(), self.settings, self._clock()
        )

    def run_once(self) -> list[Removal]:
        """One pass: remove every due item; returns what was removed."""
        plan = self.plan()
        removals: list[Removal] = []
        for item in plan.due:
            with structlog.contextvars.bound_contextvars(
                study_uid=item.study_uid, job_id=item.job_id
            ):
                removal = (
                    self._remove_spool(item)
                    if item.kind is RetentionKind.SPOOL
                    else self._remove_results(item)
                )
            if removal is not None:
                self.counters.record(removal)
                removals.append(removal)
        self.counters.runs += 1
        self.counters.waiting = plan.waiting_counts()
        LOGGER.info(
            "retention_pass",
            removed=len(removals),
            waiting=len(plan.waiting),
            next_due=_when(plan.next_due_at()) if plan.next_due_at() else None,
        )
        return removals

    def run(self, stop: threading.Event, poll_seconds: float = 0.5) -> None:
        """A pass now and every ``interval_seconds`` until ``stop`` is set.

        Between passes it looks at ``stop`` (and :meth:`wake`) every
        ``poll_seconds``, so that a node stops at once.
        """
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:
                # A failed pass (disk, database) is logged and counted; the next pass retries.
                self.counters.failures += 1
                LOGGER.exception("retention_pass_failed")
            deadline = time.monotonic() + self.settings.interval_seconds
            while not stop.is_set() and not self._wake.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                stop.wait(min(poll_seconds, left))
            self._wake.clear()

    def _remove_spool(self, item: RetentionItem) -> Removal | None:
        allowed = [JobState.DONE, JobState.IGNORED]
        if self.settings.failed_seconds is not None:
            allowed.append(JobState.FAILED)
        rows = self.store.forget_study_instances(item.study_uid, allowed)
        if not rows:
            LOGGER.info("retention_skipped", kind="spool", reason="the study changed meanwhile")
            return None
        files = size = 0
        for path_text, size_bytes in rows:
            path = Path(path_text)
            if not self._inside(path, self.spool_dir):
                LOGGER.error("retention_refused", path=path_text, reason="outside the spool")
                continue
            if path.exists():
                path.unlink()
                files += 1
                size += size_bytes
            self._remove_empty_parents(path.parent, self.spool_dir)
        removal = Removal(RetentionKind.SPOOL, item.study_uid, item.job_id, files, size)
        LOGGER.info("retention_removed", kind="spool", files=files, bytes=size, instances=len(rows))
        return removal

    def _remove_results(self, item: RetentionItem) -> Removal | None:
        job = next(
            (j for j in self.store.job_deliveries() if j.job_id == item.job_id and j.output_dir),
            None,
        )
        if job is None or job.output_dir is None:
            return None
        folder = Path(job.output_dir)
        if not self._inside(folder, self.results_dir):
            LOGGER.error("retention_refused", path=str(folder), reason="outside the results folder")
            return None
        if not folder.is_dir():
            return None
        files = [p for p in folder.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        shutil.rmtree(folder)
        self._remove_empty_parents(folder.parent, self.results_dir)
        LOGGER.info("retention_removed", kind="results", files=len(files), bytes=size)
        return Removal(RetentionKind.RESULTS, item.study_uid, item.job_id, len(files), size)

    @staticmethod
    def _inside(path: Path, root: Path) -> bool:
        resolved = path.resolve()
        return resolved != root and resolved.is_relative_to(root)

    @staticmethod
    def _remove_empty_parents(folder: Path, root: Path) -> None:
        current = folder.resolve()
        while current != root and current.is_relative_to(root):
            try:
                current.rmdir()
            except OSError as error:
                if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
                    return  # still holds files (or is gone already): stop climbing
                raise
            current = current.parent


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))
