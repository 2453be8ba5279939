"""Result writers: one module per DICOM object type.

=====================  ==========================================================
module                 object
=====================  ==========================================================
``common``             identity, deterministic UIDs, copied headers, exam geometry
``derived_mr``         ADC (uint16) and computed high-b images as MR Image Storage
``parametric_map``     ADC Parametric Map (float32, highdicom ``pm``)
``seg``                BINARY Segmentations: ADC classes, lesions (highdicom ``seg``)
``sr``                 TID 1500 Measurement Report (highdicom ``sr``)
``sr_comparison``      the report's comparison with earlier exams (issue 6)
``sr_quality``         the reliability verdict in the report and key images
``key_images``         RGB Secondary Capture key images (``rendering`` draws them)
=====================  ==========================================================

:func:`dicom_node.writers.write_results.write_results` runs them all for one exam.
"""

from dicom_node.writers.common import (
    ExamGrid,
    UidFactory,
    WriterContext,
    WriterIdentity,
)
from dicom_node.writers.derived_mr import DerivedSeries, build_adc_series, build_computed_b_series
from dicom_node.writers.errors import (
    EmptySegmentationError,
    ResultGeometryError,
    SourceReferenceError,
    WriterError,
)
from dicom_node.writers.key_images import KeyImage, build_key_images
from dicom_node.writers.parametric_map import build_parametric_map
from dicom_node.writers.seg import SegmentationOutput, SegmentInfo, build_segmentation
from dicom_node.writers.sr import build_measurement_report

__all__ = [
    "DerivedSeries",
    "EmptySegmentationError",
    "ExamGrid",
    "KeyImage",
    "ResultGeometryError",
    "SegmentInfo",
    "SegmentationOutput",
    "SourceReferenceError",
    "UidFactory",
    "WriterContext",
    "WriterError",
    "WriterIdentity",
    "build_adc_series",
    "build_computed_b_series",
    "build_key_images",
    "build_measurement_report",
    "build_parametric_map",
    "build_segmentation",
]
