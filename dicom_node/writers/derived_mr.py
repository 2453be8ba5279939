"""ADC and computed high-b images as derived MR Image Storage series (built with pydicom).

Every PACS viewer shows a classic MR image, while float Parametric Maps are
rarely rendered (Orthanc cannot preview them). So the node also writes

- the ADC map as uint16 in 10^-6 mm2/s (ImageType ``DERIVED\\SECONDARY\\ADC``)
  with the same Real World Value Mapping as the Parametric Map and a window for
  ADC (centre 1000, width 2000);
- each computed high-b image as its own series (ImageType
  ``DERIVED\\SECONDARY\\DIFFUSION\\COMPUTED_B``), SeriesDescription naming the
  b-value, one scale for the whole series so that stored values compare across
  slices. The scale (source signal units per stored value) is a Real World
  Value Mapping, not a Rescale Slope: the Modality LUT is not part of the MR
  Image IOD and dciodvfy warns that viewers may window it wrongly.

One single-frame instance per slice of the composed exam grid, so each series
covers the whole body slice for slice (stations already stitched). Each slice
references the source images of every b-value that it was computed from
(Source Image Sequence, purpose DCM 121322, PS3.3 C.7.6.1.1.4) and the
derivation DCM 129105 "Diffusion image analysis". (0018,9087) Diffusion
b-value is not written: it is not part of the classic MR Image IOD.
See PS3.3 A.4 (MR Image IOD) and C.8.3.1 (MR Image Module).
"""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, MRImageStorage

from dicom_node.writers.common import WriterContext, check_on_grid, computed_series_kind
from dicom_node.writers.errors import ResultGeometryError, WriterError
from processing.exam import SourceRef
from processing.results import ComputedImage, ProcessingResult

__all__ = [
    "ADC_RWV_LABEL",
    "ADC_SERIES_DESCRIPTION",
    "ADC_WINDOW",
    "DerivedSeries",
    "adc_real_world_value_mapping",
    "build_adc_series",
    "build_computed_b_series",
]

ADC_SERIES_DESCRIPTION = "ADC (uint16, 10^-6 mm2/s) wbdwi"
ADC_WINDOW = (1000.0, 2000.0)  # centre, width in 10^-6 mm2/s
ADC_RWV_LABEL = "ADC"
_UINT16_MAX = 65535
_COMPUTED_B_TOP = 60000  # stored value of the brightest voxel of a computed-b series


@dataclass(frozen=True, slots=True)
class DerivedSeries:
    """One derived MR series: its datasets (one per slice, head first) and identity."""

    kind: str
    series_instance_uid: str
    series_description: str
    datasets: tuple[Dataset, ...]


def adc_real_world_value_mapping(
    value_range: tuple[int, int] | tuple[float, float],
) -> hd.pm.RealWorldValueMapping:
    """Real World Value Mapping of ADC in 10^-6 mm2/s (PS3.3 C.7.6.16.2.11).

    Identity mapping (slope 1, intercept 0), unit UCUM ``10-6.mm2/s`` (CID
    7277), quantity DCM 113041 "Apparent Diffusion Coefficient" (CID 7180).
    Integer ``value_range`` selects the integer attributes (derived MR),
    float selects the floating-point ones (Parametric Map).
    """
    return hd.pm.RealWorldValueMapping(
        lut_label=ADC_RWV_LABEL,
        lut_explanation="Apparent diffusion coefficient (mono-exponential)",
        unit=codes.UCUM._10EMinus6SquareMillimetersPerSecond,
        value_range=value_range,
        slope=1,
        intercept=0,
        quantity_definition=codes.DCM.ApparentDiffusionCoefficient,
    )


