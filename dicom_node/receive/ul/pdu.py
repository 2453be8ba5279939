"""DICOM Upper Layer PDUs (PS3.8 9.3): decode what an acceptor receives, encode its answers.

All PDU fields are big endian; the data inside P-DATA-TF PDVs are DIMSE
messages (little endian, :mod:`dicom_node.receive.ul.dimse`). Decoding is lenient
where PS3.8 allows it (reserved fields are not checked, unknown user
information sub-items are ignored, AE titles and UIDs lose their padding) and
strict elsewhere: a length that runs past its container, a missing mandatory
item or an unknown item type raises :class:`~dicom_node.receive.ul.errors.MalformedPduError`
with the A-ABORT reason to send.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from dicom_node.package_version import installed_version
from dicom_node.receive.ul.errors import MalformedPduError

__all__ = [
    "A_ABORT",
    "A_ASSOCIATE_AC",
    "A_ASSOCIATE_RJ",
    "A_ASSOCIATE_RQ",
    "A_RELEASE_RP",
    "A_RELEASE_RQ",
    "DICOM_APPLICATION_CONTEXT",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "MAX_PDU_LENGTH_CEILING",
    "PDU_HEADER_LENGTH",
    "P_DATA_TF",
    "AssociationRequest",
    "ContextResult",
    "PresentationContextProposal",
    "PresentationContextResult",
    "encode_abort",
    "encode_associate_ac",
    "encode_associate_rj",
    "encode_associate_rq",
    "encode_p_data",
    "encode_release_rp",
    "encode_release_rq",
    "iter_pdvs",
    "parse_associate_ac",
    "parse_associate_rq",
]

A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07
PDU_HEADER_LENGTH = 6
# The largest P-DATA-TF variable field the node announces or accepts (4 MiB): a
# received PDU is held whole in memory, so there is no "unlimited".
MAX_PDU_LENGTH_CEILING = 4 << 20

DICOM_APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

_ITEM_APPLICATION_CONTEXT = 0x10
_ITEM_CONTEXT_RQ = 0x20
_ITEM_CONTEXT_AC = 0x21
_ITEM_ABSTRACT_SYNTAX = 0x30
_ITEM_TRANSFER_SYNTAX = 0x40
_ITEM_USER_INFORMATION = 0x50
_SUB_MAX_LENGTH = 0x51
_SUB_IMPLEMENTATION_CLASS_UID = 0x52
_SUB_ASYNC_OPERATIONS = 0x53
_SUB_ROLE_SELECTION = 0x54
_SUB_IMPLEMENTATION_VERSION = 0x55
_FIXED_ASSOCIATE_FIELDS = 68  # version, reserved, called AE, calling AE, 32 reserved


# PS3.7 D.3.3.2: identifies this implementation; a 2.25 UUID-derived UID (PS3.5 B.2).
IMPLEMENTATION_CLASS_UID = "2.25." + str(
    uuid.uuid5(uuid.NAMESPACE_OID, "wbdwi-node DICOM implementation").int
)
IMPLEMENTATION_VERSION_NAME = f"WBDWI_{installed_version()}"[:16]


class ContextResult:
    """Result/reason of a presentation context in an A-ASSOCIATE-AC (PS3.8 Table 9-18)."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    NO_REASON = 2
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
    TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


@dataclass(frozen=True, slots=True)
class PresentationContextProposal:
    """One proposed presentation context (PS3.8 9.3.2.2)."""

    context_id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PresentationContextResult:
    """The acceptor's answer for one presentation context (PS3.8 9.3.3.2)."""

    context_id: int
    result: int
    transfer_syntax: str


@dataclass(frozen=True, slots=True)
class AssociationRequest:
    """A decoded A-ASSOCIATE-RQ (PS3.8 9.3.2, user information PS3.7 D.3.3).

    ``max_pdu_length`` 0 means unlimited (also when the requestor sent none).
    SCP/SCU role selections and the asynchronous operations window are
    recorded but not negotiated: the acceptor answers without them, so the
    defaults apply (PS3.7 D.3.3.3-4: one operation at a time, default roles).
    """

    protocol_version: int
    called_ae: str
    calling_ae: str
    application_context: str
    contexts: tuple[PresentationContextProposal, ...]
    max_pdu_length: int = 0
    implementation_class_uid: str = ""
    implementation_version_name: str = ""
    async_operations: tuple[int, int] | None = None
    role_selections: tuple[tuple[str, bool, bool], ...] = ()


def _header(pdu_type: int, length: int) -> bytes:
    return struct.pack(">BBI", pdu_type, 0, length)


