"""The one exception hierarchy for everything on the DICOM side of the node.

Every error raised on purpose by :mod:`dicom_node` derives from
:class:`DicomNodeError`, so that the service can catch the family in one place,
record the reason on the failed job and keep the job's input.

Assembly errors (:class:`AssemblyError` and below) name the series and the
reason in their message, for example::

    series 1.2.3 (DWI station 2 b=900): 48 slices but 50 at b=50 (missing positions ...)

The class tells *what kind* of problem it is (a single b-value, mixed
orientations, ...), the message tells *where*. Every error of the package is
defined here, except the subtrees of the subpackages with their own
``errors`` module (``writers``, ``ul``), which derive from a class here and are
drawn below; a new error joins this tree rather than starting a second one
(``tests/unit/test_error_trees.py`` checks both).

Hierarchy
---------
::

    DicomNodeError
    +-- AssemblyError
    |   +-- NoDiffusionSeriesError     no DWI series among the input
    |   +-- MultipleStudiesError       input spans more than one study / frame of reference
    |   +-- MissingBValueError         a diffusion image with no b-value in any known place
    |   +-- SingleBValueError          fewer than two distinct b-values
    |   +-- MixedOrientationError      image orientations differ
    |   +-- GeometryMismatchError      matrix, pixel or slice spacing, in-plane offset differ
    |   |   +-- DuplicateSliceError    two images at one position that cannot be told apart
    |   +-- MissingSlicesError         a station lacks slices (or a whole b-value)
    |   +-- StationGapError            stations leave a gap along the body axis
    |   +-- ZeroSignalError            a b-value stack with no signal at all
    |   +-- UndecodablePixelDataError  truncated pixel data, unsupported transfer syntax
    |   +-- UnreadableInstanceError    a DICOM file whose header cannot be parsed
    +-- SendError
    |   +-- AssociationFailedError     the peer could not be reached or rejected us
    |   |   +-- AssociationRejectedError   the peer refused the association (AE titles,
    |   |   |                              contexts): a configuration problem
    |   |   +-- PeerUnreachableError       no connection (host down, port closed, TLS)
    |   |   +-- AssociationAbortedError    connected, but aborted during the negotiation
    |   +-- ReactorPauseTimeoutError   pynetdicom's reactor did not pause before an exchange
    +-- TlsConfigurationError          a certificate, key or CA bundle cannot be used
    +-- PriorsError                    a query or retrieve of priors failed
    +-- InvalidInstanceError           a received data set cannot be understood
    |   +-- InstanceRefusedError       refused before it is acknowledged (status, metric reason)
    +-- SpoolWriteError                the spool could not store an instance
    +-- MalformedDataSetError          an encoded data set breaks PS3.5 (a ValueError)
    +-- StudyHeaderError               the exam's study date cannot be read
    +-- ReportReadError                a Measurement Report cannot become an exam summary
    +-- SegmentationReadError          a received SEG cannot be used as a correction
    |   +-- SegmentationReferenceError     it refers to another study, series or frame
    |   |                                  of reference than the exam
    |   +-- SegmentationGeometryError      its frames do not lie on the exam's grid
    +-- WriterError                    a result object cannot be written
    |   |                              (dicom_node.writers.errors:)
    |   +-- ResultGeometryError        an array is off the exam grid or not finite
    |   +-- EmptySegmentationError     a SEG without any segmented voxel
    |   +-- SourceReferenceError       the exam's source references are missing
    +-- UpperLayerError                a protocol problem on one association
        |                              (dicom_node.receive.ul.errors:)
        +-- MalformedPduError          a PDU breaks PS3.8 (carries the A-ABORT reason)
        +-- MalformedCommandError      a DIMSE command set cannot be decoded
        +-- ConnectionClosedError      the peer closed the connection
"""

from __future__ import annotations

__all__ = [
    "AssemblyError",
    "AssociationAbortedError",
    "AssociationFailedError",
    "AssociationRejectedError",
    "DicomNodeError",
    "DuplicateSliceError",
    "GeometryMismatchError",
    "InstanceRefusedError",
    "InvalidInstanceError",
    "MalformedDataSetError",
    "MissingBValueError",
    "MissingSlicesError",
    "MixedOrientationError",
    "MultipleStudiesError",
    "NoDiffusionSeriesError",
    "PeerUnreachableError",
    "PriorsError",
    "ReactorPauseTimeoutError",
    "ReportReadError",
    "SegmentationGeometryError",
    "SegmentationReadError",
    "SegmentationReferenceError",
    "SendError",
    "SingleBValueError",
    "SpoolWriteError",
    "StationGapError",
    "StudyHeaderError",
    "TlsConfigurationError",
    "UndecodablePixelDataError",
    "UnreadableInstanceError",
    "WriterError",
    "ZeroSignalError",
]


class DicomNodeError(Exception):
    """Base class of every error raised on purpose by :mod:`dicom_node`."""


