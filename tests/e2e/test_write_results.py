"""write_results on the real phantom -> simulated scanner -> assembly path."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

import dicom_node.writers.write_results as write_results_module
from dicom_node.writers import ResultGeometryError, WriterError
from dicom_node.writers.write_results import (
    build_result_objects,
    earlier_version_reports,
    write_results,
)
from processing.exam import DwiExam
from processing.results import ProcessingResult
from tests.helpers.writer_fixtures import phantom_exam_and_result, report_notes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def phantom_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[DwiExam, ProcessingResult]:
    return phantom_exam_and_result(tmp_path_factory.mktemp("scanner"), "small")


@pytest.fixture(scope="module")
def written(
    phantom_case: tuple[DwiExam, ProcessingResult], tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    exam, result = phantom_case
    return write_results(exam, result, tmp_path_factory.mktemp("out"), version_label="1.0.0")


def test_every_object_is_written_once_per_instance(
    phantom_case: tuple[DwiExam, ProcessingResult], written: list[Path]
) -> None:
    exam, _ = phantom_case
    slices = exam.shape[1]
    by_folder: dict[str, list[Path]] = {}
    for path in written:
        by_folder.setdefault(path.parent.name, []).append(path)
    counts = {folder: len(paths) for folder, paths in by_folder.items()}
    assert counts == {
        "adc_map": 1,
        "adc": slices,
        "b1000": slices,
        "seg": 1,
        "seg_lesions": 1,
        "sr": 1,
        "key_images": 2,
    }
    series_numbers: dict[str, set[int]] = {}
    for path in written:
        header = pydicom.dcmread(path, stop_before_pixels=True)
        assert path.stem == header.SOPInstanceUID
        assert header.StudyInstanceUID == exam.study_instance_uid
        assert header.PatientID == exam.patient_id
        assert header.SoftwareVersions == "1.0.0"
        series_numbers.setdefault(path.parent.name, set()).add(int(header.SeriesNumber))
    assert all(len(numbers) == 1 for numbers in series_numbers.values())
    flat = [next(iter(numbers)) for numbers in series_numbers.values()]
    assert len(set(flat)) == len(flat)
    assert not list(written[0].parent.parent.rglob("*.part"))


def test_same_input_gives_the_same_uids(
    phantom_case: tuple[DwiExam, ProcessingResult], written: list[Path]
) -> None:
    exam, result = phantom_case
    again = build_result_objects(exam, result, version_label="1.0.0")
    uids = {ds.SOPInstanceUID for datasets in again.by_folder.values() for ds in datasets}
    assert uids == {path.stem for path in written}
    newer = build_result_objects(exam, result, version_label="1.0.1")
    newer_uids = {ds.SOPInstanceUID for datasets in newer.by_folder.values() for ds in datasets}
    assert not uids & newer_uids


def test_a_gpu_result_gets_other_uids_than_the_cpu_result(
    phantom_case: tuple[DwiExam, ProcessingResult], written: list[Path]
) -> None:
    # The GPU's maps differ from the CPU's in the last bits: other bytes, other UIDs.
    exam, result = phantom_case
    assert result.device.startswith("cpu (")
    on_gpu = dataclasses.replace(result, device="gpu (NVIDIA H200, cupy 14.2.0)")
    objects = build_result_objects(exam, on_gpu, version_label="1.0.0")
    uids = {ds.SOPInstanceUID for datasets in objects.by_folder.values() for ds in datasets}
    assert len(uids) == len(written)
    assert not uids & {path.stem for path in written}
    again = build_result_objects(exam, on_gpu, version_label="1.0.0")
    assert uids == {ds.SOPInstanceUID for datasets in again.by_folder.values() for ds in datasets}


def test_empty_mask_writes_a_report_and_no_segmentation(
    phantom_case: tuple[DwiExam, ProcessingResult], tmp_path: Path
) -> None:
    exam, result = phantom_case
    empty = dataclasses.replace(
        result,
        tumour_mask=np.zeros_like(result.tumour_mask),
        class_labels=np.zeros_like(result.class_labels),
        lesion_labels=np.zeros_like(result.lesion_labels),
        stats=dataclasses.replace(
            result.stats,
            tdv_ml=0.0,
            adc=None,
            lesions=(),
            histogram=dataclasses.replace(
                result.stats.histogram, counts=(0,) * len(result.stats.histogram.counts)
            ),
        ),
    )
    paths = write_results(exam, empty, tmp_path, version_label="1.0.0")
    folders = {path.parent.name for path in paths}
    assert "seg" not in folders
    assert {"sr", "adc_map", "adc", "b1000", "key_images"} <= folders


def test_geometry_mismatch_writes_nothing(
    phantom_case: tuple[DwiExam, ProcessingResult], tmp_path: Path
) -> None:
    exam, result = phantom_case
    cropped = dataclasses.replace(result, tumour_mask=result.tumour_mask[:, :, :-1])
    with pytest.raises(ResultGeometryError, match="tumour mask has shape"):
        write_results(exam, cropped, tmp_path / "out", version_label="1.0.0")
    assert not (tmp_path / "out").exists()


def test_a_failure_in_the_child_writing_the_derived_series_writes_nothing(
    phantom_case: tuple[DwiExam, ProcessingResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The forked child's error reaches the caller; no file, part file or folder is left."""
    exam, result = phantom_case

    def broken(datasets: object) -> object:
        raise OSError("no space left on device (injected)")

    monkeypatch.setattr(write_results_module, "encode_series", broken)
    with pytest.raises(WriterError, match=r"derived MR series: no space left on device"):
        write_results(exam, result, tmp_path / "out", version_label="1.0.0")
    assert not (tmp_path / "out").exists()


