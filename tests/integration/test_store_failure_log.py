"""An instance the node cannot write is answered 0xA700 and logged as the IT guide says.

``deploy/README.md`` (section 11) tells IT to look for ``instance_not_stored``
with the reason ``cannot store <instance>.dcm: <the system's reason>`` when a
scanner reports 0xA700; this test makes the spool refuse a write (a file where
the study's folder goes) and checks the log event, its reason and that the
association goes on.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage
from structlog.testing import capture_logs

from dicom_node.receive.ul.pdu import A_ASSOCIATE_AC, A_RELEASE_RP, PresentationContextProposal
from tests.helpers.scp_harness import (
    RawPeer,
    encode_data_set,
    mr_data_set,
    running_receiver,
    store_command,
)

pytestmark = [pytest.mark.integration]

MR_CONTEXT = PresentationContextProposal(1, MRImageStorage, (ExplicitVRLittleEndian,))


def _status(command: bytes) -> Dataset:
    return read_dataset(BytesIO(command), True, True)


def test_an_instance_that_cannot_be_written_is_logged_as_instance_not_stored(
    tmp_path: Path,
) -> None:
    blocked = mr_data_set("1.2.826.2.1.1", study="1.2.826.2")
    with capture_logs() as logs, running_receiver(tmp_path) as (receiver, _):
        (tmp_path / "spool" / "1.2.826.2").write_text("a file where the study folder goes")
        with RawPeer(receiver.port) as peer:
            assert peer.associate([MR_CONTEXT])[0] == A_ASSOCIATE_AC
            peer.send_message(1, store_command(1, blocked.SOPInstanceUID), encode_data_set(blocked))
            reply = _status(peer.read_message()[0])
            assert peer.release() == A_RELEASE_RP
    assert reply.Status == 0xA700
    events = [entry for entry in logs if entry["event"] == "instance_not_stored"]
    assert len(events) == 1, logs
    assert events[0]["sop_instance_uid"] == "1.2.826.2.1.1"
    assert events[0]["reason"] == "cannot store 1.2.826.2.1.1.dcm: Not a directory"
    assert reply.ErrorComment == events[0]["reason"]
    assert events[0]["log_level"] == "error"
