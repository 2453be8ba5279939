"""Writer context: deterministic UIDs, copied headers, grid geometry, bad source references."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_node.errors import DicomNodeError
from dicom_node.writers import (
    ExamGrid,
    SourceReferenceError,
    UidFactory,
    WriterContext,
    WriterError,
    WriterIdentity,
)
from tests.helpers.writer_fixtures import SyntheticExam

IDENTITY = WriterIdentity(software_version="1.2.3", device_serial_number="SN-TEST")


def test_uids_are_deterministic_and_depend_on_input_version_and_settings(
    synthetic: SyntheticExam,
) -> None:
    exam = synthetic.exam
    first = UidFactory.for_exam(exam, "1.2.3", "digest-a")
    again = UidFactory.for_exam(exam, "1.2.3", "digest-a")
    assert first.uid("adc", "instance", 3) == again.uid("adc", "instance", 3)
    assert first.uid("adc", "instance", 3) != first.uid("adc", "instance", 4)
    assert first.uid("sr") != UidFactory.for_exam(exam, "1.2.4", "digest-a").uid("sr")
    assert first.uid("sr") != UidFactory.for_exam(exam, "1.2.3", "digest-b").uid("sr")
    fewer = dataclasses.replace(exam, sources=exam.sources[1:])
    assert first.uid("sr") != UidFactory.for_exam(fewer, "1.2.3", "digest-a").uid("sr")
    assert UidFactory.for_exam(exam, "1.2.3", "digest-a", "cpu") == first  # CPU UIDs unchanged
    assert first.uid("sr") != UidFactory.for_exam(exam, "1.2.3", "digest-a", "gpu").uid("sr")
    uid = first.uid("seg", "instance")
    assert uid.startswith("2.25.")
    assert len(uid) <= 64
    assert pydicom.uid.UID(uid).is_valid


def test_grid_positions_match_the_source_headers(synthetic: SyntheticExam) -> None:
    grid = ExamGrid.from_exam(synthetic.exam)
    assert grid.shape == synthetic.exam.shape[1:]
    for ref in synthetic.exam.sources[::7]:
        header = pydicom.dcmread(ref.path, stop_before_pixels=True)
        np.testing.assert_allclose(
            grid.positions[ref.slice_index], [float(v) for v in header.ImagePositionPatient]
        )
        np.testing.assert_allclose(
            grid.orientation, [float(v) for v in header.ImageOrientationPatient], atol=1e-9
        )
        np.testing.assert_allclose(grid.pixel_spacing, [float(v) for v in header.PixelSpacing])


def test_context_copies_patient_and_study_and_numbers_series_above_the_input(
    synthetic: SyntheticExam,
) -> None:
    ctx = WriterContext.create(
        synthetic.exam, IDENTITY, "digest", computed_b_values=[1000.0, 1500.0]
    )
    header = pydicom.dcmread(synthetic.exam.sources[0].path, stop_before_pixels=True)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber"):
        assert ctx.patient_study[keyword].value == header[keyword].value
    assert ctx.patient_study.StudyInstanceUID == synthetic.exam.study_instance_uid
    assert ctx.body_part_examined == "WHOLEBODY"
    assert ctx.mr_acquisition.ScanningSequence == "EP"
    numbers = [
        ctx.series_number(kind)
        for kind in ("adc-pm", "adc", "computed-b1000", "computed-b1500", "seg", "sr")
    ]
    assert numbers == sorted(numbers)
    assert len(set(numbers)) == len(numbers)
    assert min(numbers) > max(int(header.SeriesNumber), 4)
    assert numbers[0] == 1000  # the next thousand above the DWI series 3 and 4
    with pytest.raises(WriterError, match="no series number"):
        ctx.series_number("computed-b2000")


def test_contributing_equipment_names_scanner_and_node(synthetic: SyntheticExam) -> None:
    ctx = WriterContext.create(synthetic.exam, IDENTITY, "digest")
    scanner, node = ctx.contributing_equipment("test")
    assert scanner.Manufacturer == "SIMULATED"
    assert scanner.PurposeOfReferenceCodeSequence[0].CodeValue == "109101"
    assert node.Manufacturer == IDENTITY.manufacturer
    assert node.SoftwareVersions == "1.2.3"
    assert node.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"


def test_source_evidence_lists_every_instance_once(synthetic: SyntheticExam) -> None:
    ctx = WriterContext.create(synthetic.exam, IDENTITY, "digest")
    evidence = ctx.source_evidence()
    referenced = [item.SOPInstanceUID for item in evidence]
    assert sorted(referenced) == sorted({ref.sop_instance_uid for ref in synthetic.exam.sources})
    assert {item.SeriesInstanceUID for item in evidence} == set(synthetic.exam.series_used)


def test_result_series_are_dated_with_the_processing_time(synthetic: SyntheticExam) -> None:
    when = datetime(2031, 4, 5, 6, 7, 8)
    ctx = WriterContext.create(
        synthetic.exam, IDENTITY, "digest", computed_b_values=[1000.0], content_datetime=when
    )
    dataset = pydicom.Dataset()
    ctx.stamp_series(dataset)
    assert (dataset.SeriesDate, dataset.SeriesTime) == ("20310405", "060708")
    assert (dataset.ContentDate, dataset.ContentTime) == ("20310405", "060708")
    numbers = [ctx.series_number(kind) for kind in ("seg", "seg-lesions", "sr", "key-images")]
    assert numbers == sorted(numbers) and len(set(numbers)) == 4


def test_exam_without_sources_is_refused(synthetic: SyntheticExam) -> None:
    exam = dataclasses.replace(synthetic.exam, sources=())
    with pytest.raises(SourceReferenceError, match="no source references") as caught:
        WriterContext.create(exam, IDENTITY, "digest")
    assert isinstance(caught.value, DicomNodeError)


def test_slice_without_sources_is_refused(synthetic: SyntheticExam) -> None:
    kept = tuple(ref for ref in synthetic.exam.sources if ref.slice_index != 5)
    exam = dataclasses.replace(synthetic.exam, sources=kept)
    with pytest.raises(SourceReferenceError, match=r"slices \[5\] have no source"):
        WriterContext.create(exam, IDENTITY, "digest")


def test_unreadable_or_foreign_source_is_refused(synthetic: SyntheticExam, tmp_path: Path) -> None:
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not dicom at all")
    first = dataclasses.replace(synthetic.exam.sources[0], path=str(broken))
    exam = dataclasses.replace(synthetic.exam, sources=(first, *synthetic.exam.sources[1:]))
    with pytest.raises(SourceReferenceError, match="cannot read source header"):
        WriterContext.create(exam, IDENTITY, "digest")
    foreign = dataclasses.replace(synthetic.exam, study_instance_uid="1.2.3.4")
    with pytest.raises(SourceReferenceError, match="not the exam's study"):
        WriterContext.create(foreign, IDENTITY, "digest")


def test_identity_needs_version_and_serial() -> None:
    with pytest.raises(ValueError, match="software_version"):
        WriterIdentity(software_version=" ", device_serial_number="x")
    with pytest.raises(ValueError, match="device_serial_number"):
        WriterIdentity(software_version="1", device_serial_number="")
