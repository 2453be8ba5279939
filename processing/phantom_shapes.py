"""Geometric primitives of the numerical phantom and their rasterisation.

The anatomy is described in a *nominal body frame* in millimetres: ``x`` towards
the patient's left, ``y`` towards posterior (both as DICOM LPS), and ``h`` the
distance below the vertex (``h = 0`` at the top of the head, growing towards the
feet). :class:`BodyFrame` maps that frame to patient LPS coordinates with a
per-patient width and height scale and a rigid translation (the patient's
position on the table at one visit). :class:`ScanGrid` is the scanner's axial
grid. Shapes answer two questions: their bounding box in the body frame, and
which points they contain; :func:`rasterise` only evaluates a shape inside its
bounding box, so building a whole body costs little more than its largest organ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "BodyFrame",
    "Ellipsoid",
    "FloatArray",
    "RibArc",
    "ScanGrid",
    "Shape",
    "Tube",
    "grid_region",
    "rasterise",
    "rotation_matrix",
]

FloatArray = NDArray[np.float64]


class Shape(Protocol):
    """A solid in the nominal body frame."""

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        """Lower and upper corners ``(x, y, h)`` of an axis-aligned bounding box."""
        ...

    def contains(self, h: FloatArray, y: FloatArray, x: FloatArray) -> NDArray[np.bool_]:
        """Membership of the broadcast points ``(h, y, x)``."""
        ...


def rotation_matrix(degrees_xyz: tuple[float, float, float]) -> FloatArray:
    """Rotation ``Rz @ Ry @ Rx`` from angles in degrees about the frame axes."""
    rx, ry, rz = (math.radians(d) for d in degrees_xyz)
    cx, sx, cy, sy, cz, sz = (
        math.cos(rx),
        math.sin(rx),
        math.cos(ry),
        math.sin(ry),
        math.cos(rz),
        math.sin(rz),
    )
    rot_x = np.array([[1.0, 0.0, 0.0], [0.0, cx, -sx], [0.0, sx, cx]])
    rot_y = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rot_z = np.array([[cz, -sz, 0.0], [sz, cz, 0.0], [0.0, 0.0, 1.0]])
    matrix: FloatArray = rot_z @ rot_y @ rot_x
    return matrix


@dataclass(frozen=True, slots=True)
class Ellipsoid:
    """An ellipsoid, optionally rotated and cut by horizontal planes.

    Parameters
    ----------
    center
        ``(x, y, h)`` in the body frame, mm.
    semi_axes
        Semi-axes along the ellipsoid's own ``(x, y, h)`` axes before rotation, mm.
    rotation_deg
        Rotation about the frame's ``x``, ``y`` and ``h`` axes, degrees (applied
        as ``Rz @ Ry @ Rx``).
    h_min, h_max
        Optional cut: only points with ``h_min <= h <= h_max`` belong to the solid.
    """

    center: tuple[float, float, float]
    semi_axes: tuple[float, float, float]
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    h_min: float = -math.inf
    h_max: float = math.inf

    def __post_init__(self) -> None:
        if min(self.semi_axes) <= 0.0:
            raise ValueError(f"ellipsoid semi-axes must be positive, got {self.semi_axes}")

    def _matrix(self) -> FloatArray:
        return rotation_matrix(self.rotation_deg)

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        matrix = self._matrix()
        half = np.sqrt(((matrix * np.asarray(self.semi_axes)) ** 2).sum(axis=1))
        center = np.asarray(self.center)
        lower, upper = center - half, center + half
        lower[2] = max(lower[2], self.h_min)
        upper[2] = min(upper[2], self.h_max)
        return lower, upper

    def radius_sq(self, h: FloatArray, y: FloatArray, x: FloatArray) -> FloatArray:
        """Squared normalised radius: 1 on the surface, 0 at the centre."""
        dx, dy, dh = x - self.center[0], y - self.center[1], h - self.center[2]
        a, b, c = self.semi_axes
        if self.rotation_deg == (0.0, 0.0, 0.0):
            result: FloatArray = (dx / a) ** 2 + (dy / b) ** 2 + (dh / c) ** 2
            return result
        m = self._matrix()
        # local = R^T (p - c): column j of R is the ellipsoid's axis j.
        u = m[0, 0] * dx + m[1, 0] * dy + m[2, 0] * dh
        v = m[0, 1] * dx + m[1, 1] * dy + m[2, 1] * dh
        w = m[0, 2] * dx + m[1, 2] * dy + m[2, 2] * dh
        result = (u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2
        return result

    def contains(self, h: FloatArray, y: FloatArray, x: FloatArray) -> NDArray[np.bool_]:
        inside = self.radius_sq(h, y, x) <= 1.0
        if math.isfinite(self.h_min) or math.isfinite(self.h_max):
            inside = inside & (h >= self.h_min) & (h <= self.h_max)
        return inside

    def grown(self, margin_mm: float) -> Ellipsoid:
        """The same ellipsoid with every semi-axis changed by ``margin_mm``."""
        a, b, c = (s + margin_mm for s in self.semi_axes)
        return Ellipsoid(self.center, (a, b, c), self.rotation_deg, self.h_min, self.h_max)


@dataclass(frozen=True, slots=True)
class Tube:
    """A generalised elliptic cylinder along ``h``.

    Its axial cross-section at height ``h`` is the ellipse with centre
    ``(cx(h), cy(h))`` and semi-axes ``(a(h), b(h))``, each interpolated linearly
    between knots; outside ``[h_knots[0], h_knots[-1]]`` the tube is empty.
    """

    h_knots: tuple[float, ...]
    cx: tuple[float, ...]
    cy: tuple[float, ...]
    a: tuple[float, ...]
    b: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.h_knots)
        if n < 2 or any(len(v) != n for v in (self.cx, self.cy, self.a, self.b)):
            raise ValueError("a tube needs >= 2 knots and one value per knot for cx, cy, a, b")
        if any(h1 <= h0 for h0, h1 in zip(self.h_knots, self.h_knots[1:], strict=False)):
            raise ValueError(f"tube knots must increase, got {self.h_knots}")

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        cx, cy, a, b = (np.asarray(v) for v in (self.cx, self.cy, self.a, self.b))
        lower = np.array([(cx - a).min(), (cy - b).min(), self.h_knots[0]])
        upper = np.array([(cx + a).max(), (cy + b).max(), self.h_knots[-1]])
        return lower, upper

    def contains(self, h: FloatArray, y: FloatArray, x: FloatArray) -> NDArray[np.bool_]:
        knots = self.h_knots
        cx = np.interp(h, knots, self.cx)
        cy = np.interp(h, knots, self.cy)
        a = np.maximum(np.interp(h, knots, self.a), 1e-6)
        b = np.maximum(np.interp(h, knots, self.b), 1e-6)
        in_range = (h >= knots[0]) & (h <= knots[-1])
        inside: NDArray[np.bool_] = (((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0) & in_range
        return inside

    def shrunk(self, margin_mm: float) -> Tube:
        """The tube with both semi-axes reduced by ``margin_mm`` (same knots)."""
        return Tube(
            self.h_knots,
            self.cx,
            self.cy,
            tuple(max(v - margin_mm, 1.0) for v in self.a),
            tuple(max(v - margin_mm, 1.0) for v in self.b),
        )


@dataclass(frozen=True, slots=True)
class RibArc:
    """One rib: a band around an elliptic ring that descends from back to front.

    The ring is the ellipse ``((x - cx)/ring_a)^2 + ((y - cy)/ring_b)^2 = 1``. A
    point at angle ``phi`` from the posterior midline (0 = posterior, pi/2 =
    lateral, pi = anterior) on the rib's side belongs to the rib when
    ``phi_start <= phi <= phi_end``, its radial distance from the ring is at most
    ``thickness/2`` and its height is within ``height/2`` of the rib's centre
    line, which runs from ``h_posterior`` at ``phi_start`` down by ``drop`` at
    ``phi_end``.
    """

    side: int  # +1 patient left, -1 patient right
    cx: float
    cy: float
    ring_a: float
    ring_b: float
    h_posterior: float
    drop: float
    phi_start: float
    phi_end: float
    thickness: float
    height: float

    def bounds(self) -> tuple[FloatArray, FloatArray]:
        margin = self.thickness
        if self.side > 0:
            x_lo, x_hi = self.cx, self.cx + self.ring_a + margin
        else:
            x_lo, x_hi = self.cx - self.ring_a - margin, self.cx
        lower = np.array([x_lo, self.cy - self.ring_b - margin, self.h_posterior - self.height])
        upper = np.array(
            [x_hi, self.cy + self.ring_b + margin, self.h_posterior + self.drop + self.height]
        )
        return lower, upper

    def centre_line(self, phi: float) -> tuple[float, float, float]:
        """Point ``(x, y, h)`` of the rib's centre line at angle ``phi``."""
        fraction = (phi - self.phi_start) / (self.phi_end - self.phi_start)
        x = self.cx + self.side * self.ring_a * math.sin(phi)
        y = self.cy + self.ring_b * math.cos(phi)
        return (x, y, self.h_posterior + self.drop * fraction)

    def contains(self, h: FloatArray, y: FloatArray, x: FloatArray) -> NDArray[np.bool_]:
        u = (x - self.cx) / self.ring_a
        v = (y - self.cy) / self.ring_b
        rho = np.sqrt(u**2 + v**2)
        phi = np.arctan2(self.side * u, v)
        local_radius = np.sqrt((self.ring_a * np.sin(phi)) ** 2 + (self.ring_b * np.cos(phi)) ** 2)
        fraction = (phi - self.phi_start) / (self.phi_end - self.phi_start)
        centre_h = self.h_posterior + self.drop * fraction
        inside: NDArray[np.bool_] = (
            (np.abs(rho - 1.0) * local_radius <= self.thickness / 2.0)
            & (np.abs(h - centre_h) <= self.height / 2.0)
            & (phi >= self.phi_start)
            & (phi <= self.phi_end)
        )
        return inside


