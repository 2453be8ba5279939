"""PDU and DIMSE codec of the native acceptor, checked against pynetdicom and pydicom."""

from __future__ import annotations

import socket
import struct
import threading
from io import BytesIO

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage
from pynetdicom import AE
from pynetdicom.pdu import A_ASSOCIATE_AC
from pynetdicom.pdu_primitives import (
    AsynchronousOperationsWindowNegotiation,
    SCP_SCU_RoleSelectionNegotiation,
)

from dicom_node.receive.ul import negotiate_contexts
from dicom_node.receive.ul.dimse import C_STORE_RQ, encode_command, encode_response, parse_command
from dicom_node.receive.ul.errors import MalformedCommandError, MalformedPduError
from dicom_node.receive.ul.pdu import (
    P_DATA_TF,
    AssociationRequest,
    ContextResult,
    PresentationContextProposal,
    encode_associate_ac,
    encode_associate_rq,
    encode_p_data,
    iter_pdvs,
    parse_associate_rq,
)

VERIFICATION = "1.2.840.10008.1.1"
JPEG_LS = "1.2.840.10008.1.2.4.80"


def _request(**changes: object) -> AssociationRequest:
    values: dict[str, object] = dict(
        protocol_version=1,
        called_ae="WBDWI",
        calling_ae="SCANNER",
        application_context="1.2.840.10008.3.1.1.1",
        contexts=(
            PresentationContextProposal(1, MRImageStorage, (JPEG_LS, ExplicitVRLittleEndian)),
            PresentationContextProposal(3, "1.2.3.4.5", (ExplicitVRLittleEndian,)),
            PresentationContextProposal(5, VERIFICATION, ("1.2.840.10008.1.2.2",)),
        ),
        max_pdu_length=16384,
        implementation_class_uid="1.2.3.99",
        implementation_version_name="TESTER_1",
    )
    values.update(changes)
    return AssociationRequest(**values)  # type: ignore[arg-type]


