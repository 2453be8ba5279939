"""A NumPy-backed CuPy that refuses what CuPy refuses, to run the GPU path on any CPU.

:func:`install_cupy_standin` puts ``cupy`` and ``cupyx.scipy.ndimage`` modules
into ``sys.modules`` (through ``monkeypatch``) whose arrays are
:class:`DeviceArray`: they compute with NumPy, but, like ``cupy.ndarray``,

- cannot be turned into a NumPy array implicitly (``np.asarray``, SciPy,
  anything that calls ``__array__``): ``TypeError``, use ``.get()``;
- do not mix with NumPy arrays in arithmetic or in ``cupy`` functions
  (``TypeError: Unsupported type <class 'numpy.ndarray'>``), except where
  CuPy takes host data (``cupy.asarray``, index arrays, scalars);
- give 0-d device arrays, not Python or NumPy scalars, from reductions, and
  refuse ``__index__`` (``range(x.sum())`` fails as on a GPU);
- reach ``cupyx.scipy.ndimage`` only as device arrays.

:func:`process_exam` with ``device="gpu"`` then runs every stage through
the same calls as on a GPU. A NumPy-only call in the GPU path fails here, on
every CPU machine, in ``make test``; and since the arithmetic is NumPy's, the
results must equal the CPU backend's exactly. The device probe of
:mod:`processing.backend` passes (a kernel, an FFT and ``ndimage`` run).
"""

from __future__ import annotations

import operator
import re
import sys
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import scipy.ndimage

import processing.backend as backend_module
from processing.fused import NUMPY_EQUIVALENTS

__all__ = ["DeviceArray", "install_cupy_standin"]

_IMPLICIT = (
    "Implicit conversion to a NumPy array is not allowed. "
    "Please use `.get()` to construct a NumPy array explicitly."
)


def _refuse_host(value: Any) -> None:
    if isinstance(value, np.ndarray) and value.ndim > 0:
        raise TypeError(f"Unsupported type {type(value)}")


def _unwrap(value: Any, *, allow_host: bool = False) -> Any:
    """Device arrays to their NumPy data; host arrays refused unless ``allow_host``."""
    if isinstance(value, DeviceArray):
        return value.data
    if isinstance(value, list | tuple):
        return type(value)(_unwrap(v, allow_host=allow_host) for v in value)
    if not allow_host:
        _refuse_host(value)
    return value


def _unwrap_index(key: Any) -> Any:
    """Index keys may hold device arrays, host arrays, slices, ints (as CuPy allows)."""
    if isinstance(key, DeviceArray):
        return key.data
    if isinstance(key, tuple):
        return tuple(_unwrap_index(k) for k in key)
    return key


