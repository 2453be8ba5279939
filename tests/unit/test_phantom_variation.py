"""Phantom variations (issue 10): what real patients and protocols vary, with exact truth."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest

from processing.phantom import (
    MARROW_TISSUES,
    TISSUE_PROPERTIES,
    Phantom,
    PhantomVariation,
    Tissue,
    make_phantom,
)
from processing.phantom_anatomy import NECK_H
from processing.phantom_variation import DIFFUSE_EXTENTS, marrow_b1000_ratio, tissue_properties
from service.cli import main

PATIENT = "PHANTOM-0001"


def _mean_at(phantom_signal: np.ndarray, tissue: np.ndarray, label: Tissue) -> float:
    return float(phantom_signal[tissue == int(label)].astype(np.float64).mean())


def test_no_variation_and_the_default_variation_give_the_same_phantom() -> None:
    plain = make_phantom("small", seed=2, patient_id=PATIENT)
    default = make_phantom("small", seed=2, patient_id=PATIENT, variation=PhantomVariation())
    np.testing.assert_array_equal(plain.signal, default.signal)
    np.testing.assert_array_equal(plain.s0, default.s0)
    np.testing.assert_array_equal(plain.true_adc, default.true_adc)
    assert plain.truth == default.truth
    assert "variation" not in plain.truth


def test_default_marrow_is_about_one_times_muscle_at_b1000() -> None:
    assert marrow_b1000_ratio(TISSUE_PROPERTIES) == pytest.approx(1.14, abs=0.01)
    assert tissue_properties(PhantomVariation()) is TISSUE_PROPERTIES


@pytest.mark.parametrize(("ratio", "adc"), [(3.0, None), (0.8, 300.0), (5.0, 600.0)])
def test_marrow_brightness_and_adc_are_met_at_b1000(ratio: float, adc: float | None) -> None:
    variation = PhantomVariation(marrow_b1000_ratio=ratio, marrow_adc_um2s=adc)
    phantom = make_phantom(
        "small", snr=0.0, b_values=(0.0, 1000.0), patient_id=PATIENT, variation=variation
    )
    tissue = phantom.tissue_labels
    high = phantom.signal[1]
    muscle = _mean_at(high, tissue, Tissue.MUSCLE)
    for marrow in (Tissue.MARROW_SPINE, Tissue.MARROW_PELVIS):
        assert _mean_at(high, tissue, marrow) / muscle == pytest.approx(ratio, rel=1e-4)
    expected_adc = 400.0 if adc is None else adc
    for marrow in MARROW_TISSUES:
        assert np.all(phantom.true_adc[tissue == int(marrow)] == np.float32(expected_adc))
    # Fatty skull and femoral marrow keep their lower signal relative to the spine.
    spine_s0 = phantom.truth["tissues"]["marrow_spine"]["s0"]
    femur_s0 = phantom.truth["tissues"]["marrow_femur"]["s0"]
    default = TISSUE_PROPERTIES
    assert femur_s0 / spine_s0 == pytest.approx(
        default[Tissue.MARROW_FEMUR].s0 / default[Tissue.MARROW_SPINE].s0
    )
    assert phantom.truth["variation"]["marrow_b1000_ratio"] == ratio


def test_lesion_truth_does_not_depend_on_the_marrow() -> None:
    plain = make_phantom("small", snr=0.0, patient_id=PATIENT)
    bright = make_phantom(
        "small",
        snr=0.0,
        patient_id=PATIENT,
        variation=PhantomVariation(marrow_b1000_ratio=4.0, marrow_adc_um2s=500.0),
    )
    np.testing.assert_array_equal(plain.lesion_labels, bright.lesion_labels)
    assert plain.truth["lesions"] == bright.truth["lesions"]
    assert plain.truth["total_lesion_volume_ml"] == bright.truth["total_lesion_volume_ml"]


def test_snr_at_the_highest_b_sets_the_noise() -> None:
    b_values = (50.0, 600.0, 900.0)
    phantom = make_phantom(
        "small",
        b_values=b_values,
        patient_id=PATIENT,
        variation=PhantomVariation(snr_high_b=12.0),
    )
    muscle = TISSUE_PROPERTIES[Tissue.MUSCLE]
    high_muscle = muscle.s0 * math.exp(-900.0 * muscle.adc_um2s * 1e-6)
    assert phantom.truth["noise_sigma"] == pytest.approx(high_muscle / 12.0)
    low_muscle = muscle.s0 * math.exp(-50.0 * muscle.adc_um2s * 1e-6)
    assert phantom.snr == pytest.approx(low_muscle / phantom.truth["noise_sigma"])
    # Measured: the spread of pure-noise background follows sigma (Rayleigh).
    background = phantom.signal[-1][phantom.tissue_labels == int(Tissue.BACKGROUND)]
    rayleigh_mean = phantom.truth["noise_sigma"] * math.sqrt(math.pi / 2.0)
    assert float(background.mean()) == pytest.approx(rayleigh_mean, rel=0.02)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"marrow_b1000_ratio": 0.0}, "marrow_b1000_ratio must be between"),
        ({"marrow_b1000_ratio": math.nan}, "marrow_b1000_ratio must be between"),
        ({"marrow_adc_um2s": 5000.0}, "marrow_adc_um2s must be between"),
        ({"snr_high_b": 0.0}, "snr_high_b must be between"),
        ({"snr_high_b": "20"}, "snr_high_b must be a number"),
    ],
)
def test_bad_variations_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PhantomVariation(**kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def plain() -> Phantom:
    return make_phantom("small", snr=0.0, patient_id=PATIENT)


def _varied(**fields: object) -> Phantom:
    variation = PhantomVariation(**fields)  # type: ignore[arg-type]
    return make_phantom("small", snr=0.0, patient_id=PATIENT, variation=variation)


def _assert_truth_exact(phantom: Phantom) -> None:
    """Every truth figure is a count or a mean over the arrays."""
    truth = phantom.truth
    voxel_ml = float(np.prod(phantom.spacing_mm)) / 1000.0
    labels = phantom.lesion_labels
    for row in truth["lesions"]:
        mask = labels == row["label"]
        assert row["volume_ml"] == pytest.approx(mask.sum() * voxel_ml, rel=1e-12)
        assert row["mean_adc_um2s"] == pytest.approx(float(phantom.true_adc[mask].mean()), rel=1e-6)
    disease = labels > 0
    assert truth["total_lesion_volume_ml"] == pytest.approx(disease.sum() * voxel_ml)
    assert truth["median_adc_um2s"] == pytest.approx(
        float(np.median(phantom.true_adc[disease])), rel=1e-6
    )
    assert truth["focal_lesion_volume_ml"] + truth["diffuse_volume_ml"] == pytest.approx(
        truth["total_lesion_volume_ml"]
    )
    assert np.all(phantom.tissue_labels[disease] == int(Tissue.LESION))


@pytest.mark.parametrize("extent", list(DIFFUSE_EXTENTS))
def test_diffuse_infiltration_fills_its_marrow_and_counts_as_disease(
    plain: Phantom, extent: str
) -> None:
    phantom = _varied(diffuse_extent=extent, diffuse_adc_um2s=900.0, diffuse_contrast=2.5)
    _assert_truth_exact(phantom)
    diffuse = phantom.truth["diffuse"]
    mask = phantom.lesion_labels == diffuse["label"]
    assert diffuse["voxels"] == int(mask.sum()) > 0
    assert diffuse["label"] > max(row["label"] for row in phantom.truth["lesions"])
    assert phantom.truth["lesions"] == plain.truth["lesions"]
    # Only normal spine and pelvis marrow was infiltrated, not focal lesions.
    before = plain.tissue_labels[mask]
    assert set(np.unique(before)) <= {int(Tissue.MARROW_SPINE), int(Tissue.MARROW_PELVIS)}
    assert not np.any(plain.lesion_labels[mask])
    assert np.all(phantom.true_adc[mask] == np.float32(900.0))
    spine = plain.tissue_labels == int(Tissue.MARROW_SPINE)
    ratio_b900 = float(phantom.signal[-1][mask].mean() / plain.signal[-1][spine].mean())
    # At b = 1000 the ratio is 2.5; at the protocol's b900 it is 2.5 exp(100 (900-400) 1e-6).
    expected = 2.5 * math.exp(100.0 * (900.0 - 400.0) * 1e-6)
    assert phantom.b_values[-1] == 900.0
    assert ratio_b900 == pytest.approx(expected, rel=1e-4)


def test_diffuse_extents_nest(plain: Phantom) -> None:
    volumes = {
        extent: _varied(diffuse_extent=extent).truth["diffuse_volume_ml"]
        for extent in DIFFUSE_EXTENTS
    }
    assert volumes["lumbar_spine"] + volumes["pelvis"] == pytest.approx(
        volumes["lumbar_spine_and_pelvis"]
    )
    assert volumes["lumbar_spine_and_pelvis"] < volumes["spine_and_pelvis"]


def test_lesion_adc_and_contrast_scale_every_lesion(plain: Phantom) -> None:
    phantom = _varied(lesion_adc_scale=0.7, lesion_s0_scale=0.5)
    _assert_truth_exact(phantom)
    np.testing.assert_array_equal(phantom.lesion_labels, plain.lesion_labels)
    disease = plain.lesion_labels > 0
    np.testing.assert_allclose(phantom.true_adc[disease], 0.7 * plain.true_adc[disease], rtol=1e-6)
    np.testing.assert_allclose(phantom.s0[disease], 0.5 * plain.s0[disease], rtol=1e-6)
    np.testing.assert_array_equal(phantom.s0[~disease], plain.s0[~disease])


def _body_on_the_border(phantom: Phantom) -> bool:
    tissue = phantom.tissue_labels
    edges = (tissue[:, 0, :], tissue[:, -1, :], tissue[:, :, 0], tissue[:, :, -1])
    return any(bool(np.any(edge != int(Tissue.BACKGROUND))) for edge in edges)


@pytest.mark.parametrize(("slice_mm", "pixel_mm"), [(4.0, 1.5), (8.0, 4.0), (6.0, None)])
def test_slice_and_pixel_replace_the_grid(
    plain: Phantom, slice_mm: float, pixel_mm: float | None
) -> None:
    phantom = _varied(slice_mm=slice_mm, pixel_mm=pixel_mm)
    _assert_truth_exact(phantom)
    pixel = plain.spacing_mm[1] if pixel_mm is None else pixel_mm
    assert phantom.spacing_mm == (slice_mm, pixel, pixel)
    assert not _body_on_the_border(phantom)
    stations = phantom.stations
    assert len(stations) == len(plain.stations)
    assert stations[0].first_slice == 0
    assert stations[-1].first_slice + stations[-1].n_slices == phantom.signal.shape[1]
    assert all(b.first_slice < a.first_slice + a.n_slices for a, b in itertools.pairwise(stations))
    plain_length = plain.signal.shape[1] * plain.spacing_mm[0]
    assert phantom.signal.shape[1] * slice_mm == pytest.approx(plain_length, rel=0.1)
    # The same lesions; on a fine grid their voxel volumes approach the ellipsoids'.
    assert [r["key"] for r in phantom.truth["lesions"]] == [
        r["key"] for r in plain.truth["lesions"]
    ]
    tolerance = 0.1 if pixel <= 2.0 else 0.4
    for row in phantom.truth["lesions"]:
        if row["nominal_volume_ml"] > 5.0:
            assert row["volume_ml"] == pytest.approx(row["nominal_volume_ml"], rel=tolerance)


def test_body_scale_and_arms_keep_the_body_inside_the_field(plain: Phantom) -> None:
    large = _varied(body_scale=1.2, arms=True)
    _assert_truth_exact(large)
    assert not _body_on_the_border(large)
    assert large.signal.shape[2] > plain.signal.shape[2]
    small = _varied(body_scale=0.85)
    _assert_truth_exact(small)

    def width_mm(phantom: Phantom) -> float:
        columns = np.any(phantom.tissue_labels != int(Tissue.BACKGROUND), axis=(0, 1))
        return float(columns.sum() * phantom.spacing_mm[2])

    assert width_mm(small) < width_mm(plain) < width_mm(large)


def test_arms_hold_muscle_and_humerus_marrow_beside_the_trunk(plain: Phantom) -> None:
    phantom = _varied(arms=True)
    _assert_truth_exact(phantom)
    assert [r["key"] for r in phantom.truth["lesions"]] == [
        r["key"] for r in plain.truth["lesions"]
    ]
    long_bone = np.argwhere(phantom.tissue_labels == int(Tissue.MARROW_FEMUR))
    x_mm = long_bone[:, 2] * phantom.spacing_mm[2] + phantom.affine[0, 3]
    z_index = long_bone[:, 0]
    # Humeri: long-bone marrow far lateral, in the upper half of the exam (femora are below).
    humerus = (np.abs(x_mm) > 170.0) & (z_index < phantom.signal.shape[1] // 2)
    assert humerus.sum() > 20

    def muscle_litres(p: Phantom) -> float:
        return float((p.tissue_labels == int(Tissue.MUSCLE)).sum() * np.prod(p.spacing_mm) / 1e6)

    # Two arms add a few litres of muscle.
    assert 2.0 < muscle_litres(phantom) - muscle_litres(plain) < 8.0


def test_exam_from_the_skull_base_has_no_vault_and_drops_the_skull_lesion(plain: Phantom) -> None:
    phantom = _varied(exam_start="skull_base")
    _assert_truth_exact(phantom)
    # At most the skull base's own diploe in the first slice remains of the vault.
    skull = Tissue.MARROW_SKULL
    vault = (phantom.tissue_labels == skull).sum() / (plain.tissue_labels == skull).sum()
    assert vault < 0.1
    assert not np.any(phantom.tissue_labels[1:] == skull)
    assert phantom.truth["lesions_outside_field"] == ["skull"]
    keys = [row["key"] for row in phantom.truth["lesions"]]
    assert "skull" not in keys
    assert "cervical" in keys
    # Labels keep their identity: the remaining lesions have the plain phantom's labels.
    plain_labels = {row["key"]: row["label"] for row in plain.truth["lesions"]}
    assert all(plain_labels[row["key"]] == row["label"] for row in phantom.truth["lesions"])


def _first_slice_of(phantom: Phantom, tissue: Tissue) -> int:
    return int(np.argmax(np.any(phantom.tissue_labels == int(tissue), axis=(1, 2))))


@pytest.mark.parametrize("factor", [0.6, 1.4])
def test_neck_scale_moves_the_chest_by_the_stretch(plain: Phantom, factor: float) -> None:
    phantom = _varied(neck_scale=factor)
    _assert_truth_exact(phantom)
    height_scale = 1.0  # the patient's own scale is within 0.96-1.04
    expected_mm = (factor - 1.0) * (NECK_H[1] - NECK_H[0]) * height_scale
    moved_mm = (
        _first_slice_of(phantom, Tissue.HEART) - _first_slice_of(plain, Tissue.HEART)
    ) * phantom.spacing_mm[0]
    assert moved_mm == pytest.approx(expected_mm, abs=phantom.spacing_mm[0] + 3.0)
    # The head does not move.
    assert _first_slice_of(phantom, Tissue.BRAIN) == _first_slice_of(plain, Tissue.BRAIN)


def test_b0_protocols_are_built() -> None:
    for b_values in ((0.0, 1000.0), (0.0, 400.0, 1400.0), (50.0, 400.0, 800.0, 1000.0)):
        phantom = make_phantom("small", b_values=b_values, patient_id=PATIENT, snr=0.0)
        assert phantom.b_values == b_values
        for index, b in enumerate(b_values):
            expected = phantom.s0 * np.exp(-b * 1e-6 * phantom.true_adc.astype(np.float64))
            np.testing.assert_allclose(phantom.signal[index], expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"diffuse_extent": "femur"}, "diffuse_extent must be one of"),
        ({"diffuse_adc_um2s": 900.0}, "need a diffuse_extent"),
        ({"exam_start": "chin"}, "exam_start must be one of"),
        ({"arms": "yes"}, "arms must be true or false"),
        ({"slice_mm": 20.0}, "slice_mm must be between"),
        ({"pixel_mm": 0.5}, "pixel_mm must be between"),
        ({"body_scale": 2.0}, "body_scale must be between"),
        ({"neck_scale": 0.1}, "neck_scale must be between"),
        ({"lesion_adc_scale": 5.0}, "lesion_adc_scale must be between"),
        ({"lesion_s0_scale": 0.0}, "lesion_s0_scale must be between"),
    ],
)
def test_bad_step_two_variations_are_named(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PhantomVariation(**kwargs)  # type: ignore[arg-type]


def test_phantom_command_writes_the_variation_into_the_truth(tmp_path: Path) -> None:
    argv = ["phantom", "--out", str(tmp_path), "--preset", "small", "--no-distractors"]
    flags = ["--marrow-brightness", "3", "--diffuse", "pelvis", "--start", "skull_base"]
    flags += ["--b-values", "0,400,1400", "--snr-high-b", "15", "--slice-mm", "6", "--arms"]
    assert main([*argv, *flags]) == 0
    truth = json.loads((tmp_path / "truth" / "truth.json").read_text())
    assert truth["variation"] == {
        "marrow_b1000_ratio": 3.0,
        "snr_high_b": 15.0,
        "diffuse_extent": "pelvis",
        "slice_mm": 6.0,
        "arms": True,
        "exam_start": "skull_base",
    }
    assert truth["b_values"] == [0.0, 400.0, 1400.0]
    assert truth["normal_marrow"]["b1000_ratio_to_muscle"] == pytest.approx(3.0)
    assert truth["diffuse_volume_ml"] > 0.0
    assert truth["spacing_mm"][0] == 6.0


def test_phantom_command_names_a_bad_variation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["phantom", "--out", str(tmp_path), "--neck-scale", "3"]) == 2
    assert "neck_scale must be between 0.5 and 1.6" in capsys.readouterr().err
