"""write_results with the derived series and the Parametric Map split over several children.

The number of children is forced with ``DICOM_NODE_WRITE_WORKERS`` (a 2-core
host would use one); every fork of the parent is counted, so each test also
checks that the children it is about were started.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest

import dicom_node.writers.write_results as write_results_module
from dicom_node.writers import WriterError
from dicom_node.writers.encoding import encode_series
from dicom_node.writers.write_results import WRITERS_ENV, write_results
from processing.exam import DwiExam
from processing.results import ProcessingResult
from tests.helpers.writer_fixtures import phantom_exam_and_result

pytestmark = pytest.mark.slow

DERIVED = {"adc", "b1000", "adc_map"}
#: With more than one writing child, the SEG, SR and key images have a child of their own.
REPORTS = 1
WHEN = datetime(2026, 6, 1, 12, 0, 0)  # the same content date in every run: the same bytes


@pytest.fixture(scope="module")
def phantom_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[DwiExam, ProcessingResult]:
    return phantom_exam_and_result(tmp_path_factory.mktemp("scanner"), "small")


@pytest.fixture
def forks(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The pids of the children the parent forks while the test runs."""
    started: list[int] = []
    real_fork = os.fork

    def counted() -> int:
        pid = real_fork()
        if pid:
            started.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", counted)
    yield started


def _contents(out: Path) -> dict[str, bytes]:
    """Every file's bytes, but the key images' (highdicom stamps them with the time of day)."""
    return {
        str(path.relative_to(out)): path.read_bytes()
        for path in out.rglob("*")
        if path.is_file() and path.parent.name != "key_images"
    }


def _write(
    case: tuple[DwiExam, ProcessingResult],
    out: Path,
    on_derived_written: Callable[[list[tuple[Path, str]]], None] | None = None,
) -> list[Path]:
    exam, result = case
    return write_results(
        exam,
        result,
        out,
        version_label="1.0.0",
        content_datetime=WHEN,
        on_derived_written=on_derived_written,
    )


def test_several_children_write_the_same_bytes_as_one(
    phantom_case: tuple[DwiExam, ProcessingResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    forks: list[int],
) -> None:
    monkeypatch.setenv(WRITERS_ENV, "1")
    one = _write(phantom_case, tmp_path / "one")
    assert len(forks) == 1
    monkeypatch.setenv(WRITERS_ENV, "4")  # the map, and three runs of slices (one crosses series)
    several = _write(phantom_case, tmp_path / "several")
    assert len(forks) == 1 + 4 + REPORTS
    assert sorted(path.relative_to(tmp_path / "one") for path in one) == sorted(
        path.relative_to(tmp_path / "several") for path in several
    )
    expected = _contents(tmp_path / "one")
    assert {name.split("/")[0] for name in expected} >= DERIVED
    assert _contents(tmp_path / "several") == expected  # byte for byte, no part file


def test_a_failing_child_among_several_leaves_nothing_and_names_its_failure(
    phantom_case: tuple[DwiExam, ProcessingResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    forks: list[int],
) -> None:

    def failing_mid_series(datasets: list[object]) -> object:
        if int(datasets[0].InstanceNumber) != 1:  # type: ignore[attr-defined]
            raise OSError("no space left on device (injected in a slab)")
        return encode_series(datasets)  # type: ignore[arg-type]

    monkeypatch.setattr(write_results_module, "encode_series", failing_mid_series)
    monkeypatch.setenv(WRITERS_ENV, "4")
    with pytest.raises(WriterError, match=r"derived MR series: no space left .*injected in a slab"):
        _write(phantom_case, tmp_path / "out")
    assert len(forks) == 4 + REPORTS
    assert not (tmp_path / "out").exists()
    for pid in forks:  # every child was waited for
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def test_each_child_hands_on_its_own_files_in_place(
    phantom_case: tuple[DwiExam, ProcessingResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    forks: list[int],
) -> None:
    handed: list[list[tuple[Path, str]]] = []
    in_place: list[bool] = []

    def hand_on(files: list[tuple[Path, str]]) -> None:
        handed.append(files)
        in_place.append(
            all(
                path.is_file() and not path.with_name(f".{path.name}.part").exists()
                for path, _ in files
            )
        )

    monkeypatch.setenv(WRITERS_ENV, "3")
    written = _write(phantom_case, tmp_path / "out", hand_on)
    assert len(forks) == 3 + REPORTS
    assert len(handed) == 3  # one call per child, as each ends
    assert in_place == [True, True, True]
    assert sorted(len(files) for files in handed)[0] == 1  # the Parametric Map's own child
    files = [file for batch in handed for file in batch]
    assert len(files) == len(set(files))
    assert {path for path, _ in files} == {p for p in written if p.parent.name in DERIVED}
    assert all(path.stem == uid for path, uid in files)
    assert not list((tmp_path / "out").rglob("*.part"))


def test_with_hand_on_a_failing_child_keeps_only_the_other_childrens_files(
    phantom_case: tuple[DwiExam, ProcessingResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    forks: list[int],
) -> None:
    """The files of the children that ended well were handed on and stay; nothing else does."""

    def no_map(*args: object, **kwargs: object) -> object:
        raise WriterError("the Parametric Map cannot be built (injected)")

    monkeypatch.setattr(write_results_module, "build_parametric_map", no_map)
    monkeypatch.setenv(WRITERS_ENV, "3")
    handed: list[list[tuple[Path, str]]] = []
    with pytest.raises(WriterError, match=r"derived MR series: .*Parametric Map .*\(injected\)"):
        _write(phantom_case, tmp_path / "out", handed.append)
    assert len(forks) == 3 + REPORTS
    assert len(handed) == 2  # the two children writing the series
    left = {path for path in (tmp_path / "out").rglob("*") if path.is_file()}
    assert left == {path for batch in handed for path, _ in batch}
    assert {path.parent.name for path in left} == {"adc", "b1000"}


def test_a_failed_report_stops_and_waits_for_every_child(
    phantom_case: tuple[DwiExam, ProcessingResult],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    forks: list[int],
) -> None:
    """The report fails (in its own child here): the derived series' children are stopped
    and reaped, and nothing is left."""

    def no_report(*args: object, **kwargs: object) -> object:
        raise WriterError("the report cannot be built (injected)")

    monkeypatch.setattr(write_results_module, "build_measurement_report", no_report)
    monkeypatch.setenv(WRITERS_ENV, "3")
    with pytest.raises(WriterError, match=r"report cannot be built \(injected\)"):
        _write(phantom_case, tmp_path / "out")
    assert len(forks) == 3 + REPORTS
    assert not (tmp_path / "out").exists()
    for pid in forks:
        with pytest.raises(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
