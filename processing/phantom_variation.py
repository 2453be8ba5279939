"""What varies between real patients and protocols, as parameters of the phantom (issue 10).

:class:`PhantomVariation` holds optional overrides of the phantom's defaults; a
field left ``None`` keeps the default, so ``PhantomVariation()`` (or no variation
at all) builds exactly the phantom of :func:`processing.phantom.make_phantom`
without one.

Normal-marrow signal. In the phantom's defaults, normal (red) marrow of the spine
and pelvis is ~1.1 x muscle at b = 1000 s/mm2. Real patients vary far more: in
100 asymptomatic adults scanned with whole-body DWI at 1.5 T normal marrow was
3.2 +/- 0.9 x muscle at b900 with an ADC of 422 +/- 67 um2/s (PMC8161193, higher
in younger women), and red-marrow reconversion (G-CSF, anaemia) raises it further.
``marrow_b1000_ratio`` sets that ratio for the spine and pelvis marrow at
b = 1000 (whatever the protocol's b-values), by scaling the S0 of every marrow
tissue by one factor, so the fatty skull and femoral marrow keep their lower
signal relative to the spine; ``marrow_adc_um2s`` sets the ADC of every marrow
tissue (the ratio is then met at that ADC).

Noise. ``snr_high_b`` gives the SNR of muscle at the highest b-value instead of
the lowest; it replaces :func:`~processing.phantom.make_phantom`'s ``snr`` (the
phantom then records the equivalent lowest-b SNR as its ``snr``).

Diffuse infiltration (MY-RADS "diffuse" pattern). ``diffuse_extent`` names the
marrow that is infiltrated throughout (see :data:`DIFFUSE_EXTENTS`): every normal
marrow voxel of that extent (not a focal lesion) becomes disease with ADC
``diffuse_adc_um2s`` (default 850, MY-RADS diffuse disease ~700-1000) and a signal
at b = 1000 ``diffuse_contrast`` times the normal spine marrow's (default 2). The
truth counts it as disease: its voxels carry one lesion label of their own
(after every planned focal lesion's), ``tissue_labels`` marks them ``LESION``,
and ``total_lesion_volume_ml``, the mean and the median ADC include them; the
per-lesion rows stay focal lesions only and ``truth["diffuse"]`` describes the
infiltration (``focal_lesion_volume_ml`` and ``diffuse_volume_ml`` split the
total). Focal lesions inside the infiltrated marrow keep their own labels and may
touch it. The infiltration does not change with the scenario.

Lesions. ``lesion_adc_scale`` multiplies every focal lesion's ADC and
``lesion_s0_scale`` its S0 (its contrast) after the scenario is applied.

Protocol and patient. ``slice_mm`` and ``pixel_mm`` replace the preset's grid
(the stations keep their count and about their length and overlap in mm;
the in-plane field of view grows when needed to hold the whole body);
``body_scale`` scales the patient in every direction (lesion volumes stay the
same); ``arms`` puts both arms beside the trunk (fat, muscle, humerus and forearm
bones with fatty marrow; no lesions); ``exam_start="skull_base"`` starts the
exam at the skull base instead of above the vertex (the grid keeps its length,
so it reaches further down the thighs); ``neck_scale`` stretches the neck (skull
base to thoracic inlet, ~130 mm nominal) and moves everything below. A focal
lesion whose centre falls outside the grid is not part of that exam: it is
absent from the arrays and the truth (``truth["lesions_outside_field"]`` names
it), and the labels of the others do not change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from types import MappingProxyType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from processing.phantom_anatomy import Anatomy
from processing.phantom_lesions import LesionSpec
from processing.phantom_shapes import BodyFrame, ScanGrid
from processing.phantom_tissues import MARROW_TISSUES, TISSUE_PROPERTIES, Tissue, TissueProperties

__all__ = [
    "DIFFUSE_ADC_UM2S",
    "DIFFUSE_CONTRAST",
    "DIFFUSE_EXTENTS",
    "EXAM_STARTS",
    "RATIO_B_VALUE",
    "PhantomVariation",
    "diffuse_mask",
    "diffuse_properties",
    "lesion_in_field",
    "marrow_b1000_ratio",
    "tissue_properties",
    "vary_lesions",
]

RATIO_B_VALUE = 1000.0
"""b-value (s/mm2) at which ``marrow_b1000_ratio`` compares marrow with muscle."""

DIFFUSE_ADC_UM2S = 850.0
"""Default ADC of diffusely infiltrated marrow, um2/s."""

DIFFUSE_CONTRAST = 2.0
"""Default signal of diffusely infiltrated marrow at b = 1000 over normal spine marrow's."""

