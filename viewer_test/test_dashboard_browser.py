"""``make viewer-test``: the node's dashboard in Debian's headless Chromium (issue 14).

A node (subprocess, CPU) with one dashboard account receives a phantom exam from
dcmtk's storescu and processes it; its only destination does not answer, so the
results wait in the outbox with the error. ``dashboard_checks.mjs`` then, in the
browser: is refused without logging in (401 and the login form; ``/metrics``
401 too), logs in through the form, reads every section, marks the processed exam
as the patient's baseline, echoes the destination, retries its deliveries now,
cancels them (the job ends ``done``), and posts a form from another origin
(refused). The assertions are on what the pages
showed and on the node's log (each action logged with the user).

Screenshots: ``viewer-test-out/dashboard*.png``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

from service.passwords import hash_secret
from tests.conftest import free_port, require_tool
from tests.helpers.node_harness import NodeProcess, storescu, wait_for, write_phantom_exam

REPO = Path(__file__).resolve().parent.parent
NODE_MODULES = REPO / ".viewer-cache" / "node_modules"
CHROMIUM = Path("/usr/bin/chromium")
OUT = Path(os.environ.get("WBDWI_VIEWER_OUT", REPO / "viewer-test-out"))
USER, PASSWORD = "itadmin", "dashboard-test-pw"
TOKEN = "monitoring-token-42"
PATIENT_ID = "PHANTOM-DASH"
BROWSER_LIMIT_S = 180

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class DashboardRun:
    """What the browser saw, and the node's log after it."""

    facts: dict[str, Any]
    log_events: list[dict[str, Any]]
    study_uid: str
    destination: str


class _NodeWithToken(NodeProcess):
    """The harness's node, its readiness read with the monitoring token (credentials are set)."""

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"node exited with {self.process.returncode}:\n{self.log()}")
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}/readyz",
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False


def _require(path: Path, hint: str) -> None:
    if not path.exists():
        require_tool(str(path), hint)  # skips (fails under CI=true) naming what is missing


