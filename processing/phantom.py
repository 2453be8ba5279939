"""Numerical whole-body DWI phantom with known truth (issue 2) and its time points (issue 6).

:func:`make_phantom` builds one exam of one patient: a head-first supine axial
grid from above the vertex to below mid-thigh, split into overlapping stations;
tissue, lesion, S0 and ADC maps; and the multi-b signal

    S(b) = S0 exp(-b ADC)  with Rician noise  |S + sigma (n1 + i n2)|,

``sigma = S0_muscle exp(-b_min ADC_muscle) / snr`` (SNR defined in muscle at the
lowest b; ``snr = 0`` gives the noise-free signal; outside the body the signal is
pure Rician noise of zero).

Geometry: slice 0 is the most superior; patient Z (LPS) decreases with the slice
index; rows run along +X (patient left) and columns along +Y (posterior), i.e.
ImageOrientationPatient ``[1, 0, 0, 0, 1, 0]``. ``affine`` maps ``(z, y, x, 1)``
to patient ``(X, Y, Z, 1)`` mm as in :mod:`processing.exam`.

Seeds: the anatomy and the lesion set derive from ``patient_id`` only, so all
time points of one patient share them; ``scenario`` changes the lesions (see
:mod:`processing.phantom_lesions`); ``scenario`` and ``seed`` set a small rigid
shift of the patient on the table (a few mm, as between visits) and ``seed``
drives the noise.

Truth is exact on the grid: lesions are rasterised without partial volume (a
voxel belongs to a lesion when its centre does), a lesion's volume is its voxel
count times the voxel volume, its mean ADC the mean of ``true_adc`` over its
voxels, its centroid the mean of its voxel centres, and the total median ADC the
median of ``true_adc`` over all lesion voxels (a volume-weighted median).

Variations (issue 10): ``variation=PhantomVariation(...)`` changes what real
patients and protocols vary (normal-marrow brightness and ADC, SNR at the
highest b, diffuse infiltration, lesion ADC and contrast, slice and pixel size,
patient size, arms, exam from the skull base, neck length); see
:mod:`processing.phantom_variation`. Without one (or with the default one) the
phantom is bit for bit the same as before; with one, the truth records it under
``variation`` and adds ``normal_marrow``, ``lesions_outside_field``,
``focal_lesion_volume_ml``, ``diffuse_volume_ml`` (and ``diffuse`` when present).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from processing.exam import DwiExam, index_to_patient
from processing.phantom_anatomy import (
    NECK_H,
    SKULL_BASE_H,
    Anatomy,
    arm_structures,
    build_anatomy,
)
from processing.phantom_lesions import SCENARIOS, LesionSpec, apply_scenario, plan_lesions
from processing.phantom_shapes import (
    BodyFrame,
    Ellipsoid,
    ScanGrid,
    Shape,
    grid_region,
    rasterise,
)
from processing.phantom_tissues import (
    MARROW_TISSUES,
    TISSUE_PROPERTIES,
    Tissue,
    TissueProperties,
)
from processing.phantom_variation import (
    PhantomVariation,
    diffuse_mask,
    diffuse_properties,
    lesion_in_field,
    marrow_b1000_ratio,
    tissue_properties,
    vary_lesions,
)

__all__ = [
    "MARROW_TISSUES",
    "PRESETS",
    "SCENARIOS",
    "TISSUE_PROPERTIES",
    "Phantom",
    "PhantomPreset",
    "PhantomStation",
    "PhantomVariation",
    "Tissue",
    "TissueProperties",
    "make_phantom",
    "write_truth",
]

_VERTEX_MARGIN_MM = 12.0
_FOV_MARGIN_MM = 15.0  # around the widest body part, when a variation sets the field of view
_SLAB_SLICES = 16


@dataclass(frozen=True, slots=True)
class PhantomPreset:
    """Grid and protocol of one phantom size.

    ``min_lesion_ml`` grows smaller lesions to that volume so that every lesion
    spans a few voxels on a coarse grid.
    """

    name: str
    n_stations: int
    slices_per_station: int
    overlap_slices: int
    matrix: int  # rows = columns
    pixel_mm: float
    slice_mm: float
    b_values: tuple[float, ...]
    min_lesion_ml: float

    @property
    def n_slices(self) -> int:
        """Slices of the composed grid."""
        return (
            self.n_stations * self.slices_per_station - (self.n_stations - 1) * self.overlap_slices
        )


PRESETS: Mapping[str, PhantomPreset] = MappingProxyType(
    {
        "small": PhantomPreset("small", 3, 46, 2, 64, 6.6, 9.0, (50.0, 600.0, 900.0), 1.0),
        "reference": PhantomPreset("reference", 5, 50, 4, 128, 3.3, 5.0, (50.0, 600.0, 900.0), 0.0),
        "large": PhantomPreset(
            "large", 6, 50, 4, 256, 1.65, 4.3, (50.0, 400.0, 900.0, 1400.0), 0.0
        ),
    }
)
"""Phantom sizes: ``small`` for fast tests, ``reference`` (issue 2) and ``large``."""


@dataclass(frozen=True, slots=True)
class PhantomStation:
    """One acquisition station: a range of slices of the composed grid."""

    first_slice: int
    n_slices: int


@dataclass(frozen=True, slots=True, eq=False)
class Phantom:
    """One exam of one phantom patient with its truth (arrays are read-only).

    ``signal`` is ``[b, z, y, x]`` float32; the maps are ``[z, y, x]``;
    ``truth`` is exactly what :func:`write_truth` stores in ``truth.json``.
    """

    preset: str
    seed: int
    snr: float
    patient_id: str
    scenario: str
    b_values: tuple[float, ...]
    signal: NDArray[np.float32]
    affine: NDArray[np.float64]
    spacing_mm: tuple[float, float, float]
    stations: tuple[PhantomStation, ...]
    tissue_labels: NDArray[np.uint8]
    lesion_labels: NDArray[np.int32]
    true_adc: NDArray[np.float32]
    s0: NDArray[np.float32]
    truth: dict[str, Any]

    @property
    def study_instance_uid(self) -> str:
        """Deterministic study UID of this time point (patient, scenario, seed, preset)."""
        return _uid("study", self.patient_id, self.scenario, str(self.seed), self.preset)

    @property
    def frame_of_reference_uid(self) -> str:
        """Deterministic frame of reference UID (the patient is repositioned each visit)."""
        return _uid("frame", self.patient_id, self.scenario, str(self.seed), self.preset)

    def to_exam(self) -> DwiExam:
        """The exam as assembly would build it, without DICOM sources."""
        return DwiExam(
            signal=self.signal,
            b_values=self.b_values,
            affine=self.affine,
            spacing_mm=self.spacing_mm,
            study_instance_uid=self.study_instance_uid,
            frame_of_reference_uid=self.frame_of_reference_uid,
            patient_id=self.patient_id,
            stations=len(self.stations),
        )


def _uid(*parts: str) -> str:
    """A UUID-derived UID (PS3.5 B.2) from a name."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, '|'.join(('wbdwi-phantom', *parts))).int}"


