"""Pictures for the key images, drawn with NumPy and Pillow (no DICOM here).

- :func:`render_class_mip`: an inverted-greyscale coronal maximum intensity
  projection of a computed high-b image (bright lesions become dark, as readers
  of whole-body DWI expect), with the ADC class colour of the projected tumour
  voxel blended on top, a colour legend with the class volumes, and R/L
  markers. Head at the top, patient right on the image left (radiological
  convention), square display pixels.
- :func:`render_adc_histogram`: the ADC histogram of the tumour load as volume
  per bin, over coloured bands of the ADC classes, with labelled axes, numbers
  on both axes, and optional outline histograms of earlier exams.
- :func:`add_banner`: a coloured band with the reliability verdict on top of
  a picture, when the verdict is not ``ok``.
- :func:`render_trend_chart`: tDV (left axis) and median ADC (right axis) of
  every exam of the patient against the study date, baselines marked, the
  current exam highlighted (as the TTL case study, figure 4, follows one patient).

Nothing identifying is drawn (no patient name, ID, date of birth).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

from processing.results import AdcClass, ClassVolumes, Histogram

__all__ = [
    "MipGeometry",
    "TrendSample",
    "add_banner",
    "nice_ticks",
    "render_adc_histogram",
    "render_class_mip",
    "render_trend_chart",
]

_WHITE = (255, 255, 255)
_BLACK = (0, 0, 0)
_GREY = (110, 110, 110)
_MIP_BOX = (768, 1024)  # largest display height and width of the MIP picture (pixels)
_OVERLAY_ALPHA = 0.65
_PRIOR_COLOURS = ((40, 40, 200), (150, 40, 160), (20, 130, 150))


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


@dataclass(frozen=True, slots=True)
class MipGeometry:
    """How the exam grid maps to a coronal picture.

    Parameters
    ----------
    projection_axis
        Array axis (1 = rows, 2 = columns) most aligned with anterior-posterior.
    flip_vertical
        Whether slice index 0 is at the feet (so the picture must be flipped
        to put the head at the top).
    flip_horizontal
        Whether the remaining in-plane axis runs towards patient right (so it
        must be flipped to put patient right on the image left).
    pixel_mm
        Display pixel size (vertical, horizontal) in mm before resampling.
    """

    projection_axis: int
    flip_vertical: bool
    flip_horizontal: bool
    pixel_mm: tuple[float, float]

    @classmethod
    def from_affine(cls, affine: NDArray[np.float64]) -> MipGeometry:
        """Choose the projection from the affine (index ``(z, y, x)`` to LPS mm)."""
        axes = np.asarray(affine, dtype=np.float64)[:3, :3]
        spacing = np.linalg.norm(axes, axis=0)
        # column k of ``axes`` is the LPS step of array axis k
        projection_axis = 1 if abs(axes[1, 1]) / spacing[1] >= abs(axes[1, 2]) / spacing[2] else 2
        lateral_axis = 3 - projection_axis
        return cls(
            projection_axis=projection_axis,
            flip_vertical=bool(axes[2, 0] > 0),  # z index towards superior: head at the end
            flip_horizontal=bool(axes[0, lateral_axis] < 0),  # towards patient right
            pixel_mm=(float(spacing[0]), float(spacing[lateral_axis])),
        )


def _orient(plane: NDArray[np.generic], geometry: MipGeometry) -> NDArray[np.generic]:
    if geometry.flip_vertical:
        plane = plane[::-1, :]
    if geometry.flip_horizontal:
        plane = plane[:, ::-1]
    return np.ascontiguousarray(plane)


def render_class_mip(
    image: NDArray[np.floating],
    tumour_mask: NDArray[np.bool_],
    class_labels: NDArray[np.integer],
    geometry: MipGeometry,
    class_colours: Mapping[AdcClass, tuple[int, int, int]],
    *,
    title: str,
    legend: Sequence[tuple[tuple[int, int, int], str]],
) -> NDArray[np.uint8]:
    """Inverted coronal MIP with the ADC class overlay, as an ``[H, W, 3]`` uint8 picture.

    Each projected ray that passes through the tumour mask takes the class of
    the tumour voxel with the highest signal along it.
    """
    axis = geometry.projection_axis
    mip = np.max(image, axis=axis).astype(np.float64)
    positive = mip[mip > 0]
    high = float(np.percentile(positive, 99.5)) if positive.size else 1.0
    grey = 255.0 - np.clip(mip / (high if high > 0 else 1.0), 0.0, 1.0) * 255.0
    rgb = np.repeat(grey[..., None], 3, axis=-1)

    if tumour_mask.any():
        tumour_signal = np.where(tumour_mask, image, -np.inf)
        brightest = np.expand_dims(np.argmax(tumour_signal, axis=axis), axis)
        ray_class = np.take_along_axis(class_labels, brightest, axis=axis).squeeze(axis)
        ray_class = np.where(tumour_mask.any(axis=axis), ray_class, 0)
        for adc_class, colour in class_colours.items():
            hit = ray_class == adc_class.value
            rgb[hit] = (1 - _OVERLAY_ALPHA) * rgb[hit] + _OVERLAY_ALPHA * np.asarray(colour)

    picture = Image.fromarray(_orient(rgb, geometry).astype(np.uint8), mode="RGB")
    rows, columns = picture.height, picture.width
    height_mm, width_mm = rows * geometry.pixel_mm[0], columns * geometry.pixel_mm[1]
    scale = min(_MIP_BOX[0] / height_mm, _MIP_BOX[1] / width_mm)  # display pixels per mm
    width, height = max(1, round(width_mm * scale)), max(1, round(height_mm * scale))
    picture = picture.resize((width, height), Image.Resampling.BILINEAR)

    margin, line = 12, 26
    header = margin + line * (1 + len(legend)) + margin
    canvas = Image.new("RGB", (max(width, 420) + 2 * margin, height + header + margin), _WHITE)
    draw = ImageDraw.Draw(canvas)
    text_font, small = _font(20), _font(16)
    draw.text((margin, margin), title, fill=_BLACK, font=text_font)
    for index, (colour, text) in enumerate(legend):
        top = margin + line * (index + 1) + 4
        draw.rectangle((margin, top, margin + 18, top + 18), fill=colour, outline=_BLACK)
        draw.text((margin + 28, top), text, fill=_BLACK, font=small)
    left = (canvas.width - width) // 2
    canvas.paste(picture, (left, header))
    draw.text((left + 6, header + 6), "R", fill=(200, 0, 0), font=text_font)
    draw.text((left + width - 20, header + 6), "L", fill=(200, 0, 0), font=text_font)
    return np.asarray(canvas, dtype=np.uint8)


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int) -> list[str]:
    """Greedy word wrap of ``text`` to lines at most ``width`` pixels wide."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and probe.textlength(candidate, font=font) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    if current:
        lines.append(current)
    return lines


