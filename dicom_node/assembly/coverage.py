"""How much of the body an exam covers, and what is missing from it.

A whole-body DWI exam is acquired in stations (4-6 of 40-50 slices, vertex or
skull base to mid-thigh). Scanners send them as they are acquired, so an exam
may look complete to the quiet period while a station is still on its way; an
exam processed then reports the tumour load of part of the body as if it were
the whole. :class:`ExamCoverage` describes the stations found (their extent
along the body axis and their b-values); :meth:`ExamCoverage.findings` says,
as :class:`~processing.quality.QualityFinding` objects, what is missing:

``stations_missing``
    fewer stations than expected for the sending scanner (a setting);
``coverage_short``
    the stations span less than the expected head-to-feet length (a setting);
``station_gap``
    a gap between two stations (a station in between has not arrived);
``b_value_missing``
    a station lacks a b-value that other stations have;
``station_incomplete``
    a station has fewer slices at one b-value than at another.

Every finding is ``unreliable``: the tumour load then covers only the imaged
part of the body. The node holds such an exam for an extra wait
(``completion.incomplete_extra_wait_seconds``, ``docs/service.md``) and then
processes it with these findings in its verdict. The last three cannot reach a
processed result (assembly refuses a gap or a missing b-value), so they matter
while the exam is held.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from processing.quality import QualityFinding, Verdict
from processing.results import ProcessingResult

__all__ = [
    "B_VALUE_MISSING",
    "COVERAGE_SHORT",
    "STATIONS_MISSING",
    "STATION_GAP",
    "STATION_INCOMPLETE",
    "CoverageExpectation",
    "ExamCoverage",
    "StationExtent",
    "with_coverage_findings",
]

STATIONS_MISSING = "stations_missing"
COVERAGE_SHORT = "coverage_short"
STATION_GAP = "station_gap"
B_VALUE_MISSING = "b_value_missing"
STATION_INCOMPLETE = "station_incomplete"

_PARTIAL_WHOLE_BODY = (
    "the tumour load, the histogram and any comparison cover only the imaged part of the body"
)


@dataclass(frozen=True, slots=True)
class CoverageExpectation:
    """What a complete exam of one scanner looks like (``[completion]`` and ``[[calling_ae]]``).

    ``None`` leaves a check out. ``source`` names where the values come from,
    for the messages (e.g. ``"calling AE SCANNER1"``).
    """

    stations: int | None = None
    min_extent_mm: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if self.stations is not None and self.stations < 1:
            raise ValueError(f"expected stations must be at least 1, got {self.stations}")
        if self.min_extent_mm is not None and not self.min_extent_mm > 0:
            raise ValueError(f"expected coverage must be > 0 mm, got {self.min_extent_mm}")

    def to_dict(self) -> dict[str, Any]:
        """JSON values (for a job spec)."""
        return {
            "stations": self.stations,
            "min_extent_mm": self.min_extent_mm,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CoverageExpectation:
        """Inverse of :meth:`to_dict`."""
        stations = data.get("stations")
        extent = data.get("min_extent_mm")
        return cls(
            stations=None if stations is None else int(stations),
            min_extent_mm=None if extent is None else float(extent),
            source=str(data.get("source", "")),
        )


@dataclass(frozen=True, slots=True)
class StationExtent:
    """One station: where it lies along the body axis and what it holds.

    ``start_mm`` and ``end_mm`` are the depths of its first and last slice
    (depth grows from head to feet, :mod:`dicom_node.assembly.stations`);
    ``slices_per_b`` the number of slices at each b-value (rounded, s/mm2).
    """

    start_mm: float
    end_mm: float
    slices_per_b: Mapping[int, int]

    @property
    def b_values(self) -> tuple[int, ...]:
        """The b-values of the station, ascending."""
        return tuple(sorted(self.slices_per_b))


@dataclass(frozen=True, slots=True)
class ExamCoverage:
    """The stations of an exam, head first, and their common slice spacing (mm)."""

    stations: tuple[StationExtent, ...]
    spacing_mm: float

    @property
    def extent_mm(self) -> float:
        """Head-to-feet length covered, from the first slice's to the last slice's far edge."""
        if not self.stations:
            return 0.0
        first = min(s.start_mm for s in self.stations)
        last = max(s.end_mm for s in self.stations)
        return last - first + self.spacing_mm

    @property
    def b_values(self) -> tuple[int, ...]:
        """Every b-value of the exam, ascending."""
        return tuple(sorted({b for s in self.stations for b in s.slices_per_b}))

    def gaps(self) -> tuple[tuple[int, int, float], ...]:
        """``(station above, station below, unimaged mm)`` for each gap (1-based numbers).

        A gap is more than one slice spacing between the last slice of a station
        and the first of the next (the same rule as assembly's).
        """
        tolerance = max(0.05, 0.02 * self.spacing_mm)
        found = []
        reach = self.stations[0].end_mm if self.stations else 0.0
        for number, station in enumerate(self.stations[1:], start=2):
            if station.start_mm - reach > self.spacing_mm + tolerance:
                found.append((number - 1, number, station.start_mm - reach - self.spacing_mm))
            reach = max(reach, station.end_mm)
        return tuple(found)

    def measures(self) -> dict[str, float | int | None]:
        """The coverage signals for :attr:`processing.quality.QualityAssessment.measures`."""
        return {"stations": len(self.stations), "coverage_mm": round(self.extent_mm, 1)}

    def findings(self, expected: CoverageExpectation) -> tuple[QualityFinding, ...]:
        """What is missing compared with ``expected`` and within the exam itself."""
        found = [*self._expectation_findings(expected), *self._gap_findings()]
        found.extend(self._b_value_findings())
        return tuple(found)

    def _expectation_findings(self, expected: CoverageExpectation) -> list[QualityFinding]:
        found = []
        source = f" for {expected.source}" if expected.source else ""
        count = len(self.stations)
        if expected.stations is not None and count < expected.stations:
            found.append(
                QualityFinding(
                    code=STATIONS_MISSING,
                    severity=Verdict.UNRELIABLE,
                    message=(
                        f"The exam has {count} of the {expected.stations} stations expected"
                        f"{source} ({self.extent_mm:.0f} mm from head to feet): "
                        f"{_PARTIAL_WHOLE_BODY}."
                    ),
                    value=float(count),
                    limit=float(expected.stations),
                )
            )
        if expected.min_extent_mm is not None and self.extent_mm < expected.min_extent_mm:
            found.append(
                QualityFinding(
                    code=COVERAGE_SHORT,
                    severity=Verdict.UNRELIABLE,
                    message=(
                        f"The exam covers {self.extent_mm:.0f} mm from head to feet, less than "
                        f"the {expected.min_extent_mm:.0f} mm expected{source}: "
                        f"{_PARTIAL_WHOLE_BODY}."
                    ),
                    value=round(self.extent_mm, 1),
                    limit=float(expected.min_extent_mm),
                )
            )
        return found

    def _gap_findings(self) -> list[QualityFinding]:
        gaps = self.gaps()
        if not gaps:
            return []
        where = "; ".join(f"{mm:.0f} mm between stations {a} and {b}" for a, b, mm in gaps)
        return [
            QualityFinding(
                code=STATION_GAP,
                severity=Verdict.UNRELIABLE,
                message=(
                    f"Part of the body between stations is not imaged ({where}): a station "
                    "may be missing."
                ),
                value=round(sum(mm for _, _, mm in gaps), 1),
                limit=0.0,
            )
        ]

    def _b_value_findings(self) -> list[QualityFinding]:
        found = []
        every = self.b_values
        lacking = [
            (number, [b for b in every if b not in station.slices_per_b])
            for number, station in enumerate(self.stations, start=1)
        ]
        lacking = [(number, missing) for number, missing in lacking if missing]
        if lacking:
            where = "; ".join(
                f"station {n} has no b={', '.join(str(b) for b in missing)}"
                for n, missing in lacking
            )
            found.append(
                QualityFinding(
                    code=B_VALUE_MISSING,
                    severity=Verdict.UNRELIABLE,
                    message=f"A b-value is missing from a station that others have ({where}).",
                    value=float(sum(len(missing) for _, missing in lacking)),
                    limit=0.0,
                )
            )
        partial = [
            (number, station)
            for number, station in enumerate(self.stations, start=1)
            if len(set(station.slices_per_b.values())) > 1
        ]
        if partial:
            where = "; ".join(
                f"station {n}: "
                + ", ".join(f"b={b} {k}" for b, k in sorted(station.slices_per_b.items()))
                + " slices"
                for n, station in partial
            )
            found.append(
                QualityFinding(
                    code=STATION_INCOMPLETE,
                    severity=Verdict.UNRELIABLE,
                    message=f"A station has fewer slices at one b-value than another ({where}).",
                    value=float(len(partial)),
                    limit=0.0,
                )
            )
        return found


def with_coverage_findings(
    result: ProcessingResult, coverage: ExamCoverage | None, expected: CoverageExpectation | None
) -> ProcessingResult:
    """``result`` with what its exam's coverage lacks added to the verdict.

    The coverage measures (stations, head-to-feet mm) are added as well; without
    a coverage (an exam assembled elsewhere) the result is returned as it is.
    """
    if coverage is None:
        return result
    findings = coverage.findings(expected or CoverageExpectation())
    return replace(result, quality=result.quality.with_findings(findings, coverage.measures()))
