"""The reader's correction comes back (issue 11): storescu -> node -> Orthanc, twice.

A small phantom exam is sent to the node, which delivers its results to
Orthanc. A reader's SEG made with highdicom from the node's SEG (the largest
lesion removed, a region added, two segments in another order) is sent to the
node with storescu: the node delivers a new SR with the corrected tDV that
names the automatic SR as its predecessor and the reader as observer, and the
history holds the corrected numbers. A SEG of a study the node never processed
is kept, reported by ``wbdwi status`` and changes nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_node.assembly.assemble import assemble_exam
from dicom_node.readers.report_reader import read_measurement_report
from dicom_node.readers.seg_reader import read_corrected_mask
from service.history import HISTORY_FILE, HistoryStore, PatientKey
from tests.helpers.correction_fixtures import (
    edit_tumour_mask,
    slice_ordered_images,
    write_reader_seg,
)
from tests.helpers.node_harness import (
    NodeProcess,
    orthanc_study_instances,
    storescu,
    wait_for,
    write_phantom_exam,
)
from tests.helpers.orthanc import OrthancServer, running_orthanc
from tests.integration.test_writers_dciodvfy import _dciodvfy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
PATIENT = "PHANTOM-0001"


def _wait_jobs(node: NodeProcess, count: int) -> None:
    wait_for(
        lambda: len(node.job_states()) == count and node.all_jobs_in("done", "failed"),
        180,
        f"{count} job(s) to finish (log: {node.log_path})",
        poll=0.3,
    )
    failed = [job for job in node.job_states() if job[1] != "done"]
    assert not failed, failed


def _orthanc_file(orthanc: OrthancServer, sop_instance_uid: str, path: Path) -> pydicom.Dataset:
    found = orthanc.rest_bytes("/tools/lookup", method="POST", body=sop_instance_uid.encode())
    path.write_bytes(orthanc.rest_bytes(f"/instances/{json.loads(found)[0]['ID']}/file"))
    return pydicom.dcmread(path)


# One end-to-end scenario against a running node and Orthanc: each step reads the state the
# previous one left (a split would repeat the two-minute exam per step).
def test_corrected_seg_recomputes_the_report_and_an_unrelated_one_changes_nothing(  # noqa: PLR0915
    tmp_path: Path,
) -> None:
    files = write_phantom_exam(tmp_path / "exam", patient_id=PATIENT)
    exam = assemble_exam(files).exam
    study = exam.study_instance_uid
    with running_orthanc(tmp_path) as orthanc:
        destination = f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}"
        with NodeProcess(tmp_path, destinations=[destination]) as node:
            sent = storescu(tmp_path / "exam", node.port)
            assert sent.returncode == 0, sent.stderr
            _wait_jobs(node, 1)
            automatic_dir = node.data_dir / "results" / study / "v1"
            automatic = json.loads((automatic_dir / "measurements.json").read_text())
            automatic_sr = automatic["exam_summary"]["sr_sop_instance_uid"]
            automatic_held = {t["SOPInstanceUID"] for t in orthanc_study_instances(orthanc, study)}
            assert automatic_sr in automatic_held  # done: delivered

            # The reader edits the node's SEG (drawn on the computed-b series).
            [seg_file] = (automatic_dir / "seg").glob("*.dcm")
            tumour = read_corrected_mask(seg_file, exam).mask
            inside = exam.signal[0] > np.percentile(exam.signal[0], 60)
            edited, removed = edit_tumour_mask(tumour, inside)
            assert removed > 0
            expected_tdv = float(edited.sum()) * exam.voxel_volume_ml
            sources = slice_ordered_images(automatic_dir / "b1000", exam)
            seg_path = tmp_path / "reader" / "seg.dcm"
            seg_path.parent.mkdir()
            seg_uid = write_reader_seg(sources, edited, seg_path)
            sent = storescu(seg_path, node.port, calling_aet="PACS", required_only=True)
            assert sent.returncode == 0, sent.stderr
            _wait_jobs(node, 2)
            corrected_dir = node.data_dir / "results" / study / "v2"
            corrected = json.loads((corrected_dir / "measurements.json").read_text())
            assert corrected["correction"]["seg_sop_instance_uid"] == seg_uid
            assert corrected["tdv_ml"] == pytest.approx(expected_tdv)
            volumes = [lesion["volume_ml"] for lesion in corrected["lesions"]]
            assert len(volumes) == len(automatic["lesions"])  # one removed, one added
            assert max(volumes) < max(lesion["volume_ml"] for lesion in automatic["lesions"])
            corrected_sr = corrected["exam_summary"]["sr_sop_instance_uid"]
            assert corrected_sr != automatic_sr
            corrected_held = {t["SOPInstanceUID"] for t in orthanc_study_instances(orthanc, study)}
            assert corrected_sr in corrected_held
            assert automatic_held < corrected_held  # the automatic results stay
            written = json.loads((corrected_dir / "job.json").read_text())["result_files"]
            assert len(corrected_held - automatic_held) == len(written)
            folders = {Path(name).parent.name for name in written}
            assert {"seg", "sr", "key_images"} <= folders
            assert folders <= {"seg", "seg_lesions", "sr", "key_images"}
            for name in written:
                errors, _ = _dciodvfy(corrected_dir / name)
                assert errors == [], f"{name}: {errors}"

            # A SEG of a study the node never processed.
            other_files = write_phantom_exam(tmp_path / "other", patient_id="OTHER-1", seed=3)
            other = assemble_exam(other_files).exam
            source = pydicom.dcmread(other_files[0])
            blob = np.zeros((1, source.Rows, source.Columns), dtype=bool)
            blob[0, 10:14, 10:14] = True
            unrelated = tmp_path / "unrelated" / "seg.dcm"
            unrelated.parent.mkdir()
            unrelated_uid = write_reader_seg([source], blob, unrelated)
            before = len(orthanc_study_instances(orthanc, study))
            sent = storescu(unrelated, node.port, calling_aet="PACS", required_only=True)
            assert sent.returncode == 0, sent.stderr
            _wait_jobs(node, 3)
            [(_, state, _, reason)] = node.job_states()[2:]
            assert state == "done"
            assert "refers to no exam processed by this node" in reason
            assert unrelated_uid in reason
            assert node.query(
                "SELECT COUNT(*) FROM instances WHERE sop_instance_uid = ?", (unrelated_uid,)
            ) == [(1,)]  # kept in the spool
            assert '"event": "correction_ignored"' in node.log()
            status = subprocess.run(
                [sys.executable, "-m", "service.cli", "status", "--data-dir", str(node.data_dir)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            assert status.returncode == 0, status.stdout + status.stderr
            assert f"reader's correction: SEG {unrelated_uid}" in status.stdout
            assert "refers to no exam processed by this node" in status.stdout
            assert not (node.data_dir / "results" / other.study_instance_uid).exists()
        held = orthanc_study_instances(orthanc, study)
        assert len(held) == before
        assert orthanc_study_instances(orthanc, other.study_instance_uid) == []
        srs = sorted(t["SOPInstanceUID"] for t in held if t["SOPClassUID"].startswith(SR_PREFIX))
        assert srs == sorted([automatic_sr, corrected_sr])  # the automatic report stays
        report = _orthanc_file(orthanc, corrected_sr, tmp_path / "corrected-sr.dcm")

    summary = read_measurement_report(report)
    assert summary.tdv_ml == pytest.approx(expected_tdv, rel=1e-3)
    assert summary.tdv_ml < automatic["tdv_ml"]
    predecessor = report.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert predecessor.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == automatic_sr
    observers = [str(i.PersonName) for i in report.ContentSequence if i.ValueType == "PNAME"]
    assert observers == ["Reader^Rita"]
    patient = PatientKey(exam.patient_id, exam.issuer_of_patient_id)
    entry = HistoryStore(node.data_dir / HISTORY_FILE).get(patient, study)
    assert entry.summary.sr_sop_instance_uid == corrected_sr
    assert entry.summary.tdv_ml == pytest.approx(expected_tdv)
    # A later exam of the patient takes its yellow bound from the corrected baseline.
    baseline = HistoryStore(node.data_dir / HISTORY_FILE).baseline_for(
        patient, study_date="29991231", study_uid="2.25.1"
    )
    assert baseline is not None and baseline.summary.adc is not None
    assert baseline.summary.adc.p95 == pytest.approx(corrected["exam_summary"]["adc"]["p95"])
    assert baseline.summary.adc.p95 != pytest.approx(automatic["exam_summary"]["adc"]["p95"])
