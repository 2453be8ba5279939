"""The reliability verdict on its way out: job store, worker log, ``wbdwi status``, ``/metrics``,
``measurements.json`` and the exam summary kept in the history."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sqlite3
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from dicom_node.receive.spool import SpooledInstance
from processing.comparison import compare_exams, doubtful_reference_notes
from processing.exam_summary import ExamSummary, summarize_exam
from processing.measurements import measurements_dict
from processing.quality import QualityAssessment, QualityFinding, Verdict
from service.cli import main
from service.http import render_metrics
from service.jobs import JobSpec, JobState, make_job_key
from service.jobstore import SqliteJobStore
from service.node import JOB_STORE_FILE, Node
from service.settings import load_settings
from service.worker import JobOutcome, Worker
from tests.helpers.writer_fixtures import SyntheticExam, make_result, write_synthetic_exam

MR = "1.2.840.10008.5.1.4.1.1.4"

REVIEW = QualityFinding(
    code="marrow_bright",
    severity=Verdict.REVIEW,
    message="Normal marrow is 3.6 times as bright as muscle at b1000 (limit 3.0).",
    value=3.6,
    limit=3.0,
)
UNRELIABLE = QualityFinding(
    code="stations_missing",
    severity=Verdict.UNRELIABLE,
    message="The exam has 2 of the 3 expected stations.",
    value=2.0,
    limit=3.0,
)


@pytest.fixture(autouse=True)
def _no_wbdwi_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("WBDWI_")]:
        monkeypatch.delenv(name)


def _queued(store: SqliteJobStore, tmp_path: Path, study: str) -> JobSpec:
    store.record_instance(
        SpooledInstance(
            sop_instance_uid=f"{study}.9.1",
            sop_class_uid=MR,
            study_uid=study,
            series_uid=f"{study}.1",
            series_description="DWI",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            calling_ae="SCANNER",
            path=tmp_path / f"{study}.dcm",
            size_bytes=1,
            received_at=time.time(),
        )
    )
    job_id = next(s.job_id for s in store.receiving_studies() if s.study_uid == study)
    spec = JobSpec(
        job_key=make_job_key(study, "1.0", [f"{study}.9.1"]),
        job_id=job_id,
        study_uid=study,
        version=1,
        input_paths=(str(tmp_path / f"{study}.dcm"),),
        output_dir=str(tmp_path / "out" / study),
    )
    assert store.submit(spec)
    return spec


def _run(store: SqliteJobStore, quality: QualityAssessment) -> list[dict[str, object]]:
    """Claim the next job and let the worker finish it with ``quality``; the log events."""
    worker = Worker(
        store, runner=lambda _spec: JobOutcome(result_files=(), device="cpu", quality=quality)
    )
    claimed = store.claim()
    assert claimed is not None
    with capture_logs() as logs:
        assert worker.process(claimed) is not None
    return logs


def _three_jobs(data_dir: Path) -> None:
    """Jobs with an ``ok``, a ``review`` and an ``unreliable`` result."""
    store = SqliteJobStore(data_dir / JOB_STORE_FILE)
    try:
        for study, quality in (
            ("1.2.1", QualityAssessment()),
            ("1.2.2", QualityAssessment(findings=(REVIEW,))),
            ("1.2.3", QualityAssessment(findings=(REVIEW, UNRELIABLE))),
        ):
            _queued(store, data_dir, study)
            _run(store, quality)
    finally:
        store.close()


def test_worker_logs_and_stores_the_verdict(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / JOB_STORE_FILE)
    spec = _queued(store, tmp_path, "1.2.3")
    logs = _run(store, QualityAssessment(findings=(REVIEW, UNRELIABLE)))
    [event] = [e for e in logs if e["event"] == "job_processed"]
    assert event["log_level"] == "warning"
    assert event["verdict"] == "unreliable"
    assert event["verdict_reasons"] == ["marrow_bright", "stations_missing"]
    record = store.status(spec.job_id)
    assert record.state is JobState.DONE
    assert record.quality is not None and record.quality.verdict is Verdict.UNRELIABLE
    assert [f.code for f in record.quality.findings] == ["marrow_bright", "stations_missing"]

    _queued(store, tmp_path, "1.2.4")
    [ok_event] = [e for e in _run(store, QualityAssessment()) if e["event"] == "job_processed"]
    assert ok_event["log_level"] == "info" and ok_event["verdict"] == "ok"
    assert ok_event["verdict_reasons"] == []
    assert store.verdict_counts() == {Verdict.OK: 1, Verdict.REVIEW: 0, Verdict.UNRELIABLE: 1}
    store.close()


def test_status_shows_each_jobs_verdict_and_reasons(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _three_jobs(tmp_path)
    assert main(["status", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "results: ok 1, review 1, unreliable 1" in out
    blocks: dict[str, str] = {}
    current = ""
    for line in out.splitlines():
        if re.match(r"^ {0,4}\d+ +\w+ +v\d", line):  # a job's first line
            current = line.split()[0]
        if current:
            blocks[current] = blocks.get(current, "") + line + "\n"
    assert "verdict: ok" in blocks["1"]
    assert "verdict: REVIEW: " in blocks["2"] and REVIEW.message in blocks["2"]
    assert "verdict: UNRELIABLE: " in blocks["3"]
    assert f"- unreliable (stations_missing): {UNRELIABLE.message}" in blocks["3"]
    assert f"- review (marrow_bright): {REVIEW.message}" in blocks["3"]

    assert main(["status", "--data-dir", str(tmp_path), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["results_by_verdict"] == {"ok": 1, "review": 1, "unreliable": 1}
    by_study = {job["study_uid"]: job["quality"] for job in payload["jobs"]}
    assert by_study["1.2.1"]["verdict"] == "ok" and by_study["1.2.1"]["reasons"] == []
    assert [r["code"] for r in by_study["1.2.3"]["reasons"]] == [
        "marrow_bright",
        "stations_missing",
    ]
    assert by_study["1.2.3"]["reasons"][1]["value"] == 2.0


def test_metrics_count_results_by_verdict(tmp_path: Path) -> None:
    _three_jobs(tmp_path)
    node = Node(load_settings(overrides={"node": {"data_dir": str(tmp_path), "port": 11112}}))
    try:
        text = render_metrics(node.metrics())
    finally:
        node.stop()
    assert "# TYPE wbdwi_results_by_verdict gauge" in text
    assert 'wbdwi_results_by_verdict{verdict="ok"} 1' in text
    assert 'wbdwi_results_by_verdict{verdict="review"} 1' in text
    assert 'wbdwi_results_by_verdict{verdict="unreliable"} 1' in text


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticExam:
    return write_synthetic_exam(tmp_path_factory.mktemp("exam") / "input")


def test_measurements_quality_object_round_trips(synthetic: SyntheticExam) -> None:
    quality = QualityAssessment(
        findings=(REVIEW, UNRELIABLE), measures={"marrow_to_muscle_b1000": 3.6, "stations": 2}
    )
    result = dataclasses.replace(make_result(synthetic), quality=quality)
    report = measurements_dict(
        result, study_instance_uid=synthetic.exam.study_instance_uid, software_version="1.0"
    )
    block = json.loads(json.dumps(report))["quality"]
    assert block["verdict"] == "unreliable"
    assert block["meaning"] == Verdict.UNRELIABLE.meaning
    assert block["measures"] == {"marrow_to_muscle_b1000": 3.6, "stations": 2}
    assert QualityAssessment.from_dict(block) == quality
    plain = measurements_dict(
        make_result(synthetic),
        study_instance_uid=synthetic.exam.study_instance_uid,
        software_version="1.0",
    )
    assert plain["quality"] == {
        "verdict": "ok",
        "meaning": Verdict.OK.meaning,
        "reasons": [],
        "measures": {},
    }


def test_exam_summary_keeps_the_verdict(synthetic: SyntheticExam) -> None:
    result = make_result(synthetic)
    quality = QualityAssessment(findings=(UNRELIABLE,), measures={"snr": math.nan, "stations": 2})
    summary = summarize_exam(synthetic.exam, result.stats, study_date="20240102", quality=quality)
    text = json.dumps(summary.to_dict(), allow_nan=False)  # the history store's encoding
    back = ExamSummary.from_dict(json.loads(text))
    assert back.quality is not None and back.quality.verdict is Verdict.UNRELIABLE
    assert back.quality.findings == (UNRELIABLE,)
    assert back.quality.measures["snr"] is None  # JSON has no NaN
    older = summarize_exam(synthetic.exam, result.stats, study_date="20240102").to_dict()
    assert older["quality"] is None
    del older["quality"]  # written before verdicts were kept
    assert ExamSummary.from_dict(older).quality is None


def test_a_comparison_with_a_doubtful_prior_says_so(synthetic: SyntheticExam) -> None:
    result = make_result(synthetic)
    earlier = dataclasses.replace(synthetic.exam, study_instance_uid="1.2.826.0.1.5")
    doubtful = QualityAssessment(findings=(UNRELIABLE,))
    prior = summarize_exam(earlier, result.stats, study_date="20230101", quality=doubtful)
    current = summarize_exam(synthetic.exam, result.stats, study_date="20240102")
    comparison = compare_exams(current, [prior])
    [note] = doubtful_reference_notes(comparison, [prior])
    assert note == (
        "The previous exam and baseline (1.2.826.0.1.5) was reported with the verdict "
        "unreliable (stations_missing): the changes against it may be wrong."
    )
    trusted = dataclasses.replace(prior, quality=QualityAssessment())
    assert doubtful_reference_notes(comparison, [trusted]) == ()
    unknown = dataclasses.replace(prior, quality=None)  # before verdicts were kept
    assert doubtful_reference_notes(comparison, [unknown]) == ()


def test_a_version_2_job_store_gains_the_verdict_columns(tmp_path: Path) -> None:
    path = tmp_path / JOB_STORE_FILE
    SqliteJobStore(path).close()
    connection = sqlite3.connect(path)
    for column in ("verdict", "quality", "held_since"):  # as a version 2 node left it
        connection.execute(f"ALTER TABLE jobs DROP COLUMN {column}")
    connection.execute("PRAGMA user_version=2")
    connection.commit()
    connection.close()
    store = SqliteJobStore(path)
    _queued(store, tmp_path, "1.2.9")
    _run(store, QualityAssessment(findings=(REVIEW,)))
    assert store.verdict_counts()[Verdict.REVIEW] == 1
    store.close()
    connection = sqlite3.connect(path)
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 3
    connection.close()
