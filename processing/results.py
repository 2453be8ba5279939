"""Typed results of processing one exam (host NumPy arrays, frozen).

Produced by :func:`processing.pipeline.process_exam`; consumed by the writers in
``dicom_node.writers`` and by the measurement report. All masks and maps share
the exam's grid ``[z, y, x]`` and its affine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from numpy.typing import NDArray

from processing.quality import QualityAssessment

__all__ = [
    "AdcClass",
    "AdcStats",
    "BodyRegion",
    "ClassVolumes",
    "ComputedImage",
    "ExamStats",
    "Histogram",
    "LesionStats",
    "ProcessingResult",
]


class AdcClass(Enum):
    """ADC colour classes of the TTL case study (``ProcessingResult.class_labels`` values)."""

    RED = 1  # below the yellow lower bound: active disease
    YELLOW = 2  # from the lower bound to 1500 um2/s: likely responding
    GREEN = 3  # >= 1500 um2/s: highly likely responding


class BodyRegion(Enum):
    """Bone regions of the MET-RADS-P reporting template (plus ``OTHER``)."""

    SKULL = "skull"
    CERVICAL_SPINE = "cervical_spine"
    DORSAL_SPINE = "dorsal_spine"
    LUMBOSACRAL_SPINE = "lumbosacral_spine"
    THORAX = "thorax"
    PELVIS = "pelvis"
    LIMBS = "limbs"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class ComputedImage:
    """A computed high-b image S(b) on the exam grid, in the units of the source signal."""

    b_value: float
    image: NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class AdcStats:
    """ADC distribution of the segmented volume, um2/s (kurtosis is excess kurtosis)."""

    mean: float
    median: float
    sd: float
    p5: float
    p10: float
    p25: float
    p75: float
    p90: float
    p95: float
    skewness: float
    kurtosis: float


@dataclass(frozen=True, slots=True)
class Histogram:
    """Fixed-bin ADC histogram of the segmented volume (counts of voxels)."""

    bin_edges_um2s: tuple[float, ...]
    counts: tuple[int, ...]
    voxel_volume_ml: float


@dataclass(frozen=True, slots=True)
class ClassVolumes:
    """Volumes of the ADC colour classes and the lower bound used for yellow."""

    red_ml: float
    yellow_ml: float
    green_ml: float
    yellow_lower_um2s: float
    green_lower_um2s: float
    yellow_lower_source: str  # "baseline p95" or "default"


@dataclass(frozen=True, slots=True)
class LesionStats:
    """One connected component of the tumour mask."""

    label: int  # value in ProcessingResult.lesion_labels
    volume_ml: float
    adc_mean: float
    adc_median: float
    centroid_mm: tuple[float, float, float]  # patient LPS
    region: BodyRegion
    mean_high_b: float  # mean computed-b signal in the lesion (for response rules)


@dataclass(frozen=True, slots=True)
class ExamStats:
    """Everything that is reported as numbers."""

    tdv_ml: float
    adc: AdcStats | None  # None when nothing was segmented
    histogram: Histogram
    classes: ClassVolumes
    lesions: tuple[LesionStats, ...]
    # The components beyond the ``max_reported_lesions`` largest: counted and summed, not
    # listed (0 in ProcessingResult.lesion_labels; still in the tumour mask, tDV, histogram
    # and classes).
    other_foci_count: int = 0
    other_foci_ml: float = 0.0


@dataclass(frozen=True, slots=True)
class ProcessingResult:
    """Maps, masks and statistics of one exam, all on the host.

    ``adc`` is in um2/s (1e-6 mm2/s), 0 where ``adc_valid`` is False.
    ``class_labels`` holds :class:`AdcClass` values inside the tumour mask, 0 outside.
    ``lesion_labels`` holds 1..N for the lesions of ``stats.lesions``, 0 outside.
    """

    adc: NDArray[np.float32]
    adc_valid: NDArray[np.bool_]
    computed: tuple[ComputedImage, ...]
    body_mask: NDArray[np.bool_]
    tumour_mask: NDArray[np.bool_]
    class_labels: NDArray[np.uint8]
    lesion_labels: NDArray[np.int32]
    stats: ExamStats
    device: str
    timings_s: dict[str, float] = field(default_factory=dict)
    settings_digest: str = ""  # short hash of the processing settings used
    # What the segmentation found and used (noise sigma, reference signal, threshold,
    # landmarks, components removed by each rule); JSON-ready scalars.
    diagnostics: dict[str, float | int | str | None] = field(default_factory=dict)
    # The reliability verdict with its reasons (processing.quality); the node adds
    # its coverage findings with QualityAssessment.with_findings.
    quality: QualityAssessment = field(default_factory=QualityAssessment)
