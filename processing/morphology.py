"""Dilation, erosion and closing by boxes of 3 voxels per axis, as whole-array shifts.

``scipy.ndimage``'s binary morphology visits every structuring-element offset
of every voxel in C; a box (3 x 3 in the slice, or 3 x 3 x 3) is the
Minkowski sum of one 3-voxel line per axis, so the same result is a few
shifted boolean operations over whole arrays, several times faster on the
CPU and the same code on CuPy. The operations are logical (no arithmetic),
so the results are those of ``scipy.ndimage.binary_dilation``,
``binary_erosion`` and ``binary_closing`` with ``border_value=0`` and of
``grey_dilation`` (``mode="reflect"``: beyond an edge it reads the edge voxel
itself, which the maximum already holds) exactly; ``tests/unit/
test_processing_boxes.py`` compares them on random masks.

Outside the array counts as background (``border_value=0``): a dilation does
not grow from beyond an edge, and an erosion removes the voxels on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["close", "dilate", "erode", "maximum_3"]


def _shifted(axis: int, ndim: int, start: int | None, stop: int | None) -> tuple[slice, ...]:
    index = [slice(None)] * ndim
    index[axis] = slice(start, stop)
    return tuple(index)


def dilate(mask: Any, axes: Sequence[int]) -> Any:
    """Binary dilation by the box of 3 voxels along each of ``axes`` (a new array)."""
    grown = mask.copy()
    for axis in axes:
        source = grown.copy()
        low = _shifted(axis, mask.ndim, None, -1)
        high = _shifted(axis, mask.ndim, 1, None)
        grown[high] = grown[high] | source[low]
        grown[low] = grown[low] | source[high]
    return grown


def erode(mask: Any, axes: Sequence[int]) -> Any:
    """Binary erosion by the box of 3 voxels along each of ``axes``; outside is background."""
    shrunk = mask.copy()
    for axis in axes:
        source = shrunk.copy()
        low = _shifted(axis, mask.ndim, None, -1)
        high = _shifted(axis, mask.ndim, 1, None)
        shrunk[high] = shrunk[high] & source[low]
        shrunk[low] = shrunk[low] & source[high]
        shrunk[_shifted(axis, mask.ndim, 0, 1)] = False
        shrunk[_shifted(axis, mask.ndim, -1, None)] = False
    return shrunk


def close(mask: Any, axes: Sequence[int]) -> Any:
    """Binary closing (dilation, then erosion) by the box of 3 voxels along each of ``axes``."""
    return erode(dilate(mask, axes), axes)


def maximum_3(values: Any, axes: Sequence[int], xp: Any) -> Any:
    """Grey dilation: each voxel's maximum over the box of 3 voxels along each of ``axes``.

    Beyond an edge nothing is read (``grey_dilation``'s reflecting border reads
    the edge voxel there, which the maximum holds already).
    """
    grown = values.copy()
    for axis in axes:
        source = grown.copy()
        low = _shifted(axis, values.ndim, None, -1)
        high = _shifted(axis, values.ndim, 1, None)
        grown[high] = xp.maximum(grown[high], source[low])
        grown[low] = xp.maximum(grown[low], source[high])
    return grown
