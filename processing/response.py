"""Suggested response categories (MET-RADS-P style, bone) for lesions, regions and exams.

These are **suggestions for the radiologist**, who decides. The rules follow
MET-RADS-P's bone response assessment categories (Padhani et al., Eur Urol
2017, Table 3; see ``docs/response.md``) where it gives numbers, and documented
defaults where it does not. Every threshold is a field of
:class:`ResponseSettings` with its source.

Per lesion (first rule that fires wins; progression is tested first):

==== =========================== ===================================================
RAC  rule code                   condition (changes against the reference exam)
==== =========================== ===================================================
5    ``new_unequivocal``         new lesion >= ``new_unequivocal_ml`` with ADC below
                                 ``new_unequivocal_adc_below_um2s``
5    ``clear_growth``            volume +``clear_growth_pct`` or more and at least
                                 the growth floor (below)
4    ``new_equivocal``           any other new lesion >= ``new_min_ml`` (and not near
                                 the detection limit, below)
4    ``equivocal_growth``        volume +``equivocal_growth_pct`` or more and at least
                                 the growth floor (below)
4    ``rising_high_b``           high-b signal +``high_b_rise_pct`` or more with
                                 current ADC below ``adc_responding_um2s``
1    ``adc_crossed_responding``  ADC from <= ``adc_responding_um2s`` to above it
                                 (rise of at least ``adc_no_change_pct``)
1    ``adc_rise_highly_likely``  ADC rise >= ``adc_rise_highly_likely_pct`` with
                                 falling high-b signal
1    ``disappeared``             lesion of the reference exam (>= ``new_min_ml``, not
                                 near the detection limit) no longer seen (return of
                                 normal marrow)
2    ``adc_into_intermediate``   ADC from <= ``adc_active_um2s`` to above it but
                                 <= ``adc_responding_um2s`` (rise of at least
                                 ``adc_no_change_pct``)
2    ``adc_rise_likely``         ADC rise > ``adc_rise_likely_pct`` (and below the
                                 RAC 1 rise) with falling high-b signal
3    ``no_change``               none of the above
==== =========================== ===================================================

The growth floor is the larger of ``growth_min_increase_ml`` and
``growth_min_increase_voxels`` voxels of the coarser of the two exams' grids
(when known): a segmented volume moves by whole border voxels when the grid
samples a lesion differently between visits, which on a coarse grid is more
than the fixed floor.

A lesion is only seen when the segmentation reports it, from
``detection_limit_ml`` (the processing's smallest reported lesion). A new
lesion smaller than that limit plus the growth floor may have been in the
reference exam just below the limit: it would have grown by less than the
floor, which is not growth either, so it gets no category (rule
``new_near_detection_limit``). Likewise a reference lesion of less than the
limit plus the floor that is no longer seen may still be there just below the
limit (rule ``gone_near_detection_limit``, no category). Both stay in the
lesion list with their reason.

"Falling high-b signal" means a fall of at least ``high_b_fall_pct``; when
``response_requires_falling_high_b`` is off, an ADC rise alone is enough.

Progression rules compare with ``progression_reference`` (the previous exam by
default: relapse after a response shows against the nadir, not the baseline);
ADC response rules compare with ``response_reference`` (the baseline by
default, as MET-RADS-P's "rise from baseline"), falling back to the other exam
when the lesion has no counterpart there.

Per region and overall (:func:`combine_categories`): progression dominates
(the highest category when any lesion is RAC 4 or 5); otherwise the primary
category is the one carrying the largest lesion volume (current volume; the
reference volume for disappeared lesions), ties to the higher category. The
secondary category is the next largest by volume, as MET-RADS-P's primary and
secondary RAC per region.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, IntEnum

from processing.results import LesionStats

__all__ = [
    "SUGGESTION_NOTE",
    "LesionAdcStatistic",
    "LesionChange",
    "ReferenceExam",
    "ResponseCategory",
    "ResponseSettings",
    "RuleOutcome",
    "assess_disappeared_lesion",
    "assess_new_lesion",
    "assess_persistent_lesion",
    "combine_categories",
    "growth_floor_ml",
    "lesion_adc",
]

#: Shown wherever a category is reported.
SUGGESTION_NOTE = (
    "Suggested MET-RADS-P style response category computed by software; "
    "a suggestion for the radiologist, who decides."
)


class ResponseCategory(IntEnum):
    """MET-RADS-P response assessment categories (RAC)."""

    HIGHLY_LIKELY_RESPONDING = 1
    LIKELY_RESPONDING = 2
    NO_CHANGE = 3
    LIKELY_PROGRESSING = 4
    HIGHLY_LIKELY_PROGRESSING = 5

    @property
    def meaning(self) -> str:
        """The category's wording in MET-RADS-P."""
        return _MEANINGS[self]


