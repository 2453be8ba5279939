"""Image-based reliability checks (issue 10): each signal triggers, and does not, on its own."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from processing.backend import Device, select_backend
from processing.normal_structures import distinct_from_marrow, marrow_reference
from processing.quality import ImageSignals, QualityAssessment, Verdict, assess_image
from processing.settings import ProcessingSettings

CPU = select_backend(Device.CPU)
SETTINGS = ProcessingSettings()
SPACING = (5.0, 3.3, 3.3)

# A well-behaved exam: the values of the reference phantom at SNR 30 (measured).
GOOD = ImageSignals(
    marrow_signal_ratio=1.0,
    marrow_adc_um2s=400.0,
    marrow_voxels=34000,
    snr_high_b=26.0,
    marrow_segmented_fraction=0.025,
    adc_low_edge_fraction=0.01,
    adc_high_edge_fraction=0.0,
    tdv_ml=95.0,
    body_ml=40000.0,
    small_components=6,
    components=11,
    largest_component_ml=45.0,
    marrow_gap_mm=15.0,
    spacing_mm=(5.0, 3.3, 3.3),
    neck_found=True,
    crotch_found=True,
)


def _codes(assessment: QualityAssessment) -> dict[str, Verdict]:
    return {finding.code: finding.severity for finding in assessment.findings}


def test_a_good_exam_is_ok_and_reports_every_measure() -> None:
    assessment = assess_image(GOOD, SETTINGS)
    assert assessment.verdict is Verdict.OK
    assert assessment.findings == ()
    measures = assessment.as_dict()["measures"]
    assert measures["marrow_signal_ratio"] == 1.0
    assert measures["snr_high_b"] == 26.0
    assert measures["pixel_mm"] == 3.3
    assert set(measures) >= {
        "marrow_adc_um2s",
        "marrow_segmented_fraction",
        "adc_low_edge_fraction",
        "adc_high_edge_fraction",
        "tdv_ml",
        "body_ml",
        "small_components",
        "components",
        "largest_component_ml",
        "marrow_gap_mm",
        "slice_mm",
        "neck_found",
        "crotch_found",
    }


@pytest.mark.parametrize(
    ("changes", "code", "severity"),
    [
        ({"marrow_voxels": 200}, "marrow_not_found", Verdict.REVIEW),
        ({"marrow_signal_ratio": 4.5}, "marrow_bright", Verdict.REVIEW),
        ({"marrow_signal_ratio": 7.0}, "marrow_bright", Verdict.UNRELIABLE),
        ({"marrow_adc_um2s": 640.0}, "marrow_adc_high", Verdict.REVIEW),
        ({"marrow_adc_um2s": 720.0}, "marrow_adc_high", Verdict.UNRELIABLE),
        ({"snr_high_b": 7.0}, "low_snr", Verdict.REVIEW),
        ({"snr_high_b": 4.0}, "low_snr", Verdict.UNRELIABLE),
        ({"marrow_segmented_fraction": 0.15}, "marrow_segmented", Verdict.REVIEW),
        ({"marrow_segmented_fraction": 0.5}, "marrow_segmented", Verdict.UNRELIABLE),
        ({"adc_low_edge_fraction": 0.45}, "adc_low_edge", Verdict.REVIEW),
        ({"adc_high_edge_fraction": 0.7}, "adc_high_edge", Verdict.UNRELIABLE),
        ({"tdv_ml": 700.0}, "tdv_implausible", Verdict.REVIEW),
        ({"tdv_ml": 1300.0}, "tdv_implausible", Verdict.UNRELIABLE),
        ({"small_components": 200}, "many_small_components", Verdict.REVIEW),
        ({"small_components": 700}, "many_small_components", Verdict.UNRELIABLE),
        ({"marrow_gap_mm": 60.0}, "marrow_gap", Verdict.REVIEW),
        ({"marrow_gap_mm": 150.0}, "marrow_gap", Verdict.UNRELIABLE),
        ({"largest_component_ml": 168.0}, "large_component", Verdict.REVIEW),
        ({"largest_component_ml": 1190.0}, "large_component", Verdict.UNRELIABLE),
        ({"spacing_mm": (5.0, 5.0, 5.0)}, "coarse_pixels", Verdict.REVIEW),
        ({"spacing_mm": (8.0, 6.6, 6.6)}, "coarse_pixels", Verdict.UNRELIABLE),
        ({"spacing_mm": (9.0, 3.0, 3.0)}, "thick_slices", Verdict.REVIEW),
        ({"neck_found": False}, "no_neck", Verdict.REVIEW),
        ({"crotch_found": False}, "no_thighs", Verdict.REVIEW),
    ],
)
def test_each_signal_raises_its_finding(
    changes: dict[str, object], code: str, severity: Verdict
) -> None:
    assessment = assess_image(dataclasses.replace(GOOD, **changes), SETTINGS)  # type: ignore[arg-type]
    codes = _codes(assessment)
    assert codes == {code: severity}
    assert assessment.verdict is severity
    finding = assessment.findings[0]
    if code in ("no_neck", "no_thighs"):  # a landmark missing: no number to name
        assert finding.value is None
        assert finding.limit is None
        return
    assert finding.value is not None
    assert finding.limit is not None
    # The message names the limit it crossed (and the measured value, checked by eye here).
    assert f"{finding.limit:g}" in finding.message or f"{100 * finding.limit:g}" in finding.message


@pytest.mark.parametrize(
    "changes",
    [
        {"marrow_signal_ratio": 3.9},
        {"marrow_adc_um2s": 590.0},
        {"snr_high_b": 8.5},
        {"marrow_segmented_fraction": 0.09},
        {"adc_low_edge_fraction": 0.3, "adc_high_edge_fraction": 0.3},
        {"tdv_ml": 450.0},
        {"small_components": 140},
        {"marrow_gap_mm": 45.0, "largest_component_ml": 95.0},
        {"spacing_mm": (8.0, 4.0, 4.0)},
        {"snr_high_b": None, "marrow_segmented_fraction": None},
        {"tdv_ml": 0.0, "adc_low_edge_fraction": 0.0},
    ],
)
def test_values_inside_the_limits_raise_nothing(changes: dict[str, object]) -> None:
    assessment = assess_image(dataclasses.replace(GOOD, **changes), SETTINGS)  # type: ignore[arg-type]
    assert assessment.findings == ()


def test_limits_are_settings() -> None:
    strict = dataclasses.replace(SETTINGS, quality_snr_limits=(40.0, 20.0))
    assert _codes(assess_image(GOOD, strict)) == {"low_snr": Verdict.REVIEW}
    with pytest.raises(ValueError, match="quality_snr_limits"):
        ProcessingSettings(quality_snr_limits=(8.0, 15.0))
    with pytest.raises(ValueError, match="quality_marrow_ratio_limits"):
        ProcessingSettings(quality_marrow_ratio_limits=(6.0, 4.0))


def test_marrow_reference_is_robust_to_a_minority_of_lesion_voxels() -> None:
    rng = np.random.default_rng(0)
    signal = rng.normal(100.0, 10.0, size=(10, 20, 20)).astype(np.float32)
    adc = rng.normal(420.0, 30.0, size=(10, 20, 20)).astype(np.float32)
    signal[:1] = 400.0  # a tenth of the voxels: bright lesion with a marrow-like ADC
    adc[:1] = 600.0
    marrow = np.ones(signal.shape, dtype=bool)
    reference = marrow_reference(signal, adc, marrow, CPU)
    assert reference.voxels == signal.size
    assert reference.signal == pytest.approx(100.0, rel=0.05)
    assert reference.signal_sd == pytest.approx(10.0, rel=0.25)
    assert reference.adc == pytest.approx(420.0, rel=0.05)


def test_distinct_from_marrow_keeps_brighter_or_higher_adc_voxels_only() -> None:
    rng = np.random.default_rng(1)
    shape = (10, 30, 30)
    signal = rng.normal(300.0, 15.0, size=shape).astype(np.float32)  # bright marrow
    adc = rng.normal(420.0, 25.0, size=shape).astype(np.float32)
    signal[2:4, 5:10, 5:10] = 450.0  # lesion brighter than marrow, ADC a little above it
    adc[2:4, 5:10, 5:10] = 480.0  # (over median + 1 SD, under median + 3 SD)
    adc[6:8, 5:10, 5:10] = 900.0  # lesion as bright as marrow, higher ADC
    signal[2:4, 20:25, 20:25] = 450.0  # marrow brightened by a neighbour's blur: marrow ADC
    adc[2:4, 20:25, 20:25] = 420.0
    marrow = np.ones(shape, dtype=bool)
    reference = marrow_reference(signal, adc, marrow, CPU)
    distinct = distinct_from_marrow(
        signal, adc, marrow, reference=reference, spacing_mm=SPACING, settings=SETTINGS, backend=CPU
    )
    assert distinct[2:4, 5:10, 5:10].all()
    assert distinct[6:8, 5:10, 5:10].all()
    assert not distinct[2:4, 20:25, 20:25].any()
    normal = np.ones(shape, dtype=bool)
    normal[2:4, 5:10, 5:10] = False
    normal[2:4, 20:25, 20:25] = False
    normal[6:8, 5:10, 5:10] = False
    assert distinct[normal].mean() < 0.01  # ~2 x 0.13 % by chance at 3 SD
    # Without enough marrow-like voxels there is no estimate and the rule keeps everything.
    few = marrow_reference(signal, adc, np.zeros(shape, dtype=bool), CPU)
    assert few.voxels == 0
    assert distinct_from_marrow(
        signal, adc, marrow, reference=few, spacing_mm=SPACING, settings=SETTINGS, backend=CPU
    ).all()


def test_marrow_limits_follow_the_level_of_the_marrow() -> None:
    """Bright red marrow at one level, dark fatty marrow at another: each has its own limit."""
    rng = np.random.default_rng(2)
    shape = (40, 20, 20)  # 5 mm slices: two 100 mm levels
    signal = rng.normal(100.0, 5.0, size=shape).astype(np.float32)
    signal[20:] = rng.normal(300.0, 15.0, size=(20, 20, 20))
    adc = rng.normal(420.0, 20.0, size=shape).astype(np.float32)
    signal[28:31, 8:12, 8:12] = 420.0  # 1.4 x the bright level's marrow ...
    adc[28:31, 8:12, 8:12] = 470.0  # ... with an ADC between median + 1 SD and + 3 SD
    marrow = np.ones(shape, dtype=bool)
    reference = marrow_reference(signal, adc, marrow, CPU)
    kwargs = {"reference": reference, "spacing_mm": SPACING, "backend": CPU}
    by_level = distinct_from_marrow(signal, adc, marrow, settings=SETTINGS, **kwargs)  # type: ignore[arg-type]
    assert by_level[28:31, 8:12, 8:12].all()
    assert by_level[20:28].mean() < 0.01  # the bright level's normal marrow stays out
    # One body-wide spread (marrow_level_mm 0) would hide the lesion in the bimodal spread.
    whole = dataclasses.replace(SETTINGS, marrow_level_mm=0.0)
    body_wide = distinct_from_marrow(signal, adc, marrow, settings=whole, **kwargs)  # type: ignore[arg-type]
    assert not body_wide[28:31, 8:12, 8:12].any()
