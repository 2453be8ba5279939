"""``wbdwi echo`` of the node itself works with a calling-AE allow-list (issue 14): its own AE
title from this host may verify, and only verify; nothing is counted as a rejection."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage
from structlog.testing import capture_logs

from dicom_node.receive.scp import VERIFICATION
from dicom_node.receive.ul.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, PresentationContextProposal
from service.commands.echo import echo
from service.settings import Destination
from tests.helpers.scp_harness import RawPeer, running_receiver

pytestmark = [pytest.mark.integration]

ECHO_CONTEXT = PresentationContextProposal(1, VERIFICATION, (ImplicitVRLittleEndian,))
MR_CONTEXT = PresentationContextProposal(3, MRImageStorage, (ExplicitVRLittleEndian,))


def test_echo_of_the_node_itself_passes_the_allow_list(tmp_path: Path) -> None:
    with (
        capture_logs() as logs,
        running_receiver(tmp_path, calling_ae_allow=("SCANNER",)) as (receiver, _),
    ):
        node = Destination("WBDWI", "127.0.0.1", receiver.port)
        assert echo(node, "WBDWI", timeout=10) is None
        assert receiver.stats.associations_rejected == 0
        # anyone else still needs the allow-list, even for an echo
        problem = echo(node, "INTRUDER", timeout=10)
        assert problem is not None
        assert "calling AE title not recognised" in problem.lower() or "rejected" in problem
        assert receiver.stats.associations_rejected == 1
    assert not [
        e for e in logs if e["event"] == "association_rejected" and "'WBDWI'" in e["reason"]
    ]


def test_the_node_title_cannot_store_past_the_allow_list(tmp_path: Path) -> None:
    with running_receiver(tmp_path, calling_ae_allow=("SCANNER",)) as (receiver, _):
        with RawPeer(receiver.port) as peer:
            pdu_type, _ = peer.associate((ECHO_CONTEXT, MR_CONTEXT), calling="WBDWI")
            assert pdu_type == A_ASSOCIATE_RJ
        with RawPeer(receiver.port) as peer:
            pdu_type, _ = peer.associate((ECHO_CONTEXT,), calling="WBDWI")
            assert pdu_type == A_ASSOCIATE_AC
