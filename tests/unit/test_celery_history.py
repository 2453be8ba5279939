"""The exam history over the celery backend (issue 15), without a broker.

The receiver sends the patient's exams with the job (a HistorySnapshot in the
envelope), the worker reads its priors from it and writes no database, and its
writes come back in the ``finished`` report for the receiver to record.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, MRImageStorage

from service.history import (
    ExamHistory,
    HistorySnapshot,
    HistoryStore,
    SummarySource,
    replay_writes,
)
from service.jobs import JobSpec, JobState, PriorsSpec, make_job_key
from service.jobstore import SqliteJobStore
from service.queue_celery.messages import JobEnvelope, JobEvent
from service.queue_celery.receiver import CeleryReceiver
from service.queue_celery.worker import _run
from service.worker import JobOutcome
from tests.unit.test_history import PATIENT, _exam
from tests.unit.test_history_snapshot import _queries

STUDY = "1.9.4"


def _input(path: Path, patient_id: str) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = UID("2.25.1600")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = pydicom.Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID = MRImageStorage
    dataset.SOPInstanceUID = "2.25.1600"
    dataset.StudyInstanceUID = STUDY
    dataset.PatientID = patient_id
    dataset.IssuerOfPatientID = PATIENT.issuer_of_patient_id
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)
    return path


def _store_with_exams(path: Path) -> HistoryStore:
    store = HistoryStore(path)
    for n in (1, 2, 3):
        store.record_exam(_exam(f"1.9.{n}", f"2024{n:02d}15"))
    store.set_baseline(PATIENT, "1.9.2")
    store.record_pacs_lookup(PATIENT, "PACS@pacs:104")
    return store


def test_a_snapshot_and_its_writes_survive_json(tmp_path: Path) -> None:
    store = _store_with_exams(tmp_path / "history.sqlite3")
    snapshot = HistorySnapshot(store.exams(PATIENT), [(PATIENT, "PACS@pacs:104")])
    wire = HistorySnapshot.from_dict(json.loads(json.dumps(snapshot.to_dict())))
    assert _queries(wire) == _queries(store)
    assert wire.pacs_looked_up(PATIENT, "PACS@pacs:104")
    wire.record_exam(_exam(STUDY, "20240415"))
    wire.record_pacs_lookup(PATIENT, "OTHER@pacs:104")
    assert replay_writes(json.loads(json.dumps(wire.writes())), store) == 1
    assert _queries(store) == _queries(wire)
    assert store.get(PATIENT, STUDY).source is SummarySource.LOCAL
    assert store.pacs_looked_up(PATIENT, "OTHER@pacs:104")
    assert store.get(PATIENT, "1.9.2").is_baseline


def test_the_worker_reads_priors_from_the_envelope_and_the_receiver_records_its_exam(
    tmp_path: Path,
) -> None:
    receiver_history = tmp_path / "receiver" / "history.sqlite3"
    receiver_history.parent.mkdir()
    _store_with_exams(receiver_history)
    source = _input(tmp_path / "receiver" / "spool" / "a.dcm", PATIENT.patient_id)
    spec = JobSpec(
        job_key=make_job_key(STUDY, "1.0", [str(source)]),
        job_id=0,
        study_uid=STUDY,
        version=1,
        input_paths=(str(source),),
        output_dir=str(tmp_path / "receiver" / "results"),
        device="cpu",
        priors=PriorsSpec(history_path=str(receiver_history), pacs="PACS@pacs:104"),
    )
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    try:
        store.submit(spec)
        claimed = store.claim()
        assert claimed is not None
        receiver = CeleryReceiver(
            store,
            broker_url="amqp://guest:guest@127.0.0.1:1//",
            delivery_limit=3,
            device_class="cpu",
            software_version="1.0",
        )
        history = receiver._history(claimed)
        assert history is not None
        envelope = JobEnvelope.from_dict(
            json.loads(json.dumps(JobEnvelope.for_spec(claimed, "1.0", history).to_dict()))
        )
        assert envelope.history is not None

        # The worker (another host): priors from the snapshot, no database of its own.
        priors_seen: list[list[str]] = []

        def runner(local: JobSpec, *, history: ExamHistory | None = None) -> JobOutcome:
            assert isinstance(history, HistorySnapshot)
            priors = history.priors(PATIENT, study_date="20240415", study_uid=STUDY)
            priors_seen.append([p.study_instance_uid for p in priors])
            assert history.pacs_looked_up(PATIENT, "PACS@pacs:104")
            history.record_exam(_exam(STUDY, "20240415"))
            return JobOutcome(result_files=(), device="cpu")

        assert envelope.history is not None
        snapshot = HistorySnapshot.from_dict(envelope.history)
        event = _run(JobSpec.from_json(envelope.spec), runner, "w1", None, snapshot)
        assert priors_seen == [["1.9.1", "1.9.2", "1.9.3"]]
        assert event.kind == "finished" and event.history is not None

        receiver._published[claimed.job_id] = claimed
        assert receiver.apply_event(JobEvent.from_dict(json.loads(json.dumps(event.to_dict()))))
        recorded = HistoryStore(receiver_history).get(PATIENT, STUDY)
        assert recorded.summary.study_date == "20240415"
        assert store.status(claimed.job_id).state is JobState.DONE
    finally:
        store.close()


def test_a_job_without_priors_or_patient_id_carries_no_or_an_empty_history(
    tmp_path: Path,
) -> None:
    source = _input(tmp_path / "spool" / "a.dcm", "")
    spec = JobSpec(
        job_key="k",
        job_id=1,
        study_uid=STUDY,
        version=1,
        input_paths=(str(source),),
        output_dir=str(tmp_path / "results"),
        priors=PriorsSpec(history_path=str(tmp_path / "history.sqlite3")),
    )
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    try:
        receiver = CeleryReceiver(
            store,
            broker_url="amqp://guest:guest@127.0.0.1:1//",
            delivery_limit=3,
            device_class="cpu",
            software_version="1.0",
        )
        empty = receiver._history(spec)
        assert empty is not None and HistorySnapshot.from_dict(empty).to_dict() == {
            "entries": [],
            "looked_up": [],
        }
        assert receiver._history(replace(spec, priors=None)) is None
    finally:
        store.close()
