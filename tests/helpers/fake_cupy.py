"""A NumPy-backed stand-in for CuPy that fails where a half-installed or broken CUDA host fails.

:func:`install_fake_cupy` puts modules named ``cupy``, ``cupyx``,
``cupyx.scipy`` and ``cupyx.scipy.ndimage`` into ``sys.modules`` (through
``monkeypatch``, so they go away after the test) and resets the cached GPU
verdict of :mod:`processing.backend`. The stand-in covers what the device
probe and the node's device handling use; it raises the way CuPy 14 raises:

- a missing NVRTC (the ``cupy-cuda12x`` wheel without ``[ctk]``): every
  kernel and ufunc raises ``RuntimeError("CuPy failed to load libnvrtc.so.12:
  ...")`` at its first call, not at import;
- a missing cuFFT: FFTs and floating-point ``convolve`` raise the same way for
  ``libcufft.so.11``;
- no device: ``getDeviceCount`` raises ``CUDARuntimeError``;
- a sticky error (:meth:`FakeGpu.break_context`): every later device call
  raises ``CUDARuntimeError`` with the same message, as a poisoned CUDA
  context does until the process ends.
"""

from __future__ import annotations

import re
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import scipy.ndimage

import processing.backend as backend_module

__all__ = ["CUDARuntimeError", "FakeGpu", "OutOfMemoryError", "install_fake_cupy"]


class CUDARuntimeError(RuntimeError):
    """Stands for ``cupy_backends.cuda.api.runtime.CUDARuntimeError``."""


CUDARuntimeError.__module__ = "cupy_backends.cuda.api.runtime"


class OutOfMemoryError(MemoryError):
    """Stands for ``cupy.cuda.memory.OutOfMemoryError`` (not sticky)."""


OutOfMemoryError.__module__ = "cupy.cuda.memory"


class FakeArray(np.ndarray):
    """A "device" array: ``get()`` downloads it, as ``cupy.ndarray.get`` does."""

    def get(self) -> np.ndarray[Any, Any]:
        return np.array(self).view(np.ndarray)


def _device(value: Any) -> Any:
    return np.asarray(value).view(FakeArray)


_LIBRARY_FILES = {"nvrtc": "libnvrtc.so.12", "cufft": "libcufft.so.11"}


@dataclass
class FakeGpu:
    """What the stand-in lacks or suffers, and what it was asked."""

    missing: set[str] = field(default_factory=set)  # "nvrtc", "cufft"
    devices: int = 1
    sticky_error: str = ""
    calls: dict[str, int] = field(default_factory=dict)

    def break_context(
        self, message: str = "cudaErrorIllegalAddress: an illegal memory access was encountered"
    ) -> CUDARuntimeError:
        """Poison the context (every later call raises); returns the error to raise now."""
        self.sticky_error = message
        return CUDARuntimeError(message)

    def check(self, call: str, *libraries: str) -> None:
        """Count ``call``; raise as CuPy would when the context is broken or a library is absent."""
        self.calls[call] = self.calls.get(call, 0) + 1
        if self.sticky_error:
            raise CUDARuntimeError(self.sticky_error)
        for library in libraries:
            if library in self.missing:
                name = _LIBRARY_FILES[library]
                raise RuntimeError(
                    f"CuPy failed to load {name}: OSError: {name}: cannot open shared object "
                    "file: No such file or directory"
                )


