"""Compare two processing results of the same exam (CPU reference, other backend) field by field.

:func:`compare_results` is the single judge of "the GPU gives the CPU's
results": ``tests/gpu`` calls it on a CPU and a GPU run, and
``tests/unit/test_backend_comparison.py`` proves on every CPU machine that it
flags each fault a GPU path could plausibly have (a class swapped, the
histogram shifted, a centile or the SD wrong, a lesion's median wrong).

Tolerances are in voxels, not in fractions of the volume: a mask may differ in
at most ``mask_fraction`` of *its own* voxels (at least one voxel when the
fraction is not 0; 0 for quantised input, where both backends see identical
values). Every statistic must then agree within what the voxels that actually
differ can explain, plus a few float32 ulps (reductions in another order,
``exp``/``log`` from another math library; ``docs/algorithm.md``, section 9).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from processing.results import AdcClass, ProcessingResult

__all__ = ["Tolerance", "compare_results"]


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How far another backend may be from the reference.

    Attributes
    ----------
    mask_fraction
        Largest share of a mask's voxels that may differ (0: identical masks).
    map_rtol, map_atol
        ADC map (um2/s) on voxels valid in both.
    computed_rtol, computed_atol
        Computed-b images on voxels valid in both.
    value_rtol
        Relative agreement of statistics when the voxels are identical.
    """

    mask_fraction: float = 1e-3
    map_rtol: float = 1e-4
    map_atol: float = 0.05
    computed_rtol: float = 2e-4
    computed_atol: float = 1e-3
    value_rtol: float = 1e-5

    def allowed_voxels(self, size: int) -> int:
        """Voxels a mask of ``size`` voxels may differ in."""
        if self.mask_fraction == 0:
            return 0
        return max(1, math.floor(self.mask_fraction * size))


QUANTISED = Tolerance(mask_fraction=0.0)
"""Input on a coarse grid of values: both backends must give identical masks."""


def _close(a: float, b: float, rtol: float, atol: float = 0.0) -> bool:
    return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)


class _Report:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.problems.append(message)


def _mask_difference(
    report: _Report,
    name: str,
    reference: np.ndarray[Any, Any],
    other: np.ndarray[Any, Any],
    tolerance: Tolerance,
) -> int:
    """Voxels where ``other`` differs from ``reference`` (checked against the mask's own size)."""
    if reference.shape != other.shape:
        report.check(False, f"{name}: shape {other.shape} != {reference.shape}")
        return int(reference.size)
    differing = int(np.count_nonzero(reference != other))
    size = int(np.count_nonzero(reference))
    allowed = tolerance.allowed_voxels(size)
    report.check(
        differing <= allowed,
        f"{name}: {differing} voxels differ, more than {allowed} "
        f"({tolerance.mask_fraction:g} of its {size} voxels)",
    )
    return differing


def _near_histogram_edges(result: ProcessingResult, atol: float) -> int:
    """Tumour voxels whose ADC is within ``atol`` of a bin edge (may fall either side)."""
    edges = np.asarray(result.stats.histogram.bin_edges_um2s, dtype=np.float64)
    values = result.adc[result.tumour_mask].astype(np.float64)
    if values.size == 0 or edges.size == 0:
        return 0
    nearest = np.min(np.abs(values[:, None] - edges[None, :]), axis=1)
    return int(np.count_nonzero(nearest <= atol))


def compare_results(
    reference: ProcessingResult, other: ProcessingResult, tolerance: Tolerance = Tolerance()
) -> list[str]:
    """Every difference between ``other`` and ``reference`` beyond ``tolerance``.

    Compared: the ADC and computed-b maps, every mask (body, ADC-valid,
    tumour, class labels, lesion labels), tDV, class volumes, histogram
    counts, every ADC statistic, every lesion row (label, volume, ADC mean and
    median, centroid, region, mean high-b signal), the foci beyond the listed
    lesions, and the reliability verdict with its findings and measures.

    Returns
    -------
    list of str
        One sentence per difference; empty when ``other`` matches.
    """
    report = _Report()
    # Masks, each against its own size.
    for name in ("body_mask", "adc_valid"):
        _mask_difference(report, name, getattr(reference, name), getattr(other, name), tolerance)
    diffs = _Differences(
        tumour=_mask_difference(
            report, "tumour_mask", reference.tumour_mask, other.tumour_mask, tolerance
        ),
        classes=_mask_difference(
            report, "class_labels", reference.class_labels, other.class_labels, tolerance
        ),
        lesions=_mask_difference(
            report, "lesion_labels", reference.lesion_labels, other.lesion_labels, tolerance
        ),
    )
    _compare_maps(report, reference, other, tolerance)
    _compare_volumes(report, reference, other, tolerance, diffs)
    explained = _compare_adc_statistics(report, reference, other, tolerance, diffs)
    _compare_lesions(report, reference, other, tolerance, diffs)
    _compare_quality(report, reference, other, diffs, explained)
    return report.problems


