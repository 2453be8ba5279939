"""Lesion regions: the trunk test uses the landmarks' trunk (8-connected), all lesions at once;
the region rules (assign_region) on drawn landmarks, and on the phantom against its truth."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage

from processing.backend import Device, select_backend
from processing.landmarks import BodyLandmarks, find_landmarks
from processing.phantom import make_phantom
from processing.regions import assign_region, in_trunk
from processing.results import BodyRegion
from processing.settings import ProcessingSettings

CPU = select_backend(Device.CPU)
SPACING = (5.0, 2.0, 2.0)


def _landmarks(body: np.ndarray) -> BodyLandmarks:
    return find_landmarks(body, SPACING, ProcessingSettings(), CPU)


def _one_by_one(body: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The definition, lesion by lesion: label the slice (8-connected), nearest body voxel."""
    answers = []
    for z_float, y, x in centroids:
        z = int(np.clip(round(float(z_float)), 0, body.shape[0] - 1))
        labels, count = scipy.ndimage.label(body[z], structure=np.ones((3, 3), dtype=bool))
        if count <= 1:
            answers.append(True)
            continue
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        points = np.argwhere(labels > 0)
        nearest = points[int(np.argmin((points[:, 0] - y) ** 2 + (points[:, 1] - x) ** 2))]
        answers.append(bool(labels[nearest[0], nearest[1]] == int(np.argmax(sizes))))
    return np.asarray(answers)


def test_an_arm_touching_the_trunk_at_a_corner_is_trunk_as_for_the_landmarks() -> None:
    body = np.zeros((3, 40, 40), dtype=bool)
    body[:, 10:30, 10:30] = True  # trunk
    body[:, 30:34, 30:34] = True  # touches the trunk's corner only (diagonal neighbour)
    body[:, 2:6, 36:39] = True  # a separate arm
    landmarks = _landmarks(body)
    # The landmarks' trunk box includes the corner piece: one 8-connected component.
    assert tuple(landmarks.trunk_box[1]) == (10.0, 33.0, 10.0, 33.0)
    centroids = np.asarray(
        [[1.0, 20.0, 20.0], [1.0, 32.0, 32.0], [1.0, 4.0, 37.0], [1.0, 5.0, 33.0], [1.0, 9.0, 9.0]]
    )
    answer = in_trunk(centroids, body, landmarks, CPU)
    # trunk, corner piece (trunk since 8-connected; 4-connected called it an arm),
    # arm, nearest to the arm (outside the body), nearest to the trunk (outside the body)
    assert answer.tolist() == [True, True, False, False, True]
    assert answer.tolist() == _one_by_one(body, centroids).tolist()


def test_one_pass_equals_the_lesion_by_lesion_definition_on_random_bodies() -> None:
    rng = np.random.default_rng(7)
    body = scipy.ndimage.binary_opening(rng.random((12, 48, 48)) > 0.55)
    body[:, 14:34, 14:34] = True
    landmarks = _landmarks(body)
    centroids = np.column_stack(
        [rng.uniform(-0.4, 11.4, 300), rng.uniform(0, 47, 300), rng.uniform(0, 47, 300)]
    )
    answer = in_trunk(centroids, body, landmarks, CPU)
    assert answer.tolist() == _one_by_one(body, centroids).tolist()
    assert 0 < answer.sum() < len(answer)  # both answers occur


@pytest.mark.parametrize("count", [0, 1])
def test_few_centroids_and_no_body(count: int) -> None:
    body = np.zeros((2, 8, 8), dtype=bool)
    answer = in_trunk(np.full((count, 3), 1.0), body, _landmarks(body), CPU)
    assert answer.tolist() == [True] * count


# ---------------------------------------------------------------- assign_region

# A drawn exam of 100 slices: neck at slice 10, crotch at 90, so the levels
# (region_levels 0.07, 0.44, 0.60, 0.67, 0.80 of the 80 slices between them) are
# T1 15.6, L1 45.2, iliac crest 58.0, L5/S1 63.6, hip 74.0; the skull base lies
# half-way from the top (0) to the neck: 5.0. Every slice's trunk is centred at
# row 30, column 40, and spans columns 10-70 (half-width 30 columns).
# With 2 mm pixels the spine column is |x - 40| <= 17.5 columns and y >= 15
# (at most 30 mm anterior); "lateral" is |x - 40| > 18 columns (0.6 x 30).
NZ = 100
REGION_SPACING = (5.0, 2.0, 2.0)
SPINE = (32.0, 40.0)  # (y, x): on the midline, just posterior to the centre
ANTERIOR = (5.0, 40.0)  # midline, 50 mm anterior to the centre: not spine
LATERAL = (30.0, 62.0)  # 22 columns (44 mm) off the midline
MEDIAL_OFF_SPINE = (5.0, 50.0)  # 10 columns off the midline but anterior


