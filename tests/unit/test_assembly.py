"""Exam assembly: every vendor flavour and split, distractors, and each bad-input error."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit, JPEGLSLossless, generate_uid

from dicom_node.assembly.assemble import AssembledExam, assemble_exam
from dicom_node.assembly.dicom_files import find_dicom_files
from dicom_node.errors import (
    AssemblyError,
    DuplicateSliceError,
    GeometryMismatchError,
    MissingBValueError,
    MissingSlicesError,
    MixedOrientationError,
    MultipleStudiesError,
    NoDiffusionSeriesError,
    SingleBValueError,
    StationGapError,
    UndecodablePixelDataError,
    ZeroSignalError,
)
from dicom_node.simulator.scanner import MAX_STORED_VALUE, write_exam
from processing.phantom import Phantom, make_phantom
from service.cli import main

VENDORS = ("standard", "siemens", "ge", "philips", "enhanced")
SPLITS = ("station", "station-b", "body")


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom("small", snr=0)


@pytest.fixture(scope="module")
def station_b_exam(phantom: Phantom, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A standard-header exam split per station and b-value, with distractors."""
    folder = tmp_path_factory.mktemp("station-b")
    write_exam(phantom, folder, vendor="standard", split="station-b")
    return folder


def _copy(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "exam"
    shutil.copytree(source, target)
    return target


def _series(folder: Path, pattern: str) -> list[Path]:
    files = sorted(folder.glob(f"{pattern}/*.dcm"))
    assert files, f"no files match {pattern} under {folder}"
    return files


def _rewrite(files: list[Path], change: Callable[[Dataset], None]) -> None:
    for path in files:
        ds = dcmread(path)
        change(ds)
        ds.save_as(path, enforce_file_format=True)


def _quantisation_bound(phantom: Phantom) -> float:
    # Half a stored step of the largest slope the scanner uses (the exam slope).
    return float(phantom.signal.max()) / MAX_STORED_VALUE / 2 * 1.001 + 1e-4


def _check_matches(assembled: AssembledExam, phantom: Phantom) -> None:
    exam = assembled.exam
    assert exam.shape == phantom.signal.shape
    assert exam.b_values == pytest.approx(phantom.b_values)
    np.testing.assert_allclose(exam.affine, phantom.affine, atol=1e-3)
    assert exam.spacing_mm == pytest.approx(phantom.spacing_mm)
    error = np.abs(exam.signal - phantom.signal).max()
    assert error <= _quantisation_bound(phantom)
    assert exam.stations == len(phantom.stations)
    assert exam.patient_id == phantom.patient_id
    assert exam.study_instance_uid == phantom.study_instance_uid
    assert exam.frame_of_reference_uid == phantom.frame_of_reference_uid


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("vendor", VENDORS)
def test_every_vendor_and_split_reproduces_the_phantom(
    phantom: Phantom, tmp_path: Path, vendor: str, split: str
) -> None:
    # Creators in block 0x11 (elements (gggg,11xx)): found by creator, not by number.
    distractors = split == "station"
    files = write_exam(
        phantom, tmp_path, vendor=vendor, split=split, distractors=distractors, private_block=0x11
    )
    assembled = assemble_exam(files)
    _check_matches(assembled, phantom)
    expected_source = {
        "standard": "standard (0018,9087)",
        "siemens": "Siemens (0019,xx0C)",
        "ge": "GE (0043,xx39)",
        "philips": "Philips (2001,xx03)",
        "enhanced": "MR Diffusion Sequence (0018,9117)",
    }[vendor]
    assert assembled.b_value_sources == (expected_source,)
    exam = assembled.exam
    # Every output slice of every b-value names its sources; overlaps name two stations.
    per_slice: dict[tuple[float, int], set[tuple[str, int | None]]] = {}
    for ref in exam.sources:
        image = (ref.sop_instance_uid, ref.frame_number)
        per_slice.setdefault((ref.b_value, ref.slice_index), set()).add(image)
        assert (ref.frame_number is not None) == (vendor == "enhanced")
    assert len(per_slice) == exam.shape[0] * exam.shape[1]
    second = phantom.stations[1]
    first_end = phantom.stations[0].first_slice + phantom.stations[0].n_slices
    overlap = range(second.first_slice, first_end)
    assert all(len(per_slice[(exam.b_values[0], k)]) == 2 for k in overlap)
    assert len(per_slice[(exam.b_values[0], 0)]) == 1
    if distractors:
        reasons = {s.description: s.reason for s in assembled.series_ignored}
        assert "ADC map" in reasons["WB DWI ADC"]
        assert "not diffusion-weighted" in reasons["WB T1 TSE"]
        used = set(exam.series_used)
        assert not used & {s.uid for s in assembled.series_ignored}
    else:
        assert assembled.series_ignored == ()


def test_ge_offset_and_default_block(phantom: Phantom, tmp_path: Path) -> None:
    files = write_exam(
        phantom, tmp_path, vendor="ge", split="body", distractors=False, ge_b_value_offset=True
    )
    stored = dcmread(files[0])[0x00431039].value
    assert int(stored[0]) >= 1_000_000_000
    _check_matches(assemble_exam(files), phantom)


def test_siemens_csa_header_alone_gives_the_b_value(phantom: Phantom, tmp_path: Path) -> None:
    files = write_exam(phantom, tmp_path, vendor="siemens", split="station", distractors=False)

    def drop_mr_header(ds: Dataset) -> None:
        del ds[0x0019100C]

    _rewrite(files, drop_mr_header)
    assembled = assemble_exam(files)
    assert assembled.b_value_sources == ("Siemens CSA header (0029,xx10)",)
    _check_matches(assembled, phantom)


def test_compressed_series_is_decoded(
    phantom: Phantom, station_b_exam: Path, tmp_path: Path
) -> None:
    folder = _copy(station_b_exam, tmp_path)
    _rewrite(
        _series(folder, "S*_st2_b600"),
        lambda ds: ds.compress(JPEGLSLossless, generate_instance_uid=False),
    )
    assert dcmread(_series(folder, "S*_st2_b600")[0]).file_meta.TransferSyntaxUID == JPEGLSLossless
    _check_matches(assemble_exam(find_dicom_files(folder)), phantom)


def test_off_grid_station_is_resampled_along_z(
    phantom: Phantom, station_b_exam: Path, tmp_path: Path
) -> None:
    folder = _copy(station_b_exam, tmp_path)
    dz = phantom.spacing_mm[0]

    def shift_half_slice(ds: Dataset) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, round(z - dz / 2, 4)]  # half a slice towards the feet

    _rewrite(_series(folder, "S*_st3_b*"), shift_half_slice)
    assembled = assemble_exam(find_dicom_files(folder))
    assert assembled.resampled_stations == (3,)
    exam = assembled.exam
    assert exam.shape[1] == phantom.signal.shape[1]  # extent still ends half a slice below
    third = phantom.stations[2]
    # Grid slice k (inside station 3 only) lies halfway between its source slices k-1 and k.
    k = third.first_slice + third.n_slices // 2
    expected = 0.5 * (phantom.signal[:, k - 1] + phantom.signal[:, k])
    assert np.abs(exam.signal[:, k] - expected).max() <= _quantisation_bound(phantom)
    refs = {r.sop_instance_uid for r in exam.sources if r.slice_index == k}
    assert len(refs) == 2 * len(phantom.b_values)


