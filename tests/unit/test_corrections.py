"""A reader's SEG at the node: recorded without opening an exam job, queued as a correction."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
import pytest

from dicom_node.receive.spool import SpooledInstance
from dicom_node.simulator.scanner import write_exam
from dicom_node.writers.write_results import write_results
from processing.phantom import make_phantom
from processing.pipeline import measure_tumour_mask
from processing.settings import ProcessingSettings
from service.commands.process import run_offline
from service.completion import CompletionDetector
from service.corrections import correction_job_key, prepare_correction
from service.errors import NothingToCorrectError
from service.jobs import CorrectionSpec, JobSpec, JobState, make_job_key
from service.jobstore import SqliteJobStore
from service.settings import load_settings
from service.worker import Worker
from tests.helpers.correction_fixtures import (
    edit_tumour_mask,
    slice_ordered_images,
    write_reader_seg,
)

MR = "1.2.840.10008.5.1.4.1.1.4"
SEG = "1.2.840.10008.5.1.4.1.1.66.4"
STUDY = "1.2.3"


def _instance(uid: str, sop_class: str = MR, study: str = STUDY) -> SpooledInstance:
    return SpooledInstance(
        sop_instance_uid=uid,
        sop_class_uid=sop_class,
        study_uid=study,
        series_uid=f"{study}.1",
        series_description="DWI" if sop_class == MR else "Reader SEG",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        calling_ae="PACS",
        path=Path(f"/spool/{study}/{uid}.dcm"),
        size_bytes=1000,
        received_at=time.time(),
    )


@pytest.fixture
def store(tmp_path: Path) -> SqliteJobStore:
    return SqliteJobStore(tmp_path / "jobs.sqlite")


@pytest.fixture
def detector(store: SqliteJobStore, tmp_path: Path) -> CompletionDetector:
    settings = load_settings(
        env={},
        overrides={
            "node": {"data_dir": str(tmp_path / "data")},
            "export": {"destinations": ["PACS@127.0.0.1:104"]},
        },
    )
    return CompletionDetector(store, settings, "1.0")


def _processed_exam(store: SqliteJobStore) -> JobSpec:
    store.record_instance(_instance(f"{STUDY}.9.1"))
    store.record_instance(_instance(f"{STUDY}.9.2"))
    [receiving] = store.receiving_studies()
    rows = store.study_instances(STUDY)
    spec = JobSpec(
        job_key=make_job_key(STUDY, "1.0", [r.sop_instance_uid for r in rows]),
        job_id=receiving.job_id,
        study_uid=STUDY,
        version=1,
        input_paths=tuple(r.path for r in rows),
        output_dir="/results/1.2.3/v1",
    )
    assert store.submit(spec)
    claimed = store.claim()
    assert claimed is not None
    store.finish_processing(claimed.job_id, [], (), 1.0)
    return claimed


def test_a_seg_opens_no_exam_job_and_becomes_one_correction_job(
    store: SqliteJobStore, detector: CompletionDetector
) -> None:
    exam = _processed_exam(store)
    assert store.record_instance(_instance("1.2.3.8.1", SEG))
    assert [job.state for job in store.jobs()] == [JobState.DONE]  # no job opened
    assert [row.sop_instance_uid for _, row in store.unclaimed_segmentations("correction:")] == [
        "1.2.3.8.1"
    ]
    [job_id] = detector.submit_corrections()
    assert detector.submit_corrections() == []  # one job per SEG
    spec = store.claim()
    assert spec is not None and spec.job_id == job_id
    assert spec.job_key == correction_job_key("1.2.3.8.1")
    assert spec.version == 2
    assert spec.input_paths == exam.input_paths
    assert spec.destinations == ("PACS@127.0.0.1:104",)
    assert spec.correction == CorrectionSpec(
        seg_path="/spool/1.2.3/1.2.3.8.1.dcm",
        seg_sop_instance_uid="1.2.3.8.1",
        corrected_output_dir=exam.output_dir,
    )
    assert JobSpec.from_json(spec.to_json()) == spec
    # A late MR image opens a new exam version; it does not join the correction job.
    store.record_instance(_instance(f"{STUDY}.9.3"))
    [receiving] = store.receiving_studies()
    assert receiving.version == 3


def test_a_seg_waits_while_its_exam_is_still_received(
    store: SqliteJobStore, detector: CompletionDetector
) -> None:
    store.record_instance(_instance(f"{STUDY}.9.1"))
    store.record_instance(_instance("1.2.3.8.2", SEG))
    assert detector.submit_corrections() == []
    [receiving] = store.receiving_studies()
    rows = store.study_instances(STUDY)
    mr = tuple(row.path for row in rows if row.sop_class_uid == MR)
    spec = JobSpec("k1", receiving.job_id, STUDY, 1, mr, "/results/1.2.3/v1")
    assert store.submit(spec)
    claimed = store.claim()
    assert claimed is not None
    assert detector.submit_corrections() == []  # processing
    store.finish_processing(claimed.job_id, [], (), 1.0)
    [job_id] = detector.submit_corrections()
    correction = store.claim()
    assert correction is not None and correction.job_id == job_id
    assert correction.correction is not None
    assert correction.correction.corrected_output_dir == "/results/1.2.3/v1"
    assert correction.input_paths == mr


def test_a_seg_of_a_study_never_processed_ends_done_with_its_reason(
    store: SqliteJobStore, detector: CompletionDetector
) -> None:
    store.record_instance(_instance("9.9.8.1", SEG, study="9.9"))
    [job_id] = detector.submit_corrections()
    spec = store.claim()
    assert spec is not None and spec.correction is not None
    assert spec.correction.corrected_output_dir == ""
    assert Worker(store).process(spec) is None
    record = store.status(job_id)
    assert record.state is JobState.DONE
    assert "9.9.8.1 refers to no exam processed by this node" in record.reason
    assert store.job_counts()[JobState.FAILED] == 0


def test_the_nodes_own_seg_and_a_seg_of_another_grid_correct_nothing(tmp_path: Path) -> None:
    settings = ProcessingSettings()
    folder = tmp_path / "exam"
    phantom = make_phantom("small", seed=1)
    write_exam(phantom, folder)
    study_results = tmp_path / "results" / phantom.study_instance_uid  # the node's layout
    automatic_dir = study_results / "v1"
    automatic = run_offline(folder, automatic_dir, settings, "cpu")
    exam = automatic.assembled.exam
    [own_seg] = (automatic_dir / "seg").glob("*.dcm")

    def spec_for(seg: Path, version: int = 2) -> JobSpec:
        return JobSpec(
            job_key=correction_job_key(seg.stem),
            job_id=version,
            study_uid=exam.study_instance_uid,
            version=version,
            input_paths=(),
            output_dir=str(study_results / f"v{version}"),
            correction=CorrectionSpec(str(seg), seg.stem, str(automatic_dir)),
        )

    with pytest.raises(NothingToCorrectError, match="own results"):
        prepare_correction(spec_for(own_seg), exam)

    mask, _ = edit_tumour_mask(automatic.result.tumour_mask, automatic.result.body_mask)
    sources = slice_ordered_images(automatic_dir / "b1000", exam)
    reader = tmp_path / "reader.dcm"
    write_reader_seg(sources, mask, reader)
    prepared = prepare_correction(spec_for(reader), exam)
    assert (prepared.mask.mask == mask).all()
    [auto_sr] = (automatic_dir / "sr").glob("*.dcm")
    assert [str(ds.SOPInstanceUID) for ds in prepared.writer.predecessors] == [auto_sr.stem]

    moved = pydicom.dcmread(reader)
    moved.StudyInstanceUID = "1.2.826.0.1.77"
    moved_path = tmp_path / "moved.dcm"
    moved.save_as(moved_path)
    with pytest.raises(NothingToCorrectError, match="belongs to study"):
        prepare_correction(spec_for(moved_path), exam)

    # The reader corrects again: the new report replaces the automatic and the corrected one.
    corrected = measure_tumour_mask(exam, mask, settings, device="cpu")
    written = write_results(exam, corrected, study_results / "v2", correction=prepared.writer)
    [corrected_sr] = [path.stem for path in written if path.parent.name == "sr"]
    again = tmp_path / "reader-again.dcm"
    write_reader_seg(sources, automatic.result.tumour_mask, again)
    second = prepare_correction(spec_for(again, version=3), exam)
    replaced = [str(ds.SOPInstanceUID) for ds in second.writer.predecessors]
    assert replaced == [auto_sr.stem, corrected_sr]
