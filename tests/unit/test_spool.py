"""The durable spool: bytes kept as received, UIDs checked, duplicates stored once."""

from __future__ import annotations

import os
import shutil
import time
import warnings
import zlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from dicom_node.errors import InvalidInstanceError, SpoolWriteError
from dicom_node.receive.spool import (
    Spool,
    SpooledInstance,
    _TemporaryFilePool,
    encode_file_meta,
    is_valid_uid,
    read_instance_header,
)


class _Recorder:
    def __init__(self) -> None:
        self.rows: dict[str, SpooledInstance] = {}

    def has_instance(self, sop_instance_uid: str) -> bool:
        return sop_instance_uid in self.rows

    def record_instance(self, instance: SpooledInstance) -> bool:
        if instance.sop_instance_uid in self.rows:
            return False
        self.rows[instance.sop_instance_uid] = instance
        return True


def _dataset(
    sop_uid: str | None = None, study: str = "1.2.3.4", series: str = "1.2.3.4.5"
) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.PatientName = "Doe^Jane"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.SeriesDescription = "DWI station 1"
    ds.Rows = 2
    ds.Columns = 2
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = b"\x01\x00\x02\x00\x03\x00\x04\x00"
    return ds


def _encode(ds: Dataset, implicit: bool) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = implicit
    write_dataset(buffer, ds)
    return buffer.getvalue()


def _store(
    spool: Spool,
    ds: Dataset,
    recorder: _Recorder | None = None,
    *,
    sop_instance_uid: str | None = None,
) -> tuple[SpooledInstance | None, bool]:
    """Store ``ds`` as sent in explicit VR by calling AE ``A`` (its own SOP UID by default)."""
    return spool.store(
        _encode(ds, False),
        sop_class_uid=MRImageStorage,
        sop_instance_uid=sop_instance_uid or ds.SOPInstanceUID,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        calling_ae="A",
        recorder=recorder or _Recorder(),
    )


@pytest.mark.parametrize(
    ("syntax", "implicit", "deflate"),
    [
        (ExplicitVRLittleEndian, False, False),
        (ImplicitVRLittleEndian, True, False),
        (DeflatedExplicitVRLittleEndian, False, True),
    ],
)
def test_store_keeps_bytes_and_writes_valid_file_meta(
    tmp_path: Path, syntax: str, implicit: bool, deflate: bool
) -> None:
    ds = _dataset()
    body = _encode(ds, implicit)
    if deflate:
        compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
        body = compressor.compress(body) + compressor.flush()
    spool = Spool(tmp_path / "spool")
    recorder = _Recorder()
    instance, is_new = spool.store(
        body,
        sop_class_uid=MRImageStorage,
        sop_instance_uid=ds.SOPInstanceUID,
        transfer_syntax_uid=syntax,
        calling_ae="SCANNER ",
        recorder=recorder,
    )
    assert is_new and instance is not None
    assert (
        instance.path == tmp_path / "spool" / "1.2.3.4" / "1.2.3.4.5" / f"{ds.SOPInstanceUID}.dcm"
    )
    assert instance.calling_ae == "SCANNER"
    assert instance.series_description == "DWI station 1"
    assert instance.path.read_bytes().endswith(body)
    back = dcmread(instance.path)
    assert back.file_meta.TransferSyntaxUID == syntax
    assert str(back.file_meta.SourceApplicationEntityTitle).strip() == "SCANNER"
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert back.PixelData == ds.PixelData
    assert spool.read_spooled(instance.path).study_uid == "1.2.3.4"
    assert list(spool.scan()) == [instance.path]


def test_same_instance_twice_is_stored_once(tmp_path: Path) -> None:
    ds = _dataset()
    spool = Spool(tmp_path)
    recorder = _Recorder()
    first, new_first = _store(spool, ds, recorder)
    assert first is not None and new_first
    mtime = first.path.stat().st_mtime_ns
    second, new_second = _store(spool, ds, recorder)
    assert second is None and not new_second
    assert first.path.stat().st_mtime_ns == mtime
    assert len(recorder.rows) == 1


