"""Response categories on processed phantom exams: baseline, then each follow-up (issue 6).

Every time point of one phantom patient (``reference`` preset: the ``small``
preset's 0.39 ml voxels are too coarse for the segmentation) is processed by
the real pipeline and summarised, with **nothing filtered**: every component
the segmentation reports takes part. Each follow-up is compared with the
baseline. The phantom knows which voxels belong to which lesion and which
baseline lesion each one is, so the test checks:

- lesion matching in patient coordinates, despite the repositioning shift
  between visits: every group pairs detections of the same phantom lesion; a
  detection left "new" is a designed new lesion or one the baseline missed; a
  baseline detection left "disappeared" is not detected in the follow-up;
- the suggested categories of the designed scenarios (response +45 % ADC ->
  RAC 1, partial +30 % -> RAC 2, progression with new lesions and +40 %
  volume -> RAC 5, stable -> RAC 3), overall and in every region.
"""

from __future__ import annotations

from collections import Counter
from functools import cache

import numpy as np
import pytest

from processing.comparison import Comparison, LesionStatus, compare_exams
from processing.exam_summary import ExamSummary, summarize_exam
from processing.phantom import Phantom, make_phantom
from processing.pipeline import process_exam
from processing.response import ResponseCategory
from processing.results import ProcessingResult

pytestmark = pytest.mark.slow  # five reference exams, about 2 s each

PATIENT = "RESPONSE-PHANTOM-1"
RAC = ResponseCategory
_DATES = {"baseline": "20240105", "response": "20240405", "partial": "20240406"}
_DATES |= {"progression": "20240407", "stable": "20240408"}


@cache
def _time_point(scenario: str) -> tuple[Phantom, ProcessingResult, ExamSummary, dict[int, int]]:
    """Phantom, result, summary, and detected label -> phantom lesion label (0: none)."""
    seed = list(_DATES).index(scenario) + 11
    phantom = make_phantom("reference", snr=40.0, seed=seed, patient_id=PATIENT, scenario=scenario)
    exam = phantom.to_exam()
    baseline_p95 = None
    if scenario != "baseline":
        baseline_summary = _time_point("baseline")[2]
        assert baseline_summary.adc is not None
        baseline_p95 = baseline_summary.adc.p95
    result = process_exam(exam, device="cpu", yellow_lower_um2s=baseline_p95)
    summary = summarize_exam(exam, result.stats, study_date=_DATES[scenario])
    to_phantom = {}
    for lesion in result.stats.lesions:
        truth = phantom.lesion_labels[result.lesion_labels == lesion.label]
        label, count = Counter(truth.tolist()).most_common(1)[0]
        to_phantom[lesion.label] = int(label) if count * 2 > truth.size else 0
    return phantom, result, summary, to_phantom


def _baseline_label(phantom: Phantom, label: int) -> int | None:
    for lesion in phantom.truth["lesions"]:
        if lesion["label"] == label:
            value = lesion["baseline_label"]
            return None if value is None else int(value)
    raise AssertionError(f"phantom lesion {label} not in the truth")


def _describe(comparison: Comparison) -> str:
    return "; ".join(
        f"{a.label}/{a.reference_labels} {a.status.value} {a.region.value} "
        f"{a.volume_ml:.2f} ml RAC {a.category and int(a.category)} {a.rule}"
        for a in comparison.lesions
    )


@pytest.mark.parametrize(
    ("scenario", "overall"),
    [
        ("response", RAC.HIGHLY_LIKELY_RESPONDING),
        ("partial", RAC.LIKELY_RESPONDING),
        ("progression", RAC.HIGHLY_LIKELY_PROGRESSING),
        ("stable", RAC.NO_CHANGE),
    ],
)
def test_scenario_gives_the_designed_category(scenario: str, overall: ResponseCategory) -> None:
    base_phantom, _, baseline, base_map = _time_point("baseline")
    phantom, _, follow, follow_map = _time_point(scenario)
    assert all(base_map.values()) and all(follow_map.values()), (
        "every segmented component is a phantom lesion",
        base_map,
        follow_map,
    )
    comparison = compare_exams(follow, [baseline])
    detail = _describe(comparison)

    # Matching: the same phantom lesion on both sides of every group.
    matching = comparison.matching_vs_previous
    for group in matching.groups:
        now = {_baseline_label(phantom, follow_map[c]) for c in group.current_labels}
        then = {base_map[r] for r in group.reference_labels}
        assert now == then, f"{scenario}: group {group} pairs phantom lesions {now} with {then}"
    detected_at_baseline = set(base_map.values())
    for label in matching.new_labels:
        origin = _baseline_label(phantom, follow_map[label])
        assert origin is None or origin not in detected_at_baseline, (
            f"{scenario}: lesion {label} (phantom {follow_map[label]}) seen at baseline but new"
        )
    detected_now = {_baseline_label(phantom, p) for p in follow_map.values()}
    for label in matching.disappeared_labels:
        assert base_map[label] not in detected_now, f"{scenario}: {label} still detected"
    shift = np.subtract(phantom.truth["patient_shift_mm"], base_phantom.truth["patient_shift_mm"])
    assert np.abs(np.subtract(matching.shift_mm, shift)).max() < 5.0

    categories = Counter(a.category for a in comparison.lesions if a.category is not None)
    assert comparison.overall_primary is overall, f"{scenario}: {detail}"
    if scenario in ("response", "partial", "stable"):
        assert all(c <= RAC.NO_CHANGE for c in categories), f"{scenario}: {detail}"
        assert all(r.primary is overall for r in comparison.regions), f"{scenario}: {detail}"
    if scenario == "progression":
        designed_new = [
            a
            for a in comparison.lesions
            if a.status is LesionStatus.NEW
            and a.label is not None
            and _baseline_label(phantom, follow_map[a.label]) is None
        ]
        assert designed_new, detail
        assert any(a.category is RAC.HIGHLY_LIKELY_PROGRESSING for a in designed_new), detail
        grown = [a for a in comparison.lesions if a.rule == "equivocal_growth"]
        assert len(grown) >= 3, detail
    if scenario == "response":
        assert comparison.vs_previous.adc_median_change_pct is not None
        assert comparison.vs_previous.adc_median_change_pct > 25.0
        assert comparison.vs_previous.tdv_change_pct is not None
        assert comparison.vs_previous.tdv_change_pct < -20.0
    assert baseline.adc is not None
    assert comparison.yellow_lower_um2s == pytest.approx(baseline.adc.p95)
