"""The start log says which device processes, and why not the GPU when it is not used."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

import processing.backend as backend_module
from service.node import Node
from service.settings import load_settings

NO_DEVICE = (
    "CuPy is installed but no CUDA device is usable "
    "(cudaErrorNoDevice: no CUDA-capable device is detected); use --device cpu"
)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    settings = load_settings(env={}, overrides={"node": {"data_dir": tmp_path, "port": 11112}})
    created = Node(settings)
    yield created
    created.stop()


def _device_event(node: Node) -> MutableMapping[str, Any]:
    with capture_logs() as logs:
        node.select_device()
    [event] = [entry for entry in logs if entry["event"] == "processing_device"]
    return event


def test_auto_without_usable_gpu_logs_the_detection_reason(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend_module, "gpu_status", lambda: (False, NO_DEVICE))
    event = _device_event(node)
    assert event["device"] == "cpu"
    assert event["requested"] == "auto"
    assert event["gpu_unused_reason"] == NO_DEVICE
    assert str(event["description"]).startswith("cpu (numpy ")


def test_cpu_requested_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backend_module, "gpu_status", lambda: (True, "gpu (H100, cupy 13)"))
    settings = load_settings(env={}, overrides={"node": {"data_dir": tmp_path, "device": "cpu"}})
    node = Node(settings)
    try:
        event = _device_event(node)
    finally:
        node.stop()
    assert event["device"] == "cpu"
    assert event["gpu_unused_reason"] == "device cpu requested"
