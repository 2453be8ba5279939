"""One exam in, one :class:`~processing.results.ProcessingResult` out.

:func:`process_exam` uploads the signal to the chosen backend once, runs every
stage there (noise, body mask, ADC, computed b, segmentation, statistics) and
downloads the maps once at the end. Stage timings are measured with a device
synchronisation at each boundary so that GPU and CPU figures compare.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from processing.adc import (
    check_signal,
    estimate_noise_sigma,
    fit_adc,
    lowest_fitted_b_below_minimum,
)
from processing.backend import Backend, Device, select_backend
from processing.computed_b import compute_high_b
from processing.crop import Box, box_or_whole, mask_box, paste
from processing.exam import DwiExam, index_to_patient
from processing.landmarks import BodyLandmarks, find_landmarks
from processing.normal_structures import (
    MarrowReference,
    component_rules,
    distinct_from_marrow,
    fluid_and_kidney,
    head_exclusion,
    marrow_like,
    marrow_reference,
    spinal_cord,
)
from processing.quality import (
    ImageSignals,
    QualityAssessment,
    QualityFinding,
    Verdict,
    assess_image,
)
from processing.regions import assign_region, in_trunk
from processing.results import (
    ComputedImage,
    ExamStats,
    LesionStats,
    ProcessingResult,
)
from processing.segmentation import (
    body_mask,
    label_components,
    label_components_boxed,
    reference_signal,
)
from processing.settings import ProcessingSettings, settings_digest
from processing.statistics import (
    LesionMeasures,
    adc_histogram,
    adc_statistics,
    class_volumes,
    classify_adc,
    lesion_measures,
)

__all__ = [
    "ADC_LOW_B",
    "UNLISTED_FOCI",
    "SegmentationSummary",
    "measure_tumour_mask",
    "process_exam",
]

UNLISTED_FOCI = "lesions_not_listed"
ADC_LOW_B = "adc_low_b"
"""Code of the finding that says the lesion table lists only the largest components."""

_DEFAULT_SETTINGS = ProcessingSettings()


@dataclass(frozen=True, slots=True)
class SegmentationSummary:
    """What the segmentation did (for logs and the measurement report)."""

    reference_signal: float
    threshold: float
    noise_sigma: float
    neck_slice: int | None
    crotch_slice: int | None
    removed_small: int
    removed_organ: int
    removed_no_bone: int
    marrow_signal: float
    marrow_signal_sd: float
    marrow_adc_um2s: float
    marrow_adc_sd_um2s: float
    quality: QualityAssessment

    def as_dict(self) -> dict[str, float | int | str | None]:
        """JSON-ready copy for :attr:`ProcessingResult.diagnostics`."""
        return {
            "reference_signal": self.reference_signal,
            "threshold": self.threshold,
            "noise_sigma": self.noise_sigma,
            "neck_slice": self.neck_slice,
            "crotch_slice": self.crotch_slice,
            "removed_small": self.removed_small,
            "removed_organ": self.removed_organ,
            "removed_no_bone": self.removed_no_bone,
            "marrow_signal": self.marrow_signal,
            "marrow_signal_sd": self.marrow_signal_sd,
            "marrow_adc_um2s": self.marrow_adc_um2s,
            "marrow_adc_sd_um2s": self.marrow_adc_sd_um2s,
        }


class _StageTimer:
    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self._backend.synchronize()
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


def process_exam(
    exam: DwiExam,
    settings: ProcessingSettings = _DEFAULT_SETTINGS,
    *,
    device: Device | str = Device.AUTO,
    yellow_lower_um2s: float | None = None,
) -> ProcessingResult:
    """Compute ADC, computed-b images, tumour segmentation and statistics of ``exam``.

    Parameters
    ----------
    exam
        The assembled exam.
    settings
        Thresholds and options (``docs/algorithm.md``).
    device
        ``auto`` (GPU when CuPy and a device are present), ``gpu`` or ``cpu``.
    yellow_lower_um2s
        Lower bound of the yellow ADC class: the baseline exam's 95th centile
        when known (TTL case study); ``None`` uses ``settings.yellow_lower_default_um2s``.

    Raises
    ------
    processing.errors.InvalidExamError
        The exam cannot be processed (see :func:`processing.adc.check_signal`).
    processing.errors.BackendUnavailableError
        ``device="gpu"`` without CuPy or a CUDA device.
    """
    _check_yellow_lower(yellow_lower_um2s)
    backend = select_backend(device)
    timer = _StageTimer(backend)
    total_start = time.perf_counter()
    maps = _compute_maps(exam, settings, backend, timer)
    with timer("segmentation"):
        tumour, summary = _segment(maps, exam=exam, settings=settings, backend=backend)
    result = _measure(
        tumour,
        maps,
        exam=exam,
        settings=settings,
        backend=backend,
        timer=timer,
        yellow_lower_um2s=yellow_lower_um2s,
        diagnostics=summary.as_dict(),
        total_start=total_start,
    )
    # The image-based checks first, then those of the measurement (bounded output).
    quality = summary.quality.with_findings(result.quality.findings, result.quality.measures)
    return dataclasses.replace(result, quality=quality)


def measure_tumour_mask(
    exam: DwiExam,
    tumour_mask: NDArray[np.bool_],
    settings: ProcessingSettings = _DEFAULT_SETTINGS,
    *,
    device: Device | str = Device.AUTO,
    yellow_lower_um2s: float | None = None,
) -> ProcessingResult:
    """Statistics, classes, lesions and regions of a given tumour mask (a reader's correction).

    The maps (ADC, computed b, body mask, landmarks) are computed as in
    :func:`process_exam`; the segmentation is replaced by ``tumour_mask`` and
    everything after it (lesion labelling, statistics, ADC classes, regions)
    is the same code. The mask is taken as drawn: no rule of the automatic
    segmentation is applied to it.

    Parameters
    ----------
    exam
        The assembled exam.
    tumour_mask
        Boolean mask ``[z, y, x]`` on the exam's grid.
    settings, device, yellow_lower_um2s
        As for :func:`process_exam`.

    Raises
    ------
    ValueError
        When the mask is not on the exam's grid, or ``yellow_lower_um2s`` is not a finite ADC.
    processing.errors.InvalidExamError
        The exam cannot be processed.
    """
    _check_yellow_lower(yellow_lower_um2s)
    if tumour_mask.shape != exam.shape[1:]:
        raise ValueError(
            f"the tumour mask has shape {tumour_mask.shape}, the exam's grid is {exam.shape[1:]}"
        )
    backend = select_backend(device)
    timer = _StageTimer(backend)
    total_start = time.perf_counter()
    maps = _compute_maps(exam, settings, backend, timer)
    with timer("upload_mask"):
        tumour = backend.asarray(np.asarray(tumour_mask, dtype=bool))
    return _measure(
        tumour,
        maps,
        exam=exam,
        settings=settings,
        backend=backend,
        timer=timer,
        yellow_lower_um2s=yellow_lower_um2s,
        diagnostics={"tumour_mask": "given (reader-corrected)"},
        total_start=total_start,
    )


def _check_yellow_lower(yellow_lower_um2s: float | None) -> None:
    if yellow_lower_um2s is not None and not (
        math.isfinite(yellow_lower_um2s) and yellow_lower_um2s >= 0
    ):
        raise ValueError(f"yellow_lower_um2s must be a finite ADC >= 0, got {yellow_lower_um2s}")


@dataclass(frozen=True, slots=True)
class _Maps:
    """What every stage after the ADC fit reads (arrays on the backend)."""

    low_b: Any
    noise_sigma: float
    body: Any
    adc: Any
    valid: Any
    images: dict[float, Any]
    landmarks: BodyLandmarks


def _compute_maps(
    exam: DwiExam, settings: ProcessingSettings, backend: Backend, timer: _StageTimer
) -> _Maps:
    """Upload, checks, body mask, ADC fit, computed b and landmarks."""
    with timer("upload"):
        signal = backend.asarray(exam.signal)
    with timer("checks"):
        check_signal(signal, exam.b_values, backend)
    with timer("body_mask"):
        low_b = signal[0]
        noise = estimate_noise_sigma(low_b, settings, backend)
        body = body_mask(low_b, noise, settings, backend)
    with timer("adc_fit"):
        fit = fit_adc(
            signal, exam.b_values, body=body, noise=noise, settings=settings, backend=backend
        )
    with timer("computed_b"):
        b_ref = exam.b_values[-1]
        wanted = dict.fromkeys((*settings.computed_b_values, settings.segmentation_b_value))
        images = {
            b: compute_high_b(signal[-1], b_ref, fit.adc, fit.valid, b, backend=backend)
            for b in wanted
        }
    with timer("segmentation"):
        landmarks = find_landmarks(body, exam.spacing_mm, settings, backend)
    return _Maps(
        low_b=low_b,
        noise_sigma=noise.sigma,
        body=body,
        adc=fit.adc,
        valid=fit.valid,
        images=images,
        landmarks=landmarks,
    )


# The exam, settings, backend, the stage timer and its start, the masks and yellow bound:
# each named at both calls (automatic and reader-corrected masks).
def _measure(  # noqa: PLR0913
    tumour: Any,
    maps: _Maps,
    *,
    exam: DwiExam,
    settings: ProcessingSettings,
    backend: Backend,
    timer: _StageTimer,
    yellow_lower_um2s: float | None,
    diagnostics: dict[str, float | int | str | None],
    total_start: float,
) -> ProcessingResult:
    """Lesions, statistics, classes and regions of ``tumour``; everything back on the host."""
    voxel_ml = exam.voxel_volume_ml
    adc = maps.adc
    high_b = maps.images[settings.segmentation_b_value]
    with timer("segmentation"):
        lesions = label_components_boxed(
            tumour, backend, structure=_connectivity(settings, backend)
        )
    with timer("statistics"):
        values = adc[tumour]
        adc_stats = adc_statistics(values, backend)
        low_hist, high_hist = settings.histogram_range_um2s
        histogram = adc_histogram(
            values,
            lower_um2s=low_hist,
            upper_um2s=high_hist,
            bin_width_um2s=settings.histogram_bin_um2s,
            voxel_volume_ml=voxel_ml,
            backend=backend,
        )
        if yellow_lower_um2s is None:
            yellow, source = settings.yellow_lower_default_um2s, "default"
        else:
            yellow, source = float(yellow_lower_um2s), "baseline p95"
        classes = classify_adc(adc, tumour, yellow, settings.green_lower_um2s, backend)
        volumes = class_volumes(
            classes,
            voxel_volume_ml=voxel_ml,
            yellow_lower_um2s=yellow,
            green_lower_um2s=settings.green_lower_um2s,
            yellow_lower_source=source,
            backend=backend,
        )
        measures = lesion_measures(lesions.labels, lesions.count, adc, high_b, backend)
        listed = _bound_lesions(lesions.labels, measures, settings.max_reported_lesions, backend)
        measures = listed.measures
        tdv_ml = float(int(values.size)) * voxel_ml
    with timer("download"):
        adc_host = backend.to_host(adc).astype(np.float32, copy=False)
        valid_host = backend.to_host(maps.valid).astype(bool, copy=False)
        body_host = backend.to_host(maps.body).astype(bool, copy=False)
        tumour_host = backend.to_host(tumour).astype(bool, copy=False)
        classes_host = backend.to_host(classes).astype(np.uint8, copy=False)
        labels_host = backend.to_host(listed.labels).astype(np.int32, copy=False)
        computed = tuple(
            ComputedImage(
                b_value=float(b),
                image=backend.to_host(maps.images[b]).astype(np.float32, copy=False),
            )
            for b in settings.computed_b_values
        )
    with timer("regions"):
        lesion_rows = _lesion_rows(
            measures,
            exam=exam,
            body=maps.body,  # on the device: only the slices holding a centroid come back
            landmarks=maps.landmarks,
            voxel_ml=voxel_ml,
            settings=settings,
            backend=backend,
        )
    timings = dict(timer.timings)
    timings["total"] = time.perf_counter() - total_start
    stats = ExamStats(
        tdv_ml=tdv_ml,
        adc=adc_stats,
        histogram=histogram,
        classes=volumes,
        lesions=lesion_rows,
        other_foci_count=listed.other_count,
        other_foci_ml=float(listed.other_voxels) * voxel_ml,
    )
    for array in (adc_host, valid_host, body_host, tumour_host, classes_host, labels_host):
        array.flags.writeable = False
    for image in computed:
        image.image.flags.writeable = False
    return ProcessingResult(
        adc=adc_host,
        adc_valid=valid_host,
        computed=computed,
        body_mask=body_host,
        tumour_mask=tumour_host,
        class_labels=classes_host,
        lesion_labels=labels_host,
        stats=stats,
        device=backend.description,
        timings_s=timings,
        settings_digest=settings_digest(settings),
        diagnostics=diagnostics,
        quality=QualityAssessment(
            findings=_unlisted_foci_findings(stats, settings.max_reported_lesions)
            + _low_b_fit_findings(exam.b_values, settings.adc_min_b),
            measures={"components": len(lesion_rows) + listed.other_count},
        ),
    )


def _connectivity(settings: ProcessingSettings, backend: Backend) -> Any:
    return backend.ndimage.generate_binary_structure(3, settings.lesion_connectivity)


def _segment(
    maps: _Maps, *, exam: DwiExam, settings: ProcessingSettings, backend: Backend
) -> tuple[Any, SegmentationSummary]:
    """Threshold, ADC window and the normal-structure rules; returns the tumour mask.

    The high-b image is the computed one at ``settings.segmentation_b_value``.
    """
    # Every mask below lies in the body: work on the body's columns (its in-plane box
    # grown by one voxel, every slice, so that the per-slice rules see the same slice
    # indices and the head's depth map the same background), then paste the tumour back.
    columns = _body_columns(maps.body, backend)
    low_b, adc, valid = maps.low_b[columns], maps.adc[columns], maps.valid[columns]
    body = maps.body[columns]
    high_b = maps.images[settings.segmentation_b_value][columns]
    landmarks, noise_sigma = maps.landmarks, maps.noise_sigma
    xp = backend.xp
    spacing = exam.spacing_mm
    tissue = body & valid
    reference = reference_signal(high_b, adc, tissue, settings, backend)
    low_reference = reference_signal(low_b, adc, tissue, settings, backend)
    threshold = settings.threshold_ratio * reference
    smoothed = high_b
    if settings.threshold_smoothing_mm > 0:
        _, dy, dx = spacing
        sigma = (0.0, settings.threshold_smoothing_mm / dy, settings.threshold_smoothing_mm / dx)
        smoothed = _smooth_in_body(high_b, body, sigma, backend)
    marrow = marrow_like(adc, valid, low_b, low_reference, settings=settings, backend=backend)
    marrow_ref = marrow_reference(smoothed, adc, marrow & body, backend)
    candidates = tissue & (smoothed >= xp.float32(threshold))
    candidates &= distinct_from_marrow(
        smoothed,
        adc,
        marrow & body,
        reference=marrow_ref,
        spacing_mm=spacing,
        settings=settings,
        backend=backend,
    )
    candidates &= ~head_exclusion(body, landmarks, spacing, settings, backend)
    if settings.cranio_caudal_limit_z_mm is not None:
        candidates &= _below_limit(exam, settings.cranio_caudal_limit_z_mm, backend)[columns]
    candidates &= ~fluid_and_kidney(candidates, adc, spacing, settings, backend)
    window_low, window_high = settings.adc_window_um2s
    candidates &= (adc >= xp.float32(window_low)) & (adc <= xp.float32(window_high))
    candidates &= ~spinal_cord(candidates, spacing, settings, backend)
    # Labels and rules on the candidates' box grown by one voxel, which holds the reach
    # of the rules' closing and bone-contact ring; labels keep their first-voxel order.
    box = box_or_whole(candidates, backend, margin=1)
    components = label_components(
        candidates[box], backend, structure=_connectivity(settings, backend)
    )
    decision = component_rules(components, marrow[box], spacing, settings, backend)
    tumour = paste(decision.keep[components.labels], box, candidates.shape, backend)
    signals = _image_signals(
        tumour=tumour,
        high_b=high_b,
        adc=adc,
        body=body,
        marrow=marrow & body,
        marrow_ref=marrow_ref,
        muscle=reference,
        noise_sigma=noise_sigma,
        kept_sizes=components.sizes[decision.keep],
        removed_small=decision.removed_small,
        landmarks=landmarks,
        exam=exam,
        settings=settings,
        backend=backend,
    )
    summary = SegmentationSummary(
        reference_signal=reference,
        threshold=threshold,
        noise_sigma=noise_sigma,
        neck_slice=landmarks.neck,
        crotch_slice=landmarks.crotch,
        removed_small=decision.removed_small,
        removed_organ=decision.removed_organ,
        removed_no_bone=decision.removed_no_bone,
        marrow_signal=marrow_ref.signal,
        marrow_signal_sd=marrow_ref.signal_sd,
        marrow_adc_um2s=marrow_ref.adc,
        marrow_adc_sd_um2s=marrow_ref.adc_sd,
        quality=assess_image(signals, settings),
    )
    return paste(tumour, columns, maps.body.shape, backend), summary


def _body_columns(body: Any, backend: Backend) -> Box:
    """Every slice of the body's in-plane box grown by one voxel (the whole grid without body)."""
    box = box_or_whole(body, backend, margin=1)
    return (slice(0, body.shape[0]), *box[1:])


# Each argument is one measured input of the image checks, so that processing.quality's
# assess_image stays a function of ImageSignals alone.
def _image_signals(  # noqa: PLR0913
    *,
    tumour: Any,
    high_b: Any,
    adc: Any,
    body: Any,
    marrow: Any,
    marrow_ref: MarrowReference,
    muscle: float,
    noise_sigma: float,
    kept_sizes: Any,
    removed_small: int,
    landmarks: BodyLandmarks,
    exam: DwiExam,
    settings: ProcessingSettings,
    backend: Backend,
) -> ImageSignals:
    """The measured values behind the image-based reliability checks (``processing.quality``)."""
    xp = backend.xp
    voxel_ml = exam.voxel_volume_ml
    found = marrow_ref.voxels >= settings.marrow_reference_min_voxels
    # Muscle at the highest acquired b: invert the computed image's extrapolation
    # S(b_c) = S(b_ref) exp(-(b_c - b_ref) ADC) over the reference (muscle) voxels.
    b_ref = exam.b_values[-1]
    low_ref, high_ref = settings.reference_adc_range_um2s
    muscle_voxels = body & (adc >= xp.float32(low_ref)) & (adc <= xp.float32(high_ref))
    snr: float | None = None
    if noise_sigma > 0 and int(xp.count_nonzero(muscle_voxels)) > 0:
        scale = xp.float32(1e-6 * (settings.segmentation_b_value - b_ref))
        acquired = high_b[muscle_voxels] * xp.exp(adc[muscle_voxels] * scale)
        snr = backend.scalar(xp.median(acquired)) / noise_sigma
    values = adc[tumour]
    segmented = int(values.size)
    low, high = settings.adc_window_um2s
    edge = xp.float32(settings.quality_adc_edge_um2s)
    low_edge = int(xp.count_nonzero(values < xp.float32(low) + edge)) / max(segmented, 1)
    high_edge = int(xp.count_nonzero(values > xp.float32(high) - edge)) / max(segmented, 1)
    marrow_in_tumour = int(xp.count_nonzero(marrow & tumour))
    return ImageSignals(
        marrow_signal_ratio=marrow_ref.signal / muscle if found and muscle > 0 else None,
        marrow_adc_um2s=marrow_ref.adc if found else None,
        marrow_voxels=marrow_ref.voxels,
        snr_high_b=snr,
        marrow_segmented_fraction=marrow_in_tumour / marrow_ref.voxels if found else None,
        adc_low_edge_fraction=low_edge,
        adc_high_edge_fraction=high_edge,
        tdv_ml=segmented * voxel_ml,
        body_ml=int(xp.count_nonzero(body)) * voxel_ml,
        small_components=removed_small,
        components=int(kept_sizes.size),
        largest_component_ml=(
            backend.scalar(kept_sizes.max()) * voxel_ml if int(kept_sizes.size) else 0.0
        ),
        marrow_gap_mm=_marrow_gap_mm(marrow, landmarks, exam.spacing_mm, settings, backend),
        spacing_mm=exam.spacing_mm,
        neck_found=landmarks.neck is not None,
        crotch_found=landmarks.crotch is not None,
    )


def _smooth_in_body(
    image: Any, body: Any, sigma: tuple[float, float, float], backend: Backend
) -> Any:
    """``gaussian_filter(image, sigma, mode="constant")`` inside the body's bounding box, 0 outside.

    Only voxels of the body are read from the smoothed image. ``image`` (a
    computed-b image) is 0 outside the body, the value the constant mode puts
    beyond the box's edges, and each smoothed voxel is a weighted sum over its
    own window (no running sum): inside the box the result equals the
    whole-volume filter's bit for bit.
    """
    box = mask_box(body, backend, margin=0)
    if box is None:
        return backend.ndimage.gaussian_filter(image, sigma=sigma, mode="constant")
    part = backend.ndimage.gaussian_filter(image[box], sigma=sigma, mode="constant")
    return paste(part, box, image.shape, backend)


def _marrow_gap_mm(
    marrow: Any,
    landmarks: BodyLandmarks,
    spacing_mm: tuple[float, float, float],
    settings: ProcessingSettings,
    backend: Backend,
) -> float:
    """Longest run of trunk slices whose marrow-like area is under the gap limit, in mm."""
    dz, dy, dx = spacing_mm
    area = backend.to_host(backend.xp.count_nonzero(marrow, axis=(1, 2))) * (dy * dx)
    first = landmarks.top if landmarks.neck is None else landmarks.neck + 1
    last = landmarks.bottom if landmarks.crotch is None else landmarks.crotch - 1
    longest = run = 0
    for value in area[first : last + 1]:
        run = run + 1 if value < settings.quality_marrow_gap_area_mm2 else 0
        longest = max(longest, run)
    return float(longest) * dz


def _below_limit(exam: DwiExam, limit_z_mm: float, backend: Backend) -> Any:
    """Slices whose patient Z (LPS, superior positive) is below ``limit_z_mm``."""
    xp = backend.xp
    nz = exam.shape[1]
    index = np.zeros((nz, 3))
    index[:, 0] = np.arange(nz)
    z_mm = index_to_patient(exam.affine, index)[:, 2]
    keep = backend.asarray(z_mm < limit_z_mm)
    return xp.broadcast_to(keep[:, None, None], exam.shape[1:])


@dataclass(frozen=True, slots=True)
class _ListedLesions:
    """The components listed as lesions (relabelled 1..N) and what was left out."""

    labels: Any  # backend array: 1..N for the listed lesions, 0 elsewhere
    measures: LesionMeasures  # of the listed lesions, indexed by label - 1
    other_count: int
    other_voxels: int


def _bound_lesions(
    labels: Any, measures: LesionMeasures, limit: int, backend: Backend
) -> _ListedLesions:
    """Keep the ``limit`` largest components as lesions; the others become "other foci".

    The listed lesions keep their relative label order (the order of their first
    voxel, cranial first) and are renumbered 1..N without gaps; ties in size go
    to the lower label. The other foci get label 0 in the lesion label map but
    stay in the tumour mask (tDV, histogram, ADC classes, the SEG's total and
    class segments).
    """
    sizes = measures.voxel_counts
    count = int(sizes.size)
    if count <= limit:
        return _ListedLesions(labels, measures, 0, 0)
    largest_first = np.argsort(-sizes, kind="stable")
    kept = np.sort(largest_first[:limit])  # label - 1 of the listed lesions, in label order
    remap = np.zeros(count + 1, dtype=np.int32)
    remap[kept + 1] = np.arange(1, limit + 1, dtype=np.int32)
    listed = LesionMeasures(
        voxel_counts=sizes[kept],
        adc_mean=measures.adc_mean[kept],
        adc_median=measures.adc_median[kept],
        centroid_index=measures.centroid_index[kept],
        high_b_mean=measures.high_b_mean[kept],
    )
    return _ListedLesions(
        labels=backend.asarray(remap)[labels],
        measures=listed,
        other_count=count - limit,
        other_voxels=int(sizes.sum() - sizes[kept].sum()),
    )


def _low_b_fit_findings(
    b_values: tuple[float, ...], adc_min_b: float
) -> tuple[QualityFinding, ...]:
    """A ``review`` finding when the ADC fit had to use a b-value below ``adc_min_b``."""
    lowest = lowest_fitted_b_below_minimum(b_values, adc_min_b)
    if lowest is None:
        return ()
    return (
        QualityFinding(
            code=ADC_LOW_B,
            severity=Verdict.REVIEW,
            message=(
                f"The exam has fewer than two b-values at or above {adc_min_b:g} s/mm2 "
                f"(b = {', '.join(f'{b:g}' for b in b_values)}), so the ADC was fitted with "
                f"b = {lowest:g}: perfusion at low b raises the ADC (by several percent in "
                "marrow and lesions, more in well-perfused tissue), which shifts the ADC "
                "window, the histogram and the ADC classes upwards; compare ADC values only "
                "with exams of the same b-values."
            ),
            value=lowest,
            limit=adc_min_b,
        ),
    )


def _unlisted_foci_findings(stats: ExamStats, limit: int) -> tuple[QualityFinding, ...]:
    """A ``review`` finding when components were left out of the lesion table."""
    if stats.other_foci_count == 0:
        return ()
    total = len(stats.lesions) + stats.other_foci_count
    return (
        QualityFinding(
            code=UNLISTED_FOCI,
            severity=Verdict.REVIEW,
            message=(
                f"The segmentation has {total} separate foci; the lesion table lists the "
                f"{len(stats.lesions)} largest, and the other {stats.other_foci_count} "
                f"({stats.other_foci_ml:.1f} ml in all) are counted in the tumour load, the "
                "histogram and the ADC classes but not listed one by one. Many small foci "
                "often mean noise or normal tissue segmented as disease."
            ),
            value=float(total),
            limit=float(limit),
        ),
    )


def _lesion_rows(
    measures: Any,
    *,
    exam: DwiExam,
    body: Any,
    landmarks: BodyLandmarks,
    voxel_ml: float,
    settings: ProcessingSettings,
    backend: Backend,
) -> tuple[LesionStats, ...]:
    rows: list[LesionStats] = []
    centroids_mm = index_to_patient(exam.affine, measures.centroid_index)
    trunk_sections = in_trunk(measures.centroid_index, body, landmarks, backend)
    for index in range(len(measures.voxel_counts)):
        centroid = centroids_mm[index]
        rows.append(
            LesionStats(
                label=index + 1,
                volume_ml=float(measures.voxel_counts[index]) * voxel_ml,
                adc_mean=float(measures.adc_mean[index]),
                adc_median=float(measures.adc_median[index]),
                centroid_mm=(float(centroid[0]), float(centroid[1]), float(centroid[2])),
                region=assign_region(
                    measures.centroid_index[index],
                    bool(trunk_sections[index]),
                    landmarks,
                    exam.spacing_mm,
                    settings,
                ),
                mean_high_b=float(measures.high_b_mean[index]),
            )
        )
    return tuple(rows)
