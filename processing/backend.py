"""The one switch between NumPy (CPU) and CuPy (GPU).

Every array function in :mod:`processing` takes a :class:`Backend` and uses its
``xp`` (``numpy`` or ``cupy``) and ``ndimage`` (``scipy.ndimage`` or
``cupyx.scipy.ndimage``) attributes, in the "array module" style of the Python
array API. This module is the only place that imports CuPy, and it does so
lazily: a machine without CuPy never needs it, and asking for the GPU there
raises :class:`BackendUnavailableError` with an actionable message.

Data are uploaded once with :meth:`Backend.asarray`, stay on the device through
every stage, and come back once with :meth:`Backend.to_host`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import Enum
from types import ModuleType
from typing import Any

import numpy as np
import scipy.ndimage
from numpy.typing import NDArray

__all__ = [
    "Backend",
    "BackendUnavailableError",
    "Device",
    "gpu_status",
    "select_backend",
]


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


class BackendUnavailableError(RuntimeError):
    """The GPU was requested but CuPy or a CUDA device is not usable."""


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


def gpu_status() -> tuple[bool, str]:
    """Whether the GPU backend can be used, and why not when it cannot.

    Returns
    -------
    tuple of (bool, str)
        ``(True, device name)`` when CuPy imports and sees at least one CUDA
        device, else ``(False, reason)``.
    """
    try:
        cupy, _ = _import_cupy()
    except ImportError as error:
        return False, (
            f"CuPy is not installed ({error}); install the GPU extra "
            "(pip install 'wbdwi-node[gpu]') on a machine with a CUDA 12 driver, "
            "or use --device cpu"
        )
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except Exception as error:  # CuPy raises CUDARuntimeError, not importable without CUDA
        return False, f"CuPy is installed but no CUDA device is usable ({error}); use --device cpu"
    if count < 1:
        return False, "CuPy is installed but reports no CUDA device; use --device cpu"
    properties = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = properties["name"]
    label = name.decode() if isinstance(name, bytes) else str(name)
    return True, f"gpu ({label}, cupy {cupy.__version__})"


def select_backend(device: Device | str = Device.AUTO) -> Backend:
    """Pick the backend for ``device``.

    Parameters
    ----------
    device
        ``auto`` uses the GPU when CuPy and a CUDA device are present, else the
        CPU; ``gpu`` insists on the GPU; ``cpu`` always uses NumPy/SciPy.

    Raises
    ------
    BackendUnavailableError
        ``gpu`` was requested and CuPy or a device is missing.
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
