"""Composing DWI stations onto one cranio-caudal grid.

The rules (also in ``docs/assembly.md``):

- Geometry is checked first: one ImageOrientationPatient (within 1e-3), one
  matrix and one pixel spacing (within 0.1 %) for every frame, and the same
  in-plane offset (within a tenth of a pixel): the table moves along the body
  axis only.
- *Depth* is the position along the slice normal, signed so that it grows from
  head to feet (LPS: +Z is superior). Output slice 0 is the most cranial.
- A *stack* is the frames of one (series, acquisition, b-value): AcquisitionNumber
  for classic images, StackID for Enhanced MR. Stacks of one series and
  acquisition form an *acquisition*; acquisitions whose depth ranges overlap by
  more than half of the shorter one and hold different b-values are one *station*
  (so ``station-b`` splits come together). Two overlapping acquisitions with the
  same b-value are a repeat: the later series (higher SeriesNumber, then
  AcquisitionNumber) is used and the earlier is reported as superseded.
- Every station must hold every b-value of the exam, with the same slice
  positions, at a regular spacing; all stations must share that spacing (1 %).
- The grid starts at the most cranial slice and steps by that spacing. A station
  whose slices lie within ``max(0.05 mm, 2 % of the spacing)`` of grid positions
  is placed as it is; otherwise it is resampled onto the grid by linear
  interpolation along the body axis (never extrapolated).
- Where stations overlap, slices are blended with weights that grow linearly
  with the distance from each station's own edge (1 at the edge slice, +1 per
  slice inwards), so that each station's edge slices, where B0 inhomogeneity and
  coil coverage are worst, contribute least. Equal inputs give the same value.
  (The weights and interpolation fractions: :mod:`processing.station_blend`.)
- A grid slice that no station covers is a gap between stations: an error.

:func:`survey_stations` groups the frames received so far into stations the
same way without checking or composing them (no pixels needed): what
:class:`~dicom_node.assembly.coverage.ExamCoverage` reports as missing while an exam is
still arriving.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from dicom_node.assembly.coverage import ExamCoverage, StationExtent
from dicom_node.assembly.dwi_frames import DwiFrame, SeriesHeader
from dicom_node.errors import (
    AssemblyError,
    DuplicateSliceError,
    GeometryMismatchError,
    MissingSlicesError,
    MixedOrientationError,
    StationGapError,
    ZeroSignalError,
)
from processing.exam import SourceRef
from processing.station_blend import edge_weights, is_on_grid, station_contributions

__all__ = ["ComposedVolume", "SupersededSeries", "compose_stations", "survey_stations"]

_ORIENTATION_TOLERANCE = 1e-3
_SPACING_RELATIVE_TOLERANCE = 1e-3
_SLICE_SPACING_RELATIVE_TOLERANCE = 0.01


@dataclass(frozen=True, slots=True)
class SupersededSeries:
    """A series whose every acquisition was replaced by a later repeat."""

    series: SeriesHeader
    reason: str


@dataclass(frozen=True, slots=True)
class ComposedVolume:
    """The composed grid and what went into it."""

    signal: NDArray[np.float32]
    b_values: tuple[float, ...]
    affine: NDArray[np.float64]
    spacing_mm: tuple[float, float, float]
    stations: int
    series_used: tuple[SeriesHeader, ...]
    sources: tuple[SourceRef, ...]
    superseded: tuple[SupersededSeries, ...]
    resampled_stations: tuple[int, ...]
    coverage: ExamCoverage | None = None


@dataclass(slots=True)
class _Stack:
    series: SeriesHeader
    acquisition: str
    b_key: int
    frames: list[DwiFrame]
    depths: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    def label(self) -> str:
        return f"b={self.b_key}" + (f" acquisition {self.acquisition}" if self.acquisition else "")


@dataclass(slots=True)
class _Station:
    stacks: dict[int, _Stack]
    start: float = 0.0
    end: float = 0.0

    def extend(self, stacks: dict[int, _Stack]) -> None:
        self.stacks.update(stacks)
        self.start = min(float(s.depths[0]) for s in self.stacks.values())
        self.end = max(float(s.depths[-1]) for s in self.stacks.values())

    @property
    def series(self) -> SeriesHeader:
        return min((s.series for s in self.stacks.values()), key=lambda h: h.sort_key)

    @property
    def recency(self) -> tuple[int, str, str]:
        stack = max(self.stacks.values(), key=lambda s: s.series.sort_key)
        number, uid = stack.series.sort_key
        return (number, _natural(stack.acquisition), uid)


def _natural(text: str) -> str:
    return text.zfill(12) if text.isdigit() else text


def _fail(error: type[AssemblyError], reason: str, series: SeriesHeader) -> AssemblyError:
    return error(reason, series_uid=series.uid, series_description=series.description)


def _check_orientation(frames: Sequence[DwiFrame]) -> tuple[NDArray[np.float64], ...]:
    reference = frames[0]
    orientations = np.array([f.orientation for f in frames], dtype=np.float64)
    deviation = np.abs(orientations - orientations[0]).max(axis=1)
    worst = int(np.argmax(deviation))
    if deviation[worst] > _ORIENTATION_TOLERANCE:
        other = frames[worst]
        raise _fail(
            MixedOrientationError,
            f"ImageOrientationPatient {list(other.orientation)} differs from "
            f"{list(reference.orientation)} of series {reference.series.uid} "
            f"({reference.series.description})",
            other.series,
        )
    row = orientations[0, :3] / np.linalg.norm(orientations[0, :3])
    column = orientations[0, 3:] / np.linalg.norm(orientations[0, 3:])
    if abs(float(row @ column)) > 1e-3:
        raise _fail(
            MixedOrientationError,
            f"ImageOrientationPatient {list(reference.orientation)} is not orthogonal",
            reference.series,
        )
    return row, column


def _check_matrix(frames: Sequence[DwiFrame]) -> tuple[int, int, float, float]:
    reference = frames[0]
    rows, columns = reference.shape
    spacing = np.array(reference.pixel_spacing)
    for frame in frames:
        if frame.shape != (rows, columns):
            raise _fail(
                GeometryMismatchError,
                f"matrix {frame.shape[0]}x{frame.shape[1]} differs from {rows}x{columns} of "
                f"series {reference.series.uid} ({reference.series.description})",
                frame.series,
            )
        if np.any(np.abs(np.array(frame.pixel_spacing) - spacing) > spacing * 1e-3):
            raise _fail(
                GeometryMismatchError,
                f"pixel spacing {list(frame.pixel_spacing)} mm differs from "
                f"{list(reference.pixel_spacing)} mm of series {reference.series.uid} "
                f"({reference.series.description})",
                frame.series,
            )
    return rows, columns, float(spacing[0]), float(spacing[1])


def _build_stacks(
    frames: Sequence[DwiFrame],
    depth_of: NDArray[np.float64],
    tolerance: float,
    *,
    check: bool = True,
) -> dict[tuple[str, str], dict[int, _Stack]]:
    """Group frames into stacks keyed by (series, acquisition) then b-value.

    ``check`` refuses duplicate positions and all-zero stacks (``False``: a
    survey, which may have no pixels).
    """
    stacks: dict[tuple[str, str, int], _Stack] = {}
    depth_by_frame: dict[int, float] = {}
    for index, frame in enumerate(frames):
        key = (frame.series.uid, frame.acquisition, round(frame.b_value))
        stack = stacks.get(key)
        if stack is None:
            stack = stacks[key] = _Stack(frame.series, frame.acquisition, key[2], [])
        stack.frames.append(frame)
        depth_by_frame[id(frame)] = float(depth_of[index])
    acquisitions: dict[tuple[str, str], dict[int, _Stack]] = {}
    for (series_uid, acquisition, b_key), stack in stacks.items():
        stack.frames.sort(key=lambda f: depth_by_frame[id(f)])
        stack.depths = np.array([depth_by_frame[id(f)] for f in stack.frames])
        if check:
            _check_stack(stack, tolerance)
        acquisitions.setdefault((series_uid, acquisition), {})[b_key] = stack
    return acquisitions


def _check_stack(stack: _Stack, tolerance: float) -> None:
    """Refuse two images at one position, and a stack of all-zero images."""
    steps = np.diff(stack.depths)
    if steps.size and float(steps.min()) < tolerance:
        at = int(np.argmin(steps))
        raise _fail(
            DuplicateSliceError,
            f"two images at the same position {list(stack.frames[at].position)} for "
            f"{stack.label()} ({stack.frames[at].path}, {stack.frames[at + 1].path}); "
            "nothing (AcquisitionNumber, StackID) tells their stations apart",
            stack.series,
        )
    if max(f.max_value() for f in stack.frames) <= 0:
        raise _fail(
            ZeroSignalError,
            f"all {len(stack.frames)} images at {stack.label()} are zero (no signal)",
            stack.series,
        )


def _overlap_fraction(a_start: float, a_end: float, b_start: float, b_end: float) -> float:
    overlap = min(a_end, b_end) - max(a_start, b_start)
    shortest = min(a_end - a_start, b_end - b_start)
    if shortest <= 0:
        return 1.0 if overlap >= 0 else 0.0
    return overlap / shortest


def _stack_recency(stack: _Stack) -> tuple[int, str, str]:
    number, uid = stack.series.sort_key
    return (number, _natural(stack.acquisition), uid)


def _group_stations(
    acquisitions: dict[tuple[str, str], dict[int, _Stack]],
) -> tuple[list[_Station], list[_Stack]]:
    """Merge acquisitions into stations; return (stations, superseded stacks).

    An acquisition joins a station when their depth ranges overlap by more than
    half of the shorter one. Where both hold the same b-value, the later stack
    (SeriesNumber, then AcquisitionNumber) is kept: a repeated acquisition.
    """
    pending = []
    for stacks in acquisitions.values():
        station = _Station({})
        station.extend(stacks)
        pending.append(station)
    pending.sort(key=lambda s: (s.start, s.recency))
    stations: list[_Station] = []
    superseded: list[_Stack] = []
    for candidate in pending:
        target = next(
            (
                station
                for station in stations
                if _overlap_fraction(station.start, station.end, candidate.start, candidate.end)
                > 0.5
            ),
            None,
        )
        if target is None:
            stations.append(candidate)
            continue
        merged = dict(target.stacks)
        for b_key, stack in candidate.stacks.items():
            current = merged.get(b_key)
            if current is None or _stack_recency(stack) > _stack_recency(current):
                if current is not None:
                    superseded.append(current)
                merged[b_key] = stack
            else:
                superseded.append(stack)
        target.stacks = {}
        target.extend(merged)
    stations.sort(key=lambda s: s.start)
    return stations, superseded


def _check_station(
    number: int, station: _Station, b_keys: Sequence[int], tolerance: float
) -> float:
    """Check one station's stacks agree; return its slice spacing."""
    reference = max(station.stacks.values(), key=lambda s: len(s.frames))
    for b_key in b_keys:
        stack = station.stacks.get(b_key)
        if stack is None:
            raise _fail(
                MissingSlicesError,
                f"station {number} has no images at b={b_key} (it has b={sorted(station.stacks)})",
                reference.series,
            )
        missing = [
            float(d) for d in reference.depths if float(np.abs(stack.depths - d).min()) > tolerance
        ]
        extra = len(stack.depths) - (len(reference.depths) - len(missing))
        if missing or extra:
            nearest = [int(np.argmin(np.abs(reference.depths - d))) for d in missing[:5]]
            where = ", ".join(f"z={reference.frames[i].position[2]:.1f}" for i in nearest)
            raise _fail(
                MissingSlicesError,
                f"station {number}: {len(stack.frames)} slices at {stack.label()} but "
                f"{len(reference.frames)} at {reference.label()}"
                + (f"; missing positions {where} mm" if missing else ""),
                stack.series,
            )
    steps = np.diff(reference.depths)
    if steps.size == 0:
        declared = reference.frames[0].slice_spacing
        if declared is None or declared <= 0:
            raise _fail(
                GeometryMismatchError,
                f"station {number} has a single slice and no SpacingBetweenSlices/SliceThickness",
                reference.series,
            )
        return declared
    spacing = float(np.median(steps))
    for at, step in enumerate(steps):
        if step > 1.5 * spacing:
            above = reference.frames[at].position[2]
            below = reference.frames[at + 1].position[2]
            raise _fail(
                MissingSlicesError,
                f"station {number} ({reference.label()} and every other b-value): "
                f"{round(step / spacing) - 1} slice(s) missing between z={above:.1f} and "
                f"z={below:.1f} mm (spacing {spacing:.3g} mm)",
                reference.series,
            )
        if abs(step - spacing) > tolerance:
            raise _fail(
                GeometryMismatchError,
                f"station {number}: irregular slice spacing {step:.3g} mm (typical "
                f"{spacing:.3g} mm) at z={reference.frames[at].position[2]:.1f} mm",
                reference.series,
            )
    return spacing


