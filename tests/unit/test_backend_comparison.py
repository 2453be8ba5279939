"""The CPU/GPU comparison of ``tests/gpu`` bites: each GPU-only fault, injected, is flagged.

A "second backend" is the CPU pipeline with one fault injected into the stage
where a GPU implementation could get it wrong (issue 13 lists them: yellow
reported as red, red and yellow swapped, the histogram shifted by one bin,
p95 replaced by p90, the SD doubled, a lesion's median ADC wrong).
:func:`tests.helpers.backend_comparison.compare_results`, the function the GPU tests
use, must flag every one; and it must accept what a correct GPU gives: the
same result, or an ADC map a float32 ulp away.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import processing.pipeline as pipeline_module
from processing.adc import AdcFit
from processing.phantom import make_phantom
from processing.pipeline import process_exam
from processing.results import AdcClass, AdcStats, Histogram, ProcessingResult
from processing.statistics import LesionMeasures
from tests.helpers.backend_comparison import Tolerance, compare_results

RED, YELLOW = AdcClass.RED.value, AdcClass.YELLOW.value


@pytest.fixture(scope="module")
def exam() -> Any:
    return make_phantom("small", snr=40.0, seed=0).to_exam()


@pytest.fixture(scope="module")
def reference(exam: Any) -> ProcessingResult:
    result = process_exam(exam, device="cpu")
    classes = result.stats.classes
    # The faults below need these to exist, or they would change nothing.
    assert classes.red_ml > 0 and classes.yellow_ml > 0
    assert len({lesion.adc_median for lesion in result.stats.lesions}) > 1
    return result


def _yellow_as_red(labels: Any) -> Any:
    labels = labels.copy()
    labels[labels == YELLOW] = RED
    return labels


def _red_yellow_swapped(labels: Any) -> Any:
    swapped = labels.copy()
    swapped[labels == YELLOW] = RED
    swapped[labels == RED] = YELLOW
    return swapped


def _shifted(histogram: Histogram) -> Histogram:
    return dataclasses.replace(histogram, counts=(0, *histogram.counts[:-1]))


def _p95_is_p90(stats: AdcStats | None) -> AdcStats | None:
    return None if stats is None else dataclasses.replace(stats, p95=stats.p90)


def _sd_doubled(stats: AdcStats | None) -> AdcStats | None:
    return None if stats is None else dataclasses.replace(stats, sd=2.0 * stats.sd)


def _median_of_the_next_lesion(measures: LesionMeasures) -> LesionMeasures:
    return dataclasses.replace(measures, adc_median=np.roll(measures.adc_median, 1))


# (stage in processing.pipeline, what the faulty GPU stage does to its output)
FAULTS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "yellow reported as red": ("classify_adc", _yellow_as_red),
    "red and yellow swapped": ("classify_adc", _red_yellow_swapped),
    "histogram shifted by one bin": ("adc_histogram", _shifted),
    "p95 replaced by p90": ("adc_statistics", _p95_is_p90),
    "SD doubled": ("adc_statistics", _sd_doubled),
    "lesion median ADC wrong": ("lesion_measures", _median_of_the_next_lesion),
}


def _second_backend(
    monkeypatch: pytest.MonkeyPatch, exam: Any, stage: str, fault: Callable[[Any], Any]
) -> ProcessingResult:
    original = getattr(pipeline_module, stage)

    def faulty(*args: Any, **kwargs: Any) -> Any:
        return fault(original(*args, **kwargs))

    with monkeypatch.context() as patch:
        patch.setattr(pipeline_module, stage, faulty)
        return process_exam(exam, device="cpu")


@pytest.mark.parametrize("name", list(FAULTS))
def test_each_gpu_only_fault_is_flagged(
    name: str, monkeypatch: pytest.MonkeyPatch, exam: Any, reference: ProcessingResult
) -> None:
    stage, fault = FAULTS[name]
    faulty = _second_backend(monkeypatch, exam, stage, fault)
    problems = compare_results(reference, faulty)
    assert problems, f"the comparison let '{name}' through"


def test_the_same_result_matches(exam: Any, reference: ProcessingResult) -> None:
    assert compare_results(reference, process_exam(exam, device="cpu")) == []


def test_an_adc_map_one_ulp_away_matches(
    monkeypatch: pytest.MonkeyPatch, exam: Any, reference: ProcessingResult
) -> None:
    # What a correct GPU does: the ADC differs in the last bit (another math library).
    def one_ulp_up(fit: AdcFit) -> AdcFit:
        nudged = np.where(fit.valid, np.nextafter(fit.adc, np.float32(np.inf)), fit.adc)
        return dataclasses.replace(fit, adc=nudged.astype(np.float32))

    other = _second_backend(monkeypatch, exam, "fit_adc", one_ulp_up)
    assert not np.array_equal(other.adc, reference.adc)
    assert compare_results(reference, other) == []


def test_a_mask_two_voxels_off_fails_where_a_volume_fraction_would_not(
    reference: ProcessingResult,
) -> None:
    tumour = reference.tumour_mask.copy()
    outside = np.flatnonzero(reference.body_mask.ravel() & ~tumour.ravel())[:2]
    tumour.ravel()[outside] = True
    other = dataclasses.replace(reference, tumour_mask=tumour)
    problems = compare_results(reference, other)
    assert any(p.startswith("tumour_mask: 2 voxels differ, more than 1") for p in problems)
    assert compare_results(reference, other, Tolerance(mask_fraction=1e-2)) == []