def test_tiny_position_jitter_snaps_to_the_grid(
    phantom: Phantom, station_b_exam: Path, tmp_path: Path
) -> None:
    folder = _copy(station_b_exam, tmp_path)

    def jitter(ds: Dataset) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, round(z + 0.03, 4)]

    _rewrite(_series(folder, "S*_st2_b*"), jitter)
    assembled = assemble_exam(find_dicom_files(folder))
    assert assembled.resampled_stations == ()
    _check_matches(assembled, phantom)


def test_repeated_station_supersedes_the_earlier_series(
    phantom: Phantom, station_b_exam: Path, tmp_path: Path
) -> None:
    folder = _copy(station_b_exam, tmp_path)
    originals = _series(folder, "S*_st2_b900")
    repeat_dir = folder / "S050_repeat"
    repeat_dir.mkdir()
    new_series = generate_uid()
    for index, path in enumerate(originals):
        ds = dcmread(path)
        ds.SeriesInstanceUID = new_series
        ds.SeriesNumber = 50
        ds.SeriesDescription = "WB DWI st2 b900 repeat"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(repeat_dir / f"IM{index:05d}.dcm", enforce_file_format=True)
    assembled = assemble_exam(find_dicom_files(folder))
    _check_matches(assembled, phantom)
    old_uid = dcmread(originals[0]).SeriesInstanceUID
    ignored = {s.uid: s.reason for s in assembled.series_ignored}
    assert "superseded by series 50" in ignored[old_uid]
    assert new_series in assembled.exam.series_used


