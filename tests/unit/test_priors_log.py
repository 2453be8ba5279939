"""An unreachable priors peer is logged as the IT guide says (``priors_pacs_unavailable``).

``deploy/README.md`` (section 11, "no comparison with earlier exams") tells IT to
look for ``priors_pacs_unavailable`` with the peer and the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from structlog.testing import capture_logs

from service.jobs import PriorsSpec
from service.priors import find_priors
from tests.conftest import free_port
from tests.helpers.writer_fixtures import SyntheticExam, write_synthetic_exam


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> SyntheticExam:
    return write_synthetic_exam(tmp_path_factory.mktemp("exam") / "input")


def test_an_unreachable_priors_peer_is_logged_with_the_peer_and_the_reason(
    synthetic: SyntheticExam, tmp_path: Path
) -> None:
    peer = f"PACS@127.0.0.1:{free_port()}"  # nothing listens there
    spec = PriorsSpec(
        history_path=str(tmp_path / "h.sqlite3"),
        pacs=peer,
        calling_aet="WBDWI",
        timeout_seconds=2,
        continue_without_pacs=True,
    )
    with capture_logs() as logs:
        priors = find_priors(spec, synthetic.exam)
    events = [entry for entry in logs if entry["event"] == "priors_pacs_unavailable"]
    assert len(events) == 1, logs
    assert events[0]["peer"] == peer
    assert events[0]["log_level"] == "warning"
    assert "unreachable or refused" in events[0]["reason"]
    assert priors.warnings and events[0]["reason"] in priors.warnings[0]
