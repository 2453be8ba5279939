"""Rules that remove normal high-signal structures from the tumour candidates.

On computed high-b images many normal tissues are as bright as bone disease:
brain, spinal cord, salivary glands, spleen, kidneys, bowel, prostate and
testes (the TTL case study removes "brain, kidneys and bowel" by hand; the ICR tools use
a skeleton mask, Candito et al. 2025). Each rule below uses a property that
real anatomy has on every scanner, never a position taken from the phantom;
``docs/algorithm.md`` lists each rule's source and its known failure modes.

1. :func:`head_exclusion` - above the neck (found from the body outline), keep
   only the cranial vault's shell (scalp, skull): the brain lies deeper than
   ``skull_shell_mm`` below the skin; the face and skull base below the vault
   (salivary glands, tonsils, nasal mucosa) are excluded. With
   ``exclude_head`` the whole head is excluded (Blackledge et al. 2014: below C4).
2. :func:`fluid_and_kidney` - regions whose locally averaged ADC is that of
   kidney or free fluid (CSF, urine, bile, bowel content) are removed with a
   one-voxel margin.
3. :func:`spinal_cord` - long, thin cranio-caudal runs (cord; also a filled
   thecal sac) are removed.
4. :func:`component_rules` - per connected component: minimum volume; large
   thick components are solid organs (spleen, liver, brain when no head was
   found); components that do not touch bone marrow are soft-tissue organs
   (bowel, prostate, testes, nodes): bone disease sits in marrow, which on
   STIR-prepared DWI is the only tissue with low ADC (~400 um2/s) and a clear
   low-b signal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from processing.backend import Backend
from processing.crop import box_or_whole, mask_box, paste
from processing.landmarks import BodyLandmarks
from processing.morphology import close, dilate, maximum_3
from processing.segmentation import (
    Components,
    component_slice_range,
    in_plane_structure,
    label_components,
)
from processing.settings import ProcessingSettings

__all__ = [
    "ComponentDecision",
    "MarrowReference",
    "component_rules",
    "distinct_from_marrow",
    "fluid_and_kidney",
    "head_exclusion",
    "marrow_like",
    "marrow_limits",
    "marrow_reference",
    "spinal_cord",
]

_MAD_TO_SD = 1.4826  # median absolute deviation -> standard deviation of a normal distribution


def head_exclusion(
    body: Any,
    landmarks: BodyLandmarks,
    spacing_mm: tuple[float, float, float],
    settings: ProcessingSettings,
    backend: Backend,
) -> Any:
    """Voxels of the head that are never tumour candidates (brain, face, skull base).

    Returns an all-False mask when no head was found (the exam does not start
    at the vertex, or no neck narrowing was seen).
    """
    xp = backend.xp
    excluded = xp.zeros(body.shape, dtype=bool)
    if landmarks.neck is None:
        return excluded
    neck = landmarks.neck
    if settings.exclude_head:
        excluded[: neck + 1] = True
        return excluded
    excluded[: neck + 1] = True
    vault_end = landmarks.top + math.floor(settings.skull_vault_fraction * (neck - landmarks.top))
    if vault_end < landmarks.top:
        return excluded
    # Depth below the skin in 3-D (anisotropic spacing); slices above the vault end only,
    # on the head's box grown by one voxel. The nearest background voxel of a head voxel
    # is never outside that box (the box's outer layer is background and nearer), and the
    # exact feature transform then picks the same one on the box as on the whole volume.
    head = body[: vault_end + 1]
    box = mask_box(head, backend, margin=1)
    if box is None:  # no head voxel above the vault end: all of it is excluded
        excluded[: vault_end + 1] = True
        return excluded
    part = head[box]
    depth = backend.ndimage.distance_transform_edt(part, sampling=spacing_mm)
    shell = part & (depth <= xp.float32(settings.skull_shell_mm))
    excluded[: vault_end + 1] = ~paste(shell, box, head.shape, backend)
    return excluded


def fluid_and_kidney(
    candidates: Any,
    adc: Any,
    spacing_mm: tuple[float, float, float],
    settings: ProcessingSettings,
    backend: Backend,
) -> Any:
    """Candidate voxels in kidney-like or fluid-like regions (to be removed).

    The ADC is averaged over the 3x3x3 candidate neighbourhood (normalised
    convolution: only candidate voxels count), which reduces its noise about
    five-fold; connected regions where the average reaches ``fluid_adc_um2s``
    and that hold at least ``fluid_min_volume_ml`` are removed together with a
    one-voxel margin (the partial-volume rim).
    """
    xp = backend.xp
    ndimage = backend.ndimage
    # On the candidates' box grown by one voxel, exactly as on the whole volume: the
    # filters' inputs are 0 outside the candidates, so a uniform filter's running sum
    # along a line is exactly 0 one voxel before them, where each line of the box starts
    # (its first window sums 0 + 0 + x as the whole line's running sum adds x to 0).
    # The dilation's result is only kept on candidates, all inside the box.
    box = mask_box(candidates, backend, margin=1)
    if box is None:
        return xp.zeros_like(candidates)
    inside = candidates[box]
    weight = inside.astype(xp.float32)
    total = ndimage.uniform_filter(weight, size=3, mode="constant")
    summed = ndimage.uniform_filter(
        xp.where(inside, adc[box], xp.float32(0.0)), size=3, mode="constant"
    )
    local = summed / xp.maximum(total, xp.float32(1e-6))
    fluid = inside & (local >= xp.float32(settings.fluid_adc_um2s))
    components = label_components(fluid, backend)
    if components.count == 0:
        return paste(fluid, box, candidates.shape, backend)
    voxel_ml = spacing_mm[0] * spacing_mm[1] * spacing_mm[2] / 1000.0
    keep = components.sizes >= max(1, math.ceil(settings.fluid_min_volume_ml / voxel_ml))
    keep[0] = False
    organ = keep[components.labels]
    near = box_or_whole(organ, backend, margin=1)  # the dilation's reach
    grown = dilate(organ[near], axes=(0, 1, 2))  # the 3 x 3 x 3 box
    removed = xp.zeros_like(inside)
    removed[near] = grown & inside[near]
    return paste(removed, box, candidates.shape, backend)


def spinal_cord(
    candidates: Any,
    spacing_mm: tuple[float, float, float],
    settings: ProcessingSettings,
    backend: Backend,
) -> Any:
    """Candidate voxels of the spinal cord (to be removed).

    The cord is a chain of small in-slice blobs: every slice's candidate blobs
    of at most ``cord_max_area_mm2`` are kept, and the 3-D components of those
    small blobs (26-connectivity, which follows the curvature of the spine by
    one voxel per slice) that span at least ``cord_min_length_mm`` along z are
    cord. The result is grown by one voxel within the slice (partial-volume
    rim). Focal lesions contribute small blobs only at their caps, which are
    short; diffuse marrow disease spans many slices but its blobs are as
    large as a vertebral body.
    """
    xp = backend.xp
    dz, dy, dx = spacing_mm
    # On the candidates' box grown by one voxel (the in-plane dilation's reach).
    box = mask_box(candidates, backend, margin=1)
    if box is None:
        return xp.zeros_like(candidates)
    inside = candidates[box]
    blobs = label_components(inside, backend, structure=in_plane_structure(backend))
    if blobs.count == 0:
        return xp.zeros_like(candidates)
    thin = blobs.sizes <= settings.cord_max_area_mm2 / (dy * dx)
    thin[0] = False
    chains = label_components(thin[blobs.labels], backend)
    if chains.count == 0:
        return xp.zeros_like(candidates)
    first, last = component_slice_range(chains, backend)
    long_enough = (last - first + 1) * dz >= settings.cord_min_length_mm
    long_enough[0] = False
    cord = long_enough[chains.labels]
    near = box_or_whole(cord, backend, margin=1)  # the dilation's reach
    grown = dilate(cord[near], axes=(1, 2))  # the in-plane 3 x 3 box
    removed = xp.zeros_like(inside)
    removed[near] = grown & inside[near]
    return paste(removed, box, candidates.shape, backend)


def marrow_like(
    adc: Any,
    valid: Any,
    low_b: Any,
    low_b_reference: float,
    *,
    settings: ProcessingSettings,
    backend: Backend,
) -> Any:
    """Voxels that look like normal red marrow: low ADC with a clear low-b signal.

    Red marrow has ADC ~ 360-450 um2/s (Koutoulidis 2017) and, after STIR, a
    low-b signal well above that of suppressed fat; no other tissue combines
    the two. The signal floor is ``marrow_min_signal_ratio`` of the reference
    (muscle) low-b signal.
    """
    xp = backend.xp
    low, high = settings.marrow_adc_um2s
    return (
        valid
        & (adc >= xp.float32(low))
        & (adc <= xp.float32(high))
        & (low_b >= xp.float32(settings.marrow_min_signal_ratio * low_b_reference))
    )


@dataclass(frozen=True, slots=True)
class MarrowReference:
    """The patient's own normal marrow: robust centre and spread of its signal and ADC.

    ``signal`` and ``signal_sd`` are the median and the robust standard deviation
    (1.4826 x the median absolute deviation) of the (smoothed) segmentation-b image
    over the marrow-like voxels; ``adc`` and ``adc_sd`` the same for their ADC
    (um2/s); ``voxels`` is how many voxels were marrow-like. The spreads hold the
    noise and the biological variation together, so every limit built on them is
    noise-aware. All values are 0 when there are no marrow-like voxels.
    """

    signal: float
    signal_sd: float
    adc: float
    adc_sd: float
    voxels: int


def marrow_reference(image: Any, adc: Any, marrow: Any, backend: Backend) -> MarrowReference:
    """Median and robust spread of ``image`` and ``adc`` over the ``marrow`` voxels.

    Median and median absolute deviation tolerate up to half of the voxels being
    something else (lesion voxels with a marrow-like ADC are a few per cent of the
    marrow in a patient with focal disease).
    """
    return _reference_of(image[marrow], adc[marrow], backend)


def _reference_of(signal: Any, values: Any, backend: Backend) -> MarrowReference:
    """:func:`marrow_reference` of the marrow voxels' signal and ADC values (1-D)."""
    xp = backend.xp
    count = int(signal.size)
    if count == 0:
        return MarrowReference(0.0, 0.0, 0.0, 0.0, 0)
    signal_median = xp.median(signal)
    adc_median = xp.median(values)
    signal_mad = xp.median(xp.abs(signal - signal_median))
    adc_mad = xp.median(xp.abs(values - adc_median))
    return MarrowReference(
        signal=backend.scalar(signal_median),
        signal_sd=_MAD_TO_SD * backend.scalar(signal_mad),
        adc=backend.scalar(adc_median),
        adc_sd=_MAD_TO_SD * backend.scalar(adc_mad),
        voxels=count,
    )


