"""The history behind a protocol (issue 15): a snapshot answers as the store, and replays."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from processing.exam_summary import summarize_exam
from service.history import HistorySnapshot, HistoryStore, PatientKey, SummarySource
from service.jobs import PriorsSpec
from service.priors import find_priors
from tests.helpers.writer_fixtures import make_result, write_synthetic_exam
from tests.unit.test_history import PATIENT, _exam


def _queries(history: HistoryStore | HistorySnapshot) -> list[object]:
    answers: list[object] = []
    for n in range(1, 8):
        date, uid = f"2024{n:02d}15", f"1.9.{n}"
        priors = history.priors(PATIENT, study_date=date, study_time="120000", study_uid=uid)
        baseline = history.baseline_for(PATIENT, study_date=date, study_uid=uid)
        answers.append(
            (
                [p.study_instance_uid for p in priors],
                None if baseline is None else baseline.study_instance_uid,
            )
        )
    return answers


def test_a_snapshot_answers_as_the_store_and_replays_its_writes(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "history.sqlite3")
    for n in (5, 1, 3, 2):
        store.record_exam(_exam(f"1.9.{n}", f"2024{n:02d}15"))
    store.set_baseline(PATIENT, "1.9.3")
    store.record_pacs_lookup(PATIENT, "PACS@pacs:104")
    snapshot = HistorySnapshot(store.exams(PATIENT), [(PATIENT, "PACS@pacs:104")])
    assert _queries(snapshot) == _queries(store)
    assert snapshot.pacs_looked_up(PATIENT, "PACS@pacs:104")
    assert not snapshot.pacs_looked_up(PATIENT, "OTHER@pacs:104")

    # The worker's writes: a PACS copy of a local exam (ignored), a new exam, a lookup.
    snapshot.record_exam(replace(_exam("1.9.2", "20240215"), tdv_ml=9.0), source=SummarySource.PACS)
    snapshot.record_exam(_exam("1.9.4", "20240415"))
    snapshot.record_pacs_lookup(PATIENT, "OTHER@pacs:104")
    assert [s.study_instance_uid for s, _ in snapshot.recorded] == ["1.9.4"]
    assert snapshot.baseline_for(PATIENT, study_date="20240615", study_uid="1.9.6") is not None

    snapshot.replay(store)
    assert _queries(snapshot) == _queries(store)
    assert store.get(PATIENT, "1.9.2").summary.tdv_ml == 3.5  # the local summary was kept
    assert store.get(PATIENT, "1.9.4").source is SummarySource.LOCAL
    assert store.pacs_looked_up(PATIENT, "OTHER@pacs:104")
    assert store.get(PATIENT, "1.9.3").is_baseline  # the flag survives the replay


def test_a_worker_with_a_snapshot_finds_the_same_priors_and_writes_no_database(
    tmp_path: Path,
) -> None:
    synthetic = write_synthetic_exam(tmp_path / "input")
    store = HistoryStore(tmp_path / "receiver" / "history.sqlite3")
    result = make_result(synthetic)
    earlier = replace(synthetic.exam, study_instance_uid="1.2.826.0.1.99")
    store.record_exam(summarize_exam(earlier, result.stats, study_date="20000101"))
    patient = PatientKey(synthetic.exam.patient_id, synthetic.exam.issuer_of_patient_id)

    worker_path = tmp_path / "worker" / "history.sqlite3"  # what the spec names, on the worker
    snapshot = HistorySnapshot(store.exams(patient))
    found = find_priors(PriorsSpec(history_path=str(worker_path)), synthetic.exam, history=snapshot)
    expected = find_priors(PriorsSpec(history_path=str(store.path)), synthetic.exam)
    assert found.prepared == expected.prepared
    assert found.history is snapshot
    assert not worker_path.parent.exists()  # nothing written on the worker
