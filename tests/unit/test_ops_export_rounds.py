"""A PACS outage (issue 14): one log line and one failed round per retry round, however
many files wait, and the export metrics count what their names say."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import structlog

from service.exporter import Exporter
from service.jobs import OutboxState
from service.jobstore import SqliteJobStore
from service.settings import ExportSettings
from tests.helpers.job_fixtures import exporting_job

MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY = "1.2.3"
FILES = 40


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens once it is closed


class _TickingClock:
    """Wall clock of the exporter that moves 5 ms at every reading (rows failed one after
    the other get different times, as on a busy machine)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            self.now += 0.005
            return self.now


def test_outage_logs_one_line_per_retry_round(tmp_path: Path) -> None:
    destination = f"PACS@127.0.0.1:{_closed_port()}"
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    try:
        exporting_job(store, tmp_path, [destination], FILES, write_files=True)
        clock = _TickingClock()
        settings = ExportSettings(backoff_initial_seconds=1.0, max_attempts=100)
        exporter = Exporter(store, settings, "WBDWI", clock=clock)
        per_round: list[int] = []
        for _ in range(6):
            pending = store.outbox(state=OutboxState.PENDING, limit=None)
            clock.now = max(clock.now, min(row.next_try_at for row in pending))  # next wake
            with structlog.testing.capture_logs() as logs:
                exporter.deliver_due()
            per_round.append(
                sum(1 for entry in logs if entry["event"] == "export_destination_unreachable")
            )
            attempts = {row.attempts for row in store.outbox(limit=None)}
            assert len(attempts) == 1, f"rows drifted apart: attempts {sorted(attempts)}"
        assert per_round == [1] * 6
        assert exporter.counters.failed_rounds == 6
        assert exporter.counters.failures == 6 * FILES
        assert exporter.counters.attempts == 6 * FILES
        assert exporter.counters.sent == 0
    finally:
        store.close()
