"""Lesion correspondence between two exams of one patient, in patient coordinates.

Between visits the patient lies a little differently on the table and the
stations may start at another height, so the same lesion appears at patient
coordinates shifted by a few millimetres to a few centimetres, mostly along the
body axis. Lesions also appear, disappear, split and merge. The method:

1. **Global shift, by consensus.** Take the ``shift_estimation_lesions``
   largest lesions of each exam. Every pair (current ``i``, reference ``j``)
   proposes a translation ``t = c_i - r_j`` (only those with
   ``|t| <= shift_search_max_mm``). A proposal's support is the number of
   lesions that find a partner within ``shift_inlier_tolerance_mm`` after
   applying it (the smaller of the two exams' counts). The best-supported
   proposal wins (ties: the smaller shift); it is then refined as the
   component-wise median of the displacements of its inlier pairs (twice).
   With support below ``min_shift_inliers`` the shift is taken as zero: one
   pair of lesions cannot tell a shift from a new lesion next to a healed one.
   This is a one-point RANSAC that tries every hypothesis, so it is not
   random and tolerates a majority of new or vanished lesions as long as two
   lesions persist.
2. **One-to-one assignment.** The cost of pairing ``i`` with ``j`` is the
   distance ``|c_i - (r_j + t)|``; a pair is allowed only inside a gate of
   ``max(gate_min_mm, gate_size_factor * (rad_i + rad_j))`` where ``rad`` is
   the radius of the sphere with the lesion's volume (big lesions move their
   centroid more when they grow or shrink unevenly). The assignment that
   minimises the total distance over allowed pairs is the Hungarian solution
   (:func:`scipy.optimize.linear_sum_assignment`).
3. **Splits and merges.** A lesion left unpaired that lies inside the gate of
   a paired lesion of the other exam joins that pair's group (a lesion that
   split in two, or two that merged); the comparison then uses the group's
   total volume and volume-weighted ADC.
4. Whatever is still unpaired is **new** (current exam) or **disappeared**
   (reference exam).

No settings here depend on the phantom: the defaults follow the consensus
protocol's 5 mm slices and >= 3 mm pixels (Barnes, BJR 2018): a tolerance of
two slices for the consensus, and a gate of three slices or the lesions'
combined radii, whichever is larger.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from processing.results import LesionStats

__all__ = [
    "LesionGroup",
    "LesionMatching",
    "MatchingSettings",
    "equivalent_radius_mm",
    "estimate_shift",
    "match_lesions",
]

_NOT_ALLOWED = 1e12


@dataclass(frozen=True, slots=True)
class MatchingSettings:
    """How lesions are put in correspondence across exams (see the module docstring).

    Parameters
    ----------
    shift_search_max_mm
        Largest global shift considered between two exams (repositioning plus a
        different station start), mm.
    shift_inlier_tolerance_mm
        A lesion supports a shift when a partner lies this close after the
        shift (two 5 mm slices), mm.
    min_shift_inliers
        Support needed before a non-zero shift is accepted.
    shift_estimation_lesions
        Only this many of the largest lesions of each exam propose shifts (keeps
        the search quadratic in a small number for diffuse disease).
    gate_min_mm
        Smallest matching gate after the shift (three 5 mm slices), mm.
    gate_size_factor
        The gate grows with the sum of the two lesions' equivalent-sphere radii
        times this factor.
    """

    shift_search_max_mm: float = 80.0
    shift_inlier_tolerance_mm: float = 10.0
    min_shift_inliers: int = 2
    shift_estimation_lesions: int = 30
    gate_min_mm: float = 15.0
    gate_size_factor: float = 1.0

    def __post_init__(self) -> None:
        for name in (
            "shift_search_max_mm",
            "shift_inlier_tolerance_mm",
            "gate_min_mm",
            "gate_size_factor",
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"matching setting {name}: must be finite and >= 0, got {value}")
        if self.min_shift_inliers < 1:
            raise ValueError(
                f"matching setting min_shift_inliers: must be >= 1, got {self.min_shift_inliers}"
            )
        if self.shift_estimation_lesions < 1:
            raise ValueError(
                "matching setting shift_estimation_lesions: must be >= 1, "
                f"got {self.shift_estimation_lesions}"
            )


@dataclass(frozen=True, slots=True)
class LesionGroup:
    """Lesions of the current exam and of the reference exam that are the same disease.

    Usually one of each; more on one side after a split or a merge.
    ``distance_mm`` is the shifted centroid distance of the core pair.
    """

    current_labels: tuple[int, ...]
    reference_labels: tuple[int, ...]
    distance_mm: float


@dataclass(frozen=True, slots=True)
class LesionMatching:
    """Correspondence of the current exam's lesions with one reference exam.

    ``shift_mm`` is the estimated translation (LPS, mm) such that a lesion at
    ``r`` in the reference exam lies near ``r + shift_mm`` in the current one.
    """

    shift_mm: tuple[float, float, float]
    shift_support: int
    groups: tuple[LesionGroup, ...]
    new_labels: tuple[int, ...]
    disappeared_labels: tuple[int, ...]

    def group_of_current(self, label: int) -> LesionGroup | None:
        """The group holding current lesion ``label``, ``None`` when it is new."""
        for group in self.groups:
            if label in group.current_labels:
                return group
        return None


def equivalent_radius_mm(volume_ml: float) -> float:
    """Radius (mm) of the sphere with ``volume_ml`` (0 for non-finite or negative volumes)."""
    if not math.isfinite(volume_ml) or volume_ml <= 0:
        return 0.0
    return float((3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0))


def estimate_shift(
    current: Sequence[LesionStats],
    reference: Sequence[LesionStats],
    settings: MatchingSettings | None = None,
) -> tuple[NDArray[np.float64], int]:
    """Global translation from the reference exam to the current one, and its support.

    See step 1 of the module docstring. Returns a zero shift with the support
    found when the support is below ``settings.min_shift_inliers``.
    """
    settings = settings or MatchingSettings()
    zero = np.zeros(3)
    if not current or not reference:
        return zero, 0
    cur = _centroids(_largest(current, settings.shift_estimation_lesions))
    ref = _centroids(_largest(reference, settings.shift_estimation_lesions))
    proposals = (cur[:, None, :] - ref[None, :, :]).reshape(-1, 3)
    proposals = proposals[np.linalg.norm(proposals, axis=1) <= settings.shift_search_max_mm]
    proposals = np.vstack([zero[None, :], proposals])
    # distances[k, i, j] = |cur_i - (ref_j + proposal_k)|
    shifted = ref[None, :, :] + proposals[:, None, :]
    distances = np.linalg.norm(cur[None, :, None, :] - shifted[:, None, :, :], axis=3)
    close = distances <= settings.shift_inlier_tolerance_mm
    support = np.minimum(close.any(axis=2).sum(axis=1), close.any(axis=1).sum(axis=1))
    best_support = int(support.max())
    if best_support < settings.min_shift_inliers:
        return zero, best_support
    candidates = np.flatnonzero(support == best_support)
    best = candidates[np.argmin(np.linalg.norm(proposals[candidates], axis=1))]
    shift = proposals[best]
    for _ in range(2):
        d = np.linalg.norm(cur[:, None, :] - (ref[None, :, :] + shift), axis=2)
        nearest = d.argmin(axis=1)
        inlier = d[np.arange(len(cur)), nearest] <= settings.shift_inlier_tolerance_mm
        if inlier.sum() < settings.min_shift_inliers:
            break
        shift = np.median(cur[inlier] - ref[nearest[inlier]], axis=0)
    return np.asarray(shift, dtype=np.float64), best_support


def match_lesions(
    current: Sequence[LesionStats],
    reference: Sequence[LesionStats],
    settings: MatchingSettings | None = None,
) -> LesionMatching:
    """Put the lesions of ``current`` in correspondence with those of ``reference``.

    Raises
    ------
    ValueError
        When a lesion has a non-finite centroid (it cannot be placed).
    """
    settings = settings or MatchingSettings()
    _check_centroids(current, reference)
    shift, support = estimate_shift(current, reference, settings)
    shift_tuple = (float(shift[0]), float(shift[1]), float(shift[2]))
    if not current or not reference:
        return LesionMatching(
            shift_mm=shift_tuple,
            shift_support=support,
            groups=(),
            new_labels=tuple(lesion.label for lesion in current),
            disappeared_labels=tuple(lesion.label for lesion in reference),
        )
    cur = _centroids(current)
    ref = _centroids(reference) + shift
    distance = np.linalg.norm(cur[:, None, :] - ref[None, :, :], axis=2)
    cur_radius = np.array([equivalent_radius_mm(lesion.volume_ml) for lesion in current])
    ref_radius = np.array([equivalent_radius_mm(lesion.volume_ml) for lesion in reference])
    gate = np.maximum(
        settings.gate_min_mm,
        settings.gate_size_factor * (cur_radius[:, None] + ref_radius[None, :]),
    )
    allowed = distance <= gate
    rows, cols = linear_sum_assignment(np.where(allowed, distance, _NOT_ALLOWED))
    pairs = [(int(i), int(j)) for i, j in zip(rows, cols, strict=True) if allowed[i, j]]

    paired_cur = {i for i, _ in pairs}
    paired_ref = {j for _, j in pairs}
    members_cur: dict[int, list[int]] = {k: [i] for k, (i, _) in enumerate(pairs)}
    members_ref: dict[int, list[int]] = {k: [j] for k, (_, j) in enumerate(pairs)}
    ref_to_pair = {j: k for k, (_, j) in enumerate(pairs)}
    cur_to_pair = {i: k for k, (i, _) in enumerate(pairs)}
    # split: one lesion became several; merge: several lesions became one
    new = _attach_unpaired(
        paired_cur,
        paired_ref,
        allowed=allowed,
        distance=distance,
        pair_of_other=ref_to_pair,
        members=members_cur,
    )
    disappeared = _attach_unpaired(
        paired_ref,
        paired_cur,
        allowed=allowed.T,
        distance=distance.T,
        pair_of_other=cur_to_pair,
        members=members_ref,
    )

    groups = tuple(
        LesionGroup(
            current_labels=tuple(sorted(current[i].label for i in members_cur[k])),
            reference_labels=tuple(sorted(reference[j].label for j in members_ref[k])),
            distance_mm=float(distance[i, j]),
        )
        for k, (i, j) in enumerate(pairs)
    )
    return LesionMatching(
        shift_mm=shift_tuple,
        shift_support=support,
        groups=tuple(sorted(groups, key=lambda g: g.current_labels)),
        new_labels=tuple(sorted(current[i].label for i in new)),
        disappeared_labels=tuple(sorted(reference[j].label for j in disappeared)),
    )


def _check_centroids(current: Sequence[LesionStats], reference: Sequence[LesionStats]) -> None:
    for side, lesions in (("current", current), ("reference", reference)):
        for lesion in lesions:
            if not all(math.isfinite(c) for c in lesion.centroid_mm):
                raise ValueError(
                    f"{side} lesion {lesion.label}: centroid {lesion.centroid_mm} is not finite, "
                    "so it cannot be matched across exams"
                )


def _attach_unpaired(
    paired: set[int],
    paired_other: set[int],
    *,
    allowed: NDArray[np.bool_],
    distance: NDArray[np.float64],
    pair_of_other: dict[int, int],
    members: dict[int, list[int]],
) -> list[int]:
    """Attach each unpaired lesion (a row) to the pair of its nearest allowed paired partner.

    Rows are this side's lesions, columns the other side's. Returns the rows that
    have no allowed partner (new or disappeared lesions).
    """
    alone: list[int] = []
    for i in range(allowed.shape[0]):
        if i in paired:
            continue
        partners = [j for j in paired_other if allowed[i, j]]
        if partners:
            j = min(partners, key=lambda jj: distance[i, jj])
            members[pair_of_other[j]].append(i)
        else:
            alone.append(i)
    return alone


def _largest(lesions: Sequence[LesionStats], count: int) -> list[LesionStats]:
    ordered = sorted(
        lesions,
        key=lambda lesion: -lesion.volume_ml if math.isfinite(lesion.volume_ml) else 0.0,
    )
    return ordered[:count]


def _centroids(lesions: Sequence[LesionStats]) -> NDArray[np.float64]:
    return np.array([lesion.centroid_mm for lesion in lesions], dtype=np.float64).reshape(-1, 3)
