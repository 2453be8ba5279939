"""The read-ahead cache: what assembly gets from it is what reading the file now gives."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from structlog.testing import capture_logs

import dicom_node.assembly.read_ahead as read_ahead_module
from dicom_node.assembly.assemble import assemble_exam
from dicom_node.assembly.dwi_frames import DwiInstance, read_instance
from dicom_node.assembly.read_ahead import InstanceCache, ReadAhead
from dicom_node.errors import UnreadableInstanceError
from dicom_node.simulator.scanner import write_exam
from processing.phantom import make_phantom


@pytest.fixture(scope="module")
def exam_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("read-ahead-exam")
    return sorted(write_exam(make_phantom("small", seed=3), folder, distractors=True))


def _dwi_files(files: list[Path]) -> list[Path]:
    return [path for path in files if isinstance(read_instance(path), DwiInstance)]


def test_assembly_from_the_cache_equals_assembly_from_the_files(exam_files: list[Path]) -> None:
    cache = InstanceCache(max_bytes=1 << 30)
    for path in exam_files:
        cache.prefetch(path)
    read_now = assemble_exam(exam_files)
    from_cache = assemble_exam(exam_files, read=cache.read)
    assert cache.hits == len(exam_files) and cache.misses == 0
    assert np.array_equal(read_now.exam.signal, from_cache.exam.signal)
    assert np.array_equal(read_now.exam.affine, from_cache.exam.affine)
    assert read_now.exam.b_values == from_cache.exam.b_values
    assert read_now.series_ignored == from_cache.series_ignored
    assert read_now.exam.series_used == from_cache.exam.series_used


def test_a_file_stored_again_is_read_again(exam_files: list[Path], tmp_path: Path) -> None:
    source = _dwi_files(exam_files)[0]
    path = tmp_path / "instance.dcm"
    shutil.copyfile(source, path)
    cache = InstanceCache(max_bytes=1 << 30)
    assert cache.prefetch(path)
    first = cache.read(path)
    assert isinstance(first, DwiInstance)
    # The scanner sends the instance again with other pixels: the spool replaces the file.
    dataset = dcmread(path)
    pixels = dataset.pixel_array.copy()
    pixels[:] = 7
    dataset.PixelData = pixels.tobytes()
    time.sleep(0.01)  # a later modification time even on coarse clocks
    dataset.save_as(tmp_path / "replacement.dcm")
    (tmp_path / "replacement.dcm").replace(path)
    second = cache.read(path)
    assert isinstance(second, DwiInstance)
    assert cache.misses == 1
    assert int(second.frames[0].stored.max()) == 7
    assert not np.array_equal(first.frames[0].stored, second.frames[0].stored)


def test_a_file_that_cannot_be_read_is_not_kept_and_the_job_gets_the_error(
    tmp_path: Path,
) -> None:
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + b"x" * 20)
    cache = InstanceCache(max_bytes=1 << 30)
    assert not cache.prefetch(broken)
    assert len(cache) == 0
    with pytest.raises(UnreadableInstanceError):
        cache.read(broken)


def test_the_cache_keeps_at_most_its_bound_oldest_out(exam_files: list[Path]) -> None:
    dwi = _dwi_files(exam_files)[:6]
    one = sum(frame.stored.nbytes for frame in read_instance(dwi[0]).frames)  # type: ignore[union-attr]
    cache = InstanceCache(max_bytes=3 * one)
    for path in dwi:
        assert cache.prefetch(path)
    assert cache.nbytes <= 3 * one
    assert len(cache) == 3
    assert cache.lookup(dwi[0]) is None  # the first read went first
    assert cache.lookup(dwi[-1]) is not None
    cache.discard(dwi)
    assert len(cache) == 0 and cache.nbytes == 0


def test_cached_pixels_cannot_be_changed_by_a_job(exam_files: list[Path]) -> None:
    path = _dwi_files(exam_files)[0]
    cache = InstanceCache(max_bytes=1 << 30)
    cache.prefetch(path)
    found = cache.lookup(path)
    assert isinstance(found, DwiInstance)
    with pytest.raises(ValueError, match="read-only"):
        found.frames[0].stored[0, 0] = 1


def test_the_read_ahead_process_reads_what_it_is_offered(
    exam_files: list[Path], tmp_path: Path
) -> None:
    read_ahead = ReadAhead(InstanceCache(max_bytes=1 << 30))
    broken = tmp_path / "cut-short.dcm"  # a DWI image cut off in its header
    broken.write_bytes(_dwi_files(exam_files)[0].read_bytes()[:1500])
    try:
        for path in exam_files:
            read_ahead.offer(path)
        read_ahead.offer(tmp_path / "gone.dcm")  # removed meanwhile: skipped
        read_ahead.offer(broken)  # left for the job, which reports why
        deadline = time.monotonic() + 120
        while read_ahead.read + read_ahead.failed < len(exam_files) + 2:
            assert time.monotonic() < deadline, "the read-ahead process did not keep up"
            time.sleep(0.05)
    finally:
        read_ahead.stop()
    assert read_ahead.read == len(exam_files)
    assert read_ahead.failed == 2
    assert read_ahead.pending == 0
    assert all(read_ahead.cache.lookup(path) is not None for path in exam_files)
    assert read_ahead.cache.lookup(broken) is None
    read_ahead.offer(exam_files[0])  # stopped: ignored
    assert read_ahead.pending == 0


def _reading_process(read_ahead: ReadAhead) -> subprocess.Popen[bytes]:
    process = read_ahead._process
    assert process is not None, "no reading process"
    return process


def test_the_reading_process_ends_with_stop_and_leaves_nothing(exam_files: list[Path]) -> None:
    read_ahead = ReadAhead(InstanceCache(max_bytes=1 << 30))
    read_ahead.start()
    assert read_ahead.wait_started(60), "the reading process did not start"
    process = _reading_process(read_ahead)
    read_ahead.offer(exam_files[0])
    started = time.monotonic()
    read_ahead.stop()
    # ended by the end of its input (exit status 0), not killed after the wait
    assert process.returncode == 0
    assert time.monotonic() - started < 30
    assert read_ahead._process is None


def test_a_dead_reading_process_stops_the_read_ahead_and_the_jobs_read_themselves(
    exam_files: list[Path],
) -> None:
    read_ahead = ReadAhead(InstanceCache(max_bytes=1 << 30))
    read_ahead.start()
    assert read_ahead.wait_started(60), "the reading process did not start"
    try:
        with capture_logs() as logs:
            _reading_process(read_ahead).kill()
            deadline = time.monotonic() + 30
            while not any(entry["event"] == "read_ahead_stopped" for entry in logs):
                assert time.monotonic() < deadline, logs
                time.sleep(0.05)
            for path in exam_files:
                read_ahead.offer(path)  # ignored: the jobs read their files
    finally:
        read_ahead.stop()
    assert read_ahead.pending == 0
    assert read_ahead.read == 0
    assert all(read_ahead.cache.lookup(path) is None for path in exam_files)


def test_the_reading_process_ends_when_the_node_is_killed(tmp_path: Path) -> None:
    # A node killed with SIGKILL runs no stop(): its reading process must end by itself.
    script = tmp_path / "node.py"
    script.write_text(
        "import sys, time\n"
        "from dicom_node.assembly.read_ahead import InstanceCache, ReadAhead\n"
        "read_ahead = ReadAhead(InstanceCache(1 << 20))\n"
        "read_ahead.start()\n"
        "assert read_ahead.wait_started(60)\n"
        "print(read_ahead._process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    node = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert node.stdout is not None
        reader = int(node.stdout.readline())
        assert Path(f"/proc/{reader}").exists()
    finally:
        node.kill()
        node.wait()
    deadline = time.monotonic() + 30
    while Path(f"/proc/{reader}").exists() and "zombie" not in _state(reader):
        assert time.monotonic() < deadline, f"the reading process {reader} outlived the node"
        time.sleep(0.05)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0]
    except (OSError, IndexError):
        return "gone"


def test_a_reading_process_that_cannot_start_stops_the_read_ahead_once(
    exam_files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_process(*args: object, **kwargs: object) -> object:
        raise OSError("Resource temporarily unavailable (injected)")

    monkeypatch.setattr(read_ahead_module.subprocess, "Popen", no_process)
    read_ahead = ReadAhead(InstanceCache(max_bytes=1 << 30))
    try:
        with capture_logs() as logs:
            for path in exam_files[:3]:  # the first batch starts the process, and fails
                read_ahead.offer(path)
            deadline = time.monotonic() + 30
            while read_ahead.pending:
                assert time.monotonic() < deadline, "the offered files were not let go"
                time.sleep(0.05)
            read_ahead.start()  # stopped: nothing more is tried or logged
    finally:
        read_ahead.stop()
    stopped = [entry for entry in logs if entry["event"] == "read_ahead_stopped"]
    assert len(stopped) == 1 and "injected" in stopped[0]["reason"], logs
    assert read_ahead.read == 0 and read_ahead.failed == 3
