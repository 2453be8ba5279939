"""Jobs in a real SQLite job store at a given stage, for the tests of status, delivery and
the worker loop: one spooled MR instance, its job submitted, claimed and (optionally)
processed into result files waiting for destinations."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from dicom_node.receive.spool import SpooledInstance
from service.jobs import JobSpec, make_job_key
from service.jobstore import SqliteJobStore

__all__ = ["MR", "STUDY", "exporting_job", "ready_job", "write_result_file"]

MR = "1.2.840.10008.5.1.4.1.1.4"
STUDY = "1.2.3"


def write_result_file(path: Path, sop_instance_uid: str) -> None:
    """A minimal DICOM file with the meta an exporter reads (class, instance, syntax)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MR)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = MR
    dataset.SOPInstanceUID = sop_instance_uid
    dataset.save_as(path, enforce_file_format=True)


def ready_job(
    store: SqliteJobStore, folder: Path, destinations: Sequence[str] = (), study: str = STUDY
) -> int:
    """One spooled instance of ``study`` and its job, queued (``ready``); the job id."""
    store.record_instance(
        SpooledInstance(
            sop_instance_uid=f"{study}.9.1",
            sop_class_uid=MR,
            study_uid=study,
            series_uid=f"{study}.1",
            series_description="DWI",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            calling_ae="SCANNER",
            path=folder / "1.dcm",
            size_bytes=1000,
            received_at=time.time(),
        )
    )
    job_id = store.receiving_studies()[0].job_id
    assert store.submit(
        JobSpec(
            job_key=make_job_key(study, "1.0", [f"{study}.9.1"]),
            job_id=job_id,
            study_uid=study,
            version=1,
            input_paths=(str(folder / "1.dcm"),),
            output_dir=str(folder / "results"),
            destinations=tuple(destinations),
        )
    )
    return job_id


def exporting_job(
    store: SqliteJobStore,
    folder: Path,
    destinations: Sequence[str],
    files: int,
    *,
    write_files: bool = False,
    study: str = STUDY,
) -> int:
    """A processed job whose ``files`` result files wait for each destination; the job id.

    ``write_files``: the result files exist on disk (an exporter reads them); otherwise
    only their rows do.
    """
    job_id = ready_job(store, folder, destinations, study)
    assert store.claim() is not None
    results = []
    for number in range(files):
        path = folder / f"result{number}.dcm"
        if write_files:
            write_result_file(path, f"{study}.8.{number}")
        results.append((str(path), f"{study}.8.{number}"))
    store.finish_processing(job_id, results, list(destinations), 1.0)
    return job_id