def add_banner(
    picture: NDArray[np.uint8],
    headline: str,
    details: Sequence[str],
    colour: tuple[int, int, int],
) -> NDArray[np.uint8]:
    """``picture`` with a coloured band on top: ``headline`` in bold size, then ``details``.

    White text on ``colour``, wrapped to the picture's width (at least 420
    pixels); the picture itself is unchanged below the band.
    """
    height, width = picture.shape[:2]
    band_width = max(width, 420)
    margin = 12
    big, small = _font(22), _font(17)
    lines = [(line, big) for line in _wrap(headline, big, band_width - 2 * margin)]
    for detail in details:
        lines += [(line, small) for line in _wrap(detail, small, band_width - 2 * margin)]
    line_height = {id(big): 28, id(small): 22}
    band_height = 2 * margin + sum(line_height[id(font)] for _, font in lines)
    canvas = Image.new("RGB", (band_width, band_height + height), _WHITE)
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((0, 0, band_width - 1, band_height - 1), fill=colour)
    top = margin
    for text, font in lines:
        draw.text((margin, top), text, fill=_WHITE, font=font)
        top += line_height[id(font)]
    canvas.paste(Image.fromarray(picture, mode="RGB"), ((band_width - width) // 2, band_height))
    return np.asarray(canvas, dtype=np.uint8)


def nice_ticks(low: float, high: float, target: int = 6) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) covering ``[low, high]``."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(target, 1)
    power = 10.0 ** np.floor(np.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * power >= raw)
    first = np.ceil(low / step) * step
    count = int(np.floor((high - first) / step + 1e-9)) + 1
    return [float(first + i * step) for i in range(count)]


def _tick_text(value: float) -> str:
    return f"{value:.0f}" if abs(value - round(value)) < 1e-9 else f"{value:g}"


def _ml_per_bin(histogram: Histogram) -> NDArray[np.float64]:
    return np.asarray(histogram.counts, dtype=np.float64) * histogram.voxel_volume_ml


def render_adc_histogram(
    histogram: Histogram,
    classes: ClassVolumes,
    class_colours: Mapping[AdcClass, tuple[int, int, int]],
    *,
    title: str,
    priors: Sequence[tuple[str, Histogram]] = (),
    width: int = 1000,
    height: int = 640,
) -> NDArray[np.uint8]:
    """ADC histogram (ml per bin) over the class bands, as an ``[H, W, 3]`` uint8 picture.

    Raises
    ------
    ValueError
        When the histogram's bin edges and counts disagree.
    """
    edges = np.asarray(histogram.bin_edges_um2s, dtype=np.float64)
    if edges.size != len(histogram.counts) + 1 or edges.size < 2:
        raise ValueError(f"histogram has {edges.size} bin edges for {len(histogram.counts)} counts")
    volumes = _ml_per_bin(histogram)
    prior_volumes = [(label, prior, _ml_per_bin(prior)) for label, prior in priors]
    top = max(
        [float(volumes.max(initial=0.0))] + [float(v.max(initial=0.0)) for *_, v in prior_volumes]
    )
    top = top * 1.1 if top > 0 else 1.0

    canvas = Image.new("RGB", (width, height), _WHITE)
    draw = ImageDraw.Draw(canvas)
    title_font, label_font, tick_font = _font(22), _font(19), _font(16)
    left, right, upper, lower = 100, width - 30, 60, height - 80
    frame = _HistogramFrame(
        draw, left, right, upper, lower, x_range=(float(edges[0]), float(edges[-1])), top=top
    )
    _draw_class_bands(frame, classes, class_colours)
    _draw_bars(frame, edges, volumes)
    for number, (_, prior, prior_ml) in enumerate(prior_volumes):
        _draw_prior_outline(frame, prior, prior_ml, _PRIOR_COLOURS[number % len(_PRIOR_COLOURS)])
    _draw_histogram_axes(frame, tick_font)
    draw.text(
        ((left + right) / 2, height - 22),
        "ADC (10^-6 mm2/s)",
        fill=_BLACK,
        font=label_font,
        anchor="ms",
    )
    label = Image.new("RGB", (260, 30), _WHITE)
    ImageDraw.Draw(label).text(
        (130, 15), "Volume per bin (ml)", fill=_BLACK, font=label_font, anchor="mm"
    )
    canvas.paste(label.rotate(90, expand=True), (8, (upper + lower) // 2 - 130))
    draw.text((left, 18), title, fill=_BLACK, font=title_font)
    legend_x = right - 10
    for number, (prior_label, *_rest) in enumerate(prior_volumes):
        colour = _PRIOR_COLOURS[number % len(_PRIOR_COLOURS)]
        y = upper + 14 + 24 * number
        draw.line((legend_x - 260, y, legend_x - 230, y), fill=colour, width=3)
        draw.text((legend_x - 222, y), prior_label, fill=_BLACK, font=tick_font, anchor="lm")
    if not volumes.any():
        draw.text(
            ((left + right) / 2, (upper + lower) / 2),
            "No disease segmented",
            fill=_GREY,
            font=title_font,
            anchor="mm",
        )
    return np.asarray(canvas, dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class _HistogramFrame:
    """The histogram's plot area (pixels), its ADC range and top volume, and where to draw."""

    draw: ImageDraw.ImageDraw
    left: int
    right: int
    upper: int
    lower: int
    x_range: tuple[float, float]
    top: float

    def x_px(self, value: float) -> float:
        """Horizontal pixel of the ADC ``value``."""
        x_low, x_high = self.x_range
        return self.left + (value - x_low) / (x_high - x_low) * (self.right - self.left)

    def y_px(self, value: float) -> float:
        """Vertical pixel of the volume ``value`` (ml)."""
        return self.lower - value / self.top * (self.lower - self.upper)


def _draw_class_bands(
    frame: _HistogramFrame,
    classes: ClassVolumes,
    class_colours: Mapping[AdcClass, tuple[int, int, int]],
) -> None:
    """Each ADC class's range as a light tint of its colour behind the bars."""
    x_low, x_high = frame.x_range
    bands = [
        (AdcClass.RED, x_low, classes.yellow_lower_um2s),
        (AdcClass.YELLOW, classes.yellow_lower_um2s, classes.green_lower_um2s),
        (AdcClass.GREEN, classes.green_lower_um2s, x_high),
    ]
    for adc_class, band_start, band_stop in bands:
        start, stop = max(band_start, x_low), min(band_stop, x_high)
        if stop <= start:
            continue
        tint = tuple(int(255 - 0.25 * (255 - c)) for c in class_colours[adc_class])
        frame.draw.rectangle(
            (frame.x_px(start), frame.upper, frame.x_px(stop), frame.lower), fill=tint
        )


def _draw_bars(
    frame: _HistogramFrame, edges: NDArray[np.float64], volumes: NDArray[np.float64]
) -> None:
    """This exam's volume per bin as dark grey bars."""
    for index, volume in enumerate(volumes):
        if volume <= 0:
            continue
        frame.draw.rectangle(
            (
                frame.x_px(edges[index]),
                frame.y_px(volume),
                frame.x_px(edges[index + 1]),
                frame.lower,
            ),
            fill=(60, 60, 60),
        )


def _draw_prior_outline(
    frame: _HistogramFrame,
    prior: Histogram,
    prior_ml: NDArray[np.float64],
    colour: tuple[int, int, int],
) -> None:
    """An earlier exam's histogram as a step outline in ``colour``."""
    prior_edges = np.asarray(prior.bin_edges_um2s, dtype=np.float64)
    points = []
    for index, volume in enumerate(prior_ml):
        points += [
            (frame.x_px(prior_edges[index]), frame.y_px(volume)),
            (frame.x_px(prior_edges[index + 1]), frame.y_px(volume)),
        ]
    if points:
        frame.draw.line(points, fill=colour, width=3)


def _draw_histogram_axes(
    frame: _HistogramFrame, tick_font: ImageFont.FreeTypeFont | ImageFont.ImageFont
) -> None:
    """The axis lines, ADC ticks below and volume ticks with grid lines on the left."""
    draw, left, right, upper, lower = frame.draw, frame.left, frame.right, frame.upper, frame.lower
    draw.line((left, lower, right, lower), fill=_BLACK, width=2)
    draw.line((left, upper, left, lower), fill=_BLACK, width=2)
    for tick in nice_ticks(*frame.x_range, 6):
        x = frame.x_px(tick)
        draw.line((x, lower, x, lower + 8), fill=_BLACK, width=2)
        draw.text((x, lower + 12), _tick_text(tick), fill=_BLACK, font=tick_font, anchor="mt")
    for tick in nice_ticks(0.0, frame.top, 5):
        y = frame.y_px(tick)
        draw.line((left - 8, y, left, y), fill=_BLACK, width=2)
        draw.line((left, y, right, y), fill=(220, 220, 220), width=1)
        draw.text((left - 12, y), _tick_text(tick), fill=_BLACK, font=tick_font, anchor="rm")


_TDV_COLOUR = (30, 70, 170)
_ADC_COLOUR = (200, 90, 0)


@dataclass(frozen=True, slots=True)
class TrendSample:
    """One exam on the trend chart.

    ``study_date`` is DICOM DA (``YYYYMMDD``); ``adc_median_um2s`` is NaN when
    nothing was segmented.
    """

    study_date: str
    tdv_ml: float
    adc_median_um2s: float
    is_baseline: bool = False
    is_current: bool = False


def _date(value: str) -> dt.date:
    try:
        return dt.datetime.strptime(value, "%Y%m%d").date()
    except ValueError as exc:
        raise ValueError(f"trend chart: study date {value!r} is not YYYYMMDD") from exc


def _axis_range(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return 0.0, 1.0
    high = max(finite)
    return 0.0, high * 1.15 if high > 0 else 1.0


def render_trend_chart(
    samples: Sequence[TrendSample],
    *,
    title: str,
    width: int = 1000,
    height: int = 640,
) -> NDArray[np.uint8]:
    """tDV and median ADC of each exam against its date, as an ``[H, W, 3]`` uint8 picture.

    tDV (ml) is the blue line with circles on the left axis, the median ADC
    (10^-6 mm2/s) the orange line with squares on the right axis; each point is
    labelled with its value, each exam with its date. Baselines have a dashed
    vertical line, the current exam a larger marker.

    Raises
    ------
    ValueError
        With fewer than two samples, or a date that is not ``YYYYMMDD``.
    """
    if len(samples) < 2:
        raise ValueError(f"a trend chart needs at least two exams, got {len(samples)}")
    dates = [_date(sample.study_date) for sample in samples]
    days = [(date - dates[0]).days for date in dates]
    if max(days) == min(days):
        days = list(range(len(samples)))  # all on one day: even spacing in exam order

    canvas = Image.new("RGB", (width, height), _WHITE)
    left, right = 110, width - 110
    frame = _TrendFrame(
        draw=ImageDraw.Draw(canvas),
        left=left,
        right=right,
        upper=90,
        lower=height - 110,
        first_day=min(days),
        span=max(max(days) - min(days), 1),
        margin=0.06 * (right - left),
        tdv_range=_axis_range([s.tdv_ml for s in samples]),
        adc_range=_axis_range([s.adc_median_um2s for s in samples]),
        tick_font=_font(16),
    )
    _draw_trend_axes(frame)
    _draw_exam_marks(frame, samples, days, dates)
    _draw_trend_series(frame, samples, days, adc=False)
    _draw_trend_series(frame, samples, days, adc=True)
    _draw_point_labels(frame, samples, days)
    _draw_trend_captions(canvas, frame, title)
    return np.asarray(canvas, dtype=np.uint8)


@dataclass(frozen=True, slots=True)
class _TrendFrame:
    """The trend chart's plot area (pixels), its two value axes and where to draw."""

    draw: ImageDraw.ImageDraw
    left: int
    right: int
    upper: int
    lower: int
    first_day: int
    span: int
    margin: float
    tdv_range: tuple[float, float]
    adc_range: tuple[float, float]
    tick_font: ImageFont.FreeTypeFont | ImageFont.ImageFont

    def x_px(self, day: float) -> float:
        """Horizontal pixel of ``day`` (days since the first exam)."""
        width = self.right - self.left - 2 * self.margin
        return self.left + self.margin + (day - self.first_day) / self.span * width

    def y_px(self, value: float, axis: tuple[float, float]) -> float:
        """Vertical pixel of ``value`` on the axis spanning ``axis`` (low, high)."""
        low, high = axis
        return self.lower - (value - low) / (high - low) * (self.lower - self.upper)


def _draw_trend_axes(frame: _TrendFrame) -> None:
    """Grid lines and ticks of the tDV (left) and ADC (right) axes, and the axis lines."""
    draw, left, right, font = frame.draw, frame.left, frame.right, frame.tick_font
    tdv_low, tdv_high = frame.tdv_range
    for tick in nice_ticks(tdv_low, tdv_high, 5):
        if tick > tdv_high:
            continue
        y = frame.y_px(tick, frame.tdv_range)
        draw.line((left, y, right, y), fill=(225, 225, 225), width=1)
        draw.line((left - 8, y, left, y), fill=_TDV_COLOUR, width=2)
        draw.text((left - 12, y), _tick_text(tick), fill=_TDV_COLOUR, font=font, anchor="rm")
    adc_low, adc_high = frame.adc_range
    for tick in nice_ticks(adc_low, adc_high, 5):
        if tick > adc_high:
            continue
        y = frame.y_px(tick, frame.adc_range)
        draw.line((right, y, right + 8, y), fill=_ADC_COLOUR, width=2)
        draw.text((right + 12, y), _tick_text(tick), fill=_ADC_COLOUR, font=font, anchor="lm")
    draw.line((left, frame.lower, right, frame.lower), fill=_BLACK, width=2)
    draw.line((left, frame.upper, left, frame.lower), fill=_TDV_COLOUR, width=2)
    draw.line((right, frame.upper, right, frame.lower), fill=_ADC_COLOUR, width=2)


def _draw_exam_marks(
    frame: _TrendFrame, samples: Sequence[TrendSample], days: list[int], dates: list[dt.date]
) -> None:
    """Each exam's date under the axis; a dashed line at baselines; "this exam"."""
    draw, upper, lower, font = frame.draw, frame.upper, frame.lower, frame.tick_font
    for sample, day, date in zip(samples, days, dates, strict=True):
        x = frame.x_px(day)
        if sample.is_baseline:
            for y in range(upper, lower, 12):
                draw.line((x, y, x, min(y + 6, lower)), fill=_GREY, width=2)
            draw.text((x, upper - 6), "baseline", fill=_GREY, font=font, anchor="ms")
        draw.line((x, lower, x, lower + 8), fill=_BLACK, width=2)
        draw.text(
            (x, lower + 12),
            date.isoformat(),
            fill=_BLACK,
            font=_font(18) if sample.is_current else font,
            anchor="mt",
        )
        if sample.is_current:
            draw.text((x, lower + 34), "this exam", fill=_BLACK, font=font, anchor="mt")


def _draw_trend_series(
    frame: _TrendFrame, samples: Sequence[TrendSample], days: list[int], *, adc: bool
) -> None:
    """The tDV line with circles, or (``adc``) the median ADC line with squares."""
    axis, colour = (frame.adc_range, _ADC_COLOUR) if adc else (frame.tdv_range, _TDV_COLOUR)
    values = [s.adc_median_um2s if adc else s.tdv_ml for s in samples]
    points = [
        (frame.x_px(day), frame.y_px(value, axis), sample)
        for value, day, sample in zip(values, days, samples, strict=True)
        if math.isfinite(value)
    ]
    if len(points) > 1:
        frame.draw.line([(x, y) for x, y, _ in points], fill=colour, width=3)
    for x, y, sample in points:
        radius = 9 if sample.is_current else 6
        box = (x - radius, y - radius, x + radius, y + radius)
        if adc:
            frame.draw.rectangle(box, fill=colour, outline=_BLACK)
        else:
            frame.draw.ellipse(box, fill=colour, outline=_BLACK)


def _draw_point_labels(frame: _TrendFrame, samples: Sequence[TrendSample], days: list[int]) -> None:
    """The value beside each point: tDV above, ADC below, left of points near the ADC axis."""
    for sample, day in zip(samples, days, strict=True):
        x = frame.x_px(day)
        near_right = x > frame.right - 90  # label on the left of the point, clear of the ADC axis
        offset, side = (-12, "r") if near_right else (12, "l")
        if math.isfinite(sample.tdv_ml):
            y = frame.y_px(sample.tdv_ml, frame.tdv_range)
            frame.draw.text(
                (x + offset, y - 4),
                f"{sample.tdv_ml:.0f} ml",
                fill=_TDV_COLOUR,
                font=frame.tick_font,
                anchor=f"{side}s",
            )
        if math.isfinite(sample.adc_median_um2s):
            y = frame.y_px(sample.adc_median_um2s, frame.adc_range)
            frame.draw.text(
                (x + offset, y + 4),
                f"{sample.adc_median_um2s:.0f}",
                fill=_ADC_COLOUR,
                font=frame.tick_font,
                anchor=f"{side}t",
            )


def _draw_trend_captions(canvas: Image.Image, frame: _TrendFrame, title: str) -> None:
    """Axis titles (rotated), the chart title, the legend and the date axis title."""
    draw, left, right, upper, lower = frame.draw, frame.left, frame.right, frame.upper, frame.lower
    width, height = canvas.size
    title_font, label_font, tick_font = _font(22), _font(19), frame.tick_font
    label = Image.new("RGB", (260, 30), _WHITE)
    ImageDraw.Draw(label).text(
        (130, 15), "tDV (ml)", fill=_TDV_COLOUR, font=label_font, anchor="mm"
    )
    canvas.paste(label.rotate(90, expand=True), (8, (upper + lower) // 2 - 130))
    label = Image.new("RGB", (260, 30), _WHITE)
    ImageDraw.Draw(label).text(
        (130, 15), "median ADC (10^-6 mm2/s)", fill=_ADC_COLOUR, font=label_font, anchor="mm"
    )
    canvas.paste(label.rotate(270, expand=True), (width - 38, (upper + lower) // 2 - 130))
    draw.text((left, 18), title, fill=_BLACK, font=title_font)
    legend_y = 56
    draw.ellipse((left, legend_y - 6, left + 12, legend_y + 6), fill=_TDV_COLOUR, outline=_BLACK)
    draw.text(
        (left + 20, legend_y), "total diffusion volume", fill=_BLACK, font=tick_font, anchor="lm"
    )
    draw.rectangle(
        (left + 260, legend_y - 6, left + 272, legend_y + 6), fill=_ADC_COLOUR, outline=_BLACK
    )
    draw.text(
        (left + 280, legend_y),
        "median ADC of the tumour load",
        fill=_BLACK,
        font=tick_font,
        anchor="lm",
    )
    draw.text(
        ((left + right) / 2, height - 22), "study date", fill=_BLACK, font=label_font, anchor="ms"
    )
