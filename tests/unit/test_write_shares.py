"""How write_results splits the derived series and the Parametric Map over its children."""

from __future__ import annotations

import os

import pytest

import dicom_node.writers.write_results as write_results_module
from dicom_node.writers.write_results import WRITERS_ENV, _shares, _writer_count


def _series(**counts: int) -> dict[str, tuple[object, ...]]:
    return {folder: tuple(object() for _ in range(count)) for folder, count in counts.items()}


def _files(shares: list[write_results_module._Share]) -> list[tuple[str, int]]:
    return [
        (folder, index)
        for share in shares
        for folder, start, stop in share.slabs
        for index in range(start, stop)
    ]


def test_one_child_writes_everything_in_order() -> None:
    series = _series(adc=234, b1000=234)
    (share,) = _shares(series, True, 1)  # type: ignore[arg-type]
    assert share.slabs == (("adc", 0, 234), ("b1000", 0, 234))
    assert share.parametric_map


@pytest.mark.parametrize("writers", [2, 3, 4, 5, 8])
@pytest.mark.parametrize("parametric_map", [True, False])
def test_several_children_cover_every_file_once_in_even_contiguous_runs(
    writers: int, parametric_map: bool
) -> None:
    series = _series(adc=234, b800=234, b1500=233)
    shares = _shares(series, parametric_map, writers)  # type: ignore[arg-type]
    assert len(shares) == writers
    with_map = [share for share in shares if share.parametric_map]
    assert len(with_map) == parametric_map
    if parametric_map:
        assert with_map[0] is shares[0] and not shares[0].slabs  # its own child, started first
    assert _files(shares) == [
        (folder, index) for folder, datasets in series.items() for index in range(len(datasets))
    ]
    runs = [sum(stop - start for _, start, stop in share.slabs) for share in shares if share.slabs]
    assert max(runs) - min(runs) <= 1
    for share in shares:
        assert all(start < stop for _, start, stop in share.slabs)
    if writers - parametric_map >= len(series):
        assert all(len(share.slabs) <= 2 for share in shares)  # a run crosses one end at most


def test_the_count_follows_the_usable_cores_less_one_with_a_cap(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(WRITERS_ENV, raising=False)
    cores = {"n": 2}
    monkeypatch.setattr(write_results_module, "_usable_cpus", lambda: cores["n"])
    assert _writer_count(31) == 1  # a 2-core host: one child, as before the split
    cores["n"] = 1
    assert _writer_count(31) == 1
    cores["n"] = 4
    assert _writer_count(31) == 3
    assert _writer_count(2) == 2  # no more children than pieces
    cores["n"] = 64
    assert _writer_count(31) == write_results_module._MAX_WRITERS
    monkeypatch.setenv(WRITERS_ENV, "3")
    assert _writer_count(31) == 3
    assert _writer_count(2) == 2
    monkeypatch.setenv(WRITERS_ENV, "junk")
    assert _writer_count(31) == write_results_module._MAX_WRITERS


def test_usable_cores_are_those_this_process_may_run_on() -> None:
    cores = write_results_module._usable_cpus()
    assert 1 <= cores <= (os.cpu_count() or 1)
