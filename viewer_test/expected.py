"""What the result files say, read with pydicom: the values the browser checks compare against.

The viewer test never hard-codes a description, colour or window: it reads them from the
objects the pipeline wrote (so it follows the writers), and from ``measurements.json`` for
the lesion volumes the SR must show.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom

__all__ = ["Expected", "SegmentExpectation", "read_expected"]

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
MR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SR_SOP_CLASSES = {
    COMPREHENSIVE_3D_SR,
    "1.2.840.10008.5.1.4.1.1.88.33",
    "1.2.840.10008.5.1.4.1.1.88.22",
}


@dataclass(frozen=True)
class SegmentExpectation:
    """One segment of a SEG file: number, label, display colour (sRGB), voxels in the file."""

    number: int
    label: str
    rgb: tuple[int, int, int]
    voxels: int

    @property
    def is_adc_class(self) -> bool:
        return self.label.lower().startswith("adc class")


@dataclass(frozen=True)
class Expected:
    """The demo study's result objects as the viewer must show them."""

    study_uid: str
    adc: dict[str, Any]
    computed_b: dict[str, Any]
    segs: list[dict[str, Any]]
    srs: list[dict[str, Any]]
    key_images: dict[str, Any] | None
    lesions: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {
            "study_uid": self.study_uid,
            "adc": self.adc,
            "computed_b": self.computed_b,
            "segs": self.segs,
            "srs": self.srs,
            "key_images": self.key_images,
            "lesions": self.lesions,
        }


def _series(files: list[tuple[Path, pydicom.Dataset]]) -> dict[str, Any]:
    header = files[0][1]
    sizes = sorted({(int(h.get("Rows", 0)), int(h.get("Columns", 0))) for _, h in files})
    return {
        "series_uid": str(header.SeriesInstanceUID),
        "description": str(header.get("SeriesDescription", "")),
        "series_number": int(header.get("SeriesNumber", 0)),
        "instances": len(files),
        "sizes": [list(size) for size in sizes],
    }


def _window(header: pydicom.Dataset) -> dict[str, float]:
    def first(value: Any) -> float:
        return float(value[0]) if isinstance(value, pydicom.multival.MultiValue) else float(value)

    return {"center": first(header.WindowCenter), "width": first(header.WindowWidth)}


def _segments(path: Path) -> list[SegmentExpectation]:
    dataset = pydicom.dcmread(path)
    frames = dataset.pixel_array.reshape(int(dataset.NumberOfFrames), dataset.Rows, dataset.Columns)
    voxels: dict[int, int] = {}
    for index, group in enumerate(dataset.PerFrameFunctionalGroupsSequence):
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        voxels[number] = voxels.get(number, 0) + int(np.count_nonzero(frames[index]))
    segments = []
    for item in dataset.SegmentSequence:
        lab = hd.color.CIELabColor.from_dicom_value(tuple(item.RecommendedDisplayCIELabValue))
        rgb = tuple(int(v) for v in lab.to_rgb())
        number = int(item.SegmentNumber)
        segments.append(
            SegmentExpectation(
                number, str(item.SegmentLabel), (rgb[0], rgb[1], rgb[2]), voxels.get(number, 0)
            )
        )
    return segments


def _measurement_groups(path: Path) -> list[dict[str, Any]]:
    """Each TID 1500 measurement group of an SR: its Tracking Identifier and whether it has
    an image region (a top-level SCOORD/SCOORD3D: what OHIF can load into its panel)."""
    dataset = pydicom.dcmread(path)

    def code(item: pydicom.Dataset) -> str:
        names = item.get("ConceptNameCodeSequence", [])
        return str(names[0].CodeValue) if names else ""

    groups = []
    for container in dataset.get("ContentSequence", []):
        if code(container) != "126010":  # Imaging Measurements
            continue
        for group in container.get("ContentSequence", []):
            items = list(group.get("ContentSequence", []))
            tracking = next((str(i.TextValue) for i in items if code(i) == "112039"), "")
            located = any(i.ValueType in ("SCOORD", "SCOORD3D") for i in items)
            groups.append({"tracking": tracking, "located": located})
    return groups


def read_expected(results: Path, measurements: dict[str, Any]) -> Expected:
    """Scan the result folder's DICOM headers; group by series; pick what the checks need."""
    series: dict[str, list[tuple[Path, pydicom.Dataset]]] = {}
    for path in sorted(results.rglob("*.dcm")):
        header = pydicom.dcmread(path, stop_before_pixels=True)
        series.setdefault(str(header.SeriesInstanceUID), []).append((path, header))
    adc = computed_b = key_images = None
    segs: list[dict[str, Any]] = []
    srs: list[dict[str, Any]] = []
    for files in series.values():
        path, header = files[0]
        sop = str(header.SOPClassUID)
        image_type = [str(v).upper() for v in header.get("ImageType", [])]
        if sop == MR_SOP_CLASS and "ADC" in image_type:
            adc = {**_series(files), "window": _window(header)}
        elif sop == MR_SOP_CLASS and "COMPUTED_B" in image_type and computed_b is None:
            computed_b = {**_series(files), "window": _window(header)}
        elif sop == SEG_SOP_CLASS:
            referenced = [
                str(item.SeriesInstanceUID) for item in header.get("ReferencedSeriesSequence", [])
            ]
            segments = _segments(path)
            segs.append(
                {
                    **_series(files),
                    "referenced_series": referenced,
                    "segments": [
                        {**segment.__dict__, "is_adc_class": segment.is_adc_class}
                        for segment in segments
                    ],
                }
            )
        elif sop in SR_SOP_CLASSES:
            srs.append(
                {
                    **_series(files),
                    "sop_instance_uid": str(header.SOPInstanceUID),
                    "groups": _measurement_groups(path),
                }
            )
        elif header.Modality == "OT" or "SECONDARY" in image_type:
            key_images = _series(files)
    if adc is None or computed_b is None:
        raise ValueError(f"no ADC or computed-b MR series among the results in {results}")
    lesions = [
        {
            "label": int(lesion["label"]),
            "volume_ml": float(lesion["volume_ml"]),
            "region": lesion["region"],
        }
        for lesion in measurements["lesions"]
    ]
    return Expected(
        study_uid=str(measurements["study_instance_uid"]),
        adc=adc,
        computed_b=computed_b,
        segs=segs,
        srs=srs,
        key_images=key_images,
        lesions=lesions,
    )
