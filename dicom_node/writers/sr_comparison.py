"""The comparison with earlier exams in the Measurement Report (issue 6).

When an exam was compared with the patient's earlier exams
(:class:`processing.comparison.Comparison`), :func:`comparison_groups` adds TID
1501 measurement groups to the report (no segment of their own; finding SCT
14799000 "Neoplasm, secondary", site bone):

- ``Comparison with the previous exam`` and ``Comparison with the baseline
  exam`` (the latter absent when this exam is its own baseline): the
  reference study as DCM 110180 "Study Instance UID" (UIDREF) and DCM 111060
  "Study Date" (DATE), and the whole-body changes: tDV (``VOLCHG`` ml,
  ``VOLCHGPCT`` %), mean and median ADC (``ADCMEANCHG``/``ADCMEDCHG`` in
  10^-6 mm2/s, ``...PCT`` in %);
- ``Suggested response category: overall`` and one ``Suggested response
  category: <region>`` group per region with lesions (finding site: the
  region's code): the primary and secondary categories as CODE items
  (``RAC``/``RAC2ND`` = ``RAC1`` ... ``RAC5``, whose concept names say "to be
  confirmed by the radiologist"), and a ``SUGGESTION`` TEXT item saying that
  these are suggestions for the radiologist, who decides.

:func:`lesion_comparison_items` gives what each lesion group gains: its
suggested category (CODE), the rule and reason (TEXT), and its volume and ADC
change against the previous exam.

Codes: :mod:`dicom_node.readers.report_codes` (private scheme ``99WBDWI``).
Changes that cannot be computed (a reference value of zero, no ADC) are left
out rather than written as NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from dicom_node.readers.report_codes import (
    ADC_MEAN_CHANGE,
    ADC_MEAN_CHANGE_PCT,
    ADC_MEDIAN_CHANGE,
    ADC_MEDIAN_CHANGE_PCT,
    PERCENT,
    RESPONSE_CATEGORY,
    RESPONSE_CATEGORY_SECONDARY,
    RESPONSE_RULE,
    SUGGESTION,
    VOLUME_CHANGE,
    VOLUME_CHANGE_PCT,
    response_category_code,
)
from dicom_node.writers.common import WriterContext
from dicom_node.writers.seg import SEGMENT_CATEGORY, SEGMENT_TYPE, region_code
from processing.comparison import Comparison, ExamChange, LesionAssessment
from processing.response import SUGGESTION_NOTE, LesionAdcStatistic, ResponseCategory
from processing.results import BodyRegion

__all__ = [
    "BASELINE_GROUP",
    "OVERALL_CATEGORY_GROUP",
    "PREVIOUS_GROUP",
    "REGION_CATEGORY_GROUP_PREFIX",
    "comparison_groups",
    "lesion_comparison_items",
]

PREVIOUS_GROUP = "Comparison with the previous exam"
BASELINE_GROUP = "Comparison with the baseline exam"
OVERALL_CATEGORY_GROUP = "Suggested response category: overall"
REGION_CATEGORY_GROUP_PREFIX = "Suggested response category: "

_ADC_UNIT = codes.UCUM._10EMinus6SquareMillimetersPerSecond
_VOLUME_UNIT = Code("ml", "UCUM", "milliliter")
_STUDY_UID = Code("110180", "DCM", "Study Instance UID")
_STUDY_DATE = Code("111060", "DCM", "Study Date")
_CONTAINS = hd.sr.RelationshipTypeValues.CONTAINS


def _num(name: Code, value: float | None, unit: Code) -> list[hd.sr.Measurement]:
    if value is None or not math.isfinite(value):
        return []
    return [hd.sr.Measurement(name=name, value=float(value), unit=unit)]


def _change_measurements(change: ExamChange) -> list[hd.sr.Measurement]:
    return [
        *_num(VOLUME_CHANGE, change.tdv_change_ml, _VOLUME_UNIT),
        *_num(VOLUME_CHANGE_PCT, change.tdv_change_pct, PERCENT),
        *_num(ADC_MEAN_CHANGE, change.adc_mean_change_um2s, _ADC_UNIT),
        *_num(ADC_MEAN_CHANGE_PCT, change.adc_mean_change_pct, PERCENT),
        *_num(ADC_MEDIAN_CHANGE, change.adc_median_change_um2s, _ADC_UNIT),
        *_num(ADC_MEDIAN_CHANGE_PCT, change.adc_median_change_pct, PERCENT),
    ]


def _text(name: Code, value: str) -> hd.sr.TextContentItem:
    return hd.sr.TextContentItem(name=name, value=value, relationship_type=_CONTAINS)


def _categories(
    primary: ResponseCategory | None, secondary: ResponseCategory | None
) -> list[hd.sr.QualitativeEvaluation]:
    evaluations = []
    if primary is not None:
        evaluations.append(
            hd.sr.QualitativeEvaluation(RESPONSE_CATEGORY, response_category_code(int(primary)))
        )
    if secondary is not None:
        evaluations.append(
            hd.sr.QualitativeEvaluation(
                RESPONSE_CATEGORY_SECONDARY, response_category_code(int(secondary))
            )
        )
    return evaluations


def _region_name(region: BodyRegion) -> str:
    return region.value.replace("_", " ")


def comparison_groups(
    ctx: WriterContext,
    comparison: Comparison,
    algorithm: hd.sr.AlgorithmIdentification,
    *,
    tracking_uid: str,
) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """The report's comparison groups (see the module docstring), in report order.

    Every group carries ``tracking_uid``, the total tumour load's: they are
    statements about that finding and have no location of their own (a viewer
    such as OHIF lists them with the total, at its location).
    """
    bone = [hd.sr.FindingSite(anatomic_location=codes.SCT.Bone)]

    def group(
        identifier: str,
        *,
        sites: list[hd.sr.FindingSite] | None,
        measurements: Sequence[hd.sr.Measurement] = (),
        evaluations: Sequence[hd.sr.QualitativeEvaluation] = (),
        extra: Sequence[hd.sr.ContentItem] = (),
    ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
        built = hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=identifier),
            finding_type=SEGMENT_TYPE,
            finding_category=SEGMENT_CATEGORY,
            algorithm_id=algorithm,
            finding_sites=sites,
            measurements=list(measurements) or None,
            qualitative_evaluations=list(evaluations) or None,
        )
        container: Dataset = built[0]
        container.ContentSequence.extend(extra)
        return built

    def change_group(
        identifier: str, change: ExamChange
    ) -> hd.sr.MeasurementsAndQualitativeEvaluations:
        reference = [
            hd.sr.UIDRefContentItem(
                name=_STUDY_UID, value=change.reference_study_uid, relationship_type=_CONTAINS
            ),
            hd.sr.DateContentItem(
                name=_STUDY_DATE, value=change.reference_study_date, relationship_type=_CONTAINS
            ),
        ]
        return group(
            identifier, sites=bone, measurements=_change_measurements(change), extra=reference
        )

    groups = [change_group(PREVIOUS_GROUP, comparison.vs_previous)]
    if comparison.vs_baseline is not None:
        groups.append(change_group(BASELINE_GROUP, comparison.vs_baseline))
    note = [_text(SUGGESTION, SUGGESTION_NOTE)]
    groups.append(
        group(
            OVERALL_CATEGORY_GROUP,
            sites=bone,
            evaluations=_categories(comparison.overall_primary, comparison.overall_secondary),
            extra=note,
        )
    )
    for region in comparison.regions:
        code = region_code(region.region)
        groups.append(
            group(
                REGION_CATEGORY_GROUP_PREFIX + _region_name(region.region),
                sites=None if code is None else [hd.sr.FindingSite(anatomic_location=code)],
                evaluations=_categories(region.primary, region.secondary),
                extra=note,
            )
        )
    return groups


def lesion_comparison_items(
    assessment: LesionAssessment, statistic: LesionAdcStatistic
) -> tuple[list[hd.sr.Measurement], list[hd.sr.QualitativeEvaluation], list[hd.sr.ContentItem]]:
    """What a lesion group gains: changes, suggested category, and the rule as TEXT.

    The changes are against the previous exam: volume (``VOLCHGPCT``) and the
    lesion ADC of the rules (``statistic``: median ``ADCMEDCHGPCT`` or mean
    ``ADCMEANCHGPCT``), over the lesion's group when it split or merged.
    """
    measurements: list[hd.sr.Measurement] = []
    change = assessment.vs_previous
    if change is not None:
        adc_code = (
            ADC_MEDIAN_CHANGE_PCT if statistic is LesionAdcStatistic.MEDIAN else ADC_MEAN_CHANGE_PCT
        )
        measurements += _num(VOLUME_CHANGE_PCT, change.volume_change_pct, PERCENT)
        measurements += _num(adc_code, change.adc_change_pct, PERCENT)
    evaluations = _categories(assessment.category, None)
    rule = f"{assessment.status.value}, {assessment.rule}: {assessment.reason}"
    return measurements, evaluations, [_text(RESPONSE_RULE, rule)]
