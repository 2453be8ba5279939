"""The robustness sweep (issue 10): its grid, its measures, its targets and the quick subset."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from benchmarks.bench_robustness import (
    B_VALUE_SETS,
    CaseResult,
    RobustnessCase,
    all_cases,
    evaluate,
    measure_result,
    quick_cases,
    run_cases,
    write_outputs,
)


def test_the_grid_has_at_least_60_configurations_with_several_seeds() -> None:
    cases = all_cases()
    names = [case.name for case in cases]
    assert len(names) == len(set(names))
    configurations: dict[tuple[Any, ...], set[int]] = {}
    for case in cases:
        key = (case.group, case.marrow_ratio, case.snr_high_b, case.b_label)
        configurations.setdefault(key, set()).add(case.seed)
    assert len(configurations) >= 60
    assert all(len(seeds) >= 2 for seeds in configurations.values())
    assert {case.b_label for case in cases} == set(B_VALUE_SETS)
    assert B_VALUE_SETS["0/400/1400"][0] == 0.0
    groups = {case.group for case in cases}
    for factor in ("arms", "from skull base", "neck x0.6", "slice 8 mm", "pixel 1.5 mm"):
        assert factor in groups


def _result(mask: np.ndarray, tdv: float, median: float | None, verdict: str) -> Any:
    adc = None if median is None else SimpleNamespace(median=median)
    findings = () if verdict == "ok" else (SimpleNamespace(code="low_snr"),)
    return SimpleNamespace(
        tumour_mask=mask,
        stats=SimpleNamespace(tdv_ml=tdv, adc=adc),
        quality=SimpleNamespace(verdict=SimpleNamespace(value=verdict), findings=findings),
    )


def _common(truth_tdv: float, truth_median: float) -> dict[str, Any]:
    return {
        "case": "synthetic",
        "group": "core",
        "marrow_ratio": 1.1,
        "snr_high_b": 40.0,
        "b_label": "50/600/900",
        "seed": 0,
        "extra": "",
        "in_envelope": True,
        "visible_fraction": 1.0,
        "min_lesion_contrast": 2.0,
        "truth_tdv_ml": truth_tdv,
        "truth_median_adc": truth_median,
    }


def test_measures_follow_the_documented_rules() -> None:
    labels = np.zeros((10, 10, 40), dtype=np.int32)
    labels[1:6, 1:6, 1:5] = 1  # 100 voxels: 1 ml at 10 ul voxels
    labels[1:6, 1:6, 10:14] = 2  # 100 voxels
    labels[1:3, 1:3, 20:22] = 3  # 8 voxels, below 1 ml
    mask = np.zeros(labels.shape, dtype=bool)
    mask[1:6, 1:6, 1:3] = True  # 50 % of lesion 1: found
    mask[1:6, 1:2, 10:12] = True  # 10 voxels = 10 % of lesion 2: missed
    mask[7:9, 7:9, 30:32] = True  # a component outside every lesion: false positive
    mask[1:3, 1:3, 20:22] = True  # the small lesion: a true component, not counted in sensitivity
    truth = {
        "lesions": [
            {"label": 1, "volume_ml": 1.0},
            {"label": 2, "volume_ml": 1.0},
            {"label": 3, "volume_ml": 0.08},
        ]
    }
    row = measure_result(
        _common(2.08, 900.0), (labels, [1]), truth, _result(mask, 1.04, 945.0, "ok"), 1.0
    )
    assert (row.big_lesions, row.found_lesions, row.sensitivity) == (2, 1, 0.5)
    assert row.sensitivity_visible == 1.0  # only lesion 1 was visible, and it was found
    assert row.fp_components == 1
    segmented, disease = int(mask.sum()), int((labels > 0).sum())
    both = int((mask & (labels > 0)).sum())
    assert row.dice == pytest.approx(2.0 * both / (segmented + disease))
    assert row.tdv_ratio == pytest.approx(0.5)
    assert row.median_adc_error == pytest.approx(0.05)
    assert row.verdict == "ok"
    assert row.bad  # tDV error -50 %


def test_nothing_segmented_has_no_median_and_zero_dice() -> None:
    labels = np.zeros((4, 4, 4), dtype=np.int32)
    labels[1:3, 1:3, 1:3] = 1
    truth = {"lesions": [{"label": 1, "volume_ml": 1.0}]}
    empty = np.zeros(labels.shape, dtype=bool)
    row = measure_result(
        _common(1.0, 800.0), (labels, [1]), truth, _result(empty, 0.0, None, "review"), 0.1
    )
    assert row.median_adc_error is None
    assert row.dice == 0.0
    assert row.sensitivity == 0.0
    assert row.findings == "low_snr"


def _row(**changes: Any) -> CaseResult:
    base = CaseResult(
        **_common(100.0, 900.0),
        reported_tdv_ml=100.0,
        tdv_ratio=1.0,
        tdv_error=0.0,
        big_lesions=5,
        found_lesions=5,
        sensitivity=1.0,
        visible_lesions=5,
        sensitivity_visible=1.0,
        fp_components=0,
        dice=0.9,
        reported_median_adc=900.0,
        median_adc_error=0.0,
        verdict="ok",
        findings="",
        seconds=1.0,
    )
    return replace(base, **changes)


def test_targets_count_envelope_cases_and_flag_ok_verdicts_on_wrong_loads() -> None:
    rows = [_row(case=f"good {i}") for i in range(9)]
    rows.append(_row(case="off", tdv_ratio=1.25, tdv_error=0.25))
    rows.append(
        _row(case="outside ok", in_envelope=False, tdv_ratio=8.0, tdv_error=7.0, verdict="ok")
    )
    rows.append(
        _row(
            case="outside flagged",
            in_envelope=False,
            tdv_ratio=0.1,
            tdv_error=-0.9,
            verdict="review",
        )
    )
    targets = evaluate(rows)
    assert targets.envelope_cases == 10
    assert targets.tdv_within == pytest.approx(0.9)
    assert targets.passed["tdv"]
    assert targets.ok_but_wrong == ("outside ok",)
    assert not targets.passed["verdict"]
    assert not targets.all_passed
    assert targets.confusion == {"ok/bad": 1, "ok/good": 10, "flagged/bad": 1, "flagged/good": 0}
    rows[0] = _row(case="good 0", tdv_ratio=0.7, tdv_error=-0.3)
    assert not evaluate(rows).passed["tdv"]  # 8 of 10 within 20 %


def test_outputs_are_written_and_readable(tmp_path: Path) -> None:
    rows = [
        _row(case=f"c{i}", marrow_ratio=m, snr_high_b=s, tdv_error=e, tdv_ratio=1 + e)
        for i, (m, s, e) in enumerate([(1.1, 10.0, 0.05), (3.0, 40.0, 2.5), (5.0, 20.0, math.nan)])
    ]
    paths = write_outputs(rows, tmp_path, "sweep")
    assert [p.name for p in paths] == ["sweep.json", "sweep.csv", "sweep_tdv.png"]
    records = json.loads(paths[0].read_text())
    assert [r["case"] for r in records] == ["c0", "c1", "c2"]
    assert paths[1].read_text().splitlines()[0].startswith("case,group,marrow_ratio")
    with Image.open(paths[2]) as image:
        assert image.width > 5 * 300
        # The 1.1 x / SNR 10 cell (5 % error) is green; the 3 x / SNR 40 cell (250 %) is red.
        pixels = image.convert("RGB")
        green = np.asarray(pixels)[48 + 2 * 44 + 40, 24 + 70 + 3]
        red = np.asarray(pixels)[48 + 0 * 44 + 40, 24 + 70 + 2 * 70 + 3]
        assert green[1] > green[0]
        assert red[0] > red[1]


@pytest.mark.slow
def test_quick_sweep_meets_the_envelope_targets() -> None:
    """The issue's targets on the 14-case subset (about two minutes on two cores)."""
    cases = quick_cases()
    assert 10 <= len(cases) <= 16
    assert all(isinstance(case, RobustnessCase) for case in cases)
    rows = run_cases(cases, workers=2)
    assert not [row.error for row in rows if row.error]
    targets = evaluate(rows)
    report = "\n".join(
        f"{r.case}: tDV x{r.tdv_ratio:.2f}, sensitivity {r.sensitivity}, verdict {r.verdict}"
        for r in rows
    )
    assert targets.envelope_cases >= 10, report
    assert targets.passed == {
        "tdv": True,
        "sensitivity": True,
        "median_adc": True,
        "verdict": True,
    }, report


def test_a_case_that_fails_to_process_fails_the_envelope_but_has_no_verdict() -> None:
    rows = [_row(case=f"good {i}") for i in range(9)]
    rows.append(
        _row(
            case="failed",
            error="InvalidExamError: too few b-values",
            verdict="error",
            reported_tdv_ml=math.nan,
            tdv_ratio=math.nan,
            tdv_error=math.inf,
            median_adc_error=None,
        )
    )
    targets = evaluate(rows)
    assert targets.envelope_cases == 10
    assert targets.tdv_within == pytest.approx(0.9)
    assert targets.adc_within == pytest.approx(0.9)
    assert rows[-1].bad
    assert sum(targets.confusion.values()) == 9
    assert targets.ok_but_wrong == ()