def distinct_from_marrow(
    image: Any,
    adc: Any,
    marrow: Any,
    *,
    reference: MarrowReference,
    spacing_mm: tuple[float, float, float],
    settings: ProcessingSettings,
    backend: Backend,
) -> Any:
    """Voxels that differ from the patient's normal marrow at their level in signal or ADC.

    A voxel is normal marrow when both its high-b signal and its ADC lie within
    the distribution of the marrow around it; it is kept as a tumour candidate
    when its signal exceeds ``median + marrow_signal_margin_sd x SD`` (brighter
    than the surrounding marrow, MY-RADS) with an ADC above ``median +
    marrow_bright_adc_margin_sd x SD`` (not a marrow voxel brightened by the blur
    of a lesion next to it), or its ADC exceeds ``median + marrow_adc_margin_sd
    x SD`` (disease raises the marrow ADC above normal, Messiou 2011). "Around
    it" is the marrow-like voxels within ``marrow_level_mm / 2`` cranio-caudally
    (see :func:`marrow_limits`). With dark marrow the signal limit is below the
    muscle-based threshold and changes nothing; with bright marrow it keeps
    normal marrow out whatever its brightness. Returns all True when fewer
    than ``marrow_reference_min_voxels`` voxels were marrow-like in the whole
    exam (no estimate).
    """
    xp = backend.xp
    if reference.voxels < settings.marrow_reference_min_voxels:
        return xp.ones(image.shape, dtype=bool)
    signal_limit, adc_limit, adc_floor = marrow_limits(
        image,
        adc,
        marrow,
        reference=reference,
        spacing_mm=spacing_mm,
        settings=settings,
        backend=backend,
    )
    return ((image > signal_limit) & (adc > adc_floor)) | (adc > adc_limit)


