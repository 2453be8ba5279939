"""Fused CUDA kernels of the voxel-wise stages, each with its NumPy equivalent.

On the GPU, :func:`processing.adc.fit_adc` written with CuPy array operations
launches about 137 kernels and moves about 26 GB on the large preset (every
intermediate plane is written to and read back from device memory). The
kernels here do the same arithmetic in one pass per voxel:

- :func:`adc_fit_kernel`: the clipped logarithms, the iteratively re-weighted
  least-squares slope, the ADC and its validity mask (one read of the fitted
  planes, one write of the ADC and the mask);
- :func:`computed_b_kernel`: one computed-b image (``valid ? exp(k * ADC) * S : 0``).

The C source follows the NumPy reference (:func:`processing.adc.fit_adc`,
:func:`processing.computed_b.compute_high_b`) operation by operation, in
float32 and in the same order, compiled without FMA contraction
(``--fmad=false``), so that a GPU result differs from the CPU only where
CUDA's ``logf``/``expf`` round differently from NumPy's (within 2 ulp).

Each kernel's NumPy equivalent, :data:`NUMPY_EQUIVALENTS`, is the same
element-wise program written with NumPy, registered under the kernel's name:
the NumPy-backed CuPy stand-in of the tests (``tests/helpers/cupy_standin.py``) runs
it in place of the CUDA source, so that the GPU path (argument order, planes,
scalars, validity rules) is compared with the CPU reference on every CPU
machine; the CUDA source itself is compared on a GPU (``tests/gpu``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "NUMPY_EQUIVALENTS",
    "adc_fit_kernel",
    "adc_fit_name",
    "computed_b_kernel",
]

_OPTIONS = ("--fmad=false",)
_COMPUTED_B_NAME = "wbdwi_computed_b"


def adc_fit_name(planes: int) -> str:
    """Kernel name of the ADC fit over ``planes`` fitted b-values."""
    return f"wbdwi_adc_fit_{planes}"


def _adc_fit_source(planes: int) -> tuple[str, str, str]:
    """``(in_params, out_params, operation)`` of the fused ADC fit over ``planes`` planes."""
    n = planes
    signals = ", ".join(f"float32 s{i}" for i in range(n))
    bs = ", ".join(f"float32 b{i}" for i in range(n))
    ds = ", ".join(f"float32 d{i}" for i in range(n))
    in_params = (
        f"{signals}, float32 first, bool body, {bs}, {ds}, float32 clip, "
        "float32 min_signal, float32 max_slope, float32 adc_max, int32 iterations"
    )
    out_params = "float32 adc, bool valid"
    fill = "\n".join(f"s[{i}] = s{i}; b[{i}] = b{i}; d[{i}] = d{i};" for i in range(n))
    operation = f"""
float s[{n}], b[{n}], d[{n}], y[{n}], w[{n}];
{fill}
for (int p = 0; p < {n}; ++p) {{
    float clipped = (s[p] > clip || s[p] != s[p]) ? s[p] : clip;  /* np.maximum */
    y[p] = logf(clipped);
}}
for (int p = 0; p < {n}; ++p) {{
    w[p] = expf(2.0f * (y[p] - y[0]));
}}
float slope = 0.0f;
for (int step = 0; step < iterations; ++step) {{
    if (step > 0) {{
        float bounded = slope < -max_slope ? -max_slope : (slope > 0.0f ? 0.0f : slope);
        for (int p = 0; p < {n}; ++p) {{
            w[p] = expf(d[p] * bounded);
        }}
    }}
    float total = w[0];
    float b_mean = w[0] * b[0];
    float y_mean = w[0] * y[0];
    for (int p = 1; p < {n}; ++p) {{
        total += w[p];
        b_mean += w[p] * b[p];
        y_mean += w[p] * y[p];
    }}
    b_mean /= total;
    y_mean /= total;
    float numerator = 0.0f;
    float denominator = 0.0f;
    for (int p = 0; p < {n}; ++p) {{
        float db = b[p] - b_mean;
        float wdb = w[p] * db;
        numerator += wdb * (y[p] - y_mean);
        denominator += wdb * db;
    }}
    slope = numerator / denominator;
}}
float value = slope * -1000.0f;
bool ok = body && (first > min_signal) && isfinite(value) && (value >= 0.0f)
    && (value <= adc_max);