def _depths(
    frames: Sequence[DwiFrame], row: NDArray[np.float64], column: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], float]:
    """Body axis, positions, depth of each frame and the position tolerance."""
    normal = np.cross(row, column)
    # Depth grows from head to feet: LPS +Z is superior.
    axis = -normal if normal[2] >= 0 else normal
    positions = np.array([f.position for f in frames], dtype=np.float64)
    depth_of = positions @ axis
    nominal = next((f.slice_spacing for f in frames if f.slice_spacing), None)
    return axis, positions, depth_of, max(0.05, 0.02 * (nominal or 1.0))


def _extent(station: _Station) -> StationExtent:
    return StationExtent(
        start_mm=station.start,
        end_mm=station.end,
        slices_per_b={b: len(stack.frames) for b, stack in sorted(station.stacks.items())},
    )


def survey_stations(frames: Sequence[DwiFrame]) -> ExamCoverage:
    """The stations of ``frames``, grouped as :func:`compose_stations` does, unchecked.

    For an exam still arriving: no slice, b-value or gap rule is applied, no
    pixel is read (frames read with ``read_instance(..., pixels=False)`` do).
    The slice spacing is the median step of the stacks (the declared one for
    single slices).

    Raises
    ------
    MixedOrientationError
        The frames have no common body axis.
    """
    if not frames:
        return ExamCoverage((), 0.0)
    row, column = _check_orientation(frames)
    _, _, depth_of, tolerance = _depths(frames, row, column)
    stations, _ = _group_stations(_build_stacks(frames, depth_of, tolerance, check=False))
    steps = [
        float(np.median(np.diff(stack.depths)))
        for station in stations
        for stack in station.stacks.values()
        if stack.depths.size > 1
    ]
    declared = next((f.slice_spacing for f in frames if f.slice_spacing), None) or 0.0
    spacing = float(np.median(steps)) if steps else declared
    return ExamCoverage(tuple(_extent(station) for station in stations), spacing)


