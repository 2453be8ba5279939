"""Key images as RGB Secondary Capture (highdicom ``sc``, PS3.3 A.8.1).

Two pictures that any viewer shows, in one series:

1. the inverted-greyscale coronal MIP of the first computed high-b image with
   the ADC class colours of the tumour load (:func:`render_class_mip`), with
   Patient Orientation ``L\\F`` (columns towards patient left, rows towards
   the feet);
2. the ADC histogram of the tumour load over the class bands
   (:func:`render_adc_histogram`), with the previous exam's and the baseline's
   histograms as outlines when the exam was compared
   (:func:`comparison_histograms` picks them);
3. with a comparison, the trend chart of tDV and median ADC over all of the
   patient's exams up to this one (:func:`render_trend_chart`, TTL case
   study, figure 4).

When the reliability verdict of the result (:mod:`processing.quality`) is not
``ok``, every picture carries a coloured banner on top (orange for
``review``, red for ``unreliable``) with the verdict and its reasons, and the
Series Description says ``(REVIEW)`` or ``(UNRELIABLE)``.

Text drawn on the pictures holds no patient identification, so Burned In
Annotation is ``NO``. Patient and study attributes come from the derived
series the pictures were made from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from dicom_node.writers.common import WriterContext, check_on_grid
from dicom_node.writers.errors import WriterError
from dicom_node.writers.rendering import (
    MipGeometry,
    TrendSample,
    add_banner,
    render_adc_histogram,
    render_class_mip,
    render_trend_chart,
)
from dicom_node.writers.seg import ADC_CLASS_RGB
from dicom_node.writers.sr_quality import BANNER_RGB, banner_text, description_suffix
from processing.comparison import Comparison
from processing.exam_summary import ExamSummary
from processing.results import AdcClass, ComputedImage, Histogram, ProcessingResult

__all__ = [
    "KeyImage",
    "build_key_images",
    "comparison_histograms",
    "render_key_pictures",
    "trend_samples",
]


@dataclass(frozen=True, slots=True)
class KeyImage:
    """One rendered picture and its Secondary Capture dataset."""

    name: str
    pixels: NDArray[np.uint8]
    dataset: hd.sc.SCImage


def _iso(da: str) -> str:
    return f"{da[:4]}-{da[4:6]}-{da[6:]}" if len(da) == 8 else da


def comparison_histograms(
    comparison: Comparison, summaries: Sequence[ExamSummary]
) -> list[tuple[str, Histogram]]:
    """``(label, histogram)`` of the previous exam and the baseline, for the histogram picture.

    Taken from ``summaries`` by study UID; an exam whose summary has no
    histogram (rebuilt from a report) or is not among ``summaries`` is left
    out. The baseline is left out when it is the previous exam (the label says
    so) or the current exam.
    """
    by_uid = {summary.study_instance_uid: summary for summary in summaries}
    chosen: list[tuple[str, Histogram]] = []
    previous = by_uid.get(comparison.previous_study_uid)
    same = comparison.previous_study_uid == comparison.baseline_study_uid
    if previous is not None and previous.histogram is not None:
        label = "previous = baseline" if same else "previous"
        chosen.append((f"{label} {_iso(previous.study_date)}", previous.histogram))
    baseline = by_uid.get(comparison.baseline_study_uid)
    if (
        not same
        and comparison.baseline_study_uid != comparison.current_study_uid
        and baseline is not None
        and baseline.histogram is not None
    ):
        chosen.append((f"baseline {_iso(baseline.study_date)}", baseline.histogram))
    return chosen


def trend_samples(comparison: Comparison) -> list[TrendSample]:
    """The points of the trend chart: every exam of the comparison, oldest first."""
    return [
        TrendSample(
            study_date=point.study_date,
            tdv_ml=point.tdv_ml,
            adc_median_um2s=point.adc_median_um2s,
            is_baseline=point.is_baseline,
            is_current=point.is_current,
        )
        for point in comparison.trend
    ]


def _mip_source(result: ProcessingResult) -> ComputedImage | None:
    return result.computed[0] if result.computed else None


def render_key_pictures(
    ctx: WriterContext,
    result: ProcessingResult,
    *,
    priors: Sequence[tuple[str, Histogram]] = (),
    trend: Sequence[TrendSample] = (),
) -> list[tuple[str, NDArray[np.uint8], str]]:
    """Render the pictures: ``(name, [H, W, 3] uint8, description)`` each.

    ``priors`` are drawn as outlines in the histogram; ``trend`` (two exams or
    more) adds the trend chart.
    """
    stats = result.stats
    classes = stats.classes
    pictures: list[tuple[str, NDArray[np.uint8], str]] = []
    computed = _mip_source(result)
    if computed is not None:
        image = np.asarray(computed.image)
        check_on_grid(f"computed b{computed.b_value:g} image", image, ctx.grid)
        check_on_grid("tumour mask", np.asarray(result.tumour_mask), ctx.grid)
        check_on_grid("ADC class labels", np.asarray(result.class_labels), ctx.grid)
        volumes = {
            AdcClass.RED: classes.red_ml,
            AdcClass.YELLOW: classes.yellow_ml,
            AdcClass.GREEN: classes.green_ml,
        }
        bounds = {
            AdcClass.RED: f"< {classes.yellow_lower_um2s:g}",
            AdcClass.YELLOW: f"{classes.yellow_lower_um2s:g}-{classes.green_lower_um2s:g}",
            AdcClass.GREEN: f">= {classes.green_lower_um2s:g}",
        }
        legend = [
            (
                ADC_CLASS_RGB[adc_class],
                f"{adc_class.name.lower()} ADC {bounds[adc_class]}: {volumes[adc_class]:.1f} ml",
            )
            for adc_class in AdcClass
        ]
        title = f"Computed b{computed.b_value:g} coronal MIP, tDV {stats.tdv_ml:.1f} ml"
        if not result.tumour_mask.any():
            title += " (no disease segmented)"
        pictures.append(
            (
                "mip",
                render_class_mip(
                    image,
                    np.asarray(result.tumour_mask, dtype=bool),
                    np.asarray(result.class_labels),
                    MipGeometry.from_affine(ctx.exam.affine),
                    ADC_CLASS_RGB,
                    title=title,
                    legend=legend,
                ),
                f"Inverted coronal MIP of computed b{computed.b_value:g} with ADC classes",
            )
        )
    median = f", median ADC {stats.adc.median:.0f}" if stats.adc is not None else ""
    try:
        histogram = render_adc_histogram(
            stats.histogram,
            classes,
            ADC_CLASS_RGB,
            title=f"ADC histogram of the tumour load: tDV {stats.tdv_ml:.1f} ml{median}",
            priors=priors,
        )
    except ValueError as exc:
        raise WriterError(f"ADC histogram key image: {exc}") from exc
    description = "ADC histogram of the tumour load, class bands"
    if priors:
        description += ", earlier exams as outlines"
    pictures.append(("histogram", histogram, description))
    if len(trend) >= 2:
        try:
            chart = render_trend_chart(
                trend, title=f"Tumour load over {len(trend)} exams: tDV and median ADC"
            )
        except ValueError as exc:
            raise WriterError(f"trend chart key image: {exc}") from exc
        pictures.append(("trend", chart, "Trend of tDV and median ADC over the patient's exams"))
    banner = banner_text(result.quality)
    if banner is not None:
        colour = BANNER_RGB[result.quality.verdict]
        headline, reasons = banner
        pictures = [
            (name, add_banner(pixels, headline, reasons, colour), f"{description}. {headline}")
            for name, pixels, description in pictures
        ]
    return pictures


def build_key_images(
    ctx: WriterContext,
    result: ProcessingResult,
    reference: Dataset,
    *,
    priors: Sequence[tuple[str, Histogram]] = (),
    trend: Sequence[TrendSample] = (),
) -> list[KeyImage]:
    """Render the key pictures and wrap each in an RGB Secondary Capture image.

    ``reference`` is one derived MR dataset of the exam; the pictures carry the
    patient and study attributes of ``ctx.patient_study``, like the other result
    objects; ``priors`` and ``trend`` as in
    :func:`render_key_pictures`.
    """
    series_uid = ctx.uids.uid("key-images", "series")
    series_description = f"Key images{description_suffix(result.quality)} wbdwi"
    images = []
    for number, (name, pixels, description) in enumerate(
        render_key_pictures(ctx, result, priors=priors, trend=trend), start=1
    ):
        is_mip = name == "mip"
        dataset = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=reference,
            pixel_array=pixels,
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=series_uid,
            series_number=ctx.series_number("key-images"),
            sop_instance_uid=ctx.uids.uid("key-images", name),
            instance_number=number,
            manufacturer=ctx.identity.manufacturer,
            patient_orientation=("L", "F"),
            contributing_equipment=ctx.contributing_equipment(description),
        )
        # highdicom copies part of the Patient and General Study modules from
        # ``reference``; the rest (Issuer of Patient ID, Study Description, ...)
        # as every other result object carries them (PS3.3 C.7.1.1, C.7.2.1).
        dataset.update(ctx.patient_study)
        if not is_mip:
            dataset["PatientOrientation"].value = None  # Type 2: a chart has no patient orientation
        dataset.SeriesDescription = series_description
        ctx.stamp_series(dataset)
        dataset.ImageComments = description
        dataset.DerivationDescription = description
        dataset.BurnedInAnnotation = "NO"
        dataset.BodyPartExamined = ctx.body_part_examined
        dataset.SoftwareVersions = ctx.identity.software_version
        dataset.ManufacturerModelName = ctx.identity.model_name
        images.append(KeyImage(name=name, pixels=pixels, dataset=dataset))
    return images
