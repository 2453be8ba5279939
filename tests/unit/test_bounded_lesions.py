"""Bounded output: many components give the N largest as lesions and the rest as "other foci"."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import ndimage

from dicom_node.writers import WriterContext, build_computed_b_series, build_segmentation
from processing.comparison import Comparison, compare_exams
from processing.exam_summary import summarize_exam
from processing.lesion_assessment import LesionAssessment
from processing.measurements import measurements_dict
from processing.pipeline import UNLISTED_FOCI, measure_tumour_mask
from processing.quality import Verdict
from processing.response import ResponseSettings
from processing.results import ProcessingResult
from processing.settings import ProcessingSettings
from tests.helpers.writer_fixtures import SyntheticExam

LIMIT = 5


def _many_foci(synthetic: SyntheticExam) -> NDArray[np.bool_]:
    """Separate blocks of 1x3x3, 2x3x3 and 3x3x3 voxels (0.7-2.2 ml), 4 voxels apart."""
    mask = np.zeros(synthetic.exam.shape[1:], dtype=bool)
    index = 0
    for z in range(1, mask.shape[0] - 2, 4):
        for y in range(4, mask.shape[1] - 4, 4):
            for x in range(4, mask.shape[2] - 4, 4):
                dz, dy = ((1, 3), (2, 3), (3, 3))[index % 3]
                block = (slice(z, z + dz), slice(y, y + dy), slice(x, x + dy))
                if synthetic.body[block].all():
                    mask[block] = True
                    index += 1
    return mask


def _measure(synthetic: SyntheticExam, mask: NDArray[np.bool_], limit: int) -> ProcessingResult:
    settings = ProcessingSettings(max_reported_lesions=limit)
    return measure_tumour_mask(synthetic.exam, mask, settings, device="cpu")


@pytest.fixture(scope="module")
def foci(synthetic: SyntheticExam) -> NDArray[np.bool_]:
    return _many_foci(synthetic)


@pytest.fixture(scope="module")
def bounded(synthetic: SyntheticExam, foci: NDArray[np.bool_]) -> ProcessingResult:
    return _measure(synthetic, foci, LIMIT)


@pytest.fixture(scope="module")
def unbounded(synthetic: SyntheticExam, foci: NDArray[np.bool_]) -> ProcessingResult:
    return _measure(synthetic, foci, 10_000)


def test_the_largest_foci_are_listed_and_the_rest_summed(
    synthetic: SyntheticExam,
    foci: NDArray[np.bool_],
    bounded: ProcessingResult,
    unbounded: ProcessingResult,
) -> None:
    labels, count = ndimage.label(foci, structure=np.ones((3, 3, 3)))
    sizes = np.bincount(labels.ravel())[1:]
    assert count > 3 * LIMIT  # many components, of several sizes
    voxel_ml = synthetic.exam.voxel_volume_ml
    stats = bounded.stats
    assert len(stats.lesions) == LIMIT
    assert [lesion.label for lesion in stats.lesions] == list(range(1, LIMIT + 1))
    listed = sorted((lesion.volume_ml for lesion in stats.lesions), reverse=True)
    assert listed == pytest.approx(sorted(sizes * voxel_ml, reverse=True)[:LIMIT])
    assert stats.other_foci_count == count - LIMIT
    assert stats.other_foci_ml == pytest.approx((sizes.sum() - sum(listed) / voxel_ml) * voxel_ml)
    assert stats.tdv_ml == pytest.approx(foci.sum() * voxel_ml)
    assert sum(listed) + stats.other_foci_ml == pytest.approx(stats.tdv_ml)
    # The other foci stay in the mask, the histogram and the classes: only the table is bounded.
    np.testing.assert_array_equal(bounded.tumour_mask, foci)
    assert stats.histogram == unbounded.stats.histogram
    assert stats.classes == unbounded.stats.classes
    assert stats.adc == unbounded.stats.adc
    # The listed lesions are the unbounded run's largest, measured the same way.
    largest = sorted(unbounded.stats.lesions, key=lambda lesion: -lesion.volume_ml)[:LIMIT]
    strip = [dataclasses.replace(lesion, label=0) for lesion in stats.lesions]
    assert sorted(strip, key=lambda x: x.centroid_mm) == sorted(
        (dataclasses.replace(lesion, label=0) for lesion in largest), key=lambda x: x.centroid_mm
    )


def test_label_map_holds_only_the_listed_lesions_in_cranial_order(
    synthetic: SyntheticExam, bounded: ProcessingResult
) -> None:
    labels = bounded.lesion_labels
    assert set(np.unique(labels).tolist()) == set(range(LIMIT + 1))
    assert not np.any(labels[~bounded.tumour_mask])
    first_voxel = [int(np.flatnonzero(labels.ravel() == k)[0]) for k in range(1, LIMIT + 1)]
    assert first_voxel == sorted(first_voxel)
    for lesion in bounded.stats.lesions:
        voxels = int((labels == lesion.label).sum())
        assert lesion.volume_ml == pytest.approx(voxels * synthetic.exam.voxel_volume_ml)


def test_the_verdict_says_the_table_is_not_complete(
    bounded: ProcessingResult, unbounded: ProcessingResult
) -> None:
    [finding] = bounded.quality.findings
    assert finding.code == UNLISTED_FOCI
    assert finding.severity is Verdict.REVIEW
    assert bounded.quality.verdict is Verdict.REVIEW
    total = LIMIT + bounded.stats.other_foci_count
    assert finding.value == total and finding.limit == LIMIT
    assert f"{total} separate foci" in finding.message
    assert f"the other {bounded.stats.other_foci_count}" in finding.message
    assert unbounded.quality.findings == ()
    assert unbounded.stats.other_foci_count == 0 and unbounded.stats.other_foci_ml == 0.0


def test_measurements_report_the_other_foci(
    synthetic: SyntheticExam, bounded: ProcessingResult
) -> None:
    report = measurements_dict(
        bounded, study_instance_uid=synthetic.exam.study_instance_uid, software_version="1"
    )
    assert len(report["lesions"]) == LIMIT
    assert report["other_foci"] == {
        "count": bounded.stats.other_foci_count,
        "volume_ml": bounded.stats.other_foci_ml,
    }
    assert [r["code"] for r in report["quality"]["reasons"]] == [UNLISTED_FOCI]


def test_seg_has_one_segment_per_listed_lesion_and_one_for_the_other_foci(
    ctx: WriterContext, synthetic: SyntheticExam, bounded: ProcessingResult
) -> None:
    geometric = build_computed_b_series(ctx, bounded.computed[0], bounded.body_mask)
    output = build_segmentation(ctx, bounded, geometric.datasets)
    assert sorted(output.lesions) == list(range(1, LIMIT + 1))
    assert output.lesion_dataset is not None
    assert len(output.lesion_dataset.SegmentSequence) == LIMIT + 1
    assert output.other is not None
    assert output.other.voxels * synthetic.exam.voxel_volume_ml == pytest.approx(
        bounded.stats.other_foci_ml
    )


def test_comparison_does_not_call_unlisted_foci_new_or_gone(
    synthetic: SyntheticExam, bounded: ProcessingResult, unbounded: ProcessingResult
) -> None:
    rules = ResponseSettings(detection_limit_ml=0.0)  # every focus is above the limit
    earlier = dataclasses.replace(synthetic.exam, study_instance_uid="1.2.826.0.1.7")
    prior = summarize_exam(earlier, bounded.stats, study_date="20230101")
    assert prior.other_foci_count == bounded.stats.other_foci_count
    current = summarize_exam(synthetic.exam, unbounded.stats, study_date="20240102")
    unlisted = len(unbounded.stats.lesions) - LIMIT

    new = _with_status(compare_exams(current, [prior], settings=rules), "new")
    assert len(new) == unlisted
    # None is larger than the prior's smallest listed lesion: each may be an unlisted focus.
    assert {a.rule for a in new} == {"new_or_unlisted_in_reference"}
    assert all(a.category is None for a in new)
    complete_prior = dataclasses.replace(prior, other_foci_count=0, other_foci_ml=0.0)
    counted = _with_status(compare_exams(current, [complete_prior], settings=rules), "new")
    assert all(a.category is not None for a in counted) and len(counted) == unlisted

    # The other way round: lesions of a complete list that a later, bounded list lacks.
    later = dataclasses.replace(prior, study_instance_uid="1.2.826.0.1.9", study_date="20250101")
    gone = _with_status(compare_exams(later, [current], settings=rules), "disappeared")
    assert len(gone) == unlisted
    assert {a.rule for a in gone} == {"gone_or_unlisted_now"}
    assert all(a.category is None for a in gone)


def _with_status(comparison: Comparison, status: str) -> list[LesionAssessment]:
    return [a for a in comparison.lesions if a.status.value == status]
