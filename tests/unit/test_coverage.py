"""Coverage of an exam: stations or b-values missing, a gap; the hold before processing;
the verdict of the exam processed after it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from pydicom import dcmread
from structlog.testing import capture_logs

from dicom_node.assembly.assemble import assemble_exam, survey_coverage
from dicom_node.assembly.coverage import (
    B_VALUE_MISSING,
    COVERAGE_SHORT,
    STATION_GAP,
    STATION_INCOMPLETE,
    STATIONS_MISSING,
    CoverageExpectation,
)
from dicom_node.receive.spool import SpooledInstance
from dicom_node.simulator.scanner import write_exam
from processing.phantom import make_phantom
from processing.quality import Verdict
from service.cli import main
from service.completion import CompletionDetector
from service.jobs import JobSpec, JobState
from service.jobstore import SqliteJobStore
from service.node import JOB_STORE_FILE
from service.settings import load_settings
from service.worker import run_job

EXPECTED = CoverageExpectation(stations=3, source="calling AE SCANNER")
EXTRA_WAIT = 300.0
QUIET = 60.0


@pytest.fixture(autouse=True)
def _no_wbdwi_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("WBDWI_")]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def exam_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The small phantom (3 stations of 46 slices, b 50/600/900) as the scanner writes it."""
    folder = tmp_path_factory.mktemp("exam")
    return write_exam(make_phantom("small", seed=0), folder, distractors=False)


def _station(path: Path) -> int:
    return int(path.parent.name.split("_st")[1].split("_")[0])


def _without_station(files: list[Path], station: int) -> list[Path]:
    return [path for path in files if _station(path) != station]


def _b_value(path: Path) -> int:
    return round(float(dcmread(path, stop_before_pixels=True).DiffusionBValue))


def test_complete_exam_has_no_finding(exam_files: list[Path]) -> None:
    coverage = survey_coverage(exam_files)
    assert len(coverage.stations) == 3
    assert coverage.b_values == (50, 600, 900)
    assert coverage.findings(EXPECTED) == ()
    assert coverage.findings(CoverageExpectation(min_extent_mm=coverage.extent_mm)) == ()
    # The header-only survey sees what assembly composes.
    assert assemble_exam(exam_files).coverage == coverage


def test_missing_last_station_is_fewer_stations_than_expected(exam_files: list[Path]) -> None:
    coverage = survey_coverage(_without_station(exam_files, 3))
    [finding] = coverage.findings(EXPECTED)
    assert finding.code == STATIONS_MISSING
    assert finding.severity is Verdict.UNRELIABLE
    assert (finding.value, finding.limit) == (2.0, 3.0)
    assert "2 of the 3 stations expected for calling AE SCANNER" in finding.message
    assert coverage.findings(CoverageExpectation()) == ()  # nothing to compare with
    full = survey_coverage(exam_files).extent_mm
    [short] = coverage.findings(CoverageExpectation(min_extent_mm=full))
    assert short.code == COVERAGE_SHORT and short.value == pytest.approx(coverage.extent_mm)
    assert coverage.extent_mm < 0.75 * full


def test_missing_middle_station_is_a_gap(exam_files: list[Path]) -> None:
    coverage = survey_coverage(_without_station(exam_files, 2))
    codes = [finding.code for finding in coverage.findings(EXPECTED)]
    assert codes == [STATIONS_MISSING, STATION_GAP]
    [(above, below, gap_mm)] = coverage.gaps()
    assert (above, below) == (1, 2)
    assert gap_mm > 300  # most of a 46-slice station of 9 mm


def test_missing_b_value_and_missing_slices(exam_files: list[Path]) -> None:
    b900_of_station_2 = [p for p in exam_files if _station(p) == 2 and _b_value(p) == 900]
    assert len(b900_of_station_2) == 46
    without_b = [p for p in exam_files if p not in set(b900_of_station_2)]
    [finding] = survey_coverage(without_b).findings(EXPECTED)
    assert finding.code == B_VALUE_MISSING
    assert "station 2 has no b=900" in finding.message
    partial = [p for p in exam_files if p not in set(b900_of_station_2[:10])]
    [finding] = survey_coverage(partial).findings(EXPECTED)
    assert finding.code == STATION_INCOMPLETE
    assert "station 2: b=50 46, b=600 46, b=900 36 slices" in finding.message


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _spool(store: SqliteJobStore, files: list[Path], received_at: float) -> None:
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        store.record_instance(
            SpooledInstance(
                sop_instance_uid=str(ds.SOPInstanceUID),
                sop_class_uid=str(ds.SOPClassUID),
                study_uid=str(ds.StudyInstanceUID),
                series_uid=str(ds.SeriesInstanceUID),
                series_description=str(ds.SeriesDescription),
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                calling_ae="SCANNER",
                path=path,
                size_bytes=path.stat().st_size,
                received_at=received_at,
            )
        )


def _detector(tmp_path: Path, clock: Clock) -> tuple[SqliteJobStore, CompletionDetector]:
    config = tmp_path / "node.toml"
    config.write_text(
        f'[node]\ndata_dir = "{tmp_path / "data"}"\n'
        f"[completion]\nquiet_seconds = {QUIET}\nincomplete_extra_wait_seconds = {EXTRA_WAIT}\n"
        '[[calling_ae]]\nae_title = "SCANNER"\nexpected_stations = 3\n'
    )
    settings = load_settings(config, env={})
    store = SqliteJobStore(tmp_path / JOB_STORE_FILE)
    return store, CompletionDetector(store, settings, "1.0", clock=clock)


