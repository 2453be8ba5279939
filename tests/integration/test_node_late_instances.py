"""Late instances through the real node (issue 12 point 5): the first version is ``done``.

A small phantom exam is sent with storescu and processed (version 1, ``done``).
Then a series of the same study that was held back arrives: the node opens
version 2, processes it with every instance of the study (the earlier ones and
the late ones) and writes a new SR that names version 1's SR as its predecessor.
"""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
import pytest

from service.jobs import JobSpec
from tests.helpers.node_harness import NodeProcess, storescu, wait_for, write_phantom_exam

pytestmark = [pytest.mark.integration]


def _one_sr(folder: Path) -> pydicom.Dataset:
    [path] = sorted((folder / "sr").glob("*.dcm"))
    return pydicom.dcmread(path)


def _spec(node: NodeProcess, version: int) -> JobSpec:
    [(text,)] = node.query(
        "SELECT spec FROM jobs WHERE version = ? AND spec IS NOT NULL", (version,)
    )
    return JobSpec.from_json(text)


def test_late_series_after_done_is_processed_as_version_2_with_every_instance(
    tmp_path: Path,
) -> None:
    files = write_phantom_exam(tmp_path / "exam", distractors=True)
    numbers = {
        path: int(pydicom.dcmread(path, stop_before_pixels=True).SeriesNumber) for path in files
    }
    late = [path for path in files if numbers[path] == 2]  # the T1 series, sent afterwards
    early = [path for path in files if numbers[path] != 2]
    assert late and early
    with NodeProcess(tmp_path, quiet_seconds=1.5) as node:
        sent = storescu(early, node.port)
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: node.all_jobs_in("done", "failed"), 180, "version 1 to finish")
        assert [(state, version) for _, state, version, _ in node.job_states()] == [("done", 1)]
        sent = storescu(late, node.port)
        assert sent.returncode == 0, sent.stderr
        wait_for(
            lambda: len(node.job_states()) == 2 and node.all_jobs_in("done", "failed"),
            180,
            "version 2 to finish",
        )
        states = [(state, version) for _, state, version, _ in node.job_states()]
        assert states == [("done", 1), ("done", 2)], node.job_states()
        first, second = _spec(node, 1), _spec(node, 2)
        study_folder = node.data_dir / "results" / _study_uid(early[0])
    assert len(first.input_paths) == len(early)
    assert len(second.input_paths) == len(files)  # the earlier instances and the late ones
    assert {Path(p).name for p in first.input_paths} < {Path(p).name for p in second.input_paths}
    assert Path(second.output_dir) == study_folder.resolve() / "v2"
    summary = json.loads((study_folder / "v2" / "job.json").read_text())
    assert summary["version"] == 2
    earlier, later = _one_sr(study_folder / "v1"), _one_sr(study_folder / "v2")
    assert earlier.SOPInstanceUID != later.SOPInstanceUID
    named = [
        item.ReferencedSOPInstanceUID
        for study in later.PredecessorDocumentsSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    ]
    assert named == [earlier.SOPInstanceUID]
    assert "PredecessorDocumentsSequence" not in earlier


def _study_uid(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