_MEANINGS = {
    ResponseCategory.HIGHLY_LIKELY_RESPONDING: "highly likely responding",
    ResponseCategory.LIKELY_RESPONDING: "likely responding",
    ResponseCategory.NO_CHANGE: "no change",
    ResponseCategory.LIKELY_PROGRESSING: "likely progressing",
    ResponseCategory.HIGHLY_LIKELY_PROGRESSING: "highly likely progressing",
}


class ReferenceExam(Enum):
    """Which earlier exam a rule compares with."""

    PREVIOUS = "previous"
    BASELINE = "baseline"


class LesionAdcStatistic(Enum):
    """Which per-lesion ADC the rules use."""

    MEDIAN = "median"
    MEAN = "mean"


@dataclass(frozen=True, slots=True)
class ResponseSettings:
    """Thresholds of the suggested response categories (sources in ``docs/response.md``).

    Parameters
    ----------
    adc_responding_um2s
        1400: MET-RADS-P RAC 1 "ADC rises from <= 1400 to > 1400"; RAC 4 "ADC < 1400".
    adc_active_um2s
        1000: MET-RADS-P RAC 2 "ADC rises from <= 1000 to < 1400".
    adc_rise_highly_likely_pct
        40: MET-RADS-P RAC 1 "ADC rise >= 40 % with falling high-b signal".
    adc_rise_likely_pct
        25: MET-RADS-P RAC 2 "> 25 % and < 40 %"; a > 25 % rise detected
        response with 75 % sensitivity (Messiou, Eur Radiol 2011).
    adc_no_change_pct
        15: bone-marrow ADC reproducibility 14.8 % (Messiou 2011); a threshold
        crossing with a smaller rise is measurement noise.
    high_b_rise_pct
        15: engineering default (no published repeatability of lesion high-b
        signal between exams): a rise that alone suggests progression (RAC 4)
        must exceed plausible gain and noise differences between visits.
    high_b_fall_pct
        10: a fall that confirms an ADC rise (RAC 1/2). At constant S0 the
        smallest rise those rules accept (25 %) from an active lesion's ADC of
        600-800 um2/s lowers the b = 1000 signal by 14-18 %
        (``1 - exp(-b * dADC)``); 10 % leaves room for noise while still
        refusing a steady or rising signal.
    response_requires_falling_high_b
        True: MET-RADS-P ties the 40 % and 25-40 % rules to falling high-b signal.
    equivocal_growth_pct
        39.75: MD Anderson bone criteria, >= 25 % increase of the bidimensional
        product (Hamaoka 2004), as the volume of a sphere (1.25**1.5 = 1.3975).
    clear_growth_pct
        72.8: RECIST 1.1 progression, +20 % diameter, as a sphere's volume
        (1.2**3 = 1.728).
    growth_min_increase_ml
        0.5: growth must also add this much volume (about 11 voxels of the
        consensus 5 x 3 x 3 mm), so that one slice of partial volume on a small
        lesion is not growth. Engineering default.
    growth_min_increase_voxels
        4: growth must also exceed this many voxels of the coarser grid: a
        re-sampled lesion gains or loses border voxels on several faces at once
        (about one voxel per face over four faces). Matters only on grids
        coarser than ~0.12 ml per voxel. Engineering default.
    new_min_ml
        0.065: MY-RADS counts focal lesions > 5 mm; a 5 mm sphere is 0.065 ml.
        Smaller new or vanished foci do not count.
    new_unequivocal_ml
        1.0: "clinically relevant" lesion size >= 1 ml (the VUB MBD_CAD
        detector's operating point: sensitivity 0.89 at 0.46 false positives
        per exam for lesions >= 1 ml; see ``docs/response.md``).
    detection_limit_ml
        0.5: the smallest lesion the segmentation reports
        (``ProcessingSettings.min_lesion_volume_ml``, the same default; pass
        the value the exams were processed with). A new lesion, or a vanished
        one, within the growth floor of this limit is not counted (see the
        module docstring); 0 turns that off.
    new_unequivocal_adc_below_um2s
        1400: a new focus with ADC at or above the responding range may be
        oedema, necrosis or healing marrow (Vanel 2007), so it stays equivocal.
    lesion_adc_statistic
        Median (robust to partial-volume edge voxels) or mean.
    progression_reference, response_reference
        Exams the progression and the ADC response rules compare with.
    """

    adc_responding_um2s: float = 1400.0
    adc_active_um2s: float = 1000.0
    adc_rise_highly_likely_pct: float = 40.0
    adc_rise_likely_pct: float = 25.0
    adc_no_change_pct: float = 15.0
    high_b_rise_pct: float = 15.0
    high_b_fall_pct: float = 10.0
    response_requires_falling_high_b: bool = True
    equivocal_growth_pct: float = 39.75
    clear_growth_pct: float = 72.8
    growth_min_increase_ml: float = 0.5
    growth_min_increase_voxels: float = 4.0
    new_min_ml: float = 0.065
    new_unequivocal_ml: float = 1.0
    new_unequivocal_adc_below_um2s: float = 1400.0
    detection_limit_ml: float = 0.5
    lesion_adc_statistic: LesionAdcStatistic = LesionAdcStatistic.MEDIAN
    progression_reference: ReferenceExam = ReferenceExam.PREVIOUS
    response_reference: ReferenceExam = ReferenceExam.BASELINE

    def __post_init__(self) -> None:
        for name in (
            "adc_responding_um2s",
            "adc_active_um2s",
            "adc_rise_highly_likely_pct",
            "adc_rise_likely_pct",
            "adc_no_change_pct",
            "high_b_rise_pct",
            "high_b_fall_pct",
            "equivocal_growth_pct",
            "clear_growth_pct",
            "growth_min_increase_ml",
            "growth_min_increase_voxels",
            "new_min_ml",
            "new_unequivocal_ml",
            "new_unequivocal_adc_below_um2s",
            "detection_limit_ml",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"response setting {name}: must be finite and >= 0, got {value}")
        if self.adc_active_um2s >= self.adc_responding_um2s:
            raise ValueError(
                f"response settings: adc_active_um2s ({self.adc_active_um2s}) must be below "
                f"adc_responding_um2s ({self.adc_responding_um2s})"
            )
        if self.adc_rise_likely_pct >= self.adc_rise_highly_likely_pct:
            raise ValueError(
                f"response settings: adc_rise_likely_pct ({self.adc_rise_likely_pct}) must be "
                f"below adc_rise_highly_likely_pct ({self.adc_rise_highly_likely_pct})"
            )
        if self.equivocal_growth_pct > self.clear_growth_pct:
            raise ValueError(
                f"response settings: equivocal_growth_pct ({self.equivocal_growth_pct}) must not "
                f"exceed clear_growth_pct ({self.clear_growth_pct})"
            )
        if self.new_min_ml > self.new_unequivocal_ml:
            raise ValueError(
                f"response settings: new_min_ml ({self.new_min_ml}) must not exceed "
                f"new_unequivocal_ml ({self.new_unequivocal_ml})"
            )


