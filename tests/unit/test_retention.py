"""Retention with a fake clock: nothing goes before delivery and age; then spool and results go."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dicom_node.receive.spool import SpooledInstance
from service.jobs import JobSpec, JobState, OutboxState, make_job_key
from service.jobstore import SqliteJobStore
from service.retention import RetentionCleaner, RetentionKind, WaitingOn, plan_retention
from service.settings import RetentionSettings, SettingsError, load_settings

MR = "1.2.840.10008.5.1.4.1.1.4"
DAY = 86400.0
PACS = "PACS@pacs:104"
ARCHIVE = "ARCHIVE@archive:104"


class FakeClock:
    """Wall clock that starts now and is moved by hand."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance_days(self, days: float) -> None:
        self.offset += days * DAY


class Node:
    """A job store with real spool and results files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spool = root / "spool"
        self.results = root / "results"
        self.store = SqliteJobStore(root / "jobs.sqlite")

    def receive(self, study: str, count: int = 3, first: int = 0) -> list[Path]:
        paths = []
        for n in range(first, first + count):
            path = self.spool / study / f"{study}.1" / f"{study}.9.{n}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x" * 100)
            self.store.record_instance(
                SpooledInstance(
                    sop_instance_uid=f"{study}.9.{n}",
                    sop_class_uid=MR,
                    study_uid=study,
                    series_uid=f"{study}.1",
                    series_description="DWI",
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    calling_ae="SCANNER",
                    path=path,
                    size_bytes=100,
                    received_at=time.time(),
                )
            )
            paths.append(path)
        return paths

    def process(self, study: str, destinations: tuple[str, ...] = (PACS,)) -> JobSpec:
        receiving = next(s for s in self.store.receiving_studies() if s.study_uid == study)
        rows = self.store.study_instances(study)
        output = self.results / study / f"v{receiving.version}"
        spec = JobSpec(
            job_key=make_job_key(study, "1.0", [r.sop_instance_uid for r in rows]),
            job_id=receiving.job_id,
            study_uid=study,
            version=receiving.version,
            input_paths=tuple(r.path for r in rows),
            output_dir=str(output),
            destinations=destinations,
        )
        assert self.store.submit(spec)
        claimed = self.store.claim()
        assert claimed is not None and claimed.job_id == spec.job_id
        output.mkdir(parents=True)
        results = []
        for n in range(2):
            path = output / f"result{n}.dcm"
            path.write_bytes(b"r" * 50)
            results.append((str(path), f"{study}.8.{receiving.version}.{n}"))
        self.store.finish_processing(spec.job_id, results, destinations, 1.0)
        return spec

    def deliver(self, job_id: int, destination: str | None = None) -> None:
        for row in self.store.outbox(state=OutboxState.PENDING):
            if row.job_id == job_id and destination in (None, row.destination):
                self.store.mark_sent(row.outbox_id)

    def dead_letter(self, job_id: int, destination: str) -> None:
        for row in self.store.outbox(state=OutboxState.PENDING):
            if row.job_id == job_id and row.destination == destination:
                self.store.mark_attempt_failed(row.outbox_id, "refused", 0.0, max_attempts=1)

    def cleaner(self, clock: Callable[[], float], **settings: float | None) -> RetentionCleaner:
        return RetentionCleaner(
            self.store,
            RetentionSettings(**settings),  # type: ignore[arg-type]
            spool_dir=self.spool,
            results_dir=self.results,
            clock=clock,
        )


@pytest.fixture
def node(tmp_path: Path) -> Node:
    return Node(tmp_path)


def _waiting(cleaner: RetentionCleaner) -> dict[tuple[RetentionKind, str], WaitingOn | None]:
    return {(item.kind, item.study_uid): item.waiting_on for item in cleaner.plan().items}


def test_nothing_goes_before_delivery_however_old(node: Node) -> None:
    clock = FakeClock()
    inputs = node.receive("1.2.1")
    spec = node.process("1.2.1", destinations=(PACS, ARCHIVE))
    node.deliver(spec.job_id, PACS)  # the archive has not acknowledged yet
    cleaner = node.cleaner(clock, spool_days=1, results_days=1)
    clock.advance_days(365)
    assert cleaner.run_once() == []
    assert all(path.exists() for path in inputs)
    assert Path(spec.output_dir).is_dir()
    assert _waiting(cleaner) == {
        (RetentionKind.SPOOL, "1.2.1"): WaitingOn.UNFINISHED_JOB,  # the job is still exporting
        (RetentionKind.RESULTS, "1.2.1"): WaitingOn.UNFINISHED_JOB,
    }


def test_delivered_job_goes_after_its_age_spool_and_results_separately(node: Node) -> None:
    clock = FakeClock()
    inputs = node.receive("1.2.2")
    spec = node.process("1.2.2", destinations=(PACS, ARCHIVE))
    node.deliver(spec.job_id)
    assert node.store.status(spec.job_id).state is JobState.DONE
    cleaner = node.cleaner(clock, spool_days=7, results_days=30)

    clock.advance_days(6.9)
    assert cleaner.run_once() == []
    plan = cleaner.plan()
    assert {item.waiting_on for item in plan.items} == {WaitingOn.AGE}
    next_due = plan.next_due_at()
    assert next_due is not None and clock() < next_due < clock() + 0.2 * DAY

    clock.advance_days(0.2)
    [removal] = cleaner.run_once()
    assert (removal.kind, removal.files, removal.size_bytes) == (RetentionKind.SPOOL, 3, 300)
    assert not any(path.exists() for path in inputs)
    assert not (node.spool / "1.2.2").exists()  # empty study folders go too
    assert node.store.study_instances("1.2.2") == []
    assert Path(spec.output_dir).is_dir()  # results wait for their own age

    clock.advance_days(23)
    [removal] = cleaner.run_once()
    assert (removal.kind, removal.files, removal.size_bytes) == (RetentionKind.RESULTS, 2, 100)
    assert not (node.results / "1.2.2").exists()
    assert cleaner.plan().items == ()
    assert cleaner.counters.removed_files == {RetentionKind.SPOOL: 3, RetentionKind.RESULTS: 2}
    assert cleaner.run_once() == []  # nothing left, nothing removed twice


def test_failed_job_keeps_inputs_unless_failed_days_and_never_its_results(node: Node) -> None:
    clock = FakeClock()
    inputs = node.receive("1.2.3")
    spec = node.process("1.2.3", destinations=(PACS, ARCHIVE))
    node.deliver(spec.job_id, PACS)
    node.dead_letter(spec.job_id, ARCHIVE)
    assert node.store.status(spec.job_id).state is JobState.FAILED
    clock.advance_days(400)

    keeping = node.cleaner(clock, spool_days=1, results_days=1)
    assert keeping.run_once() == []
    assert _waiting(keeping) == {
        (RetentionKind.SPOOL, "1.2.3"): WaitingOn.FAILED_JOB,
        (RetentionKind.RESULTS, "1.2.3"): WaitingOn.FAILED_JOB,
    }

    limited = node.cleaner(clock, spool_days=1, results_days=1, failed_days=90)
    [removal] = limited.run_once()
    assert removal.kind is RetentionKind.SPOOL
    assert not any(path.exists() for path in inputs)
    assert Path(spec.output_dir).is_dir()  # undelivered results stay
    assert _waiting(limited) == {(RetentionKind.RESULTS, "1.2.3"): WaitingOn.FAILED_JOB}


def test_failed_days_counts_from_the_failure(node: Node) -> None:
    clock = FakeClock()
    node.receive("1.2.4")
    spec = node.process("1.2.4")
    node.store.fail(spec.job_id, "SingleBValueError: one b-value")
    cleaner = node.cleaner(clock, spool_days=1, failed_days=10)
    clock.advance_days(9)
    assert cleaner.run_once() == []
    clock.advance_days(2)
    assert [r.kind for r in cleaner.run_once()] == [RetentionKind.SPOOL]


def test_without_destination_the_results_are_the_delivery(node: Node) -> None:
    clock = FakeClock()
    node.receive("1.2.5")
    spec = node.process("1.2.5", destinations=())
    assert node.store.status(spec.job_id).state is JobState.DONE
    cleaner = node.cleaner(clock, spool_days=1, results_days=1)
    clock.advance_days(100)
    assert [r.kind for r in cleaner.run_once()] == [RetentionKind.SPOOL]
    assert Path(spec.output_dir).is_dir()
    assert _waiting(cleaner) == {(RetentionKind.RESULTS, "1.2.5"): WaitingOn.NO_DESTINATION}


def test_late_instance_keeps_the_study(node: Node) -> None:
    clock = FakeClock()
    first = node.receive("1.2.6")
    spec = node.process("1.2.6")
    node.deliver(spec.job_id)
    clock.advance_days(10)
    cleaner = node.cleaner(clock, spool_days=1, results_days=1)
    late = node.receive("1.2.6", count=1, first=10)  # opens version 2, receiving
    removals = cleaner.run_once()
    assert [r.kind for r in removals] == [RetentionKind.RESULTS]  # v1's delivered results
    assert all(path.exists() for path in first + late)
    assert _waiting(cleaner) == {(RetentionKind.SPOOL, "1.2.6"): WaitingOn.UNFINISHED_JOB}


def test_spool_rows_removed_only_while_every_job_is_still_done(node: Node) -> None:
    node.receive("1.2.7")
    spec = node.process("1.2.7")
    node.deliver(spec.job_id)
    node.receive("1.2.7", count=1, first=10)  # a receiving job appears after the decision
    assert node.store.forget_study_instances("1.2.7", [JobState.DONE]) == []
    assert len(node.store.study_instances("1.2.7")) == 4


def test_files_outside_the_spool_are_never_deleted(node: Node, tmp_path: Path) -> None:
    clock = FakeClock()
    outside = tmp_path / "elsewhere" / "precious.dcm"
    outside.parent.mkdir()
    outside.write_bytes(b"keep")
    node.store.record_instance(
        SpooledInstance(
            sop_instance_uid="1.2.8.9.1",
            sop_class_uid=MR,
            study_uid="1.2.8",
            series_uid="1.2.8.1",
            series_description="DWI",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            calling_ae="SCANNER",
            path=outside,
            size_bytes=4,
            received_at=time.time(),
        )
    )
    spec = node.process("1.2.8")
    node.deliver(spec.job_id)
    clock.advance_days(100)
    removals = node.cleaner(clock, spool_days=1, results_days=1).run_once()
    assert outside.exists()
    assert [(r.kind, r.files) for r in removals] == [
        (RetentionKind.SPOOL, 0),
        (RetentionKind.RESULTS, 2),
    ]


def test_plan_is_pure_and_reports_the_unacknowledged_done_job(node: Node) -> None:
    node.receive("1.2.9")
    spec = node.process("1.2.9")
    node.deliver(spec.job_id)
    [delivery] = node.store.job_deliveries()
    assert delivery.delivered and delivery.outbox_rows == 2
    partial = type(delivery)(
        **{**{f: getattr(delivery, f) for f in delivery.__slots__}, "acknowledged_rows": 1}
    )
    plan = plan_retention(
        [partial], node.store.spooled_studies(), RetentionSettings(), time.time() + 1000 * DAY
    )
    assert {item.waiting_on for item in plan.items} == {WaitingOn.UNACKNOWLEDGED}


def test_retention_settings_are_checked() -> None:
    settings = load_settings(env={"WBDWI_RETENTION_FAILED_DAYS": "14"})
    assert settings.retention.failed_seconds == 14 * DAY
    assert load_settings(env={}).retention.failed_days is None
    with pytest.raises(SettingsError, match=r"retention: spool_days"):
        load_settings(env={"WBDWI_RETENTION_SPOOL_DAYS": "-1"})
    with pytest.raises(SettingsError, match=r"retention: interval_seconds"):
        load_settings(env={"WBDWI_RETENTION_INTERVAL_SECONDS": "0"})


def test_cleaner_thread_passes_at_start_and_stops_at_once(node: Node) -> None:
    clock = FakeClock()
    node.receive("1.2.10")
    spec = node.process("1.2.10")
    node.deliver(spec.job_id)
    clock.advance_days(100)
    cleaner = node.cleaner(clock, spool_days=1, results_days=1, interval_seconds=3600)
    stop = threading.Event()
    thread = threading.Thread(target=cleaner.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while cleaner.counters.runs == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cleaner.counters.runs == 1
        assert cleaner.counters.removed_files == {RetentionKind.SPOOL: 3, RetentionKind.RESULTS: 2}
    finally:
        stop.set()
        thread.join(timeout=2)
    assert not thread.is_alive()