def test_non_dicom_files_are_skipped(station_b_exam: Path, tmp_path: Path) -> None:
    folder = _copy(station_b_exam, tmp_path)
    notes = folder / "notes.txt"
    notes.write_text("not DICOM\n", encoding="utf-8")
    assembled = assemble_exam([*find_dicom_files(folder), notes])
    assert [s.path for s in assembled.files_skipped] == [str(notes)]


# ----------------------------------------------------------------------------- errors


def _raises(
    folder: Path, error: type[AssemblyError], series_files: list[Path] | None = None
) -> str:
    with pytest.raises(error) as info:
        assemble_exam(find_dicom_files(folder))
    if series_files is not None:
        expected_uid = dcmread(series_files[0], stop_before_pixels=True).SeriesInstanceUID
        assert info.value.series_uid == expected_uid
        assert expected_uid in str(info.value)
    return str(info.value)


def test_single_b_value(station_b_exam: Path, tmp_path: Path) -> None:
    folder = tmp_path / "b50"
    for path in station_b_exam.glob("S*_b50"):
        shutil.copytree(path, folder / path.name)
    message = _raises(folder, SingleBValueError)
    assert "only one b-value (50" in message


def test_mixed_orientation(station_b_exam: Path, tmp_path: Path) -> None:
    folder = _copy(station_b_exam, tmp_path)
    files = _series(folder, "S*_st2_b600")

    def tilt(ds: Dataset) -> None:
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9961947, -0.0871557]  # 5 degrees

    _rewrite(files, tilt)
    assert "ImageOrientationPatient" in _raises(folder, MixedOrientationError, files)


def test_station_matrix_mismatch(station_b_exam: Path, tmp_path: Path) -> None:
    folder = _copy(station_b_exam, tmp_path)
    files = _series(folder, "S*_st3_b*")

    def crop(ds: Dataset) -> None:
        pixels = ds.pixel_array[:-2, :]
        ds.Rows = pixels.shape[0]
        ds.PixelData = pixels.astype("<u2").tobytes()

    _rewrite(files, crop)
    assert "matrix" in _raises(folder, GeometryMismatchError)


def test_station_pixel_spacing_mismatch(station_b_exam: Path, tmp_path: Path) -> None:
    folder = _copy(station_b_exam, tmp_path)
    files = _series(folder, "S*_st1_b*")
    _rewrite(files, lambda ds: setattr(ds, "PixelSpacing", [7.0, 7.0]))
    assert "pixel spacing" in _raises(folder, GeometryMismatchError)


def test_station_slice_spacing_mismatch(phantom: Phantom, tmp_path: Path) -> None:
    files = write_exam(phantom, tmp_path, vendor="standard", split="station", distractors=False)
    station3 = _series(tmp_path, "S*_st3_*")
    top = max(float(dcmread(p).ImagePositionPatient[2]) for p in station3)

    def stretch(ds: Dataset) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, round(top - (top - z) * 1.1, 4)]

    _rewrite(station3, stretch)
    assert files
    assert "slice spacing" in _raises(tmp_path, GeometryMismatchError, station3)


def test_missing_slice_for_one_b_value(station_b_exam: Path, tmp_path: Path) -> None:
    folder = _copy(station_b_exam, tmp_path)
    files = _series(folder, "S*_st2_b900")
    files[10].unlink()
    message = _raises(folder, MissingSlicesError, files)
    assert "b=900" in message
    assert "missing positions" in message


def test_missing_b_value_for_one_station(station_b_exam: Path, tmp_path: Path) -> None:
    folder = _copy(station_b_exam, tmp_path)
    shutil.rmtree(next(folder.glob("S*_st3_b600")))
    assert "has no images at b=600" in _raises(folder, MissingSlicesError)


def test_missing_slice_in_every_b_value(station_b_exam: Path, tmp_path: Path) -> None:
    folder = _copy(station_b_exam, tmp_path)
    for b in (50, 600, 900):
        _series(folder, f"S*_st1_b{b}")[20].unlink()
    assert "1 slice(s) missing between" in _raises(folder, MissingSlicesError)


