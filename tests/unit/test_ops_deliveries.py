"""Delivery control (issue 14): send waiting deliveries now, cancel those to a removed
destination, see their next try and last error, and a warning at start."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import structlog

from service.cli import main
from service.jobs import JobState, OutboxState
from service.jobstore import SqliteJobStore
from service.node import Node
from service.settings import load_settings
from tests.helpers.job_fixtures import exporting_job

MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY = "1.2.3"
OLD = "OLDPACS@old:104"
PACS = "PACS@pacs:104"
FILES = 5


def _exporting_store(data_dir: Path, next_try_at: float) -> int:
    """One job exporting to two destinations; every delivery failed once and waits."""
    store = SqliteJobStore(data_dir / "jobs.sqlite")
    try:
        job_id = exporting_job(store, data_dir, (OLD, PACS), FILES)
        for row in store.outbox(state=OutboxState.PENDING, limit=None):
            error = f"association rejected by {row.destination}: called AE title not recognised"
            store.mark_attempt_failed(row.outbox_id, error, next_try_at, max_attempts=20)
        return job_id
    finally:
        store.close()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in os.environ if n.startswith("WBDWI_")]:
        monkeypatch.delenv(name)
    return tmp_path


def _store(data_dir: Path) -> SqliteJobStore:
    return SqliteJobStore(data_dir / "jobs.sqlite")


def test_retry_deliveries_makes_waiting_rows_due_now_while_exporting(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _exporting_store(data_dir, next_try_at=time.time() + 600)  # the rejected-association wait
    assert main(["retry", "--deliveries", "--destination", PACS, "--data-dir", str(data_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"{FILES} waiting deliveries to {PACS} are due now"
    store = _store(data_dir)
    try:
        now = time.time()
        due = store.outbox(state=OutboxState.PENDING, due_before=now)
        assert {row.destination for row in due} == {PACS}
        assert len(due) == FILES
        assert store.jobs()[0].state is JobState.EXPORTING  # nothing else changed
    finally:
        store.close()
    assert main(["retry", "--deliveries", "--data-dir", str(data_dir)]) == 0
    assert capsys.readouterr().out.strip() == f"{2 * FILES} waiting deliveries are due now"


def test_retry_needs_a_job_or_deliveries(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _exporting_store(data_dir, next_try_at=time.time() + 600)
    assert main(["retry", "--data-dir", str(data_dir)]) == 2
    assert "give either a JOB number or --deliveries" in capsys.readouterr().err


def test_cancel_deliveries_lets_the_job_finish(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = _exporting_store(data_dir, next_try_at=time.time() + 600)
    with structlog.testing.capture_logs() as logs:
        assert main(["deliveries", "cancel", OLD, "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == f"{FILES} waiting deliveries to {OLD} cancelled"
    (logged,) = [entry for entry in logs if entry["event"] == "deliveries_cancelled"]
    assert logged["count"] == FILES
    assert "(wbdwi deliveries cancel)" in logged["by"]  # who did it
    store = _store(data_dir)
    try:
        cancelled = store.outbox(state=OutboxState.CANCELLED, limit=None)
        assert len(cancelled) == FILES
        assert all(row.last_error.startswith("cancelled by ") for row in cancelled)
        assert store.status(job_id).state is JobState.EXPORTING  # PACS still waits
        for row in store.outbox(state=OutboxState.PENDING, limit=None):
            store.mark_sent(row.outbox_id)
        finished = store.status(job_id)
        assert finished.state is JobState.DONE  # a cancelled delivery does not fail it
        # nor does it hold retention: the job counts as delivered (PACS acknowledged all)
        (delivery,) = store.job_deliveries()
        assert delivery.delivered
        assert delivery.outbox_rows == FILES
    finally:
        store.close()
    assert main(["deliveries", "cancel", OLD, "--data-dir", str(data_dir)]) == 1
    assert f"nothing is waiting for {OLD}" in capsys.readouterr().err


def test_status_shows_next_try_and_last_error_per_destination(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _exporting_store(data_dir, next_try_at=time.time() + 600)
    main(["status", "--data-dir", str(data_dir)])
    out = capsys.readouterr().out
    section = out[out.index("outbox:") :].splitlines()
    line = section[section.index(f"  {PACS}: pending {FILES}, sent 0, dead 0, cancelled 0") + 1]
    assert line.lstrip().startswith("next try in ")
    assert f"last error: association rejected by {PACS}: called AE title not recognised" in line
    assert line.endswith("send now: wbdwi retry --deliveries")


def test_start_warns_once_per_unconfigured_destination(data_dir: Path) -> None:
    _exporting_store(data_dir, next_try_at=time.time() + 600)
    settings = load_settings(
        overrides={"node": {"data_dir": str(data_dir)}, "export": {"destinations": [PACS]}}
    )
    node = Node(settings)
    try:
        with structlog.testing.capture_logs() as logs:
            assert node.warn_unconfigured_destinations() == [OLD]
    finally:
        node.store.close()
    warnings = [entry for entry in logs if entry["event"] == "destination_not_configured"]
    assert len(warnings) == 1
    assert warnings[0]["destination"] == OLD
    assert warnings[0]["waiting"] == FILES
    assert warnings[0]["hint"] == (
        "add it back to export.destinations, or cancel its deliveries with "
        "'wbdwi deliveries cancel OLDPACS@old:104'"
    )


def test_a_failure_reported_after_a_cancel_keeps_the_row_cancelled(data_dir: Path) -> None:
    job_id = _exporting_store(data_dir, next_try_at=time.time() + 600)
    store = _store(data_dir)
    try:
        in_flight = store.outbox(state=OutboxState.PENDING, destination=OLD, limit=None)
        assert store.cancel_deliveries(OLD, "admin") == FILES
        for row in in_flight:  # the exporter's round ends after the cancel
            state = store.mark_attempt_failed(row.outbox_id, "timeout", 0.0, max_attempts=20)
            assert state is OutboxState.CANCELLED
        assert len(store.outbox(state=OutboxState.CANCELLED, limit=None)) == FILES
        for row in store.outbox(state=OutboxState.PENDING, limit=None):
            store.mark_sent(row.outbox_id)
        assert store.status(job_id).state is JobState.DONE
    finally:
        store.close()