def _file_meta(sop_instance_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _source_image_sequence(refs: tuple[SourceRef, ...]) -> DicomSequence:
    items = []
    for ref in sorted(refs, key=lambda r: (r.b_value, r.sop_instance_uid)):
        item = Dataset()
        item.ReferencedSOPClassUID = ref.sop_class_uid
        item.ReferencedSOPInstanceUID = ref.sop_instance_uid
        if ref.frame_number is not None:
            item.ReferencedFrameNumber = ref.frame_number
        item.PurposeOfReferenceCodeSequence = [
            hd.sr.CodedConcept.from_code(codes.DCM.SourceImageForImageProcessingOperation)
        ]
        items.append(item)
    return DicomSequence(items)


def _series_template(
    ctx: WriterContext,
    *,
    series_uid: str,
    series_number: int,
    description: str,
    image_type: tuple[str, ...],
    derivation_description: str,
) -> Dataset:
    """Attributes shared by every slice of one derived series."""
    grid = ctx.grid
    when = ctx.content_datetime
    ds = Dataset()
    ds.update(ctx.patient_study)
    ds.SOPClassUID = MRImageStorage
    ds.InstanceCreationDate = when.strftime("%Y%m%d")
    ds.InstanceCreationTime = when.strftime("%H%M%S")
    # General Series
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = description
    ds.SeriesDate = ds.InstanceCreationDate
    ds.SeriesTime = ds.InstanceCreationTime
    ds.BodyPartExamined = ctx.body_part_examined
    ds.PatientPosition = ctx.mr_acquisition.get("PatientPosition", "HFS")
    # Frame of Reference
    ds.FrameOfReferenceUID = ctx.exam.frame_of_reference_uid
    ds.PositionReferenceIndicator = None
    # General Equipment
    ds.Manufacturer = ctx.identity.manufacturer
    ds.ManufacturerModelName = ctx.identity.model_name
    ds.SoftwareVersions = ctx.identity.software_version
    ds.DeviceSerialNumber = ctx.identity.device_serial_number
    if ctx.identity.institution_name:
        ds.InstitutionName = ctx.identity.institution_name
    ds.ContributingEquipmentSequence = ctx.contributing_equipment(derivation_description)
    # General Image
    ds.ContentDate = ds.InstanceCreationDate
    ds.ContentTime = ds.InstanceCreationTime
    ds.ImageType = list(image_type)
    ds.DerivationDescription = derivation_description
    ds.DerivationCodeSequence = [hd.sr.CodedConcept.from_code(codes.DCM.DiffusionImageAnalysis)]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    # Image Plane (PS3.3 C.7.6.2)
    ds.PixelSpacing = [f"{grid.pixel_spacing[0]:.6g}", f"{grid.pixel_spacing[1]:.6g}"]
    ds.ImageOrientationPatient = [f"{v:.8f}" for v in grid.orientation]
    ds.SliceThickness = f"{ctx.slice_thickness:.6g}"
    ds.SpacingBetweenSlices = f"{grid.slice_spacing:.6g}"
    # Image Pixel, MR Image
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = grid.rows
    ds.Columns = grid.columns
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.update(ctx.mr_acquisition)
    return ds


def _slice_datasets(
    ctx: WriterContext,
    kind: str,
    template: Dataset,
    stored: NDArray[np.uint16],
) -> tuple[Dataset, ...]:
    grid = ctx.grid
    normal = np.cross(grid.orientation[:3], grid.orientation[3:])
    datasets = []
    for z in range(grid.slices):
        sop_uid = ctx.uids.uid(kind, "instance", z)
        ds = Dataset()
        ds.update(template)
        ds.file_meta = _file_meta(sop_uid)
        ds.SOPInstanceUID = sop_uid
        ds.InstanceNumber = z + 1
        position = grid.positions[z]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.SliceLocation = f"{float(np.dot(position, normal)):.6f}"
        ds.SourceImageSequence = _source_image_sequence(ctx.sources_by_slice[z])
        plane = np.ascontiguousarray(stored[z])
        ds.PixelData = plane.tobytes()
        datasets.append(ds)
    return tuple(datasets)


def build_adc_series(ctx: WriterContext, result: ProcessingResult) -> DerivedSeries:
    """The ADC map as uint16 MR images in 10^-6 mm2/s (invalid voxels 0).

    Raises
    ------
    ResultGeometryError
        When the ADC map is not on the exam grid or not finite.
    """
    adc = np.asarray(result.adc)
    check_on_grid("ADC map", adc, ctx.grid)
    if not np.all(np.isfinite(adc)):
        raise ResultGeometryError("ADC map holds NaN or infinite values; expected 0 if invalid")
    valid = np.asarray(result.adc_valid, dtype=bool)
    check_on_grid("ADC validity mask", valid, ctx.grid)
    stored = np.where(valid, np.clip(np.rint(adc), 0, _UINT16_MAX), 0).astype(np.uint16)
    series_uid = ctx.uids.uid("adc", "series")
    b_text = "/".join(f"{b:g}" for b in ctx.exam.b_values)
    derivation = f"ADC (10-6 mm2/s), mono-exponential fit of b {b_text} s/mm2"
    template = _series_template(
        ctx,
        series_uid=series_uid,
        series_number=ctx.series_number("adc"),
        description=ADC_SERIES_DESCRIPTION,
        image_type=("DERIVED", "SECONDARY", "ADC"),
        derivation_description=derivation,
    )
    template.WindowCenter = f"{ADC_WINDOW[0]:g}"
    template.WindowWidth = f"{ADC_WINDOW[1]:g}"
    template.WindowCenterWidthExplanation = "ADC 10^-6 mm2/s"
    template.RealWorldValueMappingSequence = [adc_real_world_value_mapping((0, _UINT16_MAX))]
    return DerivedSeries(
        kind="adc",
        series_instance_uid=series_uid,
        series_description=str(template.SeriesDescription),
        datasets=_slice_datasets(ctx, "adc", template, stored),
    )


def build_computed_b_series(
    ctx: WriterContext,
    computed: ComputedImage,
    body_mask: NDArray[np.bool_],
) -> DerivedSeries:
    """One computed high-b image as uint16 MR images with one scale for the whole series.

    The window spans 0 to the 99.5th centile inside the body so that the
    bright lesions stand out the way readers expect of a high-b image.

    Raises
    ------
    ResultGeometryError
        When the image is not on the exam grid, or not finite, or negative.
    """
    image = np.asarray(computed.image, dtype=np.float64)
    name = f"computed b{computed.b_value:g} image"
    check_on_grid(name, image, ctx.grid)
    check_on_grid("body mask", np.asarray(body_mask), ctx.grid)
    if not np.all(np.isfinite(image)):
        raise ResultGeometryError(f"{name} holds NaN or infinite values")
    if image.min() < 0:
        raise WriterError(f"{name} has negative signal ({image.min():g}); expected >= 0")
    top = float(image.max())
    slope = top / _COMPUTED_B_TOP if top > 0 else 1.0
    stored = np.clip(np.rint(image / slope), 0, _UINT16_MAX).astype(np.uint16)
    inside = image[np.asarray(body_mask, dtype=bool)]
    high = float(np.percentile(inside, 99.5)) if inside.size else top
    high = high if high > 0 else 1.0

    kind = computed_series_kind(computed.b_value)
    series_uid = ctx.uids.uid(kind, "series")
    b_text = "/".join(f"{b:g}" for b in ctx.exam.b_values)
    derivation = f"Computed b={computed.b_value:g} s/mm2 from b {b_text} s/mm2 (mono-exponential)"
    template = _series_template(
        ctx,
        series_uid=series_uid,
        series_number=ctx.series_number(kind),
        description=f"Computed b{computed.b_value:g} wbdwi",
        image_type=("DERIVED", "SECONDARY", "DIFFUSION", "COMPUTED_B"),
        derivation_description=derivation,
    )
    template.WindowCenter = f"{high / slope / 2:.6g}"
    template.WindowWidth = f"{high / slope:.6g}"
    template.RealWorldValueMappingSequence = [
        hd.pm.RealWorldValueMapping(
            lut_label=f"b{computed.b_value:g}"[:16],
            lut_explanation=f"Computed b={computed.b_value:g} s/mm2 signal, source units",
            unit=codes.UCUM.ArbitraryUnit,
            value_range=(0, _UINT16_MAX),
            slope=slope,
            intercept=0,
        )
    ]
    template.WindowCenterWidthExplanation = f"b{computed.b_value:g}"
    return DerivedSeries(
        kind=kind,
        series_instance_uid=series_uid,
        series_description=str(template.SeriesDescription),
        datasets=_slice_datasets(ctx, kind, template, stored),
    )
