"""One association on the acceptor side: negotiation, P-DATA reassembly, DIMSE dispatch.

:func:`serve_association` runs in the association's own thread, on a blocking
socket with the network timeout, and does everything of PS3.8 the acceptor
needs with as little Python per message as possible:

1. waits for the A-ASSOCIATE-RQ (ARTIM: the network timeout), decodes it,
   checks the protocol version and application context, asks the service user
   (:class:`DimseServiceUser`) whether to accept, answers A-ASSOCIATE-RJ or
   A-ASSOCIATE-AC with one result per proposed presentation context;
2. reassembles command and data set fragments from the P-DATA-TF PDUs (PS3.8
   9.3.5, E.2), decodes the command set (:mod:`dicom_node.receive.ul.dimse`) and hands
   each complete message to the service user, one at a time (no asynchronous
   operations window is negotiated); the data set arrives as the bytes
   received, never decoded here;
3. answers with the response command (and data set), split into PDUs no longer
   than the peer's maximum;
4. ends on A-RELEASE-RQ (answered A-RELEASE-RP), on A-ABORT, when the
   connection drops, when nothing arrives for the network timeout (A-ABORT),
   or on a malformed PDU (A-ABORT with the reason, and a log line).

DIMSE operations other than C-ECHO, C-STORE, N-CREATE and N-SET are answered
with status 0x0211 (unrecognized operation); C-CANCEL needs no answer.
"""

from __future__ import annotations

import collections
import enum
import socket
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from dicom_node.receive.element_walker import ByteString
from dicom_node.receive.ul.dimse import (
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_STORE_RQ,
    N_CREATE_RQ,
    N_SET_RQ,
    DimseCommand,
    encode_response,
    parse_command,
)
from dicom_node.receive.ul.errors import (
    ConnectionClosedError,
    MalformedCommandError,
    MalformedPduError,
)
from dicom_node.receive.ul.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    DICOM_APPLICATION_CONTEXT,
    MAX_PDU_LENGTH_CEILING,
    P_DATA_TF,
    AssociationRequest,
    ContextResult,
    PresentationContextProposal,
    PresentationContextResult,
    encode_abort,
    encode_associate_ac,
    encode_associate_rj,
    encode_p_data,
    encode_release_rp,
    iter_pdvs,
    parse_associate_rq,
)

__all__ = [
    "AcceptedContext",
    "Association",
    "AssociationEnd",
    "AssociationLimits",
    "DataSetSink",
    "DimseReply",
    "DimseRequest",
    "DimseServiceUser",
    "Rejection",
    "negotiate_contexts",
    "serve_association",
]

LOGGER = structlog.get_logger(__name__)

_MAX_ASSOCIATE_RQ_BYTES = 256 << 10
_KNOWN_PDU_TYPES = frozenset(
    {A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT}
)
_SUPPORTED_OPERATIONS = frozenset({C_ECHO_RQ, C_STORE_RQ, N_CREATE_RQ, N_SET_RQ})
_STATUS_UNRECOGNIZED_OPERATION = 0x0211
_STATUS_PROCESSING_FAILURE = 0x0110
_STATUS_OUT_OF_RESOURCES = 0xA700
_STATUS_RESOURCE_LIMITATION = 0x0213
_ABORT_SOURCE_USER = 0
_ABORT_SOURCE_PROVIDER = 2
_LINGER_SECONDS = 1.0
# The data set of a message other than a C-STORE (N-CREATE, N-SET attribute lists) stays
# in memory: this much at most.
_MAX_OTHER_DATA_BYTES = 1 << 20
_RECEIVE_CHUNK = 262144
_GROW_FROM = 65536


class AssociationEnd(enum.Enum):
    """How an association ended."""

    REJECTED = "rejected"
    RELEASED = "released"
    ABORTED_BY_PEER = "aborted"
    ABORTED_BY_NODE = "aborted_by_node"
    TIMED_OUT = "timed_out"
    CONNECTION_LOST = "connection_lost"


