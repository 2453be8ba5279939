"""A real Orthanc on loopback for integration tests (the PACS of the tests).

Usage::

    with running_orthanc(tmp_path) as pacs:
        send files to ("127.0.0.1", pacs.dicom_port) with called AE pacs.aet
        pacs.rest("/instances")            -> parsed JSON
        pacs.rest_bytes("/instances/x/preview")  -> raw bytes

The server gets a temporary JSON configuration: free HTTP and DICOM ports,
storage and index in a temporary folder, no plugins unless asked, no authentication,
loopback only. :func:`running_orthanc` waits until the REST API answers
(failing with Orthanc's log if it does not start) and always stops the
process on exit (terminate, then kill).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import free_port, require_tool

__all__ = ["ORTHANC_AET", "OrthancServer", "orthanc_binary", "running_orthanc", "storescu_binary"]

ORTHANC_AET = "ORTHANC"
_START_TIMEOUT_S = 30.0


def orthanc_binary() -> str:
    """Path of the Orthanc executable, or skip the test (fail under ``CI=true``)."""
    if Path("/usr/sbin/Orthanc").exists():
        return "/usr/sbin/Orthanc"
    return require_tool("Orthanc", "install the Debian package orthanc (make tools)")


@dataclass(frozen=True)
class OrthancServer:
    """A running Orthanc: ports, AE title and a small REST client."""

    http_port: int
    dicom_port: int
    aet: str
    storage: Path
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def rest_bytes(self, path: str, *, method: str = "GET", body: bytes | None = None) -> bytes:
        """Raw response body of ``method path`` (raises ``urllib.error.HTTPError`` on 4xx/5xx)."""
        request = urllib.request.Request(self.base_url + path, data=body, method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            data: bytes = response.read()
            return data

    def rest(self, path: str, *, method: str = "GET", body: Any = None) -> Any:
        """JSON response of ``method path`` (``body`` sent as JSON when given)."""
        payload = None if body is None else json.dumps(body).encode()
        return json.loads(self.rest_bytes(path, method=method, body=payload) or b"null")

    def log(self) -> str:
        """Orthanc's own log so far (for assertion messages)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _wait_until_ready(server: OrthancServer, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"Orthanc exited with status {process.returncode} while starting:\n{server.log()}"
            )
        try:
            server.rest("/system")
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise RuntimeError(f"Orthanc did not answer within {_START_TIMEOUT_S} s:\n{server.log()}")


@contextmanager
def running_orthanc(
    workdir: Path,
    *,
    aet: str = ORTHANC_AET,
    dicom_port: int | None = None,
    http_port: int | None = None,
    plugins: Sequence[str] = (),
    extra_config: Mapping[str, Any] | None = None,
) -> Iterator[OrthancServer]:
    """Start Orthanc with its files under ``workdir``; stop it on exit.

    ``dicom_port``/``http_port`` fix the ports (free ones otherwise), so that a test
    can start Orthanc again where a node already sends. ``plugins`` are shared-library
    paths to load (the viewer test loads DICOMweb and the Web Viewer);
    ``extra_config`` adds or replaces top-level configuration entries.
    """
    binary = orthanc_binary()
    root = Path(workdir) / "orthanc"
    storage = root / "storage"
    storage.mkdir(parents=True, exist_ok=True)
    server = OrthancServer(
        http_port=http_port or free_port(),
        dicom_port=dicom_port or free_port(),
        aet=aet,
        storage=storage,
        log_path=root / "orthanc.log",
    )
    config = {
        "Name": "wbdwi-test-pacs",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "StorageCompression": False,
        "HttpServerEnabled": True,
        "HttpPort": server.http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": aet,
        "DicomPort": server.dicom_port,
        "DicomCheckCalledAet": False,
        "DicomModalities": {},
        "Plugins": list(plugins),
        "ConcurrentJobs": 1,
        "HttpThreadsCount": 4,
        "SaveJobs": False,
        **(extra_config or {}),
    }
    config_path = root / "orthanc.json"
    config_path.write_text(json.dumps(config, indent=2))
    with server.log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, "--no-jobs", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            # DCMTK inside Orthanc reads TCP_NODELAY: without it every C-STORE response
            # waits for a delayed ACK (~20 instances/s instead of hundreds).
            env={**os.environ, "LANG": "C", "TCP_NODELAY": "1"},
        )
    try:
        _wait_until_ready(server, process)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def storescu_binary() -> str:
    """Path of dcmtk's storescu, or skip the test (fail under ``CI=true``)."""
    return shutil.which("storescu") or require_tool("storescu", "install dcmtk (make tools)")
