"""Comparison of an exam with the patient's earlier exams (issue 6).

:func:`compare_exams` takes the current exam's :class:`ExamSummary` and the
summaries of earlier exams and returns a :class:`Comparison`:

- the previous exam (the latest earlier one) and the baseline (the first exam,
  or the one the radiologist marked, e.g. at a change of therapy as exam 4 of
  the TTL case study, docs/algorithm.md);
- the yellow class lower bound: the baseline's 95th ADC centile (TTL case study);
- changes of tDV and global ADC mean/median, absolute and %, against the
  previous exam and against the baseline;
- lesions matched across exams in patient coordinates
  (:mod:`processing.lesion_matching`), with per-lesion volume and ADC change,
  new and disappeared lesions;
- suggested MET-RADS-P style categories per lesion, per body region and
  overall (:mod:`processing.response`), labelled a suggestion.

:func:`comparison_to_dict` gives the ``comparison`` block of
``measurements.json``. Pure functions, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from processing.errors import NoPriorExamError
from processing.exam_summary import ExamSummary, chronological_key, exam_sort_key
from processing.lesion_assessment import (
    LesionAssessment,
    LesionStatus,
    RegionAssessment,
    assess_lesions,
    assess_regions,
)
from processing.lesion_matching import LesionMatching, MatchingSettings, match_lesions
from processing.response import (
    SUGGESTION_NOTE,
    LesionChange,
    ResponseCategory,
    ResponseSettings,
    combine_categories,
)
from processing.results import BodyRegion
from processing.settings import ProcessingSettings

__all__ = [
    "Comparison",
    "ExamChange",
    "ExamSummary",
    "LesionAssessment",
    "LesionStatus",
    "RegionAssessment",
    "TrendPoint",
    "compare_exams",
    "comparison_to_dict",
    "doubtful_reference_notes",
    "response_settings_for",
    "select_baseline",
    "yellow_lower_bound",
]


@dataclass(frozen=True, slots=True)
class ExamChange:
    """Whole-body changes of the current exam against one reference exam.

    ``*_pct`` are ``None`` when the reference value is zero or unknown;
    absolute ADC changes are NaN when either exam has no ADC statistics.
    """

    reference_study_uid: str
    reference_study_date: str
    tdv_ml: float
    reference_tdv_ml: float
    adc_mean_um2s: float
    reference_adc_mean_um2s: float
    adc_median_um2s: float
    reference_adc_median_um2s: float

    @property
    def tdv_change_ml(self) -> float:
        """tDV now minus tDV then, ml."""
        return self.tdv_ml - self.reference_tdv_ml

    @property
    def tdv_change_pct(self) -> float | None:
        """Relative tDV change, %."""
        return _pct(self.tdv_ml, self.reference_tdv_ml)

    @property
    def adc_mean_change_um2s(self) -> float:
        """Change of the global mean ADC, um2/s."""
        return self.adc_mean_um2s - self.reference_adc_mean_um2s

    @property
    def adc_mean_change_pct(self) -> float | None:
        """Relative change of the global mean ADC, %."""
        return _pct(self.adc_mean_um2s, self.reference_adc_mean_um2s)

    @property
    def adc_median_change_um2s(self) -> float:
        """Change of the global median ADC, um2/s."""
        return self.adc_median_um2s - self.reference_adc_median_um2s

    @property
    def adc_median_change_pct(self) -> float | None:
        """Relative change of the global median ADC, %."""
        return _pct(self.adc_median_um2s, self.reference_adc_median_um2s)


@dataclass(frozen=True, slots=True)
class TrendPoint:
    """One exam on the trend chart (tDV and median ADC over all exams, TTL case study fig. 4)."""

    study_instance_uid: str
    study_date: str
    study_time: str
    tdv_ml: float
    adc_median_um2s: float
    adc_mean_um2s: float
    is_baseline: bool
    is_current: bool


@dataclass(frozen=True, slots=True)
class Comparison:
    """The current exam against the previous exam and the baseline.

    ``vs_baseline`` and ``matching_vs_baseline`` are ``None`` when the current
    exam is itself the baseline (a new baseline at a change of therapy).
    ``overall_primary`` is ``None`` when neither exam has a lesion that counts.
    """

    current_study_uid: str
    previous_study_uid: str
    baseline_study_uid: str
    yellow_lower_um2s: float | None
    vs_previous: ExamChange
    vs_baseline: ExamChange | None
    matching_vs_previous: LesionMatching
    matching_vs_baseline: LesionMatching | None
    lesions: tuple[LesionAssessment, ...]
    regions: tuple[RegionAssessment, ...]
    overall_primary: ResponseCategory | None
    overall_secondary: ResponseCategory | None
    trend: tuple[TrendPoint, ...]
    settings: ResponseSettings

    def region(self, region: BodyRegion) -> RegionAssessment | None:
        """The assessment of ``region``, ``None`` when it has no lesion in either exam."""
        for assessment in self.regions:
            if assessment.region is region:
                return assessment
        return None


def yellow_lower_bound(baseline: ExamSummary) -> float | None:
    """Lower bound of the yellow ADC class: the baseline's 95th centile (TTL case study).

    ``None`` when the baseline has no ADC statistics (nothing segmented), so the
    processing default applies.
    """
    if baseline.adc is None or not math.isfinite(baseline.adc.p95):
        return None
    return float(baseline.adc.p95)


def response_settings_for(
    processing: ProcessingSettings, base: ResponseSettings | None = None
) -> ResponseSettings:
    """``base`` (default rules) with the detection limit of the processing settings.

    The rules must know the smallest lesion the segmentation reports
    (``min_lesion_volume_ml``) to tell a new lesion from one that was just
    below that limit in the reference exam.
    """
    return replace(base or ResponseSettings(), detection_limit_ml=processing.min_lesion_volume_ml)


def select_baseline(
    priors: Sequence[ExamSummary],
    *,
    study_uid: str,
    study_date: str,
    study_time: str = "",
    baseline_study_uid: str | None = None,
) -> ExamSummary | None:
    """The baseline of an exam that is about to be processed, among its ``priors``.

    Known before processing, so that its 95th centile can set the yellow
    class bound (:func:`yellow_lower_bound`). ``baseline_study_uid`` chooses
    it (the exam's own UID: it is its own baseline, and ``None`` is returned
    since it has no numbers yet); default: the earliest prior earlier than the
    exam. ``None`` when there is none.

    Raises
    ------
    ValueError
        When ``baseline_study_uid`` is neither the exam nor an earlier prior.
    """
    key = chronological_key(study_date, study_time, study_uid)
    earlier = sorted(
        (p for p in priors if exam_sort_key(p) < key and p.study_instance_uid != study_uid),
        key=exam_sort_key,
    )
    if baseline_study_uid is None:
        return earlier[0] if earlier else None
    if baseline_study_uid == study_uid:
        return None
    for prior in earlier:
        if prior.study_instance_uid == baseline_study_uid:
            return prior
    raise ValueError(
        f"baseline study {baseline_study_uid} is neither study {study_uid} nor one of its "
        f"{len(earlier)} earlier exam(s) given"
    )


def compare_exams(
    current: ExamSummary,
    priors: Sequence[ExamSummary],
    *,
    baseline_study_uid: str | None = None,
    settings: ResponseSettings | None = None,
    matching: MatchingSettings | None = None,
) -> Comparison:
    """Compare ``current`` with the earlier exams among ``priors``.

    Parameters
    ----------
    current
        The exam being reported.
    priors
        Summaries of the same patient's exams; those not earlier than
        ``current`` (by study date, time, then UID) are ignored, so that an old
        exam processed again is compared with what came before it.
    baseline_study_uid
        The baseline in force for ``current`` (the latest exam marked as
        baseline at or before it, see :mod:`service.history`); the current
        study's own UID makes it its own baseline. Default: the earliest prior.
    settings, matching
        Response rules and lesion-matching settings (defaults documented there).

    Raises
    ------
    NoPriorExamError
        When no prior is earlier than ``current``.
    ValueError
        When a prior belongs to another patient, or the baseline UID is unknown.
    """
    settings = settings or ResponseSettings()
    matching = matching or MatchingSettings()
    patient = (current.patient_id, current.issuer_of_patient_id)
    for prior in priors:
        if (prior.patient_id, prior.issuer_of_patient_id) != patient:
            raise ValueError(
                f"prior study {prior.study_instance_uid} belongs to another patient "
                "(patient ID or issuer differ) than the current study "
                f"{current.study_instance_uid}"
            )
    current_key = exam_sort_key(current)
    earlier = sorted(
        (
            p
            for p in priors
            if exam_sort_key(p) < current_key and p.study_instance_uid != current.study_instance_uid
        ),
        key=exam_sort_key,
    )
    if not earlier:
        raise NoPriorExamError(
            f"no exam earlier than study {current.study_instance_uid} "
            f"({current.study_date} {current.study_time}) among {len(priors)} prior(s)"
        )
    previous = earlier[-1]
    baseline = _select_baseline(current, earlier, baseline_study_uid)

    matching_prev = match_lesions(current.lesions, previous.lesions, matching)
    matching_base: LesionMatching | None
    if baseline is current:
        matching_base = None
    elif baseline is previous:
        matching_base = matching_prev
    else:
        matching_base = match_lesions(current.lesions, baseline.lesions, matching)

    lesions = assess_lesions(
        current,
        previous=previous,
        baseline=baseline,
        matching_prev=matching_prev,
        matching_base=matching_base,
        settings=settings,
    )
    regions = assess_regions(lesions)
    overall_primary, overall_secondary = combine_categories(
        [(a.category, a.volume_ml) for a in lesions if a.category is not None]
    )
    exams = [*earlier, current]
    return Comparison(
        current_study_uid=current.study_instance_uid,
        previous_study_uid=previous.study_instance_uid,
        baseline_study_uid=baseline.study_instance_uid,
        yellow_lower_um2s=yellow_lower_bound(baseline),
        vs_previous=_exam_change(current, previous),
        vs_baseline=None if baseline is current else _exam_change(current, baseline),
        matching_vs_previous=matching_prev,
        matching_vs_baseline=matching_base,
        lesions=lesions,
        regions=regions,
        overall_primary=overall_primary,
        overall_secondary=overall_secondary,
        trend=tuple(
            TrendPoint(
                study_instance_uid=e.study_instance_uid,
                study_date=e.study_date,
                study_time=e.study_time,
                tdv_ml=e.tdv_ml,
                adc_median_um2s=math.nan if e.adc is None else e.adc.median,
                adc_mean_um2s=math.nan if e.adc is None else e.adc.mean,
                is_baseline=e is baseline,
                is_current=e is current,
            )
            for e in exams
        ),
        settings=settings,
    )


def doubtful_reference_notes(
    comparison: Comparison, exams: Sequence[ExamSummary]
) -> tuple[str, ...]:
    """Sentences for the reader when the previous exam or the baseline had a doubtful result.

    A comparison is only as good as its reference: when the verdict kept with
    the previous exam's or the baseline's summary (``ExamSummary.quality``)
    was not ``ok``, the changes against it may be wrong. ``exams`` are the
    summaries the comparison was computed from; an exam whose verdict is not
    known (processed before verdicts were kept, or read from a report) gives
    no note.
    """
    by_uid = {exam.study_instance_uid: exam for exam in exams}
    roles = {comparison.previous_study_uid: "previous exam"}
    if comparison.baseline_study_uid != comparison.current_study_uid:
        roles.setdefault(comparison.baseline_study_uid, "baseline")
        if comparison.baseline_study_uid == comparison.previous_study_uid:
            roles[comparison.previous_study_uid] = "previous exam and baseline"
    notes = []
    for uid, role in roles.items():
        exam = by_uid.get(uid)
        if exam is None or exam.quality is None:
            continue
        verdict = exam.quality.verdict
        if verdict.severity == 0:
            continue
        reasons = ", ".join(finding.code for finding in exam.quality.findings)
        notes.append(
            f"The {role} ({uid}) was reported with the verdict {verdict.value} ({reasons}): "
            "the changes against it may be wrong."
        )
    return tuple(notes)


def comparison_to_dict(comparison: Comparison) -> dict[str, Any]:
    """The ``comparison`` block of ``measurements.json`` (JSON-ready; NaN becomes ``None``).

    Top-level keys required by issue 6: ``prior_study_uid`` (the previous
    exam), ``baseline_study_uid``, ``tdv_change_pct`` and
    ``adc_median_change_pct`` (against the previous exam), ``rac_overall`` and
    ``rac_by_region`` (suggested primary categories, integers 1-5). The rest
    gives the detail behind them.
    """
    c = comparison
    return {
        "prior_study_uid": c.previous_study_uid,
        "baseline_study_uid": c.baseline_study_uid,
        "tdv_change_pct": _out(c.vs_previous.tdv_change_pct),
        "adc_median_change_pct": _out(c.vs_previous.adc_median_change_pct),
        "rac_overall": None if c.overall_primary is None else int(c.overall_primary),
        "rac_overall_secondary": None if c.overall_secondary is None else int(c.overall_secondary),
        "rac_by_region": {r.region.value: int(r.primary) for r in c.regions},
        "rac_secondary_by_region": {
            r.region.value: int(r.secondary) for r in c.regions if r.secondary is not None
        },
        "rac_meaning": {str(int(cat)): cat.meaning for cat in ResponseCategory},
        "suggestion_note": SUGGESTION_NOTE,
        "yellow_lower_um2s": _out(c.yellow_lower_um2s),
        "yellow_lower_source": "baseline p95" if c.yellow_lower_um2s is not None else "default",
        "vs_previous": _exam_change_dict(c.vs_previous),
        "vs_baseline": None if c.vs_baseline is None else _exam_change_dict(c.vs_baseline),
        "shift_vs_previous_mm": [_out(v) for v in c.matching_vs_previous.shift_mm],
        "shift_vs_baseline_mm": None
        if c.matching_vs_baseline is None
        else [_out(v) for v in c.matching_vs_baseline.shift_mm],
        "regions": [
            {
                "region": r.region.value,
                "rac": int(r.primary),
                "rac_secondary": None if r.secondary is None else int(r.secondary),
                "lesions": r.lesions,
                "new_lesions": r.new_lesions,
                "disappeared_lesions": r.disappeared_lesions,
            }
            for r in c.regions
        ],
        "lesions": [_lesion_dict(a) for a in c.lesions],
        "trend": [
            {
                "study_uid": p.study_instance_uid,
                "study_date": p.study_date,
                "study_time": p.study_time,
                "tdv_ml": _out(p.tdv_ml),
                "adc_median_um2s": _out(p.adc_median_um2s),
                "adc_mean_um2s": _out(p.adc_mean_um2s),
                "is_baseline": p.is_baseline,
                "is_current": p.is_current,
            }
            for p in c.trend
        ],
        "settings": _settings_dict(c.settings),
    }


def _select_baseline(
    current: ExamSummary, earlier: list[ExamSummary], baseline_study_uid: str | None
) -> ExamSummary:
    if baseline_study_uid is None:
        return earlier[0]
    if baseline_study_uid == current.study_instance_uid:
        return current
    for prior in earlier:
        if prior.study_instance_uid == baseline_study_uid:
            return prior
    raise ValueError(
        f"baseline study {baseline_study_uid} is neither the current study nor one of the "
        f"{len(earlier)} earlier exam(s) given"
    )


def _exam_change(current: ExamSummary, reference: ExamSummary) -> ExamChange:
    return ExamChange(
        reference_study_uid=reference.study_instance_uid,
        reference_study_date=reference.study_date,
        tdv_ml=current.tdv_ml,
        reference_tdv_ml=reference.tdv_ml,
        adc_mean_um2s=math.nan if current.adc is None else current.adc.mean,
        reference_adc_mean_um2s=math.nan if reference.adc is None else reference.adc.mean,
        adc_median_um2s=math.nan if current.adc is None else current.adc.median,
        reference_adc_median_um2s=math.nan if reference.adc is None else reference.adc.median,
    )


def _pct(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None:
        return None
    if not (math.isfinite(value) and math.isfinite(reference)) or reference <= 0:
        return None
    return (value - reference) / reference * 100.0


def _out(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def _exam_change_dict(change: ExamChange) -> dict[str, Any]:
    return {
        "reference_study_uid": change.reference_study_uid,
        "reference_study_date": change.reference_study_date,
        "tdv_ml": _out(change.tdv_ml),
        "reference_tdv_ml": _out(change.reference_tdv_ml),
        "tdv_change_ml": _out(change.tdv_change_ml),
        "tdv_change_pct": _out(change.tdv_change_pct),
        "adc_mean_change_um2s": _out(change.adc_mean_change_um2s),
        "adc_mean_change_pct": _out(change.adc_mean_change_pct),
        "adc_median_change_um2s": _out(change.adc_median_change_um2s),
        "adc_median_change_pct": _out(change.adc_median_change_pct),
    }


def _lesion_change_dict(change: LesionChange | None) -> dict[str, Any] | None:
    if change is None:
        return None
    return {
        "reference_study_uid": change.reference_study_uid,
        "reference_labels": list(change.reference_labels),
        "group_labels": list(change.current_labels),
        "volume_change_ml": _out(change.volume_change_ml),
        "volume_change_pct": _out(change.volume_change_pct),
        "adc_change_um2s": _out(change.adc_change_um2s),
        "adc_change_pct": _out(change.adc_change_pct),
        "high_b_change_pct": _out(change.high_b_change_pct),
        "distance_mm": _out(change.distance_mm),
    }


def _lesion_dict(a: LesionAssessment) -> dict[str, Any]:
    return {
        "label": a.label,
        "status": a.status.value,
        "reference_labels": list(a.reference_labels),
        "region": a.region.value,
        "volume_ml": _out(a.volume_ml),
        "adc_um2s": _out(a.adc_um2s),
        "rac": None if a.category is None else int(a.category),
        "rule": a.rule,
        "reason": a.reason,
        "vs_previous": _lesion_change_dict(a.vs_previous),
        "vs_baseline": _lesion_change_dict(a.vs_baseline),
    }


def _settings_dict(settings: ResponseSettings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in settings.__dataclass_fields__:
        value = getattr(settings, name)
        out[name] = value.value if isinstance(value, Enum) else value
    return out
