"""Bounding boxes, so that a stage works on the part of a volume that holds its mask.

Whole-body volumes are mostly air: the body fills about a seventh of the
reference phantom's grid, and every mask after the body mask lies inside it.
The morphology, filters and labelling of :mod:`processing.segmentation`,
:mod:`processing.landmarks` and :mod:`processing.normal_structures` therefore
run on the mask's bounding box grown by a margin, and paste their answer back
into a volume of zeros. Each caller chooses the margin that makes the boxed
result identical to the whole-volume one (a filter or structuring element that
reaches ``r`` voxels needs ``r`` voxels of background around the mask, so that
nothing it reads or writes outside the box differs from the whole volume's),
and says why where it calls :func:`mask_box`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from processing.backend import Backend

__all__ = ["Box", "box_or_whole", "mask_box", "paste"]

Box = tuple[slice, ...]
"""One slice per axis: a box inside a volume."""


def mask_box(mask: Any, backend: Backend, *, margin: int) -> Box | None:
    """The smallest box holding every True voxel of ``mask``, grown by ``margin`` voxels.

    The box is clipped to the volume: on a side where the mask comes closer than
    ``margin`` to the volume's edge, the box ends at the edge (where every
    ``scipy.ndimage`` operation sees the same border as on the whole volume).

    Parameters
    ----------
    mask
        Boolean array on the backend's device.
    backend
        Array backend.
    margin
        Voxels of background to keep on every side (``>= 0``).

    Returns
    -------
    tuple of slice or None
        One slice per axis, or ``None`` when ``mask`` holds no True voxel.
    """
    if margin < 0:
        raise ValueError(f"the margin of a box must not be negative, got {margin}")
    ndim = mask.ndim
    if ndim == 0:
        raise ValueError("a box needs an array with at least one axis")
    # The first axis over the whole volume, the others over its occupied range only.
    first_axis = np.flatnonzero(backend.to_host(mask.any(axis=tuple(range(1, ndim)))))
    if first_axis.size == 0:
        return None
    low, high = int(first_axis[0]), int(first_axis[-1])
    occupied = mask[low : high + 1]
    ranges = [(low, high)]
    for axis in range(1, ndim):
        others = tuple(a for a in range(ndim) if a != axis)
        present = np.flatnonzero(backend.to_host(occupied.any(axis=others)))
        ranges.append((int(present[0]), int(present[-1])))
    return tuple(
        slice(max(start - margin, 0), min(stop + margin + 1, size))
        for (start, stop), size in zip(ranges, mask.shape, strict=True)
    )


def box_or_whole(mask: Any, backend: Backend, *, margin: int) -> Box:
    """:func:`mask_box`, or the whole volume when ``mask`` holds no True voxel."""
    box = mask_box(mask, backend, margin=margin)
    if box is None:
        return tuple(slice(0, size) for size in mask.shape)
    return box


def paste(part: Any, box: Box, shape: tuple[int, ...], backend: Backend) -> Any:
    """A volume of ``shape`` that is ``part`` inside ``box`` and zero (False) elsewhere."""
    whole = backend.xp.zeros(shape, dtype=part.dtype)
    whole[box] = part
    return whole