def _patient_key(patient_id: str) -> int:
    return int.from_bytes(hashlib.sha256(patient_id.encode("utf-8")).digest()[:8], "big")


def _validate(
    preset: str,
    *,
    b_values: Sequence[float] | None,
    snr: float,
    seed: int,
    patient_id: str,
    scenario: str,
) -> tuple[PhantomPreset, tuple[float, ...]]:
    if preset not in PRESETS:
        raise ValueError(f"unknown phantom preset {preset!r}; choose one of {sorted(PRESETS)}")
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown phantom scenario {scenario!r}; choose one of {list(SCENARIOS)}")
    if not patient_id:
        raise ValueError("phantom patient_id must not be empty")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"phantom seed must be a non-negative integer, got {seed!r}")
    if not math.isfinite(snr) or snr < 0:
        raise ValueError(f"phantom snr must be >= 0 (0 = noise-free), got {snr!r}")
    chosen = PRESETS[preset]
    values = chosen.b_values if b_values is None else tuple(float(b) for b in b_values)
    if len(values) == 0:
        raise ValueError("phantom b_values must not be empty")
    if any(not math.isfinite(b) or b < 0 for b in values):
        raise ValueError(f"phantom b_values must be finite and >= 0, got {values}")
    if any(b1 <= b0 for b0, b1 in itertools.pairwise(values)):
        raise ValueError(f"phantom b_values must be strictly increasing, got {values}")
    return chosen, values


