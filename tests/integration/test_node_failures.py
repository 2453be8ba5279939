"""Failure paths: PACS down during export, bad input, two scanners at once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread

from dicom_node.scu.mpps import complete_mpps, create_mpps, performed_exam
from dicom_node.scu.send import Destination
from tests.conftest import free_port, require_tool
from tests.helpers.node_harness import (
    NodeProcess,
    orthanc_study_instances,
    storescu,
    wait_for,
    write_phantom_exam,
)
from tests.helpers.orthanc import running_orthanc

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST_RETRY = {
    "WBDWI_EXPORT_BACKOFF_INITIAL_SECONDS": "0.5",
    "WBDWI_EXPORT_BACKOFF_MAX_SECONDS": "2",
}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, check=False
    )


def test_pacs_down_during_export_then_started(tmp_path: Path) -> None:
    files = write_phantom_exam(tmp_path / "exam")
    exam = performed_exam(files)
    dicom_port, http_port = free_port(), free_port()
    destination = f"ORTHANC@127.0.0.1:{dicom_port}"
    with NodeProcess(tmp_path, destinations=[destination], env=FAST_RETRY) as node:
        scanner = Destination("127.0.0.1", node.port, "WBDWI", calling_aet="SCANNER")
        mpps_uid = create_mpps(scanner, exam)
        assert storescu(tmp_path / "exam", node.port).returncode == 0
        complete_mpps(scanner, mpps_uid, exam)
        wait_for(
            lambda: (
                node.query("SELECT MIN(attempts) FROM outbox") not in ([], [(None,)], [(0,)])
                and node.query("SELECT MIN(attempts) FROM outbox")[0][0] >= 2
            ),
            120,
            "two failed delivery rounds",
        )
        assert node.job_states()[0][1] == "exporting"
        assert "export_destination_unreachable" in node.log()
        metrics = node.metrics()
        assert "wbdwi_export_file_failures_total 0" not in metrics
        assert "wbdwi_export_rounds_failed_total 0" not in metrics
        with running_orthanc(tmp_path, dicom_port=dicom_port, http_port=http_port) as orthanc:
            wait_for(lambda: node.all_jobs_in("done", "failed"), 60, "delivery after PACS start")
            assert node.job_states()[0][1] == "done"
            [summary] = list((node.data_dir / "results").glob("*/v1/job.json"))
            expected = len([p for p in summary.parent.rglob("*.dcm")])
            assert len(orthanc_study_instances(orthanc, exam.study_uid)) == expected


def test_bad_input_fails_with_reason_and_keeps_data(tmp_path: Path) -> None:
    files = write_phantom_exam(tmp_path / "exam")
    single_b = [
        p for p in files if float(dcmread(p, stop_before_pixels=True).DiffusionBValue) == 50
    ]
    assert single_b
    with NodeProcess(tmp_path, quiet_seconds=1) as node:
        assert storescu(single_b, node.port).returncode == 0
        wait_for(lambda: node.all_jobs_in("failed", "done"), 60, "the job to end")
        [(job_id, state, _, reason)] = node.job_states()
        assert state == "failed"
        assert "SingleBValueError" in reason and "b-value" in reason, reason
        assert len(list((node.data_dir / "spool").rglob("*.dcm"))) == len(single_b)
        status = _cli("status", "--data-dir", str(node.data_dir))
        assert status.returncode == 1 and "SingleBValueError" in status.stdout
        retry = _cli("retry", str(job_id), "--data-dir", str(node.data_dir))
        assert retry.returncode == 0, retry.stderr
        wait_for(
            lambda: node.query("SELECT attempts, state FROM jobs")[0] == (2, "failed"),
            60,
            "the retried job to fail again",
        )
        assert _cli("retry", "999", "--data-dir", str(node.data_dir)).returncode == 2


def test_two_scanners_two_exams_at_once(tmp_path: Path) -> None:
    first = write_phantom_exam(tmp_path / "exam1", patient_id="PHANTOM-0001")
    second = write_phantom_exam(tmp_path / "exam2", patient_id="PHANTOM-0002", seed=3)
    exams = {1: performed_exam(first), 2: performed_exam(second)}
    assert exams[1].study_uid != exams[2].study_uid
    binary = require_tool("storescu", "install dcmtk (make tools)")
    with running_orthanc(tmp_path) as orthanc:
        destination = f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"
        with NodeProcess(tmp_path, destinations=[destination], quiet_seconds=2) as node:
            senders = [
                subprocess.Popen(
                    [binary, "-aet", f"SCANNER{k}", "-aec", "WBDWI", "+sd", "+r", "-nh",
                     "127.0.0.1", str(node.port), str(tmp_path / f"exam{k}")],
                    env={**os.environ, "TCP_NODELAY": "1"},
                )
                for k in (1, 2)
            ]  # fmt: skip
            assert [sender.wait(timeout=120) for sender in senders] == [0, 0]
            wait_for(
                lambda: len(node.job_states()) == 2 and node.all_jobs_in("done", "failed"),
                180,
                "both jobs to finish",
            )
            assert [state for _, state, _, _ in node.job_states()] == ["done", "done"]
            calling = dict(node.query("SELECT study_uid, calling_ae FROM jobs"))
            assert calling == {exams[1].study_uid: "SCANNER1", exams[2].study_uid: "SCANNER2"}
        for k, exam in exams.items():
            [summary] = list((node.data_dir / "results" / exam.study_uid).glob("v1/job.json"))
            assert f'"instances_used": {exam.instance_count}' in summary.read_text()
            held = orthanc_study_instances(orthanc, exam.study_uid)
            assert held
            assert {tags["PatientID"] for tags in held} == {f"PHANTOM-000{k}"}
            assert {tags["StudyInstanceUID"] for tags in held} == {exam.study_uid}
