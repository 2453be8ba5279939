"""Noise estimate, input checks and the mono-exponential ADC fit.

Model
-----
``S(b) = S0 * exp(-b * ADC)`` for each voxel, fitted by weighted linear least
squares on ``ln S`` over the b-values ``>= adc_min_b``. Since
``Var(ln S) ~ sigma^2 / S^2`` (first-order error propagation), the optimal
weights are ``S^2`` (Kingsley, Concepts Magn Reson 2006); we use the measured
signal for the first pass and the fitted signal for the following passes
(iteratively re-weighted linear least squares, Veraart et al., NeuroImage 2013,
which removes most of the bias of weighting by noisy samples). The fit is the
closed-form solution of the two-parameter problem, evaluated for all voxels at
once with a loop over the few b-value planes only (on the CPU, for the voxels that
can be valid only: those of the body with signal at the lowest b).

Noise floor
-----------
Magnitude images have Rician noise; in air (no signal) it is Rayleigh
distributed with mode ``sigma``. :func:`estimate_noise_sigma` takes the mode of
the low-intensity histogram of the lowest-b image (air is the most frequent
intensity of a whole-body field of view). Signal is clipped at
``signal_floor_sigma * sigma`` before the logarithm, and voxels whose lowest-b
signal is not above ``adc_min_snr * sigma`` are flagged invalid, as are fits
outside ``[0, adc_max_um2s]`` (open-source convention: ADC > 5e-3 mm2/s is
noise; see ``docs/algorithm.md``).

Units: b in s/mm2, ADC in um2/s (1e-6 mm2/s). Internally b is scaled to
1000 s/mm2 so that float32 sums stay well conditioned.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from processing.backend import Backend
from processing.errors import InvalidExamError
from processing.fused import adc_fit_kernel
from processing.settings import ProcessingSettings

__all__ = [
    "AdcFit",
    "NoiseEstimate",
    "check_signal",
    "estimate_noise_sigma",
    "fit_adc",
    "fit_slope",
    "fitted_b_indices",
    "lowest_fitted_b_below_minimum",
]

_B_SCALE = 1000.0  # b in units of 1000 s/mm2; the slope is then in 1e-3 mm2/s
_HISTOGRAM_BINS = 512
_MAX_MODE_FRACTION = 0.1  # a Rayleigh mode above 10 % of the bright-tissue level is tissue
_SAMPLED_PERCENTILE_MIN = 1 << 16  # below this, numpy.percentile on the whole array
_PERCENTILE_SAMPLE_STEP = 64  # every 64th value estimates the threshold ...
_PERCENTILE_SAMPLE_MARGIN = 0.5  # ... at q - 0.5 percentage points of the sample


@dataclass(frozen=True, slots=True)
class NoiseEstimate:
    """Background noise of the lowest-b image.

    Attributes
    ----------
    sigma
        Rician/Rayleigh ``sigma`` in signal units (0 when the background is
        exactly zero: noise-free data or a scanner that masks air).
    floor
        The smallest positive signal used anywhere: ``max(sigma, 1e-6 * p99)``.
    method
        ``"rayleigh mode"``, ``"zero background"`` or ``"no air in field of view"``.
    p99
        99th centile of the positive lowest-b values (a robust bright-tissue level).
    """

    sigma: float
    floor: float
    method: str
    p99: float


@dataclass(frozen=True, slots=True)
class AdcFit:
    """ADC map (um2/s, 0 where invalid) and its validity mask, on the backend's device."""

    adc: Any
    valid: Any