def _grid(n_slices: int, matrix: int, pixel_mm: float, slice_mm: float) -> ScanGrid:
    half_fov = (matrix - 1) / 2.0 * pixel_mm
    length = (n_slices - 1) * slice_mm
    return ScanGrid(
        shape=(n_slices, matrix, matrix),
        spacing_mm=(slice_mm, pixel_mm, pixel_mm),
        origin_mm=(-half_fov, -half_fov, length / 2.0),
    )


def _half_width(structures: Sequence[tuple[Tissue, Shape]]) -> float:
    """Largest ``|x|`` or ``|y|`` of any structure in the body frame, mm."""
    extent = 0.0
    for _, shape in structures:
        lower, upper = shape.bounds()
        extent = max(extent, float(np.abs(lower[:2]).max()), float(np.abs(upper[:2]).max()))
    return extent


def _layout(
    preset: PhantomPreset,
    variation: PhantomVariation,
    anatomy: Anatomy,
    structures: Sequence[tuple[Tissue, Shape]],
    shift: tuple[float, float, float],
) -> tuple[ScanGrid, tuple[PhantomStation, ...], BodyFrame]:
    """The scan grid, its stations and the body frame, with the variation's protocol applied."""
    body = 1.0 if variation.body_scale is None else variation.body_scale
    width_scale, height_scale = anatomy.width_scale * body, anatomy.height_scale * body
    per_station, overlap = preset.slices_per_station, preset.overlap_slices
    slice_mm = preset.slice_mm
    if variation.slice_mm is not None:
        # Same number of stations, about the same length and overlap in mm.
        slice_mm = float(variation.slice_mm)
        per_station = math.ceil(preset.slices_per_station * preset.slice_mm / slice_mm)
        overlap = max(1, round(preset.overlap_slices * preset.slice_mm / slice_mm))
    matrix, pixel_mm = preset.matrix, preset.pixel_mm
    if variation.pixel_mm is not None or variation.body_scale is not None or variation.arms:
        pixel_mm = preset.pixel_mm if variation.pixel_mm is None else float(variation.pixel_mm)
        half_fov = max(
            (preset.matrix - 1) / 2.0 * preset.pixel_mm,
            _half_width(structures) * width_scale + _FOV_MARGIN_MM,
        )
        matrix = math.ceil(2.0 * half_fov / pixel_mm) + 1
        matrix += matrix % 2
    n_slices = preset.n_stations * per_station - (preset.n_stations - 1) * overlap
    grid = _grid(n_slices, matrix, pixel_mm, slice_mm)
    stations = tuple(
        PhantomStation(first_slice=i * (per_station - overlap), n_slices=per_station)
        for i in range(preset.n_stations)
    )
    if variation.exam_start == "skull_base":
        vertex_z = grid.origin_mm[2] + SKULL_BASE_H * height_scale
    else:
        vertex_z = grid.origin_mm[2] - _VERTEX_MARGIN_MM
    frame = BodyFrame(
        width_scale=width_scale,
        height_scale=height_scale,
        vertex_z=vertex_z,
        shift_mm=shift,
        neck=None if variation.neck_scale is None else (*NECK_H, float(variation.neck_scale)),
    )
    return grid, stations, frame


def _shift(patient_key: int, scenario: str, seed: int) -> tuple[float, float, float]:
    """Rigid repositioning of the patient at one visit: 1-4 mm in X/Y, 2-8 mm in Z."""
    rng = np.random.default_rng([patient_key, list(SCENARIOS).index(scenario), seed, 1])
    signs = rng.choice([-1.0, 1.0], size=3)
    magnitude = rng.uniform([1.0, 1.0, 2.0], [4.0, 3.0, 8.0])
    sx, sy, sz = (round(float(v), 2) for v in signs * magnitude)
    return (sx, sy, sz)


def _lesion_ellipsoid(spec: LesionSpec, frame: BodyFrame) -> Ellipsoid:
    """The lesion in the body frame, with its patient-space volume preserved."""
    k = (frame.width_scale**2 * frame.height_scale) ** (1.0 / 3.0)
    a, b, c = (s / k for s in spec.semi_mm)
    return Ellipsoid(spec.center, (a, b, c), spec.rotation_deg)


