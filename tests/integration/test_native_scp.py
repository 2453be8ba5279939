"""The native acceptor over loopback, byte by byte: negotiation, fragments, errors, timeouts."""

from __future__ import annotations

import struct
import time
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import dcmread, read_dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage
from structlog.testing import capture_logs

from dicom_node.receive.scp import MODALITY_PERFORMED_PROCEDURE_STEP, VERIFICATION
from dicom_node.receive.ul.dimse import encode_command
from dicom_node.receive.ul.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_RELEASE_RP,
    PresentationContextProposal,
    encode_p_data,
)
from tests.helpers.scp_harness import (
    RawPeer,
    encode_data_set,
    mr_data_set,
    running_receiver,
    store_command,
)

pytestmark = [pytest.mark.integration]

MR_CONTEXT = PresentationContextProposal(1, MRImageStorage, (ExplicitVRLittleEndian,))
MPPS_CONTEXT = PresentationContextProposal(
    3, MODALITY_PERFORMED_PROCEDURE_STEP, (ImplicitVRLittleEndian,)
)


def _status(command: bytes) -> Dataset:
    return read_dataset(BytesIO(command), True, True)


@pytest.mark.parametrize(
    ("arguments", "expected", "explanation"),
    [
        ({"calling": "INTRUDER"}, (1, 1, 3), "calling AE 'INTRUDER' is not in the allow-list"),
        ({"called": "OTHER"}, (1, 1, 7), "called AE 'OTHER' is not this node's 'WBDWI'"),
        ({"application_context": "1.2.3"}, (1, 1, 2), "application context"),
        ({"protocol_version": 2}, (1, 2, 2), "protocol version"),
    ],
)
def test_rejections_carry_result_source_and_reason(
    tmp_path: Path, arguments: dict[str, object], expected: tuple[int, int, int], explanation: str
) -> None:
    with (
        capture_logs() as logs,
        running_receiver(tmp_path, calling_ae_allow=("SCANNER",)) as (receiver, _),
        RawPeer(receiver.port) as peer,
    ):
        pdu_type, body = peer.associate(**arguments)  # type: ignore[arg-type]
        assert pdu_type == A_ASSOCIATE_RJ
        assert tuple(body[1:4]) == expected
        assert peer.at_eof()
    rejected = [entry for entry in logs if entry["event"] == "association_rejected"]
    if expected[1] == 1 and expected[2] != 2:
        assert rejected and explanation in rejected[0]["reason"]
        assert receiver.stats.associations_rejected == 1


def test_association_limit_is_a_transient_local_limit(tmp_path: Path) -> None:
    with (
        running_receiver(tmp_path, max_associations=1) as (receiver, _),
        RawPeer(receiver.port) as first,
        RawPeer(receiver.port) as second,
    ):
        assert first.associate()[0] == A_ASSOCIATE_AC
        pdu_type, body = second.associate()
        assert (pdu_type, tuple(body[1:4])) == (A_ASSOCIATE_RJ, (2, 3, 2))
        assert first.release() == A_RELEASE_RP


def test_a_connection_that_has_not_asked_does_not_count_toward_the_limit(tmp_path: Path) -> None:
    with (
        running_receiver(tmp_path, max_associations=1) as (receiver, _),
        RawPeer(receiver.port) as idle,
        RawPeer(receiver.port) as asking,
    ):
        deadline = time.monotonic() + 5
        while receiver.active_associations < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert receiver.active_associations == 2  # both connections are being served
        assert asking.associate()[0] == A_ASSOCIATE_AC
        assert asking.release() == A_RELEASE_RP
        assert idle.associate()[0] == A_ASSOCIATE_AC
        assert idle.release() == A_RELEASE_RP


def test_contexts_follow_the_configured_classes_and_syntaxes(tmp_path: Path) -> None:
    contexts = [
        PresentationContextProposal(1, MRImageStorage, ("1.2.840.10008.1.2.4.80",)),  # JPEG-LS
        PresentationContextProposal(3, "1.2.840.10008.5.1.4.1.1.2", (ExplicitVRLittleEndian,)),
        PresentationContextProposal(5, VERIFICATION, ("1.2.840.10008.1.2.4.80",)),
        PresentationContextProposal(7, "1.2.3.4.5.6", (ExplicitVRLittleEndian,)),
        PresentationContextProposal(9, "1.2.840.10008.5.1.4.1.1.4.1", ("1.2.840.10008.1.2.5",)),
    ]
    with (
        running_receiver(tmp_path, accept_other_storage=False) as (receiver, _),
        RawPeer(receiver.port) as peer,
    ):
        assert peer.associate(contexts)[0] == A_ASSOCIATE_AC
        assert [(r.context_id, r.result) for r in peer.results] == [
            (1, 0), (3, 3), (5, 4), (7, 3), (9, 0)
        ]  # fmt: skip
        assert peer.results[4].transfer_syntax == "1.2.840.10008.1.2.5"  # RLE as proposed
        assert peer.peer_max_pdu == 131072