def check_signal(signal: Any, b_values: tuple[float, ...], backend: Backend) -> None:
    """Reject exams that cannot give a meaningful ADC.

    Raises
    ------
    InvalidExamError
        b-values not finite, negative or not strictly increasing; signal with
        NaN/infinite or negative values; all-zero signal.
    """
    xp = backend.xp
    if any(not math.isfinite(b) for b in b_values):
        raise InvalidExamError(f"b-values must be finite numbers, got {list(b_values)}")
    if any(b < 0 for b in b_values):
        raise InvalidExamError(f"b-values must not be negative, got {list(b_values)}")
    for lower, upper in itertools.pairwise(b_values):
        if not upper > lower:
            raise InvalidExamError(
                f"b-values must strictly increase along the first signal axis, got {list(b_values)}"
            )
    # Two passes over the signal: the minimum, and the maximum of each b-value's plane.
    # A NaN makes the minimum NaN, an infinity the minimum or a maximum infinite.
    minimum = backend.scalar(signal.min())
    plane_maxima = backend.to_host(signal.reshape(signal.shape[0], -1).max(axis=1))
    if not (math.isfinite(minimum) and bool(np.isfinite(plane_maxima).all())):
        count = int(xp.count_nonzero(~xp.isfinite(signal)))
        raise InvalidExamError(f"signal contains {count} NaN or infinite values")
    if minimum < 0:
        raise InvalidExamError(
            f"signal contains negative values (minimum {minimum:g}); magnitude DWI cannot be "
            "negative, check rescale slope/intercept"
        )
    if float(plane_maxima.max()) <= 0:
        raise InvalidExamError("signal is zero everywhere")
    for index, b_value in enumerate(b_values):
        if float(plane_maxima[index]) <= 0:
            raise InvalidExamError(f"signal is zero everywhere at b = {b_value:g} s/mm2")


def fitted_b_indices(b_values: tuple[float, ...], adc_min_b: float) -> tuple[int, ...]:
    """Indices of the b-values used by the fit (``b >= adc_min_b``; increasing b).

    A protocol with fewer than two b-values at or above ``adc_min_b`` (b 0/1000)
    is fitted with the highest b-values below it as well, as few as make two;
    the pipeline then reports the perfusion bias in the verdict
    (:func:`lowest_fitted_b_below_minimum`).

    Raises
    ------
    InvalidExamError
        Fewer than two b-values in all.
    """
    if len(b_values) < 2:
        raise InvalidExamError(f"need at least two b-values for an ADC fit, got {list(b_values)}")
    used = [i for i, b in enumerate(b_values) if b >= adc_min_b]
    below = [i for i, b in enumerate(b_values) if b < adc_min_b]
    while len(used) < 2:
        used.insert(0, below.pop())
    return tuple(used)


def lowest_fitted_b_below_minimum(b_values: tuple[float, ...], adc_min_b: float) -> float | None:
    """The lowest b-value of the fit when it lies below ``adc_min_b`` (else ``None``)."""
    lowest = b_values[fitted_b_indices(b_values, adc_min_b)[0]]
    return float(lowest) if lowest < adc_min_b else None


def estimate_noise_sigma(
    low_b: Any, settings: ProcessingSettings, backend: Backend
) -> NoiseEstimate:
    """Estimate the Rician ``sigma`` from the air of the lowest-b image.

    Parameters
    ----------
    low_b
        The lowest-b volume ``[z, y, x]`` on the device.
    settings
        Uses ``zero_background_fraction``.
    backend
        Array backend.

    Notes
    -----
    When at least ``zero_background_fraction`` of the voxels are exactly zero,
    the air has been masked (or the data are noise-free) and ``sigma`` is 0;
    otherwise ``sigma`` is the mode of the histogram of the positive values
    below their 99th centile (512 bins, lightly smoothed), i.e. the Rayleigh
    mode of air. The estimate assumes that the field of view contains air, which
    holds for whole-body DWI (the body fills well under half of a 400-500 mm
    axial field of view over most of its length). When the mode lies above 10 %
    of the 99th centile it is tissue, not air, and ``sigma`` is 0 (method
    ``"no air in field of view"``): the floors then fall back to the positive
    minimum and the body threshold to its share of the 99th centile.
    """
    xp = backend.xp
    flat = low_b.ravel()
    positive = flat[flat > 0]
    if positive.size == 0:
        raise InvalidExamError("lowest-b signal is zero everywhere")
    p99 = _upper_percentile(positive, 99.0, backend)
    floor_abs = max(1e-6 * p99, float(xp.finfo(xp.float32).tiny))
    zero_fraction = 1.0 - positive.size / flat.size
    if zero_fraction >= settings.zero_background_fraction:
        return NoiseEstimate(sigma=0.0, floor=floor_abs, method="zero background", p99=p99)
    counts, edges = xp.histogram(positive, bins=_HISTOGRAM_BINS, range=(0.0, p99))
    kernel = xp.asarray([1.0, 2.0, 3.0, 2.0, 1.0], dtype=xp.float64)
    smoothed = xp.convolve(counts.astype(xp.float64), kernel, mode="same")
    mode_bin = int(xp.argmax(smoothed))
    sigma = 0.5 * backend.scalar(edges[mode_bin] + edges[mode_bin + 1])
    if sigma > _MAX_MODE_FRACTION * p99:
        # The most frequent intensity is tissue, not air: no usable background.
        return NoiseEstimate(sigma=0.0, floor=floor_abs, method="no air in field of view", p99=p99)
    return NoiseEstimate(sigma=sigma, floor=max(sigma, floor_abs), method="rayleigh mode", p99=p99)


