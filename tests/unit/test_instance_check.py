"""Issue 12 point 3: a data set that cannot be processed is refused before it is answered.

Each corrupt case is built from a valid MR data set, stored through
:meth:`Spool.store` and must raise :class:`InstanceRefusedError` with the right
C-STORE status, leaving no file and no row; the valid variants (sequences,
encapsulated pixel data, every transfer syntax) must still be stored.
"""

from __future__ import annotations

import os
import random
import struct
import zlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    MRImageStorage,
)

from dicom_node.errors import MalformedDataSetError
from dicom_node.receive.element_walker import walk_data_set
from dicom_node.receive.spool import (
    STATUS_CANNOT_UNDERSTAND,
    STATUS_DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
    STATUS_OUT_OF_RESOURCES,
    InstanceLimits,
    InstanceRefusedError,
    Spool,
    SpooledInstance,
)

SOP_UID = "1.2.826.0.1.3680043.99.1"


class _Recorder:
    def __init__(self) -> None:
        self.rows: dict[str, SpooledInstance] = {}

    def has_instance(self, sop_instance_uid: str) -> bool:
        return sop_instance_uid in self.rows

    def record_instance(self, instance: SpooledInstance) -> bool:
        self.rows[instance.sop_instance_uid] = instance
        return True


def _mr(rows: int = 64, columns: int = 64) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = SOP_UID
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.99"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.99.2"
    ds.SeriesDescription = "DWI b1000"
    ds.SamplesPerPixel = 1
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = (bytes(range(256)) * (rows * columns * 2 // 256 + 1))[: rows * columns * 2]
    return ds


def _encode(ds: Dataset, *, implicit: bool = False) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = implicit
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def _store(
    tmp_path: Path,
    data: bytes,
    *,
    syntax: str = ExplicitVRLittleEndian,
    sop_class: str = MRImageStorage,
    sop_uid: str = SOP_UID,
    limits: InstanceLimits | None = None,
) -> tuple[Spool, _Recorder, SpooledInstance | None]:
    spool = Spool(tmp_path / "spool", fsync=False, limits=limits)
    recorder = _Recorder()
    try:
        instance, _ = spool.store(
            data,
            sop_class_uid=sop_class,
            sop_instance_uid=sop_uid,
            transfer_syntax_uid=syntax,
            calling_ae="SCANNER",
            recorder=recorder,
        )
    finally:
        spool.close()
    return spool, recorder, instance


def _refused(tmp_path: Path, data: bytes, **kwargs: object) -> InstanceRefusedError:
    with pytest.raises(InstanceRefusedError) as caught:
        _store(tmp_path, data, **kwargs)  # type: ignore[arg-type]
    spool_files = [p for p in (tmp_path / "spool").rglob("*") if p.is_file()]
    assert spool_files == [], "a refused instance left a file behind"
    return caught.value


def _nested(depth: int) -> Dataset:
    ds = _mr(8, 8)
    item = Dataset()
    item.CodeValue = "X"
    for _ in range(depth - 1):
        outer = Dataset()
        outer.ReferencedSeriesSequence = Sequence([item])
        item = outer
    ds.ReferencedSeriesSequence = Sequence([item])
    return ds


@pytest.mark.parametrize(
    ("syntax", "implicit"), [(ExplicitVRLittleEndian, False), (ImplicitVRLittleEndian, True)]
)
def test_valid_instances_with_sequences_are_stored_byte_identical(
    tmp_path: Path, syntax: str, implicit: bool
) -> None:
    data = _encode(_nested(6), implicit=implicit)
    _, recorder, instance = _store(tmp_path, data, syntax=syntax)
    assert instance is not None and SOP_UID in recorder.rows
    stored = instance.path.read_bytes()
    assert stored.endswith(data)
    assert dcmread(instance.path).ReferencedSeriesSequence[0].ReferencedSeriesSequence


def test_deflated_and_encapsulated_instances_are_stored(tmp_path: Path) -> None:
    _, _, deflated = _store(
        tmp_path / "a", _deflate(_encode(_mr())), syntax=DeflatedExplicitVRLittleEndian
    )
    assert deflated is not None
    ds = _mr(8, 8)
    ds.PixelData = encapsulate([b"\xff\xd8fragment-1\xff\xd9", b"\xff\xd8fragment2\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    _, _, encapsulated = _store(tmp_path / "b", _encode(ds), syntax=JPEGLSLossless)
    assert encapsulated is not None


def test_a_data_set_cut_short_is_refused(tmp_path: Path) -> None:
    data = _encode(_mr())
    error = _refused(tmp_path, data[:-3000])
    assert error.status == STATUS_CANNOT_UNDERSTAND and error.reason == "truncated"
    assert "truncated" in str(error)


def test_pixel_data_declaring_more_than_present_is_refused(tmp_path: Path) -> None:
    ds = _mr()
    data = _encode(ds)
    at = data.index(b"\xe0\x7f\x10\x00OW")
    header = data[:at] + b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", 16 << 20)
    error = _refused(tmp_path, header + b"\x00" * 8192)
    assert error.status == STATUS_CANNOT_UNDERSTAND and "truncated" in str(error)


def test_pixel_data_shorter_than_its_image_attributes_is_refused(tmp_path: Path) -> None:
    ds = _mr(64, 64)
    ds.PixelData = b"\x00" * 1024  # 64 x 64 x 16 bits need 8192
    error = _refused(tmp_path, _encode(ds))
    assert error.reason == "pixel_data" and "need 8192" in str(error)


def test_random_bytes_after_the_series_uid_are_refused(tmp_path: Path) -> None:
    data = _encode(_mr())
    at = data.index(b"\x20\x00\x0e\x00UI")
    length = struct.unpack_from("<H", data, at + 6)[0]
    cut = at + 8 + length
    noise = random.Random(12).randbytes(4000)
    error = _refused(tmp_path, data[:cut] + noise)
    assert error.status == STATUS_CANNOT_UNDERSTAND


def test_ten_thousand_nested_sequences_are_refused_without_recursion(tmp_path: Path) -> None:
    item = b"\x08\x00\x00\x01SH\x02\x00X "
    for _ in range(10_000):  # undefined-length sequences and items, nested
        item = (
            b"\x08\x00\x15\x11SQ\x00\x00\xff\xff\xff\xff"
            + b"\xfe\xff\x00\xe0\xff\xff\xff\xff"
            + item
            + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
            + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
        )
    data = _encode(_mr(8, 8))
    at = data.index(b"\x20\x00\x0d\x00")  # (0008,1115) goes before the study UID
    error = _refused(tmp_path, data[:at] + item + data[at:])
    assert "nested deeper than 16" in str(error)


def test_a_deflated_stream_cut_in_half_is_refused(tmp_path: Path) -> None:
    deflated = _deflate(_encode(_mr()))
    error = _refused(
        tmp_path, deflated[: len(deflated) // 2], syntax=DeflatedExplicitVRLittleEndian
    )
    assert error.reason == "truncated"


def test_a_deflate_bomb_is_refused_before_it_inflates(tmp_path: Path) -> None:
    ds = _mr(8, 8)
    del ds.PixelData
    head = _encode(ds)
    body = b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", 512 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunks = [compressor.compress(head + body)]
    zeros = b"\x00" * (1 << 20)
    chunks += [compressor.compress(zeros) for _ in range(512)]
    bomb = b"".join(chunks) + compressor.flush()
    assert len(bomb) < 1 << 20
    error = _refused(tmp_path, bomb, syntax=DeflatedExplicitVRLittleEndian)
    assert error.status == STATUS_OUT_OF_RESOURCES and error.reason == "inflation"


def test_an_instance_over_the_size_limit_is_refused(tmp_path: Path) -> None:
    error = _refused(tmp_path, _encode(_mr()), limits=InstanceLimits(max_instance_bytes=4096))
    assert error.status == STATUS_OUT_OF_RESOURCES and "max_instance_bytes" in str(error)


def test_a_ct_data_set_on_an_mr_context_is_refused(tmp_path: Path) -> None:
    ds = _mr()
    ds.SOPClassUID = CTImageStorage
    error = _refused(tmp_path, _encode(ds))
    assert error.status == STATUS_DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    assert "SOP Class UID differs" in str(error)


def test_a_data_set_without_sop_class_is_refused(tmp_path: Path) -> None:
    ds = _mr()
    del ds.SOPClassUID
    error = _refused(tmp_path, _encode(ds))
    assert error.status == STATUS_DATA_SET_DOES_NOT_MATCH_SOP_CLASS
    assert "no SOP Class UID" in str(error)


def test_a_data_set_of_another_instance_is_refused(tmp_path: Path) -> None:
    error = _refused(tmp_path, _encode(_mr()), sop_uid="1.2.9")
    assert error.reason == "sop_instance" and "differs from the request" in str(error)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x08\x00\x18\x00UI\x02\x001 \x08\x00\x16\x00UI\x02\x001 ", "ascending tag order"),
        (b"\x28\x00\x10\x00US\x03\x00\x01\x02\x03", "not a multiple of 2"),
        (b"\x08\x00\x15\x11SQ\x00\x00\x10\x00\x00\x00" + b"\x00" * 16, "expected an item"),
        (b"\xfe\xff\x00\xe0\x00\x00\x00\x00", "item or delimiter tag"),
    ],
)
def test_structural_faults_are_named(data: bytes, message: str) -> None:
    with pytest.raises(MalformedDataSetError, match=message):
        walk_data_set(data, implicit_vr=False, wanted=(), max_depth=8)


def test_walking_a_large_instance_is_fast() -> None:
    data = _encode(_nested(4)) + b""  # nested sequence plus 8 kB pixel data
    big = _mr(512, 512)
    encoded = _encode(big)
    start = os.times().elapsed
    for _ in range(200):
        walk_data_set(encoded, implicit_vr=False, wanted=(), max_depth=16)
        walk_data_set(data, implicit_vr=False, wanted=(), max_depth=16)
    assert os.times().elapsed - start < 2.0  # well under 5 ms per instance


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"PhotometricInterpretation": "MONOCIROME2"}, "Photometric Interpretation"),
        ({"BitsStored": 17}, "Bits Stored 17"),
        ({"HighBit": 15}, "High Bit 15"),
        ({"PixelRepresentation": 2}, "Pixel Representation 2"),
        ({"BitsAllocated": 12}, "Bits Allocated 12"),
    ],
)
def test_pixel_data_that_its_attributes_cannot_describe_is_refused(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    ds = _mr(8, 8)
    for keyword, value in change.items():
        setattr(ds, keyword, value)
    error = _refused(tmp_path, _encode(ds))
    assert error.reason == "pixel_module" and message in str(error)