def compose_stations(frames: Sequence[DwiFrame]) -> ComposedVolume:
    """Compose DWI frames (of two or more b-values) onto one cranio-caudal grid.

    Raises
    ------
    MixedOrientationError, GeometryMismatchError, DuplicateSliceError,
    MissingSlicesError, StationGapError, ZeroSignalError
        See the module docstring for the rules.
    """
    if not frames:
        raise ValueError("no frames to compose")
    row, column = _check_orientation(frames)
    rows, columns, row_spacing, column_spacing = _check_matrix(frames)
    axis, positions, depth_of, tolerance = _depths(frames, row, column)
    in_plane = _in_plane_offsets(
        frames, positions - np.outer(depth_of, axis), 0.1 * min(row_spacing, column_spacing)
    )

    acquisitions = _build_stacks(frames, depth_of, tolerance)
    stations, repeats = _group_stations(acquisitions)
    b_keys = sorted({b for station in stations for b in station.stacks})
    spacing = _common_slice_spacing(stations, b_keys, tolerance)
    tolerance = max(0.05, 0.02 * spacing)

    origin_depth = min(station.start for station in stations)
    # The grid never reaches past the last slice (no extrapolation).
    extent = max(station.end for station in stations) - origin_depth
    n_slices = int(np.floor((extent + tolerance) / spacing)) + 1
    grid = _Grid(
        depths=origin_depth + spacing * np.arange(n_slices, dtype=np.float64),
        origin=origin_depth,
        spacing=spacing,
        tolerance=tolerance,
    )
    covered = _check_coverage(stations, grid.depths, tolerance, spacing)
    blend = _blend(stations, b_keys, grid, covered, (rows, columns))

    affine = np.eye(4)
    affine[:3, 0] = axis * spacing
    affine[:3, 1] = column * row_spacing
    affine[:3, 2] = row * column_spacing
    affine[:3, 3] = in_plane[0] + origin_depth * axis
    sources = sorted(
        blend.sources, key=lambda s: (s.b_value, s.slice_index, s.path, s.frame_number or 0)
    )
    used = {stack.series.uid: stack.series for s in stations for stack in s.stacks.values()}
    superseded = _superseded_series(stations, repeats)
    return ComposedVolume(
        signal=blend.signal,
        b_values=blend.b_values,
        affine=affine,
        spacing_mm=(spacing, row_spacing, column_spacing),
        stations=len(stations),
        series_used=tuple(sorted(used.values(), key=lambda h: h.sort_key)),
        sources=tuple(sources),
        superseded=superseded,
        resampled_stations=blend.resampled,
        coverage=ExamCoverage(tuple(_extent(station) for station in stations), spacing),
    )


