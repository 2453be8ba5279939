"""The worker's priors step: history, an unreachable priors peer, the wait and its end."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from dicom_node.receive.spool import SpooledInstance
from processing.exam_summary import summarize_exam
from service.errors import PriorsUnavailableError
from service.history import HistoryStore, PatientKey
from service.jobs import JobSpec, JobState, PriorsSpec, make_job_key
from service.jobstore import SqliteJobStore
from service.priors import find_priors
from service.worker import JobOutcome, PriorsWait, Worker
from tests.conftest import free_port
from tests.helpers.writer_fixtures import SyntheticExam, make_result, write_synthetic_exam

MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY = "1.2.3"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticExam:
    return write_synthetic_exam(tmp_path_factory.mktemp("exam") / "input")


def _unreachable_peer() -> str:
    return f"PACS@127.0.0.1:{free_port()}"  # nothing listens there


def test_first_exam_has_no_priors_and_no_warning(synthetic: SyntheticExam, tmp_path: Path) -> None:
    priors = find_priors(PriorsSpec(history_path=str(tmp_path / "h.sqlite3")), synthetic.exam)
    assert priors.prepared is not None and priors.prepared.priors == ()
    assert priors.when is not None and len(priors.when.study_date) == 8
    assert priors.warnings == ()
    assert priors.yellow_lower_um2s is None


def test_earlier_exam_in_history_is_the_baseline(synthetic: SyntheticExam, tmp_path: Path) -> None:
    history = HistoryStore(tmp_path / "h.sqlite3")
    result = make_result(synthetic)
    earlier = dataclasses.replace(synthetic.exam, study_instance_uid="1.2.826.0.1.99")
    history.record_exam(summarize_exam(earlier, result.stats, study_date="20000101"))
    priors = find_priors(PriorsSpec(history_path=str(history.path)), synthetic.exam)
    assert priors.prepared is not None
    assert [p.study_instance_uid for p in priors.prepared.priors] == ["1.2.826.0.1.99"]
    assert result.stats.adc is not None
    assert priors.yellow_lower_um2s == pytest.approx(result.stats.adc.p95)


def test_unreachable_peer_defers_or_warns(synthetic: SyntheticExam, tmp_path: Path) -> None:
    peer = _unreachable_peer()
    spec = PriorsSpec(
        history_path=str(tmp_path / "h.sqlite3"), pacs=peer, calling_aet="WBDWI", timeout_seconds=2
    )
    with pytest.raises(PriorsUnavailableError, match=f"priors peer {peer} could not be asked"):
        find_priors(spec, synthetic.exam)
    priors = find_priors(dataclasses.replace(spec, continue_without_pacs=True), synthetic.exam)
    assert priors.prepared is not None and priors.prepared.priors == ()
    [warning] = priors.warnings
    assert peer in warning and "local history only" in warning
    patient = PatientKey(synthetic.exam.patient_id, synthetic.exam.issuer_of_patient_id)
    assert not HistoryStore(tmp_path / "h.sqlite3").pacs_looked_up(patient, peer)  # asks again


def test_exam_without_patient_id_is_processed_without_comparison(
    synthetic: SyntheticExam, tmp_path: Path
) -> None:
    anonymous = dataclasses.replace(synthetic.exam, patient_id="")
    spec = PriorsSpec(history_path=str(tmp_path / "h.sqlite3"), pacs=_unreachable_peer())
    priors = find_priors(spec, anonymous)
    assert priors.prepared is None and priors.history is None
    assert priors.warnings and "no Patient ID" in priors.warnings[0]
    assert find_priors(None, synthetic.exam).prepared is None  # priors off


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _queued_job(store: SqliteJobStore, tmp_path: Path, pacs: str) -> JobSpec:
    store.record_instance(
        SpooledInstance(
            sop_instance_uid=f"{STUDY}.9.1",
            sop_class_uid=MR,
            study_uid=STUDY,
            series_uid=f"{STUDY}.1",
            series_description="DWI",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            calling_ae="SCANNER",
            path=tmp_path / "1.dcm",
            size_bytes=1,
            received_at=time.time(),
        )
    )
    [receiving] = store.receiving_studies()
    spec = JobSpec(
        job_key=make_job_key(STUDY, "1.0", [f"{STUDY}.9.1"]),
        job_id=receiving.job_id,
        study_uid=STUDY,
        version=1,
        input_paths=(str(tmp_path / "1.dcm"),),
        output_dir=str(tmp_path / "out"),
        priors=PriorsSpec(history_path=str(tmp_path / "h.sqlite3"), pacs=pacs),
    )
    assert store.submit(spec)
    return spec


def test_worker_waits_for_the_priors_peer_then_goes_on_with_local_history(
    tmp_path: Path,
) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    clock = FakeClock()
    calls: list[JobSpec] = []

    def runner(spec: JobSpec) -> JobOutcome:
        calls.append(spec)
        assert spec.priors is not None
        if not spec.priors.continue_without_pacs:
            raise PriorsUnavailableError("priors peer PACS@x:1 could not be asked: refused")
        return JobOutcome(result_files=(), device="cpu", warnings=("local history only",))

    finished: list[JobOutcome | None] = []
    worker = Worker(
        store,
        runner=runner,
        on_finished=lambda _spec, outcome, _s: finished.append(outcome),
        priors_wait=PriorsWait(retry_seconds=60, max_wait_seconds=150),
        clock=clock,
    )
    spec = _queued_job(store, tmp_path, "PACS@x:1")

    claimed = store.claim(clock())
    assert claimed is not None
    assert worker.process(claimed) is None  # deferred, not failed
    record = store.status(spec.job_id)
    assert record.state is JobState.READY
    assert record.not_before == pytest.approx(clock() + 60)
    assert record.reason.startswith("waiting for priors") and "refused" in record.reason
    first_deferral = store.deferred_since(spec.job_id)
    assert first_deferral == clock()
    assert finished == []

    clock.now += 59
    assert store.claim(clock()) is None  # not due yet
    clock.now += 2
    again = store.claim(clock())
    assert again is not None
    assert worker.process(again) is None
    assert store.deferred_since(spec.job_id) == first_deferral  # the wait is counted from the start
    clock.now += 61
    third = store.claim(clock())
    assert third is not None
    assert worker.process(third) is None
    # 122 s waited, 28 s left: the next try is at the end of the wait, not after 60 s.
    assert store.status(spec.job_id).not_before == pytest.approx(first_deferral + 150)

    clock.now = first_deferral + 150
    last = store.claim(clock())
    assert last is not None
    outcome = worker.process(last)
    assert outcome is not None and outcome.warnings == ("local history only",)
    assert calls[-1].priors is not None and calls[-1].priors.continue_without_pacs
    assert [c.priors.continue_without_pacs for c in calls if c.priors] == [
        False,
        False,
        False,
        False,
        True,
    ]
    record = store.status(spec.job_id)
    assert record.state is JobState.DONE and record.reason == ""
    assert store.deferred_since(spec.job_id) is None
    assert finished == [outcome]


def test_job_spec_with_priors_round_trips_through_json(tmp_path: Path) -> None:
    spec = JobSpec(
        job_key="k",
        job_id=1,
        study_uid=STUDY,
        version=1,
        input_paths=("a",),
        output_dir="o",
        priors=PriorsSpec(history_path="h", pacs="PACS@h:104", calling_aet="ME"),
    )
    assert JobSpec.from_json(spec.to_json()) == spec
    plain = dataclasses.replace(spec, priors=None)
    assert JobSpec.from_json(plain.to_json()) == plain
