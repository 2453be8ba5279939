"""ADC as a highdicom Parametric Map (float32, 10^-6 mm2/s).

The quantitative form of the ADC map for AI tools and workstations
(PS3.3 A.75 Parametric Map IOD). Frames are pixel-aligned with the derived MR
series on the composed exam grid (the *geometric source*: one series that
covers the whole body, slice for slice), because highdicom requires source
images from a single series with one geometry while the exam was composed from
several station series. The map references **only that series** (Referenced
Series Sequence, derivation images of each frame): OHIF takes the first
referenced series as the one to overlay, and the Common Instance Reference
Module (PS3.3 C.12.2) would have to list every series that the Source Image
Sequence names. The original b-value images are reached through the derived
images, whose Source Image Sequence names them slice by slice.

Display: window centre 1000, width 2000 (10^-6 mm2/s), with the Window Center
& Width Explanation as a one-item list (highdicom 0.28 splits a plain string
into characters: ``A\\D\\C``). OHIF 3.13 ignores both for a float map: its
Parametric Map overlay multiplies the stored values by 100 and windows them
over their full range (hard-coded in ``extension-cornerstone-dicom-pmap``); the
uint16 ADC series is the one to read values from in a viewer.

Real World Value Mapping: identity, unit UCUM ``10-6.mm2/s`` (CID 7277),
quantity DCM 113041 "Apparent Diffusion Coefficient", measurement method
DCM 113250 "Mono-exponential diffusion model", and the b-values used (DCM
113240). Derivation DCM 129105 "Diffusion image analysis". Float pixel data
is written uncompressed (the only choice for float in DICOM).
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ParametricMapStorage

from dicom_node.writers.common import WriterContext, check_on_grid, set_dimension_organization_uid
from dicom_node.writers.derived_mr import ADC_WINDOW, adc_real_world_value_mapping
from dicom_node.writers.errors import ResultGeometryError, WriterError
from processing.results import ProcessingResult

__all__ = [
    "PM_SERIES_DESCRIPTION",
    "build_parametric_map",
    "check_parametric_map_inputs",
    "parametric_map_reference",
]

PM_SERIES_DESCRIPTION = "ADC map (float, 10^-6 mm2/s) wbdwi"

_SECONDS_PER_MM2 = Code("s/mm2", "UCUM", "s/mm2")


def _quantity_item(name: Code, value_type: str) -> Dataset:
    item = Dataset()
    item.ValueType = value_type
    item.ConceptNameCodeSequence = [hd.sr.CodedConcept.from_code(name)]
    return item


def _adc_mapping(adc: np.ndarray, b_values: Sequence[float]) -> hd.pm.RealWorldValueMapping:
    low, high = float(adc.min()), float(adc.max())
    if high <= low:
        high = low + 1.0
    mapping = adc_real_world_value_mapping((low, high))
    # Items after highdicom's "Quantity" item (PS3.3 C.7.6.16.2.11.1.2): plain
    # datasets, because the ValueType must be NUMERIC (not the SR-style NUM).
    quantity_items = mapping["QuantityDefinitionSequence"].value
    method = _quantity_item(codes.SCT.MeasurementMethod, "CODE")
    method.ConceptCodeSequence = [
        hd.sr.CodedConcept.from_code(codes.DCM.MonoExponentialDiffusionModel)
    ]
    quantity_items.append(method)
    for b_value in b_values:
        item = _quantity_item(codes.DCM.SourceImageDiffusionBValue, "NUMERIC")
        item.NumericValue = f"{b_value:g}"
        item.MeasurementUnitsCodeSequence = [hd.sr.CodedConcept.from_code(_SECONDS_PER_MM2)]
        quantity_items.append(item)
    return mapping


def check_parametric_map_inputs(
    ctx: WriterContext,
    result: ProcessingResult,
    geometric_source: Sequence[Dataset],
) -> np.ndarray:
    """The ADC map, after the checks of :func:`build_parametric_map` (same errors)."""
    adc = np.asarray(result.adc)
    check_on_grid("ADC map", adc, ctx.grid)
    if len(geometric_source) != ctx.grid.slices:
        raise ResultGeometryError(
            f"Parametric Map needs one source image per slice ({ctx.grid.slices}), "
            f"got {len(geometric_source)}"
        )
    if not np.all(np.isfinite(adc)):
        raise ResultGeometryError("ADC map holds NaN or infinite values; expected 0 if invalid")
    return adc


def parametric_map_reference(ctx: WriterContext, geometric_source: Sequence[Dataset]) -> Dataset:
    """What other objects cite of the Parametric Map, before it is built.

    The SOP Class, SOP Instance, Study and Series Instance UIDs that
    :func:`build_parametric_map` gives it (the SR's evidence and references).
    """
    reference = Dataset()
    reference.SOPClassUID = ParametricMapStorage
    reference.SOPInstanceUID = ctx.uids.uid("adc-pm", "instance")
    reference.StudyInstanceUID = geometric_source[0].StudyInstanceUID
    reference.SeriesInstanceUID = ctx.uids.uid("adc-pm", "series")
    return reference


def build_parametric_map(
    ctx: WriterContext,
    result: ProcessingResult,
    geometric_source: Sequence[Dataset],
) -> hd.pm.ParametricMap:
    """Build the ADC Parametric Map.

    Parameters
    ----------
    ctx
        The shared writer context.
    result
        Processing result; ``adc`` (um2/s = 10^-6 mm2/s) and ``adc_valid`` are used.
    geometric_source
        One derived MR dataset per slice of the exam grid, head first (a series
        from :mod:`dicom_node.writers.derived_mr`).

    Raises
    ------
    ResultGeometryError
        When the ADC map is not on the exam grid or the geometric source does
        not have one image per slice.
    """
    adc = check_parametric_map_inputs(ctx, result, geometric_source)
    valid = np.asarray(result.adc_valid, dtype=bool)
    pixels = np.where(valid, adc, 0.0).astype(np.float32)
    b_used = [b for b in ctx.exam.b_values]
    try:
        pm = hd.pm.ParametricMap(
            source_images=list(geometric_source),
            pixel_array=pixels,
            series_instance_uid=ctx.uids.uid("adc-pm", "series"),
            series_number=ctx.series_number("adc-pm"),
            sop_instance_uid=ctx.uids.uid("adc-pm", "instance"),
            instance_number=1,
            manufacturer=ctx.identity.manufacturer,
            manufacturer_model_name=ctx.identity.model_name,
            software_versions=ctx.identity.software_version,
            device_serial_number=ctx.identity.device_serial_number,
            contains_recognizable_visual_features=False,
            real_world_value_mappings=[_adc_mapping(pixels, b_used)],
            voi_lut_transformations=[
                hd.VOILUTTransformation(
                    # lists of one: highdicom 0.28 splits a plain string explanation
                    # into characters, and wants as many centres as explanations
                    window_center=[ADC_WINDOW[0]],
                    window_width=[ADC_WINDOW[1]],
                    window_explanation=["ADC 10^-6 mm2/s"],
                )
            ],
            content_label="ADC",
            content_description="Apparent diffusion coefficient, 10-6 mm2/s",
            image_flavor=hd.pm.ImageFlavorValues.VOLUME,
            derived_pixel_contrast=hd.pm.DerivedPixelContrastValues.QUANTITY,
            derivation=codes.DCM.DiffusionImageAnalysis,
            contributing_equipment=ctx.contributing_equipment(
                "ADC map (mono-exponential fit) on the composed whole-body grid"
            ),
        )
    except ValueError as exc:
        raise WriterError(f"Parametric Map could not be built: {exc}") from exc
    pm.SeriesDescription = PM_SERIES_DESCRIPTION
    pm.BodyPartExamined = ctx.body_part_examined
    set_dimension_organization_uid(pm, ctx.uids.uid("adc-pm", "dimension-organization"))
    ctx.stamp_series(pm)
    return pm