def _drawn_landmarks(
    neck: int | None = 10, crotch: int | None = 90, top: int = 0, bottom: int = NZ - 1
) -> BodyLandmarks:
    center = np.tile([30.0, 40.0], (NZ, 1))
    box = np.tile([10.0, 50.0, 10.0, 70.0], (NZ, 1))
    return BodyLandmarks(
        top=top,
        bottom=bottom,
        neck=neck,
        crotch=crotch,
        trunk_center=center,
        trunk_box=box,
        body_area_mm2=np.full(NZ, 1000.0),
        slice_mm=REGION_SPACING[0],
    )


def _region(
    z: float,
    where: tuple[float, float],
    *,
    trunk: bool = True,
    landmarks: BodyLandmarks | None = None,
    spacing: tuple[float, float, float] = REGION_SPACING,
    settings: ProcessingSettings | None = None,
) -> BodyRegion:
    return assign_region(
        np.array([z, *where]),
        trunk,
        _drawn_landmarks() if landmarks is None else landmarks,
        spacing,
        settings or ProcessingSettings(),
    )


@pytest.mark.parametrize(
    ("z", "where", "expected"),
    [
        # 1. above the neck (z <= 10): skull, cervical spine below the skull base (5.0)
        (0.0, SPINE, BodyRegion.SKULL),
        (5.0, SPINE, BodyRegion.SKULL),  # at the skull base: not below it
        (6.0, SPINE, BodyRegion.CERVICAL_SPINE),
        (10.0, SPINE, BodyRegion.CERVICAL_SPINE),  # the neck slice itself
        (8.0, ANTERIOR, BodyRegion.SKULL),
        (10.0, ANTERIOR, BodyRegion.SKULL),  # the neck slice: not yet "other" below T1
        (8.0, LATERAL, BodyRegion.SKULL),
        # 2. at or below the crotch (90): limbs, wherever in the slice
        (90.0, SPINE, BodyRegion.LIMBS),
        (99.0, ANTERIOR, BodyRegion.LIMBS),
        (89.0, SPINE, BodyRegion.PELVIS),
        # 3. spine column: cervical < T1 (15.6) <= dorsal < L1 (45.2) <= lumbosacral
        #    < L5/S1 (63.6) <= pelvis (sacrum)
        (11.0, SPINE, BodyRegion.CERVICAL_SPINE),
        (15.0, SPINE, BodyRegion.CERVICAL_SPINE),
        (16.0, SPINE, BodyRegion.DORSAL_SPINE),
        (45.0, SPINE, BodyRegion.DORSAL_SPINE),
        (46.0, SPINE, BodyRegion.LUMBOSACRAL_SPINE),
        (63.0, SPINE, BodyRegion.LUMBOSACRAL_SPINE),
        (64.0, SPINE, BodyRegion.PELVIS),
        (80.0, SPINE, BodyRegion.PELVIS),
        # 4. elsewhere: other < T1 <= thorax < L1; L1 to the iliac crest (58):
        #    lateral thorax, else other; below: pelvis, lateral from the hip (74) limbs
        (11.0, ANTERIOR, BodyRegion.OTHER),
        (15.0, LATERAL, BodyRegion.OTHER),
        (16.0, ANTERIOR, BodyRegion.THORAX),
        (16.0, LATERAL, BodyRegion.THORAX),
        (45.0, MEDIAL_OFF_SPINE, BodyRegion.THORAX),
        (46.0, LATERAL, BodyRegion.THORAX),
        (46.0, ANTERIOR, BodyRegion.OTHER),
        (57.0, LATERAL, BodyRegion.THORAX),
        (57.0, MEDIAL_OFF_SPINE, BodyRegion.OTHER),
        (58.0, LATERAL, BodyRegion.PELVIS),
        (58.0, ANTERIOR, BodyRegion.PELVIS),
        (73.0, LATERAL, BodyRegion.PELVIS),
        (74.0, LATERAL, BodyRegion.LIMBS),
        (74.0, ANTERIOR, BodyRegion.PELVIS),
        (89.0, LATERAL, BodyRegion.LIMBS),
    ],
)
def test_region_decision_table(z: float, where: tuple[float, float], expected: BodyRegion) -> None:
    assert _region(z, where) is expected


