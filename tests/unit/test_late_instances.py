"""Late instances (issue 12 point 5): an instance of a study whose job left ``receiving``.

For each state the first version can be in when the late instance arrives
(ready, deferred, processing, exporting, done, failed) the instance must not be
dropped, must land in the right version, and that version must be queued with
every instance of the study (the earlier ones and the late one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import ClassVar

import pytest

from dicom_node.receive.spool import SpooledInstance
from service.completion import CompletionDetector
from service.jobs import JobSpec, JobState, make_job_key, results_folder
from service.jobstore import InstanceRow, QueueOutcome, SqliteJobStore
from service.settings import Settings, load_settings

MR = "1.2.840.10008.5.1.4.1.1.4"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
STUDY = "1.2.826.0.1.3680043.8.498.12"
QUIET = 30.0
FIRST_AT = 1000.0
LATE_AT = 5000.0
PACS = "PACS@127.0.0.1:104"


class Clock:
    """A settable wall clock."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _instance(n: int, at: float) -> SpooledInstance:
    return SpooledInstance(
        sop_instance_uid=f"{STUDY}.9.{n}",
        sop_class_uid=MR,
        study_uid=STUDY,
        series_uid=f"{STUDY}.1",
        series_description="DWI",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        calling_ae="SCANNER",
        path=Path(f"/spool/{STUDY}/{n}.dcm"),
        size_bytes=1000,
        received_at=at,
    )


def _settings(tmp_path: Path) -> Settings:
    return load_settings(
        env={},
        overrides={
            "node": {"data_dir": str(tmp_path / "data")},
            "completion": {"quiet_seconds": QUIET, "incomplete_extra_wait_seconds": 0},
            "export": {"destinations": [PACS]},
        },
    )


@pytest.fixture
def store(tmp_path: Path) -> SqliteJobStore:
    return SqliteJobStore(tmp_path / "jobs.sqlite")


@pytest.fixture
def clock() -> Clock:
    return Clock(FIRST_AT)


@pytest.fixture
def detector(store: SqliteJobStore, clock: Clock, tmp_path: Path) -> CompletionDetector:
    return CompletionDetector(store, _settings(tmp_path), "1.0", clock=clock)


def _exam_jobs(store: SqliteJobStore) -> dict[int, JobState]:
    return {job.version: job.state for job in store.jobs()}


def _first_version_ready(store: SqliteJobStore, detector: CompletionDetector, clock: Clock) -> int:
    """Two instances, quiet period over: version 1 is queued with both; returns its job id."""
    store.record_instance(_instance(1, FIRST_AT))
    store.record_instance(_instance(2, FIRST_AT + 1))
    clock.now = FIRST_AT + 1 + QUIET
    submitted = detector.check()
    assert len(submitted) == 1
    return submitted[0]


def _late_instance_then_quiet(
    store: SqliteJobStore, detector: CompletionDetector, clock: Clock
) -> list[int]:
    assert store.record_instance(_instance(3, LATE_AT))
    clock.now = LATE_AT + QUIET
    return detector.check()


ALL_THREE = [f"/spool/{STUDY}/{n}.dcm" for n in (1, 2, 3)]


def _assert_spec_has_every_instance(spec: JobSpec, version: int, settings_dir: Path) -> None:
    assert spec.version == version
    assert sorted(spec.input_paths) == ALL_THREE
    assert spec.job_key == make_job_key(STUDY, "1.0", [f"{STUDY}.9.{n}" for n in (1, 2, 3)])
    results = (settings_dir / "data" / "results").resolve()
    assert spec.output_dir == str(results_folder(results, STUDY, version))


# -- ready and deferred: the queued job has not started; it is queued again, same version


def test_late_instance_while_ready_requeues_version_1_with_every_instance(
    store: SqliteJobStore, detector: CompletionDetector, clock: Clock, tmp_path: Path
) -> None:
    job_id = _first_version_ready(store, detector, clock)
    assert store.record_instance(_instance(3, LATE_AT))
    record = store.status(job_id)
    assert record.state is JobState.RECEIVING  # its frozen input list lacked instance 3
    assert record.job_key is None
    assert "arrived after the exam was queued" in record.reason
    assert store.claim(now=LATE_AT + 1) is None  # nothing to process with the old list
    clock.now = LATE_AT + QUIET - 1
    assert detector.check() == []  # the quiet period counts from the late instance
    clock.now = LATE_AT + QUIET
    assert detector.check() == [job_id]
    assert _exam_jobs(store) == {1: JobState.READY}
    spec = store.claim(now=clock.now)
    assert spec is not None
    assert spec.job_id == job_id
    _assert_spec_has_every_instance(spec, 1, tmp_path)


