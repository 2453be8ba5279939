"""Start-up refusals of ``wbdwi serve``: one clear line on stderr, no traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.node_harness import REPO, NodeProcess

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