@pytest.mark.parametrize(
    ("where", "in_spine"),
    [
        ((30.0, 57.5), True),  # 17.5 columns = 35 mm off the midline: on the edge
        ((30.0, 57.6), False),
        ((30.0, 22.5), True),  # the other side
        ((30.0, 22.4), False),
        ((15.0, 40.0), True),  # 15 rows = 30 mm anterior: on the edge
        ((14.9, 40.0), False),
        ((50.0, 40.0), True),  # any distance posterior
    ],
)
def test_spine_column_edges(where: tuple[float, float], in_spine: bool) -> None:
    expected = BodyRegion.DORSAL_SPINE if in_spine else BodyRegion.THORAX
    assert _region(30.0, where) is expected


def test_lateral_is_a_share_of_the_trunk_half_width() -> None:
    # between L1 and the iliac crest: lateral -> thorax, else other;
    # 0.6 x 30 columns = 18 columns (beyond the 17.5-column spine column)
    assert _region(50.0, (5.0, 58.0)) is BodyRegion.OTHER  # 18 columns: not beyond
    assert _region(50.0, (5.0, 58.1)) is BodyRegion.THORAX
    assert _region(50.0, (5.0, 21.9)) is BodyRegion.THORAX
    narrower = ProcessingSettings(lateral_fraction=0.2)
    assert _region(50.0, (5.0, 47.0), settings=narrower) is BodyRegion.THORAX


def test_outside_the_trunk_is_limbs_between_the_neck_and_the_crotch() -> None:
    for z, where in [(12.0, SPINE), (30.0, SPINE), (50.0, ANTERIOR), (70.0, LATERAL)]:
        assert _region(z, where, trunk=False) is BodyRegion.LIMBS
    # above the neck the head rule comes first (rule 1 before rule 2)
    assert _region(8.0, SPINE, trunk=False) is BodyRegion.CERVICAL_SPINE
    assert _region(2.0, SPINE, trunk=False) is BodyRegion.SKULL


def test_distances_use_the_pixel_spacing() -> None:
    # 10 columns off the midline is 20 mm with 2 mm pixels (spine) and 40 mm with 4 mm
    # columns (not spine); rows: 12 rows anterior is 24 mm, or 36 mm with 3 mm rows
    assert _region(30.0, (30.0, 50.0)) is BodyRegion.DORSAL_SPINE
    assert _region(30.0, (30.0, 50.0), spacing=(5.0, 2.0, 4.0)) is BodyRegion.THORAX
    assert _region(30.0, (18.0, 40.0)) is BodyRegion.DORSAL_SPINE
    assert _region(30.0, (18.0, 40.0), spacing=(5.0, 3.0, 2.0)) is BodyRegion.THORAX
    wider = ProcessingSettings(spine_halfwidth_mm=45.0, spine_anterior_margin_mm=40.0)
    assert _region(30.0, (30.0, 50.0), spacing=(5.0, 2.0, 4.0), settings=wider) is (
        BodyRegion.DORSAL_SPINE
    )
    assert _region(30.0, (18.0, 40.0), spacing=(5.0, 3.0, 2.0), settings=wider) is (
        BodyRegion.DORSAL_SPINE
    )


def test_the_centroid_slice_is_rounded_and_clipped_to_the_grid() -> None:
    assert _region(15.4, SPINE) is BodyRegion.CERVICAL_SPINE  # slice 15
    assert _region(15.6, SPINE) is BodyRegion.DORSAL_SPINE  # slice 16
    assert _region(-3.0, SPINE) is BodyRegion.SKULL  # slice 0
    assert _region(120.0, SPINE) is BodyRegion.LIMBS  # slice 99