DIFFUSE_EXTENTS: Mapping[str, str] = MappingProxyType(
    {
        "lumbar_spine": "marrow of L1-L5 (vertebral bodies and posterior elements)",
        "pelvis": "marrow of the pelvic bones and the sacrum",
        "lumbar_spine_and_pelvis": "marrow of L1-L5, the pelvic bones and the sacrum",
        "spine_and_pelvis": "marrow of the whole spine, the pelvic bones and the sacrum",
    }
)
"""Marrow a diffuse infiltration can fill, by name."""

EXAM_STARTS: Mapping[str, str] = MappingProxyType(
    {
        "vertex": "the exam starts just above the vertex (the presets' default)",
        "skull_base": "the exam starts at the skull base (no brain or skull vault)",
    }
)
"""Where the exam's first slice lies, by name."""

_RANGES: Mapping[str, tuple[float, float, str]] = MappingProxyType(
    {
        "marrow_b1000_ratio": (0.2, 10.0, "x muscle at b1000 (realistic 0.8-5, population ~3)"),
        "marrow_adc_um2s": (100.0, 1000.0, "um2/s (realistic 250-650)"),
        "snr_high_b": (1.0, 1000.0, "(muscle SNR at the highest b; realistic 8-80)"),
        "diffuse_adc_um2s": (400.0, 2000.0, "um2/s (MY-RADS diffuse disease ~700-1000)"),
        "diffuse_contrast": (0.5, 8.0, "x normal marrow at b1000"),
        "lesion_adc_scale": (0.4, 2.5, "x each lesion's ADC"),
        "lesion_s0_scale": (0.2, 4.0, "x each lesion's S0"),
        "slice_mm": (2.0, 10.0, "mm (WB-DWI uses 4-8)"),
        "pixel_mm": (1.0, 8.0, "mm (WB-DWI uses 1.5-4)"),
        "body_scale": (0.8, 1.25, "x the patient's size"),
        "neck_scale": (0.5, 1.6, "x the neck's length (much shorter 0.6, much longer 1.4)"),
    }
)