@dataclass(frozen=True, slots=True)
class LesionChange:
    """A lesion (or split/merged group) now and in one reference exam.

    Volumes in ml, ADC in um2/s (the statistic of the settings, volume-weighted
    over a group), high-b in the units of ``LesionStats.mean_high_b`` (NaN when
    unknown). ``distance_mm`` is the centroid distance after the global shift.
    ``voxel_volume_ml`` is the larger voxel of the two exams (NaN when unknown).
    """

    reference_study_uid: str
    current_labels: tuple[int, ...]
    reference_labels: tuple[int, ...]
    volume_ml: float
    reference_volume_ml: float
    adc_um2s: float
    reference_adc_um2s: float
    high_b: float
    reference_high_b: float
    distance_mm: float
    voxel_volume_ml: float = math.nan

    @property
    def volume_change_ml(self) -> float:
        """Absolute volume change, ml."""
        return self.volume_ml - self.reference_volume_ml

    @property
    def volume_change_pct(self) -> float | None:
        """Relative volume change, %, ``None`` when the reference volume is not positive."""
        return _pct(self.volume_ml, self.reference_volume_ml)

    @property
    def adc_change_um2s(self) -> float:
        """Absolute ADC change, um2/s (NaN when either is unknown)."""
        return self.adc_um2s - self.reference_adc_um2s

    @property
    def adc_change_pct(self) -> float | None:
        """Relative ADC change, %, ``None`` when unknown."""
        return _pct(self.adc_um2s, self.reference_adc_um2s)

    @property
    def high_b_change_pct(self) -> float | None:
        """Relative change of the mean high-b signal, %, ``None`` when unknown."""
        return _pct(self.high_b, self.reference_high_b)


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """The category a rule gave, the rule's code and a sentence saying why.

    ``category`` is ``None`` for a finding the rules do not count (see
    ``new_near_detection_limit`` and ``gone_near_detection_limit``).
    """

    category: ResponseCategory | None
    rule: str
    reason: str