def _capture_pynetdicom_request() -> bytes:
    """The raw A-ASSOCIATE-RQ that pynetdicom sends, with role selection and async ops."""
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def accept() -> None:
        connection, _ = listener.accept()
        with connection:
            data = b""
            while len(data) < 6 or len(data) < 6 + struct.unpack(">I", data[2:6])[0]:
                data += connection.recv(65536)
            received.append(data)

    thread = threading.Thread(target=accept)
    thread.start()
    ae = AE(ae_title="PYNETDICOM")
    ae.acse_timeout = 5
    ae.add_requested_context(MRImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.add_requested_context(VERIFICATION)
    role = SCP_SCU_RoleSelectionNegotiation()
    role.sop_class_uid = MRImageStorage
    role.scu_role, role.scp_role = True, True
    window = AsynchronousOperationsWindowNegotiation()
    window.maximum_number_operations_invoked = 5
    window.maximum_number_operations_performed = 3
    association = ae.associate(
        "127.0.0.1",
        listener.getsockname()[1],
        ae_title="WBDWI",
        max_pdu=32768,
        ext_neg=[role, window],
    )
    thread.join(timeout=10)
    listener.close()
    assert not association.is_established
    return received[0]


def test_parses_a_pynetdicom_request_with_role_selection_and_async_window() -> None:
    raw = _capture_pynetdicom_request()
    assert raw[0] == 0x01
    request = parse_associate_rq(raw[6:])
    assert (request.called_ae, request.calling_ae) == ("WBDWI", "PYNETDICOM")
    assert request.application_context == "1.2.840.10008.3.1.1.1"
    assert request.max_pdu_length == 32768
    assert [(c.context_id, c.abstract_syntax) for c in request.contexts] == [
        (1, MRImageStorage),
        (3, VERIFICATION),
    ]
    assert request.contexts[0].transfer_syntaxes == (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    assert request.implementation_class_uid.startswith("1.2.826.0.1.3680043.9.3811.")
    assert request.async_operations == (5, 3)
    assert request.role_selections == ((MRImageStorage, True, True),)


def test_request_round_trip() -> None:
    request = _request()
    assert parse_associate_rq(encode_associate_rq(request)[6:]) == request


def test_negotiation_and_accept_decoded_by_pynetdicom() -> None:
    request = _request()
    supported = {
        MRImageStorage: (ExplicitVRLittleEndian, JPEG_LS),
        VERIFICATION: (ExplicitVRLittleEndian, ImplicitVRLittleEndian),
    }
    results = negotiate_contexts(request.contexts, supported)
    assert [(r.context_id, r.result, r.transfer_syntax) for r in results] == [
        (1, ContextResult.ACCEPTANCE, JPEG_LS),  # the requestor's first choice that we support
        (3, ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED, ExplicitVRLittleEndian),
        (5, ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED, "1.2.840.10008.1.2.2"),
    ]
    encoded = encode_associate_ac(request, results, max_pdu_length=262144)
    pdu = A_ASSOCIATE_AC()
    pdu.decode(encoded)
    assert pdu.called_ae_title.strip() == "WBDWI"
    assert [(item.context_id, item.result) for item in pdu.presentation_context] == [
        (1, 0),
        (3, 3),
        (5, 4),
    ]
    assert pdu.presentation_context[0].transfer_syntax == JPEG_LS
    user = pdu.user_information
    assert user is not None and user.maximum_length == 262144
    assert user.implementation_class_uid.startswith("2.25.")
    assert user.implementation_version_name.startswith("WBDWI_")


@pytest.mark.parametrize(
    ("mutate", "message", "reason"),
    [
        (lambda b: b[:40], "shorter than its fixed fields", 6),
        (lambda b: b[:-3], "runs past its end", 6),
        (lambda b: b + b"\x99\x00\x00\x00", "unknown item type 0x99", 4),
        (lambda b: b.replace(b"1.2.840.10008.1.1", b"1.2.840.10008.1.\xff"), "not ASCII", 6),
    ],
)
def test_malformed_requests_name_the_problem_and_the_abort_reason(
    mutate: object, message: str, reason: int
) -> None:
    body = encode_associate_rq(_request())[6:]
    with pytest.raises(MalformedPduError, match=message) as caught:
        parse_associate_rq(mutate(body))  # type: ignore[operator]
    assert caught.value.abort_reason == reason


def test_repeated_or_even_context_ids_are_invalid_parameters() -> None:
    twice = (PresentationContextProposal(1, VERIFICATION, (ExplicitVRLittleEndian,)),) * 2
    with pytest.raises(MalformedPduError, match="repeats a presentation context ID") as caught:
        parse_associate_rq(encode_associate_rq(_request(contexts=twice))[6:])
    assert caught.value.abort_reason == 6
    for context_id in (0, 2, 254):
        even = (PresentationContextProposal(context_id, VERIFICATION, (ExplicitVRLittleEndian,)),)
        with pytest.raises(MalformedPduError, match="must be odd") as caught:
            parse_associate_rq(encode_associate_rq(_request(contexts=even))[6:])
        assert caught.value.abort_reason == 6


def test_requests_without_contexts_or_application_context_parse_for_a_rejection() -> None:
    # The acceptor answers these with an A-ASSOCIATE-RJ (PS3.8 9.3.2), so they parse.
    assert parse_associate_rq(encode_associate_rq(_request(contexts=()))[6:]).contexts == ()
    body = encode_associate_rq(_request())[6:]
    item = b"\x10\x00\x00\x15" + b"1.2.840.10008.3.1.1.1"
    assert item in body
    assert parse_associate_rq(body.replace(item, b"")).application_context == ""


def _split_pdus(stream: bytes) -> list[bytes]:
    pdus = []
    while stream:
        length = struct.unpack_from(">I", stream, 2)[0]
        pdus.append(stream[: 6 + length])
        stream = stream[6 + length :]
    return pdus


@pytest.mark.parametrize("max_pdu", [0, 7, 64, 1000, 4096])
def test_p_data_respects_the_peer_maximum_and_reassembles(max_pdu: int) -> None:
    payload = bytes(range(256)) * 9
    pdus = _split_pdus(encode_p_data(7, payload, is_command=False, max_pdu_length=max_pdu))
    assert all(pdu[0] == P_DATA_TF for pdu in pdus)
    if max_pdu:
        assert all(len(pdu) - 6 <= max_pdu for pdu in pdus)
        assert len(pdus) == -(-len(payload) // (max_pdu - 6))
    else:
        assert len(pdus) == 1
    pieces = [pdv for pdu in pdus for pdv in iter_pdvs(bytearray(pdu[6:]))]
    assert b"".join(bytes(fragment) for _, _, fragment in pieces) == payload
    assert {context for context, _, _ in pieces} == {7}
    controls = [control for _, control, _ in pieces]
    assert controls == [0x00] * (len(controls) - 1) + [0x02]  # data; only the last is "last"


def test_several_pdvs_in_one_p_data() -> None:
    first = encode_p_data(1, b"command", is_command=True, max_pdu_length=0)[6:]
    second = encode_p_data(1, b"data", is_command=False, max_pdu_length=0)[6:]
    pieces = list(iter_pdvs(bytearray(first + second)))
    assert [(c, h, bytes(f)) for c, h, f in pieces] == [(1, 3, b"command"), (1, 2, b"data")]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "without any presentation data value"),
        (b"\x00\x00\x00\x01\x01", "truncated"),
        (b"\x00\x00\x00\x01\x01\x03", "does not fit"),
        (b"\x00\x00\x00\x09\x01\x03abc", "does not fit"),
    ],
)
def test_malformed_p_data(body: bytes, message: str) -> None:
    with pytest.raises(MalformedPduError, match=message):
        list(iter_pdvs(bytearray(body)))