def _run_browser(spec: dict[str, Any]) -> dict[str, Any]:
    spec_path, result_path = OUT / "dashboard-spec.json", OUT / "dashboard-result.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    result_path.unlink(missing_ok=True)
    node = require_tool("node", "install Node.js (make viewer-tools)")
    script = REPO / "viewer_test" / "dashboard_checks.mjs"
    with (OUT / "dashboard-browser.log").open("w") as log:
        process = subprocess.Popen(
            [node, str(script), str(spec_path), str(result_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            process.wait(timeout=BROWSER_LIMIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            pytest.fail(f"dashboard_checks.mjs ran past {BROWSER_LIMIT_S} s")
    if process.returncode != 0 or not result_path.exists():
        log_text = (OUT / "dashboard-browser.log").read_text()[-3000:]
        pytest.fail(f"dashboard_checks.mjs exited {process.returncode}:\n{log_text}")
    result: dict[str, Any] = json.loads(result_path.read_text())
    assert not result["problems"], result["problems"]
    return result


def _log_events(node: NodeProcess) -> list[dict[str, Any]]:
    events = []
    for line in node.log().splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardRun]:
    _require(CHROMIUM, "install Debian's chromium (make viewer-tools)")
    _require(NODE_MODULES / "playwright-core", "npm ci into .viewer-cache (make viewer-tools)")
    require_tool("storescu", "install dcmtk (make viewer-tools)")
    OUT.mkdir(parents=True, exist_ok=True)
    workdir = tmp_path_factory.mktemp("dashboard")
    config = workdir / "wbdwi.toml"
    config.write_text(
        f'[http]\nusers = ["{USER}:{hash_secret(PASSWORD)}"]\n'
        f'token_hash = "{hash_secret(TOKEN)}"\n\n'
        "[export]\nbackoff_initial_seconds = 60\nbackoff_max_seconds = 120\n"  # one round at a time
    )
    destination = f"PACS@127.0.0.1:{free_port()}"  # nothing listens there
    node = _NodeWithToken(workdir, destinations=[destination], extra_args=["--config", str(config)])
    files = write_phantom_exam(workdir / "exam", patient_id=PATIENT_ID)
    with node:
        sent = storescu(files, node.port)
        assert sent.returncode == 0, sent.stderr
        wait_for(
            lambda: (
                node.all_jobs_in("exporting", "done", "failed")
                and node.query("SELECT 1 FROM outbox WHERE last_error != ''")
            ),
            300,
            f"the exam processed and a delivery attempt failed (log: {node.log_path})",
            poll=0.5,
        )
        [(study_uid,)] = node.query("SELECT study_uid FROM jobs")
        result = _run_browser(
            {
                "base": f"http://127.0.0.1:{node.http_port}",
                "user": USER,
                "password": PASSWORD,
                "patient_id": PATIENT_ID,
                "issuer": str(pydicom.dcmread(files[0]).get("IssuerOfPatientID", "")),
                "study_uid": study_uid,
                "destination": destination,
                "out": str(OUT),
                "chromium": str(CHROMIUM),
                "node_modules": str(NODE_MODULES),
                "timeout_s": 30,
            }
        )
        events = _log_events(node)
    (OUT / "dashboard-node.log").write_text(node.log())
    yield DashboardRun(result["facts"], events, str(study_uid), destination)


def test_unauthenticated_requests_are_refused(dashboard: DashboardRun) -> None:
    facts = dashboard.facts
    assert facts["unauthenticated_status"] == 401
    assert facts["unauthenticated_has_login_form"] is True
    assert facts["unauthenticated_has_jobs"] is False
    assert facts["unauthenticated_metrics_status"] == 401
    assert facts["cross_site_post_status"] == 403


def test_pages_render_the_nodes_real_state(dashboard: DashboardRun) -> None:
    facts = dashboard.facts
    assert facts["after_login_url"].endswith("/")
    assert facts["readiness"] == "ready"
    assert facts["device"].startswith("cpu")
    assert "worker-1" in facts["node_section"] and "running" in facts["node_section"]
    assert "SCANNER" in facts["associations"] and dashboard.study_uid in facts["associations"]
    [job] = facts["job_rows"]
    assert job[1] == "exporting"  # processed; its destination does not answer
    assert dashboard.study_uid in job[3]
    assert "verdict: " in job[8]  # the reliability verdict of the result
    [row] = [r for r in facts["outbox_rows"] if r["destination"] == dashboard.destination]
    pending, last_error, next_try = int(row["cells"][1]), row["cells"][3], row["cells"][4]
    assert pending > 0
    assert last_error  # why the delivery failed
    assert next_try != "-"
    assert "data folder" in facts["disk"] and "Retention:" in facts["disk"]
    assert "none" in facts["dead"]
    assert "none" in facts["receiving"]


def test_actions_work_end_to_end_and_are_logged_with_the_user(dashboard: DashboardRun) -> None:
    facts = dashboard.facts
    assert facts["baseline_flashes"] == [
        {
            "kind": "ok",
            "text": f"study {dashboard.study_uid} of patient {PATIENT_ID} "
            "is marked as the baseline",
        }
    ]
    [echo] = facts["echo_flashes"]
    assert echo["kind"] == "error" and "no association" in echo["text"]
    [retry] = facts["retry_flashes"]
    assert retry["kind"] == "ok"
    assert re.fullmatch(
        rf"\d+ delivery\(ies\) to {re.escape(dashboard.destination)} due now", retry["text"]
    )
    [cancel] = facts["cancel_flashes"]
    assert cancel["kind"] == "ok"
    cancelled = re.fullmatch(
        rf"(\d+) delivery\(ies\) to {re.escape(dashboard.destination)} cancelled", cancel["text"]
    )
    assert cancelled, cancel
    assert "Cancel every undelivered file" in facts["cancel_dialog"]
    # the job no longer waits on the destination, and the row counts what was cancelled
    [job] = facts["after_cancel_job_rows"]
    assert job[1] == "done"
    [row] = facts["after_cancel_outbox_rows"]
    counts = dict(zip(facts["outbox_headers"][1:], row["cells"][1:], strict=False))
    assert counts["pending"] == "0"
    assert counts["cancelled"] == cancelled.group(1)
    actions = [e for e in dashboard.log_events if e.get("event") == "dashboard_action"]
    by_action = {(a["action"], a["ok"]): a for a in actions}
    assert by_action[("baseline", True)]["user"] == USER
    assert by_action[("baseline", True)]["study_uid"] == dashboard.study_uid
    assert by_action[("echo", False)]["user"] == USER
    assert by_action[("retry-deliveries", True)]["user"] == USER
    assert by_action[("cancel-deliveries", True)]["user"] == USER
    assert by_action[("cancel-deliveries", True)]["destination"] == dashboard.destination
    logins = [e for e in dashboard.log_events if e.get("event") == "dashboard_login"]
    assert [e["user"] for e in logins] == [USER]
    refused = [e for e in dashboard.log_events if e.get("event") == "dashboard_request_refused"]
    assert [e["path"] for e in refused] == ["/actions/retry-job"]  # the cross-site post
