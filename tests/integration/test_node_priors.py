"""The node compares a follow-up exam with the patient's baseline, from its history or from PACS.

Node A (delivering to Orthanc) receives a phantom patient's baseline exam, then
the ``response`` follow-up (lesion ADC +45 %, volume -30 %): the second job's
``measurements.json`` holds the comparison with the baseline (suggested RAC 1
overall) and Orthanc holds the SR with it. Then a rebuilt node B (a fresh data
folder, ``[priors] pacs`` = Orthanc) receives the follow-up alone: it fetches
node A's baseline report from Orthanc (C-FIND + C-GET) and comes to the same
comparison. A node whose priors peer does not answer waits for it, then
delivers without comparison and says why.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from service.cli import main
from tests.conftest import free_port
from tests.helpers.node_harness import (
    NodeProcess,
    orthanc_study_instances,
    storescu,
    wait_for,
    write_phantom_exam,
)
from tests.helpers.orthanc import running_orthanc
from tests.helpers.writer_fixtures import report_notes
from tests.unit.test_report_reader import _assert_close

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PATIENT = "NODE-PRIORS-1"
NODE_B_AET = "WBDWI-B"
SR_STORAGE_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


def _phantom_exam(folder: Path, scenario: str, seed: int, study_date: str) -> tuple[Path, str]:
    """Write one time point of the phantom patient; returns its DICOM folder and study UID."""
    status = main(
        [
            "phantom", "--out", str(folder), "--preset", "reference",
            "--scenario", scenario, "--patient-id", PATIENT, "--seed", str(seed),
            "--study-date", study_date, "--no-distractors",
        ]
    )  # fmt: skip
    assert status == 0, scenario
    dicom = folder / "dicom"
    first = next(dicom.rglob("*.dcm"))
    return dicom, str(pydicom.dcmread(first, stop_before_pixels=True).StudyInstanceUID)


def _send_and_wait(node: NodeProcess, folder: Path, jobs: int) -> None:
    sent = storescu(folder, node.port)
    assert sent.returncode == 0, sent.stderr
    wait_for(
        lambda: len(node.job_states()) == jobs and node.all_jobs_in("done", "failed"),
        240,
        f"{jobs} job(s) to finish (log: {node.log_path})",
        poll=0.5,
    )
    failed = [job for job in node.job_states() if job[1] != "done"]
    assert not failed, failed


def _job_files(node: NodeProcess, study_uid: str) -> tuple[dict[str, Any], dict[str, Any]]:
    folder = node.data_dir / "results" / study_uid / "v1"
    job = json.loads((folder / "job.json").read_text())
    measurements = json.loads((folder / "measurements.json").read_text())
    return job, measurements


def _content_items(dataset: Dataset) -> Iterator[Dataset]:
    for item in dataset.get("ContentSequence", []):
        yield item
        yield from _content_items(item)


def _code_value(item: Dataset, keyword: str) -> str:
    sequence = item.get(keyword)
    return str(sequence[0].CodeValue) if sequence else ""


def test_follow_up_is_compared_from_local_history_and_from_pacs(tmp_path: Path) -> None:
    baseline_dir, baseline_uid = _phantom_exam(tmp_path / "baseline", "baseline", 11, "20240105")
    response_dir, response_uid = _phantom_exam(tmp_path / "response", "response", 12, "20241005")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    with running_orthanc(tmp_path) as orthanc:
        destination = f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"
        with NodeProcess(tmp_path / "a", destinations=[destination]) as node_a:
            _send_and_wait(node_a, baseline_dir, jobs=1)
            first_job, first = _job_files(node_a, baseline_uid)
            assert first["comparison"] is None
            assert first_job["priors"]["priors"] == []
            _send_and_wait(node_a, response_dir, jobs=2)
        job, measurements = _job_files(node_a, response_uid)
        comparison = measurements["comparison"]
        assert comparison["rac_overall"] == 1, comparison
        assert comparison["prior_study_uid"] == comparison["baseline_study_uid"] == baseline_uid
        assert comparison["tdv_change_pct"] < 0
        assert job["priors"]["yellow_lower_um2s"] == pytest.approx(
            first["exam_summary"]["adc"]["p95"]
        )
        assert measurements["warnings"] == []
        sr_uid = measurements["exam_summary"]["sr_sop_instance_uid"]

        held = orthanc_study_instances(orthanc, response_uid)
        srs = [tags for tags in held if tags["SOPClassUID"].startswith(SR_STORAGE_PREFIX)]
        assert [tags["SOPInstanceUID"] for tags in srs] == [sr_uid]
        found = json.loads(orthanc.rest_bytes("/tools/lookup", method="POST", body=sr_uid.encode()))
        sr_file = orthanc.rest_bytes(f"/instances/{found[0]['ID']}/file")
        sr_path = tmp_path / "sr.dcm"
        sr_path.write_bytes(sr_file)
        report = pydicom.dcmread(sr_path)
        items = list(_content_items(report))
        referenced = {str(item.UID) for item in items if item.ValueType == "UIDREF"}
        assert baseline_uid in referenced
        categories = {
            _code_value(item, "ConceptCodeSequence")
            for item in items
            if item.ValueType == "CODE" and _code_value(item, "ConceptNameCodeSequence") == "RAC"
        }
        assert "RAC1" in categories, categories

        # A rebuilt node: empty history, the priors peer is Orthanc.
        orthanc.rest(
            f"/modalities/{NODE_B_AET.lower()}",
            method="PUT",
            body={"AET": NODE_B_AET, "Host": "127.0.0.1", "Port": 11112},
        )
        rebuilt_env = {"WBDWI_PRIORS_PACS": destination, "WBDWI_PRIORS_CALLING_AET": NODE_B_AET}
        with NodeProcess(tmp_path / "b", env=rebuilt_env) as node_b:
            _send_and_wait(node_b, response_dir, jobs=1)
            assert '"event": "priors_fetched_from_pacs"' in node_b.log()
        rebuilt_job, rebuilt = _job_files(node_b, response_uid)
    assert rebuilt_job["priors"]["fetched_from_pacs"] == 1
    assert rebuilt_job["priors"]["pacs_asked"] == destination
    assert rebuilt["warnings"] == []
    _assert_close(rebuilt["comparison"], comparison)
    # Same input, same priors: the same SR and SEG UIDs, so PACS stores them once.
    assert rebuilt["exam_summary"]["sr_sop_instance_uid"] == sr_uid
    assert (
        rebuilt["exam_summary"]["seg_sop_instance_uid"]
        == measurements["exam_summary"]["seg_sop_instance_uid"]
    )


def test_unreachable_priors_peer_delays_then_warns(tmp_path: Path) -> None:
    files = write_phantom_exam(tmp_path / "exam", patient_id="NODE-PRIORS-2")
    peer = f"PACS@127.0.0.1:{free_port()}"  # nothing listens there
    env = {
        "WBDWI_PRIORS_PACS": peer,
        "WBDWI_PRIORS_TIMEOUT_SECONDS": "2",
        "WBDWI_PRIORS_RETRY_SECONDS": "1",
        "WBDWI_PRIORS_MAX_WAIT_SECONDS": "3",
    }
    with NodeProcess(tmp_path, env=env) as node:
        sent = storescu(files, node.port)
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: node.all_jobs_in("done", "failed"), 120, "the job to finish", poll=0.5)
        assert node.job_states()[0][1] == "done", node.job_states()
        log = node.log()
    assert '"event": "job_waiting_for_priors"' in log
    assert '"event": "priors_wait_over"' in log
    [measurements_path] = list((node.data_dir / "results").glob("*/v1/measurements.json"))
    measurements = json.loads(measurements_path.read_text())
    [warning] = measurements["warnings"]
    assert f"priors peer {peer} could not be asked" in warning
    assert "local history only" in warning
    assert measurements["comparison"] is None
    # The radiologist reading the SR sees it too.
    [report_path] = list(measurements_path.parent.glob("sr/*.dcm"))
    assert report_notes(pydicom.dcmread(report_path)) == [warning]
