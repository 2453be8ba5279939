"""A study without a diffusion-weighted series (issue 14): ``ignored``, not ``failed``; no retry
suggested; counted; its spool freed after the normal spool time like a done job's."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import structlog
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicom_node.receive.spool import SpooledInstance
from service.cli import main
from service.jobs import JobSpec, JobState, make_job_key
from service.jobstore import SqliteJobStore
from service.retention import plan_retention
from service.settings import RetentionSettings
from service.worker import Worker, run_job
from tests.helpers.scp_harness import mr_data_set

STUDY = "1.2.826.1"


def _t1_study(data_dir: Path, store: SqliteJobStore) -> int:
    """A spooled T1 instance (no b-value anywhere) and its ready job."""
    dataset = mr_data_set(f"{STUDY}.9.1")
    dataset.SeriesDescription = "WB T1 TSE"
    dataset.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    dataset.ImagePositionPatient = [0.0, 0.0, 0.0]
    dataset.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    dataset.PixelSpacing = [1.0, 1.0]
    dataset.SliceThickness = 5.0
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(str(dataset.SOPClassUID))
    meta.MediaStorageSOPInstanceUID = UID(str(dataset.SOPInstanceUID))
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta = meta
    path = data_dir / "spool" / "1.dcm"
    path.parent.mkdir(parents=True)
    dataset.save_as(path, enforce_file_format=True)
    store.record_instance(
        SpooledInstance(
            sop_instance_uid=f"{STUDY}.9.1",
            sop_class_uid=str(dataset.SOPClassUID),
            study_uid=STUDY,
            series_uid=str(dataset.SeriesInstanceUID),
            series_description="WB T1 TSE",
            transfer_syntax_uid=ExplicitVRLittleEndian,
            calling_ae="SCANNER",
            path=path,
            size_bytes=path.stat().st_size,
            received_at=time.time() - 3600,
        )
    )
    job_id = store.receiving_studies()[0].job_id
    assert store.submit(
        JobSpec(
            job_key=make_job_key(STUDY, "1.0", [f"{STUDY}.9.1"]),
            job_id=job_id,
            study_uid=STUDY,
            version=1,
            input_paths=(str(path),),
            output_dir=str(data_dir / "results" / STUDY / "v1"),
            device="cpu",
        )
    )
    return job_id


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in os.environ if n.startswith("WBDWI_")]:
        monkeypatch.delenv(name)
    return tmp_path


def test_a_study_without_dwi_is_ignored_not_failed(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = SqliteJobStore(data_dir / "jobs.sqlite")
    try:
        job_id = _t1_study(data_dir, store)
        worker = Worker(store, runner=run_job)
        spec = store.claim()
        assert spec is not None
        with structlog.testing.capture_logs() as logs:
            assert worker.process(spec) is None
        assert [entry["event"] for entry in logs if entry["log_level"] != "info"] == []
        (ignored,) = [entry for entry in logs if entry["event"] == "job_ignored"]
        assert ignored["reason"].startswith("no diffusion-weighted series among the input")
        record = store.status(job_id)
        assert record.state is JobState.IGNORED
        assert record.reason.startswith("no diffusion-weighted series among the input")
        assert worker.jobs_ignored == 1
        # the spool goes after the spool time, as for a done job (a failed one is kept)
        settings = RetentionSettings(spool_days=0.01)
        plan = plan_retention(
            store.job_deliveries(), store.spooled_studies(), settings, time.time() + 3600
        )
        assert [item.study_uid for item in plan.due] == [STUDY]
    finally:
        store.close()
    assert main(["status", "--data-dir", str(data_dir)]) == 0  # nothing failed
    out = capsys.readouterr().out
    assert "jobs: ignored 1" in out
    assert "wbdwi retry" not in out
