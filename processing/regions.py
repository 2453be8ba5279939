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
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
from numpy.typing import NDArray

from processing.landmarks import BodyLandmarks
from processing.results import BodyRegion
from processing.settings import ProcessingSettings

__all__ = ["assign_region"]


def assign_region(
    centroid_index: NDArray[np.float64],
    body: NDArray[np.bool_],
    landmarks: BodyLandmarks,
    spacing_mm: tuple[float, float, float],
    settings: ProcessingSettings,
) -> BodyRegion:
    """Region of a lesion whose centroid is ``centroid_index`` ``(z, y, x)`` (host arrays)."""
    nz = body.shape[0]
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
    if not _in_trunk(body[z], y, x):
        return BodyRegion.LIMBS

    t1, l1, iliac_crest, sacrum, hip = (
        landmarks.level_below_neck(f) for f in settings.region_levels
    )
    if in_spine:
        if z < t1:
            return BodyRegion.CERVICAL_SPINE
        if z < l1:
            return BodyRegion.DORSAL_SPINE
        if z < sacrum:
            return BodyRegion.LUMBOSACRAL_SPINE
        return BodyRegion.PELVIS
    if z < t1:
        return BodyRegion.OTHER
    if z < l1:
        return BodyRegion.THORAX
    if z < iliac_crest:
        return BodyRegion.THORAX if lateral else BodyRegion.OTHER
    if z >= hip and lateral:
        return BodyRegion.LIMBS
    return BodyRegion.PELVIS


def _in_trunk(body_slice: NDArray[np.bool_], y: float, x: float) -> bool:
    """Whether the point lies in (or nearest to) the largest body component of its slice."""
    labels, count = scipy.ndimage.label(body_slice)
    if count <= 1:
        return True
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    trunk = int(np.argmax(sizes))
    points = np.argwhere(labels > 0)
    distance = (points[:, 0] - y) ** 2 + (points[:, 1] - x) ** 2
    nearest = points[int(np.argmin(distance))]
    return bool(labels[nearest[0], nearest[1]] == trunk)
