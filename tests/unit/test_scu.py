"""The one requestor path (:mod:`dicom_node.scu.association`) against a real peer on loopback.

The peer is a pynetdicom AE serving Verification in a thread; it accepts only
the calling AE titles it is told to, so that a rejection carries a real
A-ASSOCIATE-RJ reason. The last tests pin the pynetdicom internals that
:mod:`dicom_node.scu.association_guard` relies on.
"""

from __future__ import annotations

import inspect
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from pynetdicom import AE, evt
from pynetdicom.association import Association

from dicom_node.errors import (
    AssociationFailedError,
    AssociationRejectedError,
    DicomNodeError,
    PeerUnreachableError,
)
from dicom_node.receive.scp import VERIFICATION
from dicom_node.scu.association import Peer, associate, reactor_paused, rejection_hint

PEER_AET = "SCUPEER"
ALLOWED = "KNOWNSCU"


@pytest.fixture
def peer_port() -> Iterator[int]:
    ae = AE(ae_title=PEER_AET)
    ae.add_supported_context(VERIFICATION)
    ae.require_calling_aet = [ALLOWED]
    server = ae.start_server(("127.0.0.1", 0), block=False)
    try:
        yield server.socket.getsockname()[1]
    finally:
        server.shutdown()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_echo_succeeds_and_the_association_is_released(peer_port: int) -> None:
    peer = Peer("127.0.0.1", peer_port, PEER_AET, ALLOWED, timeout_s=5.0)
    with associate(peer, [(VERIFICATION, None)], purpose="C-ECHO") as association:
        assert association.is_established
        with reactor_paused(association):
            status = association.send_c_echo()
    assert int(status.Status) == 0x0000
    assert association.is_released


def test_tcp_nodelay_is_set_on_the_socket(peer_port: int) -> None:
    peer = Peer("127.0.0.1", peer_port, PEER_AET, ALLOWED, timeout_s=5.0)
    with associate(peer, [(VERIFICATION, None)], purpose="C-ECHO") as association:
        sock = association.dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_a_rejection_raises_the_typed_error_with_the_reason(peer_port: int) -> None:
    peer = Peer("127.0.0.1", peer_port, PEER_AET, "STRANGER", timeout_s=5.0)
    with (
        pytest.raises(AssociationRejectedError) as caught,
        associate(peer, [(VERIFICATION, None)], purpose="C-ECHO"),
    ):
        pytest.fail("a rejected association must not reach the body")
    assert "Calling AE title not recognised" in caught.value.reason
    assert str(peer) in str(caught.value) and "STRANGER" in str(caught.value)
    assert isinstance(caught.value, AssociationFailedError)
    assert caught.value.hint.endswith(
        "does not know this node's AE title 'STRANGER': register it in the peer "
        "(AE title, host and port of this node)"
    )


@pytest.mark.parametrize(
    ("reason", "names"),
    [
        ("Rejected Permanent, Service User, Called AE title not recognised", "'PACS' this node"),
        ("Rejected Permanent, Service User, Calling AE title not recognised", "'WBDWI': register"),
        ("Rejected Transient, Service Provider (ACSE), no reason given", "check both AE titles"),
    ],
)
def test_the_rejection_hint_names_the_side_to_fix(reason: str, names: str) -> None:
    hint = rejection_hint(reason, Peer("pacs", 104, "PACS", "WBDWI", timeout_s=5.0))
    assert names in hint
    assert ("set the destination's AE title" in hint) == ("Called AE" in reason)


def test_an_unreachable_port_raises_quickly() -> None:
    peer = Peer("127.0.0.1", _closed_port(), PEER_AET, ALLOWED, timeout_s=5.0)
    started = time.monotonic()
    with (
        pytest.raises(PeerUnreachableError, match="unreachable or refused"),
        associate(peer, [(VERIFICATION, None)], purpose="C-ECHO"),
    ):
        pytest.fail("an unreachable peer must not reach the body")
    assert time.monotonic() - started < 2.0


def test_the_association_is_released_when_the_body_raises(peer_port: int) -> None:
    peer = Peer("127.0.0.1", peer_port, PEER_AET, ALLOWED, timeout_s=5.0)
    opened: list[Association] = []
    with (
        pytest.raises(DicomNodeError, match="body failed"),
        associate(peer, [(VERIFICATION, None)], purpose="C-ECHO") as association,
    ):
        opened.append(association)
        raise DicomNodeError("body failed")
    assert opened[0].is_released


def test_extra_event_handlers_are_bound(peer_port: int) -> None:
    seen: list[str] = []
    peer = Peer("127.0.0.1", peer_port, PEER_AET, ALLOWED, timeout_s=5.0)

    def on_accepted(event: evt.Event) -> None:
        seen.append(event.assoc.acceptor.ae_title)

    handlers = [(evt.EVT_ACCEPTED, on_accepted)]
    with associate(peer, [(VERIFICATION, None)], purpose="C-ECHO", evt_handlers=handlers):
        pass
    assert seen == [PEER_AET]


# The reactor guard swaps ``Association._reactor_checkpoint`` for its own
# event-like object and waits for the reactor to block on it. That holds only
# while pynetdicom's reactor looks the attribute up on every loop, calls only
# ``wait()``/``set()``/``clear()``/``is_set()`` on it, and exposes ``is_alive``.


def test_pynetdicom_association_has_the_checkpoint_the_guard_replaces() -> None:
    association = Association(AE(), mode="requestor")
    checkpoint = association._reactor_checkpoint
    assert isinstance(checkpoint, threading.Event)
    assert checkpoint.is_set()
    assert isinstance(association._is_paused, bool)
    assert callable(association.is_alive)


def test_pynetdicom_reactor_waits_on_the_attribute_each_loop() -> None:
    reactor = inspect.getsource(Association._run_reactor)
    assert reactor.count("self._reactor_checkpoint.wait()") >= 2
    assert "self._is_paused = True" in reactor
    # Only the Event methods the guard's checkpoint implements are used.
    source = inspect.getsource(Association)
    used = {
        part.split("(")[0]
        for part in source.split("self._reactor_checkpoint.")[1:]
        if "(" in part.split("\n")[0]
    }
    assert used <= {"wait", "set", "clear", "is_set"}


def test_pynetdicom_requestor_exchanges_pause_through_the_checkpoint() -> None:
    for name in ("send_c_echo", "send_c_store", "send_c_find", "send_c_get", "release"):
        source = inspect.getsource(getattr(Association, name))
        assert "self._reactor_checkpoint.clear()" in source, name
        assert "while not self._is_paused" in source, name
