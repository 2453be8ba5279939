"""Body mask, high-b threshold and connected components.

The tumour segmentation follows the TTL case study's workflow (threshold on a computed
high-b image, ADC window, normal high-signal structures removed, connected
components), with the threshold expressed relative to a reference tissue so
that it does not depend on scanner units. The rules that remove normal
structures live in :mod:`processing.normal_structures`; the steps are put
together in :func:`processing.pipeline.process_exam`.

Connected-component labels are made deterministic: whatever order the
backend's labelling produces (``scipy.ndimage.label`` numbers components in
raster order of their first voxel; ``cupyx.scipy.ndimage.label`` does not
promise an order), :func:`label_components` renumbers them by the flat index
of their first voxel, so both backends give identical label maps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from processing.adc import NoiseEstimate
from processing.backend import Backend
from processing.crop import mask_box, paste
from processing.morphology import close
from processing.settings import ProcessingSettings

__all__ = [
    "Components",
    "body_mask",
    "component_slice_range",
    "in_plane_structure",
    "label_components",
    "label_components_boxed",
    "reference_signal",
    "remove_small_components",
]


@dataclass(frozen=True, slots=True)
class Components:
    """A label map (0 = background, 1..count in first-voxel order) and voxel counts.

    ``sizes[i]`` is the voxel count of label ``i`` (``sizes[0]`` the background),
    a device array.
    """

    labels: Any
    count: int
    sizes: Any


def in_plane_structure(backend: Backend, *, full: bool = True) -> Any:
    """A 3x3x3 structuring element that connects voxels within a slice only.

    Used to run 2-D operations (per-slice labelling, hole filling) on the whole
    volume in one call instead of a loop over slices.
    """
    xp = backend.xp
    structure = xp.zeros((3, 3, 3), dtype=bool)
    if full:
        structure[1] = True
    else:
        structure[1] = xp.asarray([[False, True, False], [True, True, True], [False, True, False]])
    return structure


def label_components(mask: Any, backend: Backend, *, structure: Any = None) -> Components:
    """Label ``mask`` and renumber labels by the flat index of each component's first voxel."""
    xp = backend.xp
    labels, count = backend.ndimage.label(mask, structure=structure)
    count = int(count)
    labels = labels.astype(xp.int32, copy=False)
    if count > 1 and backend.is_gpu:
        flat = labels.ravel()
        where = xp.flatnonzero(flat)
        _, first = xp.unique(flat[where], return_index=True)
        # `first` is ordered by old label 1..count; rank the labels by first-voxel position.
        rank = xp.empty(count, dtype=xp.int32)
        rank[xp.argsort(where[first])] = xp.arange(1, count + 1, dtype=xp.int32)
        remap = xp.concatenate([xp.zeros(1, dtype=xp.int32), rank])
        labels = remap[labels]
    # Count the labelled voxels only (bincount widens its input to 64 bits: skip the
    # background, most of a grid); the background's count is what is left.
    flat = labels.ravel()
    labelled = flat[flat != 0]
    sizes = xp.bincount(labelled, minlength=count + 1)
    sizes[0] = int(flat.size) - int(labelled.size)
    return Components(labels=labels, count=count, sizes=sizes)


def label_components_boxed(mask: Any, backend: Backend, *, structure: Any = None) -> Components:
    """:func:`label_components` of the whole volume, labelled on ``mask``'s bounding box.

    The label map, count and sizes (``sizes[0]`` counts the whole volume's
    background) are those of :func:`label_components`: connectivity joins
    voxels of ``mask`` only, all inside the box, and the box keeps their
    first-voxel order.
    """
    box = mask_box(mask, backend, margin=0)
    if box is None:
        return label_components(mask, backend, structure=structure)
    part = label_components(mask[box], backend, structure=structure)
    sizes = part.sizes.copy()
    sizes[0] += int(mask.size) - int(part.labels.size)
    labels = paste(part.labels, box, mask.shape, backend)
    return Components(labels=labels, count=part.count, sizes=sizes)


