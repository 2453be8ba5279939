"""What the worker calls around one exam: priors and baseline before, history after (issue 6).

The PACS side of :func:`prepare_priors` (a rebuilt node) runs against a real
Orthanc in ``tests/integration/test_priors.py``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from processing.comparison import comparison_to_dict
from processing.settings import ProcessingSettings
from service.errors import HistoryError
from service.history import HistoryStore, SummarySource
from service.priors import compare_with_priors, prepare_priors, record_processed_exam
from tests.unit.test_history import PATIENT, _exam


@pytest.fixture
def store(tmp_path: Path) -> HistoryStore:
    return HistoryStore(tmp_path / "history.sqlite3")


def test_first_exam_has_no_priors_and_the_default_yellow_bound(store: HistoryStore) -> None:
    prepared = prepare_priors(store, "PAT-7", "HOSP-A", "1.9.1", "20240115")
    assert prepared.priors == ()
    assert prepared.baseline is None and prepared.baseline_study_uid is None
    assert prepared.yellow_lower_um2s is None
    assert prepared.histograms_for(None) == []
    first = _exam("1.9.1", "20240115")
    assert compare_with_priors(first, prepared, ProcessingSettings()) is None


def test_follow_up_gets_priors_baseline_and_comparison(store: HistoryStore) -> None:
    first, second = _exam("1.9.1", "20240115"), _exam("1.9.2", "20240415")
    record_processed_exam(store, first, [Path("out/sr/1.9.1.100.dcm")])
    third = _exam("1.9.3", "20240715")
    store.record_exam(third)  # a later exam processed earlier: not a prior of the second
    prepared = prepare_priors(store, "PAT-7", "HOSP-A", "1.9.2", "20240415", study_time="090000")
    assert [p.study_instance_uid for p in prepared.priors] == ["1.9.1"]
    assert prepared.baseline_study_uid == "1.9.1"
    assert prepared.yellow_lower_um2s == 1256.0  # the baseline's p95
    comparison = compare_with_priors(second, prepared, ProcessingSettings(min_lesion_volume_ml=0.8))
    assert comparison is not None
    block = comparison_to_dict(comparison)
    assert block["prior_study_uid"] == block["baseline_study_uid"] == "1.9.1"
    assert block["rac_overall"] == 3
    assert block["settings"]["detection_limit_ml"] == 0.8  # follows the processing setting
    with pytest.raises(ValueError, match=r"prepared for study 1\.9\.2 used for study 1\.9\.3"):
        compare_with_priors(third, prepared, ProcessingSettings())


def test_marked_baseline_is_used_and_an_exam_can_be_its_own(store: HistoryStore) -> None:
    for n, date in enumerate(("20240115", "20240415", "20240715"), start=1):
        store.record_exam(_exam(f"1.9.{n}", date))
    store.set_baseline(PATIENT, "1.9.2")
    store.record_exam(replace(_exam("1.9.2", "20240415"), adc=None, tdv_ml=0.0, lesions=()))
    later = prepare_priors(store, "PAT-7", "HOSP-A", "1.9.3", "20240715", study_time="090000")
    assert later.baseline_study_uid == "1.9.2"
    assert later.yellow_lower_um2s is None  # the baseline had nothing segmented
    itself = prepare_priors(store, "PAT-7", "HOSP-A", "1.9.2", "20240415", study_time="090000")
    assert itself.baseline_study_uid == "1.9.2"
    assert [p.study_instance_uid for p in itself.priors] == ["1.9.1"]
    comparison = compare_with_priors(_exam("1.9.2", "20240415"), itself, ProcessingSettings())
    assert comparison is not None and comparison.vs_baseline is None


def test_recorded_exam_names_its_sr_and_seg(store: HistoryStore) -> None:
    exam = replace(_exam("1.9.1", "20240115"), sr_sop_instance_uid="", seg_sop_instance_uid="")
    written = [
        Path("out/adc/2.25.1.dcm"),
        Path("out/sr/2.25.77.dcm"),
        Path("out/seg/2.25.88.dcm"),
        Path("out/key_images/2.25.9.dcm"),
    ]
    recorded = record_processed_exam(store, exam, written)
    assert (recorded.sr_sop_instance_uid, recorded.seg_sop_instance_uid) == ("2.25.77", "2.25.88")
    entry = store.get(PATIENT, "1.9.1")
    assert entry.summary == recorded and entry.source is SummarySource.LOCAL
    no_disease = record_processed_exam(store, exam, [Path("out/sr/2.25.78.dcm")])
    assert no_disease.seg_sop_instance_uid == ""
    with pytest.raises(ValueError, match="2 instances in result folder 'sr'"):
        record_processed_exam(store, exam, [Path("a/sr/1.dcm"), Path("b/sr/2.dcm")])


def test_empty_patient_id_is_refused(store: HistoryStore) -> None:
    with pytest.raises(HistoryError, match="patient ID must not be empty"):
        prepare_priors(store, "", "", "1.9.1", "20240115")


def _baseline_args(data_dir: Path, *extra: str) -> list[str]:
    return ["baseline", "PAT-7", *extra, "--issuer", "HOSP-A", "--data-dir", str(data_dir)]


def test_baseline_command_marks_and_clears(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main
    from service.history import HISTORY_FILE

    assert main(_baseline_args(tmp_path, "1.9.2")) == 2
    assert "no exam history" in capsys.readouterr().err
    store = HistoryStore(tmp_path / HISTORY_FILE)
    for n, date in enumerate(("20240115", "20240415"), start=1):
        store.record_exam(_exam(f"1.9.{n}", date))

    assert main(_baseline_args(tmp_path, "1.9.2")) == 0
    printed = capsys.readouterr().out
    assert "1.9.2 marked as a baseline" in printed
    assert store.get(PATIENT, "1.9.2").is_baseline
    prepared = prepare_priors(store, "PAT-7", "HOSP-A", "1.9.3", "20240715")
    assert prepared.baseline_study_uid == "1.9.2"

    assert main(_baseline_args(tmp_path, "1.9.2", "--clear")) == 0
    assert not store.get(PATIENT, "1.9.2").is_baseline
    assert main(_baseline_args(tmp_path, "9.9.9")) == 2
    assert "9.9.9 is not in the history" in capsys.readouterr().err
    other_issuer = ["baseline", "PAT-7", "1.9.2", "--data-dir", str(tmp_path)]
    assert main(other_issuer) == 2  # same ID without the issuer is another patient
