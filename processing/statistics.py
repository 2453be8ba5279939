"""Statistics of the segmented volume: tDV, ADC histogram, colour classes, lesions.

All reductions run on the backend's device over the voxels of the tumour mask
(or of one lesion) and return Python numbers. Conventions (``docs/algorithm.md``):

- tDV = number of voxels x voxel volume (Blackledge et al., PLoS One 2014).
- SD is the sample standard deviation (``ddof = 1``); skewness is the
  Fisher-Pearson coefficient ``m3 / m2^1.5`` and kurtosis the excess kurtosis
  ``m4 / m2^2 - 3`` (both with population moments, as ``scipy.stats`` does by
  default and as histogram papers report them).
- Percentiles interpolate linearly between order statistics (NumPy default).
- The histogram counts every segmented voxel: values below the first edge fall
  in the first bin and values at or above the last edge in the last bin.
- Classes (TTL case study, docs/algorithm.md; MET-RADS-P, Padhani et al., Eur Urol 2017): green
  ``ADC >= green_lower``; yellow ``yellow_lower <= ADC < green_lower``; red below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from processing.backend import Backend
from processing.crop import box_or_whole, paste
from processing.results import AdcClass, AdcStats, ClassVolumes, Histogram

__all__ = [
    "LesionMeasures",
    "adc_histogram",
    "adc_statistics",
    "class_volumes",
    "classify_adc",
    "lesion_measures",
    "segment_sums",
]

_PERCENTILES = (5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0)


def adc_statistics(values: Any, backend: Backend) -> AdcStats | None:
    """Distribution statistics of ADC values (um2/s); ``None`` for no values.

    Moments are accumulated in float64 on the device (the value count is small
    next to the volume: only segmented voxels).
    """
    xp = backend.xp
    if int(values.size) == 0:
        return None
    data = values.astype(xp.float64)
    count = int(data.size)
    mean = xp.mean(data)
    centred = data - mean
    m2 = xp.mean(centred**2)
    m3 = xp.mean(centred**3)
    m4 = xp.mean(centred**4)
    centiles = [backend.scalar(c) for c in xp.percentile(data, xp.asarray(_PERCENTILES))]
    m2_value = backend.scalar(m2)
    sd = (m2_value * count / (count - 1)) ** 0.5 if count > 1 else 0.0
    if m2_value > 0:
        skewness = backend.scalar(m3) / m2_value**1.5
        kurtosis = backend.scalar(m4) / m2_value**2 - 3.0
    else:
        skewness = 0.0
        kurtosis = 0.0
    p5, p10, p25, p50, p75, p90, p95 = centiles
    return AdcStats(
        mean=backend.scalar(mean),
        median=p50,
        sd=sd,
        p5=p5,
        p10=p10,
        p25=p25,
        p75=p75,
        p90=p90,
        p95=p95,
        skewness=skewness,
        kurtosis=kurtosis,
    )


def adc_histogram(
    values: Any,
    *,
    lower_um2s: float,
    upper_um2s: float,
    bin_width_um2s: float,
    voxel_volume_ml: float,
    backend: Backend,
) -> Histogram:
    """Fixed-bin histogram; out-of-range values go to the first or last bin."""
    if not (bin_width_um2s > 0 and upper_um2s > lower_um2s):
        raise ValueError(
            f"histogram range [{lower_um2s}, {upper_um2s}) with bin width {bin_width_um2s} is empty"
        )
    xp = backend.xp
    bins = round((upper_um2s - lower_um2s) / bin_width_um2s)
    edges = tuple(float(lower_um2s + i * bin_width_um2s) for i in range(bins + 1))
    if int(values.size) == 0:
        return Histogram(bin_edges_um2s=edges, counts=(0,) * bins, voxel_volume_ml=voxel_volume_ml)
    index = xp.floor((values.astype(xp.float64) - lower_um2s) / bin_width_um2s).astype(xp.int64)
    index = xp.clip(index, 0, bins - 1)
    counts = backend.to_host(xp.bincount(index, minlength=bins))
    return Histogram(
        bin_edges_um2s=edges,
        counts=tuple(int(c) for c in counts),
        voxel_volume_ml=voxel_volume_ml,
    )


def classify_adc(
    adc: Any, mask: Any, yellow_lower_um2s: float, green_lower_um2s: float, backend: Backend
) -> Any:
    """uint8 map of :class:`AdcClass` values inside ``mask``, 0 outside."""
    xp = backend.xp
    box = box_or_whole(mask, backend, margin=0)  # 0 outside the mask's box
    part = adc[box]
    labels = xp.full(part.shape, AdcClass.RED.value, dtype=xp.uint8)
    labels[part >= xp.float32(yellow_lower_um2s)] = AdcClass.YELLOW.value
    labels[part >= xp.float32(green_lower_um2s)] = AdcClass.GREEN.value
    labels[~mask[box]] = 0
    return paste(labels, box, adc.shape, backend)


def class_volumes(
    class_labels: Any,
    *,
    voxel_volume_ml: float,
    yellow_lower_um2s: float,
    green_lower_um2s: float,
    yellow_lower_source: str,
    backend: Backend,
) -> ClassVolumes:
    """Volumes (ml) of the red, yellow and green classes."""
    xp = backend.xp
    flat = class_labels.ravel()
    # Only the classes (1-3) are counted: the background (0, most of the grid) is skipped.
    counts = backend.to_host(xp.bincount(flat[flat != 0], minlength=4))
    return ClassVolumes(
        red_ml=float(counts[AdcClass.RED.value]) * voxel_volume_ml,
        yellow_ml=float(counts[AdcClass.YELLOW.value]) * voxel_volume_ml,
        green_ml=float(counts[AdcClass.GREEN.value]) * voxel_volume_ml,
        yellow_lower_um2s=yellow_lower_um2s,
        green_lower_um2s=green_lower_um2s,
        yellow_lower_source=yellow_lower_source,
    )


@dataclass(frozen=True, slots=True)
class LesionMeasures:
    """Per-lesion sums as host arrays indexed by ``label - 1``."""

    voxel_counts: np.ndarray[Any, np.dtype[np.int64]]
    adc_mean: np.ndarray[Any, np.dtype[np.float64]]
    adc_median: np.ndarray[Any, np.dtype[np.float64]]
    centroid_index: np.ndarray[Any, np.dtype[np.float64]]  # (n, 3) z, y, x
    high_b_mean: np.ndarray[Any, np.dtype[np.float64]]


def segment_sums(columns: Any, counts: Any, backend: Backend) -> Any:
    """Sums of consecutive row segments, in an order fixed by the data alone.

    Rows ``0 .. counts[0] - 1`` form the first segment, the next ``counts[1]``
    rows the second, and so on. Each segment is summed as a pairwise tree
    (row ``r`` takes row ``r + 1``, then ``r + 2``, ``r + 4``, ...), one
    vectorised step per level: every addition has the same operands in the
    same order on NumPy and CuPy, and an IEEE float64 addition is correctly
    rounded on both, so the sums are bit-identical across backends and runs.
    A float-weighted ``bincount`` is not: CuPy accumulates it with atomic
    adds whose order changes from run to run (``docs/algorithm.md``, section 9).
    Pairwise summation is also more accurate than a running sum (error
    ``O(log n)`` ulps instead of ``O(n)``).

    Parameters
    ----------
    columns
        ``(n, k)`` float64 array, rows grouped by segment.
    counts
        ``(m,)`` int64 segment lengths, summing to ``n``; a length may be 0.
    backend
        The arrays' backend.

    Returns
    -------
    array
        ``(m, k)`` float64 sums (0 for an empty segment).
    """
    xp = backend.xp
    total = int(columns.shape[0])
    if total == 0:
        return xp.zeros((int(counts.shape[0]), int(columns.shape[1])), dtype=xp.float64)
    accumulator = columns.astype(xp.float64, copy=True)
    ends = xp.cumsum(counts)
    starts = ends - counts
    heads = xp.arange(total)
    segment = xp.searchsorted(ends, heads, side="right")
    rank = heads - starts[segment]
    length = counts[segment]
    longest = int(backend.to_host(counts).max())
    stride = 1
    while stride < longest:
        keep = (rank % (2 * stride)) == 0
        heads, rank, length = heads[keep], rank[keep], length[keep]
        target = heads[rank + stride < length]
        accumulator[target] = accumulator[target] + accumulator[target + stride]
        stride *= 2
    # An empty segment's start may be past the end: gather a valid row, then put 0.
    heads_of_segments = accumulator[xp.minimum(starts, total - 1)]
    return xp.where((counts > 0)[:, None], heads_of_segments, 0.0)


def lesion_measures(
    lesion_labels: Any, count: int, adc: Any, high_b: Any, backend: Backend
) -> LesionMeasures:
    """Volume, mean/median ADC, centroid and mean high-b signal of labels ``1..count``.

    Works on the labelled voxels only: their flat indices are gathered once
    and put in (label, flat index) order, a unique key, so every backend and
    every run sees the same order; per-label sums are :func:`segment_sums`
    (deterministic, unlike a float-weighted ``bincount``), per-label medians
    come from one sort by (label, ADC). Voxel counts use an integer
    ``bincount`` (integer additions commute: deterministic).
    """
    xp = backend.xp
    if count == 0:
        empty = np.zeros(0, dtype=np.float64)
        return LesionMeasures(
            voxel_counts=np.zeros(0, dtype=np.int64),
            adc_mean=empty,
            adc_median=empty,
            centroid_index=np.zeros((0, 3), dtype=np.float64),
            high_b_mean=empty,
        )
    flat_labels = lesion_labels.ravel()
    where = xp.flatnonzero(flat_labels)  # ascending
    labels = flat_labels[where].astype(xp.int64) - 1
    by_label = xp.argsort(labels * int(where.size) + xp.arange(int(where.size)))
    where, labels = where[by_label], labels[by_label]
    values = adc.ravel()[where].astype(xp.float64)
    signal = high_b.ravel()[where].astype(xp.float64)
    counts = xp.bincount(labels, minlength=count)
    _, ny, nx = lesion_labels.shape
    z_index, rest = xp.divmod(where, ny * nx)
    y_index, x_index = xp.divmod(rest, nx)
    columns = xp.stack([values, signal, z_index, y_index, x_index], axis=1).astype(xp.float64)
    sums = segment_sums(columns, counts, backend) / counts[:, None]
    adc_mean, high_b_mean, centroid = sums[:, 0], sums[:, 1], sums[:, 2:]
    order = xp.lexsort(xp.stack([values, labels.astype(xp.float64)]))
    sorted_values = values[order]
    starts = xp.cumsum(counts) - counts
    lower = starts + (counts - 1) // 2
    upper = starts + counts // 2
    adc_median = 0.5 * (sorted_values[lower] + sorted_values[upper])
    return LesionMeasures(
        voxel_counts=backend.to_host(counts).astype(np.int64),
        adc_mean=backend.to_host(adc_mean).astype(np.float64),
        adc_median=backend.to_host(adc_median).astype(np.float64),
        centroid_index=backend.to_host(centroid).astype(np.float64),
        high_b_mean=backend.to_host(high_b_mean).astype(np.float64),
    )
