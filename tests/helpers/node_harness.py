"""Running the real node as a subprocess for integration tests.

:class:`NodeProcess` starts ``python -m service.cli serve`` on free ports with
a data folder under the test's tmp_path, waits for ``/readyz``, and can stop it
gracefully, ``kill -9`` it and start it again on the same data. The job store
is read directly (SQLite WAL allows a reader beside the node).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicom_node.simulator.scanner import write_exam
from processing.phantom import make_phantom
from tests.conftest import free_port, require_tool

__all__ = [
    "NodeProcess",
    "orthanc_study_instances",
    "storescu",
    "wait_for",
    "write_phantom_exam",
]

REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, poll: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def write_phantom_exam(
    out_dir: Path, *, patient_id: str = "PHANTOM-0001", seed: int = 0, distractors: bool = False
) -> list[Path]:
    """A small phantom exam as the simulated scanner writes it."""
    phantom = make_phantom("small", seed=seed, patient_id=patient_id)
    return write_exam(phantom, out_dir, distractors=distractors)


def storescu(
    files: Sequence[Path] | Path,
    port: int,
    *,
    calling_aet: str = "SCANNER",
    called_aet: str = "WBDWI",
    verbose: bool = False,
    required_only: bool = False,
) -> subprocess.CompletedProcess[str]:
    """dcmtk ``storescu`` over one association (TCP_NODELAY=1); returns the finished process.

    ``required_only`` proposes only the SOP classes of the files sent (``-R``), as a
    PACS forwarding them does: storescu's default list has no room for Segmentation.
    """
    binary = require_tool("storescu", "install dcmtk (make tools)")
    targets = [str(files)] if isinstance(files, Path) else [str(f) for f in files]
    command = [binary, "-aet", calling_aet, "-aec", called_aet, "+sd", "+r", "-nh"]
    if verbose:
        command.append("-v")  # prints each response status
    if required_only:
        command.append("-R")
    return subprocess.run(
        [*command, "127.0.0.1", str(port), *targets],
        capture_output=True,
        text=True,
        env={**os.environ, "TCP_NODELAY": "1"},
        timeout=300,
        check=False,
    )


def orthanc_study_instances(orthanc: Any, study_uid: str) -> list[dict[str, Any]]:
    """Every instance Orthanc holds in the study, with its simplified tags."""
    found = orthanc.rest_bytes("/tools/lookup", method="POST", body=study_uid.encode())
    hits = [hit for hit in json.loads(found) if hit.get("Type") == "Study"]
    if not hits:
        return []
    instances = orthanc.rest(f"/studies/{hits[0]['ID']}/instances")
    return [orthanc.rest(f"/instances/{item['ID']}/simplified-tags") for item in instances]


@dataclass
class NodeProcess:
    """The node as a subprocess, restartable on the same data folder."""

    workdir: Path
    destinations: Sequence[str] = ()
    quiet_seconds: float = 2.0
    extra_args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def data_dir(self) -> Path:
        return self.workdir / "node-data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "node.log"

    def start(self) -> NodeProcess:
        """Start and wait until ``/readyz`` answers 200."""
        command = [
            sys.executable, "-m", "service.cli", "serve",
            "--data-dir", str(self.data_dir),
            "--port", str(self.port),
            "--http-port", str(self.http_port),
            "--quiet-seconds", str(self.quiet_seconds),
            "--mpps-grace-seconds", "1",
            "--device", "cpu",
            "--log-format", "json",
        ]  # fmt: skip
        for destination in self.destinations:
            command += ["--destination", destination]
        command += list(self.extra_args)
        environment = {
            key: value for key, value in os.environ.items() if not key.startswith("WBDWI_")
        }
        environment.update(self.env)
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            self.process = subprocess.Popen(
                command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=environment
            )
        wait_for(self._ready, 60, f"the node to be ready (log: {self.log_path})", poll=0.2)
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"node exited with {self.process.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.http_port}/readyz", timeout=2
            ) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def kill(self) -> None:
        """``kill -9``."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM and wait; returns the exit status."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/metrics", timeout=5) as r:
            text: str = r.read().decode()
            return text

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Read the job store (a separate read connection)."""
        path = self.data_dir / "jobs.sqlite"
        if not path.exists():
            return []
        connection = sqlite3.connect(path, timeout=10)
        try:
            return list(connection.execute(sql, parameters).fetchall())
        finally:
            connection.close()

    def job_states(self) -> list[tuple[int, str, int, str]]:
        """``(job_id, state, version, reason)`` of every job."""
        rows = self.query("SELECT job_id, state, version, reason FROM jobs ORDER BY job_id")
        return [(int(a), str(b), int(c), str(d)) for a, b, c, d in rows]

    def all_jobs_in(self, *states: str) -> bool:
        jobs = self.job_states()
        return bool(jobs) and all(state in states for _, state, _, _ in jobs)

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
