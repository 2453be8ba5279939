"""The celery backend names a job's files by storage keys (issue 15), without a broker.

The shared folder is the receiver's ``share`` folder; the worker host mounts it
elsewhere (a symbolic link stands for the NFS mount). The receiver publishes
keys, the worker resolves them under its own mount and reports its result
files as keys, which the receiver resolves to its own paths.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from service.history import ExamHistory
from service.jobs import JobSpec, JobState, make_job_key
from service.jobstore import SqliteJobStore
from service.queue_celery.messages import JobEvent
from service.queue_celery.receiver import CeleryReceiver
from service.queue_celery.worker import WorkerOptions, _run, _storage_refusal
from service.storage import LocalStorage, portable_spec
from service.worker import JobOutcome

STUDY = "2.25.1500"
RESULT_UID = UID("2.25.1501")


def _write_result(path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = RESULT_UID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = pydicom.Dataset()
    dataset.SOPClassUID = SecondaryCaptureImageStorage
    dataset.SOPInstanceUID = RESULT_UID
    dataset.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)


def _spec(share: Path, output: Path | None = None) -> JobSpec:
    source = share / "spool" / STUDY / "a.dcm"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(b"instance")
    return JobSpec(
        job_key=make_job_key(STUDY, "1.0", [str(source)]),
        job_id=0,
        study_uid=STUDY,
        version=1,
        input_paths=(str(source),),
        output_dir=str(output or share / "results" / STUDY / "v1"),
        destinations=("PACS@127.0.0.1:11112",),
        device="cpu",
    )


def _receiver(store: SqliteJobStore, share: Path) -> CeleryReceiver:
    # The broker is never reached: nothing here publishes a job that can be published.
    return CeleryReceiver(
        store,
        broker_url="amqp://guest:guest@127.0.0.1:1//",
        delivery_limit=3,
        device_class="cpu",
        software_version="1.0",
        storage=LocalStorage(share),
    )


def test_a_worker_on_another_mount_runs_the_keys_and_reports_result_keys(tmp_path: Path) -> None:
    share = tmp_path / "receiver" / "share"
    mount = tmp_path / "worker" / "mnt"
    spec = _spec(share)
    mount.parent.mkdir(parents=True)
    mount.symlink_to(share, target_is_directory=True)
    keyed = portable_spec(spec, LocalStorage(share))
    assert keyed.input_paths == (f"spool/{STUDY}/a.dcm",)
    assert keyed.output_dir == f"results/{STUDY}/v1"
    seen: list[JobSpec] = []

    def runner(local: JobSpec, *, history: ExamHistory | None = None) -> JobOutcome:
        assert history is None  # no priors
        seen.append(local)
        result = Path(local.output_dir) / "sr.dcm"
        _write_result(result)
        return JobOutcome(result_files=(str(result),), device="cpu")

    options = WorkerOptions("amqp://x", 3, "cpu", "cpu", "1.0", storage_root=str(mount))
    event = _run(keyed, runner, "w1", options.storage())
    assert event.kind == "finished", event.reason
    [local] = seen
    assert local.input_paths == (str(mount / "spool" / STUDY / "a.dcm"),)
    assert Path(local.input_paths[0]).read_bytes() == b"instance"
    assert event.results == ((f"results/{STUDY}/v1/sr.dcm", RESULT_UID),)

    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    try:
        assert store.submit(spec)
        claimed = store.claim()
        assert claimed is not None
        receiver = _receiver(store, share)
        receiver._published[claimed.job_id] = claimed
        finished = JobEvent(
            "finished", keyed.job_key, claimed.job_id, "w1", results=event.results, seconds=1.0
        )
        assert receiver.apply_event(finished)
        [record] = store.outbox()
        assert record.path == str(share / "results" / STUDY / "v1" / "sr.dcm")
        assert Path(record.path).exists()
        assert store.status(claimed.job_id).state is JobState.EXPORTING
    finally:
        store.close()


def test_a_job_with_a_file_outside_the_share_fails_with_the_reason_unpublished(
    tmp_path: Path,
) -> None:
    share = tmp_path / "share"
    spec = _spec(share, output=tmp_path / "elsewhere" / "results")
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    try:
        store.submit(spec)
        claimed = store.claim()
        assert claimed is not None
        receiver = _receiver(store, share)
        assert receiver.publish(claimed) is True  # handled: the next job can go
        record = store.status(claimed.job_id)
        assert record.state is JobState.FAILED
        assert record.reason.startswith("not published to the workers: ")
        assert str(tmp_path / "elsewhere" / "results") in record.reason
        assert receiver.published == 0
    finally:
        store.close()


def test_a_worker_without_storage_root_leaves_a_keyed_job_to_others(tmp_path: Path) -> None:
    share = tmp_path / "share"
    spec = _spec(share)
    keyed = portable_spec(spec, LocalStorage(share))
    refusal = _storage_refusal(keyed, None)
    assert refusal is not None and "no [queue] storage_root" in refusal
    assert _storage_refusal(spec, None) is None  # absolute paths: the same mount path
    assert _storage_refusal(keyed, LocalStorage(share)) is None
