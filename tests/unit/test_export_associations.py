"""Several associations per destination and round (issue 13 latency): every file is
acknowledged once, each association's files in order, and a peer that takes one
association at a time still gets every file, with nothing failed or dead-lettered."""

from __future__ import annotations

import os
import subprocess
import threading
from collections import defaultdict
from pathlib import Path

import pytest
import structlog
from pydicom import dcmread
from pynetdicom import AE, evt
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

from service.exporter import MIN_FILES_PER_ASSOCIATION, Exporter, split_round
from service.jobs import JobState, OutboxState
from service.jobstore import SqliteJobStore
from service.settings import ExportSettings
from tests.conftest import free_port, require_tool
from tests.helpers.job_fixtures import STUDY, exporting_job

FILES = 3 * MIN_FILES_PER_ASSOCIATION + 5


class _Peer:
    """A pynetdicom storage SCP that notes which association brought which instance."""

    def __init__(self, maximum_associations: int = 10) -> None:
        self.by_association: dict[int, list[str]] = defaultdict(list)
        self.associations_seen: set[int] = set()
        self._lock = threading.Lock()
        self.ae = AE(ae_title="PACS")
        self.ae.maximum_associations = maximum_associations
        self.ae.add_supported_context(MRImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        self.port = free_port()
        server = self.ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
        )
        assert server is not None
        self.server = server

    def _on_store(self, event: evt.Event) -> int:
        with self._lock:
            self.by_association[id(event.assoc)].append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    @property
    def received(self) -> list[str]:
        return [uid for uids in self.by_association.values() for uid in uids]


def _uids(count: int) -> list[str]:
    return [f"{STUDY}.8.{number}" for number in range(count)]


def _deliver(
    tmp_path: Path, destination: str, associations: int, **settings: float
) -> tuple[SqliteJobStore, Exporter, list[bool], list[dict[str, object]]]:
    """One exporter round of ``FILES`` files; the store, exporter, forced writes and log."""
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    exporting_job(store, tmp_path, [destination], FILES, write_files=True)
    forced: list[bool] = []
    mark_sent = store.mark_sent

    def spy(outbox_id: int, *, durable: bool = True) -> None:
        forced.append(durable)
        mark_sent(outbox_id, durable=durable)

    store.mark_sent = spy  # type: ignore[method-assign]
    exporter = Exporter(
        store,
        ExportSettings(associations_per_destination=associations, **settings),  # type: ignore[arg-type]
        "WBDWI",
    )
    with structlog.testing.capture_logs() as logs:
        assert exporter.deliver_due() == FILES
    return store, exporter, forced, logs


def _round_logged(logs: list[dict[str, object]]) -> dict[str, object]:
    [entry] = [entry for entry in logs if entry["event"] == "export_round"]
    return entry


def test_split_round_into_consecutive_runs() -> None:
    assert [list(run) for run in split_round(7, 1)] == [list(range(7))]
    runs = split_round(FILES, 3)
    assert [len(run) for run in runs] == [18, 18, 17]
    assert [index for run in runs for index in run] == list(range(FILES))
    # too few files for another association: fewer runs
    assert len(split_round(2 * MIN_FILES_PER_ASSOCIATION - 1, 4)) == 1
    assert len(split_round(2 * MIN_FILES_PER_ASSOCIATION, 4)) == 2


def test_every_file_acknowledged_once_over_three_associations(tmp_path: Path) -> None:
    peer = _Peer()
    try:
        store, exporter, forced, logs = _deliver(tmp_path, f"PACS@127.0.0.1:{peer.port}", 3)
        try:
            assert sorted(peer.received) == sorted(_uids(FILES))
            # three associations, each the files of one run in their order
            expected = [[_uids(FILES)[index] for index in run] for run in split_round(FILES, 3)]
            assert sorted(peer.by_association.values()) == sorted(expected)
            # the last acknowledgement of each association is forced to disk, no other
            assert forced.count(True) == 3 and len(forced) == FILES
            assert {row.state for row in store.outbox(limit=None)} == {OutboxState.SENT}
            assert store.acknowledged_among(f"PACS@127.0.0.1:{peer.port}", _uids(FILES)) == set(
                _uids(FILES)
            )
            assert store.jobs()[0].state is JobState.DONE
            counters = exporter.counters
            assert (counters.attempts, counters.sent, counters.failures) == (FILES, FILES, 0)
            assert _round_logged(logs)["associations"] == 3
            assert _round_logged(logs)["refused_associations"] == 0
            assert _round_logged(logs)["sent"] == FILES
        finally:
            store.close()
    finally:
        peer.server.shutdown()