def _in_plane_offsets(
    frames: Sequence[DwiFrame], in_plane: NDArray[np.float64], max_shift: float
) -> NDArray[np.float64]:
    """``in_plane`` (each frame's position off the body axis), checked to be one point.

    Raises
    ------
    GeometryMismatchError
        A frame lies more than ``max_shift`` mm beside the first one.
    """
    shift = np.linalg.norm(in_plane - in_plane[0], axis=1)
    worst = int(np.argmax(shift))
    if shift[worst] > max_shift:
        raise _fail(
            GeometryMismatchError,
            f"in-plane position {list(frames[worst].position)} is shifted by "
            f"{shift[worst]:.2f} mm from series {frames[0].series.uid}: stations must differ "
            "only along the body axis",
            frames[worst].series,
        )
    return in_plane


def _common_slice_spacing(stations: list[_Station], b_keys: list[int], tolerance: float) -> float:
    """The slice spacing of station 1, after checking every station and that all agree."""
    spacings = [
        _check_station(number, station, b_keys, tolerance)
        for number, station in enumerate(stations, start=1)
    ]
    spacing = spacings[0]
    for number, (station, other) in enumerate(zip(stations, spacings, strict=True), start=1):
        if abs(other - spacing) > _SLICE_SPACING_RELATIVE_TOLERANCE * spacing:
            raise _fail(
                GeometryMismatchError,
                f"station {number} has slice spacing {other:.4g} mm, station 1 has "
                f"{spacing:.4g} mm",
                station.series,
            )
    return spacing