def _pydicom_command(**keywords: object) -> bytes:
    command = Dataset()
    for keyword, value in keywords.items():
        setattr(command, keyword, value)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, True
    write_dataset(body, command)
    group = Dataset()
    group.CommandGroupLength = len(body.getvalue())
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, True
    write_dataset(out, group)
    return out.getvalue() + body.getvalue()


def test_command_parsed_from_pydicom_and_response_read_by_pydicom() -> None:
    encoded = _pydicom_command(
        AffectedSOPClassUID=MRImageStorage,
        CommandField=C_STORE_RQ,
        MessageID=17,
        Priority=0,
        CommandDataSetType=0x0000,
        AffectedSOPInstanceUID="1.2.3.4.5",
        MoveOriginatorApplicationEntityTitle="MOVER",
        MoveOriginatorMessageID=4,
    )
    command = parse_command(memoryview(encoded))
    assert command.command_field == C_STORE_RQ and command.message_id == 17
    assert command.has_data_set
    assert command.affected_sop_class_uid == MRImageStorage
    assert command.affected_sop_instance_uid == "1.2.3.4.5"
    assert (command.move_originator_ae, command.move_originator_message_id) == ("MOVER", 4)
    response = encode_response(
        command,
        status=0xC211,
        sop_class_uid=command.affected_sop_class_uid,
        sop_instance_uid=command.affected_sop_instance_uid,
        error_comment="data set header cannot be parsed: \\ element (0008,0018) ... " * 3,
    )
    decoded = read_dataset(BytesIO(response), True, True)
    assert decoded.CommandGroupLength == len(response) - 12
    assert decoded.CommandField == 0x8001
    assert decoded.MessageIDBeingRespondedTo == 17
    assert decoded.CommandDataSetType == 0x0101
    assert decoded.Status == 0xC211
    assert decoded.AffectedSOPInstanceUID == "1.2.3.4.5"
    assert len(decoded.ErrorComment) <= 64 and "\\" not in decoded.ErrorComment
    success = encode_response(command, status=0, sop_class_uid=MRImageStorage, error_comment="x")
    assert "ErrorComment" not in read_dataset(BytesIO(success), True, True)


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        (b"\x00\x00\x00\x01\x02\x00", "header truncated"),
        (b"\x08\x00\x18\x00\x02\x00\x00\x001\x00", "outside group 0000"),
        (encode_command({0x0110: 1, 0x0800: 0x0101}), "lacks \\(0000,0100\\)"),
        (encode_command({0x0100: 0x0030, 0x0800: 0x0101}), "lacks a Message ID"),
        (b"\x00\x00\x00\x01\x10\x00\x00\x00\x01\x00", "truncated"),
    ],
)
def test_malformed_commands(encoded: bytes, message: str) -> None:
    with pytest.raises(MalformedCommandError, match=message):
        parse_command(encoded)
