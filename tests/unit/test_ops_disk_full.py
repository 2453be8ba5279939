"""Disk full (issue 14): no job starts while the data folder is short of space, one log
line per change of state, /readyz gives the reason, work resumes when space returns; a
failing claim is logged once, not twice a second."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import structlog

from service.cli import main
from service.disk import DiskGuard
from service.jobs import JobSpec, JobState
from service.jobstore import SqliteJobStore
from service.node import Node
from service.settings import load_settings
from service.worker import JobOutcome, Worker
from tests.helpers.job_fixtures import ready_job

MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY = "1.2.3"
MB = 1024 * 1024


class _Disk:
    """Free space that a test sets."""

    def __init__(self, free_mb: int) -> None:
        self.free_mb = free_mb

    def __call__(self, _: Path) -> int:
        return self.free_mb * MB


def _wait(condition: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_no_job_starts_while_the_disk_is_short_and_work_resumes(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    disk = _Disk(free_mb=100)
    guard = DiskGuard(tmp_path, min_free_mb=500, free_bytes=disk)
    ran: list[int] = []

    def runner(spec: JobSpec) -> JobOutcome:
        ran.append(spec.job_id)
        return JobOutcome(result_files=(), device="cpu")

    worker = Worker(store, runner=runner, room=guard.check)
    job_id = ready_job(store, tmp_path)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop, 0.02))
    try:
        with structlog.testing.capture_logs() as logs:
            thread.start()
            time.sleep(0.5)  # some 25 idle rounds
            assert ran == []
            assert store.status(job_id).state is JobState.READY
            disk.free_mb = 600
            _wait(lambda: ran == [job_id])
    finally:
        stop.set()
        worker.wake()
        thread.join(10)
        store.close()
    events = [entry["event"] for entry in logs]
    assert events.count("disk_space_low") == 1
    assert events.count("disk_space_recovered") == 1
    low = next(entry for entry in logs if entry["event"] == "disk_space_low")
    assert low["reason"].startswith("disk almost full: 100 MB free in ")
    assert "node.min_free_disk_mb is 500" in low["reason"]


def test_a_failing_claim_is_logged_once_per_error(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    failing = {"on": True}
    claim = store.claim

    def broken_claim(now: float | None = None) -> JobSpec | None:
        if failing["on"]:
            raise OSError(28, "No space left on device")
        return claim(now)

    store.claim = broken_claim  # type: ignore[method-assign]
    worker = Worker(store, runner=lambda spec: JobOutcome(result_files=(), device="cpu"))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop, 0.02))
    try:
        with structlog.testing.capture_logs() as logs:
            thread.start()
            time.sleep(0.5)
            failing["on"] = False
            time.sleep(0.2)
    finally:
        stop.set()
        worker.wake()
        thread.join(10)
        store.close()
    events = [entry["event"] for entry in logs]
    assert events.count("job_claim_failed") == 1
    assert events.count("job_claim_recovered") == 1


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("WBDWI_")]:
        monkeypatch.delenv(name)


@pytest.mark.usefixtures("clean_env")
def test_readiness_and_status_give_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    huge = 10**9  # MB: no disk has that much free
    settings = load_settings(
        overrides={"node": {"data_dir": str(tmp_path), "min_free_disk_mb": huge}}
    )
    node = Node(settings)
    try:
        problems = node.readiness_problems()
    finally:
        node.store.close()
    (disk,) = [problem for problem in problems if problem.startswith("disk almost full")]
    assert f"node.min_free_disk_mb is {huge}" in disk
    capsys.readouterr()
    monkeypatch.setenv("WBDWI_NODE_MIN_FREE_DISK_MB", str(huge))  # what the node runs with
    main(["status", "--data-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "warning: disk almost full: " in out