def lesion_adc(lesion: LesionStats, statistic: LesionAdcStatistic) -> float:
    """The lesion ADC (um2/s) the rules use."""
    return lesion.adc_median if statistic is LesionAdcStatistic.MEDIAN else lesion.adc_mean


def assess_persistent_lesion(
    progression: LesionChange, response: LesionChange, settings: ResponseSettings
) -> RuleOutcome:
    """Category of a lesion seen in both exams (rules in the module docstring).

    ``progression`` is the change against ``settings.progression_reference``,
    ``response`` the change against ``settings.response_reference`` (the same
    object when the lesion has a counterpart in one reference only).
    """
    progressing = _progression_outcome(progression, settings)
    if progressing is not None:
        return progressing
    return _response_outcome(response, settings)


def _progression_outcome(
    progression: LesionChange, settings: ResponseSettings
) -> RuleOutcome | None:
    """The growth and rising high-b rules; ``None`` when none of them applies."""
    s = settings
    growth_pct = progression.volume_change_pct
    growth_ml = progression.volume_change_ml
    ref_uid = progression.reference_study_uid
    floor_ml = growth_floor_ml(s, progression.voxel_volume_ml)
    if growth_pct is not None and growth_ml >= floor_ml:
        if growth_pct >= s.clear_growth_pct:
            return RuleOutcome(
                ResponseCategory.HIGHLY_LIKELY_PROGRESSING,
                "clear_growth",
                f"volume {growth_pct:+.0f} % ({growth_ml:+.2f} ml) since {ref_uid}, "
                f">= {s.clear_growth_pct:g} %",
            )
        if growth_pct >= s.equivocal_growth_pct:
            return RuleOutcome(
                ResponseCategory.LIKELY_PROGRESSING,
                "equivocal_growth",
                f"volume {growth_pct:+.0f} % ({growth_ml:+.2f} ml) since {ref_uid}, "
                f">= {s.equivocal_growth_pct:g} %",
            )
    high_b_pct = progression.high_b_change_pct
    if (
        high_b_pct is not None
        and high_b_pct >= s.high_b_rise_pct
        and math.isfinite(progression.adc_um2s)
        and progression.adc_um2s < s.adc_responding_um2s
    ):
        return RuleOutcome(
            ResponseCategory.LIKELY_PROGRESSING,
            "rising_high_b",
            f"high-b signal {high_b_pct:+.0f} % since {ref_uid} with ADC "
            f"{progression.adc_um2s:.0f} < {s.adc_responding_um2s:g} um2/s",
        )
    return None


