"""Per-lesion and per-region assessment of one exam against its previous exam and baseline.

Used by :func:`processing.comparison.compare_exams`: each current lesion gets
its changes against the previous exam and the baseline (through the lesion
groups of :mod:`processing.lesion_matching`) and a suggested category from
:mod:`processing.response`; lesions of the progression reference no longer
seen are reported as disappeared; regions combine their lesions' categories.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from processing.exam_summary import ExamSummary
from processing.lesion_matching import LesionGroup, LesionMatching
from processing.response import (
    LesionChange,
    ReferenceExam,
    ResponseCategory,
    ResponseSettings,
    RuleOutcome,
    assess_disappeared_lesion,
    assess_new_lesion,
    assess_persistent_lesion,
    combine_categories,
    lesion_adc,
)
from processing.results import BodyRegion, LesionStats

__all__ = [
    "LesionAssessment",
    "LesionStatus",
    "RegionAssessment",
    "assess_lesions",
    "assess_regions",
]


class LesionStatus(Enum):
    """A lesion's fate against the progression reference exam."""

    PERSISTENT = "persistent"
    NEW = "new"
    DISAPPEARED = "disappeared"


@dataclass(frozen=True, slots=True)
class LesionAssessment:
    """One lesion of the current exam, or one that disappeared, with its suggested category.

    ``label`` is the current exam's lesion label (``None`` for a disappeared
    lesion, whose ``reference_labels`` name it in the progression reference).
    ``category`` is ``None`` for a new or disappeared focus too small to count,
    or within the growth floor of the detection limit (``rule`` says which).
    """

    status: LesionStatus
    label: int | None
    reference_labels: tuple[int, ...]
    region: BodyRegion
    volume_ml: float
    adc_um2s: float
    vs_previous: LesionChange | None
    vs_baseline: LesionChange | None
    category: ResponseCategory | None
    rule: str
    reason: str


@dataclass(frozen=True, slots=True)
class RegionAssessment:
    """Suggested primary and secondary category of one body region."""

    region: BodyRegion
    primary: ResponseCategory
    secondary: ResponseCategory | None
    lesions: int
    new_lesions: int
    disappeared_lesions: int


def _group_change(
    group: LesionGroup, current: ExamSummary, reference: ExamSummary, settings: ResponseSettings
) -> LesionChange:
    now = [current.lesion(label) for label in group.current_labels]
    then = [reference.lesion(label) for label in group.reference_labels]
    volume, adc, high_b = _aggregate(now, settings)
    ref_volume, ref_adc, ref_high_b = _aggregate(then, settings)
    return LesionChange(
        reference_study_uid=reference.study_instance_uid,
        current_labels=group.current_labels,
        reference_labels=group.reference_labels,
        volume_ml=volume,
        reference_volume_ml=ref_volume,
        adc_um2s=adc,
        reference_adc_um2s=ref_adc,
        high_b=high_b,
        reference_high_b=ref_high_b,
        distance_mm=group.distance_mm,
        voxel_volume_ml=_coarser(current.voxel_volume_ml, reference.voxel_volume_ml),
    )


def _coarser(a: float, b: float) -> float:
    """The larger of two voxel volumes, ignoring unknown (NaN) ones."""
    known = [v for v in (a, b) if math.isfinite(v) and v > 0]
    return max(known) if known else math.nan


def _aggregate(
    lesions: Sequence[LesionStats], settings: ResponseSettings
) -> tuple[float, float, float]:
    """Total volume and volume-weighted ADC and high-b of a group of lesions."""
    volume = sum(lesion.volume_ml for lesion in lesions)
    if len(lesions) == 1:
        only = lesions[0]
        return volume, lesion_adc(only, settings.lesion_adc_statistic), only.mean_high_b
    if volume <= 0:
        return volume, math.nan, math.nan
    adc = sum(lesion_adc(x, settings.lesion_adc_statistic) * x.volume_ml for x in lesions) / volume
    high_b = sum(x.mean_high_b * x.volume_ml for x in lesions) / volume
    return volume, adc, high_b