@dataclass(frozen=True, slots=True)
class PhantomVariation:
    """Optional overrides of the phantom's defaults; ``None`` keeps the default.

    Parameters
    ----------
    marrow_b1000_ratio
        Normal spine and pelvis marrow signal at b = 1000 s/mm2 divided by muscle
        signal at b = 1000 (default phantom ~1.14; real adults 0.8-5, population
        mean ~3.2). Accepted 0.2-10.
    marrow_adc_um2s
        ADC of all normal marrow, um2/s (default 400; real 250-650). Accepted 100-1000.
    snr_high_b
        SNR of muscle at the highest b-value of the protocol (real 8-80); replaces
        the lowest-b ``snr`` of :func:`~processing.phantom.make_phantom`. Accepted 1-1000.
    diffuse_extent
        A name of :data:`DIFFUSE_EXTENTS`: that marrow is diffusely infiltrated.
    diffuse_adc_um2s
        ADC of the infiltrated marrow (default 850). Accepted 400-2000.
    diffuse_contrast
        Its signal at b = 1000 over normal spine marrow's (default 2). Accepted 0.5-8.
    lesion_adc_scale
        Factor on every focal lesion's ADC. Accepted 0.4-2.5.
    lesion_s0_scale
        Factor on every focal lesion's S0 (contrast). Accepted 0.2-4.
    slice_mm
        Slice thickness and spacing, mm (WB-DWI 4-8). Accepted 2-10.
    pixel_mm
        In-plane pixel size, mm (WB-DWI 1.5-4). Accepted 1-8.
    body_scale
        Patient size factor in every direction. Accepted 0.8-1.25.
    arms
        Both arms beside the trunk, inside the field of view.
    exam_start
        ``"vertex"`` (default) or ``"skull_base"`` (see :data:`EXAM_STARTS`).
    neck_scale
        Factor on the neck's length. Accepted 0.5-1.6.
    """

    marrow_b1000_ratio: float | None = None
    marrow_adc_um2s: float | None = None
    snr_high_b: float | None = None
    diffuse_extent: str | None = None
    diffuse_adc_um2s: float | None = None
    diffuse_contrast: float | None = None
    lesion_adc_scale: float | None = None
    lesion_s0_scale: float | None = None
    slice_mm: float | None = None
    pixel_mm: float | None = None
    body_scale: float | None = None
    arms: bool = False
    exam_start: str = "vertex"
    neck_scale: float | None = None

    def __post_init__(self) -> None:
        if self.diffuse_extent is not None and self.diffuse_extent not in DIFFUSE_EXTENTS:
            raise ValueError(
                f"phantom variation diffuse_extent must be one of {list(DIFFUSE_EXTENTS)}, "
                f"got {self.diffuse_extent!r}"
            )
        if self.diffuse_extent is None and (
            self.diffuse_adc_um2s is not None or self.diffuse_contrast is not None
        ):
            raise ValueError(
                "phantom variation diffuse_adc_um2s and diffuse_contrast need a diffuse_extent"
            )
        if self.exam_start not in EXAM_STARTS:
            raise ValueError(
                f"phantom variation exam_start must be one of {list(EXAM_STARTS)}, "
                f"got {self.exam_start!r}"
            )
        if not isinstance(self.arms, bool):
            raise ValueError(f"phantom variation arms must be true or false, got {self.arms!r}")
        for name, (low, high, unit) in _RANGES.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"phantom variation {name} must be a number, got {value!r}")
            if not math.isfinite(value) or not low <= value <= high:
                raise ValueError(
                    f"phantom variation {name} must be between {low:g} and {high:g} {unit}, "
                    f"got {value!r}"
                )

    @property
    def is_default(self) -> bool:
        """Whether every field keeps the phantom's default."""
        return self == PhantomVariation()

    def to_json(self) -> dict[str, Any]:
        """The fields that differ from the default, as JSON values."""
        defaults = PhantomVariation()
        return {
            name: value for name, value in asdict(self).items() if value != getattr(defaults, name)
        }

    def replaced(self, **changes: Any) -> PhantomVariation:
        """A copy with some fields changed (validated again)."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown phantom variation field(s) {unknown}; known {sorted(known)}")
        return replace(self, **changes)


def _attenuation(adc_um2s: float, b_value: float = RATIO_B_VALUE) -> float:
    return math.exp(-b_value * adc_um2s * 1e-6)


def marrow_b1000_ratio(properties: Mapping[Tissue, TissueProperties]) -> float:
    """Spine marrow over muscle signal at b = 1000 for a table of tissue properties."""
    marrow = properties[Tissue.MARROW_SPINE]
    muscle = properties[Tissue.MUSCLE]
    return (marrow.s0 * _attenuation(marrow.adc_um2s)) / (muscle.s0 * _attenuation(muscle.adc_um2s))


def diffuse_properties(
    properties: Mapping[Tissue, TissueProperties], variation: PhantomVariation
) -> TissueProperties:
    """S0 and ADC of diffusely infiltrated marrow, from the normal spine marrow's signal."""
    adc = DIFFUSE_ADC_UM2S if variation.diffuse_adc_um2s is None else variation.diffuse_adc_um2s
    contrast = (
        DIFFUSE_CONTRAST if variation.diffuse_contrast is None else variation.diffuse_contrast
    )
    marrow = properties[Tissue.MARROW_SPINE]
    s0 = contrast * marrow.s0 * _attenuation(marrow.adc_um2s) / _attenuation(adc)
    return TissueProperties(s0=s0, adc_um2s=float(adc))


