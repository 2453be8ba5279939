"""Lesion correspondence across exams (processing.lesion_matching).

Inputs are built here: lesions at chosen patient coordinates (LPS mm) and
volumes, so every expected pairing, shift and gate can be worked out by hand.
The last test matches the phantom's baseline with its progression time point,
whose truth says which lesion is which and how the patient moved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from processing.lesion_matching import (
    LesionGroup,
    LesionMatching,
    MatchingSettings,
    equivalent_radius_mm,
    estimate_shift,
    match_lesions,
)
from processing.phantom import make_phantom
from processing.results import BodyRegion, LesionStats

SMALL_ML = 0.1  # equivalent radius 2.9 mm: the gate is gate_min_mm (15 mm) for two such lesions
# No support is ever enough: the shift stays zero (and is not refined), so pairing is seen alone.
NO_SHIFT = MatchingSettings(min_shift_inliers=1000)


def _lesion(
    label: int, centroid: Sequence[float], volume_ml: float = SMALL_ML, adc: float = 800.0
) -> LesionStats:
    x, y, z = (float(c) for c in centroid)
    return LesionStats(
        label=label,
        volume_ml=volume_ml,
        adc_mean=adc,
        adc_median=adc,
        centroid_mm=(x, y, z),
        region=BodyRegion.OTHER,
        mean_high_b=100.0,
    )


def _at_z(*zs: float, volume_ml: float = SMALL_ML, first_label: int = 1) -> list[LesionStats]:
    """Lesions on the body axis at heights ``zs`` (labels counted from ``first_label``)."""
    return [_lesion(first_label + k, (0.0, 0.0, z), volume_ml=volume_ml) for k, z in enumerate(zs)]


def _pairs(matching: LesionMatching) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    return [(group.current_labels, group.reference_labels) for group in matching.groups]


# ---------------------------------------------------------------- global shift


def test_a_rigid_translation_is_recovered_and_every_lesion_pairs_with_its_own() -> None:
    reference = [
        _lesion(1, (10.0, -40.0, -300.0), 5.0),
        _lesion(2, (-60.0, 20.0, -150.0), 2.0),
        _lesion(3, (30.0, 35.0, -500.0), 1.0),
        _lesion(4, (-20.0, 0.0, -700.0), 0.5),
    ]
    shift = np.array([3.0, -2.0, 25.0])  # more than the gate along the body axis
    # current labels in another order: pairing must follow position, not label
    order = [2, 0, 3, 1]
    current = [
        _lesion(k + 1, np.add(reference[i].centroid_mm, shift), reference[i].volume_ml)
        for k, i in enumerate(order)
    ]
    matching = match_lesions(current, reference)
    np.testing.assert_allclose(matching.shift_mm, shift, atol=1e-9)
    assert matching.shift_support == 4
    assert _pairs(matching) == [((1,), (3,)), ((2,), (1,)), ((3,), (4,)), ((4,), (2,))]
    assert all(group.distance_mm == pytest.approx(0.0, abs=1e-9) for group in matching.groups)
    assert matching.new_labels == ()
    assert matching.disappeared_labels == ()


def test_the_shift_points_from_the_reference_to_the_current_exam() -> None:
    reference = _at_z(0.0, 100.0, 200.0)
    current = _at_z(30.0, 130.0, 230.0)
    shift, support = estimate_shift(current, reference)
    assert shift.tolist() == [0.0, 0.0, 30.0]
    assert support == 3
    back, _ = estimate_shift(reference, current)
    assert back.tolist() == [0.0, 0.0, -30.0]


def test_the_winning_shift_is_refined_to_the_median_displacement_of_its_inliers() -> None:
    # displacements 9, 10 and 12 mm: every proposal has support 3, the smallest (9)
    # wins, and the refinement moves it to the median (10)
    reference = _at_z(0.0, 100.0, 200.0)
    current = _at_z(9.0, 110.0, 212.0)
    shift, support = estimate_shift(current, reference)
    assert support == 3
    assert shift.tolist() == [0.0, 0.0, 10.0]


def test_equally_supported_shifts_go_to_the_smaller_one() -> None:
    # +12 pairs (0, 30) with (-12, 18); -18 pairs them with (18, 48): support 2 each
    current = _at_z(0.0, 30.0)
    reference = _at_z(-12.0, 18.0, 48.0)
    shift, support = estimate_shift(current, reference)
    assert support == 2
    assert shift.tolist() == [0.0, 0.0, 12.0]


def test_a_tie_with_no_shift_keeps_no_shift() -> None:
    # zero pairs (0, 40) with (0, 40); +40 pairs them with (-40, 0): support 2 each
    current = _at_z(0.0, 40.0)
    reference = _at_z(-40.0, 0.0, 40.0)
    shift, support = estimate_shift(current, reference)
    assert support == 2
    assert shift.tolist() == [0.0, 0.0, 0.0]


def test_one_persisting_lesion_cannot_establish_a_shift() -> None:
    # one lesion per exam 12 mm apart: support 1 < min_shift_inliers (2), so no shift,
    # and the pair is judged at its raw distance (inside the 15 mm gate)
    current = _at_z(12.0)
    reference = _at_z(0.0)
    matching = match_lesions(current, reference)
    assert matching.shift_mm == (0.0, 0.0, 0.0)
    assert matching.shift_support == 1
    assert _pairs(matching) == [((1,), (1,))]
    assert matching.groups[0].distance_mm == pytest.approx(12.0)
    # 20 mm apart: no shift either, so one new and one disappeared lesion
    far = match_lesions(_at_z(20.0), reference)
    assert far.shift_mm == (0.0, 0.0, 0.0)
    assert far.groups == ()
    assert far.new_labels == (1,)
    assert far.disappeared_labels == (1,)
    # one lesion is enough when the settings say so
    lenient = match_lesions(_at_z(20.0), reference, MatchingSettings(min_shift_inliers=1))
    assert lenient.shift_mm == (0.0, 0.0, 20.0)
    assert _pairs(lenient) == [((1,), (1,))]


def test_shifts_beyond_the_search_range_are_not_considered() -> None:
    reference = _at_z(0.0, 200.0, 400.0)
    current = _at_z(100.0, 300.0, 500.0)  # 100 mm > shift_search_max_mm (80)
    matching = match_lesions(current, reference)
    assert matching.shift_mm == (0.0, 0.0, 0.0)
    assert matching.groups == ()
    assert matching.new_labels == (1, 2, 3)
    assert matching.disappeared_labels == (1, 2, 3)
    wider = match_lesions(current, reference, MatchingSettings(shift_search_max_mm=120.0))
    assert wider.shift_mm == (0.0, 0.0, 100.0)
    assert _pairs(wider) == [((1,), (1,)), ((2,), (2,)), ((3,), (3,))]


@pytest.mark.parametrize(("moved_mm", "found"), [(80.0, True), (80.5, False)])
def test_the_search_range_includes_its_limit(moved_mm: float, found: bool) -> None:
    reference = _at_z(0.0, 200.0, 400.0)
    current = _at_z(moved_mm, 200.0 + moved_mm, 400.0 + moved_mm)
    shift, support = estimate_shift(current, reference)
    assert shift.tolist() == [0.0, 0.0, moved_mm if found else 0.0]
    assert support == (3 if found else 0)


def test_two_persisting_lesions_outvote_a_majority_of_new_and_vanished_ones() -> None:
    # persisting: reference (0, 0, 0) and (50, 0, -200), moved by (0, 0, 30);
    # three new and three vanished lesions, each far from everything else
    reference = [
        _lesion(1, (0.0, 0.0, 0.0), 3.0),
        _lesion(2, (50.0, 0.0, -200.0), 3.0),
        _lesion(3, (-80.0, 40.0, -400.0)),
        _lesion(4, (80.0, -40.0, -600.0)),
        _lesion(5, (0.0, 60.0, -800.0)),
    ]
    current = [
        _lesion(1, (-100.0, 0.0, 150.0)),
        _lesion(2, (0.0, 0.0, 30.0), 3.0),
        _lesion(3, (100.0, 20.0, -500.0)),
        _lesion(4, (50.0, 0.0, -170.0), 3.0),
        _lesion(5, (-50.0, -60.0, -1000.0)),
    ]
    matching = match_lesions(current, reference)
    assert matching.shift_mm == (0.0, 0.0, 30.0)
    assert matching.shift_support == 2
    assert _pairs(matching) == [((2,), (1,)), ((4,), (2,))]
    assert matching.new_labels == (1, 3, 5)
    assert matching.disappeared_labels == (3, 4, 5)


def test_only_the_largest_lesions_propose_shifts() -> None:
    # two large lesions moved by +20 mm, three small ones by -20 mm
    big, small = 20.0, SMALL_ML
    reference = [
        *_at_z(0.0, 300.0, volume_ml=big),
        *_at_z(600.0, 900.0, 1200.0, volume_ml=small, first_label=3),
    ]
    current = [
        *_at_z(20.0, 320.0, volume_ml=big),
        *_at_z(580.0, 880.0, 1180.0, volume_ml=small, first_label=3),
    ]
    everyone, support = estimate_shift(current, reference)
    assert (everyone.tolist(), support) == ([0.0, 0.0, -20.0], 3)
    largest, support = estimate_shift(
        current, reference, MatchingSettings(shift_estimation_lesions=2)
    )
    assert (largest.tolist(), support) == ([0.0, 0.0, 20.0], 2)


def test_a_lesion_with_a_non_finite_volume_ranks_last_for_the_shift() -> None:
    # the NaN-volume lesions would propose -20; ranked last, they are left out
    reference = [*_at_z(0.0, 300.0, volume_ml=1.0), *_at_z(600.0, 900.0, first_label=3)]
    current = [*_at_z(20.0, 320.0, volume_ml=1.0), *_at_z(580.0, 880.0, first_label=3)]
    for lesions in (reference, current):
        lesions[2:] = [
            _lesion(lesion.label, lesion.centroid_mm, volume_ml=math.nan) for lesion in lesions[2:]
        ]
    shift, _ = estimate_shift(current, reference, MatchingSettings(shift_estimation_lesions=2))
    assert shift.tolist() == [0.0, 0.0, 20.0]


# ---------------------------------------------------------------- pairing


def test_the_assignment_minimises_the_total_distance_not_each_nearest_pair() -> None:
    # current 0 and 12, reference 5 and -6 (no shift).
    # Nearest first would pair 0-5 (5 mm) and leave 12 and -6 (18 mm > gate) apart;
    # the optimal assignment pairs 0 with -6 and 12 with 5 (6 + 7 mm).
    matching = match_lesions(_at_z(0.0, 12.0), _at_z(5.0, -6.0), NO_SHIFT)
    assert matching.shift_mm == (0.0, 0.0, 0.0)
    assert _pairs(matching) == [((1,), (2,)), ((2,), (1,))]
    assert [group.distance_mm for group in matching.groups] == [6.0, 7.0]
    assert matching.new_labels == ()
    assert matching.disappeared_labels == ()


def test_each_lesion_pairs_with_its_nearest_partner_when_that_is_consistent() -> None:
    matching = match_lesions(_at_z(0.0, 40.0, 80.0), _at_z(81.0, 42.0, 3.0), NO_SHIFT)
    assert _pairs(matching) == [((1,), (3,)), ((2,), (2,)), ((3,), (1,))]
    assert [group.distance_mm for group in matching.groups] == [3.0, 2.0, 1.0]


@pytest.mark.parametrize(
    ("distance_mm", "paired"), [(14.9, True), (15.0, True), (15.1, False), (30.0, False)]
)
def test_small_lesions_pair_only_inside_the_minimum_gate(distance_mm: float, paired: bool) -> None:
    matching = match_lesions(_at_z(distance_mm), _at_z(0.0))
    assert matching.shift_mm == (0.0, 0.0, 0.0)
    assert (len(matching.groups) == 1) is paired
    assert matching.new_labels == (() if paired else (1,))
    assert matching.disappeared_labels == (() if paired else (1,))


def test_the_gate_grows_with_the_lesions_equivalent_radii() -> None:
    volume = 50.0
    radius = equivalent_radius_mm(volume)
    assert radius == pytest.approx((3 * 50_000.0 / (4 * math.pi)) ** (1 / 3))  # 22.9 mm
    inside = 2 * radius - 0.5
    outside = 2 * radius + 0.5
    assert _pairs(match_lesions(_at_z(inside, volume_ml=volume), _at_z(0.0, volume_ml=volume)))
    assert not _pairs(match_lesions(_at_z(outside, volume_ml=volume), _at_z(0.0, volume_ml=volume)))
    # the same distance is outside the gate of small lesions
    assert not _pairs(match_lesions(_at_z(inside), _at_z(0.0)))
    # and the size factor scales the radius term
    half = MatchingSettings(gate_size_factor=0.5)
    assert not _pairs(
        match_lesions(_at_z(inside, volume_ml=volume), _at_z(0.0, volume_ml=volume), half)
    )


def test_equivalent_radius_of_odd_volumes_is_zero() -> None:
    assert equivalent_radius_mm(4.0 * math.pi / 3.0 / 1000.0) == pytest.approx(1.0)
    for volume in (0.0, -1.0, math.nan, math.inf):
        assert equivalent_radius_mm(volume) == 0.0


def test_the_gate_is_applied_after_the_shift() -> None:
    # three lesions moved by 40 mm: none is within 15 mm before the shift,
    # all are paired after it; a fourth current lesion 16 mm off its shifted partner is not
    reference = _at_z(0.0, 100.0, 200.0, 300.0)
    current = _at_z(40.0, 140.0, 240.0, 356.0)
    matching = match_lesions(current, reference)
    assert matching.shift_mm == (0.0, 0.0, 40.0)
    assert _pairs(matching) == [((1,), (1,)), ((2,), (2,)), ((3,), (3,))]
    assert matching.new_labels == (4,)
    assert matching.disappeared_labels == (4,)


# ---------------------------------------------------------------- splits and merges


def test_a_split_lesion_forms_one_group_with_both_parts() -> None:
    reference = [_lesion(1, (0.0, 0.0, 0.0), 4.0)]
    current = [_lesion(1, (0.0, 0.0, 6.0), 2.0), _lesion(2, (0.0, 0.0, -5.0), 2.0)]
    matching = match_lesions(current, reference)
    assert matching.shift_mm == (0.0, 0.0, 0.0)  # support is at most 1 with one reference lesion
    assert _pairs(matching) == [((1, 2), (1,))]
    assert matching.groups[0].distance_mm == pytest.approx(5.0)  # the core pair
    assert matching.new_labels == ()
    assert matching.disappeared_labels == ()
    assert matching.group_of_current(1) is matching.group_of_current(2)


def test_merged_lesions_form_one_group_with_both_predecessors() -> None:
    reference = [_lesion(1, (0.0, 0.0, -5.0), 2.0), _lesion(2, (0.0, 0.0, 6.0), 2.0)]
    current = [_lesion(1, (0.0, 0.0, 0.0), 4.0)]
    matching = match_lesions(current, reference)
    assert _pairs(matching) == [((1,), (1, 2))]
    assert matching.groups[0].distance_mm == pytest.approx(5.0)
    assert matching.new_labels == ()
    assert matching.disappeared_labels == ()


def test_an_unpaired_lesion_joins_the_nearest_pair_whose_gate_it_is_in() -> None:
    # pairs at 0 and 20 mm; an extra current lesion at 12 mm is inside both gates
    # (12 and 8 mm from them) and joins the nearer pair (20 mm)
    matching = match_lesions(_at_z(0.0, 12.0, 20.0), _at_z(0.0, 20.0), NO_SHIFT)
    assert _pairs(matching) == [((1,), (1,)), ((2, 3), (2,))]
    assert matching.new_labels == ()


def test_an_unpaired_lesion_outside_every_gate_is_new_or_disappeared() -> None:
    grown = match_lesions(_at_z(0.0, 16.0), _at_z(0.0), NO_SHIFT)
    assert _pairs(grown) == [((1,), (1,))]
    assert grown.new_labels == (2,)
    shrunk = match_lesions(_at_z(0.0), _at_z(0.0, -16.0), NO_SHIFT)
    assert _pairs(shrunk) == [((1,), (1,))]
    assert shrunk.disappeared_labels == (2,)


# ---------------------------------------------------------------- new, disappeared, odd input


def test_new_and_disappeared_lesions_beside_persisting_ones() -> None:
    reference = _at_z(0.0, 100.0, 200.0, 500.0)
    current = _at_z(10.0, 110.0, 210.0, -300.0, 900.0)
    matching = match_lesions(current, reference)
    assert matching.shift_mm == (0.0, 0.0, 10.0)
    assert _pairs(matching) == [((1,), (1,)), ((2,), (2,)), ((3,), (3,))]
    assert matching.new_labels == (4, 5)
    assert matching.disappeared_labels == (4,)
    assert matching.group_of_current(4) is None
    assert matching.group_of_current(2) == LesionGroup((2,), (2,), 0.0)


@pytest.mark.parametrize(
    ("current", "reference", "new", "gone"),
    [
        ([], [], (), ()),
        (_at_z(0.0, 10.0), [], (1, 2), ()),
        ([], _at_z(0.0, 10.0), (), (1, 2)),
    ],
)
def test_an_empty_side_leaves_everything_new_or_disappeared(
    current: list[LesionStats],
    reference: list[LesionStats],
    new: tuple[int, ...],
    gone: tuple[int, ...],
) -> None:
    matching = match_lesions(current, reference)
    assert matching == LesionMatching((0.0, 0.0, 0.0), 0, (), new, gone)
    shift, support = estimate_shift(current, reference)
    assert (shift.tolist(), support) == ([0.0, 0.0, 0.0], 0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("side", ["current", "reference"])
def test_a_non_finite_centroid_is_refused_naming_the_side_and_label(bad: float, side: str) -> None:
    good = _at_z(0.0, 50.0)
    broken = [*_at_z(0.0), _lesion(7, (1.0, bad, 3.0))]
    current, reference = (broken, good) if side == "current" else (good, broken)
    with pytest.raises(ValueError, match=rf"^{side} lesion 7: centroid .* is not finite"):
        match_lesions(current, reference)
    # also when the other side is empty (nothing to match, but the input is wrong)
    with pytest.raises(ValueError, match=rf"^{side} lesion 7"):
        match_lesions(broken if side == "current" else [], broken if side == "reference" else [])


def test_labels_are_reported_sorted_whatever_the_input_order() -> None:
    reference = [_lesion(9, (0.0, 0.0, 0.0)), _lesion(3, (0.0, 0.0, 500.0))]
    current = [
        _lesion(8, (0.0, 0.0, -400.0)),
        _lesion(5, (0.0, 0.0, 2.0)),
        _lesion(2, (0.0, 0.0, 900.0)),
    ]
    matching = match_lesions(current, reference)
    assert _pairs(matching) == [((5,), (9,))]
    assert matching.new_labels == (2, 8)
    assert matching.disappeared_labels == (3,)


@pytest.mark.parametrize(
    "field",
    ["shift_search_max_mm", "shift_inlier_tolerance_mm", "gate_min_mm", "gate_size_factor"],
)
@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf])
def test_settings_refuse_negative_or_non_finite_distances(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"matching setting {field}: must be finite and >= 0"):
        MatchingSettings(**{field: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["min_shift_inliers", "shift_estimation_lesions"])
def test_settings_refuse_counts_below_one(field: str) -> None:
    with pytest.raises(ValueError, match=f"matching setting {field}: must be >= 1, got 0"):
        MatchingSettings(**{field: 0})


# ---------------------------------------------------------------- symmetry


def _swapped(matching: LesionMatching) -> tuple[object, ...]:
    """``matching`` as seen from the other exam: shift negated, sides exchanged."""
    groups = sorted(
        (group.reference_labels, group.current_labels, round(group.distance_mm, 9))
        for group in matching.groups
    )
    return (
        tuple(-value + 0.0 for value in matching.shift_mm),
        matching.shift_support,
        groups,
        matching.disappeared_labels,
        matching.new_labels,
    )


def _summary(matching: LesionMatching) -> tuple[object, ...]:
    groups = sorted(
        (group.current_labels, group.reference_labels, round(group.distance_mm, 9))
        for group in matching.groups
    )
    return (
        matching.shift_mm,
        matching.shift_support,
        groups,
        matching.new_labels,
        matching.disappeared_labels,
    )


def test_swapping_the_exams_mirrors_the_matching() -> None:
    # shifted by (2, -4, 24): three persisting lesions, one split in two, one new,
    # one disappeared
    shift = np.array([2.0, -4.0, 24.0])
    reference = [
        _lesion(1, (0.0, 0.0, 0.0), 2.0),
        _lesion(2, (40.0, 10.0, -150.0), 3.0),
        _lesion(3, (-30.0, 20.0, -320.0), 1.0),
        _lesion(4, (10.0, -20.0, -480.0), 4.0),  # splits
        _lesion(5, (60.0, 60.0, -700.0), 1.0),  # disappears
    ]
    current = [
        _lesion(1, np.add(reference[0].centroid_mm, shift), 2.0),
        _lesion(2, np.add(reference[1].centroid_mm, shift), 3.0),
        _lesion(3, np.add(reference[2].centroid_mm, shift), 1.0),
        _lesion(4, np.add(reference[3].centroid_mm, shift + np.array([0.0, 0.0, 5.0])), 2.0),
        _lesion(5, np.add(reference[3].centroid_mm, shift - np.array([0.0, 0.0, 7.0])), 2.0),
        _lesion(6, (-70.0, -50.0, 200.0), 1.0),  # new
    ]
    forward = match_lesions(current, reference)
    backward = match_lesions(reference, current)
    np.testing.assert_allclose(forward.shift_mm, shift, atol=1e-9)
    assert _pairs(forward) == [((1,), (1,)), ((2,), (2,)), ((3,), (3,)), ((4, 5), (4,))]
    assert forward.new_labels == (6,)
    assert forward.disappeared_labels == (5,)
    assert _summary(backward) == _swapped(forward)


def test_swapping_exams_with_a_tied_assignment_mirrors_the_matching() -> None:
    # a square of four lesions, current and reference rotated: two optimal assignments
    # of equal cost; whichever is chosen, swapping the exams chooses its mirror
    current = [_lesion(1, (0.0, 0.0, 0.0)), _lesion(2, (10.0, 0.0, 0.0))]
    reference = [_lesion(1, (5.0, 5.0, 0.0)), _lesion(2, (5.0, -5.0, 0.0))]
    forward = match_lesions(current, reference, NO_SHIFT)
    backward = match_lesions(reference, current, NO_SHIFT)
    assert len(forward.groups) == 2
    assert sorted(g.distance_mm for g in forward.groups) == pytest.approx([50**0.5] * 2)
    assert _summary(backward)[2:] == _swapped(forward)[2:]


# ---------------------------------------------------------------- the phantom


def _phantom_lesions(truth: dict[str, Any]) -> list[LesionStats]:
    return [
        LesionStats(
            label=int(lesion["label"]),
            volume_ml=float(lesion["volume_ml"]),
            adc_mean=float(lesion["mean_adc_um2s"]),
            adc_median=float(lesion["mean_adc_um2s"]),
            centroid_mm=(x, y, z),
            region=BodyRegion(lesion["region"]),
            mean_high_b=1.0,
        )
        for lesion in truth["lesions"]
        for x, y, z in [lesion["centroid_mm"]]
    ]


def test_phantom_progression_is_matched_as_its_truth_says() -> None:
    baseline = make_phantom("small", snr=0.0)
    later = make_phantom("small", snr=0.0, scenario="progression", seed=1)
    matching = match_lesions(_phantom_lesions(later.truth), _phantom_lesions(baseline.truth))
    expected_pairs = [
        ((lesion["label"],), (lesion["baseline_label"],))
        for lesion in later.truth["lesions"]
        if not lesion["new"]
    ]
    assert _pairs(matching) == expected_pairs
    assert list(matching.new_labels) == later.truth["changes"]["new_lesion_labels"]
    assert matching.disappeared_labels == ()
    # the patient moved between the visits; the centroids are rasterised on the grid,
    # so the estimate is right to half a voxel
    moved = np.subtract(later.truth["patient_shift_mm"], baseline.truth["patient_shift_mm"])
    half_voxel = np.asarray(baseline.spacing_mm)[[2, 1, 0]] / 2  # (x, y, z) mm
    assert np.all(np.abs(np.asarray(matching.shift_mm) - moved) <= half_voxel)
    assert matching.shift_support == len(expected_pairs)
