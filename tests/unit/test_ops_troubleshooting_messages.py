"""Messages of the IT guide's troubleshooting table (``deploy/README.md`` section 11), as the
node emits them on real code paths (issue 14).

- A peer that rejects the exporter's association (a pynetdicom storage SCP that answers
  only to its own AE title, or knows only other callers): ``export_configuration_problem``
  with the reason and the hint naming the side to fix.
- A delivery given up after ``export.max_attempts``: ``export_dead_lettered`` with
  ``last_error``.
- A study quiet for its quiet period: ``job_ready`` with the completion detector's reason.
- ``/readyz`` of a node whose DICOM listener stopped: ``not ready: DICOM listener not running``.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, AllStoragePresentationContexts
from structlog.testing import capture_logs

from dicom_node.receive.spool import SpooledInstance
from service.completion import CompletionDetector
from service.exporter import Exporter
from service.jobs import JobState, OutboxState
from service.jobstore import SqliteJobStore
from service.node import Node
from service.settings import ExportSettings, load_settings
from service.web.app import create_app
from tests.conftest import free_port
from tests.helpers.job_fixtures import exporting_job

MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY = "1.2.826.0.1.3680043.8.498.41"
FILES = 3
NODE_AET = "WBDWI"


@pytest.fixture(autouse=True)
def _no_wbdwi_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("WBDWI_")]:
        monkeypatch.delenv(name)


def _instance(folder: Path, received_at: float) -> SpooledInstance:
    return SpooledInstance(
        sop_instance_uid=f"{STUDY}.9.1",
        sop_class_uid=MR,
        study_uid=STUDY,
        series_uid=f"{STUDY}.1",
        series_description="WB DWI",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        calling_ae="SCANNER",
        path=folder / "1.dcm",
        size_bytes=1000,
        received_at=received_at,
    )


@contextmanager
def _strict_peer(ae_title: str, allowed_callers: list[str] | None = None) -> Iterator[int]:
    """A storage SCP that answers only to ``ae_title`` (and, if given, only these callers)."""
    ae = AE(ae_title=ae_title)
    ae.require_called_aet = True
    if allowed_callers is not None:
        ae.require_calling_aet = allowed_callers
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            ae.add_supported_context(context.abstract_syntax)
    server = ae.start_server(("127.0.0.1", 0), block=False)
    assert server is not None  # never with block=False
    try:
        assert server.socket is not None
        yield int(server.socket.getsockname()[1])
    finally:
        server.shutdown()


def _deliver_once(
    tmp_path: Path, destination: str, **export: float
) -> list[MutableMapping[str, Any]]:
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    try:
        exporting_job(store, tmp_path, [destination], FILES, write_files=True, study=STUDY)
        exporter = Exporter(store, ExportSettings(**export), NODE_AET)  # type: ignore[arg-type]
        with capture_logs() as logs:
            exporter.deliver_due()
        rows = store.outbox(limit=None)
        assert rows and all(row.state is not OutboxState.SENT for row in rows)
    finally:
        store.close()
    return logs


def test_a_peer_answering_to_another_ae_title_is_a_configuration_problem(
    tmp_path: Path,
) -> None:
    with _strict_peer("ARCHIVE") as port:
        logs = _deliver_once(tmp_path, f"PACS@127.0.0.1:{port}")
    problems = [entry for entry in logs if entry["event"] == "export_configuration_problem"]
    assert len(problems) == 1, logs
    reason, hint = str(problems[0]["reason"]), str(problems[0]["hint"])
    assert reason.startswith(f"C-STORE association with PACS@127.0.0.1:{port} as WBDWI failed")
    assert "(rejected: " in reason and "Called AE title not recognised" in reason
    assert hint == (
        f"the peer at 127.0.0.1:{port} does not answer to the AE title 'PACS' this node "
        "called it by: set the destination's AE title to the peer's own AE title"
    )
    assert problems[0]["retry_in_seconds"] == ExportSettings().rejected_retry_seconds


def test_a_peer_that_does_not_know_this_node_names_the_node_side(tmp_path: Path) -> None:
    with _strict_peer("PACS", allowed_callers=["SOMEONE_ELSE"]) as port:
        logs = _deliver_once(tmp_path, f"PACS@127.0.0.1:{port}")
    problems = [entry for entry in logs if entry["event"] == "export_configuration_problem"]
    assert len(problems) == 1, logs
    assert "Calling AE title not recognised" in str(problems[0]["reason"])
    assert problems[0]["hint"] == (
        f"the peer at 127.0.0.1:{port} does not know this node's AE title 'WBDWI': "
        "register it in the peer (AE title, host and port of this node)"
    )


def test_a_delivery_given_up_is_dead_lettered_with_its_last_error(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])  # nothing listens once it is closed
    destination = f"PACS@127.0.0.1:{port}"
    logs = _deliver_once(tmp_path, destination, max_attempts=1)
    dead = [entry for entry in logs if entry["event"] == "export_dead_lettered"]
    assert len(dead) == FILES, logs
    assert {entry["sop_instance_uid"] for entry in dead} == {f"{STUDY}.8.{n}" for n in range(FILES)}
    for entry in dead:
        assert entry["destination"] == destination
        assert entry["attempts"] == 1
        assert str(entry["last_error"]).startswith(
            f"C-STORE association with {destination} as WBDWI failed (unreachable or refused)"
        )
        assert entry["log_level"] == "error"


def test_a_quiet_study_is_ready_with_the_quiet_period_as_its_reason(tmp_path: Path) -> None:
    settings = load_settings(
        env={},
        overrides={
            "node": {"data_dir": str(tmp_path / "data")},
            "completion": {"quiet_seconds": 60, "incomplete_extra_wait_seconds": 0},
        },
    )
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    try:
        received = time.time()
        store.record_instance(_instance(tmp_path, received))
        clock = [received + 59.0]
        detector = CompletionDetector(store, settings, "1.0", clock=lambda: clock[0])
        with capture_logs() as early:
            assert detector.check() == []
        assert not [entry for entry in early if entry["event"] == "job_ready"]
        clock[0] = received + 60.5
        with capture_logs() as logs:
            submitted = detector.check()
        assert len(submitted) == 1
        assert store.status(submitted[0]).state is JobState.READY
    finally:
        store.close()
    ready = [entry for entry in logs if entry["event"] == "job_ready"]
    assert len(ready) == 1, logs
    assert ready[0]["reason"] == "no new instance for 60 s"
    assert (ready[0]["version"], ready[0]["instances"]) == (1, 1)


def test_readyz_names_the_stopped_dicom_listener(tmp_path: Path) -> None:
    settings = load_settings(
        env={},
        overrides={
            "node": {
                "data_dir": str(tmp_path / "data"),
                "port": free_port(),
                "http_port": 0,
                "device": "cpu",
            },
        },
    )
    node = Node(settings)
    node.start()
    try:
        client = create_app(node).test_client()
        assert client.get("/readyz").text == "ready\n"
        node.receiver.stop(grace_seconds=1.0)
        reply = client.get("/readyz")
        assert reply.status_code == 503
        assert reply.text == "not ready: DICOM listener not running\n"
    finally:
        node.stop()
