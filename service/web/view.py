"""What the web side needs of the node (:class:`service.node.Node` provides it).

A protocol, so that :mod:`service.web` does not import :mod:`service.node`
(which builds the web application).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Protocol

from dicom_node.receive.scp import DicomReceiver
from service.exporter import Exporter
from service.http import Metric
from service.jobstore import SqliteJobStore
from service.settings import Settings
from service.worker import Worker

__all__ = ["NodeView"]


class NodeView(Protocol):
    """The running node as the dashboard reads and acts on it."""

    settings: Settings
    store: SqliteJobStore
    data_dir: Path
    version: str
    device_description: str
    receiver: DicomReceiver
    worker: Worker
    exporter: Exporter

    @property
    def results_dir(self) -> Path:
        """Where result files are written."""
        ...

    def threads(self) -> dict[str, threading.Thread]:
        """The node's long-running threads by name."""
        ...

    def readiness_problems(self) -> list[str]:
        """What keeps the node from being ready (empty: ready)."""
        ...

    def metrics(self) -> list[Metric]:
        """Current metric families."""
        ...
