"""Shared test helpers: real external tools, free ports.

A test that needs dcmtk, Orthanc or dciodvfy asks for it through
:func:`require_tool`. When the tool is missing the test is skipped with the
reason shown in the summary (``-ra``), except under ``CI=true`` where a missing
tool is a failure: CI must run everything.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def tool_path(name: str) -> str | None:
    """Find ``name`` on PATH or in the virtual environment's bin folder."""
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


def require_tool(name: str, hint: str) -> str:
    """Return the tool's path, or skip (fail under CI=true) with ``hint``."""
    path = tool_path(name)
    if path is None:
        message = f"{name} not found ({hint})"
        if IN_CI:
            pytest.fail(f"CI=true and {message}")
        pytest.skip(message)
    return path


def free_port() -> int:
    """A TCP port that was free on loopback a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def response_chain(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One phantom patient's five exams through ``wbdwi process --prior`` (made once per run).

    See :mod:`tests.helpers.response_chain`; shared by the offline and the PACS history tests.
    """
    from tests.helpers.response_chain import run_chain

    return run_chain(tmp_path_factory.mktemp("response-chain"))
