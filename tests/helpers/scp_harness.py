"""The node's receiver in-process on a free port, and a raw DICOM peer that speaks PDUs.

:func:`running_receiver` starts :class:`~dicom_node.receive.scp.DicomReceiver` with a
real SQLite job store and spool under a test folder. :class:`RawPeer` sends
hand-built PDUs (via the codec under test and by hand) so that fragmentation,
PDU limits and malformed input can be driven byte by byte.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage

from dicom_node.receive.scp import DicomReceiver, ReceiverConfig
from dicom_node.receive.spool import Spool
from dicom_node.receive.ul.dimse import encode_command
from dicom_node.receive.ul.pdu import (
    A_ASSOCIATE_AC,
    AssociationRequest,
    PresentationContextProposal,
    PresentationContextResult,
    encode_associate_rq,
    encode_p_data,
    encode_release_rq,
    iter_pdvs,
    parse_associate_ac,
)
from service.jobstore import SqliteJobStore

__all__ = [
    "RawPeer",
    "encode_data_set",
    "mr_data_set",
    "running_receiver",
    "store_command",
]


@contextmanager
def running_receiver(
    workdir: Path, config: ReceiverConfig | None = None, **changes: object
) -> Iterator[tuple[DicomReceiver, SqliteJobStore]]:
    """A started receiver on 127.0.0.1 and a free port, stopped at the end."""
    base = config or ReceiverConfig(ae_title="WBDWI", port=0, bind_address="127.0.0.1")
    store = SqliteJobStore(workdir / "jobs.sqlite")
    receiver = DicomReceiver(
        replace(base, **changes),  # type: ignore[arg-type]
        Spool(workdir / "spool"),
        store,
    )
    receiver.start()
    try:
        yield receiver, store
    finally:
        receiver.stop(grace_seconds=1)
        store.close()


def mr_data_set(sop_uid: str, *, study: str = "1.2.826.1", series: str = "1.2.826.1.1") -> Dataset:
    """A small MR image data set."""
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SeriesDescription = "DWI"
    ds.Modality = "MR"
    ds.Rows = 4
    ds.Columns = 4
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(32))
    return ds


def encode_data_set(ds: Dataset, *, implicit: bool = False) -> bytes:
    """``ds`` encoded little endian, explicit or implicit VR."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = implicit
    write_dataset(buffer, ds)
    return buffer.getvalue()


def store_command(message_id: int, sop_uid: str, sop_class: str = MRImageStorage) -> bytes:
    """A C-STORE-RQ command set."""
    return encode_command(
        {0x0002: sop_class, 0x0100: 0x0001, 0x0110: message_id, 0x0700: 0, 0x0800: 0x0000,
         0x1000: sop_uid}
    )  # fmt: skip


class RawPeer:
    """A TCP client that exchanges whole PDUs with the node."""

    def __init__(self, port: int, *, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.results: list[PresentationContextResult] = []
        self.peer_max_pdu = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _exact(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = self.sock.recv(count - len(data))
            if not chunk:
                raise ConnectionError(f"closed after {len(data)} of {count} bytes")
            data += chunk
        return data

    def read_pdu(self) -> tuple[int, bytes]:
        header = self._exact(6)
        pdu_type, _, length = struct.unpack(">BBI", header)
        return pdu_type, self._exact(length)

    def at_eof(self) -> bool:
        """True when the node closed the connection (reads until EOF)."""
        try:
            while self.sock.recv(65536):
                pass
        except ConnectionResetError:
            return True
        return True

    def associate(
        self,
        contexts: Sequence[PresentationContextProposal] = (),
        *,
        calling: str = "SCANNER",
        called: str = "WBDWI",
        max_pdu: int = 0,
        protocol_version: int = 1,
        application_context: str = "1.2.840.10008.3.1.1.1",
    ) -> tuple[int, bytes]:
        """Send an A-ASSOCIATE-RQ; returns the answer PDU (results kept when accepted)."""
        proposals = tuple(contexts) or (
            PresentationContextProposal(
                1, MRImageStorage, (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
            ),
        )
        request = AssociationRequest(
            protocol_version=protocol_version,
            called_ae=called,
            calling_ae=calling,
            application_context=application_context,
            contexts=proposals,
            max_pdu_length=max_pdu,
        )
        self.send(encode_associate_rq(request))
        pdu_type, body = self.read_pdu()
        if pdu_type == A_ASSOCIATE_AC:
            self.results, self.peer_max_pdu = parse_associate_ac(body)
        return pdu_type, body

    def send_message(
        self, context_id: int, command: bytes, data: bytes | None = None, *, max_pdu: int = 0
    ) -> None:
        """A DIMSE message as P-DATA-TF PDUs of at most ``max_pdu`` (0: the node's maximum)."""
        limit = max_pdu or self.peer_max_pdu
        payload = encode_p_data(context_id, command, is_command=True, max_pdu_length=limit)
        if data is not None:
            payload += encode_p_data(context_id, data, is_command=False, max_pdu_length=limit)
        self.send(payload)

    def read_message(self) -> tuple[bytes, bytes | None, list[int]]:
        """``(command, data set or None, PDU lengths)`` of the next DIMSE message."""
        command = b""
        data = b""
        lengths: list[int] = []
        done_command = done_data = False
        while not done_command or (not done_data and _has_data_set(command)):
            pdu_type, body = self.read_pdu()
            if pdu_type != 0x04:
                raise AssertionError(f"expected P-DATA-TF, got PDU type 0x{pdu_type:02X}")
            lengths.append(len(body))
            for _, control, fragment in iter_pdvs(bytearray(body)):
                if control & 0x01:
                    command += bytes(fragment)
                    done_command = bool(control & 0x02)
                else:
                    data += bytes(fragment)
                    done_data = bool(control & 0x02)
        return command, (data if done_data else None), lengths

    def release(self) -> int:
        """A-RELEASE-RQ; returns the answer's PDU type."""
        self.send(encode_release_rq())
        return self.read_pdu()[0]


def _has_data_set(command: bytes) -> bool:
    position = 0
    while position + 8 <= len(command):
        _, element, length = struct.unpack_from("<HHI", command, position)
        if element == 0x0800:
            return bool(struct.unpack_from("<H", command, position + 8)[0] != 0x0101)
        position += 8 + length
    return False
