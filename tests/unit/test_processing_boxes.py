"""Stages moved onto bounding boxes or array shifts give the whole volume's result bit for bit.

Each stage of :mod:`processing` that was moved onto a bounding box
(:mod:`processing.crop`) is compared here with the whole-volume computation it
replaced, written out below with the same SciPy calls, on random masks and
values: blobs inside the volume and blobs touching its edges, where the box is
clipped. The comparisons are exact (``np.array_equal`` on the arrays, ``==``
on the numbers), so a box one voxel too tight, a wrong offset or a filter whose
result depends on where its line starts fails them. The box morphology of
:mod:`processing.morphology` is compared with ``scipy.ndimage``'s the same way.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import scipy.ndimage as ndi

from processing.adc import NoiseEstimate, fit_adc, fit_slope, fitted_b_indices
from processing.backend import Device, select_backend
from processing.computed_b import compute_high_b
from processing.crop import box_or_whole, mask_box, paste
from processing.landmarks import BodyLandmarks, find_landmarks
from processing.morphology import close, dilate, erode, maximum_3
from processing.normal_structures import (
    component_rules,
    fluid_and_kidney,
    head_exclusion,
    marrow_limits,
    marrow_reference,
    spinal_cord,
)
from processing.phantom import make_phantom
from processing.pipeline import _smooth_in_body
from processing.segmentation import (
    body_mask,
    in_plane_structure,
    label_components,
    label_components_boxed,
)
from processing.settings import ProcessingSettings

CPU = select_backend(Device.CPU)
SETTINGS = ProcessingSettings()
SPACING = (5.0, 3.0, 2.5)
SEEDS = range(6)


def _blobs(rng: np.random.Generator, shape: tuple[int, int, int], *, edge: bool) -> np.ndarray:
    """Random boxes and speckles; with ``edge`` some touch the volume's faces."""
    mask = np.zeros(shape, dtype=bool)
    nz, ny, _ = shape
    for _ in range(12):
        size = rng.integers(1, 6, size=3)
        start = [int(rng.integers(4, n - s - 4)) for n, s in zip(shape, size, strict=True)]
        mask[
            start[0] : start[0] + size[0],
            start[1] : start[1] + size[1],
            start[2] : start[2] + size[2],
        ] = True
    speckled = (slice(5, nz - 5), slice(5, ny - 5), slice(5, -5))
    mask[speckled] |= rng.random(mask[speckled].shape) < 0.02
    if edge:
        mask[0, 3:9, 4:7] = True
        mask[nz // 2, ny - 4 :, 5:9] = True
        mask[3:7, 6:9, :2] = True
    else:
        interior = np.zeros(shape, dtype=bool)
        interior[3:-3, 3:-3, 3:-3] = True
        mask &= interior
    return mask


def _cases() -> list[tuple[int, bool]]:
    return [(seed, seed % 2 == 1) for seed in SEEDS]


def test_mask_box_grows_and_clips() -> None:
    mask = np.zeros((10, 12, 14), dtype=bool)
    assert mask_box(mask, CPU, margin=2) is None
    assert box_or_whole(mask, CPU, margin=2) == (slice(0, 10), slice(0, 12), slice(0, 14))
    mask[4, 5, 6] = True
    mask[5, 7, 13] = True
    assert mask_box(mask, CPU, margin=0) == (slice(4, 6), slice(5, 8), slice(6, 14))
    assert mask_box(mask, CPU, margin=2) == (slice(2, 8), slice(3, 10), slice(4, 14))
    box = mask_box(mask, CPU, margin=1)
    assert box is not None
    whole = paste(mask[box], box, mask.shape, CPU)
    assert np.array_equal(whole, mask)
    with pytest.raises(ValueError, match="must not be negative"):
        mask_box(mask, CPU, margin=-1)


@pytest.mark.parametrize(("seed", "edge"), _cases())
def test_uniform_filter_on_the_box_grown_by_one_is_the_whole_volume_filter(
    seed: int, edge: bool
) -> None:
    """The property the fluid rule relies on: a running sum starting on zeros is exactly 0."""
    rng = np.random.default_rng(seed)
    mask = _blobs(rng, (20, 24, 28), edge=edge)
    values = np.where(mask, rng.uniform(0, 3500, mask.shape), 0).astype(np.float32)
    whole = ndi.uniform_filter(values, size=3, mode="constant")
    box = mask_box(mask, CPU, margin=1)
    assert box is not None
    boxed = ndi.uniform_filter(values[box], size=3, mode="constant")
    assert np.array_equal(boxed, whole[box])


def _whole_fluid(candidates: Any, adc: Any, settings: ProcessingSettings) -> Any:
    weight = candidates.astype(np.float32)
    total = ndi.uniform_filter(weight, size=3, mode="constant")
    summed = ndi.uniform_filter(np.where(candidates, adc, np.float32(0)), size=3, mode="constant")
    local = summed / np.maximum(total, np.float32(1e-6))
    fluid = candidates & (local >= np.float32(settings.fluid_adc_um2s))
    labels, count = ndi.label(fluid)
    if count == 0:
        return fluid
    voxel_ml = math.prod(SPACING) / 1000.0
    keep = np.bincount(labels.ravel()) >= max(1, math.ceil(settings.fluid_min_volume_ml / voxel_ml))
    keep[0] = False
    organ = ndi.binary_dilation(keep[labels], structure=np.ones((3, 3, 3), dtype=bool))
    return organ & candidates


@pytest.mark.parametrize(("seed", "edge"), _cases())
def test_fluid_rule_on_its_box_equals_the_whole_volume(seed: int, edge: bool) -> None:
    rng = np.random.default_rng(seed)
    candidates = _blobs(rng, (20, 24, 28), edge=edge)
    adc = rng.uniform(1500, 3500, candidates.shape).astype(np.float32)
    settings = dataclasses.replace(SETTINGS, fluid_min_volume_ml=0.1)
    expected = _whole_fluid(candidates, adc, settings)
    assert expected.any()  # the case exercises the dilation
    assert np.array_equal(fluid_and_kidney(candidates, adc, SPACING, settings, CPU), expected)


def _whole_cord(candidates: Any, settings: ProcessingSettings) -> Any:
    dz, dy, dx = SPACING
    plane = in_plane_structure(CPU)
    blobs, count = ndi.label(candidates, structure=plane)
    sizes = np.bincount(blobs.ravel(), minlength=count + 1)
    thin = sizes <= settings.cord_max_area_mm2 / (dy * dx)
    thin[0] = False
    chains, _ = ndi.label(thin[blobs])
    cord = np.zeros_like(candidates)
    for index, where in enumerate(ndi.find_objects(chains), start=1):
        if where is not None and (where[0].stop - where[0].start) * dz >= (
            settings.cord_min_length_mm
        ):
            cord |= chains == index
    return ndi.binary_dilation(cord, structure=plane) & candidates


@pytest.mark.parametrize(("seed", "edge"), _cases())
def test_cord_rule_on_its_box_equals_the_whole_volume(seed: int, edge: bool) -> None:
    rng = np.random.default_rng(seed)
    candidates = _blobs(rng, (20, 24, 28), edge=edge)
    x = int(rng.integers(4, 20))
    candidates[2:18, 10:12, x : x + 2] = True  # a cord: 16 slices of 4 voxels
    settings = dataclasses.replace(SETTINGS, cord_min_length_mm=20.0)
    expected = _whole_cord(candidates, settings)
    assert expected[5, 10, x]
    assert np.array_equal(spinal_cord(candidates, SPACING, settings, CPU), expected)


def _landmarks_with_head(body: np.ndarray) -> BodyLandmarks:
    nz = body.shape[0]
    center = np.full((nz, 2), 12.0)
    box = np.full((nz, 4), 5.0)
    area = body.sum(axis=(1, 2)).astype(np.float64)
    return BodyLandmarks(0, nz - 1, 10, None, center, box, area, SPACING[0])


@pytest.mark.parametrize(("seed", "edge"), _cases())
def test_head_exclusion_on_the_head_box_equals_the_whole_volume(seed: int, edge: bool) -> None:
    rng = np.random.default_rng(seed)
    body = _blobs(rng, (20, 24, 28), edge=edge)
    body[1:12, 6:18, 7:21] = True  # a head to measure depths in
    body[4:9, 10:14, 11:15] = rng.random((5, 4, 4)) < 0.5  # holes: background inside
    landmarks = _landmarks_with_head(body)
    settings = dataclasses.replace(SETTINGS, skull_shell_mm=6.0, skull_vault_fraction=0.8)
    vault_end = landmarks.top + math.floor(0.8 * (10 - landmarks.top))
    expected = np.zeros_like(body)
    expected[:11] = True
    head = body[: vault_end + 1]
    depth = ndi.distance_transform_edt(head, sampling=SPACING)
    expected[: vault_end + 1] = ~(head & (depth <= np.float32(6.0)))
    result = head_exclusion(body, landmarks, SPACING, settings, CPU)
    assert np.array_equal(result, expected)


def _whole_component_rules(
    candidates: Any, marrow: Any, settings: ProcessingSettings
) -> tuple[Any, int, int, int]:
    labels, count = ndi.label(candidates, structure=np.ones((3, 3, 3), dtype=bool))
    voxel_ml = math.prod(SPACING) / 1000.0
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes >= max(1, math.ceil(settings.min_lesion_volume_ml / voxel_ml))
    keep[0] = False
    removed_small = count - int(keep.sum())
    big = keep & (sizes >= math.ceil(settings.organ_min_volume_ml / voxel_ml))
    removed_organ = 0
    if big.any():
        inside = big[labels]
        where = [
            np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != ax)))
            for ax in range(3)
        ]
        box = tuple(slice(max(int(w[0]) - 1, 0), int(w[-1]) + 2) for w in where)
        solid = ndi.binary_closing(
            inside[box], structure=np.ones((3, 3, 3), dtype=bool), border_value=0
        )
        depth = ndi.distance_transform_edt(solid | inside[box], sampling=SPACING)
        deep = depth >= np.float32(settings.organ_min_thickness_mm)
        organ = np.bincount(labels[box][deep], minlength=count + 1) > 0
        organ[0] = False
        removed_organ = int(organ.sum())
        keep &= ~organ
    kept = np.where(keep[labels], labels, 0)
    grown = ndi.grey_dilation(kept, size=(3, 3, 3))
    ring = (grown > 0) & (kept == 0) & (labels == 0)
    ring_total = np.bincount(grown[ring], minlength=count + 1)
    ring_marrow = np.bincount(
        grown[ring], weights=marrow[ring].astype(np.float64), minlength=count + 1
    )
    no_bone = keep & (ring_marrow / np.maximum(ring_total, 1) < settings.bone_contact_min_fraction)
    keep &= ~no_bone
    return keep[labels], removed_small, removed_organ, int(no_bone.sum())


