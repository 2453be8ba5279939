"""The one exam entry point (:mod:`service.exam_run`) and its two priors sources."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from dicom_node.assembly.study_header import read_study_date_time
from processing.comparison import yellow_lower_bound
from processing.exam import DwiExam
from processing.exam_summary import ExamSummary, summarize_exam
from processing.settings import ProcessingSettings
from service.errors import PriorLoadError
from service.exam_run import ExamRequest, run_exam
from service.history import HistoryStore
from service.jobs import PriorsSpec
from service.priors import ExamPriors, HistoryPriors, PreparedPriors, SummaryFilePriors
from tests.helpers.writer_fixtures import SyntheticExam, make_result, write_synthetic_exam


@pytest.fixture(scope="module")
def exam_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("exam") / "input"


@pytest.fixture(scope="module")
def synthetic(exam_folder: Path) -> SyntheticExam:
    return write_synthetic_exam(exam_folder)


def _summary(synthetic: SyntheticExam, study_uid: str, study_date: str) -> ExamSummary:
    exam = dataclasses.replace(synthetic.exam, study_instance_uid=study_uid)
    return summarize_exam(exam, make_result(synthetic).stats, study_date=study_date)


def test_history_and_summary_files_give_the_same_priors(
    synthetic: SyntheticExam, tmp_path: Path
) -> None:
    earlier = _summary(synthetic, "1.2.826.0.1.11", "20000101")
    later = _summary(synthetic, "1.2.826.0.1.12", "29991231")  # after the exam: not a prior
    history = HistoryStore(tmp_path / "h.sqlite3")
    for summary in (earlier, later):
        history.record_exam(summary)
    node = HistoryPriors(PriorsSpec(history_path=str(history.path))).find(synthetic.exam)
    offline = SummaryFilePriors((earlier, later)).find(synthetic.exam)
    for found in (node, offline):
        assert found.prepared is not None
        assert [p.study_instance_uid for p in found.prepared.priors] == ["1.2.826.0.1.11"]
        assert found.yellow_lower_um2s == yellow_lower_bound(earlier)
        assert found.when == read_study_date_time(synthetic.exam)
        assert found.warnings == ()
    assert node.history is not None  # the node records the exam; offline nothing is recorded
    assert offline.history is None


def test_summary_files_of_another_patient_or_baseline_are_refused(
    synthetic: SyntheticExam,
) -> None:
    earlier = _summary(synthetic, "1.2.826.0.1.11", "20000101")
    foreign = dataclasses.replace(earlier, patient_id="SOMEONE-ELSE")
    with pytest.raises(PriorLoadError, match="not of this exam's patient"):
        SummaryFilePriors((foreign,)).find(synthetic.exam)
    with pytest.raises(PriorLoadError, match=r"baseline study 1\.2\.3 is neither"):
        SummaryFilePriors((earlier,), baseline_study_uid="1.2.3").find(synthetic.exam)


def test_summary_file_priors_from_paths_read_measurements_json(
    synthetic: SyntheticExam, tmp_path: Path
) -> None:
    earlier = _summary(synthetic, "1.2.826.0.1.11", "20000101")
    (tmp_path / "measurements.json").write_text(json.dumps({"exam_summary": earlier.to_dict()}))
    source = SummaryFilePriors.from_paths([tmp_path], baseline_study_uid="1.2.826.0.1.11")
    assert source.summaries == (earlier,)
    assert source.baseline_study_uid == "1.2.826.0.1.11"
    with pytest.raises(PriorLoadError, match=r"no measurements\.json"):
        SummaryFilePriors.from_paths([tmp_path / "missing"])


@dataclasses.dataclass(frozen=True)
class _GivenPriors:
    """A priors source with fixed priors and a warning (the protocol, not an implementation)."""

    earlier: ExamSummary

    def find(self, exam: DwiExam) -> ExamPriors:
        prepared = PreparedPriors(
            study_instance_uid=exam.study_instance_uid,
            priors=(self.earlier,),
            baseline=self.earlier,
            baseline_study_uid=self.earlier.study_instance_uid,
        )
        return ExamPriors(
            prepared=prepared,
            history=None,
            when=read_study_date_time(exam),
            warnings=("a note from the priors source",),
        )


def test_run_exam_compares_writes_and_reports_through_any_priors_source(
    synthetic: SyntheticExam, exam_folder: Path, tmp_path: Path
) -> None:
    earlier = _summary(synthetic, "1.2.826.0.1.11", "20000101")
    inputs = tuple(sorted(path for path in exam_folder.rglob("*") if path.is_file()))
    run = run_exam(
        ExamRequest(inputs=inputs, output_dir=tmp_path / "out", settings=ProcessingSettings()),
        _GivenPriors(earlier),
    )
    assert run.comparison is not None
    assert run.comparison.baseline_study_uid == "1.2.826.0.1.11"
    assert run.summary is not None and run.summary.sr_sop_instance_uid
    assert run.summary.sr_sop_instance_uid in {path.stem for path in run.files}
    written = json.loads(run.measurements_path.read_text())
    assert written == json.loads(json.dumps(run.measurements))
    assert written["warnings"][0] == "a note from the priors source"
    assert written["comparison"]["baseline_study_uid"] == "1.2.826.0.1.11"
    assert written["exam_summary"]["seg_sop_instance_uid"] == run.summary.seg_sop_instance_uid
    assert {"assemble", "total"} <= set(written["timings_s"])
    assert run.gpu_fallback == ""
    assert set(run.timings_s) == {"assemble", "priors", "process", "write"}