def _paint_lesions(
    lesions: Sequence[LesionSpec],
    grid: ScanGrid,
    frame: BodyFrame,
    maps: tuple[NDArray[np.uint8], NDArray[np.int32], NDArray[np.float32], NDArray[np.float32]],
) -> dict[int, float]:
    """Paint the lesions into the maps; return each lesion's fraction that replaced bone."""
    tissue, labels, adc, s0 = maps
    bone = np.zeros(256, dtype=bool)
    bone[[int(t) for t in (*MARROW_TISSUES, Tissue.CORTICAL_BONE)]] = True
    bone_fraction: dict[int, float] = {}
    for spec in lesions:
        shape = _lesion_ellipsoid(spec, frame)
        lower, upper = shape.bounds()
        region = grid_region(grid, frame, lower, upper)
        index: tuple[slice, slice, slice]
        if region is not None:
            index, (h, y, x) = region
            r2 = shape.radius_sq(h, y, x)
            inside = r2 <= 1.0
        if region is None or not inside.any():
            # Smaller than a voxel here: keep the voxel holding its centre.
            centre = frame.to_patient(np.asarray(spec.center))
            dz, dy, dx = grid.spacing_mm
            x0, y0, z0 = grid.origin_mm
            zyx = (
                round((z0 - centre[2]) / dz),
                round((centre[1] - y0) / dy),
                round((centre[0] - x0) / dx),
            )
            if any(not 0 <= i < n for i, n in zip(zyx, grid.shape, strict=True)):
                raise RuntimeError(f"lesion {spec.label} ({spec.bone}) lies outside the grid")
            index = (
                slice(zyx[0], zyx[0] + 1),
                slice(zyx[1], zyx[1] + 1),
                slice(zyx[2], zyx[2] + 1),
            )
            r2 = np.zeros((1, 1, 1))
            inside = np.ones((1, 1, 1), dtype=bool)
        if np.any(labels[index][inside] != 0):
            raise RuntimeError(f"lesion {spec.label} ({spec.bone}) overlaps another lesion")
        bone_fraction[spec.label] = float(bone[tissue[index][inside]].mean())
        labels[index][inside] = spec.label
        tissue[index][inside] = Tissue.LESION
        s0[index][inside] = spec.s0
        # Centre the radial profile on the lesion's own voxels so that the mean ADC
        # on the grid is the nominal one (and scenario ratios hold exactly).
        radius_sq = np.broadcast_to(r2, inside.shape)[inside]
        profile = spec.adc_um2s * (1.0 + spec.adc_gradient * (radius_sq - radius_sq.mean()))
        adc[index][inside] = profile
    return bone_fraction


def _check_separation(labels: NDArray[np.int32]) -> None:
    """Raise when two lesions touch (26-connectivity): each must be its own component."""
    structure = np.ones((3, 3, 3), dtype=bool)
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        grown = tuple(
            slice(max(s.start - 1, 0), min(s.stop + 1, n))
            for s, n in zip(box, labels.shape, strict=True)
        )
        sub = labels[grown]
        touched = ndimage.binary_dilation(sub == label, structure) & (sub != label) & (sub != 0)
        if touched.any():
            other = int(sub[touched][0])
            raise RuntimeError(f"phantom lesions {label} and {other} touch")


def _noise(
    b_values: tuple[float, ...], snr: float, snr_high_b: float | None
) -> tuple[float, float]:
    """Noise sigma and the muscle SNR at the lowest b that it gives.

    ``snr_high_b`` (muscle SNR at the highest b), when given, replaces ``snr``.
    """
    muscle = TISSUE_PROPERTIES[Tissue.MUSCLE]
    if snr_high_b is not None:
        sigma = muscle.s0 * math.exp(-b_values[-1] * muscle.adc_um2s * 1e-6) / snr_high_b
        return sigma, muscle.s0 * math.exp(-b_values[0] * muscle.adc_um2s * 1e-6) / sigma
    if snr == 0:
        return 0.0, snr
    return muscle.s0 * math.exp(-b_values[0] * muscle.adc_um2s * 1e-6) / snr, snr