def _wrap(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic):
        return DeviceArray(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _binary(function: Callable[[Any, Any], Any], reflected: bool = False) -> Any:
    def method(self: DeviceArray, other: Any) -> Any:
        if isinstance(other, np.ndarray) and other.ndim > 0:
            raise TypeError(f"Unsupported type {type(other)}")
        theirs = other.data if isinstance(other, DeviceArray) else other
        if reflected:
            return _wrap(function(theirs, self.data))
        return _wrap(function(self.data, theirs))

    return method


def _inplace(function: Callable[[Any, Any], Any]) -> Any:
    def method(self: DeviceArray, other: Any) -> DeviceArray:
        if isinstance(other, np.ndarray) and other.ndim > 0:
            raise TypeError(f"Unsupported type {type(other)}")
        theirs = other.data if isinstance(other, DeviceArray) else other
        function(self.data, theirs)
        return self

    return method


class DeviceArray:
    """An array "on the device": NumPy inside, CuPy's rules outside."""

    __slots__ = ("data",)
    __array_priority__ = 100.0

    def __init__(self, data: np.ndarray[Any, Any]) -> None:
        self.data = data

    # ---------------------------------------------------------------- host transfer
    def get(self) -> np.ndarray[Any, Any]:
        return self.data.copy()

    def item(self) -> Any:
        return self.data.item()

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        # NumPy ufuncs on CuPy arrays dispatch to CuPy's: same rules as cupy functions.
        arguments = [_unwrap(i) for i in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(_unwrap(o) for o in kwargs["out"])
        return _wrap(getattr(ufunc, method)(*arguments, **kwargs))

    def __array_function__(self, function: Any, types: Any, args: Any, kwargs: Any) -> Any:
        return _wrap(function(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))

    def __index__(self) -> int:
        raise TypeError("a device scalar cannot be used as an index; use int() or .item()")

    def __int__(self) -> int:
        return int(self.data)

    def __float__(self) -> float:
        return float(self.data)

    def __bool__(self) -> bool:
        return bool(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self) -> Any:
        return (_wrap(row) for row in self.data)

    def __repr__(self) -> str:
        return f"DeviceArray({self.data!r})"

    # ---------------------------------------------------------------- indexing
    def __getitem__(self, key: Any) -> Any:
        return _wrap(self.data[_unwrap_index(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        self.data[_unwrap_index(key)] = _unwrap(value, allow_host=True)

    # ---------------------------------------------------------------- attributes and methods
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def dtype(self) -> Any:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def nbytes(self) -> int:
        return self.data.nbytes

    @property
    def T(self) -> DeviceArray:  # noqa: N802 - NumPy's name
        return DeviceArray(self.data.T)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # no __array_interface__, __array_struct__, buffer: no host view
            raise AttributeError(name)
        attribute = getattr(self.data, name)
        if not callable(attribute):
            return _wrap(attribute)

        def method(*args: Any, **kwargs: Any) -> Any:
            return _wrap(attribute(*_unwrap(args), **{k: _unwrap(v) for k, v in kwargs.items()}))

        return method

    __add__ = _binary(operator.add)
    __radd__ = _binary(operator.add, reflected=True)
    __sub__ = _binary(operator.sub)
    __rsub__ = _binary(operator.sub, reflected=True)
    __mul__ = _binary(operator.mul)
    __rmul__ = _binary(operator.mul, reflected=True)
    __truediv__ = _binary(operator.truediv)
    __rtruediv__ = _binary(operator.truediv, reflected=True)
    __floordiv__ = _binary(operator.floordiv)
    __rfloordiv__ = _binary(operator.floordiv, reflected=True)
    __mod__ = _binary(operator.mod)
    __rmod__ = _binary(operator.mod, reflected=True)
    __pow__ = _binary(operator.pow)
    __rpow__ = _binary(operator.pow, reflected=True)
    __matmul__ = _binary(operator.matmul)
    __and__ = _binary(operator.and_)
    __rand__ = _binary(operator.and_, reflected=True)
    __or__ = _binary(operator.or_)
    __ror__ = _binary(operator.or_, reflected=True)
    __xor__ = _binary(operator.xor)
    __rxor__ = _binary(operator.xor, reflected=True)
    __lshift__ = _binary(operator.lshift)
    __rshift__ = _binary(operator.rshift)
    __lt__ = _binary(operator.lt)
    __le__ = _binary(operator.le)
    __gt__ = _binary(operator.gt)
    __ge__ = _binary(operator.ge)
    __eq__ = _binary(operator.eq)
    __ne__ = _binary(operator.ne)
    __divmod__ = _binary(divmod)
    __iadd__ = _inplace(operator.iadd)
    __isub__ = _inplace(operator.isub)
    __imul__ = _inplace(operator.imul)
    __itruediv__ = _inplace(operator.itruediv)
    __ifloordiv__ = _inplace(operator.ifloordiv)
    __imod__ = _inplace(operator.imod)
    __ipow__ = _inplace(operator.ipow)
    __iand__ = _inplace(operator.iand)
    __ior__ = _inplace(operator.ior)
    __ixor__ = _inplace(operator.ixor)
    __hash__ = None  # type: ignore[assignment]

    def __neg__(self) -> DeviceArray:
        return DeviceArray(-self.data)

    def __pos__(self) -> DeviceArray:
        return DeviceArray(+self.data)

    def __abs__(self) -> DeviceArray:
        return DeviceArray(abs(self.data))

    def __invert__(self) -> DeviceArray:
        return DeviceArray(~self.data)


# cupy functions that take host data (everything else refuses NumPy arrays).
_TAKES_HOST = {"asarray", "array", "ascontiguousarray", "full", "zeros", "ones", "empty"}


def _device_function(function: Callable[..., Any], *, takes_host: bool = False) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        arguments = _unwrap(args, allow_host=takes_host)
        keywords = {k: _unwrap(v, allow_host=takes_host) for k, v in kwargs.items()}
        return _wrap(function(*arguments, **keywords))

    call.__name__ = getattr(function, "__name__", "function")
    return call


class _Stream:
    def synchronize(self) -> None:
        pass


class _Device:
    id = 0


class _Pool:
    def free_all_blocks(self) -> None:
        pass


class _ElementwiseKernel:
    """An elementwise kernel run by NumPy.

    A kernel of :mod:`processing.fused` runs the NumPy program registered
    under its name in ``NUMPY_EQUIVALENTS`` (the CUDA source cannot run here;
    the arguments are checked against the declared parameters, device arrays
    only, as CuPy would); any other kernel must be a one-line C expression
    that is valid Python (the device probe's).
    """

    def __init__(
        self,
        in_params: str,
        out_params: str,
        operation: str,
        name: str,
        options: tuple[str, ...] = (),
        **_kwargs: Any,
    ) -> None:
        self.inputs = [p.split()[-1] for p in in_params.split(",")]
        self.outputs = [p.split()[-1] for p in out_params.split(",")]
        self.output = out_params.rsplit(maxsplit=1)[-1]
        self.operation = re.sub(r"(\d)f\b", r"\1", operation)
        self.equivalent = NUMPY_EQUIVALENTS.get(name)

    def __call__(self, *arrays: Any) -> Any:
        if len(arrays) != len(self.inputs):
            raise TypeError(f"Wrong number of arguments: {len(arrays)} for {len(self.inputs)}")
        arguments = _unwrap(arrays)
        if self.equivalent is not None:
            if not any(isinstance(a, DeviceArray) for a in arrays):
                raise TypeError("an elementwise kernel needs at least one cupy.ndarray argument")
            result = self.equivalent(*arguments)
            if len(self.outputs) == 1:
                return _wrap(np.asarray(result))
            return tuple(_wrap(np.asarray(r)) for r in result)
        scope: dict[str, Any] = dict(zip(self.inputs, arguments, strict=True))
        exec(self.operation, {}, scope)  # the probe's one-line C expression is valid Python
        return _wrap(scope[self.output])


def _cupy_module() -> types.ModuleType:
    cupy = types.ModuleType("cupy")
    cupy.__version__ = "14.2.0+numpy-standin"  # type: ignore[attr-defined]
    cupy.ndarray = DeviceArray  # type: ignore[attr-defined]

    def module_getattr(name: str) -> Any:
        attribute = getattr(np, name)
        if isinstance(attribute, type) or not callable(attribute):
            return attribute  # dtypes, constants, finfo
        return _device_function(attribute, takes_host=name in _TAKES_HOST)

    cupy.__getattr__ = module_getattr  # type: ignore[method-assign]
    cupy.finfo = np.finfo  # type: ignore[attr-defined]
    cupy.iinfo = np.iinfo  # type: ignore[attr-defined]
    cupy.asnumpy = lambda a: a.get() if isinstance(a, DeviceArray) else np.asarray(a)  # type: ignore[attr-defined]
    cupy.ElementwiseKernel = _ElementwiseKernel  # type: ignore[attr-defined]
    fft = types.ModuleType("cupy.fft")
    fft.__getattr__ = lambda name: _device_function(getattr(np.fft, name))  # type: ignore[method-assign]
    cupy.fft = fft  # type: ignore[attr-defined]
    cupy.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        runtime=types.SimpleNamespace(
            getDeviceCount=lambda: 1,
            getDeviceProperties=lambda device: {"name": b"NumPy stand-in"},
        ),
        Device=_Device,
        get_current_stream=_Stream,
    )
    cupy.get_default_memory_pool = _Pool  # type: ignore[attr-defined]
    cupy.get_default_pinned_memory_pool = _Pool  # type: ignore[attr-defined]
    return cupy


def _ndimage_function(function: Callable[..., Any]) -> Any:
    def call(*args: Any, **kwargs: Any) -> Any:
        if args and not isinstance(args[0], DeviceArray):
            raise TypeError(
                f"{function.__name__}: input must be a cupy.ndarray, got {type(args[0])}"
            )
        arguments = _unwrap(args, allow_host=True)
        keywords = {k: _unwrap(v, allow_host=True) for k, v in kwargs.items()}
        result = function(*arguments, **keywords)
        if function is scipy.ndimage.label:
            labels, count = result
            return _wrap(labels), int(count)
        return _wrap(result)

    return call


def _ndimage_module() -> types.ModuleType:
    ndimage = types.ModuleType("cupyx.scipy.ndimage")

    def module_getattr(name: str) -> Any:
        attribute = getattr(scipy.ndimage, name)
        if name == "generate_binary_structure":
            return lambda *a, **k: _wrap(attribute(*a, **k))
        return _ndimage_function(attribute)

    ndimage.__getattr__ = module_getattr  # type: ignore[method-assign]
    return ndimage


def install_cupy_standin(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import cupy`` give the stand-in for this test; the GPU verdict is probed afresh."""
    ndimage = _ndimage_module()
    cupyx = types.ModuleType("cupyx")
    cupyx_scipy = types.ModuleType("cupyx.scipy")
    cupyx_scipy.ndimage = ndimage  # type: ignore[attr-defined]
    cupyx.scipy = cupyx_scipy  # type: ignore[attr-defined]
    for name, module in {
        "cupy": _cupy_module(),
        "cupyx": cupyx,
        "cupyx.scipy": cupyx_scipy,
        "cupyx.scipy.ndimage": ndimage,
    }.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(backend_module._VERDICT, "status", None)
