"""Results queued while their job still runs (the derived series, before the SEG and SR).

Real SQLite job store. The rows of a running job are delivered like any other;
the job ends only when it has finished processing and every row is settled,
and a row queued early is never queued twice.
"""

from __future__ import annotations

from pathlib import Path

from service.jobs import JobState, OutboxState
from service.jobstore import SqliteJobStore
from tests.helpers.job_fixtures import ready_job

PACS = "PACS@127.0.0.1:104"
ARCHIVE = "ARCHIVE@127.0.0.1:105"


def _running_job(tmp_path: Path, destinations: list[str]) -> tuple[SqliteJobStore, int]:
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    job_id = ready_job(store, tmp_path, destinations)
    assert store.claim() is not None
    return store, job_id


def _files(first: int, count: int) -> list[tuple[str, str]]:
    return [(f"/results/{n}.dcm", f"1.2.3.8.{n}") for n in range(first, first + count)]


def test_early_rows_are_queued_per_destination_and_the_job_keeps_running(
    tmp_path: Path,
) -> None:
    store, job_id = _running_job(tmp_path, [PACS, ARCHIVE])
    assert store.queue_results_early(job_id, _files(0, 3), [PACS, ARCHIVE]) == 6
    rows = store.outbox(state=OutboxState.PENDING)
    assert sorted((row.destination, row.sop_instance_uid) for row in rows) == sorted(
        (destination, uid) for destination in (PACS, ARCHIVE) for _, uid in _files(0, 3)
    )
    for row in rows:  # all delivered while the job still runs
        store.mark_sent(row.outbox_id)
    assert store.status(job_id).state is JobState.PROCESSING


def test_finishing_queues_only_the_rest_and_ends_when_all_are_acknowledged(
    tmp_path: Path,
) -> None:
    store, job_id = _running_job(tmp_path, [PACS])
    early = _files(0, 4)
    store.queue_results_early(job_id, early, [PACS])
    for row in store.outbox(state=OutboxState.PENDING)[:2]:
        store.mark_sent(row.outbox_id)
    store.finish_processing(job_id, [*early, *_files(4, 2)], [PACS], 2.0)
    assert store.status(job_id).state is JobState.EXPORTING
    every_row = [
        *store.outbox(state=OutboxState.PENDING),
        *store.outbox(state=OutboxState.SENT),
    ]
    assert len(every_row) == 6  # the four early rows were not queued again
    for row in store.outbox(state=OutboxState.PENDING):
        store.mark_sent(row.outbox_id)
    assert store.status(job_id).state is JobState.DONE


def test_a_job_whose_early_rows_are_all_delivered_and_has_nothing_more_ends_done(
    tmp_path: Path,
) -> None:
    store, job_id = _running_job(tmp_path, [PACS])
    files = _files(0, 2)
    store.queue_results_early(job_id, files, [PACS])
    for row in store.outbox(state=OutboxState.PENDING):
        store.mark_sent(row.outbox_id)
    store.finish_processing(job_id, files, [PACS], 1.0)
    assert store.status(job_id).state is JobState.DONE


def test_a_dead_early_row_fails_the_job_only_once_it_has_finished_processing(
    tmp_path: Path,
) -> None:
    store, job_id = _running_job(tmp_path, [PACS])
    files = _files(0, 2)
    store.queue_results_early(job_id, files, [PACS])
    first, second = store.outbox(state=OutboxState.PENDING)
    store.mark_sent(first.outbox_id)
    assert store.mark_attempt_failed(second.outbox_id, "refused", 0.0, max_attempts=1) is (
        OutboxState.DEAD
    )
    assert store.status(job_id).state is JobState.PROCESSING  # still being processed
    store.finish_processing(job_id, files, [PACS], 1.0)
    record = store.status(job_id)
    assert record.state is JobState.FAILED
    assert "dead-lettered" in record.reason


def test_without_destinations_nothing_is_queued_early(tmp_path: Path) -> None:
    store, job_id = _running_job(tmp_path, [])
    assert store.queue_results_early(job_id, _files(0, 2), []) == 0
    assert not store.outbox(state=OutboxState.PENDING)
