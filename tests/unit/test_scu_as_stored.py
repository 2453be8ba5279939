"""Result files go to the peer as stored, or converted when it wants the other syntax (issue 13)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage, generate_uid
from pynetdicom import AE, evt
from pynetdicom.events import Event

from dicom_node.scu.export import read_result_identity, store_results
from dicom_node.scu.send import Destination, StoreOutcome, send_files


def _file(folder: Path) -> Path:
    ds = Dataset()
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "Test^AsStored"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture(params=[ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def peer(request: pytest.FixtureRequest) -> Iterator[tuple[int, list[tuple[str, str]]]]:
    """A Storage SCP accepting MR images in one syntax only; it records (syntax, patient)."""
    received: list[tuple[str, str]] = []

    def on_store(event: Event) -> int:
        dataset = event.dataset
        received.append((str(event.context.transfer_syntax), str(dataset.PatientName)))
        return 0x0000

    ae = AE(ae_title="PEER")
    ae.add_supported_context(MRImageStorage, [request.param])
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert server is not None  # block=False returns the server
    try:
        yield int(server.server_address[1]), received
    finally:
        server.shutdown()


def test_send_files_stores_in_the_syntax_the_peer_accepted(
    tmp_path: Path, peer: tuple[int, list[tuple[str, str]]]
) -> None:
    port, received = peer
    path = _file(tmp_path)
    report = send_files([path], Destination("127.0.0.1", port, "PEER"))
    assert report.ok, report.outcomes
    assert [patient for _, patient in received] == ["Test^AsStored"]


def test_store_results_stores_in_the_syntax_the_peer_accepted(
    tmp_path: Path, peer: tuple[int, list[tuple[str, str]]]
) -> None:
    port, received = peer
    path = _file(tmp_path)
    outcomes: list[StoreOutcome] = []
    store_results(
        [read_result_identity(path)], Destination("127.0.0.1", port, "PEER"), outcomes.append
    )
    assert [o.stored for o in outcomes] == [True], outcomes
    assert [patient for _, patient in received] == [str(dcmread(path).PatientName)]
