"""A DICOM Upper Layer acceptor (PS3.8) in plain Python sockets, for the node's receive side.

- :mod:`~dicom_node.receive.ul.pdu`: A-ASSOCIATE, P-DATA-TF, A-RELEASE and A-ABORT PDUs;
- :mod:`~dicom_node.receive.ul.dimse`: DIMSE command sets (implicit VR little endian);
- :mod:`~dicom_node.receive.ul.association`: one association (negotiation, reassembly,
  dispatch to a :class:`~dicom_node.receive.ul.association.DimseServiceUser`);
- :mod:`~dicom_node.receive.ul.server`: the listener, a thread per association, TLS.

The sending side of the node (export, MPPS SCU, ``wbdwi send``) uses pynetdicom.
"""

from dicom_node.receive.ul.association import (
    AcceptedContext,
    Association,
    AssociationEnd,
    AssociationLimits,
    DataSetSink,
    DimseReply,
    DimseRequest,
    DimseServiceUser,
    Rejection,
    negotiate_contexts,
)
from dicom_node.receive.ul.pdu import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from dicom_node.receive.ul.server import AssociationServer

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "AcceptedContext",
    "Association",
    "AssociationEnd",
    "AssociationLimits",
    "AssociationServer",
    "DataSetSink",
    "DimseReply",
    "DimseRequest",
    "DimseServiceUser",
    "Rejection",
    "negotiate_contexts",
]
