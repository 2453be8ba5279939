"""``python -m benchmarks``: module names first, then options with their values."""

from __future__ import annotations

import pytest

from benchmarks.__main__ import main


def test_an_option_value_is_not_taken_for_a_module_name(capsys: pytest.CaptureFixture[str]) -> None:
    # "robustness" after --out is the option's value: only "no_such_module" selects.
    assert main(["no_such_module", "--out", "robustness"]) == 2
    assert "no benchmark module matches" in capsys.readouterr().err


def test_names_before_the_first_option_select_modules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no_such_module", "neither_this"]) == 2
    message = capsys.readouterr().err
    assert "['no_such_module', 'neither_this']" in message
    assert "benchmarks.bench_robustness" in message
