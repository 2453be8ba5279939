"""The native acceptor with real peers: dcmtk echoscu/storescu and pynetdicom as SCU."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pynetdicom import AE

from dicom_node.receive.scp import VERIFICATION
from dicom_node.scu.mpps import performed_exam
from tests.conftest import require_tool
from tests.helpers.node_harness import write_phantom_exam
from tests.helpers.scp_harness import running_receiver

pytestmark = [pytest.mark.integration]

# (dcmtk converter or None, storescu option, transfer syntax stored)
_SYNTAXES = [
    ("dcmcjpeg", "-xs", JPEGLosslessSV1),
    ("dcmcjpls", "-xt", JPEGLSLossless),
    ("dcmcrle", "-xr", RLELossless),
    (None, "-xd", DeflatedExplicitVRLittleEndian),
    (None, "-xi", ImplicitVRLittleEndian),
    (None, "-xe", ExplicitVRLittleEndian),
]


def _dataset_bytes(path: Path) -> bytes:
    """The data set of a DICOM file, after its file meta group."""
    data = path.read_bytes()
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length :]


def test_dcmtk_echo_and_store_in_each_transfer_syntax(tmp_path: Path) -> None:
    storescu = require_tool("storescu", "install dcmtk (make tools)")
    echoscu = require_tool("echoscu", "install dcmtk (make tools)")
    originals = write_phantom_exam(tmp_path / "exam")[: len(_SYNTAXES)]
    environment = {**os.environ, "TCP_NODELAY": "1"}
    with running_receiver(tmp_path / "node") as (receiver, store):
        port = str(receiver.port)
        echo = subprocess.run(
            [echoscu, "-aec", "WBDWI", "127.0.0.1", port],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert echo.returncode == 0, echo.stderr
        sent: dict[str, tuple[Path, Path, str]] = {}
        for original, (converter, option, syntax) in zip(originals, _SYNTAXES, strict=True):
            source = original
            if converter is not None:
                source = tmp_path / f"{original.stem}-{converter}.dcm"
                tool = require_tool(converter, "install dcmtk (make tools)")
                subprocess.run([tool, str(original), str(source)], check=True)
            result = subprocess.run(
                [storescu, "-aec", "WBDWI", option, "127.0.0.1", port, str(source)],
                capture_output=True, text=True, env=environment, timeout=60, check=False,
            )  # fmt: skip
            assert result.returncode == 0, result.stdout + result.stderr
            uid = str(dcmread(original, stop_before_pixels=True).SOPInstanceUID)
            sent[uid] = (original, source, syntax)
        assert store.instance_totals()[0] == len(_SYNTAXES)
    spooled = {path.stem: path for path in (tmp_path / "node" / "spool").rglob("*.dcm")}
    assert set(spooled) == set(sent)
    for uid, (original, source, syntax) in sent.items():
        stored = dcmread(spooled[uid])
        assert stored.file_meta.TransferSyntaxUID == syntax
        if syntax not in (DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian):
            # Stored as received: the data set bytes are the sender's, unchanged.
            assert _dataset_bytes(spooled[uid]) == _dataset_bytes(source)
        np.testing.assert_array_equal(stored.pixel_array, dcmread(original).pixel_array)


def test_pynetdicom_scu_store_echo_and_mpps(tmp_path: Path) -> None:
    """``wbdwi send --mpps`` (pynetdicom, its own process as a scanner would be) and an echo.

    pynetdicom's requestor can lose a response that arrives before its reactor
    thread has paused (pynetdicom issue 875); sharing a process (and the GIL)
    with the acceptor makes that far likelier, hence the separate process.
    """
    files = write_phantom_exam(tmp_path / "exam")
    exam = performed_exam(files)
    with running_receiver(tmp_path / "node") as (receiver, store):
        sent = subprocess.run(
            [sys.executable, "-m", "service.cli", "send", str(tmp_path / "exam"),
             "--host", "127.0.0.1", "--port", str(receiver.port), "--aet", "WBDWI",
             "--calling-aet", "SCANNER", "--mpps"],
            capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert store.instance_totals()[0] == len(files)
    with sqlite3.connect(tmp_path / "node" / "jobs.sqlite") as database:
        [(study_uid, status, calling_ae, references)] = database.execute(
            "SELECT study_uid, status, calling_ae, referenced_sop_uids FROM mpps"
        ).fetchall()
    assert (study_uid, status, calling_ae) == (exam.study_uid, "COMPLETED", "SCANNER")
    assert all(uid in references for series in exam.series for _, uid in series.instances)
    with running_receiver(tmp_path / "node-echo") as (receiver, _):
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context(VERIFICATION)
        association = ae.associate("127.0.0.1", receiver.port, ae_title="WBDWI")
        assert association.is_established
        assert int(association.send_c_echo().Status) == 0
        association.release()
        assert receiver.stats.associations_accepted == 1


def _secondary_capture() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    return ds


@pytest.mark.parametrize("accept_other_storage", [True, False])
def test_other_storage_classes_follow_the_policy(
    tmp_path: Path, accept_other_storage: bool
) -> None:
    with running_receiver(tmp_path, accept_other_storage=accept_other_storage) as (receiver, _):
        ae = AE(ae_title="SCANNER")
        ae.add_requested_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)
        ae.add_requested_context(VERIFICATION)
        association = ae.associate("127.0.0.1", receiver.port, ae_title="WBDWI")
        assert association.is_established
        try:
            if accept_other_storage:
                dataset = _secondary_capture()
                dataset.file_meta = Dataset()
                dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
                assert int(association.send_c_store(dataset).Status) == 0
                assert receiver.stats.instances_ignored == 1
            else:
                [rejected] = association.rejected_contexts
                assert rejected.abstract_syntax == SecondaryCaptureImageStorage
                assert rejected.result == 3  # abstract syntax not supported
        finally:
            association.release()
        assert not list((tmp_path / "spool").rglob("*.dcm"))
