"""Issue 12 point 3 over the network: corrupt C-STOREs are refused and leave nothing behind.

Each case goes through the native acceptor on loopback with a real job store:
the answer carries the failure status and an Error Comment, the association
goes on (a good instance after it is stored), and the spool holds no file and
the job store no row or job for the refused instance.
"""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    MRImageStorage,
)
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

CONTEXTS = [
    PresentationContextProposal(1, MRImageStorage, (ExplicitVRLittleEndian,)),
    PresentationContextProposal(3, MRImageStorage, (DeflatedExplicitVRLittleEndian,)),
]


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def _big(uid: str) -> Dataset:
    ds = mr_data_set(uid)
    ds.Rows = ds.Columns = 64
    ds.PixelData = bytes(64 * 64 * 2)
    return ds


def _cases() -> list[tuple[str, int, bytes, int, str]]:
    """``(case, context, data set, status, reason)``; the SOP Instance UID is 1.2.826.9.<n>."""
    cases: list[tuple[str, int, bytes, int, str]] = []
    full = encode_data_set(_big("1.2.826.9.1"))
    cases.append(("cut short by 3000 bytes", 1, full[:-3000], 0xC211, "truncated"))
    at = encode_data_set(_big("1.2.826.9.2")).index(b"\xe0\x7f\x10\x00OW")
    head = encode_data_set(_big("1.2.826.9.2"))[:at]
    declared = head + b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", 16 << 20) + bytes(8192)
    cases.append(("pixel data 16 MiB declared, 8 kB sent", 1, declared, 0xC211, "truncated"))
    encoded = encode_data_set(mr_data_set("1.2.826.9.3"))
    series = encoded.index(b"\x20\x00\x0e\x00UI")
    cut = series + 8 + struct.unpack_from("<H", encoded, series + 6)[0]
    noisy = encoded[:cut] + bytes((i * 37 + 11) % 256 for i in range(3000))
    cases.append(("random bytes after the series UID", 1, noisy, 0xC211, "malformed"))
    deflated = _deflate(encode_data_set(_big("1.2.826.9.4")))
    cases.append(("deflated stream cut in half", 3, deflated[: len(deflated) // 2], 0xC211,
                  "truncated"))  # fmt: skip
    ct = mr_data_set("1.2.826.9.5")
    ct.SOPClassUID = CTImageStorage
    cases.append(("CT data set on an MR context", 1, encode_data_set(ct), 0xA900, "sop_class"))
    no_class = mr_data_set("1.2.826.9.6")
    del no_class.SOPClassUID
    cases.append(("no SOP Class UID", 1, encode_data_set(no_class), 0xA900, "sop_class"))
    short_pixels = mr_data_set("1.2.826.9.7")
    short_pixels.Rows = 512
    cases.append(("Pixel Data shorter than Rows x Columns", 1, encode_data_set(short_pixels),
                  0xC211, "pixel_data"))  # fmt: skip
    nested = b"\x08\x00\x00\x01SH\x02\x00X "
    for _ in range(10_000):  # (0008,1115) sequences with one item each, nested 10,000 deep
        nested = (
            b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\xff\xff\xff\xff"
            + nested
            + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00\xfe\xff\xdd\xe0\x00\x00\x00\x00"
        )
    plain = encode_data_set(mr_data_set("1.2.826.9.8"))
    study = plain.index(b"\x20\x00\x0d\x00")
    cases.append(("10,000 nested sequences", 1, plain[:study] + nested + plain[study:], 0xC211,
                  "malformed"))  # fmt: skip
    return cases


def test_corrupt_instances_are_refused_with_nothing_left_behind(tmp_path: Path) -> None:
    cases = _cases()
    with capture_logs() as logs, running_receiver(tmp_path) as (receiver, store):
        with RawPeer(receiver.port) as peer:
            assert peer.associate(CONTEXTS)[0] == A_ASSOCIATE_AC
            for number, (case, context, data, status, _) in enumerate(cases, start=1):
                peer.send_message(context, store_command(number, f"1.2.826.9.{number}"), data)
                reply = read_dataset(BytesIO(peer.read_message()[0]), True, True)
                assert reply.Status == status, case
                assert reply.ErrorComment, case
            good = mr_data_set("1.2.826.9.100")
            peer.send_message(1, store_command(99, "1.2.826.9.100"), encode_data_set(good))
            assert read_dataset(BytesIO(peer.read_message()[0]), True, True).Status == 0
            assert peer.release() == A_RELEASE_RP
        spooled = sorted(p.name for p in (tmp_path / "spool").rglob("*.dcm"))
        assert spooled == ["1.2.826.9.100.dcm"]
        for number in range(1, len(cases) + 1):
            assert not store.has_instance(f"1.2.826.9.{number}")
        assert sum(store.job_counts().values()) == 1
        expected: dict[str, int] = {}
        for *_, reason in cases:
            expected[reason] = expected.get(reason, 0) + 1
        assert dict(receiver.stats.instances_refused) == expected
        assert receiver.stats.instances_failed == len(cases)
    refusals = [entry for entry in logs if entry["event"] == "instance_refused"]
    assert [entry["refusal"] for entry in refusals] == [reason for *_, reason in cases]