class AssemblyError(DicomNodeError):
    """The instances of a study cannot be assembled into one DWI exam.

    Parameters
    ----------
    reason
        What is wrong, in words a radiographer or IT person can act on.
    series_uid
        The SeriesInstanceUID concerned, when the problem belongs to one series.
    series_description
        Its SeriesDescription, shown next to the UID for humans.

    Attributes
    ----------
    reason, series_uid, series_description
        As given, so that the service can record them in structured form.
    """

    def __init__(
        self,
        reason: str,
        *,
        series_uid: str | None = None,
        series_description: str = "",
    ) -> None:
        self.reason = reason
        self.series_uid = series_uid
        self.series_description = series_description
        super().__init__(self._format())

    def _format(self) -> str:
        if self.series_uid is None:
            return self.reason
        label = f"series {self.series_uid}"
        if self.series_description:
            label += f" ({self.series_description})"
        return f"{label}: {self.reason}"

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments do not survive the default pickling of exceptions
        # (multiprocessing workers send errors back pickled).
        return (
            _rebuild_assembly_error,
            (type(self), self.reason, self.series_uid, self.series_description),
        )


def _rebuild_assembly_error(
    cls: type[AssemblyError], reason: str, series_uid: str | None, series_description: str
) -> AssemblyError:
    return cls(reason, series_uid=series_uid, series_description=series_description)


class NoDiffusionSeriesError(AssemblyError):
    """None of the input series is a diffusion-weighted acquisition."""


class MultipleStudiesError(AssemblyError):
    """The input mixes studies or frames of reference that cannot share one grid."""


class MissingBValueError(AssemblyError):
    """A diffusion image carries no b-value in any of the places the node reads."""


class SingleBValueError(AssemblyError):
    """Only one distinct b-value: no ADC can be computed."""


class MixedOrientationError(AssemblyError):
    """Images of the exam have different ImageOrientationPatient."""


class GeometryMismatchError(AssemblyError):
    """Stations or b-value stacks disagree on matrix, pixel spacing or slice spacing."""


class DuplicateSliceError(GeometryMismatchError):
    """Two images share one position and b-value and nothing tells which station each is."""


class MissingSlicesError(AssemblyError):
    """A station lacks slices for one b-value, or lacks a b-value entirely."""


class StationGapError(AssemblyError):
    """Consecutive stations do not touch: part of the body was not imaged."""


class ZeroSignalError(AssemblyError):
    """A b-value stack of a series has no signal (all pixels zero)."""


class UndecodablePixelDataError(AssemblyError):
    """Pixel data is truncated, malformed or in a transfer syntax that cannot be decoded."""


class UnreadableInstanceError(AssemblyError):
    """A file that claims to be DICOM (``DICM`` preamble) but whose header cannot be parsed."""


class SendError(DicomNodeError):
    """Sending instances to a remote application entity failed."""


class AssociationFailedError(SendError):
    """The association could not be established (unreachable, rejected or aborted)."""


class AssociationRejectedError(AssociationFailedError):
    """The peer answered A-ASSOCIATE-RJ: wrong AE titles or no common context.

    Retrying soon does not help; someone has to fix the configuration.

    Parameters
    ----------
    message
        The error message (peer, calling AE title, reason).
    reason
        The peer's result, source and reason, in words; empty when unknown.
    hint
        What to fix, on which side (from the reason); empty when unknown.
    """

    def __init__(self, message: str, *, reason: str = "", hint: str = "") -> None:
        super().__init__(message)
        self.reason = reason
        self.hint = hint


class PeerUnreachableError(AssociationFailedError):
    """No connection to the peer: host down, port closed, or the TLS handshake failed."""


class AssociationAbortedError(AssociationFailedError):
    """The peer was reached but the association was aborted during the negotiation."""


class ReactorPauseTimeoutError(SendError):
    """pynetdicom's association reactor did not pause before an exchange.

    See :mod:`dicom_node.scu.association_guard`; the association should be aborted.
    """


class WriterError(DicomNodeError):
    """A result object (PM, derived MR, SEG, SR, key image) cannot be written.

    Subclasses live in :mod:`dicom_node.writers.errors`.
    """


class SegmentationReadError(DicomNodeError):
    """A received Segmentation cannot be used as a reader's correction (unreadable, no segment).

    The message names the SEG (its SOP Instance UID or file) and the reason.
    """


class SegmentationReferenceError(SegmentationReadError):
    """The SEG was drawn on another study, series or frame of reference than the exam."""


class SegmentationGeometryError(SegmentationReadError):
    """The SEG's frames do not lie on the exam's grid (orientation, spacing, position)."""


class MalformedDataSetError(DicomNodeError, ValueError):
    """The encoded data set does not follow PS3.5 (truncated, bad VR, bad delimiters)."""


class TlsConfigurationError(DicomNodeError):
    """A certificate, key or CA bundle cannot be used (missing, unreadable, mismatched)."""


class PriorsError(DicomNodeError):
    """A query or retrieve of priors failed; the message names the peer and the status."""


class StudyHeaderError(DicomNodeError):
    """The exam's study date cannot be read; the message names the file and the reason."""


class InvalidInstanceError(DicomNodeError):
    """A received data set cannot be understood (bad UIDs, unparsable header)."""


class InstanceRefusedError(InvalidInstanceError):
    """A data set that must not be acknowledged: the C-STORE status and a metric label.

    ``reason`` is a short stable word (``truncated``, ``malformed``,
    ``sop_class``, ``sop_instance``, ``pixel_data``, ``pixel_module``,
    ``too_large``, ``inflation``) for the ``wbdwi_instances_refused_total`` counter.
    """

    def __init__(self, message: str, *, status: int, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class SpoolWriteError(DicomNodeError):
    """The spool could not store an instance (disk full, permissions, I/O error)."""


class ReportReadError(DicomNodeError):
    """A Measurement Report cannot be turned into an exam summary (says which item and why)."""
