"""``wbdwi send`` against a real DCMTK ``storescp`` over loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import (
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    MRImageStorage,
)

from dicom_node.scu.send import requested_contexts
from dicom_node.simulator.scanner import write_exam
from processing.phantom import make_phantom
from service.cli import main
from tests.conftest import free_port, require_tool


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"storescp exited with status {process.returncode}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"storescp did not listen on port {port} within {timeout_s} s")


def _start_storescp(out_dir: Path, extra: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    storescp = require_tool("storescp", "install dcmtk: make tools")
    port = free_port()
    out_dir.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [storescp, "--aetitle", "STORESCP", "--output-directory", str(out_dir), *extra, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # DCMTK sets TCP_NODELAY only when asked: without it delayed ACKs cap it near 20/s.
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    _wait_for_port(port, process)
    return process, port


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    received = tmp_path / "received"
    process, port = _start_storescp(received, [])
    try:
        yield received, port
    finally:
        process.terminate()
        process.wait(timeout=10)


def _sop_uids(folder: Path) -> set[str]:
    return {
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in folder.iterdir()
        if p.is_file()
    }


@pytest.mark.integration
def test_send_every_file_of_a_phantom_exam(
    storescp: tuple[Path, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    received, port = storescp
    phantom = make_phantom("small", snr=0)
    exam_dir = tmp_path / "exam"
    files = write_exam(phantom, exam_dir / "ge", vendor="ge", split="station")
    files += write_exam(phantom, exam_dir / "enhanced", vendor="enhanced", split="body")
    # One file compressed: storescp (default options) refuses JPEG-LS, so it is sent decompressed.
    compressed = dcmread(files[5])
    compressed.compress(JPEGLSLossless, generate_instance_uid=False)
    compressed.save_as(files[5], enforce_file_format=True)
    (exam_dir / "notes.txt").write_text("not DICOM\n", encoding="utf-8")

    status = main(
        ["send", str(exam_dir), "--host", "127.0.0.1", "--port", str(port), "--aet", "STORESCP"]
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert f"stored {len(files)}/{len(files)}" in captured.out
    sent = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    assert _sop_uids(received) == sent
    arrived = dcmread(next(p for p in received.iterdir() if compressed.SOPInstanceUID in p.name))
    assert arrived.file_meta.TransferSyntaxUID != JPEGLSLossless
    assert (arrived.pixel_array == compressed.pixel_array).all()


@pytest.mark.integration
def test_send_keeps_the_stored_syntax_when_accepted(tmp_path: Path) -> None:
    received = tmp_path / "received"
    process, port = _start_storescp(received, ["+xa"])  # accept all supported syntaxes
    try:
        phantom = make_phantom("small", snr=0)
        files = write_exam(phantom, tmp_path / "exam", vendor="standard", split="body")[:3]
        ds = dcmread(files[0])
        ds.compress(JPEGLSLossless, generate_instance_uid=False)
        ds.save_as(files[0], enforce_file_format=True)
        status = main(
            ["send", *map(str, files), "--host", "127.0.0.1", "--port", str(port), "--aet", "X"]
        )
        assert status == 0
        arrived = dcmread(next(p for p in received.iterdir() if ds.SOPInstanceUID in p.name))
        assert arrived.file_meta.TransferSyntaxUID == JPEGLSLossless
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.mark.integration
def test_send_fails_visibly_when_nobody_listens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    phantom = make_phantom("small", snr=0)
    files = write_exam(phantom, tmp_path, vendor="standard", split="body", distractors=False)
    port = free_port()
    status = main(
        ["send", str(files[0]), "--host", "127.0.0.1", "--port", str(port), "--aet", "NOBODY"]
    )
    assert status == 1
    assert f"NOBODY@127.0.0.1:{port}" in capsys.readouterr().err


def test_requested_contexts_offer_own_and_uncompressed_syntaxes() -> None:
    contexts = requested_contexts(
        [
            (MRImageStorage, ExplicitVRLittleEndian),
            (MRImageStorage, JPEGLSLossless),
            (MRImageStorage, ImplicitVRLittleEndian),
            (EnhancedMRImageStorage, ExplicitVRLittleEndian),
        ]
    )
    uncompressed = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    assert contexts == [
        (MRImageStorage, uncompressed),
        (MRImageStorage, [JPEGLSLossless]),
        (EnhancedMRImageStorage, uncompressed),
    ]
