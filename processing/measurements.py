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
``adc_mean``, ``adc_median``, ``centroid_mm``, ``region``, ``mean_high_b``),
``device``, ``timings_s``, ``settings_digest``, ``diagnostics``, plus the
identifiers given by the caller (``study_instance_uid``, ``software_version``).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from processing.results import ProcessingResult

__all__ = ["MEASUREMENTS_SCHEMA_VERSION", "measurements_dict"]

MEASUREMENTS_SCHEMA_VERSION = 1
"""Bumped when a key changes meaning or disappears (adding keys keeps the version)."""


def measurements_dict(
    result: ProcessingResult,
    *,
    study_instance_uid: str,
    software_version: str,
) -> dict[str, Any]:
    """The JSON-ready measurement report of one processed exam."""
    stats = result.stats
    return {
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
        "timings_s": dict(result.timings_s),
        "diagnostics": dict(result.diagnostics),
    }
