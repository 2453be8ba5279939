"""Body landmarks found from the body outline: neck, legs, trunk midline.

The rules use only the shape of the body mask, which every whole-body exam
has, and no atlas:

- **Neck**: the narrowest body cross-section ``neck_search_mm`` below the top of
  the body, accepted only if the exam starts at the head (the first body slices
  are small and grow to a head cross-section clearly wider than the neck) and
  the body widens again below it (shoulders). Adult head height (vertex to
  chin) is ~ 22-25 cm, so the narrowest neck lies 12-33 cm below the vertex.
- **Crotch**: the most cranial slice of the run of slices, reaching the last
  slice, where the body splits into two large cross-sections of comparable
  area (the thighs). Absent when the exam stops above the thighs or the thighs
  touch.
- **Trunk**: in every slice, the largest 2-D body component; its centroid and
  bounding box give the midline and the antero-posterior extent used by the
  organ and region rules.

Profiles are computed on the device; only 1-D/2-D per-slice summaries (a few
kB) are downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from processing.backend import Backend
from processing.crop import mask_box, paste
from processing.segmentation import in_plane_structure, label_components
from processing.settings import ProcessingSettings

__all__ = ["BodyLandmarks", "find_landmarks"]

_LEG_AREA_RATIO = 0.4  # the smaller thigh cross-section is at least 40 % of the larger
_LEG_MIN_AREA_MM2 = 4000.0  # a mid-thigh cross-section is ~ 150-250 cm2
_HEAD_TOP_RATIO = 0.5  # the first body slice is under half of the largest head section
_SHOULDER_RATIO = 1.5  # the body below the neck widens to at least 1.5 x the neck


@dataclass(frozen=True, slots=True)
class BodyLandmarks:
    """Landmarks of one exam, in slice indices of the exam grid (head first).

    Attributes
    ----------
    top, bottom
        First and last slice holding body.
    neck
        Slice of the narrowest neck, ``None`` when the exam does not start at the head.
    crotch
        First slice where the thighs are separate, ``None`` when not seen.
    trunk_center
        ``(z, 2)`` float array: trunk centroid ``(y, x)`` in voxel indices per slice
        (NaN where a slice holds no body).
    trunk_box
        ``(z, 4)`` float array: trunk ``(y_min, y_max, x_min, x_max)`` per slice.
    body_area_mm2
        ``(z,)`` cross-sectional area of the body per slice.
    slice_mm
        Slice spacing.
    trunk
        Boolean ``[z, y, x]`` on the backend's device: the trunk of every slice
        (its largest 8-connected in-plane body component, the one ``trunk_center``
        and ``trunk_box`` describe); ``None`` when no slice holds body. Lesion
        regions use it (:func:`processing.regions.in_trunk`), so that landmarks
        and regions see the same trunk.
    """

    top: int
    bottom: int
    neck: int | None
    crotch: int | None
    trunk_center: NDArray[np.float64]
    trunk_box: NDArray[np.float64]
    body_area_mm2: NDArray[np.float64]
    slice_mm: float
    trunk: Any = field(default=None, repr=False, compare=False)

    def level_below_neck(self, fraction: float) -> float:
        """Slice index at ``fraction`` of the neck-to-crotch distance (estimated ends)."""
        start, end = self.trunk_span()
        return start + fraction * (end - start)

    def trunk_span(self) -> tuple[float, float]:
        """Neck and crotch slices, each estimated from the body's length when not found.

        Without a neck the top of the body is used; without a crotch the last
        body slice. Both are documented approximations (``docs/algorithm.md``).
        """
        start = float(self.neck if self.neck is not None else self.top)
        end = float(self.crotch if self.crotch is not None else self.bottom)
        return start, max(end, start + 1.0)


def find_landmarks(
    body: Any,
    spacing_mm: tuple[float, float, float],
    settings: ProcessingSettings,
    backend: Backend,
) -> BodyLandmarks:
    """Find the neck, the crotch and the trunk of every slice from the body mask."""
    dz, dy, dx = spacing_mm
    nz = body.shape[0]
    pixel_mm2 = dy * dx
    center = np.full((nz, 2), np.nan)
    box = np.full((nz, 4), np.nan)
    # Labels, moments and the trunk on the body's bounding box (voxel indices are
    # shifted back to the whole grid): the same components, in the same order.
    body_box = mask_box(body, backend, margin=0)
    if body_box is None:
        area = np.zeros(nz, dtype=np.float64) * pixel_mm2
        return BodyLandmarks(0, nz - 1, None, None, center, box, area, dz)
    part = body[body_box]
    components = label_components(part, backend, structure=in_plane_structure(backend))
    counts = np.zeros(nz, dtype=np.int64)
    counts[body_box[0]] = backend.to_host(part.sum(axis=(1, 2)))
    area = counts.astype(np.float64) * pixel_mm2
    present = np.flatnonzero(area > 0)
    if components.count == 0 or present.size == 0:
        return BodyLandmarks(0, nz - 1, None, None, center, box, area, dz)

    offset = (body_box[0].start, body_box[1].start, body_box[2].start)
    moments = _component_moments(components, offset, backend)
    first, first_area, second_area = _two_largest_per_slice(moments, nz, pixel_mm2)
    has = first > 0
    center[has, 0] = moments.sum_y[first[has]] / moments.sizes[first[has]]
    center[has, 1] = moments.sum_x[first[has]] / moments.sizes[first[has]]
    trunk_part = _trunk_and_boxes(components, first, box, offset, backend)
    trunk = paste(trunk_part, body_box, body.shape, backend)

    top = int(present[0])
    bottom = int(present[-1])
    neck = _find_neck(area, top, bottom, dz, settings)
    crotch = _find_crotch(first_area, second_area, top, bottom)
    return BodyLandmarks(top, bottom, neck, crotch, center, box, area, dz, trunk=trunk)


@dataclass(frozen=True, slots=True)
class _Moments:
    """Per in-plane component (index = label): voxel count, slice, sums of y and x (host)."""

    sizes: NDArray[np.float64]
    slice_of: NDArray[np.int64]
    sum_y: NDArray[np.float64]
    sum_x: NDArray[np.float64]


def _component_moments(components: Any, offset: tuple[int, int, int], backend: Backend) -> _Moments:
    """Moments of labels on a box whose first voxel is ``offset`` (z, y, x) of the grid."""
    xp = backend.xp
    _, ny, nx = components.labels.shape
    count = components.count
    flat = components.labels.ravel()
    where = xp.flatnonzero(flat)
    component = flat[where].astype(xp.int64)
    z_index, rest = xp.divmod(where, ny * nx)
    y_index, x_index = xp.divmod(rest, nx)
    z_index += offset[0]
    y_index += offset[1]
    x_index += offset[2]
    sizes = components.sizes.astype(xp.float64)
    slice_of = xp.bincount(component, weights=z_index.astype(xp.float64), minlength=count + 1)
    slice_of[1:] /= sizes[1:]
    sum_y = xp.bincount(component, weights=y_index.astype(xp.float64), minlength=count + 1)
    sum_x = xp.bincount(component, weights=x_index.astype(xp.float64), minlength=count + 1)
    return _Moments(
        sizes=backend.to_host(components.sizes).astype(np.float64),
        slice_of=np.rint(backend.to_host(slice_of)).astype(np.int64),
        sum_y=backend.to_host(sum_y),
        sum_x=backend.to_host(sum_x),
    )


def _two_largest_per_slice(
    moments: _Moments, nz: int, pixel_mm2: float
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    """Label and area (mm2) of each slice's largest component, and its second-largest area."""
    first = np.full(nz, 0, dtype=np.int64)
    second_area = np.zeros(nz)
    first_area = np.zeros(nz)
    for label in range(1, moments.sizes.size):
        z = moments.slice_of[label]
        size = moments.sizes[label] * pixel_mm2
        if size > first_area[z]:
            second_area[z] = first_area[z]
            first_area[z] = size
            first[z] = label
        elif size > second_area[z]:
            second_area[z] = size
    return first, first_area, second_area