@dataclass(frozen=True, slots=True)
class BodyFrame:
    """Maps the nominal body frame to patient LPS millimetres.

    ``X = shift_x + width_scale * x``, ``Y = shift_y + width_scale * y`` and
    ``Z = vertex_z + shift_z - height_scale * s(h)``, where ``s`` is the identity
    unless ``neck`` is given: ``(h_start, h_end, factor)`` stretches the body
    between ``h_start`` and ``h_end`` by ``factor`` along ``h`` (a longer or
    shorter neck) and moves everything below by the difference.
    """

    width_scale: float
    height_scale: float
    vertex_z: float
    shift_mm: tuple[float, float, float]
    neck: tuple[float, float, float] | None = None

    def stretched_h(self, h: FloatArray) -> FloatArray:
        """Nominal ``h`` to the height below the vertex after the neck stretch (unscaled)."""
        if self.neck is None:
            return h
        start, end, factor = self.neck
        h = np.asarray(h, dtype=np.float64)
        inside = start + factor * (h - start)
        below = h + (factor - 1.0) * (end - start)
        result: FloatArray = np.where(h < start, h, np.where(h > end, below, inside))
        return result

    def nominal_h(self, stretched: FloatArray) -> FloatArray:
        """Inverse of :meth:`stretched_h`."""
        if self.neck is None:
            return stretched
        start, end, factor = self.neck
        stretched = np.asarray(stretched, dtype=np.float64)
        new_end = start + factor * (end - start)
        inside = start + (stretched - start) / factor
        result: FloatArray = np.where(
            stretched < start,
            stretched,
            np.where(stretched > new_end, stretched - (new_end - end), inside),
        )
        return result

    def to_patient(self, xyh: FloatArray) -> FloatArray:
        """Body-frame points ``(..., 3)`` as ``(x, y, h)`` to patient ``(..., 3)`` ``(X, Y, Z)``."""
        xyh = np.asarray(xyh, dtype=np.float64)
        sx, sy, sz = self.shift_mm
        out = np.empty_like(xyh)
        out[..., 0] = sx + self.width_scale * xyh[..., 0]
        out[..., 1] = sy + self.width_scale * xyh[..., 1]
        out[..., 2] = self.vertex_z + sz - self.height_scale * self.stretched_h(xyh[..., 2])
        return out


