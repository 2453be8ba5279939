"""Body landmarks from the body outline (processing.landmarks).

The bodies are drawn here, slice by slice, from discs and boxes whose areas are
known: a head that starts small at the vertex, a neck, a trunk with arms beside
it, and two thighs. Every landmark the module finds is then known in advance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from processing.backend import Device, select_backend
from processing.landmarks import BodyLandmarks, find_landmarks
from processing.phantom import make_phantom
from processing.phantom_anatomy import NECK_H
from processing.settings import ProcessingSettings

CPU = select_backend(Device.CPU)
SETTINGS = ProcessingSettings()
SPACING = (10.0, 5.0, 5.0)  # slice, row, column (mm)
NY, NX = 40, 64

# rows of the drawing below, in slices (10 mm each)
VERTEX = range(0, 2)  # head top, radius 4 px
HEAD = range(2, 16)  # radius 10 px
NECK = range(16, 20)  # radius 5 px: the narrowest section lies 160-190 mm below the top
TRUNK = range(20, 70)  # box rows 8-31, columns 14-49
ARMS = range(22, 50)  # boxes beside the trunk, 2 columns of air between
THIGHS = range(70, 100)  # two discs, radii 9 and 8 px (6325 and 4925 mm2)


def _disc(mask: np.ndarray, y: float, x: float, radius: float) -> None:
    yy, xx = np.ogrid[: mask.shape[0], : mask.shape[1]]
    mask |= (yy - y) ** 2 + (xx - x) ** 2 <= radius**2


def _person(*, arms: bool = True) -> np.ndarray:
    body = np.zeros((100, NY, NX), dtype=bool)
    for z in VERTEX:
        _disc(body[z], 20, 32, 4)
    for z in HEAD:
        _disc(body[z], 20, 32, 10)
    for z in NECK:
        _disc(body[z], 20, 32, 5)
    for z in TRUNK:
        body[z, 8:32, 14:50] = True
    if arms:
        for z in ARMS:
            body[z, 12:24, 6:12] = True
            body[z, 12:24, 52:58] = True
    for z in THIGHS:
        _disc(body[z], 20, 20, 9)
        _disc(body[z], 20, 45, 8)
    return body


def _landmarks(body: np.ndarray, spacing: tuple[float, float, float] = SPACING) -> BodyLandmarks:
    return find_landmarks(body, spacing, SETTINGS, CPU)


@pytest.fixture(scope="module")
def person() -> np.ndarray:
    return _person()


def test_neck_crotch_and_extent_of_a_whole_body(person: np.ndarray) -> None:
    landmarks = _landmarks(person)
    assert (landmarks.top, landmarks.bottom) == (0, 99)
    # smoothed over three slices, the first slice whose window is all neck
    assert landmarks.neck == NECK[1]
    assert landmarks.crotch == THIGHS[0]
    assert landmarks.slice_mm == SPACING[0]


def test_body_area_is_counted_in_square_millimetres(person: np.ndarray) -> None:
    landmarks = _landmarks(person)
    pixel_mm2 = SPACING[1] * SPACING[2]
    expected = person.sum(axis=(1, 2)) * pixel_mm2
    np.testing.assert_array_equal(landmarks.body_area_mm2, expected)
    assert landmarks.body_area_mm2[TRUNK[0]] == 24 * 36 * pixel_mm2


def test_the_trunk_is_the_largest_component_of_each_slice_without_the_arms(
    person: np.ndarray,
) -> None:
    landmarks = _landmarks(person)
    z = ARMS[5]
    assert landmarks.trunk_center[z].tolist() == [19.5, 31.5]  # box rows 8-31, columns 14-49
    assert landmarks.trunk_box[z].tolist() == [8.0, 31.0, 14.0, 49.0]
    trunk = np.asarray(landmarks.trunk)
    assert trunk.shape == person.shape
    assert trunk.dtype == bool
    expected = np.zeros((NY, NX), dtype=bool)
    expected[8:32, 14:50] = True
    np.testing.assert_array_equal(trunk[z], expected)
    # the arms are body but not trunk
    assert person[z, 15, 8] and not trunk[z, 15, 8]
    # in the head and neck the one component is the trunk
    np.testing.assert_array_equal(trunk[HEAD[3]], person[HEAD[3]])
    assert landmarks.trunk_center[HEAD[3]].tolist() == [20.0, 32.0]
    # between the thighs the larger one (radius 9, centre column 20) is the trunk
    thigh = THIGHS[10]
    assert landmarks.trunk_center[thigh].tolist() == [20.0, 20.0]
    assert landmarks.trunk_box[thigh].tolist() == [11.0, 29.0, 11.0, 29.0]
    np.testing.assert_array_equal(trunk[thigh, :, :33], person[thigh, :, :33])
    assert not trunk[thigh, :, 33:].any()


def test_arms_do_not_move_the_trunk_midline(person: np.ndarray) -> None:
    with_arms = _landmarks(person)
    without = _landmarks(_person(arms=False))
    np.testing.assert_array_equal(with_arms.trunk_center, without.trunk_center)
    np.testing.assert_array_equal(with_arms.trunk_box, without.trunk_box)
    assert (with_arms.neck, with_arms.crotch) == (without.neck, without.crotch)


def test_slices_without_body_have_no_trunk() -> None:
    body = _person()
    body[:5] = False
    body[95:] = False
    landmarks = _landmarks(body)
    assert (landmarks.top, landmarks.bottom) == (5, 94)
    assert np.isnan(landmarks.trunk_center[:5]).all()
    assert np.isnan(landmarks.trunk_box[95:]).all()
    assert not np.isnan(landmarks.trunk_center[5:95]).any()
    assert not np.asarray(landmarks.trunk)[:5].any()
    assert (landmarks.body_area_mm2[:5] == 0).all()


# ---------------------------------------------------------------- the neck


def test_no_neck_when_the_exam_starts_below_the_vertex(person: np.ndarray) -> None:
    # starting in the middle of the head: the first slice is the head's full width
    landmarks = _landmarks(person[HEAD[2] :])
    assert landmarks.neck is None
    assert landmarks.crotch == THIGHS[0] - HEAD[2]


def test_no_neck_when_the_narrowing_is_not_narrow_enough() -> None:
    body = _person()
    for z in NECK:
        body[z] = False
        _disc(body[z], 20, 32, 9)  # 0.80 x the head's area: above neck_max_area_ratio (0.75)
    assert _landmarks(body).neck is None
    looser = ProcessingSettings(neck_max_area_ratio=0.9)
    assert find_landmarks(body, SPACING, looser, CPU).neck == NECK[1]


def test_no_neck_when_the_body_does_not_widen_below_it() -> None:
    # a head on a narrow column (no shoulders within 200 mm below the narrowest section)
    body = _person()
    for z in range(NECK[0], 100):
        body[z] = False
        _disc(body[z], 20, 32, 5)
    for z in range(NECK[0] + 21, 100):
        body[z] = False
        _disc(body[z], 20, 32, 12)  # wider again, but more than 200 mm below the neck
    assert _landmarks(body).neck is None


def test_the_neck_is_searched_only_within_its_distance_from_the_top(person: np.ndarray) -> None:
    # the narrow section lies 160-190 mm below the top: outside a 200-330 mm window
    moved = ProcessingSettings(neck_search_mm=(200.0, 330.0))
    assert find_landmarks(person, SPACING, moved, CPU).neck is None
    too_short = ProcessingSettings(neck_search_mm=(50.0, 120.0))
    assert find_landmarks(person, SPACING, too_short, CPU).neck is None


def test_the_neck_window_is_measured_in_millimetres_not_slices(person: np.ndarray) -> None:
    # the same body sampled at half the slice spacing: each slice twice
    fine = np.repeat(person, 2, axis=0)
    landmarks = _landmarks(fine, (5.0, SPACING[1], SPACING[2]))
    assert landmarks.neck is not None
    assert 2 * NECK[0] <= landmarks.neck <= 2 * NECK[-1] + 1
    assert landmarks.crotch == 2 * THIGHS[0]
    assert landmarks.slice_mm == 5.0
    # read with a 30 mm slice spacing the neck lies 480-570 mm below the top: not searched
    coarse = _landmarks(person, (30.0, SPACING[1], SPACING[2]))
    assert coarse.neck is None
    assert coarse.crotch == THIGHS[0]


# ---------------------------------------------------------------- the crotch


def test_no_crotch_when_the_exam_stops_above_the_thighs(person: np.ndarray) -> None:
    landmarks = _landmarks(person[: THIGHS[0]])
    assert landmarks.crotch is None
    assert landmarks.neck == NECK[1]


def test_no_crotch_when_the_thighs_touch() -> None:
    body = _person()
    body[THIGHS[0] :, 18:23, 20:46] = True  # a bridge: one component
    assert _landmarks(body).crotch is None


def test_the_crotch_run_must_reach_the_last_body_slice() -> None:
    body = _person()
    for z in THIGHS[-3:]:
        body[z] = False
        _disc(body[z], 20, 32, 14)  # the last slices are one section (knees together)
    assert _landmarks(body).crotch is None


def test_the_crotch_is_the_top_of_the_run_that_reaches_the_last_slice() -> None:
    body = _person()
    for z in THIGHS[5:8]:
        body[z, 18:23, 20:46] = True  # the thighs touch for three slices
    assert _landmarks(body).crotch == THIGHS[8]


def test_the_larger_thigh_is_the_trunk_whichever_is_met_first() -> None:
    # the smaller thigh starts on an earlier row, so it is labelled first
    body = _person()
    for z in THIGHS:
        body[z] = False
        _disc(body[z], 10, 45, 8)
        _disc(body[z], 24, 20, 9)
    landmarks = _landmarks(body)
    assert landmarks.crotch == THIGHS[0]
    assert landmarks.trunk_center[THIGHS[4]].tolist() == [24.0, 20.0]


def test_a_small_second_section_is_not_a_thigh() -> None:
    body = _person()
    for z in THIGHS:
        body[z] = False
        _disc(body[z], 20, 20, 12)  # one thigh, 11025 mm2 ...
        _disc(body[z], 20, 48, 5)  # ... and a hand beside it, 2025 mm2 (< 40 % and < 4000 mm2)
    assert _landmarks(body).crotch is None


def test_unequal_sections_are_not_two_thighs() -> None:
    body = _person()
    for z in THIGHS:
        body[z] = False
        body[z, 2:38, 2:38] = True  # 32400 mm2
        _disc(body[z], 20, 52, 10)  # 7854 mm2 >= 4000 but < 40 % of the larger
    assert _landmarks(body).crotch is None


def test_thigh_areas_are_judged_in_square_millimetres(person: np.ndarray) -> None:
    # the same drawing with 1 mm pixels: thighs of 253 and 197 mm2 are too small to be thighs
    fine_pixels = _landmarks(person, (SPACING[0], 1.0, 1.0))
    assert fine_pixels.crotch is None
    # with 5 x 2 mm pixels the thighs are 2530 and 1970 mm2: still too small
    assert _landmarks(person, (SPACING[0], 5.0, 2.0)).crotch is None
    # with 10 x 5 mm pixels (anisotropic), 12650 and 9850 mm2: thighs
    assert _landmarks(person, (SPACING[0], 10.0, 5.0)).crotch == THIGHS[0]


def test_the_two_largest_sections_decide_even_beside_a_third(person: np.ndarray) -> None:
    body = person.copy()
    for z in THIGHS:
        body[z, 2:4, 60:62] = True  # a small third component (a finger)
    landmarks = _landmarks(body)
    assert landmarks.crotch == THIGHS[0]
    assert landmarks.trunk_center[THIGHS[3]].tolist() == [20.0, 20.0]


# ---------------------------------------------------------------- degenerate inputs


def test_an_empty_volume_has_no_landmarks() -> None:
    body = np.zeros((6, 8, 8), dtype=bool)
    landmarks = _landmarks(body)
    assert (landmarks.top, landmarks.bottom) == (0, 5)
    assert landmarks.neck is None
    assert landmarks.crotch is None
    assert landmarks.trunk is None
    assert landmarks.trunk_center.shape == (6, 2)
    assert landmarks.trunk_box.shape == (6, 4)
    assert np.isnan(landmarks.trunk_center).all()
    assert np.isnan(landmarks.trunk_box).all()
    assert landmarks.body_area_mm2.tolist() == [0.0] * 6
    assert landmarks.trunk_span() == (0.0, 5.0)


def test_a_single_slice() -> None:
    body = np.zeros((1, NY, NX), dtype=bool)
    body[0, 8:32, 14:50] = True
    body[0, 12:24, 6:12] = True
    landmarks = _landmarks(body)
    assert (landmarks.top, landmarks.bottom) == (0, 0)
    assert landmarks.neck is None
    assert landmarks.crotch is None  # the arm is under 40 % of the trunk
    assert landmarks.trunk_center.tolist() == [[19.5, 31.5]]
    assert landmarks.trunk_box.tolist() == [[8.0, 31.0, 14.0, 49.0]]
    assert landmarks.trunk_span() == (0.0, 1.0)  # never an empty span
    assert landmarks.level_below_neck(0.5) == 0.5


def test_a_single_body_voxel() -> None:
    body = np.zeros((3, 5, 5), dtype=bool)
    body[1, 2, 3] = True
    landmarks = _landmarks(body)
    assert (landmarks.top, landmarks.bottom) == (1, 1)
    assert landmarks.trunk_center[1].tolist() == [2.0, 3.0]
    assert landmarks.trunk_box[1].tolist() == [2.0, 2.0, 3.0, 3.0]
    assert landmarks.body_area_mm2.tolist() == [0.0, SPACING[1] * SPACING[2], 0.0]
    assert (landmarks.neck, landmarks.crotch) == (None, None)


# ---------------------------------------------------------------- levels


def test_levels_are_fractions_of_the_neck_to_crotch_distance(person: np.ndarray) -> None:
    landmarks = _landmarks(person)
    neck, crotch = NECK[1], THIGHS[0]
    assert landmarks.trunk_span() == (float(neck), float(crotch))
    assert landmarks.level_below_neck(0.0) == neck
    assert landmarks.level_below_neck(1.0) == crotch
    assert landmarks.level_below_neck(0.25) == pytest.approx(neck + 0.25 * (crotch - neck))


def test_missing_ends_are_estimated_from_the_body(person: np.ndarray) -> None:
    no_neck = _landmarks(person[HEAD[2] :])  # starts in the head: the top stands in
    assert no_neck.trunk_span() == (0.0, float(THIGHS[0] - HEAD[2]))
    no_thighs = _landmarks(person[: THIGHS[0]])  # stops above the thighs: the bottom stands in
    assert no_thighs.trunk_span() == (float(NECK[1]), float(THIGHS[0] - 1))


# ---------------------------------------------------------------- the phantom


def test_phantom_neck_and_crotch_lie_where_its_anatomy_puts_them() -> None:
    phantom = make_phantom("small", snr=0.0)
    body = phantom.tissue_labels > 0
    landmarks = find_landmarks(body, phantom.spacing_mm, SETTINGS, CPU)
    assert landmarks.neck is not None
    assert landmarks.crotch is not None
    dz = phantom.spacing_mm[0]
    # the phantom's neck runs from the skull base to T1 (NECK_H, mm along the body
    # from the vertex); the grid starts a few mm above the vertex
    vertex = landmarks.top * dz
    neck_mm = landmarks.neck * dz - vertex
    assert NECK_H[0] - 2 * dz <= neck_mm <= NECK_H[1] + 2 * dz
    assert landmarks.neck < landmarks.crotch <= landmarks.bottom
    # below the crotch every body slice is two thighs of comparable area
    assert math.isfinite(landmarks.level_below_neck(0.5))
    trunk = np.asarray(landmarks.trunk)
    for z in range(landmarks.crotch, landmarks.bottom + 1):
        thigh = trunk[z].sum()
        rest = (body[z] & ~trunk[z]).sum()
        assert 0.4 * thigh <= rest <= thigh
