"""Bone lesions of the numerical phantom and the follow-up scenarios.

The lesion set is a property of the patient: :func:`plan_lesions` draws it from a
generator seeded with the patient ID, so every time point of one patient holds
the same lesions. Each lesion is an ellipsoid centred in the marrow of one bone,
shaped to the room the bone offers (vertebral bodies, sacrum, ilium, pubic
ramus, ribs, femora, skull diploe), with its own S0 and a mean ADC of 600-1700
um2/s; inside it the ADC varies smoothly with the normalised radius ``r``
(``ADC = mean * (1 + g (r^2 - <r^2>))``, ``|g| <= 0.25``, ``<r^2>`` the average
over the lesion's voxels, so that the mean over its voxels is the nominal mean).
Baseline volumes run from 0.3 ml (a rib) to ~50 ml (the sacrum); one lesion sits
next to a kidney, one next to the bladder.

Scenarios (issue 6) change the lesions as a treatment course would:

========== ===================================================================
baseline   the lesions as planned
response   every lesion: ADC x 1.45, volume x 0.70 (radii x 0.70^(1/3))
partial    every lesion: ADC x 1.30, volume x 0.90
progression every lesion: ADC x 0.92, volume x 1.40; two or three new lesions
stable     unchanged
========== ===================================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np
from numpy.typing import NDArray

from processing.phantom_anatomy import Anatomy, BoneSite
from processing.phantom_shapes import Ellipsoid, rotation_matrix
from processing.phantom_tissues import MUSCLE_S0

__all__ = [
    "SCENARIOS",
    "LesionSpec",
    "Scenario",
    "apply_scenario",
    "plan_lesions",
]


@dataclass(frozen=True, slots=True)
class Scenario:
    """How one follow-up time point differs from the baseline."""

    name: str
    description: str
    adc_factor: float
    volume_factor: float
    new_lesions: bool


SCENARIOS: Mapping[str, Scenario] = MappingProxyType(
    {
        "baseline": Scenario("baseline", "baseline exam", 1.0, 1.0, False),
        "response": Scenario(
            "response", "response: lesion ADC +45 %, volume -30 %", 1.45, 0.70, False
        ),
        "partial": Scenario(
            "partial", "partial response: lesion ADC +30 %, volume -10 %", 1.30, 0.90, False
        ),
        "progression": Scenario(
            "progression",
            "progression: new lesions, existing lesion volume +40 %, ADC -8 %",
            0.92,
            1.40,
            True,
        ),
        "stable": Scenario("stable", "stable disease: no change", 1.0, 1.0, False),
    }
)
"""The time-point scenarios, by name."""


@dataclass(frozen=True, slots=True)
class LesionSpec:
    """One lesion in the nominal body frame.

    ``semi_mm`` are the ellipsoid's semi-axes in patient millimetres (along its
    own axes, oriented by ``rotation_deg``); ``adc_um2s`` is its nominal mean ADC
    and ``adc_gradient`` the radial variation ``g``; ``baseline_label`` is the
    label of the same lesion at baseline (``None`` for a lesion that is new).
    """

    label: int
    key: str
    bone: str
    region: str
    center: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]
    semi_mm: tuple[float, float, float]
    adc_um2s: float
    adc_gradient: float
    s0: float
    note: str
    baseline_label: int | None

    @property
    def nominal_volume_ml(self) -> float:
        """Volume of the continuous ellipsoid, ml."""
        a, b, c = self.semi_mm
        return 4.0 / 3.0 * math.pi * a * b * c / 1000.0


def _fit_semi(volume_ml: float, room: tuple[float, float, float]) -> tuple[float, float, float]:
    """Semi-axes of ``volume_ml`` shaped like ``room`` (square-root aspect), kept inside it.

    Axes that would leave the room are clamped to it and the others grow; a lesion
    larger than the whole room grows past it evenly (an expansile lesion).
    """
    target = volume_ml * 1000.0 * 3.0 / (4.0 * math.pi)  # product of semi-axes, mm3
    aspect = np.sqrt(np.asarray(room, dtype=np.float64))
    semi = aspect * (target / float(np.prod(aspect))) ** (1.0 / 3.0)
    clamped = np.zeros(3, dtype=bool)
    for _ in range(3):
        over = (semi > np.asarray(room)) & ~clamped
        if not over.any():
            break
        clamped |= over
        semi[clamped] = np.asarray(room)[clamped]
        free = ~clamped
        if not free.any():
            semi *= (target / float(np.prod(semi))) ** (1.0 / 3.0)
            break
        fixed = float(np.prod(semi[clamped]))
        semi[free] = aspect[free] * (target / fixed / float(np.prod(aspect[free]))) ** (
            1.0 / free.sum()
        )
    a, b, c = (float(v) for v in semi)
    return (a, b, c)


def _surface_points(ellipsoid: Ellipsoid, count: int = 300) -> NDArray[np.float64]:
    """Points ``(n, 3)`` as ``(x, y, h)`` spread evenly over an ellipsoid's surface."""
    i = np.arange(count) + 0.5
    polar = np.arccos(1.0 - 2.0 * i / count)
    azimuth = np.pi * (1.0 + 5.0**0.5) * i
    unit = np.stack(
        [np.sin(polar) * np.cos(azimuth), np.sin(polar) * np.sin(azimuth), np.cos(polar)], axis=1
    )
    matrix = rotation_matrix(ellipsoid.rotation_deg)
    points: NDArray[np.float64] = (unit * np.asarray(ellipsoid.semi_axes)) @ matrix.T + np.asarray(
        ellipsoid.center
    )
    return points