def _item(item_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def _ae_field(title: str) -> bytes:
    encoded = title.encode("ascii", "replace")[:16]
    return encoded + b" " * (16 - len(encoded))


def _text(value: bytes | memoryview, what: str) -> str:
    try:
        return bytes(value).decode("ascii").rstrip("\x00 ").strip()
    except UnicodeDecodeError:
        raise MalformedPduError(f"{what} is not ASCII: {bytes(value)[:64]!r}", 6) from None


def _items(data: bytes | memoryview, start: int, end: int, what: str) -> Iterator[tuple[int, int]]:
    """``(item type, offset of its value)`` with the value running for the yielded length."""
    position = start
    while position < end:
        if position + 4 > end:
            raise MalformedPduError(f"{what}: item header truncated at offset {position}", 6)
        item_type, _, length = struct.unpack_from(">BBH", data, position)
        value_at = position + 4
        if value_at + length > end:
            raise MalformedPduError(
                f"{what}: item 0x{item_type:02X} of length {length} runs past its end", 6
            )
        yield item_type, value_at
        position = value_at + length


def _item_length(data: bytes | memoryview, value_at: int) -> int:
    length: int = struct.unpack_from(">H", data, value_at - 2)[0]
    return length


def _parse_context(data: bytes, value_at: int, length: int) -> PresentationContextProposal:
    if length < 4:
        raise MalformedPduError("presentation context item shorter than 4 bytes", 6)
    context_id = data[value_at]
    abstract: list[str] = []
    syntaxes: list[str] = []
    for sub_type, sub_at in _items(data, value_at + 4, value_at + length, "presentation context"):
        value = data[sub_at : sub_at + _item_length(data, sub_at)]
        if sub_type == _ITEM_ABSTRACT_SYNTAX:
            abstract.append(_text(value, "abstract syntax name"))
        elif sub_type == _ITEM_TRANSFER_SYNTAX:
            syntaxes.append(_text(value, "transfer syntax name"))
        else:
            raise MalformedPduError(
                f"presentation context {context_id}: unknown sub-item 0x{sub_type:02X}", 4
            )
    if len(abstract) != 1 or not abstract[0]:
        raise MalformedPduError(
            f"presentation context {context_id} has {len(abstract)} abstract syntaxes, not 1", 6
        )
    if not syntaxes:
        raise MalformedPduError(f"presentation context {context_id} has no transfer syntax", 6)
    return PresentationContextProposal(context_id, abstract[0], tuple(syntaxes))


def _parse_user_information(data: bytes, value_at: int, length: int) -> dict[str, object]:
    found: dict[str, object] = {}
    roles: list[tuple[str, bool, bool]] = []
    for sub_type, sub_at in _items(data, value_at, value_at + length, "user information"):
        sub_length = _item_length(data, sub_at)
        value = data[sub_at : sub_at + sub_length]
        if sub_type == _SUB_MAX_LENGTH:
            if sub_length != 4:
                raise MalformedPduError("maximum length sub-item is not 4 bytes long", 6)
            found["max_pdu_length"] = struct.unpack(">I", value)[0]
        elif sub_type == _SUB_IMPLEMENTATION_CLASS_UID:
            found["implementation_class_uid"] = _text(value, "implementation class UID")
        elif sub_type == _SUB_IMPLEMENTATION_VERSION:
            found["implementation_version_name"] = _text(value, "implementation version name")
        elif sub_type == _SUB_ASYNC_OPERATIONS and sub_length == 4:
            found["async_operations"] = struct.unpack(">HH", value)
        elif sub_type == _SUB_ROLE_SELECTION and sub_length >= 4:
            uid_length = struct.unpack_from(">H", value, 0)[0]
            if 2 + uid_length + 2 > sub_length:
                raise MalformedPduError("SCP/SCU role selection sub-item is truncated", 6)
            uid = _text(value[2 : 2 + uid_length], "role selection SOP class UID")
            roles.append((uid, bool(value[2 + uid_length]), bool(value[3 + uid_length])))
        # Other sub-items (extended negotiation, user identity) are not negotiated:
        # leaving them out of the answer declines them (PS3.7 D.3.3.5-7).
    found["role_selections"] = tuple(roles)
    return found


def parse_associate_rq(body: bytes) -> AssociationRequest:
    """Decode the variable part of an A-ASSOCIATE-RQ PDU (after its 6-byte header)."""
    if len(body) < _FIXED_ASSOCIATE_FIELDS:
        raise MalformedPduError(
            f"A-ASSOCIATE-RQ of {len(body)} bytes is shorter than its fixed fields", 6
        )
    protocol_version = struct.unpack_from(">H", body, 0)[0]
    called = body[4:20].decode("latin-1").strip()
    calling = body[20:36].decode("latin-1").strip()
    application_context = ""
    contexts: list[PresentationContextProposal] = []
    user: dict[str, object] = {}
    for item_type, value_at in _items(body, _FIXED_ASSOCIATE_FIELDS, len(body), "A-ASSOCIATE-RQ"):
        length = _item_length(body, value_at)
        if item_type == _ITEM_APPLICATION_CONTEXT:
            application_context = _text(body[value_at : value_at + length], "application context")
        elif item_type == _ITEM_CONTEXT_RQ:
            contexts.append(_parse_context(body, value_at, length))
        elif item_type == _ITEM_USER_INFORMATION:
            user = _parse_user_information(body, value_at, length)
        else:
            raise MalformedPduError(f"A-ASSOCIATE-RQ: unknown item type 0x{item_type:02X}", 4)
    # A missing application context, no presentation context or AE titles of
    # spaces are answered with an A-ASSOCIATE-RJ by the acceptor; invalid
    # presentation context IDs are invalid PDU parameters (A-ABORT, reason 6).
    identifiers = [context.context_id for context in contexts]
    invalid = sorted({i for i in identifiers if i % 2 == 0})
    if invalid:
        raise MalformedPduError(
            f"A-ASSOCIATE-RQ: presentation context IDs must be odd (1-255), got {invalid}", 6
        )
    if len(set(identifiers)) != len(identifiers):
        raise MalformedPduError(f"A-ASSOCIATE-RQ repeats a presentation context ID: {identifiers}")
    return AssociationRequest(
        protocol_version=protocol_version,
        called_ae=called,
        calling_ae=calling,
        application_context=application_context,
        contexts=tuple(contexts),
        max_pdu_length=int(user.get("max_pdu_length", 0)),  # type: ignore[call-overload]
        implementation_class_uid=str(user.get("implementation_class_uid", "")),
        implementation_version_name=str(user.get("implementation_version_name", "")),
        async_operations=user.get("async_operations"),  # type: ignore[arg-type]
        role_selections=user.get("role_selections", ()),  # type: ignore[arg-type]
    )


def _user_information(max_pdu_length: int, class_uid: str, version_name: str) -> bytes:
    return _item(
        _ITEM_USER_INFORMATION,
        _item(_SUB_MAX_LENGTH, struct.pack(">I", max_pdu_length))
        + _item(_SUB_IMPLEMENTATION_CLASS_UID, class_uid.encode("ascii"))
        + _item(_SUB_IMPLEMENTATION_VERSION, version_name.encode("ascii")),
    )


def encode_associate_ac(
    request: AssociationRequest,
    results: Sequence[PresentationContextResult],
    *,
    max_pdu_length: int,
    implementation_class_uid: str = IMPLEMENTATION_CLASS_UID,
    implementation_version_name: str = IMPLEMENTATION_VERSION_NAME,
) -> bytes:
    """A-ASSOCIATE-AC (PS3.8 9.3.3): one result per proposed context, our user information.

    Called and calling AE titles are returned as received (PS3.8 Table 9-17).
    """
    items = [_item(_ITEM_APPLICATION_CONTEXT, DICOM_APPLICATION_CONTEXT.encode("ascii"))]
    for result in results:
        items.append(
            _item(
                _ITEM_CONTEXT_AC,
                struct.pack(">BBBB", result.context_id, 0, result.result, 0)
                + _item(_ITEM_TRANSFER_SYNTAX, result.transfer_syntax.encode("ascii")),
            )
        )
    items.append(
        _user_information(max_pdu_length, implementation_class_uid, implementation_version_name)
    )
    body = b"".join(
        (
            struct.pack(">HH", 1, 0),
            _ae_field(request.called_ae),
            _ae_field(request.calling_ae),
            b"\x00" * 32,
            *items,
        )
    )
    return _header(A_ASSOCIATE_AC, len(body)) + body


def encode_associate_rq(request: AssociationRequest) -> bytes:
    """A-ASSOCIATE-RQ (PS3.8 9.3.2) for ``request`` (used by tests and tools that play a peer)."""
    items = [_item(_ITEM_APPLICATION_CONTEXT, request.application_context.encode("ascii"))]
    for context in request.contexts:
        items.append(
            _item(
                _ITEM_CONTEXT_RQ,
                struct.pack(">BBBB", context.context_id, 0, 0, 0)
                + _item(_ITEM_ABSTRACT_SYNTAX, context.abstract_syntax.encode("ascii"))
                + b"".join(
                    _item(_ITEM_TRANSFER_SYNTAX, syntax.encode("ascii"))
                    for syntax in context.transfer_syntaxes
                ),
            )
        )
    items.append(
        _user_information(
            request.max_pdu_length,
            request.implementation_class_uid or IMPLEMENTATION_CLASS_UID,
            request.implementation_version_name or IMPLEMENTATION_VERSION_NAME,
        )
    )
    body = b"".join(
        (
            struct.pack(">HH", request.protocol_version, 0),
            _ae_field(request.called_ae),
            _ae_field(request.calling_ae),
            b"\x00" * 32,
            *items,
        )
    )
    return _header(A_ASSOCIATE_RQ, len(body)) + body


def parse_associate_ac(body: bytes) -> tuple[list[PresentationContextResult], int]:
    """Presentation context results and the peer's maximum PDU length of an A-ASSOCIATE-AC."""
    if len(body) < _FIXED_ASSOCIATE_FIELDS:
        raise MalformedPduError("A-ASSOCIATE-AC is shorter than its fixed fields", 6)
    results: list[PresentationContextResult] = []
    max_pdu_length = 0
    for item_type, value_at in _items(body, _FIXED_ASSOCIATE_FIELDS, len(body), "A-ASSOCIATE-AC"):
        length = _item_length(body, value_at)
        if item_type == _ITEM_CONTEXT_AC:
            syntax = ""
            for sub_type, sub_at in _items(body, value_at + 4, value_at + length, "context"):
                if sub_type == _ITEM_TRANSFER_SYNTAX:
                    syntax = _text(body[sub_at : sub_at + _item_length(body, sub_at)], "syntax")
            results.append(PresentationContextResult(body[value_at], body[value_at + 2], syntax))
        elif item_type == _ITEM_USER_INFORMATION:
            user = _parse_user_information(body, value_at, length)
            max_pdu_length = int(user.get("max_pdu_length", 0))  # type: ignore[call-overload]
    return results, max_pdu_length


def encode_associate_rj(result: int, source: int, reason: int) -> bytes:
    """A-ASSOCIATE-RJ (PS3.8 9.3.4): result 1 permanent / 2 transient, source, reason/diag."""
    return _header(A_ASSOCIATE_RJ, 4) + struct.pack(">BBBB", 0, result, source, reason)


def encode_release_rq() -> bytes:
    """A-RELEASE-RQ (PS3.8 9.3.6)."""
    return _header(A_RELEASE_RQ, 4) + b"\x00" * 4


def encode_release_rp() -> bytes:
    """A-RELEASE-RP (PS3.8 9.3.7)."""
    return _header(A_RELEASE_RP, 4) + b"\x00" * 4


def encode_abort(source: int, reason: int) -> bytes:
    """A-ABORT (PS3.8 9.3.8): source 0 service user, 2 service provider; reason/diag."""
    return _header(A_ABORT, 4) + struct.pack(">BBBB", 0, 0, source, reason)


def iter_pdvs(body: bytes | bytearray) -> Iterator[tuple[int, int, memoryview]]:
    """``(context ID, message control header, fragment)`` of each PDV in a P-DATA-TF body.

    Fragments are views into ``body`` (no copy). See PS3.8 9.3.5.1 and E.2.
    """
    view = memoryview(body)
    end = len(body)
    if end == 0:
        raise MalformedPduError("P-DATA-TF without any presentation data value", 6)
    position = 0
    while position < end:
        if position + 6 > end:
            raise MalformedPduError(f"PDV item header truncated at offset {position}", 6)
        length = struct.unpack_from(">I", body, position)[0]
        if length < 2 or position + 4 + length > end:
            raise MalformedPduError(
                f"PDV item length {length} at offset {position} does not fit its P-DATA-TF", 6
            )
        yield body[position + 4], body[position + 5], view[position + 6 : position + 4 + length]
        position += 4 + length


def encode_p_data(
    context_id: int, payload: bytes, *, is_command: bool, max_pdu_length: int
) -> bytes:
    """P-DATA-TF PDUs (concatenated) carrying ``payload`` in one PDV per PDU.

    Each PDU respects the peer's maximum length (its variable field, PS3.8
    9.3.5; 0 = unlimited); the last fragment has the "last" bit set (PS3.8 E.2).
    """
    fragment_size = max(1, max_pdu_length - 6) if max_pdu_length else max(1, len(payload))
    kind = 0x01 if is_command else 0x00
    pdus: list[bytes] = []
    offset = 0
    total = len(payload)
    while True:
        fragment = payload[offset : offset + fragment_size]
        offset += len(fragment)
        control = kind | (0x02 if offset >= total else 0x00)
        pdus.append(
            struct.pack(">BBIIBB", P_DATA_TF, 0, 6 + len(fragment), 2 + len(fragment),
                        context_id, control)
            + fragment
        )  # fmt: skip
        if offset >= total:
            return b"".join(pdus)
