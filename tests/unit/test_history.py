"""History store: summaries per patient and issuer, priors, baselines (issue 6)."""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from processing.exam_summary import ExamSummary
from processing.results import AdcStats, BodyRegion, LesionStats
from service.errors import HistoryError, UnknownExamError
from service.history import HistoryStore, PatientKey, SummarySource

PATIENT = PatientKey("PAT-7", "HOSP-A")


def _exam(uid: str, date: str, time: str = "090000", *, issuer: str = "HOSP-A") -> ExamSummary:
    lesion = LesionStats(
        label=1,
        volume_ml=3.5,
        adc_mean=820.0,
        adc_median=800.0,
        centroid_mm=(1.0, 2.0, -150.0),
        region=BodyRegion.PELVIS,
        mean_high_b=95.0,
    )
    stats = AdcStats(
        mean=820.0,
        median=800.0,
        sd=120.0,
        p5=600.0,
        p10=650.0,
        p25=720.0,
        p75=900.0,
        p90=1100.0,
        p95=1256.0,
        skewness=0.3,
        kurtosis=4.2,
    )
    return ExamSummary(
        study_instance_uid=uid,
        study_date=date,
        study_time=time,
        patient_id="PAT-7",
        issuer_of_patient_id=issuer,
        tdv_ml=3.5,
        adc=stats,
        histogram=None,
        classes=None,
        lesions=(lesion,),
        sr_sop_instance_uid=f"{uid}.100",
        seg_sop_instance_uid=f"{uid}.200",
    )


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    return HistoryStore(tmp_path / "db" / "history.sqlite")


def _six_exams(store: HistoryStore) -> list[ExamSummary]:
    exams = [_exam(f"1.9.{n}", f"2024{n:02d}15") for n in range(1, 7)]
    for exam in reversed(exams):  # recording order must not matter
        store.record_exam(exam)
    return exams


def test_store_uses_wal_and_round_trips_summaries(store: HistoryStore) -> None:
    exam = _exam("1.9.1", "20240115")
    store.record_exam(exam)
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        row = conn.execute(
            "SELECT sr_sop_instance_uid, seg_sop_instance_uid, source FROM exam_history"
        ).fetchone()
    assert row == ("1.9.1.100", "1.9.1.200", "local")
    entry = store.get(PATIENT, "1.9.1")
    assert entry.summary == exam
    assert entry.is_baseline is False
    assert entry.source is SummarySource.LOCAL


def test_patients_are_told_apart_by_issuer(store: HistoryStore) -> None:
    store.record_exam(_exam("1.9.1", "20240115", issuer="HOSP-A"))
    store.record_exam(_exam("1.9.2", "20240215", issuer="HOSP-B"))
    assert [e.study_instance_uid for e in store.exams(PATIENT)] == ["1.9.1"]
    assert [e.study_instance_uid for e in store.exams(PatientKey("PAT-7", "HOSP-B"))] == ["1.9.2"]
    with pytest.raises(UnknownExamError, match=r"1\.9\.2 is not in the history"):
        store.get(PATIENT, "1.9.2")


def test_priors_are_the_earlier_exams_oldest_first(store: HistoryStore) -> None:
    _six_exams(store)
    store.record_exam(_exam("1.9.31", "20240315", "140000"))  # same day, later
    priors = store.priors(PATIENT, study_date="20240315", study_time="120000", study_uid="1.9.3")
    assert [p.study_instance_uid for p in priors] == ["1.9.1", "1.9.2"]
    assert store.priors(PATIENT, study_date="20240115", study_uid="1.9.1") == []


def test_first_exam_is_the_baseline_until_another_is_marked(store: HistoryStore) -> None:
    """TTL case study: exam 4 becomes the second-line baseline; earlier exams keep exam 1."""
    exams = _six_exams(store)

    def baseline_of(exam: ExamSummary) -> str | None:
        entry = store.baseline_for(
            PATIENT,
            study_date=exam.study_date,
            study_time=exam.study_time,
            study_uid=exam.study_instance_uid,
        )
        return None if entry is None else entry.study_instance_uid

    assert baseline_of(exams[0]) is None  # the first exam has nothing before it
    assert [baseline_of(e) for e in exams[1:]] == ["1.9.1"] * 5

    store.set_baseline(PATIENT, "1.9.4")
    assert [baseline_of(e) for e in exams] == [None, "1.9.1", "1.9.1", "1.9.4", "1.9.4", "1.9.4"]
    assert store.get(PATIENT, "1.9.4").is_baseline

    store.set_baseline(PATIENT, "1.9.1")
    assert baseline_of(exams[0]) == "1.9.1"
    store.clear_baseline(PATIENT, "1.9.4")
    assert baseline_of(exams[5]) == "1.9.1"


def test_reprocessing_keeps_the_baseline_flag(store: HistoryStore) -> None:
    _six_exams(store)
    store.set_baseline(PATIENT, "1.9.4")
    store.record_exam(replace(_exam("1.9.4", "20240415"), tdv_ml=99.0))
    entry = store.get(PATIENT, "1.9.4")
    assert entry.is_baseline
    assert entry.summary.tdv_ml == 99.0


def test_pacs_copy_never_replaces_a_local_summary(store: HistoryStore) -> None:
    local = _exam("1.9.1", "20240115")
    store.record_exam(local)
    store.record_exam(replace(local, tdv_ml=1.0), source=SummarySource.PACS)
    assert store.get(PATIENT, "1.9.1").summary.tdv_ml == 3.5
    fetched = _exam("1.9.2", "20240215")
    store.record_exam(fetched, source=SummarySource.PACS)
    assert store.get(PATIENT, "1.9.2").source is SummarySource.PACS
    store.record_exam(fetched)  # processed here later: the local copy wins
    assert store.get(PATIENT, "1.9.2").source is SummarySource.LOCAL


def test_unknown_exam_cannot_become_baseline(store: HistoryStore) -> None:
    with pytest.raises(UnknownExamError, match=r"cannot set baseline: study 1\.2\.3"):
        store.set_baseline(PATIENT, "1.2.3")


def test_bad_inputs_are_named(store: HistoryStore) -> None:
    with pytest.raises(HistoryError, match="patient ID must not be empty"):
        PatientKey("")
    with pytest.raises(ValueError, match="study_date"):
        store.priors(PATIENT, study_date="2024-01-01")


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite"
    HistoryStore(path)
    errors: list[BaseException] = []

    def write(start: int) -> None:
        try:
            own = HistoryStore(path)
            for n in range(start, start + 20):
                own.record_exam(_exam(f"1.8.{n}", f"2023{1 + n % 12:02d}{1 + n % 28:02d}"))
        except BaseException as exc:  # collected and re-raised by the test
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k * 100,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(HistoryStore(path).exams(PATIENT)) == 60