def test_two_of_three_stations_are_held_for_the_extra_wait(
    exam_files: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = Clock(1_000_000.0)
    store, detector = _detector(tmp_path, clock)
    _spool(store, _without_station(exam_files, 3), clock.now)
    [study] = store.receiving_studies()

    clock.now += QUIET + 1  # quiet: complete by the old rule, but a station is missing
    with capture_logs() as logs:
        assert detector.check() == []
    [held] = [e for e in logs if e["event"] == "job_held_incomplete"]
    assert held["missing"] == [STATIONS_MISSING] and held["hold_seconds"] == EXTRA_WAIT
    record = store.status(study.job_id)
    assert record.state is JobState.RECEIVING
    assert record.held_since == clock.now
    assert record.reason.startswith("held until ")
    assert "2 of the 3 stations expected for calling AE SCANNER" in record.reason
    assert main(["status", "--data-dir", str(tmp_path), "--json"]) == 0
    [job] = json.loads(capsys.readouterr().out)["jobs"]
    assert job["state"] == "receiving" and job["held_since"] == clock.now
    assert job["reason"] == record.reason

    clock.now += EXTRA_WAIT - 1
    with capture_logs() as logs:
        assert detector.check() == []
    assert not [e for e in logs if e["event"] == "job_held_incomplete"]  # logged once

    clock.now += 1
    with capture_logs() as logs:
        assert detector.check() == [study.job_id]
    [over] = [e for e in logs if e["event"] == "job_hold_over"]
    assert over["missing"] == [STATIONS_MISSING] and over["held_seconds"] == EXTRA_WAIT
    record = store.status(study.job_id)
    assert record.state is JobState.READY and record.reason == ""
    spec = store.claim(clock.now)
    assert spec is not None and spec.coverage == EXPECTED
    store.close()


def test_the_missing_station_arriving_during_the_hold_ends_it(
    exam_files: list[Path], tmp_path: Path
) -> None:
    clock = Clock(1_000_000.0)
    store, detector = _detector(tmp_path, clock)
    _spool(store, _without_station(exam_files, 3), clock.now)
    clock.now += QUIET + 1
    assert detector.check() == []
    clock.now += 100
    _spool(store, [p for p in exam_files if _station(p) == 3], clock.now)
    clock.now += QUIET - 1
    assert detector.check() == []  # quiet period running again
    clock.now += 2
    with capture_logs() as logs:
        [job_id] = detector.check()  # complete now: no wait for the rest of the hold
    assert [e["reason"] for e in logs if e["event"] == "job_hold_ended"] == ["coverage complete"]
    spec = store.claim(clock.now)
    assert spec is not None and spec.job_id == job_id
    assert len(spec.input_paths) == len(exam_files)
    store.close()


def test_complete_exam_is_not_held(exam_files: list[Path], tmp_path: Path) -> None:
    clock = Clock(1_000_000.0)
    store, detector = _detector(tmp_path, clock)
    _spool(store, exam_files, clock.now)
    clock.now += QUIET + 1
    with capture_logs() as logs:
        assert len(detector.check()) == 1
    assert not [e for e in logs if e["event"].startswith("job_hold")]
    store.close()


def test_exam_processed_after_the_hold_says_what_is_missing(
    exam_files: list[Path], tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs"
    for path in _without_station(exam_files, 3):
        target = inputs / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    spec = JobSpec(
        job_key="k",
        job_id=1,
        study_uid=str(dcmread(exam_files[0], stop_before_pixels=True).StudyInstanceUID),
        version=1,
        input_paths=tuple(str(p) for p in sorted(inputs.rglob("*.dcm"))),
        output_dir=str(tmp_path / "out"),
        device="cpu",
        coverage=EXPECTED,
    )
    assert JobSpec.from_json(spec.to_json()) == spec
    outcome = run_job(spec)
    assert outcome.quality.verdict is Verdict.UNRELIABLE
    assert STATIONS_MISSING in [finding.code for finding in outcome.quality.findings]
    assert outcome.quality.measures["stations"] == 2
    measurements = json.loads((tmp_path / "out" / "measurements.json").read_text())
    reasons = {reason["code"]: reason for reason in measurements["quality"]["reasons"]}
    assert reasons[STATIONS_MISSING]["value"] == 2.0
    assert reasons[STATIONS_MISSING]["limit"] == 3.0
    assert measurements["quality"]["verdict"] == "unreliable"
    job = json.loads((tmp_path / "out" / "job.json").read_text())
    assert job["verdict"] == "unreliable" and STATIONS_MISSING in job["verdict_reasons"]


def test_expected_coverage_settings_per_calling_ae(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        "[completion]\nexpected_stations = 5\nexpected_coverage_mm = 1000\n"
        '[[calling_ae]]\nae_title = "SHORT"\nexpected_stations = 3\n'
    )
    settings = load_settings(config, env={})
    assert settings.coverage_expected_for("SHORT") == CoverageExpectation(
        stations=3, min_extent_mm=1000.0, source="calling AE SHORT"
    )
    assert settings.coverage_expected_for("OTHER") == CoverageExpectation(
        stations=5, min_extent_mm=1000.0, source="this node"
    )
    assert load_settings(env={}).coverage_expected_for("X") == CoverageExpectation(
        source="this node"
    )
    config.write_text('[[calling_ae]]\nae_title = "BAD"\nexpected_stations = 0\n')
    with pytest.raises(ValueError, match=r"calling_ae\[0\]: expected_stations must be at least 1"):
        load_settings(config, env={})