@dataclass(frozen=True, slots=True)
class _Differences:
    """Voxels that differ in the tumour mask, the class labels and the lesion labels."""

    tumour: int
    classes: int
    lesions: int


def _compare_maps(
    report: _Report, reference: ProcessingResult, other: ProcessingResult, tolerance: Tolerance
) -> None:
    """The ADC and computed-b maps, on voxels valid in both."""
    common = reference.adc_valid & other.adc_valid
    if not np.allclose(
        other.adc[common], reference.adc[common], rtol=tolerance.map_rtol, atol=tolerance.map_atol
    ):
        worst = float(np.max(np.abs(other.adc[common] - reference.adc[common])))
        report.check(False, f"ADC map: differs by up to {worst:.4g} um2/s on common valid voxels")
    report.check(
        [c.b_value for c in other.computed] == [c.b_value for c in reference.computed],
        "computed-b images: other b-values",
    )
    for mine, theirs in zip(reference.computed, other.computed, strict=False):
        report.check(
            bool(
                np.allclose(
                    theirs.image[common],
                    mine.image[common],
                    rtol=tolerance.computed_rtol,
                    atol=tolerance.computed_atol,
                )
            ),
            f"computed b={mine.b_value:g}: differs beyond float32 tolerance",
        )


def _compare_volumes(
    report: _Report,
    reference: ProcessingResult,
    other: ProcessingResult,
    tolerance: Tolerance,
    diffs: _Differences,
) -> None:
    """tDV and class volumes (in voxels), class bounds and histogram counts."""
    stats, other_stats = reference.stats, other.stats
    voxel_ml = stats.histogram.voxel_volume_ml
    report.check(
        abs(other_stats.tdv_ml - stats.tdv_ml) <= diffs.tumour * voxel_ml + 1e-9,
        f"tdv_ml: {other_stats.tdv_ml!r} vs {stats.tdv_ml!r} ({diffs.tumour} tumour voxels differ)",
    )
    for cls in (AdcClass.RED, AdcClass.YELLOW, AdcClass.GREEN):
        name = f"{cls.name.lower()}_ml"
        mine_ml, theirs_ml = getattr(stats.classes, name), getattr(other_stats.classes, name)
        report.check(
            abs(theirs_ml - mine_ml) <= diffs.classes * voxel_ml + 1e-9,
            f"classes.{name}: {theirs_ml!r} vs {mine_ml!r} ({diffs.classes} class voxels differ)",
        )
    for name in ("yellow_lower_um2s", "green_lower_um2s", "yellow_lower_source"):
        report.check(
            getattr(stats.classes, name) == getattr(other_stats.classes, name),
            f"classes.{name}: {getattr(other_stats.classes, name)!r} "
            f"vs {getattr(stats.classes, name)!r}",
        )

    # Histogram: a voxel that moves changes two counts.
    report.check(
        other_stats.histogram.bin_edges_um2s == stats.histogram.bin_edges_um2s,
        "histogram: other bin edges",
    )
    moved = sum(
        abs(a - b)
        for a, b in zip(other_stats.histogram.counts, stats.histogram.counts, strict=False)
    )
    may_move = diffs.tumour + _near_histogram_edges(reference, tolerance.map_atol)
    report.check(
        len(other_stats.histogram.counts) == len(stats.histogram.counts) and moved <= 2 * may_move,
        f"histogram counts: {moved} count differences, more than 2 x {may_move} voxels can make",
    )


