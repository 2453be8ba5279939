"""Tissue classes of the numerical phantom and their S0 and ADC.

ADC values (um2/s = 1e-6 mm2/s), with their sources:

- normal (red) marrow 400: 360 in myeloma patients' normal marrow (Koutoulidis,
  Radiology 2017); below the 655 normal/abnormal cut-off (Messiou, Eur Radiol 2011).
  Fatty marrow of the skull and femora is given the same ADC and a lower S0.
- kidney 1900, spleen 850, liver 1300: 1.94 / 0.85 / 1.28e-3 mm2/s (Jafar,
  World J Radiol 2016).
- brain 800: between white (0.70) and cortical grey matter (0.89) (Helenius,
  AJNR 2002).
- CSF 3000 and urine 2900: free water at body temperature, ~3.0e-3 mm2/s.
- bone lesions 600-1700 (per lesion, see :mod:`processing.phantom_lesions`):
  metastases/myeloma 1.05 +- 0.46e-3 (Messiou 2011); responding > 1400 (MET-RADS-P).
- values without a citation are typical of the DWI literature and are
  assumptions of this phantom: muscle 1450, spinal cord 1050 (trace mean
  diffusivity), salivary glands 1150, bowel 1250, prostate 1500, testis 1100,
  intervertebral disc 1700, suppressed fat 150.

S0 is the b = 0 signal of a STIR-prepared single-shot EPI, relative to muscle =
1 (then times :data:`MUSCLE_S0`). These relative values are not measurements:
they are chosen to reproduce the familiar contrast of clinical WB-DWI (fat and
normal marrow dark after STIR, liver darker than spleen, CSF/urine bright at
b50 and dark at b900, brain, spleen, cord, salivary glands, bowel and testes
staying bright at high b, as on every real scan). Lungs and cortical bone give
almost no signal; flowing blood in the heart is dark (black-blood effect).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from types import MappingProxyType

__all__ = [
    "MARROW_TISSUES",
    "MUSCLE_S0",
    "TISSUE_PROPERTIES",
    "Tissue",
    "TissueProperties",
]

MUSCLE_S0 = 200.0
"""Signal of muscle at b = 0 in scanner-like units; the SNR reference."""


class Tissue(IntEnum):
    """Label values of ``Phantom.tissue_labels``."""

    BACKGROUND = 0
    FAT = 1  # subcutaneous and visceral fat, suppressed by STIR
    MUSCLE = 2  # also the unspecified soft tissue of face, neck and trunk wall
    LUNG = 3  # lungs and airway (air)
    HEART = 4  # blood pool, dark on DWI
    LIVER = 5
    SPLEEN = 6
    KIDNEY = 7
    BRAIN = 8
    SPINAL_CORD = 9
    CSF = 10
    BLADDER = 11
    BOWEL = 12
    SALIVARY_GLAND = 13
    PROSTATE = 14
    TESTIS = 15
    DISC = 16  # intervertebral disc
    CORTICAL_BONE = 17
    MARROW_SKULL = 18
    MARROW_SPINE = 19  # vertebral bodies, posterior elements and sacrum
    MARROW_RIB = 20
    MARROW_PELVIS = 21  # ilium, acetabulum, pubis, ischium
    MARROW_FEMUR = 22
    LESION = 23


MARROW_TISSUES: frozenset[Tissue] = frozenset(
    {
        Tissue.MARROW_SKULL,
        Tissue.MARROW_SPINE,
        Tissue.MARROW_RIB,
        Tissue.MARROW_PELVIS,
        Tissue.MARROW_FEMUR,
    }
)
"""Bone marrow labels: every lesion is centred in one of these."""


@dataclass(frozen=True, slots=True)
class TissueProperties:
    """Signal at b = 0 (scanner-like units) and ADC (um2/s) of one tissue."""

    s0: float
    adc_um2s: float


def _props(relative_s0: float, adc_um2s: float) -> TissueProperties:
    return TissueProperties(s0=relative_s0 * MUSCLE_S0, adc_um2s=adc_um2s)


TISSUE_PROPERTIES: Mapping[Tissue, TissueProperties] = MappingProxyType(
    {
        Tissue.BACKGROUND: TissueProperties(s0=0.0, adc_um2s=0.0),
        Tissue.FAT: _props(0.06, 150.0),
        Tissue.MUSCLE: _props(1.0, 1450.0),
        Tissue.LUNG: _props(0.04, 2000.0),
        Tissue.HEART: _props(0.25, 2500.0),
        Tissue.LIVER: _props(1.3, 1300.0),
        Tissue.SPLEEN: _props(2.6, 850.0),
        Tissue.KIDNEY: _props(3.0, 1900.0),
        Tissue.BRAIN: _props(2.2, 800.0),
        Tissue.SPINAL_CORD: _props(2.2, 1050.0),
        Tissue.CSF: _props(6.0, 3000.0),
        Tissue.BLADDER: _props(6.0, 2900.0),
        Tissue.BOWEL: _props(2.4, 1250.0),
        Tissue.SALIVARY_GLAND: _props(2.3, 1150.0),
        Tissue.PROSTATE: _props(2.0, 1500.0),
        Tissue.TESTIS: _props(3.2, 1100.0),
        Tissue.DISC: _props(1.6, 1700.0),
        Tissue.CORTICAL_BONE: TissueProperties(s0=0.0, adc_um2s=0.0),
        Tissue.MARROW_SKULL: _props(0.25, 400.0),
        Tissue.MARROW_SPINE: _props(0.4, 400.0),
        Tissue.MARROW_RIB: _props(0.35, 400.0),
        Tissue.MARROW_PELVIS: _props(0.4, 400.0),
        Tissue.MARROW_FEMUR: _props(0.25, 400.0),
        # Typical active lesion; each lesion's voxels take that lesion's own S0 and
        # ADC (see processing.phantom_lesions).
        Tissue.LESION: _props(2.3, 900.0),
    }
)
"""Per-tissue S0 and ADC (see the module docstring for sources)."""