def assess_lesions(
    current: ExamSummary,
    *,
    previous: ExamSummary,
    baseline: ExamSummary,
    matching_prev: LesionMatching,
    matching_base: LesionMatching | None,
    settings: ResponseSettings,
) -> tuple[LesionAssessment, ...]:
    previous_ref = (previous, matching_prev)
    references: dict[ReferenceExam, tuple[ExamSummary, LesionMatching] | None] = {
        ReferenceExam.PREVIOUS: previous_ref,
        ReferenceExam.BASELINE: None if matching_base is None else (baseline, matching_base),
    }
    # When the current exam is its own baseline, progression is judged against the previous exam.
    progression_exam, progression_matching = (
        references[settings.progression_reference] or previous_ref
    )

    coarser_voxel = _coarser(current.voxel_volume_ml, progression_exam.voxel_volume_ml)
    assessments: list[LesionAssessment] = []
    for lesion in current.lesions:
        changes: dict[ReferenceExam, LesionChange | None] = {}
        for which, ref in references.items():
            group = None if ref is None else ref[1].group_of_current(lesion.label)
            changes[which] = (
                None
                if ref is None or group is None
                else _group_change(group, current, ref[0], settings)
            )
        adc = lesion_adc(lesion, settings.lesion_adc_statistic)
        progression_group = progression_matching.group_of_current(lesion.label)
        outcome: RuleOutcome | None
        if progression_group is None:
            status = LesionStatus.NEW
            reference_labels: tuple[int, ...] = ()
            outcome = _unlisted_in_reference(
                lesion,
                assess_new_lesion(
                    lesion,
                    progression_exam.study_instance_uid,
                    settings,
                    voxel_volume_ml=coarser_voxel,
                ),
                progression_exam,
            )
        else:
            status = LesionStatus.PERSISTENT
            reference_labels = progression_group.reference_labels
            progression = _group_change(progression_group, current, progression_exam, settings)
            response = (
                changes[settings.response_reference]
                or changes[_other(settings.response_reference)]
                or progression
            )
            outcome = assess_persistent_lesion(progression, response, settings)
        assessments.append(
            LesionAssessment(
                status=status,
                label=lesion.label,
                reference_labels=reference_labels,
                region=lesion.region,
                volume_ml=lesion.volume_ml,
                adc_um2s=adc,
                vs_previous=changes[ReferenceExam.PREVIOUS],
                vs_baseline=changes[ReferenceExam.BASELINE],
                category=None if outcome is None else outcome.category,
                rule="below_minimum_size" if outcome is None else outcome.rule,
                reason=f"{lesion.volume_ml:.3f} ml is below the counted size "
                f"{settings.new_min_ml:g} ml"
                if outcome is None
                else outcome.reason,
            )
        )
    for label in progression_matching.disappeared_labels:
        gone = progression_exam.lesion(label)
        outcome = _unlisted_now(
            gone,
            assess_disappeared_lesion(
                gone, progression_exam.study_instance_uid, settings, voxel_volume_ml=coarser_voxel
            ),
            current,
        )
        assessments.append(
            LesionAssessment(
                status=LesionStatus.DISAPPEARED,
                label=None,
                reference_labels=(label,),
                region=gone.region,
                volume_ml=gone.volume_ml,
                adc_um2s=lesion_adc(gone, settings.lesion_adc_statistic),
                vs_previous=None,
                vs_baseline=None,
                category=None if outcome is None else outcome.category,
                rule="below_minimum_size" if outcome is None else outcome.rule,
                reason=f"vanished focus of {gone.volume_ml:.3f} ml is below the counted size "
                f"{settings.new_min_ml:g} ml"
                if outcome is None
                else outcome.reason,
            )
        )
    return tuple(assessments)


def _largest_unlisted_ml(exam: ExamSummary) -> float:
    """Upper bound of the volume of each unlisted focus: the smallest listed lesion's."""
    return min((lesion.volume_ml for lesion in exam.lesions), default=math.inf)


def _unlisted_in_reference(
    lesion: LesionStats, outcome: RuleOutcome | None, reference: ExamSummary
) -> RuleOutcome | None:
    """A new lesion when the reference listed only its largest lesions.

    One no larger than the reference's largest possible unlisted focus may be
    that focus: not counted (rule ``new_or_unlisted_in_reference``). A larger
    one is counted as new (it is progression either way: new, or grown from an
    unlisted focus), and the reason says so.
    """
    if outcome is None or outcome.category is None or reference.other_foci_count == 0:
        return outcome
    bound = _largest_unlisted_ml(reference)
    unlisted = (
        f"{reference.study_instance_uid} listed only its {len(reference.lesions)} largest "
        f"lesions and left {reference.other_foci_count} foci unlisted, each at most "
        f"{bound:.2f} ml"
    )
    if lesion.volume_ml <= bound:
        return RuleOutcome(
            None,
            "new_or_unlisted_in_reference",
            f"{outcome.reason}; but {unlisted}: it may be one of them, so it is not counted; "
            "compare the images",
        )
    return RuleOutcome(
        outcome.category,
        outcome.rule,
        f"{outcome.reason}; {unlisted}: it may also have grown from one of them",
    )


def _unlisted_now(
    gone: LesionStats, outcome: RuleOutcome | None, current: ExamSummary
) -> RuleOutcome | None:
    """A reference lesion not found among the current exam's listed lesions.

    When the current exam left foci unlisted, the lesion may have shrunk into
    one of them: not counted as disappeared (rule ``gone_or_unlisted_now``).
    """
    if outcome is None or outcome.category is None or current.other_foci_count == 0:
        return outcome
    return RuleOutcome(
        None,
        "gone_or_unlisted_now",
        f"{outcome.reason} among the {len(current.lesions)} listed lesions; this exam left "
        f"{current.other_foci_count} foci unlisted, each at most "
        f"{_largest_unlisted_ml(current):.2f} ml: it may be one of them, so it is not counted; "
        "compare the images",
    )


def assess_regions(lesions: Sequence[LesionAssessment]) -> tuple[RegionAssessment, ...]:
    regions: list[RegionAssessment] = []
    for region in BodyRegion:
        members = [a for a in lesions if a.region is region and a.category is not None]
        primary, secondary = combine_categories(
            [(a.category, a.volume_ml) for a in members if a.category is not None]
        )
        if primary is None:
            continue
        regions.append(
            RegionAssessment(
                region=region,
                primary=primary,
                secondary=secondary,
                lesions=sum(1 for a in members if a.status is not LesionStatus.DISAPPEARED),
                new_lesions=sum(1 for a in members if a.status is LesionStatus.NEW),
                disappeared_lesions=sum(1 for a in members if a.status is LesionStatus.DISAPPEARED),
            )
        )
    return tuple(regions)


def _other(which: ReferenceExam) -> ReferenceExam:
    return ReferenceExam.BASELINE if which is ReferenceExam.PREVIOUS else ReferenceExam.PREVIOUS
