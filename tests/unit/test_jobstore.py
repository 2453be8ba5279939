"""SQLite job store: intake, job states, versions, outbox, ledger, retries, restart."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from dicom_node.receive.spool import SpooledInstance
from service.completion import completion_reason, select_inputs
from service.exporter import backoff_seconds
from service.jobs import JobSpec, JobState, OutboxState, make_job_key
from service.jobstore import SqliteJobStore
from service.settings import ExportSettings, load_settings

MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY = "1.2.3"


def _instance(
    n: int,
    study: str = STUDY,
    series: str = "1.2.3.1",
    at: float | None = None,
    description: str = "DWI",
) -> SpooledInstance:
    return SpooledInstance(
        sop_instance_uid=f"{study}.9.{n}",
        sop_class_uid=MR,
        study_uid=study,
        series_uid=series,
        series_description=description,
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        calling_ae="SCANNER",
        path=Path(f"/spool/{study}/{series}/{n}.dcm"),
        size_bytes=1000,
        received_at=time.time() if at is None else at,
    )


@pytest.fixture
def store(tmp_path: Path) -> SqliteJobStore:
    return SqliteJobStore(tmp_path / "jobs.sqlite")


def _submit(store: SqliteJobStore, study: str = STUDY) -> JobSpec:
    receiving = next(s for s in store.receiving_studies() if s.study_uid == study)
    rows = store.study_instances(study)
    spec = JobSpec(
        job_key=make_job_key(study, "1.0", [r.sop_instance_uid for r in rows]),
        job_id=receiving.job_id,
        study_uid=study,
        version=receiving.version,
        input_paths=tuple(r.path for r in rows),
        output_dir="/results",
        destinations=("PACS@h:104",),
    )
    assert store.submit(spec)
    return spec


def test_instances_open_one_receiving_job_per_study(store: SqliteJobStore) -> None:
    assert store.record_instance(_instance(1))
    assert not store.record_instance(_instance(1))  # same SOP instance: stored once
    assert store.record_instance(_instance(2))
    assert store.record_instance(_instance(1, study="1.2.4"))
    jobs = {job.study_uid: job for job in store.jobs()}
    assert jobs[STUDY].state is JobState.RECEIVING
    assert jobs[STUDY].instance_count == 2
    assert jobs["1.2.4"].instance_count == 1
    assert store.has_instance(f"{STUDY}.9.1")
    assert store.instance_totals() == (3, 3000)


def test_job_lifecycle_to_done_with_ledger(store: SqliteJobStore) -> None:
    store.record_instance(_instance(1))
    spec = _submit(store)
    assert not store.submit(spec)  # a repeated job_key is ignored
    claimed = store.claim()
    assert claimed == spec
    assert store.claim() is None
    assert store.status(spec.job_id).state is JobState.PROCESSING
    store.finish_processing(
        spec.job_id, [("/r/a.dcm", "9.1"), ("/r/b.dcm", "9.2")], spec.destinations, 2.5
    )
    assert store.status(spec.job_id).state is JobState.EXPORTING
    rows = store.outbox(state=OutboxState.PENDING)
    assert [r.sop_instance_uid for r in rows] == ["9.1", "9.2"]
    store.mark_sent(rows[0].outbox_id)
    assert store.acknowledged("PACS@h:104", "9.1")
    assert not store.acknowledged("PACS@h:104", "9.2")
    many = [f"8.{n}" for n in range(1200)]  # more than one query's worth
    assert store.acknowledged_among("PACS@h:104", [*many, "9.2", "9.1"]) == {"9.1"}
    assert store.acknowledged_among("OTHER@h:104", ["9.1"]) == set()
    assert store.status(spec.job_id).state is JobState.EXPORTING
    store.mark_sent(rows[1].outbox_id)
    record = store.status(spec.job_id)
    assert record.state is JobState.DONE
    assert record.processing_seconds == 2.5


def test_no_destination_means_done_after_processing(store: SqliteJobStore) -> None:
    store.record_instance(_instance(1))
    spec = _submit(store)
    store.claim()
    store.finish_processing(spec.job_id, [("/r/a.dcm", "9.1")], (), 1.0)
    assert store.status(spec.job_id).state is JobState.DONE
    assert store.outbox() == []


def test_late_instances_open_a_new_version(store: SqliteJobStore) -> None:
    store.record_instance(_instance(1))
    store.record_instance(_instance(2))
    _submit(store)
    store.record_instance(_instance(3))  # still ready: version 1 receives again
    assert [(j.version, j.state) for j in store.jobs()] == [(1, JobState.RECEIVING)]
    first = _submit(store)
    assert len(first.input_paths) == 3
    store.claim()
    store.record_instance(_instance(4))  # processing started: version 2
    versions = {job.version: job for job in store.jobs()}
    assert versions[1].state is JobState.PROCESSING
    assert versions[2].state is JobState.RECEIVING
    second = _submit(store)
    assert second.version == 2
    assert second.job_key != first.job_key
    assert len(second.input_paths) == 4


def test_failure_keeps_reason_and_retry_requeues(store: SqliteJobStore) -> None:
    store.record_instance(_instance(1))
    spec = _submit(store)
    store.claim()
    store.fail(spec.job_id, "SingleBValueError: only b=50")
    record = store.status(spec.job_id)
    assert record.state is JobState.FAILED
    assert "only b=50" in record.reason
    assert store.retry(spec.job_id).state is JobState.READY
    assert store.claim() == spec
    with pytest.raises(ValueError, match="not failed"):
        store.retry(spec.job_id)
    with pytest.raises(KeyError):
        store.retry(999)


def test_dead_letter_then_retry(store: SqliteJobStore) -> None:
    store.record_instance(_instance(1))
    spec = _submit(store)
    store.claim()
    store.finish_processing(spec.job_id, [("/r/a.dcm", "9.1")], spec.destinations, 1.0)
    row = store.outbox()[0]
    assert (
        store.mark_attempt_failed(row.outbox_id, "refused", time.time(), max_attempts=2)
        is OutboxState.PENDING
    )
    assert (
        store.mark_attempt_failed(row.outbox_id, "refused", time.time(), max_attempts=2)
        is OutboxState.DEAD
    )
    record = store.status(spec.job_id)
    assert record.state is JobState.FAILED
    assert "dead-lettered for PACS@h:104: refused" in record.reason
    assert [r.outbox_id for r in store.dead_letters()] == [row.outbox_id]
    assert store.retry(spec.job_id).state is JobState.EXPORTING
    revived = store.outbox()[0]
    assert revived.state is OutboxState.PENDING and revived.attempts == 0


def test_restart_resumes_processing_jobs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite"
    store = SqliteJobStore(path)
    store.record_instance(_instance(1))
    spec = _submit(store)
    store.claim()
    store.close()  # the process dies here
    reopened = SqliteJobStore(path)
    assert reopened.resume_after_restart() == 1
    assert reopened.claim() == spec
    assert reopened.status(spec.job_id).attempts == 2


def test_mpps_completion_and_missing_instances(store: SqliteJobStore) -> None:
    store.record_mpps("5.5", study_uid=STUDY, status="IN PROGRESS", calling_ae="SCANNER")
    assert store.mpps_exists("5.5")
    store.record_instance(_instance(1))
    [study] = store.receiving_studies()
    assert study.mpps_completed_at is None
    store.record_mpps(
        "5.5",
        study_uid=None,
        status="COMPLETED",
        calling_ae="SCANNER",
        referenced_sop_uids=[f"{STUDY}.9.1", f"{STUDY}.9.2"],
    )
    [study] = store.receiving_studies()
    assert study.mpps_completed_at is not None
    assert study.mpps_instances_missing == 1
    store.record_instance(_instance(2))
    [study] = store.receiving_studies()
    assert study.mpps_instances_missing == 0


def test_concurrent_writers_do_not_lose_rows(store: SqliteJobStore) -> None:
    def send(study: str) -> None:
        for n in range(50):
            store.record_instance(_instance(n, study=study))

    threads = [threading.Thread(target=send, args=(f"1.2.{k}",)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.instance_totals()[0] == 200
    assert store.job_counts()[JobState.RECEIVING] == 4


def test_completion_rules() -> None:
    settings = load_settings(
        env={}, overrides={"completion": {"quiet_seconds": 60, "mpps_grace_seconds": 3}}
    )
    store_now = 1000.0
    from service.jobstore import ReceivingStudy

    base = ReceivingStudy(
        job_id=1,
        study_uid=STUDY,
        version=1,
        calling_ae="X",
        created_at=900.0,
        last_instance_at=990.0,
        mpps_completed_at=None,
        mpps_instances_missing=None,
    )
    assert completion_reason(base, settings, store_now) is None
    assert "no new instance" in str(completion_reason(base, settings, 1050.0))
    listed = replace(base, mpps_completed_at=995.0, mpps_instances_missing=0)
    assert "every listed instance" in str(completion_reason(listed, settings, store_now))
    unlisted = replace(base, mpps_completed_at=995.0)
    assert completion_reason(unlisted, settings, 997.0) is None
    assert "grace" in str(completion_reason(unlisted, settings, 998.5))
    incomplete = replace(base, mpps_completed_at=995.0, mpps_instances_missing=3)
    assert completion_reason(incomplete, settings, store_now) is None  # waits: quiet period
    # A later version is not described by an MPPS that completed before it opened.
    stale = replace(listed, version=2, created_at=996.0)
    assert completion_reason(stale, settings, store_now) is None


def test_series_include_filter() -> None:
    from service.jobstore import InstanceRow

    rows = [
        InstanceRow("1", MR, "s1", "ep2d_diff WB st1", "X", "/a", 0.0),
        InstanceRow("2", MR, "s2", "t1_vibe", "X", "/b", 0.0),
        InstanceRow("3", "1.2.840.10008.5.1.4.1.1.7", "s3", "DWI screenshot", "X", "/c", 0.0),
    ]
    assert [r.sop_instance_uid for r in select_inputs(rows, ())] == ["1", "2"]
    assert [r.sop_instance_uid for r in select_inputs(rows, ("*DIFF*",))] == ["1"]


def test_backoff_doubles_to_the_cap() -> None:
    settings = ExportSettings(backoff_initial_seconds=1.0, backoff_max_seconds=600.0)
    assert [backoff_seconds(n, settings) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_seconds(11, settings) == 600.0
    assert backoff_seconds(500, settings) == 600.0