def _signal(
    s0: NDArray[np.float32],
    adc: NDArray[np.float32],
    b_values: tuple[float, ...],
    sigma: float,
    rng: np.random.Generator,
) -> NDArray[np.float32]:
    """``S0 exp(-b ADC)`` with Rician noise, built slab by slab in float32."""
    nz = s0.shape[0]
    signal = np.empty((len(b_values), *s0.shape), dtype=np.float32)
    for bi, b in enumerate(b_values):
        factor = np.float32(-b * 1e-6)
        for start in range(0, nz, _SLAB_SLICES):
            slab = slice(start, min(start + _SLAB_SLICES, nz))
            out = signal[bi, slab]
            np.multiply(adc[slab], factor, out=out)
            np.exp(out, out=out)
            out *= s0[slab]
            if sigma > 0:
                real = rng.standard_normal(out.shape, dtype=np.float32)
                real *= np.float32(sigma)
                out += real
                imaginary = rng.standard_normal(out.shape, dtype=np.float32)
                imaginary *= np.float32(sigma)
                # |real + i imaginary|; squares and sqrt are several times faster than hypot.
                np.multiply(out, out, out=out)
                np.multiply(imaginary, imaginary, out=imaginary)
                out += imaginary
                np.sqrt(out, out=out)
    return signal


# truth.json records each of these inputs under its own name.
def _truth(  # noqa: PLR0913
    *,
    preset: PhantomPreset,
    seed: int,
    snr: float,
    sigma: float,
    b_values: tuple[float, ...],
    patient_id: str,
    scenario: str,
    shift: tuple[float, float, float],
    grid: ScanGrid,
    stations: tuple[PhantomStation, ...],
    lesions: Sequence[LesionSpec],
    lesion_labels: NDArray[np.int32],
    true_adc: NDArray[np.float32],
    bone_fraction: Mapping[int, float],
    properties: Mapping[Tissue, TissueProperties],
    variation: PhantomVariation,
) -> dict[str, Any]:
    affine = grid.affine()
    dz, dy, dx = grid.spacing_mm
    voxel_ml = dz * dy * dx / 1000.0
    boxes = ndimage.find_objects(lesion_labels)
    rows: list[dict[str, Any]] = []
    for spec in lesions:
        box = boxes[spec.label - 1]
        if box is None:
            raise RuntimeError(f"lesion {spec.label} ({spec.bone}) has no voxel")
        mask = lesion_labels[box] == spec.label
        count = int(mask.sum())
        offsets = np.array([s.start for s in box], dtype=np.float64)
        centroid_index = np.argwhere(mask).mean(axis=0) + offsets
        centroid = index_to_patient(affine, centroid_index)
        rows.append(
            {
                "label": spec.label,
                "key": spec.key,
                "bone": spec.bone,
                "region": spec.region,
                "note": spec.note,
                "voxels": count,
                "volume_ml": count * voxel_ml,
                "mean_adc_um2s": float(true_adc[box][mask].astype(np.float64).mean()),
                "centroid_mm": [float(v) for v in centroid],
                "bone_fraction": bone_fraction[spec.label],
                "nominal_volume_ml": spec.nominal_volume_ml,
                "nominal_adc_um2s": spec.adc_um2s,
                "baseline_label": spec.baseline_label,
                "new": spec.baseline_label is None,
            }
        )
    all_adc = true_adc[lesion_labels > 0].astype(np.float64)
    definition = SCENARIOS[scenario]
    truth: dict[str, Any] = {
        "preset": preset.name,
        "seed": seed,
        "snr": snr,
        "noise_sigma": sigma,
        "b_values": list(b_values),
        "patient_id": patient_id,
        "scenario": scenario,
        "patient_shift_mm": list(shift),
        "shape": [len(b_values), *grid.shape],
        "spacing_mm": list(grid.spacing_mm),
        "affine": affine.tolist(),
        "stations": [{"first_slice": s.first_slice, "n_slices": s.n_slices} for s in stations],
        "voxel_volume_ml": voxel_ml,
        "lesions": rows,
        "total_lesion_volume_ml": int(all_adc.size) * voxel_ml,
        "mean_adc_um2s": float(all_adc.mean()),
        "median_adc_um2s": float(np.median(all_adc)),
        "changes": {
            "relative_to": "baseline",
            "description": definition.description,
            "adc_factor": definition.adc_factor,
            "volume_factor": definition.volume_factor,
            "new_lesion_labels": [r["label"] for r in rows if r["new"]],
            "patient_shift_mm": list(shift),
        },
        "tissues": {
            t.name.lower(): {
                "label": int(t),
                "s0": properties[t].s0,
                "adc_um2s": properties[t].adc_um2s,
            }
            for t in Tissue
        },
    }
    if not variation.is_default:
        # Only when given, so that the default phantom's truth stays as it was.
        truth["variation"] = variation.to_json()
    return truth


