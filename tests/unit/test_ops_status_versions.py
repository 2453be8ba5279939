"""``wbdwi status`` (issue 14): each version's own inputs, and when a receiving job becomes ready.

A v1 job keeps the count of the inputs frozen into its spec when v2 of the
study arrives; a receiving job says when it becomes ready and by which rule
(:func:`service.completion.ready_estimate`, shared with the dashboard).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from dicom_node.receive.spool import SpooledInstance
from service.cli import main
from service.completion import ready_estimate
from service.jobs import JobSpec, make_job_key
from service.jobstore import ReceivingStudy, SqliteJobStore
from service.settings import Settings, load_settings

MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY = "1.2.826.0.1.3680043.8.498.77"
V1_INPUTS = 3
V2_EXTRA = 2


def _instance(data_dir: Path, n: int, received_at: float) -> SpooledInstance:
    return SpooledInstance(
        sop_instance_uid=f"{STUDY}.9.{n}",
        sop_class_uid=MR,
        study_uid=STUDY,
        series_uid=f"{STUDY}.1",
        series_description="WB DWI",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        calling_ae="SCANNER",
        path=data_dir / "spool" / f"{n}.dcm",
        size_bytes=1000,
        received_at=received_at,
    )


def _spec(data_dir: Path, job_id: int, version: int, numbers: range) -> JobSpec:
    return JobSpec(
        job_key=make_job_key(STUDY, "1.0", [f"{STUDY}.9.{n}" for n in numbers]),
        job_id=job_id,
        study_uid=STUDY,
        version=version,
        input_paths=tuple(str(data_dir / "spool" / f"{n}.dcm") for n in numbers),
        output_dir=str(data_dir / "results" / f"v{version}"),
        destinations=(),
    )


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in os.environ if n.startswith("WBDWI_")]:
        monkeypatch.delenv(name)
    return tmp_path


def _status(data_dir: Path, capsys: pytest.CaptureFixture[str]) -> dict[int, dict[str, object]]:
    main(["status", "--data-dir", str(data_dir), "--json"])
    return {job["job_id"]: job for job in json.loads(capsys.readouterr().out)["jobs"]}


def test_each_version_shows_its_own_frozen_inputs(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = SqliteJobStore(data_dir / "jobs.sqlite")
    try:
        now = time.time()
        for n in range(V1_INPUTS):
            store.record_instance(_instance(data_dir, n, now))
        v1 = store.receiving_studies()[0].job_id
        assert store.submit(_spec(data_dir, v1, 1, range(V1_INPUTS)))
        assert store.claim() is not None
        store.finish_processing(v1, [], [], 1.0)
        # Late instances after processing started: version 2 opens, receiving.
        for n in range(V1_INPUTS, V1_INPUTS + V2_EXTRA):
            store.record_instance(_instance(data_dir, n, now))
        v2 = store.receiving_studies()[0].job_id
    finally:
        store.close()
    assert v2 != v1

    jobs = _status(data_dir, capsys)
    assert jobs[v1]["instances"] == V1_INPUTS  # frozen: v2's arrival does not change it
    assert jobs[v2]["instances"] == V1_INPUTS + V2_EXTRA  # receiving: the study's count

    store = SqliteJobStore(data_dir / "jobs.sqlite")
    try:  # v2 is queued with only the new instances (e.g. series_include filtered the rest)
        store.submit(_spec(data_dir, v2, 2, range(V1_INPUTS, V1_INPUTS + V2_EXTRA)))
    finally:
        store.close()
    jobs = _status(data_dir, capsys)
    assert (jobs[v1]["instances"], jobs[v2]["instances"]) == (V1_INPUTS, V2_EXTRA)

    main(["status", "--data-dir", str(data_dir)])
    lines = {
        line.split()[0]: line
        for line in capsys.readouterr().out.splitlines()
        if line[:5].strip().isdigit()
    }
    assert f" {V1_INPUTS} inst" in lines[str(v1)]
    assert f" {V2_EXTRA} inst" in lines[str(v2)]


def _study(**changes: str | float | None) -> ReceivingStudy:
    values: dict[str, object] = {
        "job_id": 1,
        "study_uid": STUDY,
        "version": 1,
        "calling_ae": "SCANNER",
        "created_at": 1000.0,
        "last_instance_at": 1000.0,
        "mpps_completed_at": None,
        "mpps_instances_missing": None,
        "held_since": None,
    }
    values.update(changes)
    return ReceivingStudy(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    config = tmp_path_factory.mktemp("config") / "wbdwi.toml"
    config.write_text(
        "[completion]\nquiet_seconds = 60\nmpps_grace_seconds = 5\n"
        "incomplete_extra_wait_seconds = 300\n\n"
        '[[calling_ae]]\nae_title = "SLOW"\nquiet_seconds = 120\n',
        encoding="utf-8",
    )
    return load_settings(config, env={})


@pytest.mark.parametrize(
    ("study", "now", "at", "rule"),
    [
        (_study(), 1010.0, 1060.0, "quiet period of 60 s after the last instance"),
        (
            _study(calling_ae="SLOW"),
            1010.0,
            1120.0,
            "quiet period of 120 s after the last instance",
        ),
        (
            _study(mpps_completed_at=1002.0),
            1003.0,
            1007.0,
            "MPPS COMPLETED: grace period of 5 s after the last instance",
        ),
        (
            _study(mpps_completed_at=1002.0, mpps_instances_missing=4),
            1003.0,
            1060.0,
            "quiet period of 60 s after the last instance (MPPS lists 4 instance(s) not received)",
        ),
        (  # an MPPS older than version 2 does not describe it: the quiet period decides
            _study(version=2, created_at=1001.0, mpps_completed_at=999.0),
            1003.0,
            1060.0,
            "quiet period of 60 s after the last instance",
        ),
        (
            _study(mpps_completed_at=1002.0, mpps_instances_missing=0),
            1003.0,
            1003.0,
            "complete: MPPS COMPLETED and every listed instance received",
        ),
        (
            _study(held_since=1070.0),
            1080.0,
            1370.0,
            "held 300 s for incomplete coverage",
        ),
        (  # an instance arrived since the hold began: the quiet period first, then a new hold
            _study(held_since=1070.0, last_instance_at=1075.0),
            1080.0,
            1135.0,
            "quiet period of 60 s after the last instance",
        ),
    ],
)
def test_ready_estimate_names_the_rule(
    settings: Settings, study: ReceivingStudy, now: float, at: float, rule: str
) -> None:
    estimate = ready_estimate(study, settings, now)
    assert (estimate.at, estimate.rule) == (at, rule)


def test_status_says_when_a_receiving_job_becomes_ready(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = SqliteJobStore(data_dir / "jobs.sqlite")
    received = time.time()
    try:
        store.record_instance(_instance(data_dir, 0, received))
        job_id = store.receiving_studies()[0].job_id
    finally:
        store.close()

    job = _status(data_dir, capsys)[job_id]
    assert job["state"] == "receiving"
    assert job["ready_estimate"] == {
        "at": pytest.approx(received + 60.0, abs=0.01),
        "rule": "quiet period of 60 s after the last instance",
    }

    main(["status", "--data-dir", str(data_dir)])
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.strip().startswith("ready "))
    assert line.strip().startswith("ready in ")
    assert line.endswith("): quiet period of 60 s after the last instance")