@pytest.mark.parametrize(("seed", "edge"), _cases())
def test_component_rules_on_the_candidates_box_equal_the_whole_volume(
    seed: int, edge: bool
) -> None:
    rng = np.random.default_rng(seed)
    candidates = _blobs(rng, (20, 24, 28), edge=edge)
    candidates[4:12, 4:14, 4:16] = True  # a large, thick component (an organ)
    marrow = rng.random(candidates.shape) < 0.3
    settings = dataclasses.replace(
        SETTINGS,
        min_lesion_volume_ml=0.1,
        organ_min_volume_ml=5.0,
        organ_min_thickness_mm=7.0,
        bone_contact_min_fraction=0.3,
    )
    expected, small, organ, no_bone = _whole_component_rules(candidates, marrow, settings)
    assert organ >= 1
    assert small > 0
    box = box_or_whole(candidates, CPU, margin=1)
    components = label_components(candidates[box], CPU, structure=np.ones((3, 3, 3), dtype=bool))
    decision = component_rules(components, marrow[box], SPACING, settings, CPU)
    tumour = paste(decision.keep[components.labels], box, candidates.shape, CPU)
    assert np.array_equal(tumour, expected)
    assert (decision.removed_small, decision.removed_organ, decision.removed_no_bone) == (
        small,
        organ,
        no_bone,
    )


