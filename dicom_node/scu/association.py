"""The node's one way to open a DICOM association as a requestor (SCU).

Every client path of the node (``send``, ``export``, ``priors``, ``mpps`` and
``wbdwi echo``) opens its associations with :func:`associate`:

- one AE per association, with the ACSE, DIMSE and network timeouts of the
  :class:`Peer` (or the ``timeout_s`` given);
- TCP_NODELAY on the socket as soon as the connection opens (with Nagle's
  algorithm on, the small PDU that follows a C-STORE request waits for the
  peer's delayed ACK, about 40 ms: some 15 instances/s instead of hundreds);
- quick ACKs (Linux ``TCP_QUICKACK``, armed again after every read): a peer
  that keeps Nagle's algorithm on (dcmtk's ``storescp`` without
  ``TCP_NODELAY=1``, many PACS) holds the second small segment of each
  C-STORE response until we acknowledge the first, and a delayed ACK makes
  that 40 ms or more per instance (474 result objects: 24 s instead of 4 s
  measured against ``storescp`` on loopback);
- DICOM TLS when a client :class:`ssl.SSLContext` is given, the peer's
  certificate checked against its host name;
- failures as typed errors of :mod:`dicom_node.errors`:
  :class:`~dicom_node.errors.PeerUnreachableError` (no TCP connection),
  :class:`~dicom_node.errors.AssociationRejectedError` (A-ASSOCIATE-RJ, with
  the peer's reason) and :class:`~dicom_node.errors.AssociationAbortedError`
  (connected, but aborted during the negotiation);
- release on exit, whether the body ended normally or raised.

Each DIMSE exchange on the association runs inside :func:`reactor_paused`
(re-exported from :mod:`dicom_node.scu.association_guard`).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pynetdicom import AE, evt
from pynetdicom import _config as pynetdicom_config
from pynetdicom.association import Association

from dicom_node.errors import (
    AssociationAbortedError,
    AssociationRejectedError,
    PeerUnreachableError,
)
from dicom_node.scu.association_guard import reactor_paused

__all__ = [
    "DEFAULT_CALLING_AET",
    "Context",
    "Peer",
    "associate",
    "end_if_unanswered",
    "pass_contextvars_to_association_threads",
    "reactor_paused",
    "rejection_hint",
    "rejection_reason",
]

DEFAULT_CALLING_AET = "WBDWI-SCU"

#: A presentation context to propose: abstract syntax and transfer syntaxes
#: (``None``: pynetdicom's default syntaxes).
Context = tuple[str, Sequence[str] | None]


@dataclass(frozen=True, slots=True)
class Peer:
    """A remote application entity the node opens associations with.

    Parameters
    ----------
    host, port
        Network address.
    called_aet
        The peer's AE title.
    calling_aet
        Ours.
    timeout_s
        ACSE, DIMSE and network timeout in seconds.
    """

    host: str
    port: int
    called_aet: str
    calling_aet: str = DEFAULT_CALLING_AET
    timeout_s: float = 30.0

    def __str__(self) -> str:
        return f"{self.called_aet}@{self.host}:{self.port}"


def rejection_hint(reason: str, peer: Peer) -> str:
    """What to fix after an A-ASSOCIATE-RJ with ``reason``, naming the side that must change."""
    if "Called AE title not recognised" in reason:
        return (
            f"the peer at {peer.host}:{peer.port} does not answer to the AE title "
            f"{peer.called_aet!r} this node called it by: set the destination's AE title to the "
            "peer's own AE title"
        )
    if "Calling AE title not recognised" in reason:
        return (
            f"the peer at {peer.host}:{peer.port} does not know this node's AE title "
            f"{peer.calling_aet!r}: register it in the peer (AE title, host and port of this node)"
        )
    if "Application context name not supported" in reason:
        return "the peer does not speak DICOM's application context: is this a DICOM port?"
    return (
        f"check both AE titles: the peer's own ({peer.called_aet!r}) in this node's settings, "
        f"and this node's ({peer.calling_aet!r}) registered in the peer"
    )


def rejection_reason(primitive: object) -> str:
    """The result, source and reason of an A-ASSOCIATE-RJ, in words."""
    parts = [
        str(getattr(primitive, name, "") or "")
        for name in ("result_str", "source_str", "reason_str")
    ]
    return ", ".join(part for part in parts if part) or "no reason given"


def pass_contextvars_to_association_threads() -> None:
    """Run pynetdicom's association threads in a copy of the starting thread's context.

    Sets pynetdicom's ``PASS_CONTEXTVARS``, so that log context bound with
    :mod:`contextvars` (``job_id``, ``study_uid``) where an association is
    started is also bound in the threads that handle it. Called once, when the
    service configures its logging.
    """
    pynetdicom_config.PASS_CONTEXTVARS = True


_QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only

#: The idle sleep of the DUL thread of the associations we open (pynetdicom: 0.001 s).
_DUL_LOOP_DELAY_S = 0.0001


def _quick_ack(raw: socket.socket) -> None:
    """Acknowledge what arrives at once (Linux clears the flag again by itself)."""
    if _QUICKACK is None:
        return
    # closed meanwhile, or a platform that refuses it: only speed is lost
    with contextlib.suppress(OSError):
        raw.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)


def _reading_with_quick_acks(transport: Any) -> None:
    """Arm ``TCP_QUICKACK`` after every read of pynetdicom's ``AssociationSocket``."""
    read = transport.recv

    def recv(nr_bytes: int) -> bytearray:
        data = read(nr_bytes)
        if transport.socket is not None:
            _quick_ack(transport.socket)
        return data  # type: ignore[no-any-return]

    transport.recv = recv


