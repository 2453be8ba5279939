"""Key images: MIP orientation and overlay, histogram drawing, Secondary Capture datasets."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
from numpy.typing import NDArray
from pydicom.uid import SecondaryCaptureImageStorage

from dicom_node.writers import WriterContext, WriterIdentity, build_key_images
from dicom_node.writers.key_images import comparison_histograms, trend_samples
from dicom_node.writers.rendering import (
    MipGeometry,
    TrendSample,
    nice_ticks,
    render_adc_histogram,
    render_class_mip,
    render_trend_chart,
)
from dicom_node.writers.seg import ADC_CLASS_RGB
from dicom_node.writers.sr_quality import BANNER_RGB
from processing.comparison import compare_exams
from processing.exam_summary import ExamSummary, summarize_exam
from processing.quality import QualityAssessment, QualityFinding, Verdict
from processing.results import AdcClass, ClassVolumes, Histogram
from tests.helpers.writer_fixtures import SyntheticExam, make_result, write_synthetic_exam

CLASSES = ClassVolumes(
    red_ml=1.0,
    yellow_ml=2.0,
    green_ml=3.0,
    yellow_lower_um2s=1000.0,
    green_lower_um2s=1500.0,
    yellow_lower_source="default",
)


def _affine(slice_step: float, column_step: float) -> NDArray[np.float64]:
    affine = np.eye(4)
    affine[:3, 0] = [0.0, 0.0, slice_step]
    affine[:3, 1] = [0.0, 4.0, 0.0]
    affine[:3, 2] = [column_step, 0.0, 0.0]
    return affine


def _darkest(picture: NDArray[np.uint8]) -> tuple[float, float]:
    """Centre of the darkest pixels as fractions of (height, width)."""
    grey = picture.astype(np.float64).mean(axis=-1)
    rows, columns = np.nonzero(grey <= grey.min() + 1)
    return rows.mean() / picture.shape[0], columns.mean() / picture.shape[1]


@pytest.mark.parametrize(
    ("slice_step", "column_step"),
    [(-5.0, 4.0), (5.0, -4.0)],
    ids=["head-first-left", "feet-first-right"],
)
def test_mip_puts_head_up_and_patient_left_on_the_right(
    slice_step: float, column_step: float
) -> None:
    shape = (20, 30, 30)
    image = np.zeros(shape, dtype=np.float32)
    # a bright spot in the most superior slice, on the patient's left
    superior = 0 if slice_step < 0 else shape[0] - 1
    left = 26 if column_step > 0 else 3
    image[superior, 15, left] = 100.0
    image[shape[0] // 2, 15, 15] = 1.0  # faint: the spot alone sets the window
    geometry = MipGeometry.from_affine(_affine(slice_step, column_step))
    assert geometry.projection_axis == 1
    assert geometry.flip_vertical == (slice_step > 0)
    assert geometry.flip_horizontal == (column_step < 0)
    picture = render_class_mip(
        image,
        np.zeros(shape, dtype=bool),
        np.zeros(shape, dtype=np.uint8),
        geometry,
        ADC_CLASS_RGB,
        title="t",
        legend=[],
    )
    row, column = _darkest(picture[60:])  # below the title
    assert row < 0.15
    assert column > 0.6


def test_mip_overlays_the_class_of_the_brightest_tumour_voxel() -> None:
    shape = (10, 12, 12)
    image = np.full(shape, 5.0, dtype=np.float32)
    mask = np.zeros(shape, dtype=bool)
    classes = np.zeros(shape, dtype=np.uint8)
    mask[4:6, 3, 3:6] = True
    mask[4:6, 8, 3:6] = True
    classes[4:6, 3, 3:6] = AdcClass.GREEN.value
    classes[4:6, 8, 3:6] = AdcClass.RED.value
    image[4:6, 8, 3:6] = 50.0  # the red lesion is brighter on the same rays
    image[4:6, 3, 3:6] = 20.0
    picture = render_class_mip(
        image,
        mask,
        classes,
        MipGeometry.from_affine(_affine(-5.0, 4.0)),
        ADC_CLASS_RGB,
        title="t",
        legend=[(ADC_CLASS_RGB[AdcClass.RED], "red")],
    )
    body = picture[120:]
    red = (body[..., 0] > 150) & (body[..., 1] < 90) & (body[..., 2] < 90)
    green = (body[..., 1] > 120) & (body[..., 0] < 100) & (body[..., 2] < 120)
    assert red.sum() > 100
    assert green.sum() == 0


def test_nice_ticks() -> None:
    assert nice_ticks(0.0, 3000.0, 6) == [0.0, 500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0]
    assert nice_ticks(0.0, 0.9, 4) == pytest.approx([0.0, 0.25, 0.5, 0.75])
    assert nice_ticks(0.0, 0.0, 5)[0] == 0.0


def test_histogram_draws_bands_bars_axes_and_priors() -> None:
    edges = tuple(float(e) for e in range(0, 3025, 25))
    counts = [0] * 120
    counts[32] = 400  # 800-825
    counts[64] = 100  # 1600-1625
    current = Histogram(bin_edges_um2s=edges, counts=tuple(counts), voxel_volume_ml=0.05)
    prior = Histogram(
        bin_edges_um2s=edges, counts=tuple(c // 2 for c in counts), voxel_volume_ml=0.05
    )
    picture = render_adc_histogram(
        current, CLASSES, ADC_CLASS_RGB, title="histogram", priors=[("baseline", prior)]
    )
    height, width, _ = picture.shape
    plot = picture[60 : height - 80, 100 : width - 30].astype(int)
    # class bands: a reddish tint on the left, greenish on the right
    left_band, right_band = plot[5, 5], plot[5, -5]
    assert left_band[0] > left_band[1] + 20
    assert right_band[1] > right_band[0] + 20
    # bars: dark columns where the counts are
    dark = (plot.max(axis=-1) < 100).sum(axis=0)
    bar_column = int((812.5 / 3000.0) * plot.shape[1])
    assert dark[bar_column] > 100
    assert dark[int(0.9 * plot.shape[1])] == 0
    # the prior outline is drawn in its own colour (blue-ish)
    blue = (plot[..., 2] > 150) & (plot[..., 0] < 100) & (plot[..., 1] < 100)
    assert blue.sum() > 20
    # numbers under the x axis and left of the y axis
    below_axis = picture[height - 70 : height - 45, 100 : width - 30]
    assert (below_axis.max(axis=-1) < 100).sum() > 50
    left_of_axis = picture[60 : height - 80, 30:95]
    assert (left_of_axis.max(axis=-1) < 100).sum() > 50


def test_histogram_rejects_inconsistent_bins() -> None:
    broken = Histogram(bin_edges_um2s=(0.0, 25.0), counts=(1, 2), voxel_volume_ml=1.0)
    with pytest.raises(ValueError, match="2 bin edges for 2 counts"):
        render_adc_histogram(broken, CLASSES, ADC_CLASS_RGB, title="x")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticExam:
    return write_synthetic_exam(tmp_path_factory.mktemp("exam"), patient_name="Secret^Name")


def test_key_images_are_rgb_secondary_captures_of_the_study(
    synthetic: SyntheticExam, tmp_path: Path
) -> None:
    result = make_result(synthetic)
    ctx = WriterContext.create(
        synthetic.exam,
        WriterIdentity(software_version="2.0", device_serial_number="SN"),
        "d",
        computed_b_values=[1000.0],
    )
    reference = pydicom.dcmread(synthetic.exam.sources[0].path, stop_before_pixels=True)
    images = build_key_images(ctx, result, reference)
    assert [image.name for image in images] == ["mip", "histogram"]
    for number, image in enumerate(images, start=1):
        path = tmp_path / f"{image.name}.dcm"
        image.dataset.save_as(path, enforce_file_format=True)
        back = pydicom.dcmread(path)
        assert back.SOPClassUID == SecondaryCaptureImageStorage
        assert back.PhotometricInterpretation == "RGB"
        assert back.BurnedInAnnotation == "NO"
        assert back.PatientName == "Secret^Name"
        assert back.StudyInstanceUID == synthetic.exam.study_instance_uid
        assert back.IssuerOfPatientID == "TESTHOSP"
        assert back.StudyDescription == "WB-DWI"
        for element in ctx.patient_study:  # the patient and study the other objects carry
            assert back[element.tag].value == element.value, element.keyword
        assert back.InstanceNumber == number
        np.testing.assert_array_equal(back.pixel_array, image.pixels)
        assert image.pixels.std() > 10
    assert list(images[0].dataset.PatientOrientation) == ["L", "F"]
    assert images[0].dataset.SeriesInstanceUID == images[1].dataset.SeriesInstanceUID
    assert images[0].dataset.SeriesDescription == "Key images wbdwi"
    assert images[0].dataset.SeriesDate == ctx.content_datetime.strftime("%Y%m%d")
    assert images[0].dataset.SeriesTime == ctx.content_datetime.strftime("%H%M%S")
    for image in images:  # ok: no banner of either colour in the top rows
        for colour in BANNER_RGB.values():
            assert not _coloured(image.pixels[:40], colour).any()


@pytest.mark.parametrize("severity", [Verdict.REVIEW, Verdict.UNRELIABLE])
def test_key_images_carry_a_banner_when_the_verdict_is_not_ok(
    synthetic: SyntheticExam, severity: Verdict
) -> None:
    result = make_result(synthetic)
    finding = QualityFinding(
        code="coverage",
        severity=severity,
        message="Only 2 of 3 stations arrived: the exam ends at the pelvis.",
    )
    doubtful = replace(result, quality=QualityAssessment(findings=(finding,)))
    ctx = WriterContext.create(
        synthetic.exam,
        WriterIdentity(software_version="2.0", device_serial_number="SN"),
        "d",
        computed_b_values=[1000.0],
    )
    reference = pydicom.dcmread(synthetic.exam.sources[0].path, stop_before_pixels=True)
    plain = build_key_images(ctx, result, reference)
    images = build_key_images(ctx, doubtful, reference)
    colour = BANNER_RGB[severity]
    for image, before in zip(images, plain, strict=True):
        band = _coloured(image.pixels, colour)
        # a full-width band on top, the picture below it unchanged
        assert band[:10].all(axis=1).all()  # above the text
        rows = int(band.all(axis=1).sum())
        assert image.pixels.shape[0] > before.pixels.shape[0] + rows // 2
        below = image.pixels[-before.pixels.shape[0] :]
        width = before.pixels.shape[1]
        left = (image.pixels.shape[1] - width) // 2
        np.testing.assert_array_equal(below[:, left : left + width], before.pixels)
        text = image.pixels[: rows + 40]
        assert (text.min(axis=-1) > 240).sum() > 200  # white text on the band
        assert image.dataset.ImageComments.startswith(before.dataset.ImageComments)
        assert f". {severity.value.upper()}: " in image.dataset.ImageComments
        assert image.dataset.SeriesDescription == f"Key images ({severity.value.upper()}) wbdwi"


def _coloured(picture: NDArray[np.uint8], colour: tuple[int, int, int]) -> NDArray[np.bool_]:
    return np.all(np.abs(picture.astype(int) - np.asarray(colour)) < 12, axis=-1)


def test_trend_chart_places_each_exam_by_date_and_value() -> None:
    samples = [
        TrendSample("20240105", 384.0, 704.0, is_baseline=True),
        TrendSample("20240405", 290.0, 971.0),
        TrendSample("20241005", 698.0, 700.0, is_current=True),
    ]
    picture = render_trend_chart(samples, title="trend")
    height, width, _ = picture.shape
    plot = picture[90 : height - 110, 110 : width - 110]
    tdv = _coloured(plot, (30, 70, 170))
    adc = _coloured(plot, (200, 90, 0))
    assert tdv.sum() > 300 and adc.sum() > 300

    def first_row(mask: NDArray[np.bool_], fraction: float) -> int:
        column = int(fraction * mask.shape[1])
        rows = np.nonzero(mask[:, column - 3 : column + 3].any(axis=1))[0]
        return int(rows.min())

    # x by date: 0, 91 and 274 days -> 6 %, 6 % + 88 % * 91/274, 94 % of the plot width.
    early, middle, late = 0.06, 0.06 + 0.88 * 91 / 274, 0.94
    # tDV falls then rises above baseline: the last point is highest (smallest row).
    assert first_row(tdv, late) < first_row(tdv, early) < first_row(tdv, middle)
    # median ADC rises then falls back.
    assert first_row(adc, middle) < first_row(adc, early)
    # the baseline has its dashed line in grey
    grey = _coloured(plot, (110, 110, 110))
    assert grey[:, int(early * plot.shape[1]) - 2 : int(early * plot.shape[1]) + 3].sum() > 50


def test_trend_chart_rejects_one_exam_and_bad_dates() -> None:
    with pytest.raises(ValueError, match="at least two exams"):
        render_trend_chart([TrendSample("20240105", 1.0, 800.0)], title="t")
    with pytest.raises(ValueError, match="2024-01-05"):
        render_trend_chart(
            [TrendSample("2024-01-05", 1.0, 800.0), TrendSample("20240105", 1.0, 800.0)],
            title="t",
        )


def test_comparison_adds_prior_outlines_and_the_trend_image(
    synthetic: SyntheticExam, tmp_path: Path
) -> None:
    result = make_result(synthetic)
    ctx = WriterContext.create(
        synthetic.exam,
        WriterIdentity(software_version="2.0", device_serial_number="SN"),
        "d",
        computed_b_values=[1000.0],
    )
    current = summarize_exam(synthetic.exam, result.stats, study_date="20240710")
    data = current.to_dict()
    baseline = ExamSummary.from_dict(
        {**data, "study_instance_uid": "1.2.3.1", "study_date": "20240105"}
    )
    previous = ExamSummary.from_dict(
        {**data, "study_instance_uid": "1.2.3.2", "study_date": "20240405", "histogram": None}
    )
    comparison = compare_exams(current, [baseline, previous])
    histograms = comparison_histograms(comparison, [baseline, previous])
    # The previous exam was rebuilt from a report: no histogram; the baseline has one.
    assert [label for label, _ in histograms] == ["baseline 2024-01-05"]
    both = comparison_histograms(
        comparison, [baseline, replace(previous, histogram=current.histogram)]
    )
    assert [label for label, _ in both] == ["previous 2024-04-05", "baseline 2024-01-05"]
    alone = compare_exams(current, [baseline])
    assert [label for label, _ in comparison_histograms(alone, [baseline])] == [
        "previous = baseline 2024-01-05"
    ]

    reference = pydicom.dcmread(synthetic.exam.sources[0].path, stop_before_pixels=True)
    images = build_key_images(ctx, result, reference, priors=both, trend=trend_samples(comparison))
    assert [image.name for image in images] == ["mip", "histogram", "trend"]
    trend = images[2]
    assert trend.dataset.ImageComments.startswith("Trend of tDV")
    assert "PatientOrientation" in trend.dataset and trend.dataset.PatientOrientation is None
    assert "outlines" in images[1].dataset.ImageComments
    path = tmp_path / "trend.dcm"
    trend.dataset.save_as(path, enforce_file_format=True)
    np.testing.assert_array_equal(pydicom.dcmread(path).pixel_array, trend.pixels)
    assert [s.is_current for s in trend_samples(comparison)] == [False, False, True]