@dataclass(frozen=True, slots=True)
class ScanGrid:
    """The scanner's axial grid.

    Slice ``z`` lies at ``Z = z0 - z*dz``, column ``x`` at ``X = x0 + x*dx`` and row
    ``y`` at ``Y = y0 + y*dy`` (head first, rows along +X, columns along +Y).
    """

    shape: tuple[int, int, int]  # (z, y, x)
    spacing_mm: tuple[float, float, float]  # (slice, row, col)
    origin_mm: tuple[float, float, float]  # patient (X, Y, Z) of voxel (0, 0, 0)

    def affine(self) -> FloatArray:
        """4x4 matrix mapping ``(z, y, x, 1)`` to patient ``(X, Y, Z, 1)``."""
        dz, dy, dx = self.spacing_mm
        x0, y0, z0 = self.origin_mm
        return np.array(
            [[0.0, 0.0, dx, x0], [0.0, dy, 0.0, y0], [-dz, 0.0, 0.0, z0], [0.0, 0.0, 0.0, 1.0]]
        )

    def axes_mm(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """Patient ``Z`` per slice, ``Y`` per row, ``X`` per column."""
        nz, ny, nx = self.shape
        dz, dy, dx = self.spacing_mm
        x0, y0, z0 = self.origin_mm
        z: FloatArray = z0 - dz * np.arange(nz, dtype=np.float64)
        y: FloatArray = y0 + dy * np.arange(ny, dtype=np.float64)
        x: FloatArray = x0 + dx * np.arange(nx, dtype=np.float64)
        return (z, y, x)


def grid_region(
    grid: ScanGrid, frame: BodyFrame, lower: FloatArray, upper: FloatArray
) -> tuple[tuple[slice, slice, slice], tuple[FloatArray, FloatArray, FloatArray]] | None:
    """Index box of the grid covering a body-frame box, and its body-frame coordinates.

    Returns ``None`` when the box misses the grid; otherwise the ``(z, y, x)``
    slices and the body-frame ``h``, ``y``, ``x`` coordinates shaped for
    broadcasting (``(nz,1,1)``, ``(1,ny,1)``, ``(1,1,nx)``).
    """
    corners = frame.to_patient(np.stack([lower, upper]))
    x_lo, x_hi = sorted(corners[:, 0])
    y_lo, y_hi = sorted(corners[:, 1])
    z_lo, z_hi = sorted(corners[:, 2])
    nz, ny, nx = grid.shape
    dz, dy, dx = grid.spacing_mm
    x0, y0, z0 = grid.origin_mm
    ranges = (
        (math.ceil((z0 - z_hi) / dz - 1e-9), math.floor((z0 - z_lo) / dz + 1e-9), nz),
        (math.ceil((y_lo - y0) / dy - 1e-9), math.floor((y_hi - y0) / dy + 1e-9), ny),
        (math.ceil((x_lo - x0) / dx - 1e-9), math.floor((x_hi - x0) / dx + 1e-9), nx),
    )
    bounds: list[tuple[int, int]] = []
    for first_raw, last_raw, size in ranges:
        first, last = max(first_raw, 0), min(last_raw, size - 1)
        if last < first:
            return None
        bounds.append((first, last + 1))
    (za, zb), (ya, yb), (xa, xb) = bounds
    sx, sy, sz = frame.shift_mm
    z_mm = z0 - dz * np.arange(za, zb, dtype=np.float64)
    y_mm = y0 + dy * np.arange(ya, yb, dtype=np.float64)
    x_mm = x0 + dx * np.arange(xa, xb, dtype=np.float64)
    h = frame.nominal_h((frame.vertex_z + sz - z_mm) / frame.height_scale)[:, None, None]
    y = ((y_mm - sy) / frame.width_scale)[None, :, None]
    x = ((x_mm - sx) / frame.width_scale)[None, None, :]
    return (slice(za, zb), slice(ya, yb), slice(xa, xb)), (h, y, x)


def rasterise(
    labels: NDArray[np.uint8], shape: Shape, value: int, grid: ScanGrid, frame: BodyFrame
) -> int:
    """Paint ``value`` into ``labels`` wherever the voxel centre lies in ``shape``.

    Returns the number of voxels painted.
    """
    lower, upper = shape.bounds()
    region = grid_region(grid, frame, lower, upper)
    if region is None:
        return 0
    index, (h, y, x) = region
    mask = shape.contains(h, y, x)
    labels[index][mask] = value
    return int(np.count_nonzero(mask))
