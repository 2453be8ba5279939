"""History rebuilt from PACS (a real Orthanc) gives the same comparison as the local one (issue 6).

The node's reports of two exams of one patient are stored in Orthanc, next to
an SR of another manufacturer and the SEG; :func:`fetch_prior_summaries` finds
the node's reports by C-FIND, fetches them by C-GET and reads them back.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid

from dicom_node.priors import fetch_prior_summaries, find_patient_studies
from dicom_node.send import Destination, send_files
from dicom_node.write_results import build_result_objects
from processing.comparison import compare_exams, comparison_to_dict
from processing.exam_summary import ExamSummary, summarize_exam
from tests.orthanc import running_orthanc
from tests.unit.test_report_reader import _assert_close
from tests.writer_fixtures import make_result, write_synthetic_exam

pytestmark = pytest.mark.integration

CALLING_AET = "WBDWI-TEST"


def _exam_files(folder: Path, study_date: str) -> tuple[list[Path], ExamSummary]:
    synthetic = write_synthetic_exam(folder / "input")
    result = make_result(synthetic)
    objects = build_result_objects(synthetic.exam, result)
    sr = objects.by_folder["sr"][0]
    seg = objects.by_folder["seg"][0]
    files = []
    for dataset in (sr, seg):
        dataset.StudyDate = study_date  # the fixture's exams all share one date
        path = folder / f"{dataset.SOPInstanceUID}.dcm"
        dataset.save_as(path, enforce_file_format=True)
        files.append(path)
    foreign = pydicom.dcmread(files[0])
    foreign.Manufacturer = "ACME"
    foreign.SeriesInstanceUID = generate_uid()
    foreign.SOPInstanceUID = foreign.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    foreign_path = folder / "foreign.dcm"
    foreign.save_as(foreign_path, enforce_file_format=True)
    files.append(foreign_path)
    local = summarize_exam(
        synthetic.exam,
        result.stats,
        study_date=study_date,
        study_time=str(sr.StudyTime),
        sr_sop_instance_uid=str(sr.SOPInstanceUID),
        seg_sop_instance_uid=str(seg.SOPInstanceUID),
    )
    return files, local


def test_priors_from_orthanc_give_the_local_comparison(tmp_path: Path) -> None:
    first_files, first = _exam_files(tmp_path / "first", "20240102")
    second_files, second = _exam_files(tmp_path / "second", "20240402")
    with running_orthanc(tmp_path) as pacs:
        pacs.rest(
            f"/modalities/{CALLING_AET.lower()}",
            method="PUT",
            body={"AET": CALLING_AET, "Host": "127.0.0.1", "Port": 11112},
        )
        peer = Destination("127.0.0.1", pacs.dicom_port, pacs.aet, CALLING_AET, timeout_s=20.0)
        report = send_files([*first_files, *second_files], peer)
        assert report.ok, report.summary()

        studies = find_patient_studies(peer, "WRITER-TEST-1", "TESTHOSP")
        assert [s.study_instance_uid for s in studies] == [
            first.study_instance_uid,
            second.study_instance_uid,
        ]
        assert find_patient_studies(peer, "SOMEONE-ELSE") == []

        fetched = fetch_prior_summaries(peer, "WRITER-TEST-1", "TESTHOSP")
        assert fetched.skipped == ()
        by_uid = {s.study_instance_uid: s for s in fetched.summaries}
        assert set(by_uid) == {first.study_instance_uid, second.study_instance_uid}
        assert by_uid[first.study_instance_uid].sr_sop_instance_uid == first.sr_sop_instance_uid

        without_current = fetch_prior_summaries(
            peer, "WRITER-TEST-1", "TESTHOSP", exclude_study_uid=second.study_instance_uid
        )
        assert [s.study_instance_uid for s in without_current.summaries] == [
            first.study_instance_uid
        ]

    local = comparison_to_dict(compare_exams(second, [first]))
    from_pacs = comparison_to_dict(
        compare_exams(by_uid[second.study_instance_uid], [by_uid[first.study_instance_uid]])
    )
    _assert_close(from_pacs, local)
    assert local["rac_overall"] == 3