@dataclass(frozen=True, slots=True)
class Rejection:
    """An A-ASSOCIATE-RJ to send (PS3.8 9.3.4) and why, in words for the log."""

    result: int
    source: int
    reason: int
    explanation: str

    PERMANENT = 1
    TRANSIENT = 2
    SOURCE_USER = 1
    SOURCE_ACSE = 2
    SOURCE_PRESENTATION = 3


@dataclass(frozen=True, slots=True)
class AcceptedContext:
    """A presentation context accepted on this association."""

    context_id: int
    abstract_syntax: str
    transfer_syntax: str


@dataclass(frozen=True, slots=True)
class DimseRequest:
    """A complete DIMSE request: command, its context, and the data set bytes if any.

    When the service user gave a :class:`DataSetSink` for the message, the data
    set went there as it arrived: ``sink`` is that sink and ``data_set`` is ``None``.
    """

    command: DimseCommand
    context: AcceptedContext
    data_set: ByteString | None
    sink: DataSetSink | None = None


class DataSetSink(Protocol):
    """Where a data set's fragments go as they arrive (the spool's temporary file)."""

    def write(self, fragment: ByteString) -> None:
        """Take the next fragment (must not raise: errors are kept for the handler)."""
        ...

    def discard(self) -> None:
        """Let go of what was written, unless the handler kept it (idempotent)."""
        ...


@dataclass(frozen=True, slots=True)
class DimseReply:
    """What the service user answers: a status, and for N-CREATE/N-SET a data set.

    ``data_set`` is encoded in the request context's transfer syntax;
    ``affected_sop_instance_uid`` overrides the request's (an N-CREATE whose SCU
    left the instance UID to the SCP).
    """

    status: int
    error_comment: str = ""
    data_set: bytes | None = None
    affected_sop_instance_uid: str = ""
    error_id: int | None = None


class Association:
    """The state of one association that the service user may read.

    ``tally`` is the service user's own per-association counters.
    """

    __slots__ = (
        "_connection",
        "association_id",
        "contexts",
        "peer",
        "released",
        "request",
        "tally",
    )

    def __init__(self, association_id: str, peer: str) -> None:
        self.association_id = association_id
        self.peer = peer
        self.request: AssociationRequest | None = None
        self.contexts: dict[int, AcceptedContext] = {}
        self.tally: collections.Counter[str] = collections.Counter()
        self.released = False  # set before the A-RELEASE-RP or an A-ABORT goes out
        self._connection: _Connection | None = None

    def abort(self) -> None:
        """A-ABORT from outside the association's thread (shutdown); its reader then ends."""
        connection = self._connection
        if connection is not None:
            connection.abort_from_outside()

    @property
    def calling_ae(self) -> str:
        """The requestor's AE title (empty before the A-ASSOCIATE-RQ)."""
        return self.request.calling_ae if self.request is not None else ""


class DimseServiceUser(Protocol):
    """What the acceptor needs from the application (the node's receiver)."""

    @property
    def supported_contexts(self) -> Mapping[str, Sequence[str]]:
        """Abstract syntax to the transfer syntaxes accepted for it, in our preference."""
        ...

    def check_association(
        self, association: Association, open_associations: int
    ) -> Rejection | None:
        """``None`` to accept the request in ``association.request``, else the rejection."""
        ...

    def data_set_sink(
        self, association: Association, command: DimseCommand, context: AcceptedContext
    ) -> DataSetSink | None:
        """Where the data set of ``command`` should go as it arrives; ``None``: into memory."""
        ...

    def serve(self, association: Association, request: DimseRequest) -> DimseReply:
        """Perform a C-ECHO, C-STORE, N-CREATE or N-SET; never raises on purpose."""
        ...

    def association_ended(self, association: Association, how: AssociationEnd) -> None:
        """Called once when an association that was accepted or rejected is over."""
        ...