def test_a_later_version_replaces_the_earlier_report_and_leaves_its_files(
    phantom_case: tuple[DwiExam, ProcessingResult], tmp_path: Path
) -> None:
    """Late images: v2 names v1's SR as predecessor; nothing in v1 is rewritten."""
    exam, result = phantom_case
    study = tmp_path / exam.study_instance_uid
    first = write_results(exam, result, study / "v1", version_label="1.0.0")
    before = {path: path.read_bytes() for path in first}
    (v1_report,) = [path for path in first if path.parent.name == "sr"]
    late = dataclasses.replace(exam, sources=exam.sources[:-1])  # other input, other UIDs
    (study / "v0-broken" / "sr").mkdir(parents=True)
    (study / "v0-broken" / "sr" / "junk.dcm").write_bytes(b"not an SR")
    earlier = earlier_version_reports([study / "v0-broken", study / "missing", study / "v1"])
    assert [str(ds.SOPInstanceUID) for ds in earlier] == [v1_report.stem]
    second = write_results(
        late, result, study / "v2", version_label="1.0.0", earlier_reports=earlier
    )
    assert {path: path.read_bytes() for path in first} == before  # v1 untouched
    assert not {path.stem for path in first} & {path.stem for path in second}
    (v2_report,) = [path for path in second if path.parent.name == "sr"]
    sr = pydicom.dcmread(v2_report)
    names = [
        instance.ReferencedSOPInstanceUID
        for study_item in sr.PredecessorDocumentsSequence
        for series in study_item.ReferencedSeriesSequence
        for instance in series.ReferencedSOPSequence
    ]
    assert names == [v1_report.stem]
    assert any(
        "replaces the earlier report" in note and v1_report.stem in note
        for note in report_notes(sr)
    )
    assert sr.SeriesDescription.startswith("Tumour load report (revised)")


def test_the_derived_series_are_handed_on_in_place_before_the_writing_ends(
    phantom_case: tuple[DwiExam, ProcessingResult], tmp_path: Path
) -> None:
    """on_derived_written: every derived MR file and the Parametric Map, once, in place.

    Once per writing child (one on a 2-core host; see test_write_results_workers.py).
    """
    exam, result = phantom_case
    handed: list[list[tuple[Path, str]]] = []
    seen_then: list[tuple[bool, bool]] = []

    def hand_on(files: list[tuple[Path, str]]) -> None:
        handed.append(files)
        seen_then.append(
            (
                all(path.is_file() for path, _ in files),
                any(path.with_name(f".{path.name}.part").exists() for path, _ in files),
            )
        )

    written = write_results(
        exam, result, tmp_path / "out", version_label="1.0.0", on_derived_written=hand_on
    )
    files = [file for batch in handed for file in batch]
    assert len(files) == len(set(files))
    assert seen_then == [(True, False)] * len(handed)  # in place, no part file left, when handed on
    derived = {path for path in written if path.parent.name in {"adc", "b1000", "adc_map"}}
    assert {path for path, _ in files} == derived
    assert all(path.stem == uid for path, uid in files)
    assert all(pydicom.dcmread(path).SOPInstanceUID == uid for path, uid in files[:3])
    plain = write_results(exam, result, tmp_path / "plain", version_label="1.0.0")
    assert sorted(path.name for path in plain) == sorted(path.name for path in written)
    assert not list((tmp_path / "out").rglob("*.part"))


def test_a_failure_after_the_hand_on_keeps_only_the_handed_on_series(
    phantom_case: tuple[DwiExam, ProcessingResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The derived series were complete (and may be on their way): they stay; the rest does not."""
    exam, result = phantom_case
    handed: list[list[tuple[Path, str]]] = []

    def report_after_the_hand_on(*args: object, **kwargs: object) -> object:
        # (in the process building the report: the derived series are in place when the
        # Parametric Map, written last, is)
        deadline = time.monotonic() + 60
        while not any((tmp_path / "out" / "adc_map").glob("*.dcm")):
            assert time.monotonic() < deadline, "the derived series were not written"
            time.sleep(0.01)
        raise WriterError("the report cannot be built (injected)")

    monkeypatch.setattr(write_results_module, "build_measurement_report", report_after_the_hand_on)
    with pytest.raises(WriterError, match="injected"):
        write_results(
            exam, result, tmp_path / "out", version_label="1.0.0", on_derived_written=handed.append
        )
    left = {path for path in (tmp_path / "out").rglob("*") if path.is_file()}
    assert left == {path for batch in handed for path, _ in batch}
    assert left


def test_an_unexpected_failure_building_the_report_writes_nothing_and_says_what(
    phantom_case: tuple[DwiExam, ProcessingResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With cores to spare the SEG, SR and key images are built in a child process: its
    error, whatever its type, reaches the caller as a WriterError with its text; no file
    or folder is left."""
    exam, result = phantom_case
    monkeypatch.setenv(write_results_module.WRITERS_ENV, "3")  # as on a 4-core host

    def broken(*args: object, **kwargs: object) -> object:
        raise ValueError("a frame without a position (injected)")

    monkeypatch.setattr(write_results_module, "build_key_images", broken)
    with pytest.raises(
        WriterError, match=r"SEG, SR or key images: a frame without a position \(injected\)"
    ):
        write_results(exam, result, tmp_path / "out", version_label="1.0.0")
    assert not (tmp_path / "out").exists()
