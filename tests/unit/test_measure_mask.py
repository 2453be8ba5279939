"""Measuring a given tumour mask (a reader's correction) with the pipeline's own code."""

from __future__ import annotations

import numpy as np
import pytest

from processing.exam import DwiExam
from processing.phantom import make_phantom
from processing.pipeline import measure_tumour_mask, process_exam
from processing.results import ProcessingResult


@pytest.fixture(scope="module")
def automatic() -> tuple[DwiExam, ProcessingResult]:
    exam = make_phantom("small", seed=1).to_exam()
    return exam, process_exam(exam, device="cpu")


def test_the_automatic_mask_given_back_gives_the_automatic_numbers(
    automatic: tuple[DwiExam, ProcessingResult],
) -> None:
    exam, result = automatic
    again = measure_tumour_mask(exam, result.tumour_mask, device="cpu")
    assert again.stats == result.stats
    np.testing.assert_array_equal(again.lesion_labels, result.lesion_labels)
    np.testing.assert_array_equal(again.class_labels, result.class_labels)
    assert again.diagnostics == {"tumour_mask": "given (reader-corrected)"}


def test_removing_one_lesion_reduces_tdv_by_its_volume(
    automatic: tuple[DwiExam, ProcessingResult],
) -> None:
    exam, result = automatic
    assert len(result.stats.lesions) >= 2
    removed = max(result.stats.lesions, key=lambda lesion: lesion.volume_ml)
    mask = result.tumour_mask & (result.lesion_labels != removed.label)
    corrected = measure_tumour_mask(exam, mask, device="cpu")
    assert corrected.stats.tdv_ml == pytest.approx(result.stats.tdv_ml - removed.volume_ml)
    assert len(corrected.stats.lesions) == len(result.stats.lesions) - 1
    kept = sorted(round(lesion.volume_ml, 6) for lesion in corrected.stats.lesions)
    expected = sorted(
        round(lesion.volume_ml, 6)
        for lesion in result.stats.lesions
        if lesion.label != removed.label
    )
    assert kept == expected
    classes = corrected.stats.classes
    assert classes.red_ml + classes.yellow_ml + classes.green_ml == pytest.approx(
        corrected.stats.tdv_ml
    )


def test_an_added_region_is_a_new_lesion_with_its_region_and_adc(
    automatic: tuple[DwiExam, ProcessingResult],
) -> None:
    exam, result = automatic
    mask = result.tumour_mask.copy()
    free = np.argwhere(result.body_mask & ~result.tumour_mask & result.adc_valid)
    z, y, x = free[len(free) // 2]
    mask[z, y - 1 : y + 2, x - 1 : x + 2] = True
    added = int(mask.sum() - result.tumour_mask.sum())
    corrected = measure_tumour_mask(exam, mask, device="cpu")
    assert corrected.stats.tdv_ml == pytest.approx(
        result.stats.tdv_ml + added * exam.voxel_volume_ml
    )
    assert corrected.lesion_labels[z, y, x] > 0


def test_a_mask_of_another_grid_is_refused(automatic: tuple[DwiExam, ProcessingResult]) -> None:
    exam, result = automatic
    with pytest.raises(ValueError, match="grid"):
        measure_tumour_mask(exam, result.tumour_mask[1:], device="cpu")
