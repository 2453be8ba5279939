"""Body region of a lesion (MET-RADS-P bone regions) from landmarks of the body outline.

The rules place a lesion's centroid relative to the landmarks of
:mod:`processing.landmarks` and to levels expressed as fractions of the
neck-to-crotch distance (``region_levels``: T1, L1, iliac crest, L5/S1, hip
joint, from adult body-segment proportions). No atlas is used, so the result
can be off by one or two vertebral levels at a boundary (T12/L1, C7/T1) and
femoral-head lesions may be called pelvis; the radiologist has the final say.

Rules, in order:

1. Above the neck: in the spine column below the skull base (half-way from
   the vertex to the neck) -> cervical spine; otherwise skull.
2. At or below the crotch, or outside the trunk's cross-section (an arm) ->
   limbs.
3. Spine column (within ``spine_halfwidth_mm`` of the trunk midline and not
   more than ``spine_anterior_margin_mm`` anterior to the trunk centre): above
   T1 cervical, above L1 dorsal, above L5/S1 lumbosacral; the sacrum counts
   with the pelvic ring (pelvis).
4. Elsewhere: above T1 other (neck soft tissue); T1-L1 thorax (ribs, sternum,
   scapulae, clavicles); L1 to iliac crest: lateral -> thorax (lower ribs),
   else other; below the iliac crest: pelvis, except lateral at hip level ->
   limbs (proximal femur).

"Outside the trunk's cross-section" means that the body voxel of the
centroid's slice nearest to the centroid is not in the slice's trunk: its
largest in-plane body component, 8-connected, exactly the trunk the landmarks
measure (:attr:`processing.landmarks.BodyLandmarks.trunk`; before issue 13 this
test labelled the slice again, 4-connected, once per lesion). :func:`in_trunk`
answers for every lesion at once from that mask on the device, downloading
only the slices that hold a centroid.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from processing.backend import Backend
from processing.landmarks import BodyLandmarks
from processing.results import BodyRegion
from processing.settings import ProcessingSettings

__all__ = ["assign_region", "in_trunk"]

_DISTANCES_PER_CHUNK = 1 << 22  # nearest-voxel search: at most 4 Mi distances (32 MB) at once


def assign_region(
    centroid_index: NDArray[np.float64],
    trunk_section: bool,
    landmarks: BodyLandmarks,
    spacing_mm: tuple[float, float, float],
    settings: ProcessingSettings,
) -> BodyRegion:
    """Region of a lesion whose centroid is ``centroid_index`` ``(z, y, x)``.

    ``trunk_section`` is :func:`in_trunk`'s answer for this centroid.
    """
    nz = landmarks.trunk_center.shape[0]
    z = int(np.clip(round(float(centroid_index[0])), 0, nz - 1))
    y = float(centroid_index[1])
    x = float(centroid_index[2])
    dy, dx = spacing_mm[1], spacing_mm[2]
    center = landmarks.trunk_center[z]
    box = landmarks.trunk_box[z]
    if np.isnan(center).any():
        return BodyRegion.OTHER
    in_spine = (
        abs(x - center[1]) * dx <= settings.spine_halfwidth_mm
        and (y - center[0]) * dy >= -settings.spine_anterior_margin_mm
    )
    half_width = max(1.0, 0.5 * (box[3] - box[2]))
    lateral = abs(x - center[1]) > settings.lateral_fraction * half_width

    if landmarks.neck is not None and z <= landmarks.neck:
        skull_base = landmarks.top + 0.5 * (landmarks.neck - landmarks.top)
        return BodyRegion.CERVICAL_SPINE if in_spine and z > skull_base else BodyRegion.SKULL
    if landmarks.crotch is not None and z >= landmarks.crotch:
        return BodyRegion.LIMBS
    if not trunk_section:
        return BodyRegion.LIMBS

    levels = _Levels(*(landmarks.level_below_neck(f) for f in settings.region_levels))
    if in_spine:
        return _spine_region(z, levels)
    return _trunk_region(z, levels, lateral=lateral)


class _Levels(NamedTuple):
    """Slice indices of the region boundaries (``ProcessingSettings.region_levels``)."""

    t1: float
    l1: float
    iliac_crest: float
    sacrum: float
    hip: float


def _spine_region(z: int, levels: _Levels) -> BodyRegion:
    """Rule 3: the spine column by level; the sacrum counts with the pelvis."""
    if z < levels.t1:
        return BodyRegion.CERVICAL_SPINE
    if z < levels.l1:
        return BodyRegion.DORSAL_SPINE
    if z < levels.sacrum:
        return BodyRegion.LUMBOSACRAL_SPINE
    return BodyRegion.PELVIS


def _trunk_region(z: int, levels: _Levels, *, lateral: bool) -> BodyRegion:
    """Rule 4: outside the spine column, by level and whether the centroid is lateral."""
    if z < levels.t1:
        return BodyRegion.OTHER
    if z < levels.l1:
        return BodyRegion.THORAX
    if z < levels.iliac_crest:
        return BodyRegion.THORAX if lateral else BodyRegion.OTHER
    if z >= levels.hip and lateral:
        return BodyRegion.LIMBS
    return BodyRegion.PELVIS


def in_trunk(
    centroid_index: NDArray[np.float64], body: Any, landmarks: BodyLandmarks, backend: Backend
) -> NDArray[np.bool_]:
    """Whether each centroid ``(z, y, x)`` lies in (or nearest to) the trunk of its slice.

    Parameters
    ----------
    centroid_index
        ``(n, 3)`` voxel-index centroids (host).
    body
        Boolean ``[z, y, x]`` body mask on the backend's device.
    landmarks
        From :func:`processing.landmarks.find_landmarks` on ``body``; its
        ``trunk`` mask is used.
    backend
        Array backend.

    Returns
    -------
    ndarray
        ``(n,)`` booleans: True when the body voxel of the centroid's slice
        nearest to the centroid (the first in row-major order on a tie) is in
        the trunk, or when that slice's body is all trunk (one component, or
        none).
    """
    centroids = np.asarray(centroid_index, dtype=np.float64).reshape(-1, 3)
    answer = np.ones(len(centroids), dtype=bool)
    if len(centroids) == 0 or landmarks.trunk is None:
        return answer
    nz = body.shape[0]
    z = np.clip(np.rint(centroids[:, 0]), 0, nz - 1).astype(np.int64)
    slices = np.unique(z)
    chosen = backend.xp.asarray(slices)
    body_slices = backend.to_host(body[chosen]).astype(bool, copy=False)
    trunk_slices = backend.to_host(landmarks.trunk[chosen]).astype(bool, copy=False)
    for body_slice, trunk_slice, slice_index in zip(body_slices, trunk_slices, slices, strict=True):
        if not (body_slice & ~trunk_slice).any():
            continue  # the slice's body is all trunk
        points = np.argwhere(body_slice)
        members = np.flatnonzero(z == slice_index)
        chunk = max(1, _DISTANCES_PER_CHUNK // len(points))
        for start in range(0, len(members), chunk):
            part = members[start : start + chunk]
            y = centroids[part, 1][:, None]
            x = centroids[part, 2][:, None]
            distance = (points[None, :, 0] - y) ** 2 + (points[None, :, 1] - x) ** 2
            nearest = points[np.argmin(distance, axis=1)]
            answer[part] = trunk_slice[nearest[:, 0], nearest[:, 1]]
    return answer
