"""The exam that processing consumes: one whole-body DWI volume with its geometry.

``dicom_node.assembly.assemble`` builds a :class:`DwiExam` from the received instances;
everything in ``processing`` takes one. This module never imports pydicom: the
source references are plain strings so that a job can be described as JSON.

Conventions
-----------
- ``signal`` is float32 with axes ``[b, z, y, x]``: b-value, slice (cranio-caudal
  order of the composed grid, head first), row, column.
- ``affine`` is a 4x4 float64 matrix mapping array indices ``(z, y, x, 1)`` to
  patient coordinates ``(X, Y, Z, 1)`` in mm, DICOM LPS (PS3.3 C.7.6.2.1.1).
  Note the index order: it follows the array axes, not NIfTI's (i, j, k).
- ``spacing_mm`` follows the array axes too: ``(slice, row, column)``.
- b-values are in s/mm2, strictly increasing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

__all__ = ["DwiExam", "SourceRef", "index_to_patient"]


@dataclass(frozen=True, slots=True)
class SourceRef:
    """One stored source image (or one frame of a multi-frame image) used by the exam.

    Parameters
    ----------
    path
        Where the instance is stored (spool or input folder), so that writers can
        read its header again.
    sop_class_uid, sop_instance_uid, series_instance_uid
        The DICOM identity of the source instance.
    b_value
        The b-value (s/mm2) of this image.
    slice_index
        The slice ``z`` of the composed grid that this image contributes to.
    frame_number
        1-based frame number inside a multi-frame instance, ``None`` for single-frame.
    """

    path: str
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    b_value: float
    slice_index: int
    frame_number: int | None = None


@dataclass(frozen=True, slots=True)
class DwiExam:
    """A whole-body DWI exam composed onto one cranio-caudal grid.

    Arrays are made read-only on construction so that an exam can be shared
    between stages without copies and without surprises.
    """

    signal: NDArray[np.float32]
    b_values: tuple[float, ...]
    affine: NDArray[np.float64]
    spacing_mm: tuple[float, float, float]
    study_instance_uid: str
    frame_of_reference_uid: str
    patient_id: str
    issuer_of_patient_id: str = ""
    stations: int = 1
    series_used: tuple[str, ...] = ()
    sources: tuple[SourceRef, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if self.signal.ndim != 4:
            raise ValueError(f"signal must be [b, z, y, x], got shape {self.signal.shape}")
        if self.signal.dtype != np.float32:
            raise ValueError(f"signal must be float32, got {self.signal.dtype}")
        if self.signal.shape[0] != len(self.b_values):
            raise ValueError(
                f"signal has {self.signal.shape[0]} b-value planes but {len(self.b_values)} "
                "b-values were given"
            )
        if self.affine.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {self.affine.shape}")
        self.signal.flags.writeable = False
        self.affine.flags.writeable = False

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(b, z, y, x)``."""
        b, z, y, x = self.signal.shape
        return (b, z, y, x)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 ml = 1000 mm3)."""
        dz, dy, dx = self.spacing_mm
        return dz * dy * dx / 1000.0


def index_to_patient(affine: NDArray[np.float64], zyx: NDArray[np.float64]) -> NDArray[np.float64]:
    """Map array indices ``(..., 3)`` in ``(z, y, x)`` order to patient LPS mm ``(..., 3)``."""
    zyx = np.asarray(zyx, dtype=np.float64)
    return zyx @ affine[:3, :3].T + affine[:3, 3]
