"""DIMSE command sets (PS3.7 6.3, 9.3, 10.3): a small implicit VR little endian codec.

A command set is a handful of group 0000 elements, always implicit VR little
endian whatever the presentation context's transfer syntax (PS3.7 6.3.1). It is
decoded here into a :class:`DimseCommand` without pydicom, and responses are
encoded from their few fields.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from dicom_node.receive.element_walker import ByteString
from dicom_node.receive.ul.errors import MalformedCommandError

__all__ = [
    "C_CANCEL_RQ",
    "C_ECHO_RQ",
    "C_FIND_RQ",
    "C_STORE_RQ",
    "NO_DATA_SET",
    "N_CREATE_RQ",
    "N_SET_RQ",
    "RESPONSE_BIT",
    "DimseCommand",
    "encode_command",
    "encode_response",
    "parse_command",
]

C_STORE_RQ = 0x0001
C_GET_RQ = 0x0010
C_FIND_RQ = 0x0020
C_MOVE_RQ = 0x0021
C_ECHO_RQ = 0x0030
N_EVENT_REPORT_RQ = 0x0100
N_GET_RQ = 0x0110
N_SET_RQ = 0x0120
N_ACTION_RQ = 0x0130
N_CREATE_RQ = 0x0140
N_DELETE_RQ = 0x0150
C_CANCEL_RQ = 0x0FFF
RESPONSE_BIT = 0x8000
NO_DATA_SET = 0x0101  # Command Data Set Type: no data set follows (PS3.7 E.1)

_GROUP_LENGTH = 0x00000000
_AFFECTED_SOP_CLASS_UID = 0x00000002
_REQUESTED_SOP_CLASS_UID = 0x00000003
_COMMAND_FIELD = 0x00000100
_MESSAGE_ID = 0x00000110
_MESSAGE_ID_BEING_RESPONDED_TO = 0x00000120
_MOVE_DESTINATION = 0x00000600
_PRIORITY = 0x00000700
_COMMAND_DATA_SET_TYPE = 0x00000800
_STATUS = 0x00000900
_ERROR_COMMENT = 0x00000902
_ERROR_ID = 0x00000903
_AFFECTED_SOP_INSTANCE_UID = 0x00001000
_REQUESTED_SOP_INSTANCE_UID = 0x00001001
_MOVE_ORIGINATOR_AE = 0x00001030
_MOVE_ORIGINATOR_MESSAGE_ID = 0x00001031

_US_TAGS = frozenset(
    {
        _COMMAND_FIELD,
        _MESSAGE_ID,
        _MESSAGE_ID_BEING_RESPONDED_TO,
        _PRIORITY,
        _COMMAND_DATA_SET_TYPE,
        _STATUS,
        _ERROR_ID,
        _MOVE_ORIGINATOR_MESSAGE_ID,
    }
)
_TEXT_TAGS = frozenset({_MOVE_DESTINATION, _ERROR_COMMENT, _MOVE_ORIGINATOR_AE})
_ELEMENT_HEADER = struct.Struct("<HHI")
_US = struct.Struct("<H")


@dataclass(frozen=True, slots=True)
class DimseCommand:
    """The fields of a request command set that the acceptor uses (PS3.7 9.3, 10.3).

    Absent UIDs are empty strings; ``has_data_set`` is False when the Command
    Data Set Type is 0x0101.
    """

    command_field: int
    message_id: int
    has_data_set: bool
    affected_sop_class_uid: str = ""
    affected_sop_instance_uid: str = ""
    requested_sop_class_uid: str = ""
    requested_sop_instance_uid: str = ""
    priority: int = 0
    move_originator_ae: str = ""
    move_originator_message_id: int | None = None


def _uid(value: bytes) -> str:
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedCommandError(f"a UID of the command set is not ASCII: {value!r}") from None
    return text.rstrip("\x00 ").strip()


def parse_command(encoded: ByteString) -> DimseCommand:
    """Decode a command set; raises :class:`MalformedCommandError` naming the problem."""
    values: dict[int, bytes] = {}
    end = len(encoded)
    position = 0
    while position < end:
        if position + 8 > end:
            raise MalformedCommandError(f"command element header truncated at offset {position}")
        group, element, length = _ELEMENT_HEADER.unpack_from(encoded, position)
        position += 8
        if group != 0x0000:
            raise MalformedCommandError(
                f"command set holds ({group:04X},{element:04X}), outside group 0000"
            )
        if position + length > end:
            raise MalformedCommandError(f"command element (0000,{element:04X}) is truncated")
        values[element] = bytes(encoded[position : position + length])
        position += length
    for required in (_COMMAND_FIELD, _COMMAND_DATA_SET_TYPE):
        if required not in values:
            raise MalformedCommandError(f"command set lacks (0000,{required:04X})")
    numbers: dict[int, int] = {}
    for tag in _US_TAGS & values.keys():
        if len(values[tag]) != 2:
            raise MalformedCommandError(f"(0000,{tag:04X}) is not a 2-byte US value")
        numbers[tag] = _US.unpack(values[tag])[0]
    command_field = numbers[_COMMAND_FIELD]
    if command_field != C_CANCEL_RQ and _MESSAGE_ID not in numbers:
        raise MalformedCommandError(f"command 0x{command_field:04X} lacks a Message ID")
    return DimseCommand(
        command_field=command_field,
        message_id=numbers.get(_MESSAGE_ID, numbers.get(_MESSAGE_ID_BEING_RESPONDED_TO, 0)),
        has_data_set=numbers[_COMMAND_DATA_SET_TYPE] != NO_DATA_SET,
        affected_sop_class_uid=_uid(values.get(_AFFECTED_SOP_CLASS_UID, b"")),
        affected_sop_instance_uid=_uid(values.get(_AFFECTED_SOP_INSTANCE_UID, b"")),
        requested_sop_class_uid=_uid(values.get(_REQUESTED_SOP_CLASS_UID, b"")),
        requested_sop_instance_uid=_uid(values.get(_REQUESTED_SOP_INSTANCE_UID, b"")),
        priority=numbers.get(_PRIORITY, 0),
        move_originator_ae=_uid(values.get(_MOVE_ORIGINATOR_AE, b"")),
        move_originator_message_id=numbers.get(_MOVE_ORIGINATOR_MESSAGE_ID),
    )


def _padded(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def encode_command(elements: dict[int, int | str]) -> bytes:
    """Encode group 0000 elements (tag to US int or UI/AE/LO text), with the group length.

    Integers are written as US (2 bytes); UIDs are padded with NUL, other text
    with a space (PS3.5 6.2).
    """
    parts: list[bytes] = []
    for tag in sorted(elements):
        value = elements[tag]
        if isinstance(value, int):
            encoded = _US.pack(value)
        elif tag in _TEXT_TAGS:
            encoded = _padded(value.encode("ascii", "replace"), b" ")
        else:
            encoded = _padded(value.encode("ascii"), b"\x00")
        parts.append(_ELEMENT_HEADER.pack(0x0000, tag, len(encoded)) + encoded)
    body = b"".join(parts)
    return _ELEMENT_HEADER.pack(0x0000, _GROUP_LENGTH, 4) + struct.pack("<I", len(body)) + body


def _error_comment(text: str) -> str:
    """An LO value (PS3.5 6.2): 64 characters, no backslash or control characters."""
    cleaned = "".join(c if " " <= c <= "~" and c != "\\" else " " for c in text)
    return cleaned[:64].rstrip()


def encode_response(
    request: DimseCommand,
    *,
    status: int,
    sop_class_uid: str,
    sop_instance_uid: str = "",
    has_data_set: bool = False,
    error_comment: str = "",
    error_id: int | None = None,
) -> bytes:
    """The response command set to ``request`` (PS3.7 9.3.x.2, 10.3.x.2).

    Affected SOP Class and Instance UIDs are included when given; an error
    comment and an Error ID (0000,0903), an application-specific code such as
    the MPPS 0xA310 of PS3.4 F.7.2.2, only with a failure or warning status.
    """
    elements: dict[int, int | str] = {
        _COMMAND_FIELD: request.command_field | RESPONSE_BIT,
        _MESSAGE_ID_BEING_RESPONDED_TO: request.message_id,
        _COMMAND_DATA_SET_TYPE: 0x0000 if has_data_set else NO_DATA_SET,
        _STATUS: status,
    }
    if sop_class_uid:
        elements[_AFFECTED_SOP_CLASS_UID] = sop_class_uid
    if sop_instance_uid:
        elements[_AFFECTED_SOP_INSTANCE_UID] = sop_instance_uid
    comment = _error_comment(error_comment) if status != 0x0000 else ""
    if comment:
        elements[_ERROR_COMMENT] = comment
    if error_id is not None and status != 0x0000:
        elements[_ERROR_ID] = error_id
    return encode_command(elements)