def _gap(first: Ellipsoid, second: Ellipsoid) -> float:
    """Smallest distance between two ellipsoids' surfaces (sampled), mm; 0 when they overlap."""
    a, b = _surface_points(first), _surface_points(second, 900)
    if (
        first.contains(b[:, 2], b[:, 1], b[:, 0]).any()
        or second.contains(a[:, 2], a[:, 1], a[:, 0]).any()
    ):
        return 0.0
    return float(np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)).min())


def _place_at_gap(
    start: tuple[float, float, float],
    semi: tuple[float, float, float],
    neighbour: Ellipsoid,
    gap_mm: float,
    max_travel_mm: float,
) -> tuple[float, float, float]:
    """Centre moved from ``start`` along ``x`` towards ``neighbour`` to leave ``gap_mm``.

    The travel is limited to ``max_travel_mm`` either way so that the lesion stays
    centred in its bone; at the limit the gap is whatever remains.
    """
    side = 1.0 if neighbour.center[0] > start[0] else -1.0

    def moved(travel: float) -> tuple[float, float, float]:
        return (start[0] + side * travel, start[1], start[2])

    low, high = -max_travel_mm, max_travel_mm
    if _gap(Ellipsoid(moved(high), semi), neighbour) > gap_mm:
        return moved(high)
    for _ in range(10):  # to 2 * max_travel / 1024, a few hundredths of a mm
        middle = (low + high) / 2.0
        if _gap(Ellipsoid(moved(middle), semi), neighbour) > gap_mm:
            low = middle
        else:
            high = middle
    return moved(low)


def _rib_site(anatomy: Anatomy, side: int, number: int, phi: float) -> BoneSite:
    arc = anatomy.ribs[(side, number)]
    center = arc.centre_line(phi)
    tangent = (
        side * arc.ring_a * math.cos(phi),
        -arc.ring_b * math.sin(phi),
        arc.drop / (arc.phi_end - arc.phi_start),
    )
    norm = math.sqrt(sum(t * t for t in tangent))
    rotation = (
        0.0,
        math.degrees(-math.asin(tangent[2] / norm)),
        math.degrees(math.atan2(tangent[1], tangent[0])),
    )
    name = "left" if side > 0 else "right"
    room = (25.0, arc.thickness / 2.0, arc.height / 2.0)
    return BoneSite(f"rib {number} ({name})", "thorax", center, rotation, room)


def _side_name(side: int) -> str:
    return "left" if side > 0 else "right"


# One lesion of the catalogue: five facts by position, the rng and optional overrides by name.
def _spec(  # noqa: PLR0913
    label: int,
    key: str,
    site: BoneSite,
    volume_ml: float,
    adc: float,
    *,
    rng: np.random.Generator,
    note: str = "",
    center: tuple[float, float, float] | None = None,
    semi: tuple[float, float, float] | None = None,
) -> LesionSpec:
    return LesionSpec(
        label=label,
        key=key,
        bone=site.bone,
        region=site.region,
        center=site.center if center is None else center,
        rotation_deg=site.rotation_deg,
        semi_mm=_fit_semi(volume_ml, site.max_semi) if semi is None else semi,
        adc_um2s=adc,
        adc_gradient=float(rng.uniform(-0.25, 0.25)),
        s0=float(rng.uniform(2.0, 2.6)) * MUSCLE_S0,
        note=note,
        baseline_label=label,
    )


