"""The one switch between NumPy (CPU) and CuPy (GPU).

Every array function in :mod:`processing` takes a :class:`Backend` and uses its
``xp`` (``numpy`` or ``cupy``) and ``ndimage`` (``scipy.ndimage`` or
``cupyx.scipy.ndimage``) attributes, in the "array module" style of the Python
array API. This module is the only place that imports CuPy, and it does so
lazily: a machine without CuPy never needs it, and asking for the GPU there
raises :class:`BackendUnavailableError` with an actionable message.

Data are uploaded once with :meth:`Backend.asarray`, stay on the device through
every stage, and come back once with :meth:`Backend.to_host`.

Selecting the GPU is safe: CuPy importing and a device being present is not
enough (the ``cupy-cuda12x`` wheel alone has neither NVRTC, which compiles every
CuPy kernel at run time, nor cuFFT), so :func:`gpu_status` runs a probe on the
device (a compiled elementwise kernel, an FFT, an ``ndimage`` label and filter)
once per process and caches its verdict. After a CUDA error in a job the caller
asks :func:`recheck_gpu`, which probes again and keeps the GPU off for the rest
of the process when the probe fails (a sticky context error, a lost device).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from types import ModuleType
from typing import Any

import numpy as np
import scipy.ndimage
from numpy.typing import NDArray

from processing.errors import BackendUnavailableError

__all__ = [
    "GPU_INSTALL_HINT",
    "Backend",
    "Device",
    "disable_gpu",
    "gpu_status",
    "is_device_error",
    "recheck_gpu",
    "select_backend",
    "use_gpu_index",
]

GPU_INSTALL_HINT = (
    "install the GPU extra, which brings CuPy with the CUDA libraries it loads at run time "
    "(pip install 'wbdwi-node[gpu]' = cupy-cuda12x[ctk]: nvidia-cuda-nvrtc-cu12, "
    "nvidia-cufft-cu12, ...), or the CUDA 12 toolkit, on a host with a CUDA 12 driver; "
    "or use --device cpu"
)


class Device(Enum):
    """Where processing runs: ``auto`` picks the GPU when CuPy and a device are present."""

    AUTO = "auto"
    GPU = "gpu"
    CPU = "cpu"

    @classmethod
    def coerce(cls, value: Device | str) -> Device:
        """Turn a setting or CLI string into a :class:`Device` (case-insensitive)."""
        if isinstance(value, Device):
            return value
        try:
            return cls(value.strip().lower())
        except ValueError:
            allowed = ", ".join(member.value for member in cls)
            raise ValueError(f"unknown device {value!r}; expected one of: {allowed}") from None


@dataclass(frozen=True, slots=True)
class Backend:
    """An array module and its ``ndimage`` companion.

    Attributes
    ----------
    name
        ``"cpu"`` or ``"gpu"``.
    xp
        ``numpy`` or ``cupy``.
    ndimage
        ``scipy.ndimage`` or ``cupyx.scipy.ndimage``.
    description
        Human-readable device name, e.g. ``"cpu (numpy 2.1)"`` or the GPU model.
    gpu_unused_reason
        On the CPU backend, why the GPU is not used (``"device cpu requested"``,
        or the detection's reason, e.g. CuPy not installed or no CUDA device);
        empty on the GPU backend.
    """

    name: str
    xp: Any
    ndimage: Any
    description: str
    gpu_unused_reason: str = ""

    @property
    def is_gpu(self) -> bool:
        """True when arrays live on a CUDA device."""
        return self.name == Device.GPU.value

    def asarray(self, array: NDArray[Any]) -> Any:
        """Upload a host array (no copy on the CPU backend)."""
        return self.xp.asarray(array)

    def to_host(self, array: Any) -> NDArray[Any]:
        """Download an array to a NumPy array (no copy on the CPU backend)."""
        if self.is_gpu:
            return np.asarray(array.get())
        return np.asarray(array)

    def scalar(self, value: Any) -> float:
        """A device scalar (0-d array) as a Python float."""
        return float(value.item() if hasattr(value, "item") else value)

    def synchronize(self) -> None:
        """Wait for queued device work, so that stage timings are honest."""
        if self.is_gpu:
            self.xp.cuda.get_current_stream().synchronize()


def _cpu_backend(gpu_unused_reason: str = "device cpu requested") -> Backend:
    return Backend(
        name=Device.CPU.value,
        xp=np,
        ndimage=scipy.ndimage,
        description=f"cpu (numpy {np.__version__})",
        gpu_unused_reason=gpu_unused_reason,
    )


def _import_cupy() -> tuple[ModuleType, ModuleType]:
    cupy = importlib.import_module("cupy")
    cupy_ndimage = importlib.import_module("cupyx.scipy.ndimage")
    return cupy, cupy_ndimage


_PROBE_SIZE = 64


def _probe_kernel(cupy: Any, _ndimage: Any) -> None:
    values = cupy.arange(_PROBE_SIZE, dtype=cupy.float32)
    kernel = cupy.ElementwiseKernel(
        "float32 x", "float32 y", "y = x * 2.0f + 1.0f", "wbdwi_probe_kernel"
    )
    doubled = kernel(values)
    round_trip = cupy.exp(cupy.log(values + 1.0))  # ufuncs: compiled by NVRTC too
    expected = np.arange(_PROBE_SIZE, dtype=np.float32)
    if not np.array_equal(doubled.get(), expected * 2.0 + 1.0):
        raise ArithmeticError("the elementwise kernel returned wrong values")
    if not np.allclose(round_trip.get(), expected + 1.0, rtol=1e-5):
        raise ArithmeticError("exp/log returned wrong values")


def _probe_fft(cupy: Any, _ndimage: Any) -> None:
    values = cupy.arange(_PROBE_SIZE, dtype=cupy.float64)
    back = cupy.fft.irfft(cupy.fft.rfft(values), n=_PROBE_SIZE)
    smoothed = cupy.convolve(values, cupy.ones(5, dtype=cupy.float64) / 5.0, mode="same")
    if not np.allclose(back.get(), np.arange(_PROBE_SIZE), atol=1e-9):
        raise ArithmeticError("the FFT round trip returned wrong values")
    if not np.allclose(smoothed.get()[2:-2], np.arange(_PROBE_SIZE)[2:-2], atol=1e-9):
        raise ArithmeticError("convolve returned wrong values")


def _probe_ndimage(cupy: Any, ndimage: Any) -> None:
    mask = cupy.zeros((4, 8, 8), dtype=bool)
    mask[1:3, 1:3, 1:3] = True
    mask[1:3, 5:7, 5:7] = True
    labels, count = ndimage.label(mask)
    smoothed = ndimage.gaussian_filter(mask.astype(cupy.float32), 1.0)
    distance = ndimage.distance_transform_edt(~mask, sampling=(2.0, 1.0, 1.0))
    if int(count) != 2 or int(labels.max().item()) != 2:
        raise ArithmeticError(f"label found {int(count)} components instead of 2")
    if not 0.0 < float(smoothed.sum().item()) < 17.0:
        raise ArithmeticError("gaussian_filter returned wrong values")
    if float(distance[1, 1, 1].item()) != 0.0:
        raise ArithmeticError("distance_transform_edt returned wrong values")


# What each probe needs, for the message when it fails.
_PROBES: tuple[tuple[str, str, Callable[[Any, Any], None]], ...] = (
    (
        "compiling and running a kernel",
        "NVRTC, CUDA's run-time compiler (nvidia-cuda-nvrtc-cu12)",
        _probe_kernel,
    ),
    ("an FFT", "cuFFT (nvidia-cufft-cu12)", _probe_fft),
    (
        "cupyx.scipy.ndimage (label, gaussian_filter, distance_transform_edt)",
        "NVRTC (nvidia-cuda-nvrtc-cu12)",
        _probe_ndimage,
    ),
)


def _probe_gpu() -> tuple[bool, str]:
    """Import CuPy, find a device and run every probe on it (no cache)."""
    try:
        cupy, cupy_ndimage = _import_cupy()
    except ImportError as error:
        return False, f"CuPy is not installed ({error}); {GPU_INSTALL_HINT}"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as error:  # CuPy raises CUDARuntimeError, not importable without CUDA
        return False, f"CuPy is installed but no CUDA device is usable ({error}); use --device cpu"
    if count < 1:
        return False, "CuPy is installed but reports no CUDA device; use --device cpu"
    try:
        properties = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    except Exception as error:
        return False, f"the CUDA device cannot be queried ({error}); use --device cpu"
    name = properties["name"]
    label = name.decode() if isinstance(name, bytes) else str(name)
    for what, needs, probe in _PROBES:
        try:
            probe(cupy, cupy_ndimage)
            cupy.cuda.get_current_stream().synchronize()
        except Exception as error:  # any failure means: do not process on this GPU
            return False, (
                f"CuPy sees {label} but {what} failed on it "
                f"({type(error).__name__}: {error}); this needs {needs}; {GPU_INSTALL_HINT}"
            )
    return True, f"gpu ({label}, cupy {cupy.__version__})"


def use_gpu_index(index: int) -> str | None:
    """Make CUDA device ``index`` the current one for the calling thread; the reason when not.

    CuPy's current device is per thread, so each worker thread of one process
    can use its own GPU. Indexes count the devices this process sees (after
    ``CUDA_VISIBLE_DEVICES``, which a worker process sets instead).
    """
    try:
        cupy, _ndimage = _import_cupy()
    except ImportError as error:
        return f"GPU {index} cannot be used: CuPy is not installed ({error})"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
        if not 0 <= index < count:
            return f"GPU {index} does not exist: this process sees {count} (0 to {count - 1})"
        cupy.cuda.Device(index).use()
    except Exception as error:  # CuPy raises CUDARuntimeError, not importable without CUDA
        return f"GPU {index} cannot be selected ({type(error).__name__}: {error})"
    return None


class _GpuVerdict:
    """The process's cached probe verdict (``None`` until the first probe), under a lock."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.status: tuple[bool, str] | None = None


_VERDICT = _GpuVerdict()


def gpu_status(*, refresh: bool = False) -> tuple[bool, str]:
    """Whether the GPU backend can run a job, and why not when it cannot.

    The first call imports CuPy and runs the probes on the device (a compiled
    elementwise kernel and ufuncs, an FFT and ``convolve``, an ``ndimage``
    label, Gaussian filter and distance transform); the verdict is cached for
    the process. A failed probe names what is missing (NVRTC, cuFFT).

    Parameters
    ----------
    refresh
        Probe again instead of returning the cached verdict.

    Returns
    -------
    tuple of (bool, str)
        ``(True, "gpu (device name, cupy version)")`` when every probe passed,
        else ``(False, reason)``.
    """
    with _VERDICT.lock:
        if _VERDICT.status is None or refresh:
            _VERDICT.status = _probe_gpu()
        return _VERDICT.status


def recheck_gpu(error: BaseException) -> tuple[bool, str]:
    """After a job failed on the GPU with ``error``: is the GPU still usable?

    Frees CuPy's memory pools (an out-of-memory error leaves the device usable)
    and probes again. When the probe fails (a sticky CUDA error poisons the
    context until the process ends; a device fell off the bus), the GPU stays
    off for the rest of the process: :func:`gpu_status` keeps returning the
    failure and ``auto`` selects the CPU.

    Returns
    -------
    tuple of (bool, str)
        The new verdict, as :func:`gpu_status`.
    """
    try:
        cupy, _ = _import_cupy()
        cupy.get_default_memory_pool().free_all_blocks()
        cupy.get_default_pinned_memory_pool().free_all_blocks()
    except Exception:  # the pools may be unreachable in a broken context; the probe decides
        pass
    usable, detail = gpu_status(refresh=True)
    if usable:
        return usable, detail
    reason = (
        f"GPU disabled after a job failed on it ({type(error).__name__}: {error}); "
        f"the probe then failed: {detail}"
    )
    disable_gpu(reason)
    return False, reason


def disable_gpu(reason: str) -> None:
    """Keep the GPU off for the rest of the process; ``auto`` selects the CPU, saying ``reason``."""
    with _VERDICT.lock:
        _VERDICT.status = (False, reason)


_DEVICE_ERROR_MODULES = ("cupy", "cupyx", "cupy_backends", "cuda")
_DEVICE_ERROR_WORDS = ("cuda", "cupy", "nvrtc", "cufft", "cublas", "cusolver", "curand")


def is_device_error(error: BaseException) -> bool:
    """Whether ``error`` (or an exception it was raised from) comes from CUDA or CuPy.

    True for CuPy's own classes (``CUDARuntimeError``, ``CUDADriverError``,
    ``CuFFTError``, ``NVRTCError``, ``CompileException``, ``OutOfMemoryError``)
    and for the plain ``RuntimeError``/``OSError`` CuPy raises when it cannot
    load a CUDA library (``CuPy failed to load libnvrtc.so.12``).
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        for cls in type(current).__mro__:
            if cls.__module__.split(".")[0] in _DEVICE_ERROR_MODULES:
                return True
        message = str(current).lower()
        if isinstance(current, RuntimeError | OSError) and any(
            word in message for word in _DEVICE_ERROR_WORDS
        ):
            return True
        current = current.__cause__ or current.__context__
    return False


def select_backend(device: Device | str = Device.AUTO) -> Backend:
    """Pick the backend for ``device``.

    Parameters
    ----------
    device
        ``auto`` uses the GPU when :func:`gpu_status` says it can run a job,
        else the CPU (with the reason in ``gpu_unused_reason``); ``gpu``
        insists on the GPU; ``cpu`` always uses NumPy/SciPy.

    Raises
    ------
    BackendUnavailableError
        ``gpu`` was requested and CuPy, a device or a CUDA library it needs is
        missing (the message names what to install).
    """
    wanted = Device.coerce(device)
    if wanted is Device.CPU:
        return _cpu_backend()
    usable, detail = gpu_status()
    if not usable:
        if wanted is Device.GPU:
            raise BackendUnavailableError(f"--device gpu requested but {detail}")
        return _cpu_backend(gpu_unused_reason=detail)
    cupy, cupy_ndimage = _import_cupy()
    return Backend(name=Device.GPU.value, xp=cupy, ndimage=cupy_ndimage, description=detail)