@pytest.mark.parametrize(("seed", "edge"), _cases())
def test_boxed_labels_are_the_whole_volume_labels(seed: int, edge: bool) -> None:
    rng = np.random.default_rng(seed)
    mask = _blobs(rng, (20, 24, 28), edge=edge)
    structure = np.ones((3, 3, 3), dtype=bool)
    whole = label_components(mask, CPU, structure=structure)
    boxed = label_components_boxed(mask, CPU, structure=structure)
    assert boxed.count == whole.count
    assert np.array_equal(boxed.labels, whole.labels)
    assert np.array_equal(boxed.sizes, whole.sizes)


def _noisy_exam() -> Any:
    return make_phantom("small", snr=6.0, seed=4).to_exam()


def test_body_mask_and_adc_fit_on_boxes_equal_the_whole_volume() -> None:
    exam = _noisy_exam()
    low_b = exam.signal[0]
    noise = NoiseEstimate(sigma=2.0, floor=2.0, method="rayleigh mode", p99=float(low_b.max()))
    threshold = max(
        SETTINGS.body_threshold_snr * noise.sigma,
        SETTINGS.body_threshold_p99_fraction * noise.p99,
        noise.floor,
    )
    mask = low_b > np.float32(threshold)
    plane = in_plane_structure(CPU)
    closed = ndi.binary_closing(mask, structure=plane, iterations=1, border_value=0)
    background, _ = ndi.label(~closed, structure=in_plane_structure(CPU, full=False))
    edges = np.concatenate(
        [
            background[:, 0].ravel(),
            background[:, -1].ravel(),
            background[:, :, 0].ravel(),
            background[:, :, -1].ravel(),
        ]
    )
    filled = ~np.isin(background, edges[edges > 0])
    labels, _ = ndi.label(filled)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    keep = sizes >= max(1.0, SETTINGS.body_min_component_fraction * sizes.max())
    keep[0] = False
    expected_body = keep[labels]
    body = body_mask(low_b, noise, SETTINGS, CPU)
    assert np.array_equal(body, expected_body)

    fit = fit_adc(
        exam.signal, exam.b_values, body=body, noise=noise, settings=SETTINGS, backend=CPU
    )
    used = fitted_b_indices(exam.b_values, SETTINGS.adc_min_b)
    clip = max(SETTINGS.signal_floor_sigma * noise.sigma, noise.floor * 1e-3)
    planes = [exam.signal[i] for i in used]
    adc = fit_slope(
        planes, [exam.b_values[i] / 1000.0 for i in used], clip=clip, settings=SETTINGS, xp=np
    )
    adc *= np.float32(-1000.0)
    min_signal = max(SETTINGS.adc_min_snr * noise.sigma, noise.floor)
    valid = body & (exam.signal[0] > np.float32(min_signal)) & np.isfinite(adc)
    valid &= (adc >= 0) & (adc <= np.float32(SETTINGS.adc_max_um2s))
    assert np.array_equal(fit.valid, valid)
    assert np.array_equal(fit.adc, np.where(valid, adc, np.float32(0.0)))


