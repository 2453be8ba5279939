"""The reactor guard: no response is lost to pynetdicom's requestor reactor.

The peer is the node's own receiver (:class:`dicom_node.receive.scp.DicomReceiver`),
which answers a C-ECHO fast enough for the response to arrive while an
unguarded reactor is still between its checkpoint and its look at the DIMSE
queue; pynetdicom's own SCP answers too slowly to hit that window.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.association import Association

from dicom_node.receive.scp import VERIFICATION
from dicom_node.scu.association_guard import reactor_paused
from tests.helpers.scp_harness import running_receiver

NODE_AET = "WBDWI"
EXCHANGES = 2000  # unguarded, ~1 response in 4,800 is lost on loopback


@pytest.fixture
def node_port(tmp_path: Path) -> Iterator[int]:
    with running_receiver(tmp_path, ae_title=NODE_AET) as (receiver, _):
        yield receiver.port


def _associate(port: int) -> Association:
    ae = AE(ae_title="GUARDSCU")
    # A lost response shows as a DIMSE timeout: keep it short so a failure is quick.
    ae.dimse_timeout = 0.5
    ae.add_requested_context(VERIFICATION)
    association = ae.associate("127.0.0.1", port, ae_title=NODE_AET)
    assert association.is_established
    return association


def test_reactor_is_blocked_inside_the_guard(node_port: int) -> None:
    association = _associate(node_port)
    try:
        with reactor_paused(association):
            checkpoint = association._reactor_checkpoint
            assert not checkpoint.is_set()
            assert association._is_paused
            assert checkpoint.blocked_in(1)  # type: ignore[attr-defined]
            status = association.send_c_echo()
        assert int(status.Status) == 0x0000
        assert association._reactor_checkpoint.is_set()
    finally:
        association.release()


@pytest.mark.timeout(60)
def test_many_exchanges_lose_no_response(node_port: int) -> None:
    association = _associate(node_port)
    statuses = []
    try:
        for _ in range(EXCHANGES):
            with reactor_paused(association):
                response = association.send_c_echo()
            statuses.append(int(response.Status) if "Status" in response else None)
            if not association.is_established:
                break  # a lost response ends the association (DIMSE timeout, abort)
    finally:
        if association.is_established:
            association.release()
    assert statuses == [0x0000] * EXCHANGES