@dataclass(frozen=True, slots=True)
class _Grid:
    """The cranio-caudal grid the stations are composed onto (depths in mm)."""

    depths: NDArray[np.float64]
    origin: float
    spacing: float
    tolerance: float


@dataclass(frozen=True, slots=True)
class _Blend:
    """The stations' signal on the grid, and where each grid slice came from."""

    signal: NDArray[np.float32]
    b_values: tuple[float, ...]
    sources: list[SourceRef]
    resampled: tuple[int, ...]


def _blend(
    stations: list[_Station],
    b_keys: list[int],
    grid: _Grid,
    covered: list[NDArray[np.intp]],
    matrix: tuple[int, int],
) -> _Blend:
    """Resample each station's stacks onto ``grid`` and blend overlaps by edge weights.

    ``covered`` holds the grid slices each station covers; ``matrix`` is (rows, columns).
    """
    b_values = tuple(
        float(np.mean([f.b_value for s in stations for f in s.stacks[b].frames])) for b in b_keys
    )
    signal = np.zeros((len(b_keys), grid.depths.size, *matrix), dtype=np.float32)
    weight_sum = np.zeros(grid.depths.size, dtype=np.float64)
    sources: list[SourceRef] = []
    resampled: list[int] = []
    for number, station in enumerate(stations, start=1):
        reference = next(iter(station.stacks.values()))
        on_grid = is_on_grid(reference.depths, grid.origin, grid.spacing, grid.tolerance)
        if not on_grid:
            resampled.append(number)
        inside = covered[number - 1]
        weight_sum[inside] += edge_weights(
            grid.depths[inside], station.start, station.end, grid.spacing
        )
        for b_index, b_key in enumerate(b_keys):
            stack = station.stacks[b_key]
            contributions = station_contributions(
                grid.depths,
                inside,
                stack.depths,
                (station.start, station.end),
                spacing=grid.spacing,
                tolerance=grid.tolerance,
                on_grid=on_grid,
            )
            for share in contributions:
                frame = stack.frames[share.slice_index]
                plane = signal[b_index, share.grid_index]
                plane += np.float32(share.weight * frame.slope) * frame.stored
                if frame.intercept:
                    plane += np.float32(share.weight * frame.intercept)
                sources.append(
                    SourceRef(
                        path=frame.path,
                        sop_class_uid=frame.sop_class_uid,
                        sop_instance_uid=frame.sop_instance_uid,
                        series_instance_uid=frame.series.uid,
                        b_value=b_values[b_index],
                        slice_index=share.grid_index,
                        frame_number=frame.frame_number,
                    )
                )

    signal /= weight_sum.astype(np.float32)[None, :, None, None]
    return _Blend(signal, b_values, sources, tuple(resampled))


