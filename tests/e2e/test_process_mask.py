"""``wbdwi process --mask SEG``: a reader's corrected SEG measured offline (issue 11)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray

from dicom_node.readers.seg_reader import read_corrected_mask
from dicom_node.simulator.scanner import write_exam
from dicom_node.writers.write_results import READER_CORRECTED
from processing.phantom import make_phantom
from processing.settings import ProcessingSettings
from service.cli import main
from service.commands.process import OfflineOptions, OfflineRun, run_offline
from tests.helpers.correction_fixtures import (
    edit_tumour_mask,
    slice_ordered_images,
    write_reader_seg,
)
from tests.helpers.writer_fixtures import report_notes

SETTINGS = ProcessingSettings()


def corrected_seg(automatic: OfflineRun, out: Path, path: Path) -> tuple[str, NDArray[np.bool_]]:
    """A reader's SEG of the automatic run (largest lesion removed, a block added).

    Returns its UID and its mask.
    """
    exam = automatic.assembled.exam
    [seg_file] = (out / "seg").glob("*.dcm")
    tumour = read_corrected_mask(seg_file, exam).mask
    np.testing.assert_array_equal(tumour, automatic.result.tumour_mask)
    mask, _ = edit_tumour_mask(tumour, automatic.result.body_mask)
    sources = slice_ordered_images(out / "b1000", exam)
    return write_reader_seg(sources, mask, path), mask


@pytest.fixture(scope="module")
def exam_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("exam")
    write_exam(make_phantom("small", seed=1), folder)
    return folder


def test_mask_offline_writes_a_corrected_report_replacing_the_automatic_one(
    exam_folder: Path, tmp_path: Path
) -> None:
    auto_out = tmp_path / "auto"
    automatic = run_offline(exam_folder, auto_out, SETTINGS, "cpu")
    seg_path = tmp_path / "reader-seg.dcm"
    seg_uid, mask = corrected_seg(automatic, auto_out, seg_path)
    expected_tdv = float(mask.sum()) * automatic.assembled.exam.voxel_volume_ml

    first = run_offline(
        exam_folder,
        tmp_path / "c1",
        SETTINGS,
        "cpu",
        OfflineOptions(mask=seg_path, replaces=auto_out),
    )
    np.testing.assert_array_equal(first.result.tumour_mask, mask)
    assert first.measurements["tdv_ml"] == pytest.approx(expected_tdv)
    assert first.measurements["tdv_ml"] < automatic.measurements["tdv_ml"]
    assert first.measurements["correction"]["seg_sop_instance_uid"] == seg_uid
    assert first.measurements["correction"]["reader"] == "Reader^Rita"
    folders = {p.parent.name for p in first.dicom_files}
    assert {"seg", "sr", "key_images"} <= folders <= {"seg", "seg_lesions", "sr", "key_images"}
    [sr_path] = [p for p in first.dicom_files if p.parent.name == "sr"]
    report = pydicom.dcmread(sr_path)
    [auto_sr] = (auto_out / "sr").glob("*.dcm")
    predecessor = report.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert predecessor.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == auto_sr.stem
    assert any(note.startswith(READER_CORRECTED) for note in report_notes(report))
    observers = [
        str(item.PersonName) for item in report.ContentSequence if item.ValueType == "PNAME"
    ]
    assert observers == ["Reader^Rita"]
    assert READER_CORRECTED in report.SeriesDescription
    automatic_uids = {p.stem for p in automatic.dicom_files}
    assert not automatic_uids & {p.stem for p in first.dicom_files}

    again = run_offline(
        exam_folder,
        tmp_path / "c2",
        SETTINGS,
        "cpu",
        OfflineOptions(mask=seg_path, replaces=auto_out),
    )
    assert sorted(p.stem for p in again.dicom_files) == sorted(p.stem for p in first.dicom_files)


def test_mask_of_another_exam_is_refused_by_the_cli(
    exam_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other_folder = tmp_path / "other"
    write_exam(make_phantom("small", seed=2, patient_id="OTHER-1"), other_folder)
    other_out = tmp_path / "other-out"
    other = run_offline(other_folder, other_out, SETTINGS, "cpu")
    sources = slice_ordered_images(other_out / "b1000", other.assembled.exam)
    seg_path = tmp_path / "other-seg.dcm"
    write_reader_seg(sources, other.result.tumour_mask, seg_path)
    status = main(
        ["process", str(exam_folder), "--out", str(tmp_path / "x"), "--device", "cpu",
         "--mask", str(seg_path)]
    )  # fmt: skip
    assert status == 2
    assert "SegmentationReferenceError" in capsys.readouterr().err