def marrow_limits(
    image: Any,
    adc: Any,
    marrow: Any,
    *,
    reference: MarrowReference,
    spacing_mm: tuple[float, float, float],
    settings: ProcessingSettings,
    backend: Backend,
) -> tuple[Any, Any, Any]:
    """Per-slice limits of normal marrow, shaped ``(z, 1, 1)`` (float32).

    Returns the signal limit (median + ``marrow_signal_margin_sd`` SD), the ADC
    limit (median + ``marrow_adc_margin_sd`` SD) and the ADC floor of the signal
    test (median + ``marrow_bright_adc_margin_sd`` SD).

    Marrow differs between levels far more than within one: red marrow of the
    spine and pelvis is brighter than the fatty marrow of the skull and the femora,
    and one body-wide spread would hold that difference (the limit would then lie
    far above the spine's marrow and hide lesions in it). The median and robust SD
    are therefore taken over the marrow-like voxels of a cranio-caudal window of
    ``marrow_level_mm`` centred every quarter window; a window with fewer than
    ``marrow_level_min_voxels`` marrow-like voxels takes the whole exam's values
    (``reference``). ``marrow_level_mm`` 0 uses the whole exam everywhere.
    """
    xp = backend.xp
    nz = image.shape[0]
    signal_sd = settings.marrow_signal_margin_sd
    adc_sd = settings.marrow_adc_margin_sd
    signal_limits = [reference.signal + signal_sd * reference.signal_sd] * nz
    adc_limits = [reference.adc + adc_sd * reference.adc_sd] * nz
    floor_sd = settings.marrow_bright_adc_margin_sd
    adc_floors = [reference.adc + floor_sd * reference.adc_sd] * nz
    if settings.marrow_level_mm > 0:
        dz = spacing_mm[0]
        half = max(1, round(settings.marrow_level_mm / (2.0 * dz)))
        step = max(1, round(settings.marrow_level_mm / (4.0 * dz)))
        per_slice = backend.to_host(xp.count_nonzero(marrow, axis=(1, 2)))
        # The marrow voxels' values once, slice after slice: a window's values are a
        # run of them (the same values, in the same order, as masking the window).
        signal_values, adc_values = image[marrow], adc[marrow]
        for centre in range(step // 2, nz + step // 2, step):
            low, high = max(0, centre - half), min(nz, centre + half + 1)
            voxels = int(per_slice[low:high].sum())
            if voxels < settings.marrow_level_min_voxels:
                continue
            start = int(per_slice[:low].sum())
            level = _reference_of(
                signal_values[start : start + voxels], adc_values[start : start + voxels], backend
            )
            first, last = max(0, centre - step // 2), min(nz, centre - step // 2 + step)
            for z in range(first, last):
                signal_limits[z] = level.signal + signal_sd * level.signal_sd
                adc_limits[z] = level.adc + adc_sd * level.adc_sd
                adc_floors[z] = level.adc + floor_sd * level.adc_sd
    shape = (nz, 1, 1)
    return (
        xp.asarray(signal_limits, dtype=xp.float32).reshape(shape),
        xp.asarray(adc_limits, dtype=xp.float32).reshape(shape),
        xp.asarray(adc_floors, dtype=xp.float32).reshape(shape),
    )


def _bounding_box(mask: Any, backend: Backend) -> tuple[slice, slice, slice]:
    """Slices of the smallest box holding ``mask``, with a one-voxel margin of background."""
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        present = backend.to_host(mask.any(axis=others))
        where = present.nonzero()[0]
        box.append(slice(max(int(where[0]) - 1, 0), int(where[-1]) + 2))
    return (box[0], box[1], box[2])


@dataclass(frozen=True, slots=True)
class ComponentDecision:
    """Which components survive, and how many each rule removed."""

    keep: Any  # bool device array indexed by label
    removed_small: int
    removed_organ: int
    removed_no_bone: int


def component_rules(
    components: Components,
    marrow: Any,
    spacing_mm: tuple[float, float, float],
    settings: ProcessingSettings,
    backend: Backend,
) -> ComponentDecision:
    """Apply the per-component rules (minimum volume, solid organ, bone contact)."""
    xp = backend.xp
    ndimage = backend.ndimage
    voxel_ml = spacing_mm[0] * spacing_mm[1] * spacing_mm[2] / 1000.0
    count = components.count
    labels = components.labels
    if count == 0:
        return ComponentDecision(xp.zeros(1, dtype=bool), 0, 0, 0)
    sizes = components.sizes
    keep = sizes >= max(1, math.ceil(settings.min_lesion_volume_ml / voxel_ml))
    keep[0] = False
    removed_small = count - int(keep.sum())

    removed_organ = 0
    big = keep & (sizes >= math.ceil(settings.organ_min_volume_ml / voxel_ml))
    if bool(big.any()):
        inside = big[labels]
        box = _bounding_box(inside, backend)
        # Close single-voxel gaps first: an organ just above the threshold breaks into
        # speckles at low SNR, and its holes would hide its thickness.
        solid = close(inside[box], axes=(0, 1, 2))  # the 3 x 3 x 3 box, border 0
        depth = ndimage.distance_transform_edt(solid | inside[box], sampling=spacing_mm)
        deep = depth >= xp.float32(settings.organ_min_thickness_mm)
        organ = xp.bincount(labels[box][deep], minlength=count + 1) > 0
        organ[0] = False
        removed_organ = int(organ.sum())
        keep &= ~organ

    removed_no_bone = 0
    if settings.bone_contact_min_fraction > 0 and bool(keep.any()):
        kept = xp.where(keep[labels], labels, 0)
        # The ring reaches one voxel out of the kept components: their box grown by one
        # holds it (and the dilation's reflected border there reads that box's zeros).
        near = mask_box(kept > 0, backend, margin=1)
        assert near is not None  # at least one component is kept
        kept = kept[near]
        grown = maximum_3(kept, axes=(0, 1, 2), xp=xp)  # grey dilation, size 3 x 3 x 3
        ring = (grown > 0) & (kept == 0) & (labels[near] == 0)
        ring_labels = grown[ring]
        ring_total = xp.bincount(ring_labels, minlength=count + 1)
        ring_marrow = xp.bincount(
            ring_labels, weights=marrow[near][ring].astype(xp.float64), minlength=count + 1
        )
        fraction = ring_marrow / xp.maximum(ring_total, 1)
        no_bone = keep & (fraction < settings.bone_contact_min_fraction)
        removed_no_bone = int(no_bone.sum())
        keep &= ~no_bone
    return ComponentDecision(keep, removed_small, removed_organ, removed_no_bone)
