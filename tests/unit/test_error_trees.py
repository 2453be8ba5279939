"""Each package keeps its whole exception tree in its ``errors`` module, under one base.

Every module of ``processing``, ``dicom_node`` and ``service`` is imported; each
exception class defined there must derive from the package's base, be defined in
the package's ``errors.py`` (or the ``errors.py`` of a subpackage that has its
own subtree), be exported by that module, and be drawn in the package's tree
picture (the docstring of its ``errors.py``). The worker relies on the trees to
log expected failures without a traceback.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import time
from pathlib import Path
from types import ModuleType

import pytest
from structlog.testing import capture_logs

from dicom_node.errors import DicomNodeError
from dicom_node.receive.spool import SpooledInstance
from processing.errors import (
    BackendUnavailableError,
    NoPriorExamError,
    ProcessingError,
    SummaryFormatError,
)
from service.errors import NodeError
from service.jobs import JobSpec, JobState, make_job_key
from service.jobstore import SqliteJobStore
from service.worker import JobOutcome, Worker

BASES: dict[str, type[Exception]] = {
    "processing": ProcessingError,
    "dicom_node": DicomNodeError,
    "service": NodeError,
}


def _modules(package: str) -> list[ModuleType]:
    root = importlib.import_module(package)
    names = [
        info.name
        for info in pkgutil.walk_packages(root.__path__, f"{package}.")
        if not info.name.endswith(".__main__")  # a command, run on import
    ]
    return [root, *(importlib.import_module(name) for name in names)]


def _exceptions_defined_in(module: ModuleType) -> list[type[BaseException]]:
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, BaseException)
        and obj.__module__ == module.__name__
    ]


@pytest.mark.parametrize("package", sorted(BASES))
def test_every_exception_of_a_package_is_in_its_errors_tree(package: str) -> None:
    base = BASES[package]
    picture = importlib.import_module(f"{package}.errors").__doc__ or ""
    found = {cls: module for module in _modules(package) for cls in _exceptions_defined_in(module)}
    assert base in found
    outside = sorted(
        f"{module.__name__}.{cls.__name__}"
        for cls, module in found.items()
        if not module.__name__.endswith(".errors")
    )
    assert outside == [], f"define these in {package}/errors.py"
    not_derived = sorted(cls.__name__ for cls in found if not issubclass(cls, base))
    assert not_derived == [], f"derive these from {base.__name__}"
    not_exported = sorted(
        cls.__name__ for cls, module in found.items() if cls.__name__ not in module.__all__
    )
    assert not_exported == []
    not_drawn = sorted(
        cls.__name__
        for cls in found
        if not re.search(rf"(?m)^\s*(\|\s*)*(\+-- )?{cls.__name__}(\s|$)", picture)
    )
    assert not_drawn == [], f"draw these in the tree of {package}/errors.py"


def test_the_checked_trees_hold_the_classes_that_had_strayed() -> None:
    # Outside their tree before; a bad-input failure must count as expected.
    for cls in (BackendUnavailableError, SummaryFormatError, NoPriorExamError):
        assert issubclass(cls, ProcessingError)
    assert issubclass(SummaryFormatError, ValueError)  # callers catching ValueError still do
    from dicom_node.errors import MalformedDataSetError, TlsConfigurationError

    assert issubclass(MalformedDataSetError, DicomNodeError | ValueError)
    assert issubclass(TlsConfigurationError, DicomNodeError)


def _claimed_job(store: SqliteJobStore, tmp_path: Path, study: str) -> JobSpec:
    store.record_instance(
        SpooledInstance(
            sop_instance_uid=f"{study}.9.1",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
            study_uid=study,
            series_uid=f"{study}.1",
            series_description="DWI",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            calling_ae="SCANNER",
            path=tmp_path / f"{study}.dcm",
            size_bytes=1,
            received_at=time.time(),
        )
    )
    [receiving] = [s for s in store.receiving_studies() if s.study_uid == study]
    spec = JobSpec(
        job_key=make_job_key(study, "1.0", [f"{study}.9.1"]),
        job_id=receiving.job_id,
        study_uid=study,
        version=1,
        input_paths=(str(tmp_path / f"{study}.dcm"),),
        output_dir=str(tmp_path / "out" / study),
    )
    assert store.submit(spec)
    claimed = store.claim(time.time())
    assert claimed is not None and claimed.job_id == spec.job_id
    return claimed


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (SummaryFormatError("exam_summary: no volume_ml"), True),
        (NoPriorExamError("no exam earlier than 20260105"), True),
        (BackendUnavailableError("CuPy is not installed"), True),
        (RuntimeError("a bug"), False),
    ],
)
def test_worker_logs_expected_failures_without_a_traceback(
    tmp_path: Path, error: Exception, expected: bool
) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite")
    spec = _claimed_job(store, tmp_path, "1.2.3")

    def failing(_spec: JobSpec) -> JobOutcome:
        raise error

    with capture_logs() as logs:
        assert Worker(store, runner=failing).process(spec) is None
    [failed] = [entry for entry in logs if entry["event"] == "job_failed"]
    assert failed["exc_info"] is (not expected)
    record = store.status(spec.job_id)
    assert record.state is JobState.FAILED
    assert record.reason == f"{type(error).__name__}: {error}"
