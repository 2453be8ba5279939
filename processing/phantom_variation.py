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
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from types import MappingProxyType
from typing import Any

from processing.phantom_tissues import MARROW_TISSUES, TISSUE_PROPERTIES, Tissue, TissueProperties

__all__ = [
    "RATIO_B_VALUE",
    "PhantomVariation",
    "marrow_b1000_ratio",
    "tissue_properties",
]

RATIO_B_VALUE = 1000.0
"""b-value (s/mm2) at which ``marrow_b1000_ratio`` compares marrow with muscle."""

_RANGES: Mapping[str, tuple[float, float, str]] = MappingProxyType(
    {
        "marrow_b1000_ratio": (0.2, 10.0, "x muscle at b1000 (realistic 0.8-5, population ~3)"),
        "marrow_adc_um2s": (100.0, 1000.0, "um2/s (realistic 250-650)"),
        "snr_high_b": (1.0, 1000.0, "muscle SNR at the highest b (realistic 8-80)"),
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
    """

    marrow_b1000_ratio: float | None = None
    marrow_adc_um2s: float | None = None
    snr_high_b: float | None = None

    def __post_init__(self) -> None:
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