def _paint_diffuse(
    variation: PhantomVariation,
    properties: Mapping[Tissue, TissueProperties],
    *,
    label: int,
    where: tuple[ScanGrid, BodyFrame, Anatomy],
    maps: tuple[NDArray[np.uint8], NDArray[np.int32], NDArray[np.float32], NDArray[np.float32]],
) -> dict[str, Any]:
    """Paint the diffuse infiltration (one lesion label) and describe it for the truth."""
    grid, frame, anatomy = where
    tissue, labels, adc, s0 = maps
    extent = str(variation.diffuse_extent)
    marrow = np.zeros(256, dtype=bool)
    marrow[[int(t) for t in MARROW_TISSUES]] = True
    marrow_voxels = int(marrow[tissue].sum())
    mask = diffuse_mask(tissue, labels, grid=grid, frame=frame, anatomy=anatomy, extent=extent)
    if not mask.any():
        raise RuntimeError(f"diffuse infiltration of the {extent} has no voxel in this exam")
    infiltrated = diffuse_properties(properties, variation)
    labels[mask] = label
    tissue[mask] = Tissue.LESION
    s0[mask] = infiltrated.s0
    adc[mask] = infiltrated.adc_um2s
    dz, dy, dx = grid.spacing_mm
    count = int(mask.sum())
    muscle = properties[Tissue.MUSCLE]
    return {
        "label": label,
        "extent": extent,
        "voxels": count,
        "volume_ml": count * dz * dy * dx / 1000.0,
        "adc_um2s": infiltrated.adc_um2s,
        "s0": infiltrated.s0,
        "b1000_ratio_to_muscle": (infiltrated.s0 * math.exp(-infiltrated.adc_um2s * 1e-3))
        / (muscle.s0 * math.exp(-muscle.adc_um2s * 1e-3)),
        "fraction_of_marrow": count / marrow_voxels,
    }


def _variation_truth(
    properties: Mapping[Tissue, TissueProperties],
    outside: Sequence[LesionSpec],
    diffuse: Mapping[str, Any] | None,
    truth: Mapping[str, Any],
) -> dict[str, Any]:
    """Truth entries that only a variation adds."""
    extra: dict[str, Any] = {
        "normal_marrow": {
            "b1000_ratio_to_muscle": marrow_b1000_ratio(properties),
            "adc_um2s": properties[Tissue.MARROW_SPINE].adc_um2s,
        },
        "lesions_outside_field": [spec.key for spec in outside],
    }
    focal = sum(row["volume_ml"] for row in truth["lesions"])
    extra["focal_lesion_volume_ml"] = focal
    extra["diffuse_volume_ml"] = 0.0 if diffuse is None else diffuse["volume_ml"]
    if diffuse is not None:
        extra["diffuse"] = dict(diffuse)
    return extra