def component_slice_range(components: Components, backend: Backend) -> tuple[Any, Any]:
    """First and last slice index of every label (index 0, the background, is 0, 0).

    Uses the sorted flat indices of the labelled voxels: a label's first
    occurrence is its first voxel and its last occurrence its last voxel.
    """
    xp = backend.xp
    plane = components.labels.shape[1] * components.labels.shape[2]
    flat = components.labels.ravel()
    where = xp.flatnonzero(flat)
    values = flat[where]
    first = xp.zeros(components.count + 1, dtype=xp.int64)
    last = xp.zeros(components.count + 1, dtype=xp.int64)
    if int(where.size) == 0:
        return first, last
    ids, first_at = xp.unique(values, return_index=True)
    _, last_from_end = xp.unique(values[::-1], return_index=True)
    first[ids] = where[first_at] // plane
    last[ids] = where[where.size - 1 - last_from_end] // plane
    return first, last


def remove_small_components(
    mask: Any, min_voxels: int, backend: Backend, *, structure: Any = None
) -> Any:
    """``mask`` without the components of fewer than ``min_voxels`` voxels."""
    components = label_components(mask, backend, structure=structure)
    keep = components.sizes >= min_voxels
    keep[0] = False
    return keep[components.labels]


def body_mask(
    low_b: Any, noise: NoiseEstimate, settings: ProcessingSettings, backend: Backend
) -> Any:
    """The patient's body on the lowest-b image.

    Threshold at ``body_threshold_snr * sigma`` or ``body_threshold_p99_fraction``
    of the 99th centile of the lowest-b signal, whichever is higher (the second
    keeps the outline the same on noise-free or air-masked data, where sigma is
    0: STIR-suppressed fat stays outside), close small gaps and fill holes slice by slice
    (lungs, bowel gas and fat-suppressed fat inside the outline are body), then
    keep the connected components of at least ``body_min_component_fraction``
    of the largest one.
    """
    xp = backend.xp
    threshold = max(
        settings.body_threshold_snr * noise.sigma,
        settings.body_threshold_p99_fraction * noise.p99,
        noise.floor,
    )
    mask = low_b > xp.float32(threshold)
    # Everything below happens within two voxels of the thresholded voxels: the closing
    # grows the mask by one in-plane voxel, so the box's outer ring stays background, as
    # on the whole volume, for the erosion, the hole filling (background touching the
    # box's edge touches the slice's edge) and the labelling.
    box = mask_box(mask, backend, margin=2)
    if box is None:
        return mask
    part = close(mask[box], axes=(1, 2))  # the in-plane 3 x 3 closing, border 0
    part = _fill_holes_per_slice(part, backend)
    components = label_components(part, backend)
    if components.count == 0:
        return paste(part, box, mask.shape, backend)
    sizes = components.sizes.copy()
    sizes[0] = 0
    largest = backend.scalar(sizes.max())
    keep = sizes >= max(1.0, settings.body_min_component_fraction * largest)
    keep[0] = False
    return paste(keep[components.labels], box, mask.shape, backend)


def _fill_holes_per_slice(mask: Any, backend: Backend) -> Any:
    """Fill holes in every slice at once: background blobs not touching the slice border."""
    xp = backend.xp
    # Which background blob a voxel is in is all that counts: no sizes, no renumbering.
    labels, count = backend.ndimage.label(~mask, structure=in_plane_structure(backend, full=False))
    edge_labels = xp.concatenate(
        [
            labels[:, 0, :].ravel(),
            labels[:, -1, :].ravel(),
            labels[:, :, 0].ravel(),
            labels[:, :, -1].ravel(),
        ]
    )
    outside = xp.zeros(int(count) + 1, dtype=bool)
    outside[edge_labels] = True
    outside[0] = False
    return ~outside[labels]


def reference_signal(
    high_b: Any, adc: Any, region: Any, settings: ProcessingSettings, backend: Backend
) -> float:
    """Median computed-b signal of the voxels of ``region`` with reference-tissue ADC.

    With the default ADC range (1200-1800 um2/s) these are mostly skeletal
    muscle, the largest soft-tissue compartment of the body, so the reference
    does not depend on the scanner's intensity units or on how much fat the
    patient has. Falls back to the median over all of ``region`` when fewer
    than 1000 voxels qualify.
    """
    xp = backend.xp
    low, high = settings.reference_adc_range_um2s
    selected = region & (adc >= xp.float32(low)) & (adc <= xp.float32(high))
    values = high_b[selected]
    if int(values.size) < 1000:
        values = high_b[region]
    if int(values.size) == 0:
        return 0.0
    return backend.scalar(xp.median(values))
