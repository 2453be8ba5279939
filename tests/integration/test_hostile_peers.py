"""Hostile or broken peers against the native acceptor, each bounded in time.

Rows of issue 12 covered here: many open connections (row 5), a trickle that
holds slots (row 6), oversized PDU lengths (row 4), and the PS3.8 answers to bad
A-ASSOCIATE-RQs. The hostile sockets come from 127.0.0.2 (another loopback
address), the well-behaved sender (dcmtk ``storescu``) from 127.0.0.1, and the
node runs in this process, so its resident memory is this process's.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage
from structlog.testing import capture_logs

from dicom_node.receive.ul.association import AssociationLimits
from dicom_node.receive.ul.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    MAX_PDU_LENGTH_CEILING,
    AssociationRequest,
    PresentationContextProposal,
    encode_associate_rq,
    encode_p_data,
)
from tests.conftest import require_tool
from tests.helpers.scp_harness import (
    RawPeer,
    encode_data_set,
    mr_data_set,
    running_receiver,
    store_command,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

HOSTILE_ADDRESS = "127.0.0.2"
MR_CONTEXT = PresentationContextProposal(1, MRImageStorage, (ExplicitVRLittleEndian,))


def command_status(command: bytes) -> int:
    """The Status (0000,0900) of a DIMSE response command set (implicit VR LE)."""
    position = 0
    while position + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHI", command, position)
        if (group, element) == (0x0000, 0x0900):
            return int(struct.unpack_from("<H", command, position + 8)[0])
        position += 8 + length
    raise AssertionError("no Status in the response")


def _rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class _Peak:
    def __init__(self) -> None:
        self.before = _rss_bytes()
        self.highest = self.before

    @property
    def grown(self) -> int:
        return self.highest - self.before


@contextmanager
def _peak_rss() -> Iterator[_Peak]:
    """The highest resident memory of this process (the node's) while the block runs."""
    peak = _Peak()
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak.highest = max(peak.highest, _rss_bytes())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()
        peak.highest = max(peak.highest, _rss_bytes())


def _hostile_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.bind((HOSTILE_ADDRESS, 0))
    sock.connect(("127.0.0.1", port))
    return sock


@contextmanager
def _hostile_sockets(port: int, count: int) -> Iterator[list[socket.socket]]:
    with ExitStack() as stack:
        sockets = []
        for _ in range(count):
            sock = _hostile_socket(port)
            stack.callback(sock.close)
            sockets.append(sock)
        yield sockets


def _wait_until(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return bool(condition())  # type: ignore[operator]


def _storescu_gets_through(tmp_path: Path, port: int, sop_uid: str) -> None:
    """A real dcmtk storescu stores one MR image (success status, exit 0)."""
    storescu = require_tool("storescu", "install dcmtk (make tools)")
    ds = mr_data_set(sop_uid)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    ds.file_meta.TransferSyntaxUID = UID(ExplicitVRLittleEndian)
    path = tmp_path / f"{sop_uid}.dcm"
    ds.save_as(path, enforce_file_format=True)
    result = subprocess.run(
        [storescu, "-aec", "WBDWI", "127.0.0.1", str(port), str(path)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------ row 5: many connections
def test_many_connections_are_capped_at_accept_and_a_scanner_gets_through(tmp_path: Path) -> None:
    storescu_uid = "1.2.826.0.1.3680043.10.999.5"
    with (
        capture_logs() as logs,
        running_receiver(tmp_path, max_connections=32, max_connections_per_address=8) as (
            receiver,
            store,
        ),
    ):
        threads_before = threading.active_count()
        rss_before = _rss_bytes()
        rq_header = struct.pack(">BBI", 0x01, 0, 256 << 10)  # declares a 256 KiB A-ASSOCIATE-RQ
        with (
            _hostile_sockets(receiver.port, 200) as idle,
            _hostile_sockets(receiver.port, 200) as declaring,
        ):
            for sock in declaring:
                with contextlib.suppress(OSError):  # closed at accept: the cap at work
                    sock.sendall(rq_header + b"\x00\x01" + b"\x00" * 1000)
            time.sleep(0.5)
            threads_during = threading.active_count()
            rss_during = _rss_bytes()
            _storescu_gets_through(tmp_path, receiver.port, storescu_uid)
            assert len(idle) == 200
        assert threads_during - threads_before <= 8 + 2  # at most the per-address cap
        assert rss_during - rss_before < 40 << 20
        assert store.has_instance(storescu_uid)
        assert receiver.refused_connections >= 400 - 8
    refused = [entry for entry in logs if entry["event"] == "connection_refused"]
    assert refused and "8 per address" in refused[0]["reason"]


def test_the_total_cap_counts_every_address(tmp_path: Path) -> None:
    with running_receiver(tmp_path, max_connections=4, max_connections_per_address=4) as (
        receiver,
        _,
    ):
        with _hostile_sockets(receiver.port, 4):
            assert _wait_until(lambda: receiver.active_associations == 4, 5)
            with RawPeer(receiver.port) as late:
                assert late.at_eof()  # closed at accept, before a byte is read
        assert _wait_until(lambda: receiver.active_associations == 0, 5)
        with RawPeer(receiver.port) as peer:
            assert peer.associate()[0] == A_ASSOCIATE_AC


# ------------------------------------------------------------------ row 6: trickling peers
def test_a_trickle_does_not_extend_the_pdu_deadline(tmp_path: Path) -> None:
    stop = threading.Event()

    def trickle(peer: RawPeer) -> None:
        # A P-DATA-TF of 64 bytes, one byte at a time, 0.2 s apart (never complete in 1 s).
        pdu = struct.pack(">BBI", 0x04, 0, 58) + b"\x00" * 58
        for byte in pdu:
            if stop.wait(0.2):
                return
            try:
                peer.send(bytes([byte]))
            except OSError:
                return

    with (
        capture_logs() as logs,
        running_receiver(
            tmp_path,
            max_associations=4,
            network_timeout_seconds=3.0,
            pdu_timeout_seconds=1.0,
        ) as (receiver, _),
        ExitStack() as stack,
    ):
        peers = [stack.enter_context(RawPeer(receiver.port)) for _ in range(4)]
        for peer in peers:
            assert peer.associate([MR_CONTEXT])[0] == A_ASSOCIATE_AC
        workers = [threading.Thread(target=trickle, args=(peer,)) for peer in peers]
        started = time.monotonic()
        for worker in workers:
            worker.start()
        try:
            for peer in peers:
                assert peer.read_pdu()[0] == A_ABORT
            elapsed = time.monotonic() - started
            # The trickling peers still hold their sockets; their places are free.
            _storescu_gets_through(tmp_path, receiver.port, "1.2.826.0.1.3680043.10.999.6")
        finally:
            stop.set()
            for worker in workers:
                worker.join()
    assert elapsed < 2.5  # the 1 s PDU deadline, not 3 s idle restarted by each byte
    timeouts = [entry for entry in logs if entry["event"] == "association_timeout"]
    assert len(timeouts) == 4


def test_the_whole_associate_request_has_a_deadline(tmp_path: Path) -> None:
    request = encode_associate_rq(
        AssociationRequest(1, "WBDWI", "SCANNER", "1.2.840.10008.3.1.1.1", (MR_CONTEXT,))
    )
    with (
        capture_logs() as logs,
        running_receiver(tmp_path, associate_timeout_seconds=1.0) as (receiver, _),
        RawPeer(receiver.port) as peer,
    ):
        started = time.monotonic()
        aborted = False
        for byte in request:
            try:
                peer.send(bytes([byte]))
            except OSError:
                aborted = True
                break
            time.sleep(0.1)
            if time.monotonic() - started > 3:
                break
        if not aborted:
            pdu_type, _ = peer.read_pdu()
            aborted = pdu_type == A_ABORT
        elapsed = time.monotonic() - started
    assert aborted
    assert elapsed < 2.5
    waits = [e["waiting_for"] for e in logs if e["event"] == "association_timeout"]
    assert waits == ["the A-ASSOCIATE-RQ (ARTIM)"]


# ------------------------------------------------------------------ row 4: declared lengths
def test_there_is_no_unlimited_pdu_length() -> None:
    with pytest.raises(ValueError, match="maximum PDU length"):
        AssociationLimits(max_pdu_length=0)
    with pytest.raises(ValueError, match="maximum PDU length"):
        AssociationLimits(max_pdu_length=MAX_PDU_LENGTH_CEILING + 1)


@pytest.mark.parametrize("associated", [False, True])
def test_a_huge_declared_pdu_is_aborted_without_allocating_it(
    tmp_path: Path, associated: bool
) -> None:
    with running_receiver(tmp_path) as (receiver, _), RawPeer(receiver.port) as peer:
        if associated:
            assert peer.associate([MR_CONTEXT])[0] == A_ASSOCIATE_AC
        rss_before = _rss_bytes()
        peer.send(struct.pack(">BBI", 0x04 if associated else 0x01, 0, 0xFFFFFFFF))
        pdu_type, body = peer.read_pdu()
        assert (pdu_type, body[3]) == (A_ABORT, 6)
        assert _rss_bytes() - rss_before < 16 << 20


def test_a_declared_associate_request_costs_only_what_arrives(tmp_path: Path) -> None:
    # 64 connections each declaring the largest A-ASSOCIATE-RQ taken and sending 100 bytes.
    with running_receiver(tmp_path, max_connections=100, max_connections_per_address=100) as (
        receiver,
        _,
    ):
        rss_before = _rss_bytes()
        with _hostile_sockets(receiver.port, 64) as sockets:
            for sock in sockets:
                sock.sendall(struct.pack(">BBI", 0x01, 0, (256 << 10) - 1) + b"\x00" * 100)
            assert _wait_until(lambda: receiver.active_associations == 64, 5)
            time.sleep(0.3)
            grown = _rss_bytes() - rss_before
    assert grown < 8 << 20  # preallocating the declared lengths would cost 16 MiB


# ------------------------------------------------------------------ row 2: empty PDVs
def test_empty_pdvs_after_a_command_do_not_amplify(tmp_path: Path) -> None:
    sop_uid = "1.2.826.0.1.3680043.10.999.2"
    empty_pdv = struct.pack(">IBB", 2, 1, 0x00)  # context 1, data set, not last, no bytes
    per_pdu = 16000 // len(empty_pdv)
    pdu = struct.pack(">BBI", 0x04, 0, per_pdu * len(empty_pdv)) + empty_pdv * per_pdu
    wire_bytes = 4 << 20
    with running_receiver(tmp_path) as (receiver, store), RawPeer(receiver.port) as peer:
        assert peer.associate([MR_CONTEXT], max_pdu=16384)[0] == A_ASSOCIATE_AC
        peer.send_message(1, store_command(1, sop_uid))
        with _peak_rss() as peak:
            for _ in range(wire_bytes // len(pdu)):
                peer.send(pdu)
            # Then the data set itself, and the instance is stored as usual.
            data = encode_data_set(mr_data_set(sop_uid))
            peer.send(encode_p_data(1, data, is_command=False, max_pdu_length=16384))
            command, _, _ = peer.read_message()
        assert command_status(command) == 0x0000
        assert store.has_instance(sop_uid)
    assert peak.grown < 8 << 20  # keeping a view per empty PDV cost about 31 x the bytes sent


# ------------------------------------------------------------------ point 4: PS3.8 strictness
def _without_application_context(request: bytes) -> bytes:
    item = b"\x10\x00\x00\x15" + b"1.2.840.10008.3.1.1.1"
    body = request[6:].replace(item, b"")
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


@pytest.mark.parametrize(
    ("change", "answer"),
    [
        ("no application context", (A_ASSOCIATE_RJ, (1, 1, 2))),
        ("no presentation context", (A_ASSOCIATE_RJ, (1, 1, 1))),
        ("called AE all spaces", (A_ASSOCIATE_RJ, (1, 1, 7))),
        ("calling AE all spaces", (A_ASSOCIATE_RJ, (1, 1, 3))),
        ("context ID 0", (A_ABORT, (0, 2, 6))),
        ("even context ID", (A_ABORT, (0, 2, 6))),
        ("repeated context ID", (A_ABORT, (0, 2, 6))),
    ],
)
def test_bad_associate_requests_get_the_ps38_answer(
    tmp_path: Path, change: str, answer: tuple[int, tuple[int, int, int]]
) -> None:
    contexts: tuple[PresentationContextProposal, ...] = (MR_CONTEXT,)
    called, calling = "WBDWI", "SCANNER"
    if change == "no presentation context":
        contexts = ()
    elif change == "called AE all spaces":
        called = ""
    elif change == "calling AE all spaces":
        calling = ""
    elif change == "context ID 0":
        contexts = (PresentationContextProposal(0, MRImageStorage, (ExplicitVRLittleEndian,)),)
    elif change == "even context ID":
        contexts = (PresentationContextProposal(2, MRImageStorage, (ExplicitVRLittleEndian,)),)
    elif change == "repeated context ID":
        contexts = (MR_CONTEXT, MR_CONTEXT)
    request = encode_associate_rq(
        AssociationRequest(1, called, calling, "1.2.840.10008.3.1.1.1", contexts)
    )
    if change == "no application context":
        request = _without_application_context(request)
    # check_called_ae off: an all-space called AE is refused by PS3.8, not by the setting.
    with (
        running_receiver(tmp_path, check_called_ae=False) as (receiver, _),
        RawPeer(receiver.port) as peer,
    ):
        peer.send(request)
        pdu_type, body = peer.read_pdu()
        assert (pdu_type, tuple(body[1:4])) == answer
        assert peer.at_eof()