def negotiate_contexts(
    proposals: Sequence[PresentationContextProposal], supported: Mapping[str, Sequence[str]]
) -> list[PresentationContextResult]:
    """Per proposed context: acceptance with the first proposed syntax we support, or why not.

    The requestor's order of transfer syntaxes is its preference (the scanner's
    native syntax first), so the first one we support is taken.
    """
    results: list[PresentationContextResult] = []
    for proposal in proposals:
        syntaxes = supported.get(proposal.abstract_syntax)
        if syntaxes is None:
            results.append(
                PresentationContextResult(
                    proposal.context_id,
                    ContextResult.ABSTRACT_SYNTAX_NOT_SUPPORTED,
                    proposal.transfer_syntaxes[0],
                )
            )
            continue
        chosen = next((ts for ts in proposal.transfer_syntaxes if ts in syntaxes), None)
        if chosen is None:
            results.append(
                PresentationContextResult(
                    proposal.context_id,
                    ContextResult.TRANSFER_SYNTAXES_NOT_SUPPORTED,
                    proposal.transfer_syntaxes[0],
                )
            )
        else:
            results.append(
                PresentationContextResult(proposal.context_id, ContextResult.ACCEPTANCE, chosen)
            )
    return results


class _Connection:
    """A socket with a receive buffer; PDUs are read whole, each within its deadline.

    The next PDU may take ``idle_timeout`` to start; once its first byte is
    here, the whole PDU must arrive within ``pdu_timeout`` (a peer that trickles
    bytes does not extend it). A PDU body is allocated as its bytes arrive, not
    from the length its header declares.
    """

    __slots__ = (
        "_buffer",
        "_send_lock",
        "_socket",
        "aborted_by_node",
        "idle_timeout",
        "pdu_timeout",
    )

    def __init__(self, sock: socket.socket, *, idle_timeout: float, pdu_timeout: float) -> None:
        self._socket = sock
        self._buffer = bytearray()
        self._send_lock = threading.Lock()
        self.aborted_by_node = False
        self.idle_timeout = idle_timeout
        self.pdu_timeout = pdu_timeout

    def _wait(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("deadline passed")
        self._socket.settimeout(remaining)

    def _fill(self, deadline: float) -> None:
        self._wait(deadline)
        chunk = self._socket.recv(_RECEIVE_CHUNK)
        if not chunk:
            raise ConnectionClosedError("the peer closed the connection")
        self._buffer += chunk

    def read_pdu(self, max_body: int, deadline: float | None = None) -> tuple[int, bytearray]:
        """``(PDU type, variable field)``; the body of an unknown type is not read.

        ``deadline`` (monotonic seconds), when given, bounds the wait for the
        whole PDU, its start included (the A-ASSOCIATE-RQ).
        """
        buffer = self._buffer
        if not buffer:
            self._fill(deadline if deadline is not None else time.monotonic() + self.idle_timeout)
        pdu_deadline = time.monotonic() + self.pdu_timeout
        if deadline is not None:
            pdu_deadline = min(pdu_deadline, deadline)
        while len(buffer) < 6:
            self._fill(pdu_deadline)
        pdu_type, _, length = struct.unpack_from(">BBI", buffer, 0)
        if pdu_type not in _KNOWN_PDU_TYPES:
            return pdu_type, bytearray()
        if length > max_body:
            raise MalformedPduError(
                f"PDU of type 0x{pdu_type:02X} is {length} bytes long, more than the "
                f"{max_body} allowed",
                6,
            )
        del buffer[:6]
        if len(buffer) >= length:
            body = buffer[:length]
            del buffer[:length]
            return pdu_type, body
        body = buffer[:]
        buffer.clear()
        return pdu_type, self._read_rest(body, length, pdu_deadline)

    def _read_rest(self, body: bytearray, length: int, deadline: float) -> bytearray:
        """Complete ``body`` to ``length`` bytes; memory grows with the bytes received."""
        have = len(body)
        while have < length:
            # At most double what has arrived: a declared length costs nothing until sent.
            size = min(length, max(have * 2, _GROW_FROM))
            body.extend(bytes(size - len(body)))
            with memoryview(body) as view:
                while have < size:
                    self._wait(deadline)
                    received = self._socket.recv_into(view[have:size])
                    if received == 0:
                        raise ConnectionClosedError("the peer closed the connection inside a PDU")
                    have += received
        return body

    def send(self, data: bytes) -> None:
        with self._send_lock:
            self._socket.sendall(data)

    def abort_from_outside(self) -> None:
        """Send A-ABORT (source: service user) and shut the socket, waking the reader."""
        self.aborted_by_node = True
        with self._send_lock:
            try:
                self._socket.sendall(encode_abort(_ABORT_SOURCE_USER, 0))
            except OSError as error:
                LOGGER.info("abort_not_delivered", reason=str(error))
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError as error:  # already disconnected
                LOGGER.debug("socket_already_closed", reason=str(error))

    def close_after(self, data: bytes | None) -> None:
        """Send ``data`` (RJ, RP, A-ABORT), then close once the peer has closed (or 1 s)."""
        try:
            if data is not None:
                self.send(data)
            self._socket.shutdown(socket.SHUT_WR)
            self._socket.settimeout(_LINGER_SECONDS)
            deadline = time.monotonic() + _LINGER_SECONDS
            while time.monotonic() < deadline and self._socket.recv(65536):
                pass
        except OSError:
            # The peer went first (reset or closed): there is nothing left to deliver.
            return


def _abort(connection: _Connection, reason: int, source: int = _ABORT_SOURCE_PROVIDER) -> None:
    connection.aborted_by_node = True
    connection.close_after(encode_abort(source, reason))


def _protocol_rejection(request: AssociationRequest) -> Rejection | None:
    """The A-ASSOCIATE-RJ that PS3.8 prescribes for a request we cannot take, if any.

    PS3.8 9.3.2 and Table 9-21: the protocol version (ACSE, reason 2); a missing
    or foreign application context (service user, reason 2); no presentation
    context (service user, no reason given); AE titles of 16 spaces, which
    PS3.8 Table 9-11 forbids (service user, called / calling AE not recognized).
    """
    if not request.protocol_version & 0x0001:
        return Rejection(
            Rejection.PERMANENT,
            Rejection.SOURCE_ACSE,
            2,
            f"protocol version 0x{request.protocol_version:04X} not supported",
        )
    problems = (
        (request.application_context != DICOM_APPLICATION_CONTEXT, 2,
         f"application context {request.application_context!r} not supported"
         if request.application_context else "no application context"),
        (not request.contexts, 1, "no presentation context proposed"),
        (not request.called_ae, 7, "called AE title is all spaces"),
        (not request.calling_ae, 3, "calling AE title is all spaces"),
    )  # fmt: skip
    for failed, reason, explanation in problems:
        if failed:
            return Rejection(Rejection.PERMANENT, Rejection.SOURCE_USER, reason, explanation)
    return None


def _negotiate(
    connection: _Connection,
    association: Association,
    user: DimseServiceUser,
    open_associations: Callable[[], int],
    limits: AssociationLimits,
) -> bool:
    """Read and answer the A-ASSOCIATE-RQ; True when the association is established."""
    deadline = time.monotonic() + limits.associate_timeout
    pdu_type, body = connection.read_pdu(_MAX_ASSOCIATE_RQ_BYTES, deadline)
    if pdu_type not in _KNOWN_PDU_TYPES:
        raise MalformedPduError(f"unrecognized PDU type 0x{pdu_type:02X}", 1)
    if pdu_type != A_ASSOCIATE_RQ:
        raise MalformedPduError(
            f"expected an A-ASSOCIATE-RQ, received a PDU of type 0x{pdu_type:02X}", 2
        )
    request = parse_associate_rq(bytes(body))
    association.request = request
    structlog.contextvars.bind_contextvars(calling_ae=request.calling_ae)
    rejection = _protocol_rejection(request)
    if rejection is not None:
        LOGGER.warning("association_rejected", reason=rejection.explanation, peer=association.peer)
    else:
        rejection = user.check_association(association, open_associations())
    if rejection is not None:
        connection.close_after(
            encode_associate_rj(rejection.result, rejection.source, rejection.reason)
        )
        return False
    results = negotiate_contexts(request.contexts, user.supported_contexts)
    abstract = {proposal.context_id: proposal.abstract_syntax for proposal in request.contexts}
    association.contexts = {
        result.context_id: AcceptedContext(
            result.context_id, abstract[result.context_id], result.transfer_syntax
        )
        for result in results
        if result.result == ContextResult.ACCEPTANCE
    }
    connection.send(encode_associate_ac(request, results, max_pdu_length=limits.max_pdu_length))
    return True


def _reply(association: Association, user: DimseServiceUser, request: DimseRequest) -> DimseReply:
    command = request.command
    if command.command_field not in _SUPPORTED_OPERATIONS:
        return DimseReply(
            _STATUS_UNRECOGNIZED_OPERATION,
            f"operation 0x{command.command_field:04X} is not supported by this node",
        )
    try:
        return user.serve(association, request)
    except Exception as error:
        # Boundary: a handler error must not drop the association; logged in full.
        LOGGER.exception("dimse_handler_failed", command=f"0x{command.command_field:04X}")
        status = (
            _STATUS_OUT_OF_RESOURCES
            if command.command_field == C_STORE_RQ
            else _STATUS_PROCESSING_FAILURE
        )
        return DimseReply(status, f"{type(error).__name__}: {error}")


def _respond(
    connection: _Connection,
    association: Association,
    user: DimseServiceUser,
    request: DimseRequest,
    peer_max_pdu: int,
) -> None:
    if request.command.command_field == C_CANCEL_RQ:
        return
    _send_reply(connection, request, _reply(association, user, request), peer_max_pdu)


def _send_reply(
    connection: _Connection, request: DimseRequest, reply: DimseReply, peer_max_pdu: int
) -> None:
    command = request.command
    instance = "" if command.command_field == C_ECHO_RQ else (
        reply.affected_sop_instance_uid
        or command.affected_sop_instance_uid
        or command.requested_sop_instance_uid
    )  # fmt: skip
    response = encode_response(
        command,
        status=reply.status,
        sop_class_uid=command.affected_sop_class_uid or command.requested_sop_class_uid,
        sop_instance_uid=instance,
        has_data_set=reply.data_set is not None,
        error_comment=reply.error_comment,
        error_id=reply.error_id,
    )
    context_id = request.context.context_id
    payload = encode_p_data(context_id, response, is_command=True, max_pdu_length=peer_max_pdu)
    if reply.data_set is not None:
        payload += encode_p_data(
            context_id, reply.data_set, is_command=False, max_pdu_length=peer_max_pdu
        )
    connection.send(payload)


class _Reassembly:
    """One DIMSE message being reassembled from PDVs (PS3.8 9.3.5, E.2).

    Fragments are copied into one buffer per message, so that many tiny or empty
    PDVs cost their bytes and nothing more; a data set past its limit is dropped
    as it arrives and answered with a failure status once complete. The limit is
    ``max_data_bytes`` for a C-STORE and at most ``_MAX_OTHER_DATA_BYTES`` for
    any other message (an MPPS attribute list is a few kilobytes).
    When ``open_sink`` gives a :class:`DataSetSink` for a command, its data set
    fragments go there instead (the spool's temporary file): memory then holds
    one PDU, whatever the data set's size.
    """

    __slots__ = (
        "command",
        "command_bytes",
        "context_id",
        "data",
        "data_size",
        "max_data_bytes",
        "message_limit",
        "open_sink",
        "sink",
    )

    def __init__(
        self,
        max_data_bytes: int,
        open_sink: Callable[[DimseCommand, int], DataSetSink | None] | None = None,
    ) -> None:
        self.max_data_bytes = max_data_bytes
        self.message_limit = max_data_bytes
        self.open_sink = open_sink
        self.context_id = 0
        self.command: DimseCommand | None = None
        self.command_bytes = bytearray()
        self.data = bytearray()
        self.data_size = 0
        self.sink: DataSetSink | None = None

    def discard(self) -> None:
        """Let go of a data set being received (the association ends mid-message)."""
        if self.sink is not None:
            self.sink.discard()
            self.sink = None

    def add(self, context_id: int, control: int, fragment: memoryview) -> bool:
        """Take one PDV; True when the message is complete."""
        if (self.command_bytes or self.data_size or self.command) and (
            context_id != self.context_id
        ):
            raise MalformedPduError(
                f"a PDV of context {context_id} interrupts a message of context {self.context_id}",
                5,
            )
        self.context_id = context_id
        last = bool(control & 0x02)
        if control & 0x01:
            return self._add_command(context_id, fragment, last=last)
        if self.command is None:
            raise MalformedPduError("a data set fragment arrived before its command", 5)
        self.data_size += len(fragment)
        if self.sink is not None:
            self.sink.write(fragment)
        elif self.data_size <= self.message_limit:
            self.data += fragment
        elif self.data:
            self.data = bytearray()  # too large: what came so far is let go
        return last

    def _add_command(self, context_id: int, fragment: memoryview, *, last: bool) -> bool:
        if self.command is not None:
            raise MalformedPduError(
                "a command fragment arrived where a data set fragment was due", 5
            )
        self.command_bytes += fragment
        if not last:
            return False
        self.command = parse_command(self.command_bytes)
        self.command_bytes = bytearray()
        self.message_limit = (
            self.max_data_bytes
            if self.command.command_field == C_STORE_RQ
            else min(self.max_data_bytes, _MAX_OTHER_DATA_BYTES)
        )
        if not self.command.has_data_set:
            return True
        if self.open_sink is not None:
            self.sink = self.open_sink(self.command, context_id)
        return False

    def take(self) -> tuple[DimseCommand, bytearray | None, int, DataSetSink | None]:
        """The complete message: command, data set (None without one or in a sink), size, sink."""
        command = self.command
        assert command is not None
        sink = self.sink
        data = self.data if command.has_data_set and sink is None else None
        size = self.data_size
        self.command = None
        self.data = bytearray()
        self.data_size = 0
        self.sink = None
        return command, data, size, sink


def _too_large(command: DimseCommand, size: int, limit: int) -> DimseReply:
    LOGGER.warning(
        "instance_refused",
        reason=f"data set of {size} bytes is larger than the {limit} bytes allowed",
        refusal="too_large",
        sop_instance_uid=command.affected_sop_instance_uid,
    )
    # PS3.4 B.2.3 (C-STORE: out of resources); PS3.7 C.4 (other operations: resource limitation)
    status = (
        _STATUS_OUT_OF_RESOURCES
        if command.command_field == C_STORE_RQ
        else _STATUS_RESOURCE_LIMITATION
    )
    return DimseReply(
        status, f"data set of {size} bytes is larger than the {limit} bytes this node accepts"
    )


def _on_p_data(
    body: bytearray,
    reassembly: _Reassembly,
    connection: _Connection,
    association: Association,
    user: DimseServiceUser,
) -> None:
    assert association.request is not None
    contexts = association.contexts
    for context_id, control, fragment in iter_pdvs(body):
        if context_id not in contexts:
            raise MalformedPduError(
                f"a PDV names presentation context {context_id}, which was not accepted"
            )
        if not reassembly.add(context_id, control, fragment):
            continue
        command, data, size, sink = reassembly.take()
        request = DimseRequest(command, contexts[context_id], data, sink)
        try:
            if size > reassembly.message_limit:
                refused = _too_large(command, size, reassembly.message_limit)
                association.tally["refused_too_large"] += 1
                _send_reply(connection, request, refused, association.request.max_pdu_length)
            else:
                _respond(connection, association, user, request, association.request.max_pdu_length)
        finally:
            if sink is not None:
                sink.discard()  # nothing left unless the handler kept the file


def _transfer(
    connection: _Connection,
    association: Association,
    user: DimseServiceUser,
    limits: AssociationLimits,
) -> AssociationEnd:
    """The data transfer phase, until release, abort or a broken connection."""
    contexts = association.contexts

    def open_sink(command: DimseCommand, context_id: int) -> DataSetSink | None:
        return user.data_set_sink(association, command, contexts[context_id])

    reassembly = _Reassembly(limits.max_data_set_bytes, open_sink)
    try:
        while True:
            pdu_type, body = connection.read_pdu(limits.max_pdu_length)
            if pdu_type == P_DATA_TF:
                _on_p_data(body, reassembly, connection, association, user)
            elif pdu_type == A_RELEASE_RQ:
                association.released = True
                connection.close_after(encode_release_rp())
                return AssociationEnd.RELEASED
            elif pdu_type == A_ABORT:
                source, reason = (body[2], body[3]) if len(body) >= 4 else (0, 0)
                LOGGER.info("association_aborted_by_peer", source=source, reason=reason)
                return AssociationEnd.ABORTED_BY_PEER
            elif pdu_type in _KNOWN_PDU_TYPES:
                raise MalformedPduError(
                    f"unexpected PDU of type 0x{pdu_type:02X} on an association", 2
                )
            else:
                raise MalformedPduError(f"unrecognized PDU type 0x{pdu_type:02X}", 1)
    finally:
        reassembly.discard()  # a data set cut off by release, abort or error leaves nothing


@dataclass(frozen=True, slots=True)
class AssociationLimits:
    """What one association may cost in time and memory.

    Attributes
    ----------
    max_pdu_length
        Largest PDU variable field we announce and accept (at most
        :data:`~dicom_node.receive.ul.pdu.MAX_PDU_LENGTH_CEILING`).
    idle_timeout
        Seconds the next PDU may take to start (between messages).
    associate_timeout
        Seconds from the connection for the whole A-ASSOCIATE-RQ (ARTIM).
    pdu_timeout
        Seconds a PDU may take from its first byte to its last.
    max_data_set_bytes
        Largest data set taken; a larger one is answered 0xA700 and dropped.
    """

    max_pdu_length: int = 131072
    idle_timeout: float = 60.0
    associate_timeout: float = 10.0
    pdu_timeout: float = 30.0
    max_data_set_bytes: int = 2 << 30

    def __post_init__(self) -> None:
        if not 0 < self.max_pdu_length <= MAX_PDU_LENGTH_CEILING:
            raise ValueError(
                f"maximum PDU length must be 1 to {MAX_PDU_LENGTH_CEILING} bytes, "
                f"got {self.max_pdu_length}"
            )


def serve_association(
    sock: socket.socket,
    association: Association,
    user: DimseServiceUser,
    *,
    open_associations: Callable[[], int],
    limits: AssociationLimits,
) -> AssociationEnd:
    """Run one association on a connected (and, for TLS, wrapped) socket until it ends.

    ``open_associations`` is asked, once the A-ASSOCIATE-RQ has been read, how
    many associations are open, this one included. The socket is left open for
    the caller to close.
    """
    connection = _Connection(sock, idle_timeout=limits.idle_timeout, pdu_timeout=limits.pdu_timeout)
    association._connection = connection
    try:
        if not _negotiate(connection, association, user, open_associations, limits):
            return AssociationEnd.REJECTED
        return _transfer(connection, association, user, limits)
    except MalformedPduError as error:
        LOGGER.warning("association_aborted_malformed_pdu", reason=str(error))
        association.released = True  # the slot is free while the abort lingers
        _abort(connection, error.abort_reason)
        return AssociationEnd.ABORTED_BY_NODE
    except MalformedCommandError as error:
        LOGGER.warning("association_aborted_malformed_command", reason=str(error))
        association.released = True
        _abort(connection, 0)
        return AssociationEnd.ABORTED_BY_NODE
    except TimeoutError:
        established = association.request is not None
        LOGGER.warning(
            "association_timeout",
            waiting_for="data transfer" if established else "the A-ASSOCIATE-RQ (ARTIM)",
            timeout_seconds=limits.idle_timeout if established else limits.associate_timeout,
            pdu_timeout_seconds=limits.pdu_timeout,
        )
        association.released = True
        _abort(connection, 0)
        return AssociationEnd.TIMED_OUT
    except (ConnectionClosedError, OSError) as error:
        return _connection_lost(connection, error)


def _connection_lost(connection: _Connection, error: Exception) -> AssociationEnd:
    if connection.aborted_by_node:
        return AssociationEnd.ABORTED_BY_NODE
    LOGGER.warning("association_connection_lost", reason=str(error) or type(error).__name__)
    return AssociationEnd.CONNECTION_LOST
