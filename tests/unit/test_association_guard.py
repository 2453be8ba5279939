"""The reactor guard: no response is lost to pynetdicom's requestor reactor."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.transport import ThreadedAssociationServer

from dicom_node.association_guard import reactor_paused
from tests.conftest import free_port

VERIFICATION = "1.2.840.10008.1.1"


@pytest.fixture
def echo_server() -> Iterator[int]:
    port = free_port()
    ae = AE(ae_title="ECHOSCP")
    ae.add_supported_context(VERIFICATION)
    server: ThreadedAssociationServer = ae.start_server(("127.0.0.1", port), block=False)
    try:
        yield port
    finally:
        server.shutdown()


def _associate(port: int) -> Association:
    ae = AE(ae_title="GUARDSCU")
    ae.dimse_timeout = 5
    ae.add_requested_context(VERIFICATION)
    association = ae.associate("127.0.0.1", port, ae_title="ECHOSCP")
    assert association.is_established
    return association


def test_reactor_is_blocked_inside_the_guard(echo_server: int) -> None:
    association = _associate(echo_server)
    try:
        with reactor_paused(association):
            checkpoint = association._reactor_checkpoint
            assert not checkpoint.is_set()
            assert checkpoint.waiter_blocked.is_set()
            status = association.send_c_echo()
        assert int(status.Status) == 0x0000
        assert association._reactor_checkpoint.is_set()
    finally:
        association.release()


def test_many_exchanges_lose_no_response(echo_server: int) -> None:
    association = _associate(echo_server)
    statuses = []
    try:
        for _ in range(600):
            with reactor_paused(association):
                response = association.send_c_echo()
            statuses.append(int(response.Status) if "Status" in response else None)
    finally:
        if association.is_established:
            association.release()
    assert statuses == [0x0000] * 600