def _check_coverage(
    stations: list[_Station], grid: NDArray[np.float64], tolerance: float, spacing: float
) -> list[NDArray[np.intp]]:
    """The grid slices each station covers; raise when one is covered by none."""
    covered = np.zeros(grid.size, dtype=bool)
    inside_per_station = []
    for station in stations:
        inside = np.nonzero(
            (grid >= station.start - tolerance) & (grid <= station.end + tolerance)
        )[0]
        covered[inside] = True
        inside_per_station.append(inside)
    if covered.all():
        return inside_per_station
    first = int(np.argmin(covered))
    above = max(
        (n for n, s in enumerate(stations, start=1) if s.end < grid[first]),
        key=lambda n: stations[n - 1].end,
        default=1,
    )
    below = min(
        (n for n, s in enumerate(stations, start=1) if s.start > grid[first]),
        key=lambda n: stations[n - 1].start,
        default=len(stations),
    )
    gap = stations[below - 1].start - stations[above - 1].end - spacing
    raise _fail(
        StationGapError,
        f"station {above} (series {stations[above - 1].series.uid}) ends "
        f"{stations[below - 1].start - stations[above - 1].end:.1f} mm above the start of "
        f"station {below}, leaving {max(gap, 0.0):.1f} mm (one or more grid slices) unimaged; "
        "stations must touch or overlap",
        stations[below - 1].series,
    )


def _superseded_series(
    stations: list[_Station], repeats: list[_Stack]
) -> tuple[SupersededSeries, ...]:
    """Series none of whose stacks is used because later repeats replaced them."""
    used = {stack.series.uid for s in stations for stack in s.stacks.values()}
    result: dict[str, SupersededSeries] = {}
    for repeat in repeats:
        uid = repeat.series.uid
        if uid in used or uid in result:
            continue
        replacement = next(
            (
                s.stacks[repeat.b_key]
                for s in stations
                if repeat.b_key in s.stacks
                and _overlap_fraction(
                    s.start, s.end, float(repeat.depths[0]), float(repeat.depths[-1])
                )
                > 0.5
            ),
            None,
        )
        by = (
            f"series {replacement.series.number} ({replacement.series.description})"
            if replacement is not None
            else "a later series"
        )
        result[uid] = SupersededSeries(
            repeat.series, f"repeated acquisition of a station: superseded by {by}"
        )
    return tuple(sorted(result.values(), key=lambda s: s.series.sort_key))
