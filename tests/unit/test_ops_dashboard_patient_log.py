"""The dashboard's baseline action never logs the Patient ID (IT guide 9.1, CONFORMANCE 7.4).

The page shows the logged-in user which patient's exam became the baseline;
the ``dashboard_action`` log entry names the study, the user and the outcome
only. Through the Flask application of a real node (not serving DICOM), with
basic-auth credentials and the session's CSRF token.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from structlog.testing import capture_logs

from processing.exam_summary import ExamSummary
from service.history import HISTORY_FILE, HistoryStore, PatientKey
from service.node import Node
from service.passwords import hash_secret
from service.settings import load_settings
from service.web.app import create_app
from tests.conftest import free_port

PATIENT_ID = "PAT-4711-SECRET"
ISSUER = "HOSP-ISSUER-9"
STUDY = "1.2.826.0.1.3680043.8.498.55"
PASSWORD = "correct horse"
AUTH = {"Authorization": "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()}


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    for name in [n for n in os.environ if n.startswith("WBDWI_")]:
        monkeypatch.delenv(name)
    settings = load_settings(
        env={},
        overrides={
            "node": {"data_dir": str(tmp_path / "data"), "port": free_port(), "http_port": 0},
            "http": {"users": [f"alice:{hash_secret(PASSWORD)}"]},
        },
    )
    node = Node(settings)  # not started: the action needs the data folder only
    HistoryStore(node.data_dir / HISTORY_FILE).record_exam(
        ExamSummary(
            study_instance_uid=STUDY,
            study_date="20260101",
            study_time="090000",
            patient_id=PATIENT_ID,
            issuer_of_patient_id=ISSUER,
            tdv_ml=0.0,
            adc=None,
            histogram=None,
            classes=None,
            lesions=(),
            sr_sop_instance_uid=f"{STUDY}.100",
            seg_sop_instance_uid="",
        )
    )
    yield node
    node.stop()


def _post_baseline(client: FlaskClient, study_uid: str) -> str:
    """POST the baseline form as the page does; the page shown after the redirect."""
    page = client.get("/", headers=AUTH).text
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page[:500]
    reply = client.post(
        "/actions/baseline",
        data={
            "csrf": match.group(1),
            "patient_id": PATIENT_ID,
            "issuer": ISSUER,
            "study_uid": study_uid,
        },
        headers={**AUTH, "Origin": "http://localhost"},
    )
    assert reply.status_code == 303, reply.text
    return client.get("/", headers=AUTH).text


def _leaks(entry: Mapping[str, object]) -> list[str]:
    return [key for key, value in entry.items() if PATIENT_ID in str(value) or ISSUER in str(value)]


def test_the_baseline_action_logs_no_patient_id(node: Node) -> None:
    client = create_app(node).test_client()
    with capture_logs() as logs:
        page = _post_baseline(client, STUDY)
    assert f"study {STUDY} of patient {PATIENT_ID} is marked as the baseline" in page
    history = HistoryStore(node.data_dir / HISTORY_FILE)
    assert history.get(PatientKey(PATIENT_ID, ISSUER), STUDY).is_baseline

    actions = [entry for entry in logs if entry["event"] == "dashboard_action"]
    assert len(actions) == 1, logs
    assert actions[0]["ok"] is True
    assert actions[0]["user"] == "alice"
    assert actions[0]["result"] == f"study {STUDY} is marked as the baseline"
    assert actions[0]["study_uid"] == STUDY
    assert _leaks(actions[0]) == []
    assert [entry for entry in logs if _leaks(entry)] == []


def test_a_refused_baseline_action_logs_no_patient_id(node: Node) -> None:
    client = create_app(node).test_client()
    with capture_logs() as logs:
        page = _post_baseline(client, "1.2.3.404")
    assert "is not in the history of this patient" in page
    actions = [entry for entry in logs if entry["event"] == "dashboard_action"]
    assert len(actions) == 1, logs
    assert actions[0]["ok"] is False
    assert [entry for entry in logs if _leaks(entry)] == []
