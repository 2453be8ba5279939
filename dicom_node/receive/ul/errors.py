"""Errors of the DICOM Upper Layer acceptor.

Hierarchy
---------
::

    DicomNodeError
    +-- UpperLayerError              a protocol problem on one association
        +-- MalformedPduError        a PDU or item that does not follow PS3.8 9.3:
        |                            answered with A-ABORT carrying ``abort_reason``
        +-- MalformedCommandError    a DIMSE command set that cannot be decoded
        +-- ConnectionClosedError    the peer closed the TCP connection
"""

from __future__ import annotations

from dicom_node.errors import DicomNodeError

__all__ = [
    "ConnectionClosedError",
    "MalformedCommandError",
    "MalformedPduError",
    "UpperLayerError",
]


class UpperLayerError(DicomNodeError):
    """A protocol problem on one association (the association ends, nothing else)."""


class MalformedPduError(UpperLayerError):
    """A PDU that does not follow PS3.8 9.3.

    Parameters
    ----------
    message
        What is wrong, naming the PDU or item.
    abort_reason
        The A-ABORT reason/diag. to send (PS3.8 9.3.8): 1 unrecognized PDU,
        2 unexpected PDU, 4 unrecognized PDU parameter, 5 unexpected PDU
        parameter, 6 invalid PDU parameter value.
    """

    def __init__(self, message: str, abort_reason: int = 6) -> None:
        super().__init__(message)
        self.abort_reason = abort_reason


class MalformedCommandError(UpperLayerError):
    """A DIMSE command set that cannot be decoded (PS3.7 6.3, 9.3, 10.3)."""


class ConnectionClosedError(UpperLayerError):
    """The peer closed the connection (or it broke) while a PDU was expected."""