def _response_outcome(response: LesionChange, settings: ResponseSettings) -> RuleOutcome:
    """The ADC rise rules (the lesion did not progress)."""
    s = settings
    before, after = response.reference_adc_um2s, response.adc_um2s
    rise_pct = response.adc_change_pct
    if rise_pct is None or not (math.isfinite(before) and math.isfinite(after)):
        return RuleOutcome(ResponseCategory.NO_CHANGE, "no_change", "ADC not measurable")
    ref_uid = response.reference_study_uid
    change = f"ADC {before:.0f} -> {after:.0f} um2/s ({rise_pct:+.0f} %) since {ref_uid}"
    real_rise = rise_pct >= s.adc_no_change_pct
    falling_pct = response.high_b_change_pct
    high_b_falls = falling_pct is not None and falling_pct <= -s.high_b_fall_pct
    high_b_ok = high_b_falls or not s.response_requires_falling_high_b
    high_b_text = "high-b not measurable" if falling_pct is None else f"high-b {falling_pct:+.0f} %"
    if real_rise and before <= s.adc_responding_um2s < after:
        return RuleOutcome(
            ResponseCategory.HIGHLY_LIKELY_RESPONDING,
            "adc_crossed_responding",
            f"{change}: from <= {s.adc_responding_um2s:g} to above it",
        )
    if rise_pct >= s.adc_rise_highly_likely_pct and high_b_ok:
        return RuleOutcome(
            ResponseCategory.HIGHLY_LIKELY_RESPONDING,
            "adc_rise_highly_likely",
            f"{change}: rise >= {s.adc_rise_highly_likely_pct:g} %, {high_b_text}",
        )
    if real_rise and before <= s.adc_active_um2s < after <= s.adc_responding_um2s:
        return RuleOutcome(
            ResponseCategory.LIKELY_RESPONDING,
            "adc_into_intermediate",
            f"{change}: from <= {s.adc_active_um2s:g} to between {s.adc_active_um2s:g} and "
            f"{s.adc_responding_um2s:g}",
        )
    if s.adc_rise_likely_pct < rise_pct and high_b_ok:
        return RuleOutcome(
            ResponseCategory.LIKELY_RESPONDING,
            "adc_rise_likely",
            f"{change}: rise > {s.adc_rise_likely_pct:g} %, {high_b_text}",
        )
    return RuleOutcome(ResponseCategory.NO_CHANGE, "no_change", f"{change}, {high_b_text}")


def growth_floor_ml(settings: ResponseSettings, voxel_volume_ml: float = math.nan) -> float:
    """Smallest volume increase that counts as growth (ml), see the module docstring.

    ``voxel_volume_ml`` is the coarser voxel of the two exams (NaN when unknown).
    """
    floor_ml = settings.growth_min_increase_ml
    if math.isfinite(voxel_volume_ml) and voxel_volume_ml > 0:
        floor_ml = max(floor_ml, settings.growth_min_increase_voxels * voxel_volume_ml)
    return floor_ml