def _compare_adc_statistics(
    report: _Report,
    reference: ProcessingResult,
    other: ProcessingResult,
    tolerance: Tolerance,
    diffs: _Differences,
) -> float:
    """Every ADC statistic; returns the relative tolerance the tumour differences explain."""
    stats, other_stats = reference.stats, other.stats
    tumour_size = max(1, int(np.count_nonzero(reference.tumour_mask)))
    explained = tolerance.value_rtol + 3.0 * diffs.tumour / tumour_size
    if stats.adc is None or other_stats.adc is None:
        report.check(
            stats.adc is None and other_stats.adc is None,
            f"adc statistics: {other_stats.adc!r} vs {stats.adc!r}",
        )
        return explained
    for field in dataclasses.fields(stats.adc):
        mine_value = float(getattr(stats.adc, field.name))
        theirs_value = float(getattr(other_stats.adc, field.name))
        if field.name in {"skewness", "kurtosis"}:
            ok = _close(theirs_value, mine_value, explained, atol=1e-6 + 20 * explained)
        else:
            ok = _close(theirs_value, mine_value, explained)
        report.check(ok, f"adc.{field.name}: {theirs_value!r} vs {mine_value!r}")
    return explained


def _compare_lesions(
    report: _Report,
    reference: ProcessingResult,
    other: ProcessingResult,
    tolerance: Tolerance,
    diffs: _Differences,
) -> None:
    """Every lesion row, and the foci beyond the listed lesions."""
    stats, other_stats = reference.stats, other.stats
    voxel_ml = stats.histogram.voxel_volume_ml
    lesion_diff = diffs.lesions
    report.check(
        len(other_stats.lesions) == len(stats.lesions),
        f"lesions: {len(other_stats.lesions)} rows vs {len(stats.lesions)}",
    )
    for lesion, its in zip(stats.lesions, other_stats.lesions, strict=False):
        where = f"lesion {lesion.label}"
        size = max(1, round(lesion.volume_ml / voxel_ml))
        rtol = tolerance.value_rtol + 3.0 * lesion_diff / size
        report.check(its.label == lesion.label, f"{where}: label {its.label}")
        report.check(its.region == lesion.region, f"{where}: region {its.region}")
        report.check(
            abs(its.volume_ml - lesion.volume_ml) <= lesion_diff * voxel_ml + 1e-9,
            f"{where}: volume_ml {its.volume_ml!r} vs {lesion.volume_ml!r}",
        )
        for name in ("adc_mean", "adc_median", "mean_high_b"):
            report.check(
                _close(getattr(its, name), getattr(lesion, name), rtol),
                f"{where}: {name} {getattr(its, name)!r} vs {getattr(lesion, name)!r}",
            )
        centroid_atol = 1e-4 if lesion_diff == 0 else 0.5
        report.check(
            bool(np.allclose(its.centroid_mm, lesion.centroid_mm, rtol=0, atol=centroid_atol)),
            f"{where}: centroid_mm {its.centroid_mm} vs {lesion.centroid_mm}",
        )
    report.check(
        other_stats.other_foci_count == stats.other_foci_count,
        f"other_foci_count: {other_stats.other_foci_count} vs {stats.other_foci_count}",
    )
    report.check(
        abs(other_stats.other_foci_ml - stats.other_foci_ml) <= diffs.tumour * voxel_ml + 1e-9,
        f"other_foci_ml: {other_stats.other_foci_ml!r} vs {stats.other_foci_ml!r}",
    )


def _compare_quality(
    report: _Report,
    reference: ProcessingResult,
    other: ProcessingResult,
    diffs: _Differences,
    explained: float,
) -> None:
    """The reliability verdict, its findings and every measure."""
    quality, other_quality = reference.quality, other.quality
    report.check(
        other_quality.verdict == quality.verdict,
        f"verdict: {other_quality.verdict.value} vs {quality.verdict.value}",
    )
    report.check(
        [f.code for f in other_quality.findings] == [f.code for f in quality.findings],
        f"findings: {[f.code for f in other_quality.findings]} "
        f"vs {[f.code for f in quality.findings]}",
    )
    report.check(
        set(other_quality.measures) == set(quality.measures), "quality measures: other names"
    )
    for name, value in quality.measures.items():
        theirs_measure = other_quality.measures.get(name)
        if isinstance(value, int) and isinstance(theirs_measure, int):
            ok = abs(theirs_measure - value) <= diffs.tumour  # counts: a voxel can change one
        elif isinstance(value, int | float) and isinstance(theirs_measure, int | float):
            ok = _close(float(theirs_measure), float(value), 1e-4 + explained, atol=1e-9)
        else:
            ok = theirs_measure == value
        report.check(ok, f"quality measure {name}: {theirs_measure!r} vs {value!r}")
