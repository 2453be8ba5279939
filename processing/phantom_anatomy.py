"""Whole-body anatomy of the numerical phantom, in the nominal body frame (mm).

An adult male, head-first supine, vertex (``h = 0``) to below mid-thigh, built
from ellipsoids, elliptic tubes and rib arcs (:mod:`processing.phantom_shapes`).
Sizes follow common adult anatomy (vertebral bodies, ~1.6 l liver, ~150 ml
kidneys, 5 mm diploe); they are approximations for a test bench, not an atlas.
The arms are left out (as in protocols with the arms raised out of the field or
cropped), as are the scapulae, clavicles and sternum.

Each patient varies through a random generator seeded from the patient ID: the
body width and height scales (applied by :class:`~processing.phantom_shapes.BodyFrame`)
and the layout of the bowel loops.

:func:`build_anatomy` returns the structures in painting order (later ones
overwrite earlier ones) and the bone sites where lesions may be placed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

from processing.phantom_shapes import Ellipsoid, RibArc, Shape, Tube
from processing.phantom_tissues import Tissue

__all__ = [
    "NECK_H",
    "SKULL_BASE_H",
    "Anatomy",
    "BoneSite",
    "Vertebra",
    "arm_structures",
    "build_anatomy",
    "segment_ellipsoid",
]

_CORTEX_MM = 1.5

SKULL_BASE_H = 145.0
"""Height of the skull base (foramen magnum, below the brain) in the body frame, mm."""

NECK_H = (150.0, 280.0)
"""The neck along ``h``: from the skull base to the thoracic inlet (C7/T1), mm."""


@dataclass(frozen=True, slots=True)
class Vertebra:
    """One vertebral body: centre ``(x, y, h)``, outer semi-axes ``(a, b)`` and half height."""

    name: str  # "C2" .. "L5"
    region: str  # BodyRegion value
    center: tuple[float, float, float]
    semi_xy: tuple[float, float]
    half_height: float


@dataclass(frozen=True, slots=True)
class BoneSite:
    """A place in a bone where a lesion can sit.

    ``rotation_deg`` orients a lesion's own axes (its first axis along the bone,
    for ribs and rami); ``max_semi`` is the marrow room around ``center`` along
    those axes, mm.
    """

    bone: str
    region: str  # BodyRegion value
    center: tuple[float, float, float]
    rotation_deg: tuple[float, float, float]
    max_semi: tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class Anatomy:
    """Structures in painting order plus the landmarks that lesions use."""

    width_scale: float
    height_scale: float
    structures: tuple[tuple[Tissue, Shape], ...]
    vertebrae: Mapping[str, Vertebra]
    ribs: Mapping[tuple[int, int], RibArc]  # (side, number 1..12) -> marrow arc
    sites: Mapping[str, BoneSite]
    organs: Mapping[str, Ellipsoid]  # "kidney_right", "kidney_left", "bladder"


def segment_ellipsoid(
    start: tuple[float, float, float],
    end: tuple[float, float, float],
    cross_semi: tuple[float, float],
    extra_length: float = 0.0,
) -> Ellipsoid:
    """An ellipsoid whose long axis runs from ``start`` to ``end`` (plus ``extra_length``)."""
    d = np.subtract(end, start)
    length = float(np.linalg.norm(d))
    if length <= 0.0:
        raise ValueError("segment_ellipsoid needs two distinct points")
    d /= length
    center = (
        (start[0] + end[0]) / 2.0,
        (start[1] + end[1]) / 2.0,
        (start[2] + end[2]) / 2.0,
    )
    rotation = (0.0, math.degrees(-math.asin(float(d[2]))), math.degrees(math.atan2(d[1], d[0])))
    semi = (length / 2.0 + extra_length, cross_semi[0], cross_semi[1])
    return Ellipsoid(center, semi, rotation)


def _bone(
    out: list[tuple[Tissue, Shape]], outer: Ellipsoid | Tube, marrow: Tissue, cortex: float
) -> None:
    """Append a bone as a cortical shell of ``cortex`` mm around its marrow."""
    out.append((Tissue.CORTICAL_BONE, outer))
    inner: Ellipsoid | Tube
    inner = outer.grown(-cortex) if isinstance(outer, Ellipsoid) else outer.shrunk(cortex)
    out.append((marrow, inner))


def _spine_y(h: float) -> float:
    """Antero-posterior position of the vertebral body centres (lordosis/kyphosis)."""
    return float(
        np.interp(h, [170, 270, 320, 420, 544, 600, 680, 721], [12, 20, 38, 55, 45, 32, 22, 28])
    )


def _vertebrae() -> list[Vertebra]:
    levels: list[Vertebra] = []
    h = 170.0
    for index in range(2, 8):
        levels.append(
            Vertebra(
                f"C{index}", "cervical_spine", (0.0, _spine_y(h + 6.5), h + 6.5), (9.5, 8.0), 6.5
            )
        )
        h += 17.0
    h += 1.0
    for index in range(1, 13):
        t = (index - 1) / 11.0
        semi = (13.0 + 6.0 * t, 11.0 + 4.5 * t)
        levels.append(
            Vertebra(f"T{index}", "dorsal_spine", (0.0, _spine_y(h + 9.5), h + 9.5), semi, 9.5)
        )
        h += 23.0
    h += 2.0
    for index in range(1, 6):
        semi = (22.0 + 0.8 * index, 17.0)
        levels.append(
            Vertebra(
                f"L{index}", "lumbosacral_spine", (0.0, _spine_y(h + 13.5), h + 13.5), semi, 13.5
            )
        )
        h += 36.0
    return levels


def _canal_semi(vertebra: Vertebra) -> tuple[float, float]:
    return {"C": (12.0, 8.0), "T": (8.5, 8.0), "L": (11.0, 9.0)}[vertebra.name[0]]


def _spine(out: list[tuple[Tissue, Shape]], vertebrae: list[Vertebra]) -> None:
    hs = tuple(v.center[2] for v in vertebrae)
    out.append(
        (
            Tissue.DISC,
            Tube(
                hs,
                tuple(0.0 for _ in hs),
                tuple(v.center[1] for v in vertebrae),
                tuple(v.semi_xy[0] - 1.0 for v in vertebrae),
                tuple(v.semi_xy[1] - 1.0 for v in vertebrae),
            ),
        )
    )
    for v in vertebrae:
        x, y, h = v.center
        a, b = v.semi_xy
        half = v.half_height
        body = Tube((h - half, h + half), (x, x), (y, y), (a, a), (b, b))
        out.append((Tissue.CORTICAL_BONE, body))
        inner = Tube(
            (h - half + 1.2, h + half - 1.2),
            (x, x),
            (y, y),
            (a - _CORTEX_MM, a - _CORTEX_MM),
            (b - _CORTEX_MM, b - _CORTEX_MM),
        )
        out.append((Tissue.MARROW_SPINE, inner))
        ca, cb = _canal_semi(v)
        canal_y = y + b + cb + 1.0
        for side in (-1.0, 1.0):
            pedicle = Ellipsoid((side * (ca + 3.5), canal_y, h), (4.0, cb + 3.0, half * 0.7))
            out.append((Tissue.MARROW_SPINE, pedicle))
        spinous = Ellipsoid((0.0, canal_y + cb + 12.0, h + 3.0), (4.0, 13.0, half * 0.8))
        out.append((Tissue.MARROW_SPINE, spinous))
        if v.name.startswith("L"):
            for side in (-1.0, 1.0):
                transverse = Ellipsoid((side * (a + 13.0), y + b + 2.0, h), (13.0, 4.5, 5.5))
                out.append((Tissue.MARROW_SPINE, transverse))


def _canal_and_cord(out: list[tuple[Tissue, Shape]], vertebrae: list[Vertebra]) -> None:
    hs = [145.0]
    cy = [28.0]
    ca = [12.0]
    cb = [8.0]
    for v in vertebrae:
        a, b = _canal_semi(v)
        hs.append(v.center[2])
        cy.append(v.center[1] + v.semi_xy[1] + b + 1.0)
        ca.append(a)
        cb.append(b)
    # Thecal sac ends at S2, inside the sacrum.
    hs.append(790.0)
    cy.append(62.0)
    ca.append(8.0)
    cb.append(6.0)
    zeros = tuple(0.0 for _ in hs)
    out.append((Tissue.CSF, Tube(tuple(hs), zeros, tuple(cy), tuple(ca), tuple(cb))))
    conus = vertebrae[[v.name for v in vertebrae].index("L1")].center[2]
    cord_h = [h for h in hs if h <= conus] + [conus + 5.0]
    n = len(cord_h)
    cord_cy = tuple(float(np.interp(h, hs, cy)) for h in cord_h)
    cord_a = (*(6.5 if h < 280.0 else 5.0 for h in cord_h[:-1]), 3.0)
    cord_b = (*(5.0 if h < 280.0 else 4.5 for h in cord_h[:-1]), 2.5)
    out.append((Tissue.SPINAL_CORD, Tube(tuple(cord_h), (0.0,) * n, cord_cy, cord_a, cord_b)))
    out.append(
        (Tissue.BRAIN, Tube((118.0, 150.0), (0.0, 0.0), (18.0, 26.0), (13.0, 9.0), (12.0, 8.0)))
    )


_RIB_A = (70, 95, 112, 124, 133, 139, 142, 142, 140, 137, 133, 128)
_RIB_B = (50, 62, 72, 78, 82, 85, 86, 86, 85, 83, 80, 78)
_RIB_DROP = (35, 45, 55, 60, 62, 62, 60, 55, 50, 45, 30, 20)
_RIB_END = (2.5, 2.5, 2.5, 2.5, 2.45, 2.4, 2.35, 2.3, 2.2, 2.1, 1.9, 1.45)


def _ribs(
    out: list[tuple[Tissue, Shape]], vertebrae: Mapping[str, Vertebra]
) -> dict[tuple[int, int], RibArc]:
    marrow_arcs: dict[tuple[int, int], RibArc] = {}
    for number in range(1, 13):
        level = vertebrae[f"T{number}"]
        for side in (-1, 1):
            marrow = RibArc(
                side=side,
                cx=0.0,
                cy=0.0,
                ring_a=float(_RIB_A[number - 1]),
                ring_b=float(_RIB_B[number - 1]),
                h_posterior=level.center[2],
                drop=float(_RIB_DROP[number - 1]),
                phi_start=0.2,
                phi_end=_RIB_END[number - 1],
                thickness=6.0,
                height=9.5,
            )
            out.append((Tissue.CORTICAL_BONE, replace(marrow, thickness=9.0, height=13.0)))
            out.append((Tissue.MARROW_RIB, marrow))
            marrow_arcs[(side, number)] = marrow
    return marrow_arcs


_TORSO = Tube(
    h_knots=(250.0, 275.0, 300.0, 340.0, 420.0, 500.0, 600.0, 680.0, 760.0, 840.0, 900.0, 935.0),
    cx=(0.0,) * 12,
    cy=(8.0, 5.0, 5.0, 5.0, 5.0, 0.0, 0.0, 0.0, 0.0, 5.0, 10.0, 15.0),
    a=(60.0, 130.0, 180.0, 178.0, 170.0, 160.0, 150.0, 160.0, 172.0, 178.0, 150.0, 95.0),
    b=(55.0, 75.0, 95.0, 105.0, 112.0, 115.0, 112.0, 110.0, 105.0, 100.0, 85.0, 55.0),
)
_HEAD = Ellipsoid((0.0, 5.0, 105.0), (78.0, 98.0, 105.0))
_FACE = Ellipsoid((0.0, -25.0, 165.0), (56.0, 60.0, 55.0))
_NECK = Tube((160.0, 280.0), (0.0, 0.0), (15.0, 12.0), (55.0, 58.0), (55.0, 58.0))
_SCROTUM = Ellipsoid((0.0, -45.0, 962.0), (34.0, 30.0, 35.0))
_KIDNEYS = {
    name: Ellipsoid((side * 75.0, 42.0, h), (27.0, 21.0, 55.0), (0.0, side * 12.0, -side * 30.0))
    for name, side, h in (("right", -1.0, 625.0), ("left", 1.0, 605.0))
}
_BLADDER = Ellipsoid((0.0, -30.0, 830.0), (45.0, 38.0, 35.0))


def _thigh(side: float) -> Tube:
    return Tube(
        (830.0, 1000.0, 1350.0),
        (side * 92.0, side * 90.0, side * 88.0),
        (5.0, 5.0, 5.0),
        (85.0, 78.0, 68.0),
        (85.0, 78.0, 68.0),
    )


def _body(out: list[tuple[Tissue, Shape]]) -> None:
    thighs = (_thigh(-1.0), _thigh(1.0))
    for outline in (_HEAD, _FACE, _NECK, _TORSO, *thighs, _SCROTUM):
        out.append((Tissue.FAT, outline))
    out.append((Tissue.MUSCLE, _HEAD.grown(-5.0)))
    out.append((Tissue.MUSCLE, _FACE.grown(-6.0)))
    out.append((Tissue.MUSCLE, _NECK.shrunk(8.0)))
    out.append((Tissue.MUSCLE, _TORSO.shrunk(15.0)))
    for thigh in thighs:
        out.append((Tissue.MUSCLE, thigh.shrunk(12.0)))
    cavity = Tube(
        (500.0, 600.0, 700.0, 800.0, 880.0, 900.0),
        (0.0,) * 6,
        (-15.0, -20.0, -20.0, -15.0, -10.0, -10.0),
        (130.0, 120.0, 130.0, 140.0, 110.0, 80.0),
        (80.0, 78.0, 75.0, 70.0, 55.0, 40.0),
    )
    out.append((Tissue.FAT, cavity))
    for side in (-1.0, 1.0):
        psoas = Tube(
            (560.0, 650.0, 720.0, 800.0, 860.0),
            (side * 30.0, side * 38.0, side * 48.0, side * 62.0, side * 70.0),
            (30.0, 25.0, 20.0, 5.0, -10.0),
            (8.0, 16.0, 22.0, 20.0, 15.0),
            (8.0, 16.0, 22.0, 20.0, 15.0),
        )
        out.append((Tissue.MUSCLE, psoas))


def _bowel(out: list[tuple[Tissue, Shape]], rng: np.random.Generator) -> None:
    """Seven loops of small bowel, each a random walk of overlapping spheres."""
    low = np.array([-95.0, -75.0, 625.0])
    high = np.array([95.0, 0.0, 790.0])
    for _ in range(7):
        point = rng.uniform(low + 20.0, high - 20.0)
        direction = rng.normal(size=3)
        for _ in range(12):
            radius = float(rng.uniform(11.0, 13.0))
            center = (float(point[0]), float(point[1]), float(point[2]))
            out.append((Tissue.BOWEL, Ellipsoid(center, (radius, radius, radius))))
            direction = direction / np.linalg.norm(direction) + 0.6 * rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            point = np.clip(point + 14.0 * direction, low, high)


def _organs(out: list[tuple[Tissue, Shape]], rng: np.random.Generator) -> None:
    out.append((Tissue.LUNG, Ellipsoid((-75.0, 12.0, 400.0), (62.0, 72.0, 115.0), h_min=288.0)))
    out.append((Tissue.LUNG, Ellipsoid((75.0, 12.0, 405.0), (60.0, 72.0, 112.0), h_min=290.0)))
    out.append(
        (Tissue.LUNG, Tube((190.0, 380.0), (0.0, 0.0), (-15.0, 0.0), (8.0, 9.0), (8.0, 9.0)))
    )
    out.append(
        (Tissue.HEART, Ellipsoid((15.0, -20.0, 440.0), (55.0, 50.0, 55.0), (0.0, 0.0, -30.0)))
    )
    out.append(
        (Tissue.LIVER, Ellipsoid((-62.0, -12.0, 545.0), (85.0, 62.0, 60.0), (0.0, 10.0, 0.0)))
    )
    out.append(
        (Tissue.SPLEEN, Ellipsoid((88.0, 45.0, 522.0), (28.0, 50.0, 42.0), (0.0, 0.0, -30.0)))
    )
    for kidney in _KIDNEYS.values():
        out.append((Tissue.FAT, kidney.grown(7.0)))
        out.append((Tissue.KIDNEY, kidney))
    _bowel(out, rng)
    out.append((Tissue.BLADDER, _BLADDER))
    out.append((Tissue.PROSTATE, Ellipsoid((0.0, -22.0, 884.0), (20.0, 15.0, 16.0))))
    for side in (-1.0, 1.0):
        out.append((Tissue.TESTIS, Ellipsoid((side * 14.0, -47.0, 965.0), (11.0, 13.0, 19.0))))
        out.append(
            (Tissue.SALIVARY_GLAND, Ellipsoid((side * 47.0, 8.0, 168.0), (10.0, 16.0, 20.0)))
        )
        out.append(
            (Tissue.SALIVARY_GLAND, Ellipsoid((side * 32.0, -32.0, 200.0), (10.0, 13.0, 9.0)))
        )


def _head(out: list[tuple[Tissue, Shape]]) -> None:
    center = (0.0, 5.0, 105.0)
    layers = (
        (Tissue.CORTICAL_BONE, (73.0, 93.0, 100.0), 152.0),
        (Tissue.MARROW_SKULL, (71.0, 91.0, 98.0), 150.0),
        (Tissue.CORTICAL_BONE, (66.0, 86.0, 93.0), 147.0),
        (Tissue.CSF, (64.0, 84.0, 91.0), 145.0),
        (Tissue.BRAIN, (61.0, 81.0, 88.0), 142.0),
    )
    for tissue, semi, h_max in layers:
        out.append((tissue, Ellipsoid(center, semi, h_max=h_max)))
    for side in (-1.0, 1.0):
        out.append((Tissue.CSF, Ellipsoid((side * 12.0, 5.0, 80.0), (6.0, 25.0, 14.0))))


def _pelvis_and_femora(out: list[tuple[Tissue, Shape]]) -> None:
    _bone(
        out,
        Ellipsoid((0.0, 52.0, 790.0), (48.0, 18.0, 62.0), (-20.0, 0.0, 0.0)),
        Tissue.MARROW_SPINE,
        2.0,
    )
    for side in (-1.0, 1.0):
        wing = Ellipsoid(
            (side * 92.0, 5.0, 725.0),
            (62.0, 11.0, 55.0),
            (0.0, 0.0, math.degrees(math.atan2(-90.0, side * 84.0))),
        )
        _bone(out, wing, Tissue.MARROW_PELVIS, 2.0)
        _bone(
            out, Ellipsoid((side * 80.0, 8.0, 815.0), (25.0, 28.0, 45.0)), Tissue.MARROW_PELVIS, 2.0
        )
        ramus = segment_ellipsoid(
            (side * 75.0, -5.0, 850.0), (side * 8.0, -60.0, 868.0), (10.0, 11.0)
        )
        _bone(out, ramus, Tissue.MARROW_PELVIS, 2.0)
        _bone(
            out,
            Ellipsoid((side * 55.0, 25.0, 880.0), (14.0, 20.0, 30.0)),
            Tissue.MARROW_PELVIS,
            2.0,
        )
        # Femur: head, neck, greater trochanter, shaft.
        _bone(
            out, Ellipsoid((side * 88.0, 5.0, 850.0), (22.0, 22.0, 22.0)), Tissue.MARROW_FEMUR, 2.0
        )
        neck = segment_ellipsoid(
            (side * 88.0, 5.0, 850.0), (side * 128.0, 10.0, 880.0), (14.0, 14.0)
        )
        _bone(out, neck, Tissue.MARROW_FEMUR, 2.0)
        _bone(
            out,
            Ellipsoid((side * 132.0, 12.0, 885.0), (18.0, 20.0, 26.0)),
            Tissue.MARROW_FEMUR,
            2.0,
        )
        shaft = Tube(
            (880.0, 1350.0), (side * 130.0, side * 100.0), (12.0, 5.0), (14.0, 14.0), (14.0, 14.0)
        )
        _bone(out, shaft, Tissue.MARROW_FEMUR, 4.0)


# Arms beside the trunk (supine, palms against the thighs): the centre line keeps
# 5 mm of air from the torso outline and the thighs at every height.
_ARM_H = (285.0, 340.0, 450.0, 560.0, 680.0, 780.0, 860.0, 930.0)
_ARM_X = (225.0, 227.0, 214.0, 193.0, 198.0, 206.0, 200.0, 198.0)
_ARM_Y = (10.0, 10.0, 8.0, 5.0, 0.0, -5.0, -5.0, -5.0)
_ARM_A = (40.0, 44.0, 40.0, 34.0, 32.0, 28.0, 16.0, 14.0)
_ARM_B = (40.0, 44.0, 40.0, 34.0, 32.0, 28.0, 40.0, 40.0)


def arm_structures() -> tuple[tuple[Tissue, Shape], ...]:
    """Both arms beside the trunk: fat, muscle, humerus and forearm bones with fatty marrow.

    Painted after the body (they do not overlap it). The humeral and forearm
    marrow takes the long-bone (``MARROW_FEMUR``) label: adult limb marrow is
    fatty. No lesion is placed in the arms.
    """
    out: list[tuple[Tissue, Shape]] = []
    for side in (-1.0, 1.0):
        cx = tuple(side * x for x in _ARM_X)
        outline = Tube(_ARM_H, cx, _ARM_Y, _ARM_A, _ARM_B)
        out.append((Tissue.FAT, outline))
        out.append((Tissue.MUSCLE, outline.shrunk(6.0)))
        humerus = Tube(
            (300.0, 450.0, 555.0),
            (side * 226.0, side * 214.0, side * 194.0),
            (10.0, 8.0, 5.0),
            (12.0, 11.0, 12.0),
            (12.0, 11.0, 12.0),
        )
        _bone(out, humerus, Tissue.MARROW_FEMUR, 3.0)
        _bone(
            out,
            Ellipsoid((side * 227.0, 10.0, 305.0), (22.0, 22.0, 22.0)),
            Tissue.MARROW_FEMUR,
            2.0,
        )
        forearm = Tube(
            (585.0, 700.0, 830.0),
            (side * 192.0, side * 200.0, side * 203.0),
            (0.0, -1.0, -5.0),
            (9.0, 9.0, 9.0),
            (14.0, 14.0, 14.0),
        )
        _bone(out, forearm, Tissue.MARROW_FEMUR, 2.5)
    return tuple(out)


def _sites(vertebrae: Mapping[str, Vertebra]) -> dict[str, BoneSite]:
    sites: dict[str, BoneSite] = {
        "sacrum": BoneSite(
            "sacrum", "pelvis", (0.0, 52.0, 790.0), (-20.0, 0.0, 0.0), (40.0, 15.0, 52.0)
        ),
    }
    for side, name in ((-1.0, "right"), (1.0, "left")):
        sites[f"ilium_supra_acetabular_{name}"] = BoneSite(
            f"ilium ({name}, supra-acetabular)",
            "pelvis",
            (side * 80.0, 8.0, 800.0),
            (0.0, 0.0, 0.0),
            (21.0, 24.0, 20.0),
        )
        angle = math.degrees(math.atan2(-90.0, side * 84.0))
        sites[f"iliac_wing_{name}"] = BoneSite(
            f"ilium ({name}, wing)",
            "pelvis",
            (side * 92.0, 5.0, 720.0),
            (0.0, 0.0, angle),
            (50.0, 9.0, 45.0),
        )
        ramus = segment_ellipsoid(
            (side * 75.0, -5.0, 850.0), (side * 8.0, -60.0, 868.0), (10.0, 11.0)
        )
        sites[f"pubic_ramus_{name}"] = BoneSite(
            f"superior pubic ramus ({name})",
            "pelvis",
            (side * 36.0, -37.0, 860.0),
            ramus.rotation_deg,
            (25.0, 8.0, 9.0),
        )
        neck = segment_ellipsoid(
            (side * 88.0, 5.0, 850.0), (side * 128.0, 10.0, 880.0), (14.0, 14.0)
        )
        sites[f"femur_proximal_{name}"] = BoneSite(
            f"femur ({name}, proximal)",
            "limbs",
            (side * 122.0, 9.0, 878.0),
            neck.rotation_deg,
            (24.0, 12.0, 12.0),
        )
        sites[f"femur_shaft_{name}"] = BoneSite(
            f"femur ({name}, shaft)",
            "limbs",
            (side * 118.0, 9.0, 1000.0),
            (0.0, math.degrees(math.atan2(-30.0, 470.0)), 0.0),
            (9.0, 9.0, 40.0),
        )
        # Parietal diploe: flattened along the skull normal (the lesion's third axis).
        elevation = math.radians(45.0)
        normal = (side * math.cos(elevation), 0.0, -math.sin(elevation))
        semi = (68.5, 88.5, 95.5)
        scale = 1.0 / math.sqrt(sum((n / s) ** 2 for n, s in zip(normal, semi, strict=True)))
        sites[f"skull_parietal_{name}"] = BoneSite(
            f"skull ({name} parietal)",
            "skull",
            (normal[0] * scale, 5.0, 105.0 + normal[2] * scale),
            (0.0, side * 135.0, 0.0),
            (12.0, 12.0, 3.5),
        )
    for v in vertebrae.values():
        x, y, h = v.center
        a, b = v.semi_xy
        room = (a - _CORTEX_MM, b - _CORTEX_MM, v.half_height - 1.2)
        sites[v.name] = BoneSite(f"vertebra {v.name}", v.region, (x, y, h), (0.0, 0.0, 0.0), room)
        if v.name.startswith("L"):
            for side, name in ((-1.0, "right"), (1.0, "left")):
                sites[f"{v.name}_transverse_{name}"] = BoneSite(
                    f"vertebra {v.name} ({name} transverse process)",
                    v.region,
                    (side * (a + 13.0), y + b + 2.0, h),
                    (0.0, 0.0, 0.0),
                    (13.0, 4.5, 5.5),
                )
    return sites


def build_anatomy(rng: np.random.Generator) -> Anatomy:
    """One patient's anatomy; ``rng`` must be seeded from the patient ID."""
    width_scale = float(rng.uniform(0.93, 1.07))
    height_scale = float(rng.uniform(0.96, 1.04))
    vertebrae = _vertebrae()
    by_name = {v.name: v for v in vertebrae}
    out: list[tuple[Tissue, Shape]] = []
    _body(out)
    _organs(out, rng)
    _head(out)
    _pelvis_and_femora(out)
    _spine(out, vertebrae)
    ribs = _ribs(out, by_name)
    _canal_and_cord(out, vertebrae)
    return Anatomy(
        width_scale=width_scale,
        height_scale=height_scale,
        structures=tuple(out),
        vertebrae=MappingProxyType(by_name),
        ribs=MappingProxyType(ribs),
        sites=MappingProxyType(_sites(by_name)),
        organs=MappingProxyType(
            {
                "kidney_right": _KIDNEYS["right"],
                "kidney_left": _KIDNEYS["left"],
                "bladder": _BLADDER,
            }
        ),
    )