def tissue_properties(variation: PhantomVariation) -> Mapping[Tissue, TissueProperties]:
    """Per-tissue S0 and ADC with ``variation`` applied (the defaults object when none)."""
    if variation.marrow_adc_um2s is None and variation.marrow_b1000_ratio is None:
        return TISSUE_PROPERTIES
    table = dict(TISSUE_PROPERTIES)
    if variation.marrow_adc_um2s is not None:
        for tissue in MARROW_TISSUES:
            table[tissue] = replace(table[tissue], adc_um2s=float(variation.marrow_adc_um2s))
    if variation.marrow_b1000_ratio is not None:
        factor = variation.marrow_b1000_ratio / marrow_b1000_ratio(table)
        for tissue in MARROW_TISSUES:
            table[tissue] = replace(table[tissue], s0=table[tissue].s0 * factor)
    return MappingProxyType(table)


def diffuse_mask(
    tissue: NDArray[np.uint8],
    lesion_labels: NDArray[np.int32],
    *,
    grid: ScanGrid,
    frame: BodyFrame,
    anatomy: Anatomy,
    extent: str,
) -> NDArray[np.bool_]:
    """Normal-marrow voxels (not focal lesion) of a diffuse-infiltration extent."""
    z_mm = grid.axes_mm()[0]
    h = frame.nominal_h((frame.vertex_z + frame.shift_mm[2] - z_mm) / frame.height_scale)
    first, last = anatomy.vertebrae["L1"], anatomy.vertebrae["L5"]
    lumbar_top = first.center[2] - first.half_height - 1.0
    lumbar_bottom = last.center[2] + last.half_height + 2.0
    lumbar_slices = ((h >= lumbar_top) & (h <= lumbar_bottom))[:, None, None]
    sacral_slices = (h > lumbar_bottom)[:, None, None]
    spine = tissue == int(Tissue.MARROW_SPINE)
    pelvis = tissue == int(Tissue.MARROW_PELVIS)
    masks = {
        "lumbar_spine": spine & lumbar_slices,
        "pelvis": pelvis | (spine & sacral_slices),
        "lumbar_spine_and_pelvis": pelvis | (spine & (lumbar_slices | sacral_slices)),
        "spine_and_pelvis": pelvis | spine,
    }
    mask: NDArray[np.bool_] = masks[extent] & (lesion_labels == 0)
    return mask


def lesion_in_field(spec: LesionSpec, grid: ScanGrid, frame: BodyFrame) -> bool:
    """Whether a lesion's centre lies within the grid's slices (half a slice beyond the ends)."""
    centre = frame.to_patient(np.asarray(spec.center, dtype=np.float64))
    dz = grid.spacing_mm[0]
    top = grid.origin_mm[2] + dz / 2.0
    bottom = grid.origin_mm[2] - dz * (grid.shape[0] - 1) - dz / 2.0
    return bool(bottom <= centre[2] <= top)


def vary_lesions(
    lesions: tuple[LesionSpec, ...], variation: PhantomVariation
) -> tuple[LesionSpec, ...]:
    """The lesions with ``lesion_adc_scale`` and ``lesion_s0_scale`` applied."""
    adc_scale = 1.0 if variation.lesion_adc_scale is None else variation.lesion_adc_scale
    s0_scale = 1.0 if variation.lesion_s0_scale is None else variation.lesion_s0_scale
    if adc_scale == 1.0 and s0_scale == 1.0:
        return lesions
    return tuple(
        replace(spec, adc_um2s=spec.adc_um2s * adc_scale, s0=spec.s0 * s0_scale) for spec in lesions
    )
