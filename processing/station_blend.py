"""Blending overlapping DWI stations onto one cranio-caudal grid: the numbers only.

Whole-body DWI is acquired in stations that overlap by a few slices. Reading the
instances and grouping them into stations is the DICOM side's work
(``dicom_node.assembly.assemble.stations``); how much each station's slice contributes
to each slice of the composed grid is decided here, on depths alone (mm along
the body axis, growing from head to feet):

- A station whose slices lie within ``tolerance`` of grid positions is placed
  as it is (its nearest slice); otherwise each grid slice is interpolated
  linearly between the station's two neighbouring slices (never extrapolated).
- Where stations overlap, each station's contribution is weighted by
  ``1 + (distance from its nearer edge) / spacing`` (at least 0.05): 1 at its
  edge slice, +1 per slice inwards, so that the edge slices, where B0
  inhomogeneity and coil coverage are worst, count least. The composed slice is
  the weighted sum divided by the sum of the weights (:func:`edge_weights`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["SliceContribution", "edge_weights", "is_on_grid", "station_contributions"]

_MIN_EDGE_WEIGHT = 0.05
_NEGLIGIBLE_FRACTION = 1e-9


@dataclass(frozen=True, slots=True)
class SliceContribution:
    """One station slice's share of one grid slice (before division by the weight sum)."""

    grid_index: int
    slice_index: int  # index into the station's slices, sorted by depth
    weight: float  # edge weight x interpolation fraction


def edge_weights(
    grid_depths: NDArray[np.float64], start: float, end: float, spacing: float
) -> NDArray[np.float64]:
    """The edge weight of a station spanning ``start``-``end`` at each grid depth it covers."""
    weights = 1.0 + np.minimum(grid_depths - start, end - grid_depths) / spacing
    return np.maximum(weights, _MIN_EDGE_WEIGHT)


def is_on_grid(
    depths: NDArray[np.float64], origin: float, spacing: float, tolerance: float
) -> bool:
    """Whether every depth lies within ``tolerance`` mm of a grid position."""
    offsets = (depths - origin) / spacing
    return bool(np.all(np.abs(offsets - np.rint(offsets)) * spacing <= tolerance))


def station_contributions(
    grid: NDArray[np.float64],
    inside: NDArray[np.intp],
    depths: NDArray[np.float64],
    extent: tuple[float, float],
    *,
    spacing: float,
    tolerance: float,
    on_grid: bool,
) -> list[SliceContribution]:
    """What one station's slices (at ``depths``, increasing) give to the grid slices ``inside``.

    Parameters
    ----------
    grid
        Depth of every grid slice, mm.
    inside
        Indices of the grid slices the station covers.
    depths
        The station's slice depths (one b-value's stack), increasing.
    extent
        The station's first and last depth (its edges for the edge weights).
    spacing, tolerance
        Grid spacing and the distance within which a slice counts as on a grid position, mm.
    on_grid
        The station lies on the grid (:func:`is_on_grid`): nearest slice, no interpolation.
    """
    start, end = extent
    weights = edge_weights(grid[inside], start, end, spacing)
    out: list[SliceContribution] = []
    for k, weight in zip(inside, weights, strict=True):
        depth = float(grid[k])
        upper = int(np.clip(np.searchsorted(depths, depth), 1, len(depths) - 1))
        if len(depths) == 1:
            parts = [(0, 1.0)]
        elif on_grid or abs(depth - depths[upper - 1]) <= tolerance:
            parts = [(int(np.argmin(np.abs(depths - depth))), 1.0)]
        else:
            lower_depth, upper_depth = depths[upper - 1], depths[upper]
            t = float(np.clip((depth - lower_depth) / (upper_depth - lower_depth), 0, 1))
            parts = [(upper - 1, 1.0 - t), (upper, t)]
        out.extend(
            SliceContribution(int(k), index, float(weight * fraction))
            for index, fraction in parts
            if fraction > _NEGLIGIBLE_FRACTION
        )
    return out