def test_smoothing_in_the_body_box_equals_the_whole_volume_in_the_body() -> None:
    rng = np.random.default_rng(7)
    body = _blobs(rng, (20, 24, 28), edge=False)
    image = np.where(body, rng.uniform(0, 500, body.shape), 0).astype(np.float32)
    sigma = (0.0, 2.0, 1.5)
    expected = ndi.gaussian_filter(image, sigma=sigma, mode="constant")
    smoothed = _smooth_in_body(image, body, sigma, CPU)
    box = mask_box(body, CPU, margin=0)
    assert box is not None
    assert np.array_equal(smoothed[box], expected[box])
    assert np.array_equal(smoothed[body], expected[body])


def test_landmarks_follow_the_body_wherever_it_lies_in_the_grid() -> None:
    """The labels are taken on the body's box: every index is shifted back to the grid."""
    exam = make_phantom("reference", snr=0.0).to_exam()
    low_b = exam.signal[0]
    noise = NoiseEstimate(sigma=0.0, floor=1e-3, method="zero background", p99=float(low_b.max()))
    body = body_mask(low_b, noise, SETTINGS, CPU)
    spacing = exam.spacing_mm
    here = find_landmarks(body, spacing, SETTINGS, CPU)
    shift = (3, 5, 2)
    moved = np.zeros(tuple(n + s for n, s in zip(body.shape, shift, strict=True)), dtype=bool)
    moved[shift[0] :, shift[1] :, shift[2] :] = body
    there = find_landmarks(moved, spacing, SETTINGS, CPU)
    assert here.neck is not None
    assert here.crotch is not None
    assert there.neck == here.neck + shift[0]
    assert there.crotch == here.crotch + shift[0]
    assert (there.top, there.bottom) == (here.top + shift[0], here.bottom + shift[0])
    assert np.array_equal(there.body_area_mm2[shift[0] :], here.body_area_mm2)
    # A centroid is a mean of shifted indices: equal to the shifted mean up to rounding.
    np.testing.assert_allclose(
        there.trunk_center[shift[0] :], here.trunk_center + shift[1:], rtol=0, atol=1e-9
    )
    offsets = np.array([shift[1], shift[1], shift[2], shift[2]], dtype=np.float64)
    assert np.array_equal(there.trunk_box[shift[0] :], here.trunk_box + offsets, equal_nan=True)
    assert np.array_equal(there.trunk[shift[0] :, shift[1] :, shift[2] :], here.trunk)
    assert int(there.trunk.sum()) == int(here.trunk.sum())


def _plane() -> np.ndarray:
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True
    return structure