def _upper_percentile(values: Any, q: float, backend: Backend) -> float:
    """``percentile(values, q)`` (linear interpolation) of a 1-D array, for ``q`` near 100.

    The result is NumPy's own, bit for bit. :func:`numpy.percentile` reads the
    two order statistics at rank ``q / 100 * (n - 1)`` and partitions the whole
    array to find them; on the CPU, a threshold below that rank is taken from
    a strided sample, the values at or above it are kept and sorted, and NumPy
    is asked for the percentile of an array of the same length that is sorted
    and equal to the sorted values from the threshold's rank on: the same order
    statistics at the same ranks, hence the same number, in about a third of
    the time on a whole-body volume. When the sample's threshold is not below
    the rank (or the values hold a NaN), the whole array is used.
    """
    xp = backend.xp
    count = int(values.size)
    if backend.is_gpu or count < _SAMPLED_PERCENTILE_MIN:
        return backend.scalar(xp.percentile(values, q))
    sample = values[::_PERCENTILE_SAMPLE_STEP]
    rank = int((q - _PERCENTILE_SAMPLE_MARGIN) / 100.0 * (sample.size - 1))
    # The lowest rank NumPy may read, one below its (rounded) virtual index.
    lowest_read = math.floor(q / 100.0 * (count - 1)) - 1
    if rank < 0 or lowest_read < 0:
        return backend.scalar(np.percentile(values, q))
    threshold = np.partition(sample, rank)[rank]
    top = values[values >= threshold]
    below = count - int(top.size)
    if below > lowest_read or int(np.count_nonzero(values < threshold)) != below:
        return backend.scalar(np.percentile(values, q))
    top.sort()
    same_ranks = np.empty(count, dtype=values.dtype)
    same_ranks[:below] = top[0]
    same_ranks[below:] = top
    return backend.scalar(np.percentile(same_ranks, q, overwrite_input=True))


def fit_adc(
    signal: Any,
    b_values: tuple[float, ...],
    *,
    body: Any,
    noise: NoiseEstimate,
    settings: ProcessingSettings,
    backend: Backend,
) -> AdcFit:
    """Fit the mono-exponential ADC in every voxel.

    Parameters
    ----------
    signal
        ``[b, z, y, x]`` float32 on the device, b increasing.
    b_values
        s/mm2, one per signal plane.
    body
        Boolean ``[z, y, x]`` body mask; outside it the ADC is invalid.
    noise
        From :func:`estimate_noise_sigma`.
    settings
        Uses ``adc_min_b``, ``adc_fit_iterations``, ``signal_floor_sigma``,
        ``adc_min_snr``, ``adc_max_um2s``.
    backend
        Array backend.

    Returns
    -------
    AdcFit
        ADC in um2/s (float32, 0 where invalid) and the validity mask.
    """
    xp = backend.xp
    used = fitted_b_indices(b_values, settings.adc_min_b)
    clip = max(settings.signal_floor_sigma * noise.sigma, noise.floor * 1e-3)
    b_scaled = [float(b_values[i]) / _B_SCALE for i in used]
    min_signal = max(settings.adc_min_snr * noise.sigma, noise.floor)
    if backend.is_gpu:
        return _fit_fused(
            signal,
            used=used,
            b_scaled=b_scaled,
            body=body,
            clip=clip,
            min_signal=min_signal,
            settings=settings,
            xp=xp,
        )
    # Only voxels of the body with signal at the lowest b can be valid: fit those alone
    # (a seventh of a whole-body grid). Every operation of the fit is element-wise, so a
    # voxel's ADC does not depend on which other voxels are fitted with it.
    fitted = xp.flatnonzero(body & (signal[0] > xp.float32(min_signal)))
    planes = [signal[i].ravel()[fitted] for i in used]
    slope = fit_slope(planes, b_scaled, clip=clip, settings=settings, xp=xp)
    adc_fitted = slope
    adc_fitted *= xp.float32(-_B_SCALE)  # 1e-3 mm2/s -> um2/s
    valid_fitted = xp.isfinite(adc_fitted)
    valid_fitted &= adc_fitted >= 0
    valid_fitted &= adc_fitted <= xp.float32(settings.adc_max_um2s)
    valid = xp.zeros(body.shape, dtype=bool)
    valid.ravel()[fitted] = valid_fitted
    adc = xp.zeros(body.shape, dtype=xp.float32)
    adc.ravel()[fitted] = xp.where(valid_fitted, adc_fitted, xp.float32(0.0))
    return AdcFit(adc=adc, valid=valid)


