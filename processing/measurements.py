"""The measurement report as plain JSON (``measurements.json``).

:func:`measurements_dict` turns a :class:`~processing.results.ProcessingResult`
into JSON-ready values: numbers are Python floats/ints, ADC values in um2/s,
volumes in ml, centroids in patient LPS mm. The keys are a stable interface
(the offline ``wbdwi process`` command, tests and downstream tools read them):

``tdv_ml``, ``adc`` (``mean``, ``median``, ``sd``, ``p5`` ... ``p95``,
``skewness``, ``kurtosis``; ``null`` when nothing was segmented), ``classes``
(``red_ml``, ``yellow_ml``, ``green_ml``, ``yellow_lower_um2s``,
``green_lower_um2s``, ``yellow_lower_source``), ``histogram`` (``bin_edges_um2s``,
``counts``, ``voxel_volume_ml``), ``lesions`` (``label``, ``volume_ml``,
``adc_mean``, ``adc_median``, ``centroid_mm``, ``region``, ``mean_high_b``; the
``max_reported_lesions`` largest components), ``other_foci`` (``count`` and
``volume_ml`` of the components beyond them: in ``tdv_ml``, ``adc``,
``classes`` and ``histogram``, not in ``lesions``),
``device``, ``timings_s``, ``settings_digest``, ``diagnostics``, ``quality``
(the reliability verdict: :meth:`processing.quality.QualityAssessment.as_dict`,
``verdict``, ``meaning``, ``reasons`` with ``code``, ``severity``, ``message``,
``value``, ``limit``, and ``measures``), plus the identifiers given by the caller
(``study_instance_uid``, ``software_version``).

With the exam's :class:`~processing.exam_summary.ExamSummary` given,
``exam_summary`` holds :meth:`ExamSummary.to_dict` (what a later run reads back
as its prior: ``wbdwi process --prior``). ``comparison`` holds
:func:`~processing.comparison.comparison_to_dict` (``prior_study_uid``,
``baseline_study_uid``, ``tdv_change_pct``, ``adc_median_change_pct``,
``rac_overall``, ``rac_by_region`` and the detail behind them), ``null`` when
the exam has no prior.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from processing.comparison import Comparison, comparison_to_dict
from processing.errors import SummaryFormatError
from processing.exam_summary import ExamSummary
from processing.results import ProcessingResult

__all__ = ["MEASUREMENTS_SCHEMA_VERSION", "measurements_dict", "summary_from_measurements"]

MEASUREMENTS_SCHEMA_VERSION = 1
"""Bumped when a key changes meaning or disappears (adding keys keeps the version)."""


def measurements_dict(
    result: ProcessingResult,
    *,
    study_instance_uid: str,
    software_version: str,
    summary: ExamSummary | None = None,
    comparison: Comparison | None = None,
) -> dict[str, Any]:
    """The JSON-ready measurement report of one processed exam.

    ``summary`` adds ``exam_summary``; with it, ``comparison`` is always
    present (``null`` without a comparison).

    Raises
    ------
    ValueError
        When ``summary`` or ``comparison`` is of another study than
        ``study_instance_uid``, or ``comparison`` comes without ``summary``.
    """
    if summary is not None and summary.study_instance_uid != study_instance_uid:
        raise ValueError(
            f"exam summary of study {summary.study_instance_uid} given for study "
            f"{study_instance_uid}"
        )
    if comparison is not None:
        if summary is None:
            raise ValueError("a comparison needs the exam summary it was computed for")
        if comparison.current_study_uid != study_instance_uid:
            raise ValueError(
                f"comparison of study {comparison.current_study_uid} given for study "
                f"{study_instance_uid}"
            )
    stats = result.stats
    report: dict[str, Any] = {
        "schema_version": MEASUREMENTS_SCHEMA_VERSION,
        "study_instance_uid": study_instance_uid,
        "software_version": software_version,
        "settings_digest": result.settings_digest,
        "device": result.device,
        "tdv_ml": stats.tdv_ml,
        "adc": None if stats.adc is None else asdict(stats.adc),
        "classes": asdict(stats.classes),
        "histogram": {
            "bin_edges_um2s": list(stats.histogram.bin_edges_um2s),
            "counts": list(stats.histogram.counts),
            "voxel_volume_ml": stats.histogram.voxel_volume_ml,
        },
        "lesions": [
            {
                "label": lesion.label,
                "volume_ml": lesion.volume_ml,
                "adc_mean": lesion.adc_mean,
                "adc_median": lesion.adc_median,
                "centroid_mm": list(lesion.centroid_mm),
                "region": lesion.region.value,
                "mean_high_b": lesion.mean_high_b,
            }
            for lesion in stats.lesions
        ],
        "other_foci": {"count": stats.other_foci_count, "volume_ml": stats.other_foci_ml},
        "timings_s": dict(result.timings_s),
        "diagnostics": dict(result.diagnostics),
        "quality": result.quality.as_dict(),
    }
    if summary is not None:
        report["exam_summary"] = summary.to_dict()
        report["comparison"] = None if comparison is None else comparison_to_dict(comparison)
    return report


def summary_from_measurements(measurements: Mapping[str, Any], source: str) -> ExamSummary:
    """The :class:`ExamSummary` stored in a ``measurements.json`` (its ``exam_summary``).

    ``source`` names the file in error messages.

    Raises
    ------
    processing.errors.SummaryFormatError
        When the block is missing (a run of an older version) or malformed.
    """
    block = measurements.get("exam_summary")
    if not isinstance(block, Mapping):
        raise SummaryFormatError(
            f"{source}: no exam_summary block (written by an older version, or not a "
            "measurements.json of wbdwi process); process that exam again"
        )
    try:
        return ExamSummary.from_dict(block)
    except SummaryFormatError as exc:
        raise SummaryFormatError(f"{source}: exam_summary: {exc}") from exc