def make_phantom(
    preset: str = "small",
    *,
    b_values: Sequence[float] | None = None,
    snr: float = 40.0,
    seed: int = 0,
    patient_id: str = "PHANTOM-0001",
    scenario: str = "baseline",
    variation: PhantomVariation | None = None,
) -> Phantom:
    """Build one exam of one phantom patient.

    Parameters
    ----------
    preset
        ``small``, ``reference`` or ``large`` (see :data:`PRESETS`).
    b_values
        s/mm2, strictly increasing; the preset's protocol when ``None``.
    snr
        Signal-to-noise ratio of muscle at the lowest b-value; 0 = noise-free.
    seed
        Noise and patient repositioning; the anatomy and lesions do not depend on it.
    patient_id
        Seeds the anatomy and the lesion set.
    scenario
        ``baseline``, ``response``, ``partial``, ``progression`` or ``stable``.
    variation
        What varies between patients and protocols (marrow signal and ADC, SNR at
        the highest b, ...); ``None`` keeps every default (see
        :class:`~processing.phantom_variation.PhantomVariation`). It is recorded
        in the truth under ``variation`` when it differs from the default.

    Raises
    ------
    ValueError
        For an unknown preset or scenario, or invalid b-values, SNR, seed or ID.
    """
    chosen, values = _validate(
        preset, b_values=b_values, snr=snr, seed=seed, patient_id=patient_id, scenario=scenario
    )
    variation = PhantomVariation() if variation is None else variation
    if not isinstance(variation, PhantomVariation):
        raise ValueError(f"phantom variation must be a PhantomVariation, got {variation!r}")
    properties = tissue_properties(variation)
    key = _patient_key(patient_id)
    patient_rng = np.random.default_rng(key)
    anatomy = build_anatomy(patient_rng)
    baseline, new = plan_lesions(anatomy, patient_rng)
    lesions = apply_scenario(baseline, new, SCENARIOS[scenario], chosen.min_lesion_ml)

    lesions = vary_lesions(lesions, variation)
    structures = anatomy.structures + (arm_structures() if variation.arms else ())
    shift = _shift(key, scenario, seed)
    grid, stations, frame = _layout(chosen, variation, anatomy, structures, shift)
    outside = tuple(spec for spec in lesions if not lesion_in_field(spec, grid, frame))
    lesions = tuple(spec for spec in lesions if spec not in outside)
    tissue = np.zeros(grid.shape, dtype=np.uint8)
    for label, shape in structures:
        rasterise(tissue, shape, label, grid, frame)
    s0_table = np.array([properties[t].s0 for t in Tissue], dtype=np.float32)
    adc_table = np.array([properties[t].adc_um2s for t in Tissue], dtype=np.float32)
    s0 = s0_table[tissue]
    adc = adc_table[tissue]
    lesion_labels = np.zeros(grid.shape, dtype=np.int32)
    bone_fraction = _paint_lesions(lesions, grid, frame, (tissue, lesion_labels, adc, s0))
    _check_separation(lesion_labels)
    diffuse: dict[str, Any] | None = None
    if variation.diffuse_extent is not None:
        diffuse = _paint_diffuse(
            variation,
            properties,
            label=len(baseline) + len(new) + 1,
            where=(grid, frame, anatomy),
            maps=(tissue, lesion_labels, adc, s0),
        )

    sigma, snr = _noise(values, snr, variation.snr_high_b)
    noise_rng = np.random.default_rng([seed, key, list(SCENARIOS).index(scenario), 2])
    signal = _signal(s0, adc, values, sigma, noise_rng)

    truth = _truth(
        preset=chosen,
        seed=seed,
        snr=snr,
        sigma=sigma,
        b_values=values,
        patient_id=patient_id,
        scenario=scenario,
        shift=shift,
        grid=grid,
        stations=stations,
        lesions=lesions,
        lesion_labels=lesion_labels,
        true_adc=adc,
        bone_fraction=bone_fraction,
        properties=properties,
        variation=variation,
    )
    if not variation.is_default:
        truth.update(_variation_truth(properties, outside, diffuse, truth))
    affine = grid.affine()
    for array in (signal, affine, tissue, lesion_labels, adc, s0):
        array.flags.writeable = False
    return Phantom(
        preset=chosen.name,
        seed=seed,
        snr=snr,
        patient_id=patient_id,
        scenario=scenario,
        b_values=values,
        signal=signal,
        affine=affine,
        spacing_mm=grid.spacing_mm,
        stations=stations,
        tissue_labels=tissue,
        lesion_labels=lesion_labels,
        true_adc=adc,
        s0=s0,
        truth=truth,
    )


def write_truth(phantom: Phantom, out_dir: Path) -> None:
    """Write ``truth.json`` and ``truth.npz`` (lesion_labels, true_adc, tissue_labels, affine)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "truth.json").write_text(
        json.dumps(phantom.truth, indent=2) + "\n", encoding="utf-8"
    )
    np.savez_compressed(
        out_dir / "truth.npz",
        lesion_labels=phantom.lesion_labels,
        true_adc=phantom.true_adc,
        tissue_labels=phantom.tissue_labels,
        affine=phantom.affine,
    )
