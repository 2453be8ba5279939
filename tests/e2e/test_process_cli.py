"""``wbdwi process``: offline assembly + processing of a folder, and its bad-input errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from processing.backend import gpu_status
from service.cli import main

ADC_KEYS = {"mean", "median", "sd", "p5", "p10", "p25", "p75", "p90", "p95", "skewness", "kurtosis"}
LESION_KEYS = {"volume_ml", "adc_mean", "adc_median", "centroid_mm", "region"}


def _write_phantom(folder: Path, *extra: str) -> Path:
    status = main(["phantom", "--out", str(folder), "--preset", "small", "--snr", "0", *extra])
    assert status == 0
    return folder / "dicom"


@pytest.fixture(scope="module")
def phantom_dicom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_phantom(tmp_path_factory.mktemp("phantom"))


def test_process_writes_measurements(
    phantom_dicom: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["process", str(phantom_dicom), "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "measurements.json" in printed
    report = json.loads((out / "measurements.json").read_text())
    quality = report["quality"]
    assert set(quality) == {"verdict", "meaning", "reasons", "measures"}
    verdict_line = f"wbdwi process: verdict {quality['verdict']}: {quality['meaning']}"
    reason_lines = printed[printed.index(verdict_line) :].splitlines()[1:]
    assert [line.rsplit("[", 1)[1].rstrip("]") for line in reason_lines] == [
        reason["code"] for reason in quality["reasons"]
    ]
    assert report["tdv_ml"] > 0
    assert set(report["adc"]) == ADC_KEYS
    assert all(math.isfinite(report["adc"][key]) for key in ADC_KEYS)
    classes = report["classes"]
    assert classes["yellow_lower_um2s"] == 1000.0
    assert classes["red_ml"] + classes["yellow_ml"] + classes["green_ml"] == pytest.approx(
        report["tdv_ml"]
    )
    assert report["lesions"]
    for lesion in report["lesions"]:
        assert set(lesion) >= LESION_KEYS
        assert len(lesion["centroid_mm"]) == 3
    assert sum(lesion["volume_ml"] for lesion in report["lesions"]) == pytest.approx(
        report["tdv_ml"]
    )
    assert report["device"].startswith("cpu")
    assert {"assemble", "adc_fit", "segmentation", "total"} <= set(report["timings_s"])
    assert len(report["histogram"]["counts"]) == 120
    assert report["study_instance_uid"].startswith("2.25.")
    assert len(report["settings_digest"]) == 12
    assert report["software_version"]


def test_fewer_stations_than_expected_make_the_verdict_unreliable(
    phantom_dicom: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["process", str(phantom_dicom), "--out", str(out), "--device", "cpu"]
    assert main([*argv, "--expected-stations", "4"]) == 0
    printed = capsys.readouterr().out
    assert "wbdwi process: verdict unreliable: " in printed
    assert "The exam has 3 of the 4 stations expected" in printed
    quality = json.loads((out / "measurements.json").read_text())["quality"]
    [missing] = [r for r in quality["reasons"] if r["code"] == "stations_missing"]
    assert (missing["value"], missing["limit"]) == (3.0, 4.0)
    assert quality["measures"]["stations"] == 3


def test_baseline_p95_sets_the_yellow_class(phantom_dicom: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["process", str(phantom_dicom), "--out", str(out), "--device", "cpu"]
    assert main([*argv, "--yellow-lower", "1256"]) == 0
    classes = json.loads((out / "measurements.json").read_text())["classes"]
    assert classes["yellow_lower_um2s"] == 1256.0
    assert classes["yellow_lower_source"] == "baseline p95"


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str], reason: str) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("wbdwi process: ")
    assert reason in captured.err
    assert "Traceback" not in captured.err


def test_folder_without_dicom_fails_cleanly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "notes.txt").write_text("not DICOM")
    out = tmp_path / "out"
    _fails(["process", str(tmp_path), "--out", str(out)], capsys, "Error")
    assert not (out / "measurements.json").exists()


def test_missing_folder_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _fails(
        ["process", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")],
        capsys,
        "not a directory",
    )


def test_b0_1000_exam_is_processed_with_a_review_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dicom = _write_phantom(tmp_path / "phantom", "--b-values", "0,1000")
    out = tmp_path / "out"
    assert main(["process", str(dicom), "--out", str(out), "--device", "cpu"]) == 0
    assert "the ADC was fitted with b = 0" in capsys.readouterr().out
    quality = json.loads((out / "measurements.json").read_text())["quality"]
    assert quality["verdict"] in {"review", "unreliable"}
    [low_b] = [r for r in quality["reasons"] if r["code"] == "adc_low_b"]
    assert (low_b["value"], low_b["limit"]) == (0.0, 50.0)


def test_bad_yellow_lower_fails_cleanly(
    phantom_dicom: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fails(
        ["process", str(phantom_dicom), "--out", str(tmp_path), "--yellow-lower", "nan"],
        capsys,
        "--yellow-lower",
    )


def test_gpu_without_cupy_fails_cleanly(
    phantom_dicom: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    usable, _ = gpu_status()
    if usable:
        pytest.skip("a GPU is usable here; the missing-GPU error cannot be provoked")
    _fails(
        ["process", str(phantom_dicom), "--out", str(tmp_path), "--device", "gpu"],
        capsys,
        "--device cpu",
    )