def plan_lesions(
    anatomy: Anatomy, rng: np.random.Generator
) -> tuple[tuple[LesionSpec, ...], tuple[LesionSpec, ...]]:
    """The patient's baseline lesions and the lesions that appear at progression.

    ``rng`` must be seeded from the patient ID (after the anatomy drew from it).
    """
    sites = anatomy.sites
    lesions: list[LesionSpec] = []

    def draw(low: float, high: float) -> float:
        return float(rng.uniform(low, high))

    def add(
        key: str,
        site: BoneSite,
        volume: float,
        adc: float,
        *,
        note: str = "",
        center: tuple[float, float, float] | None = None,
        semi: tuple[float, float, float] | None = None,
    ) -> None:
        label = len(lesions) + 1
        lesions.append(
            _spec(label, key, site, volume, adc, rng=rng, note=note, center=center, semi=semi)
        )

    sides = [int(s) for s in rng.permutation([-1, 1])]
    add("sacrum", sites["sacrum"], draw(45.0, 50.0), draw(600.0, 700.0))
    add(
        "ilium",
        sites[f"ilium_supra_acetabular_{_side_name(sides[0])}"],
        draw(10.0, 18.0),
        draw(850.0, 1000.0),
    )
    add(
        "pubic_ramus",
        sites[f"pubic_ramus_{_side_name(sides[1])}"],
        draw(2.0, 4.0),
        draw(900.0, 1050.0),
        note="close to the bladder",
    )
    # Transverse-process lesion (expansile) a few mm from a kidney.
    kidney_side = int(rng.choice([-1, 1]))
    kidney_level = str(rng.choice(["L2", "L3"]))
    site = sites[f"{kidney_level}_transverse_{_side_name(kidney_side)}"]
    semi = _fit_semi(draw(1.2, 2.0), (13.0, 7.0, 7.0))
    kidney = anatomy.organs[f"kidney_{_side_name(kidney_side)}"]
    add(
        "kidney_transverse_process",
        site,
        0.0,
        draw(750.0, 900.0),
        note=f"close to the {_side_name(kidney_side)} kidney",
        center=_place_at_gap(site.center, semi, kidney, draw(5.0, 8.0), site.max_semi[0]),
        semi=semi,
    )
    add("lumbar", sites[str(rng.choice(["L4", "L5"]))], draw(5.0, 9.0), draw(600.0, 700.0))
    add(
        "thoracic_upper",
        sites[str(rng.choice(["T4", "T5", "T6", "T7"]))],
        draw(2.5, 4.5),
        draw(700.0, 850.0),
    )
    add(
        "thoracic_lower",
        sites[str(rng.choice(["T9", "T10", "T11"]))],
        draw(2.0, 4.0),
        draw(1250.0, 1400.0),
    )
    add("cervical", sites[str(rng.choice(["C4", "C5", "C6"]))], draw(0.5, 0.8), draw(800.0, 950.0))
    posterior_rib = int(rng.integers(5, 9))
    add(
        "rib_posterior",
        _rib_site(anatomy, sides[0], posterior_rib, draw(0.55, 0.8)),
        draw(0.30, 0.40),
        draw(1000.0, 1150.0),
    )
    lateral_rib = int(rng.integers(3, 8))
    add(
        "rib_lateral",
        _rib_site(anatomy, sides[1], lateral_rib, draw(1.45, 1.7)),
        draw(0.6, 1.0),
        draw(900.0, 1000.0),
    )
    add(
        "femur_proximal",
        sites[f"femur_proximal_{_side_name(sides[1])}"],
        draw(5.0, 9.0),
        draw(750.0, 900.0),
    )
    add(
        "femur_shaft",
        sites[f"femur_shaft_{_side_name(sides[0])}"],
        draw(1.5, 3.0),
        draw(1550.0, 1700.0),
    )
    add(
        "skull", sites[f"skull_parietal_{_side_name(sides[0])}"], draw(0.8, 1.5), draw(800.0, 950.0)
    )
    baseline = tuple(lesions)

    new_candidates = [
        ("new_thoracic", sites["T2"], draw(1.5, 3.0), draw(700.0, 850.0)),
        (
            "new_rib",
            _rib_site(anatomy, sides[1], int(rng.integers(8, 10)), draw(1.9, 2.05)),
            draw(0.6, 1.0),
            draw(750.0, 900.0),
        ),
        (
            "new_iliac_wing",
            sites[f"iliac_wing_{_side_name(sides[1])}"],
            draw(3.0, 6.0),
            draw(700.0, 850.0),
        ),
    ]
    count = int(rng.integers(2, 4))
    new: list[LesionSpec] = []
    for key, new_site, volume, adc in new_candidates[:count]:
        spec = _spec(len(baseline) + len(new) + 1, key, new_site, volume, adc, rng=rng)
        new.append(replace(spec, baseline_label=None, note="new at progression"))
    return baseline, tuple(new)


def apply_scenario(
    baseline: tuple[LesionSpec, ...],
    new: tuple[LesionSpec, ...],
    scenario: Scenario,
    min_volume_ml: float,
) -> tuple[LesionSpec, ...]:
    """The lesions at one time point.

    Lesions smaller than ``min_volume_ml`` (a preset's resolution limit) are first
    grown to it; then the scenario's factors apply: radii scale by the cube root
    of the volume factor and every ADC by the ADC factor. New lesions appear at
    their planned size.
    """
    scale = scenario.volume_factor ** (1.0 / 3.0)
    out: list[LesionSpec] = []
    for spec in baseline:
        grow = max(1.0, (min_volume_ml / spec.nominal_volume_ml) ** (1.0 / 3.0))
        semi = tuple(s * grow * scale for s in spec.semi_mm)
        out.append(
            replace(
                spec,
                semi_mm=(semi[0], semi[1], semi[2]),
                adc_um2s=spec.adc_um2s * scenario.adc_factor,
            )
        )
    if scenario.new_lesions:
        for spec in new:
            grow = max(1.0, (min_volume_ml / spec.nominal_volume_ml) ** (1.0 / 3.0))
            semi = tuple(s * grow for s in spec.semi_mm)
            out.append(replace(spec, semi_mm=(semi[0], semi[1], semi[2])))
    return tuple(out)
