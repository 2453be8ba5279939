"""Phantom variations (issue 10): what real patients and protocols vary, with exact truth."""

from __future__ import annotations

import math

import numpy as np
import pytest

from processing.phantom import (
    MARROW_TISSUES,
    TISSUE_PROPERTIES,
    PhantomVariation,
    Tissue,
    make_phantom,
)
from processing.phantom_variation import marrow_b1000_ratio, tissue_properties

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
