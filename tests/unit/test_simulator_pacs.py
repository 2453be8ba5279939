"""The stand-in PACS (:mod:`dicom_node.simulator.pacs`) over loopback, through the node's SCU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from dicom_node.receive.scp import VERIFICATION
from dicom_node.scu.association import Peer, associate, reactor_paused
from dicom_node.scu.send import send_files
from dicom_node.simulator.pacs import (
    CANNOT_UNDERSTAND,
    OUT_OF_RESOURCES,
    SUCCESS,
    running_folder_pacs,
)


def _image(number: int, sop_instance_uid: str | None = None) -> Dataset:
    dataset = Dataset()
    dataset.SOPClassUID = MRImageStorage
    dataset.SOPInstanceUID = sop_instance_uid or generate_uid()
    dataset.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.1"
    dataset.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    dataset.Modality = "MR"
    dataset.InstanceNumber = number
    dataset.Rows, dataset.Columns = 4, 3
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.PixelData = (np.arange(12, dtype=np.uint16) * (number + 1)).tobytes()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return dataset


def _write(dataset: Dataset, path: Path) -> Path:
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_received_instances_are_written_whole_under_their_uid(tmp_path: Path) -> None:
    sent = [_write(_image(n), tmp_path / f"sent{n}.dcm") for n in (1, 2, 3)]
    with running_folder_pacs(tmp_path / "pacs", ae_title="TESTPACS") as pacs:
        assert pacs.port > 0 and str(pacs) == f"TESTPACS@127.0.0.1:{pacs.port}"
        report = send_files(sent, Peer(pacs.host, pacs.port, pacs.ae_title, timeout_s=10))
        received = pacs.received()
    assert report.ok, report.summary()
    assert [path.parent for path in received] == [tmp_path / "pacs"] * 3
    assert not list((tmp_path / "pacs").glob(".*"))  # no temporary file left
    for path in sent:
        original = dcmread(path)
        copy = dcmread(tmp_path / "pacs" / f"{original.SOPInstanceUID}.dcm")
        assert copy.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
        assert copy.InstanceNumber == original.InstanceNumber
        assert copy.PixelData == original.PixelData


def test_it_answers_c_echo(tmp_path: Path) -> None:
    with (
        running_folder_pacs(tmp_path / "pacs") as pacs,
        associate(
            Peer(pacs.host, pacs.port, "ANYTITLE", "ANYCALLER", timeout_s=10),
            [(VERIFICATION, None)],
            purpose="C-ECHO",
        ) as association,
        reactor_paused(association),
    ):
        assert int(association.send_c_echo().Status) == SUCCESS


def _store(pacs_peer: Peer, dataset: Dataset) -> int:
    with (
        associate(pacs_peer, [(MRImageStorage, [ExplicitVRLittleEndian])], purpose="C-STORE") as a,
        reactor_paused(a),
    ):
        return int(a.send_c_store(dataset).Status)


def test_an_instance_uid_that_is_no_file_name_is_refused(tmp_path: Path) -> None:
    with running_folder_pacs(tmp_path / "pacs") as pacs:
        peer = Peer(pacs.host, pacs.port, pacs.ae_title, timeout_s=10)
        # pydicom warns of the invalid UID wherever it is set; the SCU sends it all the same.
        with pytest.warns(UserWarning, match="Invalid value for VR UI"):
            status = _store(peer, _image(1, sop_instance_uid="../../escape"))
        assert status == CANNOT_UNDERSTAND
        assert _store(peer, _image(2)) == SUCCESS
        assert len(pacs.received()) == 1
    assert not (tmp_path / "escape.dcm").exists()


def test_a_failed_write_is_answered_out_of_resources(tmp_path: Path) -> None:
    with running_folder_pacs(tmp_path / "pacs") as pacs:
        pacs.folder.rmdir()  # the disk "went away"
        peer = Peer(pacs.host, pacs.port, pacs.ae_title, timeout_s=10)
        assert _store(peer, _image(1)) == OUT_OF_RESOURCES