def _build_modules(gpu: FakeGpu) -> dict[str, types.ModuleType]:
    cupy = types.ModuleType("cupy")
    cupy.__version__ = "14.2.0+fake"  # type: ignore[attr-defined]
    for name in ("float32", "float64", "int32", "int64", "uint8", "bool_"):
        setattr(cupy, name, getattr(np, name))

    def creator(function: Any) -> Any:
        def create(*args: Any, **kwargs: Any) -> Any:
            gpu.check(function.__name__)
            return _device(function(*args, **kwargs))

        return create

    for name in ("arange", "zeros", "ones", "asarray", "empty"):
        setattr(cupy, name, creator(getattr(np, name)))

    def ufunc(function: Any) -> Any:
        def apply(*args: Any, **kwargs: Any) -> Any:
            gpu.check(function.__name__, "nvrtc")
            return _device(function(*args, **kwargs))

        return apply

    for name in ("exp", "log", "sqrt"):
        setattr(cupy, name, ufunc(getattr(np, name)))

    class ElementwiseKernel:
        """Compiled at the first call: the operation, in C, evaluated on NumPy arrays."""

        def __init__(self, in_params: str, out_params: str, operation: str, name: str) -> None:
            self.inputs = [p.split()[-1] for p in in_params.split(",")]
            self.output = out_params.rsplit(maxsplit=1)[-1]
            self.operation = re.sub(r"(\d)f\b", r"\1", operation)

        def __call__(self, *arrays: Any) -> Any:
            gpu.check("ElementwiseKernel", "nvrtc")
            scope: dict[str, Any] = dict(zip(self.inputs, arrays, strict=True))
            exec(self.operation, {}, scope)  # the probe's one-line C expression is valid Python
            return _device(scope[self.output])

    cupy.ElementwiseKernel = ElementwiseKernel  # type: ignore[attr-defined]

    def convolve(a: Any, v: Any, mode: str = "full") -> Any:
        floating = np.asarray(a).dtype.kind == "f" or np.asarray(v).dtype.kind == "f"
        gpu.check("convolve", "nvrtc", *(("cufft",) if floating else ()))
        return _device(np.convolve(a, v, mode=mode))  # type: ignore[call-overload]

    cupy.convolve = convolve  # type: ignore[attr-defined]

    fft = types.ModuleType("cupy.fft")

    def fft_function(function: Any) -> Any:
        def transform(*args: Any, **kwargs: Any) -> Any:
            gpu.check(f"fft.{function.__name__}", "cufft")
            return _device(function(*args, **kwargs))

        return transform

    fft.rfft = fft_function(np.fft.rfft)  # type: ignore[attr-defined]
    fft.irfft = fft_function(np.fft.irfft)  # type: ignore[attr-defined]
    cupy.fft = fft  # type: ignore[attr-defined]

    class Stream:
        def synchronize(self) -> None:
            gpu.check("synchronize")

    class Device:
        id = 0

    def get_device_count() -> int:
        gpu.check("getDeviceCount")
        if gpu.devices < 1:
            raise CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
        return gpu.devices

    def get_device_properties(device: int) -> dict[str, Any]:
        gpu.check("getDeviceProperties")
        return {"name": b"Fake H200"}

    class Pool:
        def free_all_blocks(self) -> None:
            gpu.calls["free_all_blocks"] = gpu.calls.get("free_all_blocks", 0) + 1

    cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(
            getDeviceCount=get_device_count, getDeviceProperties=get_device_properties
        ),
        Device=Device,
        get_current_stream=Stream,
    )
    cupy.cuda = cuda  # type: ignore[attr-defined]
    cupy.get_default_memory_pool = Pool  # type: ignore[attr-defined]
    cupy.get_default_pinned_memory_pool = Pool  # type: ignore[attr-defined]

    ndimage = types.ModuleType("cupyx.scipy.ndimage")

    def label(mask: Any, structure: Any = None) -> tuple[Any, int]:
        gpu.check("ndimage.label", "nvrtc")
        labels, count = scipy.ndimage.label(np.asarray(mask), structure=structure)
        return _device(labels), int(count)

    def filtered(function: Any) -> Any:
        def apply(*args: Any, **kwargs: Any) -> Any:
            gpu.check(f"ndimage.{function.__name__}", "nvrtc")
            plain = [np.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
            return _device(function(*plain, **kwargs))

        return apply

    ndimage.label = label  # type: ignore[attr-defined]
    for name in ("gaussian_filter", "distance_transform_edt", "uniform_filter"):
        setattr(ndimage, name, filtered(getattr(scipy.ndimage, name)))
    cupyx = types.ModuleType("cupyx")
    cupyx_scipy = types.ModuleType("cupyx.scipy")
    cupyx_scipy.ndimage = ndimage  # type: ignore[attr-defined]
    cupyx.scipy = cupyx_scipy  # type: ignore[attr-defined]
    return {
        "cupy": cupy,
        "cupyx": cupyx,
        "cupyx.scipy": cupyx_scipy,
        "cupyx.scipy.ndimage": ndimage,
    }


def install_fake_cupy(monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu | None = None) -> FakeGpu:
    """Make ``import cupy`` give the stand-in for this test; the GPU verdict is probed afresh."""
    gpu = gpu or FakeGpu()
    for name, module in _build_modules(gpu).items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(backend_module._VERDICT, "status", None)
    return gpu