def test_gap_between_stations(phantom: Phantom, station_b_exam: Path, tmp_path: Path) -> None:
    folder = _copy(station_b_exam, tmp_path)
    files = _series(folder, "S*_st3_b*")
    overlap = (phantom.stations[1].first_slice + phantom.stations[1].n_slices) - phantom.stations[
        2
    ].first_slice
    move = (overlap + 2) * phantom.spacing_mm[0]

    def move_down(ds: Dataset) -> None:
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, round(z - move, 4)]

    _rewrite(files, move_down)
    message = _raises(folder, StationGapError)
    assert "station 2" in message
    assert "station 3" in message


def test_zero_signal(station_b_exam: Path, tmp_path: Path) -> None:
    folder = _copy(station_b_exam, tmp_path)
    files = _series(folder, "S*_st1_b900")
    _rewrite(files, lambda ds: setattr(ds, "PixelData", bytes(len(ds.PixelData))))
    assert "are zero" in _raises(folder, ZeroSignalError, files)


def test_truncated_pixel_data(station_b_exam: Path, tmp_path: Path) -> None:
    folder = _copy(station_b_exam, tmp_path)
    files = _series(folder, "S*_st2_b50")
    _rewrite(files[3:4], lambda ds: setattr(ds, "PixelData", ds.PixelData[:1000]))
    assert "truncated" in _raises(folder, UndecodablePixelDataError, files)


def test_undecodable_transfer_syntax(station_b_exam: Path, tmp_path: Path) -> None:
    folder = _copy(station_b_exam, tmp_path)
    files = _series(folder, "S*_st2_b50")

    def garbage_jpeg(ds: Dataset) -> None:
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PixelData = encapsulate([b"\xff\xd8 not really a jpeg \xff\xd9"])
        ds["PixelData"].VR = "OB"

    _rewrite(files[:1], garbage_jpeg)
    message = _raises(folder, UndecodablePixelDataError, files)
    assert "JPEG Baseline" in message


def test_no_diffusion_series(station_b_exam: Path, tmp_path: Path) -> None:
    folder = tmp_path / "other"
    for name in ("S002_*", "S100_*"):
        source = next(station_b_exam.glob(name))
        shutil.copytree(source, folder / source.name)
    message = _raises(folder, NoDiffusionSeriesError)
    assert "WB T1 TSE" in message
    assert "ADC map" in message


def test_diffusion_image_without_b_value(station_b_exam: Path, tmp_path: Path) -> None:
    folder = _copy(station_b_exam, tmp_path)
    files = _series(folder, "S*_st1_b600")
    _rewrite(files[:1], lambda ds: ds.__delattr__("DiffusionBValue"))
    assert "no b-value" in _raises(folder, MissingBValueError, files)


def test_two_studies(station_b_exam: Path, tmp_path: Path) -> None:
    folder = _copy(station_b_exam, tmp_path)
    files = _series(folder, "S*_st3_b900")
    other = generate_uid()
    _rewrite(files, lambda ds: setattr(ds, "StudyInstanceUID", other))
    assert "StudyInstanceUID" in _raises(folder, MultipleStudiesError, files)


def test_duplicate_positions_without_station_identity(phantom: Phantom, tmp_path: Path) -> None:
    files = write_exam(phantom, tmp_path, vendor="standard", split="body", distractors=False)
    _rewrite(files, lambda ds: setattr(ds, "AcquisitionNumber", 1))
    assert "same position" in _raises(tmp_path, DuplicateSliceError, files)


# ----------------------------------------------------------------------------- CLI


def test_inspect_prints_the_summary(
    station_b_exam: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["inspect", str(station_b_exam)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["b_values"] == [50.0, 600.0, 900.0]
    assert summary["stations"] == 3
    assert len(summary["shape"]) == 4
    assert len(summary["series_used"]) == 9
    assert {s["description"] for s in summary["series_ignored"]} == {"WB T1 TSE", "WB DWI ADC"}
    assert all(s["reason"] for s in summary["series_ignored"])


def test_inspect_reports_bad_input(
    station_b_exam: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _copy(station_b_exam, tmp_path)
    shutil.rmtree(next(folder.glob("S*_st3_b600")))
    assert main(["inspect", str(folder)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "MissingSlicesError" in captured.err
    assert "b=600" in captured.err
