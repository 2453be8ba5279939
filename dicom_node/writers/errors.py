"""Errors raised by the result writers.

Every writer failure is a :class:`~dicom_node.errors.WriterError` (itself a
:class:`~dicom_node.errors.DicomNodeError`); the message names the object
being written and the reason, so that a failed job records something a person
can act on.

Hierarchy
---------
::

    WriterError
    +-- ResultGeometryError      an array is not on the exam grid, or holds NaN
    +-- EmptySegmentationError   a SEG was asked for an empty tumour mask
    +-- SourceReferenceError     source references missing, incomplete or unreadable
"""

from __future__ import annotations

from dicom_node.errors import WriterError

__all__ = [
    "EmptySegmentationError",
    "ResultGeometryError",
    "SourceReferenceError",
    "WriterError",
]


class ResultGeometryError(WriterError):
    """An array does not lie on the exam grid (shape or affine disagree) or is not finite."""


class EmptySegmentationError(WriterError):
    """A Segmentation was requested for a mask with no voxels set.

    An empty tumour mask is a valid result (no disease segmented); it is
    reported in the SR, and no SEG is written.
    """


class SourceReferenceError(WriterError):
    """The exam's source references are missing, incomplete or unreadable."""
