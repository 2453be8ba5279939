"""Derived MR series: ADC uint16 with its value mapping, computed-b with one scale per series."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import MRImageStorage

from dicom_node.writers import (
    ResultGeometryError,
    WriterContext,
    WriterError,
    build_adc_series,
    build_computed_b_series,
)
from dicom_node.writers.encoding import encode_series
from processing.results import ComputedImage, ProcessingResult
from tests.helpers.writer_fixtures import SyntheticExam


def _round_trip(dataset: pydicom.Dataset, tmp_path: Path) -> pydicom.Dataset:
    path = tmp_path / f"{dataset.SOPInstanceUID}.dcm"
    dataset.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


def test_adc_series_stores_adc_in_micrometres_squared_per_second(
    ctx: WriterContext, result: ProcessingResult, synthetic: SyntheticExam, tmp_path: Path
) -> None:
    series = build_adc_series(ctx, result)
    assert len(series.datasets) == synthetic.exam.shape[1]
    stack = np.stack([_round_trip(ds, tmp_path).pixel_array for ds in series.datasets])
    expected = np.where(result.adc_valid, np.rint(result.adc), 0)
    np.testing.assert_array_equal(stack, expected)
    first = _round_trip(series.datasets[0], tmp_path)
    assert first.SOPClassUID == MRImageStorage
    assert list(first.ImageType) == ["DERIVED", "SECONDARY", "ADC"]
    assert float(first.WindowCenter) == 1000 and float(first.WindowWidth) == 2000
    mapping = first.RealWorldValueMappingSequence[0]
    assert mapping.MeasurementUnitsCodeSequence[0].CodeValue == "10-6.mm2/s"
    assert float(mapping.RealWorldValueSlope) == 1.0
    assert float(mapping.RealWorldValueIntercept) == 0.0
    quantity = mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0]
    assert (quantity.CodeValue, quantity.CodingSchemeDesignator) == ("113041", "DCM")
    assert first.DerivationCodeSequence[0].CodeValue == "129105"
    assert "DiffusionBValue" not in first
    assert first.PatientName == "Doe^Jane"
    assert first.StudyInstanceUID == synthetic.exam.study_instance_uid
    assert first.FrameOfReferenceUID == synthetic.exam.frame_of_reference_uid
    assert first.BodyPartExamined == "WHOLEBODY"


def test_each_slice_references_every_b_value_of_its_position(
    ctx: WriterContext, result: ProcessingResult, synthetic: SyntheticExam
) -> None:
    series = build_adc_series(ctx, result)
    for z, dataset in enumerate(series.datasets):
        referenced = {item.ReferencedSOPInstanceUID for item in dataset.SourceImageSequence}
        expected = {ref.sop_instance_uid for ref in synthetic.exam.sources if ref.slice_index == z}
        assert referenced == expected
        assert len(expected) == len(synthetic.exam.b_values)
        purpose = dataset.SourceImageSequence[0].PurposeOfReferenceCodeSequence[0]
        assert purpose.CodeValue == "121322"
        source = pydicom.dcmread(next(iter(ctx.sources_by_slice[z])).path, stop_before_pixels=True)
        np.testing.assert_allclose(
            [float(v) for v in dataset.ImagePositionPatient],
            [float(v) for v in source.ImagePositionPatient],
            atol=1e-5,
        )
        assert int(dataset.InstanceNumber) == z + 1


def test_computed_b_series_has_one_scale_and_names_the_b_value(
    ctx: WriterContext, result: ProcessingResult, tmp_path: Path
) -> None:
    computed = result.computed[0]
    series = build_computed_b_series(ctx, computed, result.body_mask)
    assert "b1000" in series.series_description
    slopes = set()
    stack = []
    for dataset in series.datasets:
        back = _round_trip(dataset, tmp_path)
        mapping = back.RealWorldValueMappingSequence[0]
        slopes.add(float(mapping.RealWorldValueSlope))
        stack.append(back.pixel_array * float(mapping.RealWorldValueSlope))
        assert "b1000" in back.SeriesDescription
        assert list(back.ImageType)[:3] == ["DERIVED", "SECONDARY", "DIFFUSION"]
        assert "RescaleSlope" not in back
    assert len(slopes) == 1
    slope = slopes.pop()
    np.testing.assert_allclose(np.stack(stack), computed.image, atol=slope / 2 + 1e-6)
    assert len({ds.SeriesInstanceUID for ds in series.datasets}) == 1


def test_off_grid_or_non_finite_maps_are_refused(
    ctx: WriterContext, result: ProcessingResult
) -> None:
    with pytest.raises(ResultGeometryError, match=r"ADC map has shape \(16, 40, 47\)"):
        build_adc_series(ctx, dataclasses.replace(result, adc=result.adc[:, :, :47]))
    adc = result.adc.copy()
    adc[2, 3, 4] = np.nan
    with pytest.raises(ResultGeometryError, match="NaN"):
        build_adc_series(ctx, dataclasses.replace(result, adc=adc))
    transposed = ComputedImage(1000.0, np.ascontiguousarray(result.computed[0].image[:, :40, :40]))
    with pytest.raises(ResultGeometryError, match="computed b1000 image has shape"):
        build_computed_b_series(ctx, transposed, result.body_mask)


def test_series_encoding_is_byte_identical_to_pydicom(
    ctx: WriterContext, result: ProcessingResult, tmp_path: Path
) -> None:
    for series in (
        build_adc_series(ctx, result),
        build_computed_b_series(ctx, result.computed[0], result.body_mask),
    ):
        encoded = list(encode_series(series.datasets))
        assert len(encoded) == len(series.datasets)
        for dataset, data in zip(series.datasets, encoded, strict=True):
            path = tmp_path / "reference.dcm"
            dataset.save_as(path, enforce_file_format=True)
            assert data == path.read_bytes()


def test_series_encoding_refuses_other_transfer_syntaxes(
    ctx: WriterContext, result: ProcessingResult
) -> None:
    series = build_adc_series(ctx, result)
    dataset = series.datasets[0]
    dataset.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    try:
        with pytest.raises(WriterError, match="Explicit VR Little Endian only"):
            list(encode_series(series.datasets))
    finally:
        dataset.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian


def test_series_encoding_keeps_non_ascii_names_in_the_specific_character_set(
    ctx: WriterContext, result: ProcessingResult, tmp_path: Path
) -> None:
    series = build_adc_series(ctx, result)
    name = "Διονυσίου^Ελένη"
    for dataset in series.datasets:
        dataset.SpecificCharacterSet = "ISO_IR 192"
        dataset.PatientName = name
    encoded = list(encode_series(series.datasets))
    path = tmp_path / "greek.dcm"
    path.write_bytes(encoded[0])
    assert str(pydicom.dcmread(path).PatientName) == name
    series.datasets[0].save_as(tmp_path / "reference.dcm", enforce_file_format=True)
    assert encoded[0] == (tmp_path / "reference.dcm").read_bytes()
