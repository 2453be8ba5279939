"""The node's Measurement Report read back into an ExamSummary (issue 6, priors from PACS)."""

from __future__ import annotations

import math
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from dicom_node import writers
from dicom_node.errors import ReportReadError
from dicom_node.package_version import installed_version
from dicom_node.readers.report_codes import LOCAL_CODING_SCHEME
from dicom_node.readers.report_reader import is_node_report, read_measurement_report
from dicom_node.writers.write_results import build_result_objects
from processing.comparison import compare_exams, comparison_to_dict
from processing.exam_summary import ExamSummary, summarize_exam
from processing.results import ProcessingResult
from tests.helpers.writer_fixtures import make_result, write_synthetic_exam


def _report(tmp_path: Path, *, empty: bool = False) -> tuple[Dataset, ExamSummary]:
    synthetic = write_synthetic_exam(tmp_path / "exam")
    result: ProcessingResult = make_result(synthetic, empty=empty)
    objects = build_result_objects(synthetic.exam, result)
    sr = objects.by_folder["sr"][0]
    seg_uid = "" if empty else str(objects.by_folder["seg"][0].SOPInstanceUID)
    path = tmp_path / "sr.dcm"
    sr.save_as(path, enforce_file_format=True)
    local = summarize_exam(
        synthetic.exam,
        result.stats,
        study_date=str(sr.StudyDate),
        study_time=str(sr.StudyTime),
        sr_sop_instance_uid=str(sr.SOPInstanceUID),
        seg_sop_instance_uid=seg_uid,
        software_version=installed_version(),
    )
    return pydicom.dcmread(path), local


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExamSummary]:
    """One report on disk (built once: the writers take a second) and the local summary."""
    folder = tmp_path_factory.mktemp("report")
    _dataset, local = _report(folder)
    return folder / "sr.dcm", local


def test_coding_scheme_is_the_writers() -> None:
    assert LOCAL_CODING_SCHEME == writers.sr.LOCAL_CODING_SCHEME


def test_report_reads_back_to_the_local_summary(written: tuple[Path, ExamSummary]) -> None:
    path, local = written
    dataset = pydicom.dcmread(path)
    assert is_node_report(dataset)
    summary = read_measurement_report(dataset)
    assert summary.study_instance_uid == local.study_instance_uid
    assert (summary.patient_id, summary.issuer_of_patient_id) == (
        local.patient_id,
        local.issuer_of_patient_id,
    )
    assert (summary.study_date, summary.study_time) == (local.study_date, local.study_time)
    assert summary.sr_sop_instance_uid == local.sr_sop_instance_uid
    assert summary.software_version == local.software_version
    assert summary.seg_sop_instance_uid == local.seg_sop_instance_uid
    assert summary.tdv_ml == pytest.approx(local.tdv_ml)
    assert summary.adc is not None and local.adc is not None
    for field in local.adc.__dataclass_fields__:
        assert getattr(summary.adc, field) == pytest.approx(getattr(local.adc, field)), field
    assert len(summary.lesions) == len(local.lesions) == 3
    for mine, theirs in zip(summary.lesions, local.lesions, strict=True):
        assert mine.label == theirs.label
        assert mine.region is theirs.region
        assert mine.volume_ml == pytest.approx(theirs.volume_ml)
        assert mine.adc_mean == pytest.approx(theirs.adc_mean)
        assert mine.adc_median == pytest.approx(theirs.adc_median)
        assert mine.centroid_mm == pytest.approx(theirs.centroid_mm)
        assert mine.mean_high_b == pytest.approx(theirs.mean_high_b)
    assert summary.histogram is None and summary.classes is None


def test_comparison_from_the_report_equals_the_local_one(
    written: tuple[Path, ExamSummary],
) -> None:
    path, local = written
    from_pacs = read_measurement_report(pydicom.dcmread(path))
    later = ExamSummary.from_dict(
        {
            **local.to_dict(),
            "study_instance_uid": local.study_instance_uid + ".7",
            "study_date": "20991231",
            "lesions": [
                {**item, "volume_ml": item["volume_ml"] * 1.8}
                for item in local.to_dict()["lesions"]
            ],
        }
    )
    expected = comparison_to_dict(compare_exams(later, [local]))
    got = comparison_to_dict(compare_exams(later, [from_pacs]))
    _assert_close(got, expected)
    assert got["rac_overall"] == 5


def _assert_close(got: object, expected: object, path: str = "") -> None:
    if isinstance(expected, dict):
        assert isinstance(got, dict) and got.keys() == expected.keys(), path
        for key in expected:
            _assert_close(got[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(got, list) and len(got) == len(expected), path
        for index, (a, b) in enumerate(zip(got, expected, strict=True)):
            _assert_close(a, b, f"{path}[{index}]")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-9, abs=1e-9), path
    else:
        assert got == expected, path


def test_report_without_disease_reads_as_empty(tmp_path: Path) -> None:
    dataset, _ = _report(tmp_path, empty=True)
    summary = read_measurement_report(dataset)
    assert summary.tdv_ml == 0.0
    assert summary.adc is None
    assert summary.lesions == ()


def test_lesion_without_position_reads_with_nan_centroid(
    written: tuple[Path, ExamSummary],
) -> None:
    sr = pydicom.dcmread(written[0])
    (container,) = [  # Imaging Measurements (the Image Library is the other container)
        item
        for item in sr.ContentSequence
        if item.ValueType == "CONTAINER" and item.ConceptNameCodeSequence[0].CodeValue == "126010"
    ]
    for group in container.ContentSequence:
        group.ContentSequence = [
            item
            for item in group.ContentSequence
            if not (
                item.ValueType == "NUM"
                and item.ConceptNameCodeSequence[0].CodingSchemeDesignator == LOCAL_CODING_SCHEME
                and item.ConceptNameCodeSequence[0].CodeValue.startswith(("CENTROID", "HIGHB"))
            )
        ]
    summary = read_measurement_report(sr)
    assert all(math.isnan(c) for lesion in summary.lesions for c in lesion.centroid_mm)
    with pytest.raises(ValueError, match="centroid"):
        compare_exams(
            ExamSummary.from_dict(
                {**summary.to_dict(), "study_date": "20991231", "study_instance_uid": "9.9.9"}
            ),
            [summary],
        )


def test_not_a_report_is_refused_with_the_reason(written: tuple[Path, ExamSummary]) -> None:
    dataset = pydicom.dcmread(written[0])
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    assert not is_node_report(dataset)
    with pytest.raises(ReportReadError, match="not an SR class"):
        read_measurement_report(dataset)
    other = pydicom.dcmread(written[0])
    other.Manufacturer = "ACME"
    assert not is_node_report(other)
    other.StudyDate = ""
    with pytest.raises(ReportReadError, match="study_date"):
        read_measurement_report(other)