def test_fragmented_messages_and_the_peer_maximum_pdu(tmp_path: Path) -> None:
    ds = mr_data_set("1.2.826.1.1.1")
    data = encode_data_set(ds)
    with running_receiver(tmp_path) as (receiver, store), RawPeer(receiver.port) as peer:
        assert peer.associate([MR_CONTEXT, MPPS_CONTEXT], max_pdu=64)[0] == A_ASSOCIATE_AC
        # Command in 3 PDVs of one PDU, data set in 20-byte fragments, 4 PDVs per PDU.
        command = store_command(7, ds.SOPInstanceUID)
        pdvs = encode_p_data(1, command, is_command=True, max_pdu_length=len(command) // 3 + 7)
        bodies = [pdvs[i + 6 : i + 6 + struct.unpack_from(">I", pdvs, i + 2)[0]]
                  for i in _offsets(pdvs)]  # fmt: skip
        peer.send(_p_data(b"".join(bodies)))
        fragments = encode_p_data(1, data, is_command=False, max_pdu_length=26)
        items = [fragments[i + 6 : i + 6 + 26] for i in _offsets(fragments)]
        for start in range(0, len(items), 4):
            peer.send(_p_data(b"".join(items[start : start + 4])))
        response, _, _ = peer.read_message()
        assert _status(response).Status == 0x0000
        assert _status(response).MessageIDBeingRespondedTo == 7
        [path] = list((tmp_path / "spool").rglob("*.dcm"))
        assert path.read_bytes().endswith(data)
        assert store.has_instance(ds.SOPInstanceUID)

        attributes = Dataset()
        attributes.PerformedProcedureStepStatus = "IN PROGRESS"
        step = Dataset()
        step.StudyInstanceUID = "1.2.826.1"
        attributes.ScheduledStepAttributesSequence = [step]
        create = encode_command(
            {0x0002: MODALITY_PERFORMED_PROCEDURE_STEP, 0x0100: 0x0140, 0x0110: 8,
             0x0800: 0x0000}
        )  # fmt: skip
        peer.send_message(3, create, encode_data_set(attributes, implicit=True), max_pdu=64)
        response, answer, lengths = peer.read_message()
        assert max(lengths) <= 64 and len(lengths) > 2  # split to the peer's maximum
        reply = _status(response)
        assert reply.Status == 0x0000 and reply.CommandField == 0x8140
        assert answer is not None
        assert read_dataset(BytesIO(answer), True, True).PerformedProcedureStepStatus == (
            "IN PROGRESS"
        )
        assert store.mpps_exists(reply.AffectedSOPInstanceUID)  # generated by the node
        assert peer.release() == A_RELEASE_RP


def _offsets(pdus: bytes) -> list[int]:
    offsets, position = [], 0
    while position < len(pdus):
        offsets.append(position)
        position += 6 + struct.unpack_from(">I", pdus, position + 2)[0]
    return offsets


def _p_data(items: bytes) -> bytes:
    return struct.pack(">BBI", 0x04, 0, len(items)) + items


def test_store_failures_answer_and_keep_the_association(tmp_path: Path) -> None:
    good = mr_data_set("1.2.826.1.1.1")
    blocked = mr_data_set("1.2.826.2.1.1", study="1.2.826.2")
    encoded = encode_data_set(mr_data_set("1.2.826.1.1.3"))
    corrupt = encoded[: encoded.index(b"\x20\x00\x0d\x00")] + b"\x20\x00\x0d\x00UI\xff\x7f"
    with running_receiver(tmp_path) as (receiver, _):
        (tmp_path / "spool" / "1.2.826.2").write_text("a file where the study folder goes")
        with RawPeer(receiver.port) as peer:
            assert peer.associate([MR_CONTEXT])[0] == A_ASSOCIATE_AC

            def store_status(message_id: int, uid: str, data: bytes, **kw: str) -> Dataset:
                peer.send_message(1, store_command(message_id, uid, **kw), data)
                return _status(peer.read_message()[0])

            reply = store_status(1, "1.2.826.1.1.3", corrupt)
            assert reply.Status == 0xC211 and "cannot be parsed" in reply.ErrorComment
            assert store_status(2, good.SOPInstanceUID, encode_data_set(good)).Status == 0
            assert store_status(3, good.SOPInstanceUID, encode_data_set(good)).Status == 0
            reply = store_status(4, blocked.SOPInstanceUID, encode_data_set(blocked))
            assert reply.Status == 0xA700 and "cannot store" in reply.ErrorComment
            reply = store_status(5, "1.2.9", encode_data_set(good))
            assert reply.Status == 0xC211 and "differs from the request" in reply.ErrorComment
            reply = store_status(6, "1.2.9", b"", sop_class="1.2.840.10008.5.1.4.1.1.2")
            assert reply.Status == 0x0122  # SOP class differs from the context's
            find = encode_command({0x0002: MRImageStorage, 0x0100: 0x0020, 0x0110: 7,
                                   0x0800: 0x0101})  # fmt: skip
            peer.send_message(1, find)
            reply = _status(peer.read_message()[0])
            assert (reply.Status, reply.CommandField) == (0x0211, 0x8020)
            last = encode_data_set(mr_data_set("1.2.826.1.1.9"))
            assert store_status(8, "1.2.826.1.1.9", last).Status == 0
            assert peer.release() == A_RELEASE_RP
        assert len(list((tmp_path / "spool").rglob("*.dcm"))) == 2  # duplicate stored once
        assert receiver.stats.instances_duplicate == 1
        assert receiver.stats.instances_failed == 4
        assert dcmread(next((tmp_path / "spool").rglob("*.dcm"))).SOPClassUID == MRImageStorage


@pytest.mark.parametrize(
    ("after_association", "raw", "reason", "event"),
    [
        (False, b"\x09\x00\x00\x00\x00\x02ab", 1, "unrecognized PDU type 0x09"),
        (False, b"\x01\x00\x00\x00\x00\x0a" + b"\x00" * 10, 6, "shorter than its fixed fields"),
        (False, b"\x04\x00\x00\x00\x00\x08\x00\x00\x00\x04\x01\x03ab", 2, "expected an A-ASSOC"),
        (True, _p_data(b"\x00\x00\x00\x04\x63\x03ab"), 6, "context 99, which was not accepted"),
        (True, _p_data(b"\x00\x00\x00\x04\x01\x02ab"), 5, "data set fragment arrived before"),
        (True, _p_data(b"\x00\x00\x00\x09\x01\x03ab"), 6, "does not fit its P-DATA-TF"),
        (True, b"\x04\x00\x00\x03\x00\x00" + b"\x00" * 16, 6, "more than the 131072 allowed"),
        (True, b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00", 2, "unexpected PDU of type 0x06"),
    ],
)
def test_malformed_pdus_are_aborted_with_the_reason(
    tmp_path: Path, after_association: bool, raw: bytes, reason: int, event: str
) -> None:
    with capture_logs() as logs, running_receiver(tmp_path) as (receiver, _):
        with RawPeer(receiver.port) as peer:
            if after_association:
                assert peer.associate([MR_CONTEXT])[0] == A_ASSOCIATE_AC
            peer.send(raw)
            pdu_type, body = peer.read_pdu()
            assert (pdu_type, body[2], body[3]) == (A_ABORT, 2, reason)
            assert peer.at_eof()
        deadline = time.monotonic() + 5
        while receiver.active_associations and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receiver.active_associations == 0
    aborted = [e for e in logs if e["event"] == "association_aborted_malformed_pdu"]
    assert aborted and event in aborted[0]["reason"]


def test_malformed_command_set_aborts(tmp_path: Path) -> None:
    with (
        capture_logs() as logs,
        running_receiver(tmp_path) as (receiver, _),
        RawPeer(receiver.port) as peer,
    ):
        assert peer.associate([MR_CONTEXT])[0] == A_ASSOCIATE_AC
        peer.send_message(1, b"\x08\x00\x18\x00\x02\x00\x00\x001\x00")
        assert peer.read_pdu()[0] == A_ABORT
    assert any(e["event"] == "association_aborted_malformed_command" for e in logs)


def test_artim_and_idle_timeouts_abort(tmp_path: Path) -> None:
    with (
        capture_logs() as logs,
        running_receiver(tmp_path, network_timeout_seconds=0.3, associate_timeout_seconds=0.3) as (
            receiver,
            _,
        ),
    ):
        with RawPeer(receiver.port) as silent:
            started = time.monotonic()
            assert silent.read_pdu()[0] == A_ABORT  # no A-ASSOCIATE-RQ within ARTIM
            assert 0.25 < time.monotonic() - started < 3
        with RawPeer(receiver.port) as idle:
            assert idle.associate()[0] == A_ASSOCIATE_AC
            assert idle.read_pdu()[0] == A_ABORT
    waits = [e["waiting_for"] for e in logs if e["event"] == "association_timeout"]
    assert sorted(waits) == ["data transfer", "the A-ASSOCIATE-RQ (ARTIM)"]


def test_peer_abort_and_shutdown_abort(tmp_path: Path) -> None:
    with capture_logs() as logs, running_receiver(tmp_path) as (receiver, _):
        with RawPeer(receiver.port) as peer:
            assert peer.associate()[0] == A_ASSOCIATE_AC
            peer.send(b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00")
            assert peer.at_eof()
        with RawPeer(receiver.port) as lingering:
            assert lingering.associate()[0] == A_ASSOCIATE_AC
            receiver.stop(grace_seconds=0.2)
            pdu_type, body = lingering.read_pdu()
            assert (pdu_type, body[2]) == (A_ABORT, 0)  # source: service user (the node)
    events = [e["event"] for e in logs]
    assert "association_aborted" in events
    assert "association_aborted_at_shutdown" in events