@pytest.mark.parametrize(
    ("study", "series", "message"),
    [
        ("../../etc", "1.2", "not a valid UID"),
        ("1.2.03", "1.2", "not a valid UID"),
        ("1.2", "", "missing or not a valid UID"),
        ("1." + "1" * 70, "1.2", "not a valid UID"),
    ],
)
def test_bad_uids_never_become_paths(tmp_path: Path, study: str, series: str, message: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns while we build the bad input
        ds = _dataset(study=study, series=series)
    spool = Spool(tmp_path / "spool")
    with pytest.raises(InvalidInstanceError, match=message):
        _store(spool, ds)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_request_and_data_set_uid_must_agree(tmp_path: Path) -> None:
    ds = _dataset()
    with pytest.raises(InvalidInstanceError, match="differs from the request"):
        _store(Spool(tmp_path), ds, sop_instance_uid="1.2.999")


def test_garbage_is_not_understood() -> None:
    with pytest.raises(InvalidInstanceError):
        read_instance_header(b"\x08\x00\x18\x00UI\xff\xff" + b"\x00" * 3, ExplicitVRLittleEndian)


def test_write_failure_is_a_spool_error_and_leaves_no_partial_file(tmp_path: Path) -> None:
    ds = _dataset()
    spool = Spool(tmp_path / "spool")
    (tmp_path / "spool" / "1.2.3.4").write_text("a file where the study folder should be")
    with pytest.raises(SpoolWriteError, match="cannot store"):
        _store(spool, ds)
    assert list((tmp_path / "spool" / ".incoming").rglob("*.part")) == []


def test_discard_incomplete_removes_leftovers(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    (tmp_path / ".incoming" / "x.abc.part").write_bytes(b"half")  # an earlier version's place
    (tmp_path / ".incoming" / "b" / "y.abc.part").write_bytes(b"half")
    assert spool.discard_incomplete() == 2
    assert list((tmp_path / ".incoming").rglob("*.part")) == []


def test_the_next_temporary_file_is_never_in_the_folder_being_filled(tmp_path: Path) -> None:
    folders = (str(tmp_path / "a"), str(tmp_path / "b"))
    for folder in folders:
        Path(folder).mkdir()
    pool = _TemporaryFilePool(folders, "t.", size=3)
    made = [pool.create() for _ in range(9)]
    for _, descriptor in made:
        os.close(descriptor)
    parents = [Path(path).parent.name for path, _ in made]
    assert parents == ["a", "a", "a", "b", "b", "b", "a", "a", "a"]
    # With the pool full (3 files), taking file k while file k + 3 is being made:
    assert all(parents[k] != parents[k + 3] for k in range(6))


def test_file_meta_encoding_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    ds = _dataset()
    path.write_bytes(
        encode_file_meta(MRImageStorage, ds.SOPInstanceUID, ExplicitVRLittleEndian, "ODD")
        + _encode(ds, False)
    )
    back = dcmread(path)
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.SourceApplicationEntityTitle == "ODD"


def test_uid_grammar() -> None:
    assert is_valid_uid("1.2.840.10008.1.2")
    assert is_valid_uid("0")
    for bad in ("", "1..2", "1.02", ".1", "1.2.", "a.b", "1" * 65):
        assert not is_valid_uid(bad)


def test_temporary_files_made_ahead_survive_recovery_and_go_at_close(tmp_path: Path) -> None:
    ds = _dataset()
    spool = Spool(tmp_path)
    _store(spool, ds)
    incoming = tmp_path / ".incoming"
    deadline = time.monotonic() + 5
    while not list(incoming.rglob("*.part")) and time.monotonic() < deadline:
        time.sleep(0.01)
    made_ahead = set(incoming.rglob("*.part"))
    assert made_ahead, "the pool made no temporary file ahead"
    (incoming / "crashed.999.part").write_bytes(b"half")
    assert spool.discard_incomplete() == 1
    assert made_ahead <= set(incoming.rglob("*.part"))
    spool.close()
    assert list(incoming.rglob("*.part")) == []
    assert spool.path_for("1.2.3.4", ds.SeriesInstanceUID, ds.SOPInstanceUID).exists()


def test_the_filler_stops_when_the_spool_folder_is_removed(tmp_path: Path) -> None:
    ds = _dataset()
    spool = Spool(tmp_path / "spool")
    _store(spool, ds)
    filler = spool._temporary_files._thread
    assert filler is not None
    shutil.rmtree(tmp_path / "spool")
    filler.join(timeout=5)
    assert not filler.is_alive()
