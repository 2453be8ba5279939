"""The element walker reads the spool's header UIDs without pydicom, in every layout."""

from __future__ import annotations

import struct
import zlib

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)

from dicom_node.errors import InvalidInstanceError, MalformedDataSetError
from dicom_node.receive.element_walker import read_top_level_elements
from dicom_node.receive.spool import read_instance_header

SOP = 0x00080018
STUDY = 0x0020000D
SERIES = 0x0020000E
WANTED = frozenset({SOP, STUDY, SERIES})


def _item(uid: str, *, undefined: bool, nested: bool) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = MRImageStorage
    item.ReferencedSOPInstanceUID = uid
    if nested:
        inner = Dataset()
        inner.CodeValue = "113041"
        inner.CodingSchemeDesignator = "DCM"
        inner.is_undefined_length_sequence_item = undefined
        item.PurposeOfReferenceCodeSequence = Sequence([inner])
        item["PurposeOfReferenceCodeSequence"].is_undefined_length = undefined
    item.is_undefined_length_sequence_item = undefined
    return item


def _dataset(*, undefined: bool) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = "1.2.3.4.5.6"
    ds.ReferencedImageSequence = Sequence(
        [
            _item("1.2.9.1", undefined=undefined, nested=True),
            _item("1.2.9.2", undefined=undefined, nested=False),
        ]
    )
    ds["ReferencedImageSequence"].is_undefined_length = undefined
    ds.SeriesDescription = "Diffusion Körper b1000"
    ds.PatientName = "Doe^Jane"
    ds.StudyInstanceUID = "1.2.840.1"
    ds.SeriesInstanceUID = "1.2.840.1.2"
    ds.Rows = 2
    ds.BitsAllocated = 16
    ds.PixelData = b"\x00\x01" * 4
    return ds


def _encode(ds: Dataset, *, implicit: bool) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = implicit
    write_dataset(buffer, ds)
    return buffer.getvalue()


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
@pytest.mark.parametrize("undefined", [False, True], ids=["defined", "undefined-length"])
def test_reads_uids_past_sequences(implicit: bool, undefined: bool) -> None:
    encoded = _encode(_dataset(undefined=undefined), implicit=implicit)
    assert (b"\xfe\xff\xdd\xe0" in encoded) is undefined  # the layout really is as named
    values = read_top_level_elements(
        encoded, implicit_vr=implicit, wanted=WANTED, stop_after=SERIES
    )
    assert values == {SOP: b"1.2.3.4.5.6\x00", STUDY: b"1.2.840.1\x00", SERIES: b"1.2.840.1.2\x00"}


def test_reads_from_a_memoryview_and_stops_before_garbage() -> None:
    encoded = _encode(_dataset(undefined=True), implicit=False)
    cut = encoded.index(b"\x20\x00\x0e\x00")  # (0020,000E)
    series_end = cut + 8 + struct.unpack_from("<H", encoded, cut + 6)[0]
    # Everything after the Series Instance UID is garbage: never read.
    damaged = encoded[:series_end] + b"\x28\x00\x10\x00XX\xff\xff" + b"\x00" * 3
    values = read_top_level_elements(
        memoryview(damaged), implicit_vr=False, wanted=WANTED, stop_after=SERIES
    )
    assert values[SERIES] == b"1.2.840.1.2\x00"


def test_un_of_undefined_length_holds_implicit_vr() -> None:
    # (0009,1010) UN, undefined length, one item with an implicit VR element (PS3.5 6.2.2).
    inner = struct.pack("<HHI", 0x0009, 0x1011, 4) + b"abcd"
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner
    item += struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    un = struct.pack("<HH2sHI", 0x0009, 0x1010, b"UN", 0, 0xFFFFFFFF) + item
    un += struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    sop = struct.pack("<HH2sH", 0x0008, 0x0018, b"UI", 4) + b"1.23"
    series = struct.pack("<HH2sH", 0x0020, 0x000E, b"UI", 2) + b"9\x00"
    values = read_top_level_elements(
        sop + un + series, implicit_vr=False, wanted=WANTED, stop_after=SERIES
    )
    assert values == {SOP: b"1.23", SERIES: b"9\x00"}