def _disable_nagle(event: evt.Event) -> None:
    transport = event.assoc.dul.socket
    if transport is not None and transport.socket is not None:
        transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _quick_ack(transport.socket)
        _reading_with_quick_acks(transport)


def end_if_unanswered(association: Association, response: Any) -> None:
    """After a DIMSE request that got no response: abort the association if it still
    claims to be up.

    When the peer closes the connection, pynetdicom leaves the abort to the
    association's reactor, which the caller keeps paused during each exchange and
    re-pauses at once for the next: the association then stays "established",
    and each following request waits the whole DIMSE timeout. Aborting here
    makes the next request see the loss at once.
    """
    if "Status" not in response and association.is_established:
        association.abort()


@contextmanager
def associate(
    peer: Peer,
    contexts: Sequence[Context],
    *,
    purpose: str,
    tls: ssl.SSLContext | None = None,
    timeout_s: float | None = None,
    ext_neg: Sequence[Any] | None = None,
    evt_handlers: Sequence[tuple[evt.EventType, Callable[..., Any]]] = (),
) -> Iterator[Association]:
    """Open an association with ``peer``; yield it established; release it on exit.

    Parameters
    ----------
    peer
        The remote AE (address, AE titles, timeout).
    contexts
        Presentation contexts to propose, ``(abstract syntax, transfer syntaxes)``.
    purpose
        What the association is for (``"C-STORE"``, ``"MPPS"``, ...), quoted in
        error messages.
    tls
        A client context (:func:`dicom_node.tls.client_context`) for DICOM TLS.
    timeout_s
        ACSE, DIMSE and network timeout; ``peer.timeout_s`` when ``None``.
    ext_neg
        Extended negotiation items (for example SCP/SCU role selection).
    evt_handlers
        Further event handlers bound for the association's lifetime.

    Raises
    ------
    PeerUnreachableError
        No TCP (or TLS) connection could be made.
    AssociationRejectedError
        The peer answered A-ASSOCIATE-RJ; ``reason`` holds its reason.
    AssociationAbortedError
        The peer was reached but the negotiation was aborted.
    """
    timeout = peer.timeout_s if timeout_s is None else timeout_s
    ae = AE(ae_title=peer.calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for abstract_syntax, transfer_syntaxes in contexts:
        if transfer_syntaxes is None:
            ae.add_requested_context(abstract_syntax)
        else:
            ae.add_requested_context(abstract_syntax, list(transfer_syntaxes))
    opened: list[bool] = []

    def on_open(event: evt.Event) -> None:
        opened.append(True)
        _disable_nagle(event)

    association = ae.associate(
        peer.host,
        peer.port,
        ae_title=peer.called_aet,
        ext_neg=list(ext_neg) if ext_neg else None,
        evt_handlers=[(evt.EVT_CONN_OPEN, on_open), *evt_handlers],
        tls_args=(tls, peer.host) if tls is not None else None,
    )
    what = f"{purpose} association{' over TLS' if tls is not None else ''} with {peer} as "
    what += f"{peer.calling_aet} failed"
    if association.is_rejected:
        reason = rejection_reason(association.acceptor.primitive)
        raise AssociationRejectedError(
            f"{what} (rejected: {reason})", reason=reason, hint=rejection_hint(reason, peer)
        )
    if not association.is_established:
        if not opened:
            raise PeerUnreachableError(f"{what} (unreachable or refused)")
        raise AssociationAbortedError(f"{what} (aborted during the negotiation)")
    # pynetdicom's DUL thread sleeps 1 ms whenever a loop found nothing to do, on the way
    # out (our P-DATA) and on the way in (the peer's response): ~2.5 ms per C-STORE, 474
    # result objects 1.8-2.5 s instead of 1.2-1.4 s. Our associations are short (one
    # round of work, then released), so the faster polling costs little CPU.
    association.dul._run_loop_delay = _DUL_LOOP_DELAY_S
    try:
        yield association
    finally:
        if association.is_established:
            association.release()
