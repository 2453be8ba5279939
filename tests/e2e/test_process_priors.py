"""``wbdwi process --prior``: the designed categories of one phantom patient, unfiltered (issue 6).

Each time point goes through the simulated scanner (DICOM), assembly, the
real pipeline on CPU and the writers, exactly as ``wbdwi process`` runs it; the
comparison is what lands in ``measurements.json`` and the SR. Nothing is
filtered: every component the segmentation reports takes part. Chain and dates:
:mod:`tests.helpers.response_chain`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from dicom_node.readers.report_reader import read_measurement_report
from service.cli import main
from tests.helpers.response_chain import CHAIN, ChainRun

pytestmark = pytest.mark.slow  # response_chain: five reference exams, ~7 s each, once per run

COMPARISON_KEYS = {
    "prior_study_uid",
    "baseline_study_uid",
    "tdv_change_pct",
    "adc_median_change_pct",
    "rac_overall",
    "rac_by_region",
}
DESIGNED = {"stable": 3, "progression": 5, "response": 1, "partial": 2}


def _uid(chain: dict[str, ChainRun], scenario: str) -> str:
    uid: str = chain[scenario].measurements["study_instance_uid"]
    return uid


def _only(folder: Path) -> Path:
    (path,) = sorted(folder.glob("*.dcm"))
    return path


@pytest.mark.parametrize("scenario", list(DESIGNED))
def test_follow_up_gets_the_designed_category(
    response_chain: dict[str, ChainRun], scenario: str
) -> None:
    run = response_chain[scenario]
    comparison = run.measurements["comparison"]
    assert comparison is not None and set(comparison) >= COMPARISON_KEYS
    detail = [
        (lesion["label"], lesion["status"], lesion["region"], lesion["rac"], lesion["rule"])
        for lesion in comparison["lesions"]
    ]
    assert comparison["rac_overall"] == DESIGNED[scenario], detail
    regions = comparison["rac_by_region"]
    assert regions, detail
    if scenario in ("stable", "response", "partial"):
        assert set(regions.values()) == {DESIGNED[scenario]}, (regions, detail)
    else:
        assert max(regions.values()) == 5 and min(regions.values()) >= 3, (regions, detail)
        assert any(
            lesion["status"] == "new" and lesion["rac"] == 5 for lesion in comparison["lesions"]
        ), detail

    priors = CHAIN[scenario][2]
    assert comparison["prior_study_uid"] == _uid(response_chain, priors[-1])
    assert comparison["baseline_study_uid"] == _uid(response_chain, "baseline")
    baseline_p95 = response_chain["baseline"].measurements["adc"]["p95"]
    assert comparison["yellow_lower_um2s"] == pytest.approx(baseline_p95)
    assert run.measurements["classes"]["yellow_lower_um2s"] == pytest.approx(baseline_p95)
    assert run.measurements["classes"]["yellow_lower_source"] == "baseline p95"
    assert [point["study_uid"] for point in comparison["trend"]] == [
        *(_uid(response_chain, p) for p in priors),
        _uid(response_chain, scenario),
    ]
    if scenario == "response":
        assert comparison["tdv_change_pct"] < -20.0
        assert comparison["adc_median_change_pct"] > 25.0


def test_chain_shows_previous_and_baseline_apart(response_chain: dict[str, ChainRun]) -> None:
    comparison = response_chain["progression"].measurements["comparison"]
    assert comparison["vs_previous"]["reference_study_uid"] == _uid(response_chain, "stable")
    assert comparison["vs_baseline"]["reference_study_uid"] == _uid(response_chain, "baseline")
    assert comparison["vs_previous"]["reference_study_date"] == "20240405"
    baseline_run = response_chain["baseline"].measurements
    assert baseline_run["comparison"] is None
    summary = baseline_run["exam_summary"]
    assert summary["study_date"] == "20240105"
    assert summary["sr_sop_instance_uid"] == _only(response_chain["baseline"].out_dir / "sr").stem
    assert summary["seg_sop_instance_uid"] == _only(response_chain["baseline"].out_dir / "seg").stem


def test_sr_and_key_images_carry_the_comparison(response_chain: dict[str, ChainRun]) -> None:
    run = response_chain["progression"]
    sr = pydicom.dcmread(_only(run.out_dir / "sr"))
    identifiers = {
        item.TextValue
        for group in sr.ContentSequence[-1].ContentSequence
        for item in group.get("ContentSequence", [])
        if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeValue == "112039"
    }
    assert {
        "Comparison with the previous exam",
        "Comparison with the baseline exam",
        "Suggested response category: overall",
    } <= identifiers
    # What a later exam reads back from this SR is this run's exam summary.
    summary = read_measurement_report(sr).to_dict()
    local = run.measurements["exam_summary"]
    assert len(summary["lesions"]) == len(local["lesions"])
    for mine, theirs in zip(summary["lesions"], local["lesions"], strict=True):
        assert (mine["label"], mine["region"]) == (theirs["label"], theirs["region"])
        for key in ("volume_ml", "adc_mean", "adc_median", "mean_high_b"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-9), key
        assert mine["centroid_mm"] == pytest.approx(theirs["centroid_mm"], rel=1e-9)
    assert summary["voxel_volume_ml"] == pytest.approx(local["voxel_volume_ml"])
    key_images = sorted((run.out_dir / "key_images").glob("*.dcm"))
    comments = sorted(
        str(pydicom.dcmread(p, stop_before_pixels=True).ImageComments) for p in key_images
    )
    assert len(comments) == 3
    assert any(c.startswith("Trend of tDV") for c in comments)
    assert any("earlier exams as outlines" in c for c in comments)


def test_reprocessing_with_the_same_priors_gives_the_same_uids(
    response_chain: dict[str, ChainRun], tmp_path: Path
) -> None:
    """PACS de-duplicates a re-run; other priors give other report UIDs, not other content."""
    run = response_chain["stable"]
    same = tmp_path / "same"
    base = str(response_chain["baseline"].out_dir)
    assert (
        main(
            ["process", str(run.dicom_dir), "--out", str(same), "--device", "cpu", "--prior", base]
        )
        == 0
    )
    assert _only(same / "sr").stem == _only(run.out_dir / "sr").stem
    assert _only(same / "seg").stem == _only(run.out_dir / "seg").stem
    alone = tmp_path / "alone"
    assert main(["process", str(run.dicom_dir), "--out", str(alone), "--device", "cpu"]) == 0
    assert _only(alone / "sr").stem != _only(run.out_dir / "sr").stem
    assert sorted(p.name for p in (alone / "adc_map").glob("*.dcm")) == sorted(
        p.name for p in (run.out_dir / "adc_map").glob("*.dcm")
    )
    assert json.loads((alone / "measurements.json").read_text())["comparison"] is None


def test_bad_priors_fail_cleanly(
    response_chain: dict[str, ChainRun], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = response_chain["stable"]
    out = str(tmp_path / "out")
    assert main(["process", str(run.dicom_dir), "--out", out, "--prior", str(tmp_path)]) == 2
    assert "no measurements.json" in capsys.readouterr().err
    foreign = tmp_path / "foreign.json"
    measurements = dict(response_chain["baseline"].measurements)
    measurements["exam_summary"] = {**measurements["exam_summary"], "patient_id": "SOMEONE-ELSE"}
    foreign.write_text(json.dumps(measurements))
    assert main(["process", str(run.dicom_dir), "--out", out, "--prior", str(foreign)]) == 2
    assert "not of this exam's patient" in capsys.readouterr().err
    base = str(response_chain["baseline"].out_dir)
    assert (
        main(["process", str(run.dicom_dir), "--out", out, "--prior", base, "--baseline", "1.2.3"])
        == 2
    )
    assert "baseline study 1.2.3" in capsys.readouterr().err
    old = tmp_path / "old.json"
    old.write_text(json.dumps({k: v for k, v in measurements.items() if k != "exam_summary"}))
    assert main(["process", str(run.dicom_dir), "--out", out, "--prior", str(old)]) == 2
    assert "no exam_summary block" in capsys.readouterr().err
