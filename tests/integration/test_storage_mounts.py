"""The same job run from two mount points of the shared storage gives the same results (issue 15).

A worker resolves the spec's storage keys under its own mount point; nothing
in the results (file names, UIDs, every DICOM element, pixel data, the
measurements, the job summary) depends on that path. Only the wall clock
differs between two runs (content, series and creation date/time; timings).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pydicom
import pytest

from dicom_node.package_version import installed_version
from service.jobs import JobSpec, make_job_key, results_folder
from service.storage import LocalStorage, localize_spec, portable_spec
from service.worker import run_job
from tests.helpers.node_harness import write_phantom_exam

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _without_clock(dataset: pydicom.Dataset) -> pydicom.Dataset:
    """``dataset`` without its date/time elements (the run's wall clock), at every level."""
    for element in list(dataset):
        if element.VR in {"DA", "TM", "DT"}:
            del dataset[element.tag]
        elif element.VR == "SQ":
            for item in element.value:
                _without_clock(item)
    return dataset


def _content(path: Path) -> Any:
    if path.suffix == ".dcm":
        return _without_clock(pydicom.dcmread(path))
    if path.name in {"measurements.json", "job.json"}:
        summary = json.loads(path.read_text())
        summary.pop("timings_s")  # measured durations
        return summary
    return path.read_bytes()


def _files(folder: Path) -> dict[str, Any]:
    return {p.relative_to(folder).as_posix(): _content(p) for p in folder.rglob("*") if p.is_file()}


def test_results_are_identical_whichever_mount_point_the_worker_uses(tmp_path: Path) -> None:
    share = tmp_path / "receiver" / "share"
    files = write_phantom_exam(share / "spool")
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    spec = JobSpec(
        job_key=make_job_key(study_uid, installed_version(), [str(f) for f in files]),
        job_id=1,
        study_uid=study_uid,
        version=1,
        input_paths=tuple(str(f) for f in files),
        output_dir=str(results_folder(share / "results", study_uid, 1)),
        device="cpu",
    )
    keyed = portable_spec(spec, LocalStorage(share))
    assert not any(Path(p).is_absolute() for p in (*keyed.input_paths, keyed.output_dir))

    other = tmp_path / "worker-host" / "mnt" / "wbdwi"  # the same share, mounted elsewhere
    shutil.copytree(share, other)
    first = run_job(localize_spec(keyed, LocalStorage(share)))
    second = run_job(localize_spec(keyed, LocalStorage(other)))
    assert first.result_files and all(f.startswith(str(other)) for f in second.result_files)
    made_first = _files(Path(localize_spec(keyed, LocalStorage(share)).output_dir))
    made_second = _files(Path(localize_spec(keyed, LocalStorage(other)).output_dir))
    assert made_first.keys() == made_second.keys()  # the same SOP Instance UIDs
    assert sum(name.endswith(".dcm") for name in made_first) > 100
    differing = [name for name in made_first if made_first[name] != made_second[name]]
    assert differing == []