def test_one_association_is_todays_round(tmp_path: Path) -> None:
    peer = _Peer()
    try:
        store, _, forced, logs = _deliver(tmp_path, f"PACS@127.0.0.1:{peer.port}", 1)
        try:
            assert list(peer.by_association.values()) == [_uids(FILES)]
            assert forced == [False] * (FILES - 1) + [True]
            assert _round_logged(logs)["associations"] == 1
        finally:
            store.close()
    finally:
        peer.server.shutdown()


def test_peer_limited_to_one_association_gets_every_file(tmp_path: Path) -> None:
    """pynetdicom with ``maximum_associations = 1`` rejects a second association while the
    first runs (A-ASSOCIATE-RJ, transient, local limit exceeded): its files go over the
    association the peer took, nothing counts as failed, nothing is dead-lettered."""
    peer = _Peer(maximum_associations=1)
    try:
        store, exporter, _, logs = _deliver(
            tmp_path, f"PACS@127.0.0.1:{peer.port}", 3, max_attempts=1
        )
        try:
            assert sorted(peer.received) == sorted(_uids(FILES))
            assert len(peer.received) == FILES
            assert {row.state for row in store.outbox(limit=None)} == {OutboxState.SENT}
            assert store.dead_letters() == []
            assert store.jobs()[0].state is JobState.DONE
            counters = exporter.counters
            assert (counters.sent, counters.failures, counters.dead_lettered) == (FILES, 0, 0)
            assert (counters.rejected_associations, counters.failed_rounds) == (0, 0)
            assert not [entry for entry in logs if entry["log_level"] in ("warning", "error")]
            # the other two asked while the first ran: refused, their runs went over it
            assert _round_logged(logs)["refused_associations"] == 2
            assert len(peer.by_association) == _round_logged(logs)["associations"]
            # within each association the files of a run keep their order
            runs = [[_uids(FILES)[index] for index in run] for run in split_round(FILES, 3)]
            for uids in peer.by_association.values():
                starts = [uids.index(run[0]) for run in runs if run[0] in uids]
                assert all(
                    uids[start : start + len(run)] == run
                    for start, run in zip(
                        starts, [run for run in runs if run[0] in uids], strict=True
                    )
                )
        finally:
            store.close()
    finally:
        peer.server.shutdown()


def test_storescp_serving_one_association_at_a_time_gets_every_file(tmp_path: Path) -> None:
    """dcmtk storescp without --fork: the other associations wait until it is free."""
    binary = require_tool("storescp", "install dcmtk (make tools)")
    folder = tmp_path / "pacs"
    folder.mkdir()
    port = free_port()
    process = subprocess.Popen(
        [binary, "-aet", "PACS", "-od", str(folder), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    try:
        _wait_for_port(port, process)
        store, exporter, _, logs = _deliver(tmp_path, f"PACS@127.0.0.1:{port}", 2, max_attempts=1)
        try:
            stored = sorted(str(dcmread(path).SOPInstanceUID) for path in folder.iterdir())
            assert stored == sorted(_uids(FILES))
            assert {row.state for row in store.outbox(limit=None)} == {OutboxState.SENT}
            assert store.dead_letters() == []
            assert (exporter.counters.sent, exporter.counters.failures) == (FILES, 0)
            assert _round_logged(logs)["associations"] == 2
        finally:
            store.close()
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    import socket
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"storescp exited with status {process.returncode}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    pytest.fail(f"storescp did not listen on port {port}")
