"""A PACS outage (issue 14): one log line and one failed round per retry round, however
many files wait, and the export metrics count what their names say."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import structlog
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicom_node.receive.spool import SpooledInstance
from service.exporter import Exporter
from service.jobs import JobSpec, OutboxState, make_job_key
from service.jobstore import SqliteJobStore
from service.settings import ExportSettings

MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY = "1.2.3"
FILES = 40


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens once it is closed


def _exporting(store: SqliteJobStore, tmp_path: Path, destination: str) -> None:
    store.record_instance(
        SpooledInstance(
            sop_instance_uid=f"{STUDY}.9.1",
            sop_class_uid=MR,
            study_uid=STUDY,
            series_uid=f"{STUDY}.1",
            series_description="DWI",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            calling_ae="SCANNER",
            path=tmp_path / "1.dcm",
            size_bytes=1000,
            received_at=time.time(),
        )
    )
    job_id = store.receiving_studies()[0].job_id
    spec = JobSpec(
        job_key=make_job_key(STUDY, "1.0", [f"{STUDY}.9.1"]),
        job_id=job_id,
        study_uid=STUDY,
        version=1,
        input_paths=(str(tmp_path / "1.dcm"),),
        output_dir=str(tmp_path / "results"),
        destinations=(destination,),
    )
    assert store.submit(spec)
    assert store.claim() is not None
    results = []
    for number in range(FILES):
        path = tmp_path / f"{number}.dcm"
        _write_minimal_dicom(path, f"{STUDY}.8.{number}")
        results.append((str(path), f"{STUDY}.8.{number}"))
    store.finish_processing(job_id, results, [destination], 1.0)


def _write_minimal_dicom(path: Path, uid: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MR)
    meta.MediaStorageSOPInstanceUID = UID(uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = MR
    dataset.SOPInstanceUID = uid
    dataset.save_as(path, enforce_file_format=True)


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
        _exporting(store, tmp_path, destination)
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