def test_a_slice_without_trunk_is_other() -> None:
    landmarks = _drawn_landmarks()
    landmarks.trunk_center[30] = np.nan
    assert _region(30.0, SPINE, landmarks=landmarks) is BodyRegion.OTHER
    assert _region(30.0, LATERAL, trunk=False, landmarks=landmarks) is BodyRegion.OTHER
    assert _region(31.0, SPINE, landmarks=landmarks) is BodyRegion.DORSAL_SPINE


def test_without_a_neck_the_top_of_the_body_starts_the_levels() -> None:
    # levels from 0 to 90: T1 6.3, L1 39.6, iliac crest 54, L5/S1 60.3, hip 72
    landmarks = _drawn_landmarks(neck=None)
    assert _region(2.0, SPINE, landmarks=landmarks) is BodyRegion.CERVICAL_SPINE
    assert _region(2.0, ANTERIOR, landmarks=landmarks) is BodyRegion.OTHER  # no skull rule
    assert _region(7.0, SPINE, landmarks=landmarks) is BodyRegion.DORSAL_SPINE
    assert _region(40.0, SPINE, landmarks=landmarks) is BodyRegion.LUMBOSACRAL_SPINE
    assert _region(61.0, SPINE, landmarks=landmarks) is BodyRegion.PELVIS
    assert _region(72.0, LATERAL, landmarks=landmarks) is BodyRegion.LIMBS


def test_without_a_crotch_the_bottom_of_the_body_ends_the_levels() -> None:
    # levels from 10 to 99: T1 16.23, L1 49.16, iliac crest 63.4, L5/S1 69.63, hip 81.2
    landmarks = _drawn_landmarks(crotch=None)
    assert _region(16.0, SPINE, landmarks=landmarks) is BodyRegion.CERVICAL_SPINE
    assert _region(49.0, SPINE, landmarks=landmarks) is BodyRegion.DORSAL_SPINE
    assert _region(69.0, SPINE, landmarks=landmarks) is BodyRegion.LUMBOSACRAL_SPINE
    assert _region(70.0, SPINE, landmarks=landmarks) is BodyRegion.PELVIS
    assert _region(81.0, LATERAL, landmarks=landmarks) is BodyRegion.PELVIS
    assert _region(82.0, LATERAL, landmarks=landmarks) is BodyRegion.LIMBS
    assert _region(99.0, SPINE, landmarks=landmarks) is BodyRegion.PELVIS  # no limb rule


def test_region_levels_come_from_the_settings() -> None:
    settings = ProcessingSettings(region_levels=(0.1, 0.5, 0.6, 0.7, 0.8))
    # T1 18, L1 50, iliac crest 58, L5/S1 66, hip 74
    assert _region(17.0, SPINE, settings=settings) is BodyRegion.CERVICAL_SPINE
    assert _region(49.0, SPINE, settings=settings) is BodyRegion.DORSAL_SPINE
    assert _region(65.0, SPINE, settings=settings) is BodyRegion.LUMBOSACRAL_SPINE
    # a level on a slice belongs below it
    assert _region(18.0, SPINE, settings=settings) is BodyRegion.DORSAL_SPINE
    assert _region(50.0, SPINE, settings=settings) is BodyRegion.LUMBOSACRAL_SPINE
    assert _region(49.0, ANTERIOR, settings=settings) is BodyRegion.THORAX
    assert _region(50.0, ANTERIOR, settings=settings) is BodyRegion.OTHER
    assert _region(66.0, SPINE, settings=settings) is BodyRegion.PELVIS


def test_phantom_lesions_get_their_true_regions() -> None:
    phantom = make_phantom("small", snr=0.0)
    body = phantom.tissue_labels > 0
    settings = ProcessingSettings()
    landmarks = find_landmarks(body, phantom.spacing_mm, settings, CPU)
    to_index = np.linalg.inv(phantom.affine)
    lesions = phantom.truth["lesions"]
    centroids = np.array([(to_index @ [*lesion["centroid_mm"], 1.0])[:3] for lesion in lesions])
    trunk = in_trunk(centroids, body, landmarks, CPU)
    found = [
        assign_region(centroid, bool(inside), landmarks, phantom.spacing_mm, settings).value
        for centroid, inside in zip(centroids, trunk, strict=True)
    ]
    assert found == [lesion["region"] for lesion in lesions]
    # the phantom spans the regions: skull, every spine level, thorax, pelvis, limbs
    assert {BodyRegion(region) for region in found} >= set(BodyRegion) - {BodyRegion.OTHER}
