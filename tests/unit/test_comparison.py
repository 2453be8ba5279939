"""Comparison across exams: summaries, lesion matching, MET-RADS-P style rules (issue 6)."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest

from processing.comparison import (
    LesionStatus,
    compare_exams,
    comparison_to_dict,
    yellow_lower_bound,
)
from processing.errors import NoPriorExamError, SummaryFormatError
from processing.exam_summary import ExamSummary, exam_sort_key
from processing.lesion_matching import (
    MatchingSettings,
    equivalent_radius_mm,
    estimate_shift,
    match_lesions,
)
from processing.response import (
    LesionChange,
    ResponseCategory,
    ResponseSettings,
    assess_persistent_lesion,
    combine_categories,
)
from processing.results import AdcStats, BodyRegion, ClassVolumes, Histogram, LesionStats

RAC = ResponseCategory


def _adc(median: float, p95: float | None = None) -> AdcStats:
    return AdcStats(
        mean=median * 1.02,
        median=median,
        sd=150.0,
        p5=median * 0.7,
        p10=median * 0.75,
        p25=median * 0.9,
        p75=median * 1.1,
        p90=median * 1.25,
        p95=median * 1.3 if p95 is None else p95,
        skewness=0.4,
        kurtosis=1.2,
    )


def _lesion(
    label: int,
    centroid: tuple[float, float, float],
    *,
    volume: float = 5.0,
    adc: float = 800.0,
    high_b: float = 100.0,
    region: BodyRegion = BodyRegion.LUMBOSACRAL_SPINE,
) -> LesionStats:
    return LesionStats(
        label=label,
        volume_ml=volume,
        adc_mean=adc * 1.01,
        adc_median=adc,
        centroid_mm=centroid,
        region=region,
        mean_high_b=high_b,
    )


def _summary(
    uid: str,
    date: str,
    lesions: list[LesionStats],
    *,
    time: str = "101500",
    adc: AdcStats | None = None,
) -> ExamSummary:
    tdv = sum(lesion.volume_ml for lesion in lesions)
    return ExamSummary(
        study_instance_uid=uid,
        study_date=date,
        study_time=time,
        patient_id="PAT-1",
        issuer_of_patient_id="HOSP",
        tdv_ml=tdv,
        adc=adc if adc is not None else (_adc(800.0) if lesions else None),
        histogram=Histogram(
            bin_edges_um2s=(0.0, 500.0, 1000.0, 1500.0),
            counts=(3, 10, 2),
            voxel_volume_ml=0.045,
        ),
        classes=ClassVolumes(
            red_ml=tdv * 0.8,
            yellow_ml=tdv * 0.15,
            green_ml=tdv * 0.05,
            yellow_lower_um2s=1040.0,
            green_lower_um2s=1500.0,
            yellow_lower_source="default",
        ),
        lesions=tuple(lesions),
        sr_sop_instance_uid=f"{uid}.9",
        seg_sop_instance_uid=f"{uid}.8",
        software_version="0.1.0",
        voxel_volume_ml=0.045,
    )


# Baseline: six lesions spread over the skeleton (LPS mm), 4 ml each at ADC 800.
_SITES = {
    1: ((0.0, 30.0, -200.0), BodyRegion.LUMBOSACRAL_SPINE),
    2: ((0.0, 35.0, -120.0), BodyRegion.DORSAL_SPINE),
    3: ((-90.0, 10.0, -380.0), BodyRegion.PELVIS),
    4: ((95.0, 5.0, -390.0), BodyRegion.PELVIS),
    5: ((60.0, -20.0, -60.0), BodyRegion.THORAX),
    6: ((0.0, 10.0, 120.0), BodyRegion.SKULL),
}
_SHIFT = np.array([2.0, -3.0, 6.0])  # repositioning between visits


def _baseline(volume: float = 4.0, adc: float = 800.0) -> ExamSummary:
    lesions = [
        _lesion(label, centroid, volume=volume, adc=adc, region=region)
        for label, (centroid, region) in _SITES.items()
    ]
    return _summary("1.2.3.1", "20240110", lesions, adc=_adc(adc, p95=1256.0))


def _follow_up(
    *,
    volume_factor: float = 1.0,
    adc_factor: float = 1.0,
    high_b_factor: float = 1.0,
    extra: list[LesionStats] | None = None,
    drop: tuple[int, ...] = (),
    uid: str = "1.2.3.2",
    date: str = "20240410",
) -> ExamSummary:
    lesions = []
    for label, (centroid, region) in _SITES.items():
        if label in drop:
            continue
        moved = tuple(float(v) for v in np.asarray(centroid) + _SHIFT)
        # Labels of the follow-up are numbered differently from the baseline's.
        lesions.append(
            _lesion(
                label + 10,
                (moved[0], moved[1], moved[2]),
                volume=4.0 * volume_factor,
                adc=800.0 * adc_factor,
                high_b=100.0 * high_b_factor,
                region=region,
            )
        )
    lesions.extend(extra or [])
    return _summary(uid, date, lesions, adc=_adc(800.0 * adc_factor))


# --- summaries ------------------------------------------------------------------------


def test_summary_round_trips_through_json() -> None:
    summary = _baseline()
    text = json.dumps(summary.to_dict(), allow_nan=False)
    assert ExamSummary.from_dict(json.loads(text)) == summary


def test_summary_round_trip_keeps_nan_as_null() -> None:
    lesion = replace(_lesion(1, (0.0, 0.0, 0.0)), mean_high_b=math.nan)
    summary = replace(_summary("1.2", "20240101", [lesion]), adc=None)
    data = json.loads(json.dumps(summary.to_dict(), allow_nan=False))
    assert data["lesions"][0]["mean_high_b"] is None
    back = ExamSummary.from_dict(data)
    assert math.isnan(back.lesions[0].mean_high_b)
    assert back.adc is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("tdv_ml"), "tdv_ml: missing"),
        (lambda d: d.update(study_date="2024-01-01"), "study_date"),
        (lambda d: d["lesions"][0].update(region="liver"), "lesions[0].region"),
        (lambda d: d["histogram"].update(counts=[1]), "histogram"),
        (lambda d: d.update(schema=99), "schema"),
        (lambda d: d["lesions"][1].update(label=d["lesions"][0]["label"]), "unique"),
    ],
)
def test_summary_rejects_bad_json_naming_the_field(mutate: object, message: str) -> None:
    data = _baseline().to_dict()
    mutate(data)  # type: ignore[operator]
    with pytest.raises(SummaryFormatError, match=message.replace("[", r"\[")):
        ExamSummary.from_dict(data)


def test_exams_sort_by_date_then_time() -> None:
    a = _summary("9.1", "20240101", [], time="0930")
    b = _summary("1.1", "20240101", [], time="093000.5")
    c = _summary("5.1", "20231231", [], time="235959")
    assert sorted([a, b, c], key=exam_sort_key) == [c, a, b]


# --- matching -------------------------------------------------------------------------


def test_shift_of_a_few_mm_is_recovered_and_all_lesions_match() -> None:
    baseline, follow = _baseline(), _follow_up()
    matching = match_lesions(follow.lesions, baseline.lesions)
    np.testing.assert_allclose(matching.shift_mm, _SHIFT, atol=1e-6)
    assert matching.new_labels == ()
    assert matching.disappeared_labels == ()
    pairs = {g.current_labels: g.reference_labels for g in matching.groups}
    assert pairs == {(label + 10,): (label,) for label in _SITES}


def test_large_shift_along_the_body_axis_is_found_by_consensus() -> None:
    # 45 mm: more than the gate, less than the spacing between most lesions.
    big = np.array([0.0, 0.0, 45.0])
    baseline = _baseline()
    moved = [
        replace(lesion, centroid_mm=(x, y, z + 45.0))
        for lesion in baseline.lesions
        for x, y, z in [lesion.centroid_mm]
    ]
    shift, support = estimate_shift(moved, baseline.lesions)
    np.testing.assert_allclose(shift, big, atol=1e-6)
    assert support == len(_SITES)
    without = match_lesions(moved, baseline.lesions, MatchingSettings(shift_search_max_mm=0.0))
    assert len(without.new_labels) > 0  # the shift really matters


def test_new_and_disappeared_lesions_are_reported() -> None:
    new_site = _lesion(30, (-40.0, 40.0, -250.0), volume=3.0, region=BodyRegion.LUMBOSACRAL_SPINE)
    matching = match_lesions(_follow_up(drop=(5,), extra=[new_site]).lesions, _baseline().lesions)
    assert matching.new_labels == (30,)
    assert matching.disappeared_labels == (5,)
    np.testing.assert_allclose(matching.shift_mm, _SHIFT, atol=1e-6)


def test_split_lesion_is_grouped_with_its_origin() -> None:
    reference = [_lesion(1, (0.0, 0.0, 0.0), volume=20.0), _lesion(2, (0.0, 0.0, 200.0))]
    current = [
        _lesion(1, (0.0, 0.0, -8.0), volume=9.0),
        _lesion(2, (0.0, 0.0, 9.0), volume=9.0),
        _lesion(3, (0.0, 0.0, 200.0)),
    ]
    matching = match_lesions(current, reference)
    groups = {g.reference_labels: g.current_labels for g in matching.groups}
    assert groups == {(1,): (1, 2), (2,): (3,)}
    assert matching.new_labels == ()


def test_gate_scales_with_lesion_size() -> None:
    assert equivalent_radius_mm(4.0 * math.pi / 3.0) == pytest.approx(10.0)  # 10 mm sphere
    # Centroids 25 mm apart: beyond the 15 mm minimum gate, inside two 20 ml radii (~34 mm).
    small_ref, small_cur = (
        [_lesion(1, (0.0, 0.0, 0.0), volume=0.2)],
        [_lesion(1, (0.0, 0.0, 25.0), volume=0.2)],
    )
    big_ref, big_cur = (
        [_lesion(1, (0.0, 0.0, 0.0), volume=20.0)],
        [_lesion(1, (0.0, 0.0, 25.0), volume=20.0)],
    )
    assert match_lesions(small_cur, small_ref).new_labels == (1,)
    assert match_lesions(big_cur, big_ref).new_labels == ()


def test_lesion_without_centroid_is_an_error() -> None:
    bad = [_lesion(7, (math.nan, 0.0, 0.0))]
    with pytest.raises(ValueError, match="current lesion 7"):
        match_lesions(bad, _baseline().lesions)


# --- rules ----------------------------------------------------------------------------


def _change(
    *,
    volume: tuple[float, float] = (4.0, 4.0),
    adc: tuple[float, float] = (800.0, 800.0),
    high_b: tuple[float, float] = (100.0, 100.0),
) -> LesionChange:
    return LesionChange(
        reference_study_uid="1.2.3.1",
        current_labels=(1,),
        reference_labels=(1,),
        volume_ml=volume[1],
        reference_volume_ml=volume[0],
        adc_um2s=adc[1],
        reference_adc_um2s=adc[0],
        high_b=high_b[1],
        reference_high_b=high_b[0],
        distance_mm=1.0,
    )


@pytest.mark.parametrize(
    ("change", "category", "rule"),
    [
        (_change(adc=(1300.0, 1550.0)), RAC.HIGHLY_LIKELY_RESPONDING, "adc_crossed_responding"),
        (
            _change(adc=(700.0, 1000.0), high_b=(100.0, 70.0)),
            RAC.HIGHLY_LIKELY_RESPONDING,
            "adc_rise_highly_likely",
        ),
        (_change(adc=(700.0, 1000.0)), RAC.NO_CHANGE, "no_change"),  # +43 %, high-b steady
        (_change(adc=(900.0, 1150.0)), RAC.LIKELY_RESPONDING, "adc_into_intermediate"),
        (
            _change(adc=(1050.0, 1350.0), high_b=(100.0, 80.0)),
            RAC.LIKELY_RESPONDING,
            "adc_rise_likely",
        ),
        (_change(adc=(1050.0, 1350.0)), RAC.NO_CHANGE, "no_change"),  # +29 %, high-b steady
        (_change(adc=(1380.0, 1420.0)), RAC.NO_CHANGE, "no_change"),  # crossing by noise
        (_change(adc=(980.0, 1020.0)), RAC.NO_CHANGE, "no_change"),
        (_change(), RAC.NO_CHANGE, "no_change"),
        (_change(high_b=(100.0, 130.0)), RAC.LIKELY_PROGRESSING, "rising_high_b"),
        (_change(adc=(1450.0, 1500.0), high_b=(100.0, 130.0)), RAC.NO_CHANGE, "no_change"),
        (_change(volume=(4.0, 6.0)), RAC.LIKELY_PROGRESSING, "equivocal_growth"),
        (_change(volume=(4.0, 7.0)), RAC.HIGHLY_LIKELY_PROGRESSING, "clear_growth"),
        (_change(volume=(0.3, 0.6)), RAC.NO_CHANGE, "no_change"),  # +100 % but only 0.3 ml
        (
            _change(volume=(4.0, 7.0), adc=(800.0, 1500.0)),
            RAC.HIGHLY_LIKELY_PROGRESSING,
            "clear_growth",
        ),
    ],
)
def test_each_lesion_rule_fires_as_designed(
    change: LesionChange, category: ResponseCategory, rule: str
) -> None:
    outcome = assess_persistent_lesion(change, change, ResponseSettings())
    assert (outcome.category, outcome.rule) == (category, rule), outcome.reason


def test_growth_must_exceed_a_few_voxels_of_the_coarser_grid() -> None:
    change = _change(volume=(4.0, 6.0))  # +50 %, +2 ml
    fine = assess_persistent_lesion(change, change, ResponseSettings())
    assert fine.rule == "equivocal_growth"
    coarse = replace(change, voxel_volume_ml=0.6)  # 4 voxels = 2.4 ml > 2 ml
    assert assess_persistent_lesion(coarse, coarse, ResponseSettings()).rule == "no_change"


def test_falling_high_b_requirement_can_be_switched_off() -> None:
    settings = ResponseSettings(response_requires_falling_high_b=False)
    outcome = assess_persistent_lesion(
        _change(adc=(700.0, 1000.0)), _change(adc=(700.0, 1000.0)), settings
    )
    assert outcome.category is RAC.HIGHLY_LIKELY_RESPONDING


def test_settings_reject_inconsistent_thresholds() -> None:
    with pytest.raises(ValueError, match="adc_active_um2s"):
        ResponseSettings(adc_active_um2s=1500.0)
    with pytest.raises(ValueError, match="equivocal_growth_pct"):
        ResponseSettings(equivocal_growth_pct=80.0)
    with pytest.raises(ValueError, match="high_b_fall_pct"):
        ResponseSettings(high_b_fall_pct=-1.0)


def test_combination_progression_dominates_else_volume() -> None:
    assert combine_categories([(RAC.NO_CHANGE, 50.0), (RAC.LIKELY_PROGRESSING, 0.5)]) == (
        RAC.LIKELY_PROGRESSING,
        RAC.NO_CHANGE,
    )
    assert combine_categories(
        [(RAC.HIGHLY_LIKELY_RESPONDING, 30.0), (RAC.NO_CHANGE, 5.0), (RAC.NO_CHANGE, 4.0)]
    ) == (RAC.HIGHLY_LIKELY_RESPONDING, RAC.NO_CHANGE)
    assert combine_categories([(RAC.LIKELY_RESPONDING, 2.0), (RAC.NO_CHANGE, 2.0)]) == (
        RAC.NO_CHANGE,
        RAC.LIKELY_RESPONDING,
    )
    assert combine_categories([]) == (None, None)


# --- whole comparisons ----------------------------------------------------------------


def test_response_gives_rac1_everywhere_and_changes_against_baseline() -> None:
    follow = _follow_up(volume_factor=0.7, adc_factor=1.45, high_b_factor=0.7)
    comparison = compare_exams(follow, [_baseline()])
    assert comparison.overall_primary is RAC.HIGHLY_LIKELY_RESPONDING
    assert {r.region: r.primary for r in comparison.regions} == {
        region: RAC.HIGHLY_LIKELY_RESPONDING for _, region in _SITES.values()
    }
    assert comparison.vs_previous.tdv_change_pct == pytest.approx(-30.0)
    assert comparison.vs_previous.adc_median_change_pct == pytest.approx(45.0)
    assert comparison.vs_previous.adc_median_change_um2s == pytest.approx(360.0)
    assert comparison.vs_baseline is not None
    assert comparison.vs_baseline.reference_study_uid == "1.2.3.1"
    lesion = next(a for a in comparison.lesions if a.label == 11)
    assert lesion.vs_previous is not None
    assert lesion.vs_previous.volume_change_pct == pytest.approx(-30.0)
    assert lesion.vs_previous.adc_change_pct == pytest.approx(45.0)


def test_partial_response_gives_rac2() -> None:
    follow = _follow_up(adc_factor=1.3, high_b_factor=0.8)
    comparison = compare_exams(follow, [_baseline()])
    assert comparison.overall_primary is RAC.LIKELY_RESPONDING
    assert {a.rule for a in comparison.lesions} == {"adc_into_intermediate"}


def test_stable_disease_gives_rac3() -> None:
    follow = _follow_up(volume_factor=1.05, adc_factor=0.98, high_b_factor=1.03)
    comparison = compare_exams(follow, [_baseline()])
    assert comparison.overall_primary is RAC.NO_CHANGE
    assert all(r.primary is RAC.NO_CHANGE for r in comparison.regions)
    assert all(a.status is LesionStatus.PERSISTENT for a in comparison.lesions)


def test_progression_new_lesions_by_size_and_growth() -> None:
    big_new = _lesion(40, (-30.0, 60.0, 20.0), volume=2.5, region=BodyRegion.THORAX)
    bright_new = _lesion(41, (80.0, 0.0, -600.0), volume=1.5, adc=1600.0, region=BodyRegion.LIMBS)
    follow = _follow_up(volume_factor=1.5, extra=[big_new, bright_new])
    comparison = compare_exams(follow, [_baseline()])
    by_region = {r.region: r for r in comparison.regions}
    assert by_region[BodyRegion.THORAX].primary is RAC.HIGHLY_LIKELY_PROGRESSING
    assert by_region[BodyRegion.THORAX].new_lesions == 1
    assert by_region[BodyRegion.LIMBS].primary is RAC.LIKELY_PROGRESSING  # equivocal: ADC 1600
    assert by_region[BodyRegion.PELVIS].primary is RAC.LIKELY_PROGRESSING  # +50 % volume
    assert comparison.overall_primary is RAC.HIGHLY_LIKELY_PROGRESSING
    rules = {a.label: a.rule for a in comparison.lesions}
    assert rules[40] == "new_unequivocal"
    assert rules[41] == "new_equivocal"


def test_disappeared_lesion_counts_as_response_in_its_region() -> None:
    follow = _follow_up(drop=(6,))
    comparison = compare_exams(follow, [_baseline()])
    skull = comparison.region(BodyRegion.SKULL)
    assert skull is not None
    assert skull.primary is RAC.HIGHLY_LIKELY_RESPONDING
    assert skull.disappeared_lesions == 1
    assert skull.lesions == 0
    gone = [a for a in comparison.lesions if a.status is LesionStatus.DISAPPEARED]
    assert [a.reference_labels for a in gone] == [(6,)]


def test_new_or_vanished_focus_near_the_detection_limit_does_not_count() -> None:
    """A 0.7 ml focus may have been there at 0.45 ml, below the 0.5 ml reporting limit."""
    near = _lesion(60, (150.0, 0.0, -700.0), volume=0.7, region=BodyRegion.LIMBS)
    baseline = _baseline()
    small_then = _lesion(7, (-150.0, 0.0, -700.0), volume=0.8, region=BodyRegion.LIMBS)
    baseline = replace(baseline, lesions=(*baseline.lesions, small_then))
    comparison = compare_exams(_follow_up(extra=[near]), [baseline])
    found = {a.rule: a for a in comparison.lesions if a.rule.endswith("near_detection_limit")}
    assert set(found) == {"new_near_detection_limit", "gone_near_detection_limit"}
    assert all(a.category is None for a in found.values())
    assert "0.5 ml detection limit" in found["new_near_detection_limit"].reason
    assert comparison.region(BodyRegion.LIMBS) is None
    assert comparison.overall_primary is RAC.NO_CHANGE

    # Past the limit plus the growth floor (0.5 + 0.5 ml) a new focus counts again.
    bigger = replace(near, volume_ml=1.2)
    counted = compare_exams(_follow_up(extra=[bigger]), [_baseline()])
    assert next(a for a in counted.lesions if a.label == 60).rule == "new_unequivocal"
    # A coarse grid widens the margin: 4 voxels of 0.2 ml = 0.8 ml floor, 1.3 ml margin.
    coarse = compare_exams(replace(_follow_up(extra=[bigger]), voxel_volume_ml=0.2), [_baseline()])
    assert next(a for a in coarse.lesions if a.label == 60).category is None
    # Without a detection limit, the MET-RADS-P rule alone: a new 0.7 ml focus is equivocal.
    off = compare_exams(
        _follow_up(extra=[near]), [_baseline()], settings=ResponseSettings(detection_limit_ml=0.0)
    )
    assert next(a for a in off.lesions if a.label == 60).rule == "new_equivocal"


def test_tiny_new_focus_does_not_count() -> None:
    speck = _lesion(50, (150.0, 0.0, -700.0), volume=0.03, region=BodyRegion.LIMBS)
    comparison = compare_exams(_follow_up(extra=[speck]), [_baseline()])
    assert comparison.region(BodyRegion.LIMBS) is None
    speck_assessment = next(a for a in comparison.lesions if a.label == 50)
    assert speck_assessment.category is None
    assert speck_assessment.rule == "below_minimum_size"
    assert comparison.overall_primary is RAC.NO_CHANGE


def test_yellow_bound_is_the_baseline_p95_and_baseline_can_move() -> None:
    """TTL case study: exam 4 becomes the second-line baseline; later exams use its p95."""
    exam1 = _baseline()
    exam2 = _follow_up(uid="1.2.3.2", date="20240410", adc_factor=1.3, high_b_factor=0.8)
    exam3 = _follow_up(uid="1.2.3.3", date="20240710", adc_factor=1.35, high_b_factor=0.75)
    exam4 = replace(
        _follow_up(uid="1.2.3.4", date="20241010", volume_factor=1.9),
        adc=_adc(800.0, p95=1127.0),
    )
    exam5 = _follow_up(uid="1.2.3.5", date="20250110", volume_factor=1.9, adc_factor=1.2)
    assert yellow_lower_bound(exam1) == 1256.0

    on_first_line = compare_exams(exam3, [exam1, exam2, exam4, exam5])  # later ones ignored
    assert on_first_line.previous_study_uid == "1.2.3.2"
    assert on_first_line.baseline_study_uid == "1.2.3.1"
    assert on_first_line.yellow_lower_um2s == 1256.0
    assert [p.study_instance_uid for p in on_first_line.trend] == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]

    relapse = compare_exams(exam4, [exam1, exam2, exam3])
    # Against the previous exam (the nadir) the relapse shows as clear growth.
    assert relapse.overall_primary is RAC.HIGHLY_LIKELY_PROGRESSING

    as_new_baseline = compare_exams(exam4, [exam1, exam2, exam3], baseline_study_uid="1.2.3.4")
    assert as_new_baseline.vs_baseline is None
    assert as_new_baseline.yellow_lower_um2s == 1127.0

    second_line = compare_exams(exam5, [exam1, exam2, exam3, exam4], baseline_study_uid="1.2.3.4")
    assert second_line.baseline_study_uid == "1.2.3.4"
    assert second_line.yellow_lower_um2s == 1127.0
    assert [p.is_baseline for p in second_line.trend] == [False, False, False, True, False]
    assert second_line.trend[-1].is_current


def test_response_rules_use_the_baseline_progression_the_previous_exam() -> None:
    """A lesion up 50 % ADC since baseline but steady since the last exam still responds."""
    exam1 = _baseline()
    exam2 = _follow_up(uid="1.2.3.2", date="20240410", adc_factor=1.5, high_b_factor=0.7)
    exam3 = _follow_up(uid="1.2.3.3", date="20240710", adc_factor=1.5, high_b_factor=0.7)
    comparison = compare_exams(exam3, [exam1, exam2])
    assert comparison.overall_primary is RAC.HIGHLY_LIKELY_RESPONDING
    assert comparison.vs_previous.adc_median_change_pct == pytest.approx(0.0)


def test_comparison_refuses_other_patients_and_missing_priors() -> None:
    follow = _follow_up()
    with pytest.raises(NoPriorExamError, match="no exam earlier"):
        compare_exams(_baseline(), [follow])
    other = replace(_baseline(), patient_id="PAT-2")
    with pytest.raises(ValueError, match="another patient"):
        compare_exams(follow, [other])
    with pytest.raises(ValueError, match=r"baseline study 9\.9"):
        compare_exams(follow, [_baseline()], baseline_study_uid="9.9")


def test_comparison_dict_is_json_with_the_issue_keys() -> None:
    follow = _follow_up(volume_factor=0.7, adc_factor=1.45, high_b_factor=0.7, drop=(6,))
    block = comparison_to_dict(compare_exams(follow, [_baseline()]))
    text = json.dumps(block, allow_nan=False)
    data = json.loads(text)
    assert data["prior_study_uid"] == "1.2.3.1"
    assert data["baseline_study_uid"] == "1.2.3.1"
    assert data["tdv_change_pct"] == pytest.approx((0.7 * 4 * 5 - 24) / 24 * 100)
    assert data["adc_median_change_pct"] == pytest.approx(45.0)
    assert data["rac_overall"] == 1
    assert data["rac_by_region"]["skull"] == 1
    assert data["rac_by_region"]["pelvis"] == 1
    assert data["yellow_lower_um2s"] == 1256.0
    assert "radiologist" in data["suggestion_note"]
    assert data["settings"]["response_reference"] == "baseline"
    statuses = sorted(item["status"] for item in data["lesions"])
    assert statuses == ["disappeared"] + ["persistent"] * 5
