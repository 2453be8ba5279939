"""Station blending weights and interpolation (processing.station_blend)."""

from __future__ import annotations

import numpy as np
import pytest

from processing.station_blend import edge_weights, is_on_grid, station_contributions

SPACING = 5.0


def _grid(n: int, origin: float = 0.0) -> np.ndarray:
    return origin + SPACING * np.arange(n, dtype=np.float64)


def test_edge_weights_grow_by_one_per_slice_inwards_and_never_reach_zero() -> None:
    grid = _grid(7)
    weights = edge_weights(grid, 0.0, 30.0, SPACING)
    np.testing.assert_allclose(weights, [1, 2, 3, 4, 3, 2, 1])
    # a grid slice just past the station's edge (interpolated, not extrapolated) keeps a floor
    assert edge_weights(np.array([-6.0]), 0.0, 30.0, SPACING)[0] == pytest.approx(0.05)


def test_on_grid_within_tolerance_only() -> None:
    assert is_on_grid(np.array([10.0, 15.02, 20.0]), 0.0, SPACING, tolerance=0.1)
    assert not is_on_grid(np.array([10.0, 17.5]), 0.0, SPACING, tolerance=0.1)


def test_a_station_on_the_grid_gives_its_nearest_slice_with_the_edge_weight() -> None:
    grid = _grid(10)
    depths = _grid(4, origin=15.0)  # slices at 15, 20, 25, 30 -> grid 3..6
    inside = np.arange(3, 7)
    shares = station_contributions(
        grid, inside, depths, (15.0, 30.0), spacing=SPACING, tolerance=0.1, on_grid=True
    )
    assert [(s.grid_index, s.slice_index) for s in shares] == [(3, 0), (4, 1), (5, 2), (6, 3)]
    assert [s.weight for s in shares] == pytest.approx([1.0, 2.0, 2.0, 1.0])


def test_an_off_grid_station_is_interpolated_between_its_neighbouring_slices() -> None:
    grid = _grid(8)
    depths = np.array([7.5, 12.5, 17.5, 22.5, 27.5])  # half a slice off the grid
    inside = np.arange(2, 6)  # grid 10, 15, 20, 25
    shares = station_contributions(
        grid, inside, depths, (7.5, 27.5), spacing=SPACING, tolerance=0.1, on_grid=False
    )
    by_grid: dict[int, list[tuple[int, float]]] = {}
    for share in shares:
        by_grid.setdefault(share.grid_index, []).append((share.slice_index, share.weight))
    assert sorted(by_grid) == [2, 3, 4, 5]
    edge = edge_weights(grid[inside], 7.5, 27.5, SPACING)
    for (k, parts), weight in zip(sorted(by_grid.items()), edge, strict=True):
        # two neighbours, half each: grid 10 lies between 7.5 and 12.5
        assert [index for index, _ in parts] == [k - 2, k - 1]
        assert [w for _, w in parts] == pytest.approx([weight / 2, weight / 2])


def test_interpolation_fractions_follow_the_distance() -> None:
    grid = np.array([0.0, 5.0, 10.0])
    depths = np.array([4.0, 9.0])
    shares = station_contributions(
        grid, np.array([1]), depths, (4.0, 9.0), spacing=SPACING, tolerance=0.05, on_grid=False
    )
    weight = edge_weights(np.array([5.0]), 4.0, 9.0, SPACING)[0]
    assert [(s.slice_index, s.weight) for s in shares] == [
        (0, pytest.approx(0.8 * weight)),
        (1, pytest.approx(0.2 * weight)),
    ]


def test_a_single_slice_station_contributes_that_slice() -> None:
    shares = station_contributions(
        _grid(3),
        np.array([1]),
        np.array([5.0]),
        (5.0, 5.0),
        spacing=SPACING,
        tolerance=0.1,
        on_grid=True,
    )
    assert [(s.grid_index, s.slice_index, s.weight) for s in shares] == [(1, 0, 1.0)]