def fit_slope(
    planes: list[Any], b_scaled: list[float], *, clip: float, settings: ProcessingSettings, xp: Any
) -> Any:
    """Slope of ``ln S`` against ``b / 1000`` (float32, ``1e-3 mm2/s``, negative) per voxel.

    ``planes`` are the signals at the fitted b-values (``b_scaled``, in units of
    1000 s/mm2), float32 arrays of one shape; the result has that shape. The
    reference fit: :func:`fit_adc` applies it to the voxels that can be valid,
    and the fused CUDA kernel repeats its operations in the same order.
    """
    logs = [xp.log(xp.maximum(plane, xp.float32(clip))) for plane in planes]

    # Pass 1 weights: measured S_i^2, normalised by the first fitted plane's S^2.
    weights = [xp.exp(xp.float32(2.0) * (log - logs[0])) for log in logs]
    slope = _weighted_slope(logs, weights, b_scaled, xp)
    for _ in range(settings.adc_fit_iterations - 1):
        # Re-weight with the fitted signal: S_i / S_0 = exp(slope * (b_i - b_0)).
        bounded = xp.clip(slope, xp.float32(-_max_slope(settings)), xp.float32(0.0))
        weights = [xp.exp(xp.float32(2.0 * (b - b_scaled[0])) * bounded) for b in b_scaled]
        slope = _weighted_slope(logs, weights, b_scaled, xp)
    return slope


def _fit_fused(
    signal: Any,
    *,
    used: tuple[int, ...],
    b_scaled: list[float],
    body: Any,
    clip: float,
    min_signal: float,
    settings: ProcessingSettings,
    xp: Any,
) -> AdcFit:
    """The same fit in one CUDA kernel (:func:`processing.fused.adc_fit_kernel`).

    The NumPy path above stays the reference; the kernel repeats its float32
    operations in the same order, one voxel per thread, reading each fitted
    plane once instead of about 137 array operations over whole volumes.
    """
    kernel = adc_fit_kernel(xp, len(used))
    f32 = np.float32
    adc, valid = kernel(
        *(signal[i] for i in used),
        signal[0],
        body,
        *(f32(b) for b in b_scaled),
        *(f32(2.0 * (b - b_scaled[0])) for b in b_scaled),
        f32(clip),
        f32(min_signal),
        f32(_max_slope(settings)),
        f32(settings.adc_max_um2s),
        np.int32(max(1, settings.adc_fit_iterations)),
    )
    return AdcFit(adc=adc, valid=valid)


def _max_slope(settings: ProcessingSettings) -> float:
    return settings.adc_max_um2s / _B_SCALE


def _weighted_slope(logs: list[Any], weights: list[Any], b_scaled: list[float], xp: Any) -> Any:
    """Closed-form weighted least-squares slope of ``log`` against ``b``, voxel-wise.

    Centred form ``sum w (b - b_w)(y - y_w) / sum w (b - b_w)^2`` to avoid the
    cancellation of the textbook normal equations in float32.
    """
    total = weights[0].copy()
    b_mean = weights[0] * xp.float32(b_scaled[0])
    y_mean = weights[0] * logs[0]
    for w, b, y in zip(weights[1:], b_scaled[1:], logs[1:], strict=True):
        total += w
        b_mean += w * xp.float32(b)
        y_mean += w * y
    b_mean /= total
    y_mean /= total
    numerator = xp.zeros_like(total)
    denominator = xp.zeros_like(total)
    for w, b, y in zip(weights, b_scaled, logs, strict=True):
        db = xp.float32(b) - b_mean
        wdb = w * db
        numerator += wdb * (y - y_mean)
        denominator += wdb * db
    numerator /= denominator
    return numerator
