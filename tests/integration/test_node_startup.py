"""Start-up refusals of ``wbdwi serve``: one clear line on stderr, no traceback."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import service.node as node_module
from service.jobstore import SqliteJobStore
from service.settings import load_settings
from tests.conftest import free_port
from tests.helpers.node_harness import REPO, NodeProcess

pytestmark = [pytest.mark.integration]


def _serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WBDWI_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--device", "cpu", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env=environment,
        timeout=60,
    )


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


def test_second_node_on_the_same_data_folder_refuses_before_recovery(tmp_path: Path) -> None:
    with NodeProcess(tmp_path) as first:
        assert first.process is not None
        now = time.time()
        connection = sqlite3.connect(first.data_dir / "jobs.sqlite", timeout=10)
        with connection:
            connection.execute(
                "INSERT INTO jobs (study_uid, version, state, calling_ae, created_at, "
                "updated_at, last_instance_at) VALUES ('1.2.3', 1, 'processing', 'SCANNER', "
                "?, ?, ?)",
                (now, now, now),
            )
        connection.close()
        second = _serve(
            "--data-dir", str(first.data_dir),
            "--port", str(first.port),
            "--http-port", "0",
            "--log-format", "json",
        )  # fmt: skip
        assert second.returncode == 1, second.stderr
        line = _one_line(second.stderr)
        assert str(first.data_dir.resolve()) in line
        assert f"PID {first.process.pid}" in line
        # The running node's job was not put back to ready by a second recovery.
        assert first.job_states() == [(1, "processing", 1, "")]
        assert "recovered" not in second.stderr


def test_newer_job_store_schema_is_one_line_exit_1(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    connection = sqlite3.connect(data_dir / "jobs.sqlite")
    connection.execute("PRAGMA user_version=99")
    connection.close()
    result = _serve("--data-dir", str(data_dir), "--port", "1", "--http-port", "0")
    assert result.returncode == 1, result.stderr
    line = _one_line(result.stderr)
    assert line.startswith("wbdwi serve: cannot start: job store ")
    assert "schema version 99" in line


def test_job_store_that_is_not_a_database_is_one_line_exit_1(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "jobs.sqlite").write_bytes(b"this is not SQLite\n" * 200)
    result = _serve("--data-dir", str(data_dir), "--port", "1", "--http-port", "0")
    assert result.returncode == 1, result.stderr
    line = _one_line(result.stderr)
    assert "jobs.sqlite cannot be opened" in line


def test_bad_logging_level_is_a_settings_error_exit_2(tmp_path: Path) -> None:
    result = _serve(
        "--data-dir", str(tmp_path / "data"), env={"WBDWI_LOGGING_LEVEL": "loud"}
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    line = _one_line(result.stderr)
    assert line.startswith("wbdwi serve: logging: level 'loud' is not one of debug, info")
    assert not (tmp_path / "data").exists()


def _data_dir_with_interrupted_job(tmp_path: Path) -> Path:
    """A data folder whose store has a job left ``processing`` (recovery would resume it)."""
    data_dir = tmp_path / "data"
    SqliteJobStore(data_dir / "jobs.sqlite").close()
    now = time.time()
    connection = sqlite3.connect(data_dir / "jobs.sqlite")
    with connection:
        connection.execute(
            "INSERT INTO jobs (study_uid, version, state, calling_ae, created_at, updated_at, "
            "last_instance_at) VALUES ('1.2.3', 1, 'processing', 'SCANNER', ?, ?, ?)",
            (now, now, now),
        )
    connection.close()
    return data_dir


def _job_states(data_dir: Path) -> list[str]:
    connection = sqlite3.connect(data_dir / "jobs.sqlite")
    try:
        return [row[0] for row in connection.execute("SELECT state FROM jobs")]
    finally:
        connection.close()


def _can_bind(port: int) -> bool:
    try:
        probe = socket.create_server(("0.0.0.0", port))
    except OSError:
        return False
    probe.close()
    return True


@pytest.mark.parametrize("taken", ["dicom", "http"])
def test_port_in_use_is_one_line_exit_1_before_anything_starts(tmp_path: Path, taken: str) -> None:
    data_dir = _data_dir_with_interrupted_job(tmp_path)
    with socket.create_server(("0.0.0.0", 0)) as holder:
        busy = holder.getsockname()[1]
        other = free_port()
        dicom, http = (busy, other) if taken == "dicom" else (other, busy)
        result = _serve(
            "--data-dir", str(data_dir), "--port", str(dicom), "--http-port", str(http),
            "--log-format", "json",
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    line = _one_line(result.stderr)  # no node_starting, recovered or thread traceback
    kind, setting, address = (
        ("DICOM", "node.port", "0.0.0.0")
        if taken == "dicom"
        else ("HTTP", "node.http_port", "127.0.0.1")  # http.bind_address
    )
    assert line == (
        f"wbdwi serve: cannot start: {kind} port {busy} on {address} ({setting}): already in use "
        "(another program, or another node, listens on it)"
    )
    assert _job_states(data_dir) == ["processing"]  # recovery did not run
    assert _can_bind(other)  # the other port was released (or never bound)


def test_dicom_port_taken_during_recovery_stops_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The port is free at the check and taken before the listener opens: a clean stop."""
    with socket.create_server(("0.0.0.0", 0)) as holder:
        busy = holder.getsockname()[1]
        monkeypatch.setattr(node_module, "check_port_free", lambda *_: None)
        settings = load_settings(
            env={},
            overrides={
                "node": {
                    "data_dir": str(tmp_path / "data"),
                    "port": busy,
                    "http_port": free_port(),
                    "device": "cpu",
                },
            },
        )
        node = node_module.Node(settings)
        with pytest.raises(node_module.PortUnavailableError, match=f"DICOM port {busy} on "):
            node.start()
        threads = list(node._threads.values())
        assert threads  # the worker and the others had started
        node.stop()
    assert all(not thread.is_alive() for thread in threads)
    assert node.http is not None
    assert _can_bind(node.http.port)
    assert "Traceback" not in capsys.readouterr().err
