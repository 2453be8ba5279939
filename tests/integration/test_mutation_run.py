"""Issue 12 point 6: a seeded mutation run of a recorded storage association.

300 cases here (``python -m benchmarks receive_mutations`` runs more; see
:mod:`tests.helpers.mutation_run` for what is mutated and what is asserted):
no crash (no association thread dies of an exception either), no hang, every
acknowledged instance decodable and byte-identical to what was sent, nothing
left of a refused one, spool files and job store rows agree.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.mutation_run import run_mutations
from tests.helpers.scp_harness import running_receiver

pytestmark = [pytest.mark.integration]


@pytest.fixture
def thread_crashes() -> Iterator[list[str]]:
    crashes: list[str] = []
    previous = threading.excepthook

    def record(arguments: threading.ExceptHookArgs) -> None:
        crashes.append(f"{arguments.exc_type.__name__}: {arguments.exc_value}")

    threading.excepthook = record
    try:
        yield crashes
    finally:
        threading.excepthook = previous


def test_a_seeded_mutation_run_holds(tmp_path: Path, thread_crashes: list[str]) -> None:
    with running_receiver(tmp_path, pdu_timeout_seconds=5.0) as (receiver, store):
        report = run_mutations(
            receiver, tmp_path / "spool", store.has_instance, seed=12, cases=300, case_timeout=10
        )
        files = {path.stem for path in (tmp_path / "spool").rglob("*.dcm")}
        assert all(store.has_instance(uid) for uid in files)
    assert report.problems() == []
    assert thread_crashes == []
    assert report.cases == 300
    # The run exercises both outcomes: intact-enough instances are kept, broken ones refused.
    assert report.acknowledged > 50 and report.refused > 50
    assert report.slowest_case_seconds < 10