valid = ok;
adc = ok ? value : 0.0f;
"""
    return in_params, out_params, operation


def _adc_fit_numpy(*arguments: Any) -> tuple[NDArray[np.float32], NDArray[np.bool_]]:
    """The fused ADC fit's program, element-wise in NumPy (arguments as the kernel's)."""
    n = (len(arguments) - 7) // 3
    signals = arguments[:n]
    first, body = arguments[n], arguments[n + 1]
    b = [np.float32(v) for v in arguments[n + 2 : 2 * n + 2]]
    d = [np.float32(v) for v in arguments[2 * n + 2 : 3 * n + 2]]
    clip, min_signal, max_slope, adc_max = (np.float32(v) for v in arguments[3 * n + 2 : 3 * n + 6])
    iterations = int(arguments[3 * n + 6])
    y = [np.log(np.maximum(s, clip)) for s in signals]
    w = [np.exp(np.float32(2.0) * (yi - y[0])) for yi in y]
    slope = np.zeros_like(y[0])
    for step in range(iterations):
        if step > 0:
            bounded = np.clip(slope, -max_slope, np.float32(0.0))
            w = [np.exp(di * bounded) for di in d]
        total = w[0].copy()
        b_mean = w[0] * b[0]
        y_mean = w[0] * y[0]
        for i in range(1, n):
            total += w[i]
            b_mean += w[i] * b[i]
            y_mean += w[i] * y[i]
        b_mean /= total
        y_mean /= total
        numerator = np.zeros_like(total)
        denominator = np.zeros_like(total)
        for i in range(n):
            db = b[i] - b_mean
            wdb = w[i] * db
            numerator += wdb * (y[i] - y_mean)
            denominator += wdb * db
        slope = numerator / denominator
    value = slope * np.float32(-1000.0)
    ok = body & (first > min_signal) & np.isfinite(value) & (value >= 0) & (value <= adc_max)
    return np.where(ok, value, np.float32(0.0)).astype(np.float32), ok


def _computed_b_numpy(
    signal_ref: NDArray[np.float32], adc: NDArray[np.float32], valid: NDArray[np.bool_], k: Any
) -> NDArray[np.float32]:
    """The computed-b kernel's program in NumPy: ``valid ? exp(adc * k) * signal_ref : 0``."""
    image = np.exp(adc * np.float32(k)) * signal_ref
    return np.where(valid, image, np.float32(0.0)).astype(np.float32)


NUMPY_EQUIVALENTS: dict[str, Callable[..., Any]] = {
    _COMPUTED_B_NAME: _computed_b_numpy,
    **{adc_fit_name(n): _adc_fit_numpy for n in range(2, 33)},
}


@functools.lru_cache(maxsize=64)
def adc_fit_kernel(xp: Any, planes: int) -> Any:
    """The fused ADC fit over ``planes`` fitted b-values (compiled at its first call)."""
    in_params, out_params, operation = _adc_fit_source(planes)
    return xp.ElementwiseKernel(
        in_params, out_params, operation, adc_fit_name(planes), options=_OPTIONS
    )


@functools.lru_cache(maxsize=8)
def computed_b_kernel(xp: Any) -> Any:
    """``image = valid ? expf(adc * k) * signal_ref : 0`` (compiled at its first call)."""
    return xp.ElementwiseKernel(
        "float32 signal_ref, float32 adc, bool valid, float32 k",
        "float32 image",
        "image = valid ? expf(adc * k) * signal_ref : 0.0f;",
        _COMPUTED_B_NAME,
        options=_OPTIONS,
    )
