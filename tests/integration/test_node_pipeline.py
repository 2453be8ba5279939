"""The node end to end: dcmtk storescu -> node -> processing -> Orthanc, over loopback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dicom_node.scu.mpps import complete_mpps, create_mpps, performed_exam
from dicom_node.scu.send import Destination
from tests.helpers.node_harness import (
    NodeProcess,
    orthanc_study_instances,
    storescu,
    wait_for,
    write_phantom_exam,
)
from tests.helpers.orthanc import running_orthanc

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARAMETRIC_MAP = "1.2.840.10008.5.1.4.1.1.30"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"


def _job_summary(node: NodeProcess) -> dict[str, object]:
    [summary] = list((node.data_dir / "results").glob("*/v1/job.json"))
    loaded: dict[str, object] = json.loads(summary.read_text())
    return loaded


def test_exam_reaches_orthanc_as_results_in_the_input_study(tmp_path: Path) -> None:
    files = write_phantom_exam(tmp_path / "exam", distractors=True)
    exam = performed_exam(files)
    with running_orthanc(tmp_path) as orthanc:
        destination = f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"
        # A long quiet period: only the MPPS can make this exam complete in time.
        with NodeProcess(tmp_path, destinations=[destination], quiet_seconds=600) as node:
            scanner = Destination("127.0.0.1", node.port, "WBDWI", calling_aet="SCANNER")
            mpps_uid = create_mpps(scanner, exam)
            sent = storescu(tmp_path / "exam", node.port)
            assert sent.returncode == 0, sent.stderr
            complete_mpps(scanner, mpps_uid, exam)
            wait_for(lambda: node.all_jobs_in("done", "failed"), 120, "the job to finish")
            assert node.job_states()[0][1] == "done", node.job_states()
            summary = _job_summary(node)
            result_count = len(summary["result_files"])  # type: ignore[arg-type]
            assert "MPPS COMPLETED and every listed instance received" in node.log()
            assert '"event": "processing_device"' in node.log()
            metrics = node.metrics()
            assert f"wbdwi_instances_received_total {len(files)}" in metrics
            assert 'wbdwi_jobs{state="done"} 1' in metrics
            status = subprocess.run(
                [sys.executable, "-m", "service.cli", "status", "--data-dir", str(node.data_dir)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            assert status.returncode == 0, status.stdout + status.stderr
            assert "done 1" in status.stdout
            assert status.stdout.startswith(f"node: running (PID {node.process.pid})"), (
                status.stdout
            )
        held = orthanc_study_instances(orthanc, exam.study_uid)
    input_uids = {uid for series in exam.series for _, uid in series.instances}
    results = [tags for tags in held if tags["SOPInstanceUID"] not in input_uids]
    assert len(results) == len(held) == result_count  # every result, exactly once
    classes = {tags["SOPClassUID"] for tags in results}
    assert PARAMETRIC_MAP in classes
    assert SEGMENTATION in classes
    assert any(uid.startswith("1.2.840.10008.5.1.4.1.1.88.") for uid in classes), classes
    assert any(uid.startswith("1.2.840.10008.5.1.4.1.1.7") for uid in classes), classes
    derived = [t for t in results if t["SOPClassUID"] == MR_IMAGE]
    assert derived and all("DERIVED" in t["ImageType"] for t in derived)
    assert {t["StudyInstanceUID"] for t in results} == {exam.study_uid}
    assert {t["PatientID"] for t in results} == {"PHANTOM-0001"}


def test_access_control_corrupt_instance_and_duplicates(tmp_path: Path) -> None:
    files = write_phantom_exam(tmp_path / "exam")
    corrupt = tmp_path / "corrupt" / "bad.dcm"
    corrupt.parent.mkdir()
    data = files[0].read_bytes()
    from pydicom import dcmread

    study_uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    broken_uid = ("1.2.bad." + "9" * 64)[: len(study_uid)]
    corrupt.write_bytes(data.replace(study_uid.encode(), broken_uid.encode()))
    extra = ["--calling-ae-allow", "SCANNER", "--calling-ae-allow", "SCANNER2"]
    with NodeProcess(tmp_path, quiet_seconds=600, extra_args=extra) as node:
        intruder = storescu(tmp_path / "exam", node.port, calling_aet="INTRUDER")
        assert intruder.returncode != 0
        assert "calling AE 'INTRUDER' is not in the allow-list" in node.log()
        wrong_called = storescu(tmp_path / "exam", node.port, called_aet="NOTWBDWI")
        assert wrong_called.returncode != 0
        assert node.query("SELECT COUNT(*) FROM instances") == [(0,)]

        first = storescu(files[:10], node.port)
        assert first.returncode == 0, first.stderr
        bad = storescu(corrupt, node.port, verbose=True)
        assert "Error: CannotUnderstand" in bad.stdout + bad.stderr, (
            bad.stdout + bad.stderr
        )  # 0xC211
        rest = storescu(tmp_path / "exam", node.port, calling_aet="SCANNER2")
        assert rest.returncode == 0, rest.stderr
        assert node.query("SELECT COUNT(*) FROM instances") == [(len(files),)]
        spooled = list((node.data_dir / "spool").rglob("*.dcm"))
        assert len(spooled) == len(files)  # the first ten were sent twice, stored once
        assert "instance_refused" in node.log()
        metrics = node.metrics()
        assert "wbdwi_associations_rejected_total 2" in metrics
        assert "wbdwi_connections_refused_total 0" in metrics
        assert "wbdwi_instances_duplicate_total 10" in metrics
        assert "wbdwi_instances_failed_total 1" in metrics
        echo = subprocess.run(
            [sys.executable, "-m", "service.cli", "echo", f"WBDWI@127.0.0.1:{node.port}",
             "--calling-aet", "SCANNER"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert echo.returncode == 0 and "echo ok" in echo.stdout, echo.stdout + echo.stderr
        assert node.stop() == 0
    assert '"event": "node_stopped"' in node.log()