def _trunk_and_boxes(
    components: Any,
    first: NDArray[np.int64],
    box: NDArray[np.float64],
    offset: tuple[int, int, int],
    backend: Backend,
) -> Any:
    """The trunk mask on the labels' box (on the device); fills ``box`` per slice of the grid.

    ``offset`` is the grid index (z, y, x) of the labels' first voxel.
    """
    xp = backend.xp
    z0, y0, x0 = offset
    has = first > 0
    is_trunk = xp.zeros(components.count + 1, dtype=bool)
    is_trunk[xp.asarray(first[has])] = True
    trunk = is_trunk[components.labels]
    rows = backend.to_host(trunk.any(axis=2))
    cols = backend.to_host(trunk.any(axis=1))
    for z in np.flatnonzero(has):
        ys = np.flatnonzero(rows[z - z0]) + y0
        xs = np.flatnonzero(cols[z - z0]) + x0
        box[z] = (ys[0], ys[-1], xs[0], xs[-1])
    return trunk


def _find_neck(
    area: NDArray[np.float64], top: int, bottom: int, dz: float, settings: ProcessingSettings
) -> int | None:
    low_mm, high_mm = settings.neck_search_mm
    first = top + int(np.ceil(low_mm / dz))
    last = min(bottom, top + int(np.floor(high_mm / dz)))
    if last <= first:
        return None
    smooth = np.convolve(area, np.ones(3) / 3.0, mode="same")
    neck = first + int(np.argmin(smooth[first : last + 1]))
    head_max = float(area[top:neck].max())
    if head_max <= 0 or area[top] > _HEAD_TOP_RATIO * head_max:
        return None  # the exam does not start at the vertex
    if smooth[neck] > settings.neck_max_area_ratio * head_max:
        return None
    below = area[neck : min(bottom + 1, neck + int(np.ceil(200.0 / dz)))]
    if below.size == 0 or below.max() < _SHOULDER_RATIO * smooth[neck]:
        return None
    return neck


def _find_crotch(
    first_area: NDArray[np.float64], second_area: NDArray[np.float64], top: int, bottom: int
) -> int | None:
    legs = (second_area >= _LEG_MIN_AREA_MM2) & (second_area >= _LEG_AREA_RATIO * first_area)
    if not legs[bottom]:
        return None
    z = bottom
    while z - 1 > top and legs[z - 1]:
        z -= 1
    return z