def test_late_instance_while_deferred_requeues_and_keeps_the_priors_wait(
    store: SqliteJobStore, detector: CompletionDetector, clock: Clock, tmp_path: Path
) -> None:
    job_id = _first_version_ready(store, detector, clock)
    claimed = store.claim(now=clock.now)
    assert claimed is not None
    assert len(claimed.input_paths) == 2
    until = LATE_AT + 600.0
    store.defer(job_id, until, "waiting for priors from PACS", now=clock.now)
    deferred_since = store.deferred_since(job_id)
    assert deferred_since is not None
    assert _late_instance_then_quiet(store, detector, clock) == [job_id]
    assert _exam_jobs(store) == {1: JobState.READY}
    assert store.status(job_id).not_before == until
    assert store.deferred_since(job_id) == deferred_since  # the 30-minute limit still counts
    assert store.claim(now=until - 1) is None
    spec = store.claim(now=until)
    assert spec is not None
    assert spec.job_id == job_id
    _assert_spec_has_every_instance(spec, 1, tmp_path)


# -- processing started (or ended): the next version, queued with every instance


def test_late_instance_while_processing_opens_version_2_after_version_1_finishes(
    store: SqliteJobStore, detector: CompletionDetector, clock: Clock, tmp_path: Path
) -> None:
    job_id = _first_version_ready(store, detector, clock)
    assert store.claim(now=clock.now) is not None
    assert _late_instance_then_quiet(store, detector, clock) == []
    # Version 2 waits: version 1's SR must exist to be named as its predecessor.
    assert _exam_jobs(store) == {2: JobState.RECEIVING, 1: JobState.PROCESSING}
    store.finish_processing(job_id, [("/r/v1/sr.dcm", "2.25.1")], [PACS], 10.0)
    submitted = detector.check()
    assert len(submitted) == 1
    assert _exam_jobs(store) == {2: JobState.READY, 1: JobState.EXPORTING}
    spec = store.claim(now=clock.now)
    assert spec is not None
    assert spec.job_id == submitted[0]
    _assert_spec_has_every_instance(spec, 2, tmp_path)


@pytest.mark.parametrize(
    ("state", "finish"),
    [
        (
            JobState.EXPORTING,
            lambda store, job_id: store.finish_processing(
                job_id, [("/r/v1/sr.dcm", "2.25.1")], [PACS], 10.0
            ),
        ),
        (
            JobState.DONE,
            lambda store, job_id: store.finish_processing(
                job_id, [("/r/v1/sr.dcm", "2.25.1")], [], 10.0
            ),
        ),
        (JobState.FAILED, lambda store, job_id: store.fail(job_id, "OSError: disk full")),
    ],
    ids=["exporting", "done", "failed"],
)
def test_late_instance_after_processing_opens_version_2_with_every_instance(
    *,
    store: SqliteJobStore,
    detector: CompletionDetector,
    clock: Clock,
    tmp_path: Path,
    state: JobState,
    finish: Callable[[SqliteJobStore, int], None],
) -> None:
    job_id = _first_version_ready(store, detector, clock)
    first = store.claim(now=clock.now)
    assert first is not None
    finish(store, job_id)
    assert store.status(job_id).state is state
    submitted = _late_instance_then_quiet(store, detector, clock)
    assert len(submitted) == 1
    assert submitted[0] != job_id
    assert _exam_jobs(store) == {2: JobState.READY, 1: state}
    spec = store.claim(now=clock.now)
    assert spec is not None
    assert spec.job_id == submitted[0]
    _assert_spec_has_every_instance(spec, 2, tmp_path)
    assert spec.job_key != first.job_key
    assert store.status(job_id).state is state  # version 1 is left as it was


# -- races and corner cases


