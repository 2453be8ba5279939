"""``dashboard_off`` (no dashboard credentials) is logged when the web server starts serving,
not when the application is built: a node whose HTTP port is taken stops with one line
(``tests/integration/test_node_startup.py``)."""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from service.node import Node
from service.settings import load_settings
from service.web.app import NO_CREDENTIALS, create_app
from service.web.server import WebServer
from tests.conftest import free_port


def test_dashboard_off_is_logged_once_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in os.environ if n.startswith("WBDWI_")]:
        monkeypatch.delenv(name)
    settings = load_settings(
        env={},
        overrides={"node": {"data_dir": str(tmp_path), "port": free_port(), "http_port": 0}},
    )
    node = Node(settings)  # not started: the application only
    try:
        with capture_logs() as built:
            server = WebServer("127.0.0.1", 0, create_app(node))
        assert [entry["event"] for entry in built] == []
        with capture_logs() as started:
            server.start()
        try:
            events = [entry["event"] for entry in started]
            assert events == ["http_started", "dashboard_off"]
            assert started[1]["reason"] == NO_CREDENTIALS
            assert started[1]["log_level"] == "warning"
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/healthz") as reply:
                assert reply.read() == b"ok\n"
        finally:
            server.stop()
    finally:
        node.stop()
