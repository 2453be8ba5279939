"""ADC fit, noise estimate, computed b and input checks (synthetic arrays and the phantom)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from processing.adc import (
    check_signal,
    estimate_noise_sigma,
    fit_adc,
    fitted_b_indices,
    lowest_fitted_b_below_minimum,
)
from processing.backend import Device, select_backend
from processing.computed_b import compute_high_b
from processing.errors import InvalidExamError
from processing.exam import DwiExam
from processing.phantom import make_phantom
from processing.pipeline import ADC_LOW_B, process_exam
from processing.quality import Verdict
from processing.settings import ProcessingSettings

CPU = select_backend(Device.CPU)
SETTINGS = ProcessingSettings()


def _exact_signal(adc_um2s: np.ndarray, s0: np.ndarray, b_values: tuple[float, ...]) -> np.ndarray:
    planes = [s0 * np.exp(-b * adc_um2s * 1e-6) for b in b_values]
    return np.stack(planes).astype(np.float32)


def _exam(signal: np.ndarray, b_values: tuple[float, ...]) -> DwiExam:
    return DwiExam(
        signal=signal,
        b_values=b_values,
        affine=np.eye(4),
        spacing_mm=(5.0, 3.0, 3.0),
        study_instance_uid="1.2.3",
        frame_of_reference_uid="1.2.3.4",
        patient_id="P",
    )


@pytest.mark.parametrize(
    "b_values", [(50.0, 600.0, 900.0), (0.0, 400.0, 1400.0), (50.0, 400.0, 900.0, 1400.0)]
)
def test_noise_free_fit_recovers_adc(b_values: tuple[float, ...]) -> None:
    rng = np.random.default_rng(1)
    adc = rng.uniform(300.0, 3000.0, size=(4, 16, 16)).astype(np.float32)
    s0 = rng.uniform(50.0, 2000.0, size=adc.shape).astype(np.float32)
    signal = _exact_signal(adc, s0, b_values)
    noise = estimate_noise_sigma(signal[0], SETTINGS, CPU)
    body = np.ones(adc.shape, dtype=bool)
    fit = fit_adc(signal, b_values, body=body, noise=noise, settings=SETTINGS, backend=CPU)
    assert fit.valid.all()
    np.testing.assert_allclose(fit.adc, adc, rtol=2e-4)


def test_fit_ignores_b_values_below_adc_min_b() -> None:
    """A perfusion-like excess at b = 0 does not bias the fit over b >= 50."""
    adc = np.full((1, 4, 4), 1000.0, dtype=np.float32)
    s0 = np.full(adc.shape, 500.0, dtype=np.float32)
    b_values = (0.0, 100.0, 800.0)
    signal = _exact_signal(adc, s0, b_values)
    signal[0] *= 1.3  # pseudo-diffusion contribution at b = 0
    noise = estimate_noise_sigma(signal[0], SETTINGS, CPU)
    fit = fit_adc(
        signal,
        b_values,
        body=np.ones(adc.shape, bool),
        noise=noise,
        settings=SETTINGS,
        backend=CPU,
    )
    np.testing.assert_allclose(fit.adc, 1000.0, rtol=1e-4)


def test_rayleigh_noise_sigma_is_recovered() -> None:
    rng = np.random.default_rng(2)
    sigma = 7.0
    shape = (8, 64, 64)
    truth = np.zeros(shape, dtype=np.float32)
    truth[:, 16:48, 16:48] = 300.0  # body in the middle of an air field of view
    noisy = np.hypot(truth + rng.normal(0, sigma, shape), rng.normal(0, sigma, shape))
    estimate = estimate_noise_sigma(noisy.astype(np.float32), SETTINGS, CPU)
    assert estimate.method == "rayleigh mode"
    assert estimate.sigma == pytest.approx(sigma, rel=0.1)


def test_zero_background_gives_zero_sigma() -> None:
    image = np.zeros((4, 32, 32), dtype=np.float32)
    image[:, 8:24, 8:24] = 100.0
    estimate = estimate_noise_sigma(image, SETTINGS, CPU)
    assert estimate.method == "zero background"
    assert estimate.sigma == 0.0
    assert 0 < estimate.floor < 1.0


def test_invalid_voxels_are_zero_and_flagged() -> None:
    b_values = (50.0, 600.0, 900.0)
    adc = np.full((1, 4, 4), 800.0, dtype=np.float32)
    s0 = np.full(adc.shape, 400.0, dtype=np.float32)
    signal = _exact_signal(adc, s0, b_values)
    signal[:, 0, 0, 0] = 0.0  # no signal: below the floor at the lowest b
    signal[:, 0, 1, 1] = [400.0, 500.0, 600.0]  # rising signal: negative ADC
    signal[:, 0, 2, 2] = [400.0, 1e-3, 1e-3]  # ADC far above adc_max: noise
    body = np.ones(adc.shape, dtype=bool)
    body[0, 3, 3] = False  # outside the body
    noise = estimate_noise_sigma(signal[0], SETTINGS, CPU)
    fit = fit_adc(signal, b_values, body=body, noise=noise, settings=SETTINGS, backend=CPU)
    for index in [(0, 0, 0), (0, 1, 1), (0, 2, 2), (0, 3, 3)]:
        assert not fit.valid[index]
        assert fit.adc[index] == 0.0
    assert fit.valid.sum() == 16 - 4
    np.testing.assert_allclose(fit.adc[fit.valid], 800.0, rtol=1e-4)


@pytest.mark.parametrize("b_computed", [500.0, 1000.0, 1500.0, 2000.0])
def test_computed_b_matches_model(b_computed: float) -> None:
    adc = np.linspace(300.0, 2500.0, 32, dtype=np.float32).reshape(2, 4, 4)
    s0 = np.full(adc.shape, 800.0, dtype=np.float32)
    b_values = (50.0, 600.0, 900.0)
    signal = _exact_signal(adc, s0, b_values)
    valid = np.ones(adc.shape, dtype=bool)
    valid[0, 0, 0] = False
    image = compute_high_b(signal[-1], 900.0, adc, valid, b_computed, backend=CPU)
    expected = s0 * np.exp(-b_computed * adc * 1e-6)
    expected[0, 0, 0] = 0.0
    np.testing.assert_allclose(image, expected, rtol=1e-5)
    assert image.dtype == np.float32


def test_phantom_noise_free_lesion_adc_bias_below_half_percent() -> None:
    phantom = make_phantom("small", snr=0.0)
    result = process_exam(phantom.to_exam(), device="cpu")
    lesion = phantom.lesion_labels > 0
    assert result.adc_valid[lesion].all()
    bias = (result.adc[lesion] - phantom.true_adc[lesion]) / phantom.true_adc[lesion]
    assert abs(float(bias.mean())) <= 0.005
    assert float(np.abs(bias).max()) <= 0.005


@pytest.mark.parametrize(
    ("signal_edit", "b_values", "message"),
    [
        (lambda s: s * 0, (50.0, 600.0, 900.0), "zero everywhere"),
        (
            lambda s: np.where(np.arange(s.size).reshape(s.shape) == 5, np.nan, s),
            (50.0, 600.0, 900.0),
            "NaN",
        ),
        (lambda s: s - 1000.0, (50.0, 600.0, 900.0), "negative"),
        (lambda s: s, (900.0, 600.0, 50.0), "strictly increase"),
        (lambda s: s, (50.0, 600.0, 600.0), "strictly increase"),
    ],
)
def test_bad_input_raises_clear_error(
    signal_edit: object, b_values: tuple[float, ...], message: str
) -> None:
    adc = np.full((3, 8, 8), 900.0, dtype=np.float32)
    signal = _exact_signal(adc, np.full(adc.shape, 300.0, np.float32), (50.0, 600.0, 900.0))
    edited = np.asarray(signal_edit(signal), dtype=np.float32)  # type: ignore[operator]
    with pytest.raises(InvalidExamError, match=message):
        process_exam(_exam(edited, b_values), device="cpu")


def test_fitted_b_indices_and_check_signal_on_good_input() -> None:
    assert fitted_b_indices((0.0, 50.0, 900.0), 50.0) == (1, 2)
    assert fitted_b_indices((0.0, 10.0, 900.0), 50.0) == (1, 2)  # highest below, as few as make two
    assert fitted_b_indices((0.0, 1000.0), 50.0) == (0, 1)
    assert lowest_fitted_b_below_minimum((0.0, 1000.0), 50.0) == 0.0
    assert lowest_fitted_b_below_minimum((50.0, 600.0, 900.0), 50.0) is None
    with pytest.raises(InvalidExamError, match="at least two b-values"):
        fitted_b_indices((900.0,), 50.0)
    signal = np.ones((2, 2, 2, 2), dtype=np.float32)
    check_signal(signal, (50.0, 900.0), CPU)


def test_single_iteration_setting_still_exact() -> None:
    settings = dataclasses.replace(SETTINGS, adc_fit_iterations=1)
    adc = np.full((1, 3, 3), 1200.0, dtype=np.float32)
    signal = _exact_signal(adc, np.full(adc.shape, 250.0, np.float32), (50.0, 600.0, 900.0))
    noise = estimate_noise_sigma(signal[0], settings, CPU)
    fit = fit_adc(
        signal,
        (50.0, 600.0, 900.0),
        body=np.ones(adc.shape, bool),
        noise=noise,
        settings=settings,
        backend=CPU,
    )
    np.testing.assert_allclose(fit.adc, 1200.0, rtol=1e-4)


def test_b0_1000_protocol_is_fitted_with_b0_and_flagged_for_review() -> None:
    """b 0/1000 (no b >= adc_min_b but one): the fit uses b = 0 and the verdict says so."""
    rng = np.random.default_rng(3)
    adc = rng.uniform(400.0, 2500.0, size=(4, 16, 16)).astype(np.float32)
    s0 = rng.uniform(200.0, 2000.0, size=adc.shape).astype(np.float32)
    b_values = (0.0, 1000.0)
    result = process_exam(_exam(_exact_signal(adc, s0, b_values), b_values), device="cpu")
    np.testing.assert_allclose(result.adc[result.adc_valid], adc[result.adc_valid], rtol=2e-4)
    [finding] = [f for f in result.quality.findings if f.code == ADC_LOW_B]
    assert finding.severity is Verdict.REVIEW
    assert (finding.value, finding.limit) == (0.0, SETTINGS.adc_min_b)
    assert "b = 0" in finding.message
    standard = process_exam(
        _exam(_exact_signal(adc, s0, (50.0, 1000.0)), (50.0, 1000.0)), device="cpu"
    )
    assert ADC_LOW_B not in {f.code for f in standard.quality.findings}