def assess_new_lesion(
    lesion: LesionStats,
    reference_study_uid: str,
    settings: ResponseSettings,
    *,
    voxel_volume_ml: float = math.nan,
) -> RuleOutcome | None:
    """Category of a lesion with no counterpart in the progression reference.

    ``None`` when it is below ``settings.new_min_ml`` (too small to count).
    A lesion within the growth floor of the detection limit gets the rule
    ``new_near_detection_limit`` and no category (``RuleOutcome.category`` is
    ``None``). ``voxel_volume_ml``: the coarser voxel of the two exams.
    """
    s = settings
    if not (math.isfinite(lesion.volume_ml) and lesion.volume_ml >= s.new_min_ml):
        return None
    adc = lesion_adc(lesion, s.lesion_adc_statistic)
    where = f"new since {reference_study_uid}: {lesion.volume_ml:.2f} ml, ADC {adc:.0f} um2/s"
    margin_ml = s.detection_limit_ml + growth_floor_ml(s, voxel_volume_ml)
    if s.detection_limit_ml > 0 and lesion.volume_ml < margin_ml:
        return RuleOutcome(
            None,
            "new_near_detection_limit",
            f"{where}; below {margin_ml:.2f} ml (the {s.detection_limit_ml:g} ml detection limit "
            "plus the growth floor): it may have been just below the limit then, so it is not "
            "counted; compare the images",
        )
    if (
        lesion.volume_ml >= s.new_unequivocal_ml
        and math.isfinite(adc)
        and adc < s.new_unequivocal_adc_below_um2s
    ):
        return RuleOutcome(
            ResponseCategory.HIGHLY_LIKELY_PROGRESSING,
            "new_unequivocal",
            f"{where} (>= {s.new_unequivocal_ml:g} ml, ADC < {s.new_unequivocal_adc_below_um2s:g})",
        )
    return RuleOutcome(
        ResponseCategory.LIKELY_PROGRESSING,
        "new_equivocal",
        f"{where} (below {s.new_unequivocal_ml:g} ml or ADC >= "
        f"{s.new_unequivocal_adc_below_um2s:g}: equivocal)",
    )


def assess_disappeared_lesion(
    lesion: LesionStats,
    reference_study_uid: str,
    settings: ResponseSettings,
    *,
    voxel_volume_ml: float = math.nan,
) -> RuleOutcome | None:
    """Category of a reference lesion no longer seen; ``None`` when it was too small to count.

    A lesion that was within the growth floor of the detection limit gets the
    rule ``gone_near_detection_limit`` and no category.
    """
    s = settings
    if not (math.isfinite(lesion.volume_ml) and lesion.volume_ml >= s.new_min_ml):
        return None
    margin_ml = s.detection_limit_ml + growth_floor_ml(s, voxel_volume_ml)
    if s.detection_limit_ml > 0 and lesion.volume_ml < margin_ml:
        return RuleOutcome(
            None,
            "gone_near_detection_limit",
            f"lesion of {lesion.volume_ml:.2f} ml in {reference_study_uid} no longer seen; "
            f"below {margin_ml:.2f} ml (the {s.detection_limit_ml:g} ml detection limit plus the "
            "growth floor): it may still be there just below the limit, so it is not counted",
        )
    return RuleOutcome(
        ResponseCategory.HIGHLY_LIKELY_RESPONDING,
        "disappeared",
        f"lesion of {lesion.volume_ml:.2f} ml in {reference_study_uid} no longer seen",
    )


def combine_categories(
    contributions: Sequence[tuple[ResponseCategory, float]],
) -> tuple[ResponseCategory | None, ResponseCategory | None]:
    """Primary and secondary category of a set of ``(category, volume_ml)`` contributions.

    Progression dominates: when any contribution is RAC 4 or 5 the primary is
    the highest one. Otherwise the primary is the category with the largest
    total volume (ties to the higher category). The secondary is the largest by
    volume among the remaining categories. ``(None, None)`` when empty.
    """
    if not contributions:
        return None, None
    volume: dict[ResponseCategory, float] = {}
    for category, volume_ml in contributions:
        weight = volume_ml if math.isfinite(volume_ml) and volume_ml > 0 else 0.0
        volume[category] = volume.get(category, 0.0) + weight
    by_volume = sorted(volume, key=lambda c: (volume[c], int(c)), reverse=True)
    worst = max(volume)
    primary = worst if worst >= ResponseCategory.LIKELY_PROGRESSING else by_volume[0]
    rest = [c for c in by_volume if c is not primary]
    return primary, (rest[0] if rest else None)


def _pct(value: float, reference: float) -> float | None:
    if not (math.isfinite(value) and math.isfinite(reference)) or reference <= 0:
        return None
    return (value - reference) / reference * 100.0