@pytest.mark.parametrize(("seed", "edge"), _cases())
@pytest.mark.parametrize("in_plane", [True, False])
def test_box_morphology_is_scipys(seed: int, edge: bool, in_plane: bool) -> None:
    """Dilation, erosion, closing and the grey dilation as shifts equal scipy.ndimage's."""
    rng = np.random.default_rng(seed)
    mask = _blobs(rng, (20, 24, 28), edge=edge) | (rng.random((20, 24, 28)) < 0.3)
    mask[:, :, -1] |= rng.random((20, 24)) < 0.5  # voxels on a face: the border matters
    axes = (1, 2) if in_plane else (0, 1, 2)
    structure = _plane() if in_plane else np.ones((3, 3, 3), dtype=bool)
    assert np.array_equal(
        dilate(mask, axes), ndi.binary_dilation(mask, structure=structure, border_value=0)
    )
    assert np.array_equal(
        erode(mask, axes), ndi.binary_erosion(mask, structure=structure, border_value=0)
    )
    assert np.array_equal(
        close(mask, axes),
        ndi.binary_closing(mask, structure=structure, iterations=1, border_value=0),
    )
    labels = np.where(mask, rng.integers(1, 40, mask.shape), 0).astype(np.int32)
    size = (1, 3, 3) if in_plane else (3, 3, 3)
    assert np.array_equal(maximum_3(labels, axes, np), ndi.grey_dilation(labels, size=size))


@pytest.mark.parametrize("shape", [(1, 5, 5), (2, 1, 4), (3, 2, 2)])
def test_box_morphology_on_thin_arrays(shape: tuple[int, int, int]) -> None:
    mask = np.ones(shape, dtype=bool)
    box = np.ones((3, 3, 3), dtype=bool)
    assert np.array_equal(erode(mask, (0, 1, 2)), ndi.binary_erosion(mask, box, border_value=0))
    single = np.zeros(shape, dtype=bool)
    single[0, 0, 0] = True
    assert np.array_equal(dilate(single, (0, 1, 2)), ndi.binary_dilation(single, box))


@pytest.mark.parametrize("seed", SEEDS)
def test_marrow_limits_from_runs_of_the_marrow_values_equal_masking_each_window(
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    shape = (40, 12, 14)
    marrow = rng.random(shape) < rng.uniform(0.02, 0.3)
    marrow[5:9] = False  # slices without marrow
    image = rng.normal(100.0, 20.0, shape).astype(np.float32)
    adc = rng.normal(450.0, 60.0, shape).astype(np.float32)
    settings = dataclasses.replace(SETTINGS, marrow_level_mm=60.0, marrow_level_min_voxels=30)
    reference = marrow_reference(image, adc, marrow, CPU)
    limits = marrow_limits(
        image, adc, marrow, reference=reference, spacing_mm=SPACING, settings=settings, backend=CPU
    )
    nz = shape[0]
    half = max(1, round(60.0 / (2.0 * SPACING[0])))
    step = max(1, round(60.0 / (4.0 * SPACING[0])))
    signal_limit = [reference.signal + settings.marrow_signal_margin_sd * reference.signal_sd] * nz
    for centre in range(step // 2, nz + step // 2, step):
        low, high = max(0, centre - half), min(nz, centre + half + 1)
        if int(marrow[low:high].sum()) < 30:
            continue
        level = marrow_reference(image[low:high], adc[low:high], marrow[low:high], CPU)
        for z in range(max(0, centre - step // 2), min(nz, centre - step // 2 + step)):
            signal_limit[z] = level.signal + settings.marrow_signal_margin_sd * level.signal_sd
    expected = np.asarray(signal_limit, dtype=np.float32).reshape(nz, 1, 1)
    assert np.array_equal(limits[0], expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_computed_b_on_the_valid_voxels_equals_the_whole_volume(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (9, 31, 17)
    adc = rng.uniform(0.0, 3000.0, shape).astype(np.float32)
    signal = rng.uniform(0.0, 800.0, shape).astype(np.float32)
    valid = rng.random(shape) < 0.4
    for b_value in (600.0, 1000.0, 1500.0, 2000.0):
        exponent = adc * np.float32(-(b_value - 900.0) * 1e-6)
        expected = np.where(valid, np.exp(exponent) * signal, np.float32(0.0))
        image = compute_high_b(signal, 900.0, adc, valid, b_value, backend=CPU)
        assert image.dtype == np.float32
        assert np.array_equal(image, expected)
