"""Start-up refusals of ``wbdwi serve``: one clear line on stderr, no traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