def test_walks_encapsulated_pixel_data_to_its_end() -> None:
    fragments = struct.pack("<HHI", 0xFFFE, 0xE000, 0)  # empty basic offset table
    fragments += struct.pack("<HHI", 0xFFFE, 0xE000, 4) + b"\xff\xd8\xff\xd9"
    fragments += struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    pixel = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF) + fragments
    trailer = struct.pack("<HH2sHI", 0xFFFC, 0xFFFC, b"OB", 0, 0)  # PS3.10 padding, after pixels
    data = pixel + trailer
    values = read_top_level_elements(
        data, implicit_vr=False, wanted={0xFFFCFFFC}, stop_after=0xFFFFFFFF
    )
    assert values == {0xFFFCFFFC: b""}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x08\x00\x18\x00UI", "header truncated"),
        (b"\x08\x00\x18\x00UI\x10\x00" + b"1.2", "truncated"),
        (b"\x08\x00\x18\x00\x01\x02\x04\x00" + b"1.23", "no valid VR"),
        (b"\x08\x00\x40\x11SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\x04\x00\x00\x00ab",
         "truncated"),
        (b"\x08\x00\x40\x11SQ\x00\x00\xff\xff\xff\xff", "without a delimitation"),
        (b"\x08\x00\x40\x11SQ\x00\x00\xff\xff\xff\xff" + b"\x08\x00\x18\x00\x00\x00\x00\x00",
         "expected an item"),
        (b"\xfe\xff\x00\xe0\x00\x00\x00\x00", "at top level"),
        (b"\x08\x00\x18\x00UI\xff\xff" + b"\x00" * 3, "truncated"),
        (b"\x08\x00\x18\x00UT\x00\x00\xff\xff\xff\xff", "undefined length"),
    ],
)  # fmt: skip
def test_malformed_input_is_named(data: bytes, message: str) -> None:
    with pytest.raises(MalformedDataSetError, match=message):
        read_top_level_elements(data, implicit_vr=False, wanted=WANTED, stop_after=0xFFFFFFFF)


def test_nesting_is_bounded() -> None:
    opening = struct.pack("<HH2sHI", 0x0008, 0x1140, b"SQ", 0, 0xFFFFFFFF)
    opening += struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    with pytest.raises(MalformedDataSetError, match="nested deeper"):
        read_top_level_elements(opening * 100, implicit_vr=False, wanted=WANTED, stop_after=SERIES)


@pytest.mark.parametrize(
    ("syntax", "implicit", "deflate"),
    [
        (ExplicitVRLittleEndian, False, False),
        (ImplicitVRLittleEndian, True, False),
        (DeflatedExplicitVRLittleEndian, False, True),
    ],
)
def test_instance_header_in_each_syntax(syntax: str, implicit: bool, deflate: bool) -> None:
    body = _encode(_dataset(undefined=True), implicit=implicit)
    if deflate:
        compressor = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = compressor.compress(body) + compressor.flush()
    header = read_instance_header(body, syntax)
    assert header.sop_instance_uid == "1.2.3.4.5.6"
    assert header.study_uid == "1.2.840.1"
    assert header.series_uid == "1.2.840.1.2"
    assert header.series_description == "Diffusion Körper b1000"  # UTF-8 (ISO_IR 192)


def test_instance_header_refuses_garbage_deflate_and_missing_uid() -> None:
    with pytest.raises(InvalidInstanceError, match="cannot be inflated"):
        read_instance_header(b"\xff\xff\xff\xff", DeflatedExplicitVRLittleEndian)
    ds = _dataset(undefined=False)
    del ds.SeriesInstanceUID
    with pytest.raises(InvalidInstanceError, match="series_uid '' is missing"):
        read_instance_header(_encode(ds, implicit=False), ExplicitVRLittleEndian)
