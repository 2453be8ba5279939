"""Issue 12 point 1: a C-STORE data set goes to the spool's temporary file as it arrives.

The receiver runs in this process; the peer streams its PDUs from a generator
so that the test itself never holds the instance, and the process's resident
memory is read while the node receives; a real dcmtk ``storescu`` stores an
instance meanwhile. Before streaming, the node held the
whole data set in memory (a 1 GiB data set: +1 GB RSS).
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage

from dicom_node.receive.scp import MODALITY_PERFORMED_PROCEDURE_STEP, DicomReceiver, ReceiverConfig
from dicom_node.receive.spool import InstanceLimits, Spool
from dicom_node.receive.ul.dimse import encode_command
from dicom_node.receive.ul.pdu import (
    A_ABORT,
    A_ASSOCIATE_AC,
    A_RELEASE_RP,
    PresentationContextProposal,
)
from service.jobstore import SqliteJobStore
from tests.conftest import require_tool
from tests.helpers.scp_harness import RawPeer, encode_data_set, mr_data_set, store_command

pytestmark = [pytest.mark.integration]

MR_CONTEXT = PresentationContextProposal(1, MRImageStorage, (ExplicitVRLittleEndian,))
CHUNK = 128 * 1024 - 6  # one PDV per PDU of the node's 128 KiB maximum


def _rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def _large_instance(uid: str, pixel_bytes: int) -> tuple[bytes, int]:
    """The encoded elements before Pixel Data (with its header) and the pixel length."""
    ds = mr_data_set(uid)
    ds.Rows = 16384
    ds.Columns = pixel_bytes // (16384 * 2)
    del ds.PixelData
    head = encode_data_set(ds) + b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", pixel_bytes)
    return head, pixel_bytes


def _data_pdus(head: bytes, pixel_bytes: int, digest: hashlib._Hash) -> Iterator[bytes]:
    """P-DATA-TF PDUs of the data set, the pixels made as they are sent."""
    pattern = bytes(range(256)) * (CHUNK // 256 + 1)
    pending = head
    remaining = pixel_bytes
    while pending or remaining:
        take = min(remaining, CHUNK - len(pending))
        fragment = pending + pattern[:take]
        pending = b""
        remaining -= take
        digest.update(fragment)
        control = 0x00 if remaining else 0x02
        item = struct.pack(">IBB", len(fragment) + 2, 1, control) + fragment
        yield struct.pack(">BBI", 0x04, 0, len(item)) + item


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[DicomReceiver]:
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    spool = Spool(
        tmp_path / "spool", fsync=False, limits=InstanceLimits(max_instance_bytes=1 << 30)
    )
    node = DicomReceiver(
        ReceiverConfig(ae_title="WBDWI", port=0, bind_address="127.0.0.1"), spool, store
    )
    node.start()
    try:
        yield node
    finally:
        node.stop(grace_seconds=1)
        spool.close()
        store.close()


def _storescu_gets_through(tmp_path: Path, port: int, sop_uid: str) -> None:
    """A real dcmtk storescu stores one MR image meanwhile (exit 0, file in the spool)."""
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
    assert list((tmp_path / "spool").rglob(f"{sop_uid}.dcm"))


def _status(peer: RawPeer) -> int:
    status: int = read_dataset(BytesIO(peer.read_message()[0]), True, True).Status
    return status


def test_a_large_instance_is_streamed_to_disk_with_bounded_memory(
    receiver: DicomReceiver, tmp_path: Path
) -> None:
    head, pixel_bytes = _large_instance("1.2.826.7.1", 192 << 20)
    digest = hashlib.sha256()
    with RawPeer(receiver.port, timeout=60) as peer:
        assert peer.associate([MR_CONTEXT])[0] == A_ASSOCIATE_AC
        peer.send_message(1, store_command(1, "1.2.826.7.1"))
        rss_before = _rss_bytes()
        peak = rss_before
        for number, pdu in enumerate(_data_pdus(head, pixel_bytes, digest)):
            peer.send(pdu)
            if number % 64 == 0:
                peak = max(peak, _rss_bytes())
            if number == 800:  # 100 MiB on its way: a scanner still gets through
                _storescu_gets_through(tmp_path, receiver.port, "1.2.826.7.90")
        assert _status(peer) == 0x0000
        peak = max(peak, _rss_bytes())
        assert peer.release() == A_RELEASE_RP
    assert peak - rss_before < 48 << 20, f"RSS grew by {(peak - rss_before) >> 20} MiB"
    (stored,) = (tmp_path / "spool").rglob("1.2.826.7.1.dcm")
    with stored.open("rb") as handle:
        handle.seek(132 + 8)
        meta_length = struct.unpack("<I", handle.read(4))[0]
        handle.seek(132 + 12 + meta_length)
        on_disk = hashlib.sha256()
        while block := handle.read(1 << 20):
            on_disk.update(block)
    assert on_disk.hexdigest() == digest.hexdigest()


def test_an_abort_mid_instance_leaves_no_temporary_file(
    receiver: DicomReceiver, tmp_path: Path
) -> None:
    head, pixel_bytes = _large_instance("1.2.826.7.2", 8 << 20)
    with RawPeer(receiver.port) as peer:
        assert peer.associate([MR_CONTEXT])[0] == A_ASSOCIATE_AC
        peer.send_message(1, store_command(1, "1.2.826.7.2"))
        for number, pdu in enumerate(_data_pdus(head, pixel_bytes, hashlib.sha256())):
            if number == 20:
                break
            peer.send(pdu)
        peer.send(struct.pack(">BBIBBBB", A_ABORT, 0, 4, 0, 0, 0, 0))
    for _ in range(100):
        if receiver.active_associations == 0:
            break
        time.sleep(0.05)
    assert receiver.active_associations == 0
    assert receiver.spool.discard_incomplete() == 0  # no .part but those made ahead
    assert list((tmp_path / "spool").rglob("*.dcm")) == []


def test_an_instance_over_the_limit_is_refused_and_its_file_removed(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    spool = Spool(
        tmp_path / "spool", fsync=False, limits=InstanceLimits(max_instance_bytes=4 << 20)
    )
    node = DicomReceiver(
        ReceiverConfig(ae_title="WBDWI", port=0, bind_address="127.0.0.1"), spool, store
    )
    node.start()
    try:
        head, pixel_bytes = _large_instance("1.2.826.7.3", 8 << 20)
        with RawPeer(node.port) as peer:
            assert peer.associate([MR_CONTEXT])[0] == A_ASSOCIATE_AC
            peer.send_message(1, store_command(1, "1.2.826.7.3"))
            for pdu in _data_pdus(head, pixel_bytes, hashlib.sha256()):
                peer.send(pdu)
            assert _status(peer) == 0xA700
            good = mr_data_set("1.2.826.7.4")
            peer.send_message(1, store_command(2, "1.2.826.7.4"), encode_data_set(good))
            assert _status(peer) == 0x0000
            assert peer.release() == A_RELEASE_RP
        assert spool.discard_incomplete() == 0
        assert [p.name for p in (tmp_path / "spool").rglob("*.dcm")] == ["1.2.826.7.4.dcm"]
    finally:
        node.stop(grace_seconds=1)
        spool.close()
        store.close()


def test_a_deflate_bomb_is_refused_without_inflating_into_memory(
    receiver: DicomReceiver, tmp_path: Path
) -> None:
    """Row 3 of issue 12: about 0.5 MiB deflated that inflates to 512 MiB (2.2 GB RSS before)."""
    deflated_context = PresentationContextProposal(3, MRImageStorage, ("1.2.840.10008.1.2.1.99",))
    head, pixel_bytes = _large_instance("1.2.826.7.5", 512 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = compressor.compress(head) + b"".join(
        compressor.compress(zeros) for _ in range(pixel_bytes >> 20)
    )
    bomb += compressor.flush()
    assert len(bomb) < 2 << 20
    with RawPeer(receiver.port, timeout=60) as peer:
        assert peer.associate([deflated_context])[0] == A_ASSOCIATE_AC
        rss_before = _rss_bytes()
        peer.send_message(3, store_command(1, "1.2.826.7.5"), bomb)
        _storescu_gets_through(tmp_path, receiver.port, "1.2.826.7.91")
        assert _status(peer) == 0xA700
        grown = _rss_bytes() - rss_before
        assert peer.release() == A_RELEASE_RP
    assert grown < 32 << 20, f"RSS grew by {grown >> 20} MiB"
    assert receiver.stats.instances_refused["inflation"] == 1
    assert [p.name for p in (tmp_path / "spool").rglob("*.dcm")] == ["1.2.826.7.91.dcm"]


def test_an_oversized_mpps_attribute_list_is_refused_before_it_fills_memory(
    receiver: DicomReceiver,
) -> None:
    """Only C-STORE data sets are streamed; any other stays in memory, so it is capped at 1 MiB."""
    mpps = PresentationContextProposal(
        3, MODALITY_PERFORMED_PROCEDURE_STEP, (ImplicitVRLittleEndian,)
    )
    create = encode_command(
        {0x0002: MODALITY_PERFORMED_PROCEDURE_STEP, 0x0100: 0x0140, 0x0110: 1, 0x0800: 0x0000,
         0x1000: "1.2.826.7.6"}
    )  # fmt: skip
    attributes = b"\x40\x00\x54\x02" + struct.pack("<I", 2 << 20) + bytes(2 << 20)
    with RawPeer(receiver.port) as peer:
        assert peer.associate([mpps])[0] == A_ASSOCIATE_AC
        peer.send_message(3, create, attributes)
        reply = read_dataset(BytesIO(peer.read_message()[0]), True, True)
        assert reply.Status == 0x0213 and "larger than the 1048576 bytes" in reply.ErrorComment
        assert peer.release() == A_RELEASE_RP
