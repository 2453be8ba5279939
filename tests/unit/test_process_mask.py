"""``wbdwi process --mask SEG``: a reader's corrected SEG measured offline (issue 11)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid
from scipy import ndimage

from dicom_node.scanner import write_exam
from dicom_node.seg_reader import read_corrected_mask
from dicom_node.write_results import READER_CORRECTED
from processing.phantom import make_phantom
from processing.settings import ProcessingSettings
from service.cli import main
from service.commands.process import OfflineRun, run_offline
from tests.writer_fixtures import report_notes

SETTINGS = ProcessingSettings()


def corrected_mask(
    automatic: OfflineRun, out: Path
) -> tuple[NDArray[np.bool_], float, tuple[int, int, int]]:
    """The automatic mask with its largest component removed and a 2x3x3 block added.

    Returns the mask, the tDV it should give, and the block's first voxel.
    """
    exam = automatic.assembled.exam
    [seg_file] = (out / "seg").glob("*.dcm")
    mask = read_corrected_mask(seg_file, exam).mask.copy()
    np.testing.assert_array_equal(mask, automatic.result.tumour_mask)
    structure = ndimage.generate_binary_structure(3, SETTINGS.lesion_connectivity)
    labels, count = ndimage.label(mask, structure=structure)
    assert count >= 2
    sizes = np.bincount(labels.ravel())[1:]
    mask[labels == int(np.argmax(sizes)) + 1] = False
    far = ~ndimage.binary_dilation(automatic.result.tumour_mask, iterations=4)
    body = automatic.result.body_mask & far
    z, y, x = (int(v) for v in np.argwhere(body)[len(np.argwhere(body)) // 2])
    block = np.zeros_like(mask)
    block[z : z + 2, y : y + 3, x : x + 3] = True
    mask |= block
    expected = float(mask.sum()) * exam.voxel_volume_ml
    return mask, expected, (z, y, x)


def reader_seg(sources: Sequence[pydicom.Dataset], mask: NDArray[np.bool_], path: Path) -> str:
    """Two segments, the added block first, written as a viewer would; returns its UID."""
    structure = ndimage.generate_binary_structure(3, SETTINGS.lesion_connectivity)
    labels, _ = ndimage.label(mask, structure=structure)
    small = labels == labels.max()
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.NeoplasmSecondary,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, label in ((1, "added by the reader"), (2, "kept"))
    ]
    seg = hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=np.stack([small, mask & ~small], axis=-1).astype(np.uint8),
        segmentation_type="BINARY",
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=400,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Reading Room",
        manufacturer_model_name="Viewer",
        software_versions="1",
        device_serial_number="1",
        content_creator_name="Reader^Rita",
    )
    seg.save_as(path)
    return str(seg.SOPInstanceUID)


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
    mask, expected_tdv, _ = corrected_mask(automatic, auto_out)
    sources = [pydicom.dcmread(p) for p in sorted((auto_out / "b1000").glob("*.dcm"))]
    seg_path = tmp_path / "reader-seg.dcm"
    seg_uid = reader_seg(sources, mask, seg_path)

    first = run_offline(
        exam_folder, tmp_path / "c1", SETTINGS, "cpu", mask=seg_path, replaces=auto_out
    )
    assert first.measurements["tdv_ml"] == pytest.approx(expected_tdv)
    assert first.measurements["tdv_ml"] < automatic.measurements["tdv_ml"]
    assert first.measurements["correction"]["seg_sop_instance_uid"] == seg_uid
    assert first.measurements["correction"]["reader"] == "Reader^Rita"
    assert {p.parent.name for p in first.dicom_files} == {"seg", "sr", "key_images"}
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
        exam_folder, tmp_path / "c2", SETTINGS, "cpu", mask=seg_path, replaces=auto_out
    )
    assert sorted(p.stem for p in again.dicom_files) == sorted(p.stem for p in first.dicom_files)


def test_mask_of_another_exam_is_refused_by_the_cli(
    exam_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other_folder = tmp_path / "other"
    write_exam(make_phantom("small", seed=2, patient_id="OTHER-1"), other_folder)
    other_out = tmp_path / "other-out"
    other = run_offline(other_folder, other_out, SETTINGS, "cpu")
    sources = [pydicom.dcmread(p) for p in sorted((other_out / "b1000").glob("*.dcm"))]
    seg_path = tmp_path / "other-seg.dcm"
    reader_seg(sources, other.result.tumour_mask, seg_path)
    status = main(
        ["process", str(exam_folder), "--out", str(tmp_path / "x"), "--device", "cpu",
         "--mask", str(seg_path)]
    )  # fmt: skip
    assert status == 2
    assert "SegmentationReferenceError" in capsys.readouterr().err