def test_instance_arriving_while_the_spec_is_built_is_not_left_out(
    tmp_path: Path, clock: Clock
) -> None:
    """An instance recorded between listing the inputs and queueing: the job waits for it."""

    class ArrivesWhileListing(SqliteJobStore):
        arrivals: ClassVar[list[SpooledInstance]] = []

        def study_instances(self, study_uid: str) -> list[InstanceRow]:
            rows = super().study_instances(study_uid)
            while self.arrivals:
                self.record_instance(self.arrivals.pop())
            return rows

    store = ArrivesWhileListing(tmp_path / "jobs.sqlite")
    detector = CompletionDetector(store, _settings(tmp_path), "1.0", clock=clock)
    store.record_instance(_instance(1, FIRST_AT))
    store.record_instance(_instance(2, FIRST_AT + 1))
    store.arrivals.append(_instance(3, FIRST_AT + 2))
    clock.now = FIRST_AT + 1 + QUIET
    assert detector.check() == []  # listed without instance 3: not queued
    assert _exam_jobs(store) == {1: JobState.RECEIVING}
    clock.now = FIRST_AT + 2 + QUIET
    submitted = detector.check()
    assert len(submitted) == 1
    spec = store.claim(now=clock.now)
    assert spec is not None
    _assert_spec_has_every_instance(spec, 1, tmp_path)


def test_queue_receiving_refuses_a_spec_older_than_the_last_arrival(
    store: SqliteJobStore, detector: CompletionDetector, clock: Clock
) -> None:
    store.record_instance(_instance(1, FIRST_AT))
    study = store.receiving_studies()[0]
    spec = detector.build_spec(study, store.study_instances(STUDY))
    store.record_instance(_instance(2, FIRST_AT + 5))
    assert store.queue_receiving(spec, study.last_instance_at) is QueueOutcome.CHANGED
    assert _exam_jobs(store) == {1: JobState.RECEIVING}
    fresh = store.receiving_studies()[0]
    spec = detector.build_spec(fresh, store.study_instances(STUDY))
    assert store.queue_receiving(spec, fresh.last_instance_at) is QueueOutcome.QUEUED


def test_late_instance_of_no_new_input_closes_the_new_version_as_a_duplicate(
    store: SqliteJobStore, detector: CompletionDetector, clock: Clock
) -> None:
    """A late non-MR instance opens version 2, whose MR inputs equal version 1's."""
    job_id = _first_version_ready(store, detector, clock)
    store.claim(now=clock.now)
    store.finish_processing(job_id, [], [], 1.0)
    store.record_instance(replace(_instance(3, LATE_AT), sop_class_uid=SECONDARY_CAPTURE))
    clock.now = LATE_AT + QUIET
    assert detector.check() == []
    versions = {job.version: job for job in store.jobs()}
    assert versions[2].state is JobState.DONE
    assert versions[2].reason == "same inputs as an earlier job of this study"


def test_late_instance_after_a_correction_waits_for_the_correction(
    store: SqliteJobStore, detector: CompletionDetector, clock: Clock, tmp_path: Path
) -> None:
    """Version 1 done, a reader's SEG queued as version 2: the late images make version 3."""
    job_id = _first_version_ready(store, detector, clock)
    store.claim(now=clock.now)
    store.finish_processing(job_id, [("/r/v1/sr.dcm", "2.25.1")], [], 10.0)
    seg = replace(_instance(90, FIRST_AT + 100), sop_class_uid=SEGMENTATION)
    assert store.record_instance(seg)
    clock.now = FIRST_AT + 101
    [correction_id] = detector.check()
    assert _exam_jobs(store) == {2: JobState.READY, 1: JobState.DONE}
    assert _late_instance_then_quiet(store, detector, clock) == []  # waits for version 2
    assert _exam_jobs(store) == {3: JobState.RECEIVING, 2: JobState.READY, 1: JobState.DONE}
    correction = store.claim(now=clock.now)
    assert correction is not None
    assert correction.job_id == correction_id
    store.finish_processing(correction_id, [("/r/v2/sr.dcm", "2.25.2")], [], 1.0)
    [third] = detector.check()
    spec = store.claim(now=clock.now)
    assert spec is not None
    assert spec.job_id == third
    _assert_spec_has_every_instance(spec, 3, tmp_path)  # MR instances only, not the SEG
