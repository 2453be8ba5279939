"""One forced disk write per C-STORE round (issue 13 latency): each acknowledgement is
committed, and only the round's last one is forced to disk (it forces the earlier ones)."""

from __future__ import annotations

import socket
from pathlib import Path

from pynetdicom import AE, evt
from pynetdicom.sop_class import MRImageStorage  # type: ignore[attr-defined]

from service.exporter import Exporter
from service.jobs import JobState, OutboxState
from service.jobstore import SqliteJobStore
from service.settings import ExportSettings
from tests.helpers.job_fixtures import exporting_job
from tests.unit.test_ops_export_rounds import FILES


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_only_the_last_acknowledgement_of_a_round_is_forced(tmp_path: Path) -> None:
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000

    scp = AE(ae_title="PACS")
    scp.add_supported_context(MRImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    port = _free_port()
    server = scp.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert server is not None
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    try:
        destination = f"PACS@127.0.0.1:{port}"
        exporting_job(store, tmp_path, [destination], FILES, write_files=True)
        forced: list[bool] = []
        mark_sent = store.mark_sent

        def spy(outbox_id: int, *, durable: bool = True) -> None:
            forced.append(durable)
            mark_sent(outbox_id, durable=durable)

        store.mark_sent = spy  # type: ignore[method-assign]
        # one association (several: one forced write each, tests/unit/test_export_associations.py)
        exporter = Exporter(store, ExportSettings(associations_per_destination=1), "WBDWI")
        assert exporter.deliver_due() == FILES
        assert len(received) == FILES
        assert forced == [False] * (FILES - 1) + [True]
        assert {row.state for row in store.outbox(limit=None)} == {OutboxState.SENT}
        assert store.jobs()[0].state is JobState.DONE
    finally:
        store.close()
        server.shutdown()
