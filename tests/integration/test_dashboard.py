"""The dashboard over HTTP (issue 14): access, CSRF, and an action logged with its user.

A real node runs in this process (CPU, free ports, a temporary data folder)
with the waitress server on ``http.bind_address``; requests go over TCP.
"""

from __future__ import annotations

import base64
import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from service.node import Node
from service.passwords import hash_secret
from service.settings import load_settings
from service.web.app import create_app
from tests.conftest import free_port

pytestmark = pytest.mark.integration

PASSWORD = "correct horse"
TOKEN = "scrape-token-1234"
HASHES = {"alice": hash_secret(PASSWORD), "token": hash_secret(TOKEN)}


@dataclass
class Reply:
    status: int
    headers: Any
    body: str


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_: Any, **__: Any) -> None:
        return None


class Client:
    """urllib with a cookie jar; never follows redirects; 4xx/5xx are replies too."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect()
        )

    def request(
        self,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        request = urllib.request.Request(self.base + path, data=data, headers=headers or {})
        try:
            with self.opener.open(request, timeout=30) as response:
                return Reply(response.status, response.headers, response.read().decode())
        except urllib.error.HTTPError as error:
            return Reply(error.code, error.headers, error.read().decode())

    def csrf(self, path: str = "/") -> str:
        page = self.request(path)
        match = re.search(r'name="csrf" value="([^"]+)"', page.body)
        assert match, page.body[:500]
        return match.group(1)

    def login(self) -> None:
        token = self.csrf("/login")
        reply = self.request("/login", {"csrf": token, "user": "alice", "password": PASSWORD})
        assert reply.status == 303, reply.body
        assert reply.headers["Location"].endswith("/")


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _node(tmp_path: Path, http: dict[str, Any], destinations: list[str], port: int = 0) -> Node:
    settings = load_settings(
        env={},
        overrides={
            "node": {
                "data_dir": str(tmp_path / "data"),
                "port": port or free_port(),
                "http_port": free_port(),
                "device": "cpu",
            },
            "http": http,
            "export": {"destinations": destinations},
        },
    )
    node = Node(settings)
    node.start()
    return node


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    """A node with an account and a token; its destination is itself (echo answers)."""
    port = free_port()
    credentials = {"users": [f"alice:{HASHES['alice']}"], "token_hash": HASHES["token"]}
    node = _node(tmp_path, credentials, [f"WBDWI@127.0.0.1:{port}"], port)
    yield node
    node.stop()


def _client(node: Node) -> Client:
    assert node.http is not None
    return Client(f"http://127.0.0.1:{node.http.port}")


def test_http_binds_loopback_by_default(node: Node) -> None:
    assert node.settings.http.bind_address == "127.0.0.1"
    assert node.http is not None and node.http.bind_address == "127.0.0.1"


def test_healthz_is_open_everything_else_needs_credentials(node: Node) -> None:
    client = _client(node)
    health = client.request("/healthz")
    assert (health.status, health.body) == (200, "ok\n")
    for path in ("/readyz", "/metrics"):
        refused = client.request(path)
        assert refused.status == 401, path
        assert "authentication required" in refused.body
        assert refused.headers["WWW-Authenticate"].startswith("Basic")
    page = client.request("/")
    assert page.status == 401
    assert 'action="/login"' in page.body  # the login form, not the dashboard
    assert 'id="jobs"' not in page.body
    wrong = client.request("/", headers=_basic("alice", "not the password"))
    assert wrong.status == 401
    wrong_token = client.request("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong_token.status == 401


def test_probes_and_pages_with_credentials(node: Node) -> None:
    client = _client(node)
    ready = client.request("/readyz", headers={"Authorization": f"Bearer {TOKEN}"})
    assert (ready.status, ready.body) == (200, "ready\n")
    metrics = client.request("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert metrics.status == 200
    assert metrics.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE wbdwi_jobs gauge" in metrics.body
    page = client.request("/", headers=_basic("alice", PASSWORD))
    assert page.status == 200
    for section in ("node", "associations", "receiving", "jobs", "outbox", "dead", "disk"):
        assert f'<section id="{section}">' in page.body
    assert "cpu (numpy" in page.body  # the device in use
    assert f"WBDWI@127.0.0.1:{node.settings.node.port}" in page.body  # the destination row
    assert "worker-1" in page.body and "exporter" in page.body
    unknown = client.request("/nothing-here", headers=_basic("alice", PASSWORD))
    assert (unknown.status, unknown.body) == (
        404,
        "not found: try /, /healthz, /readyz or /metrics\n",
    )


def test_post_without_csrf_token_or_from_another_site_is_refused(node: Node) -> None:
    client = _client(node)
    client.login()
    token = client.csrf()
    destination = str(node.settings.export.destinations[0])
    with capture_logs() as logs:
        missing = client.request("/actions/echo", {"destination": destination})
        wrong = client.request("/actions/echo", {"destination": destination, "csrf": "x" * 43})
        foreign = client.request(
            "/actions/echo",
            {"destination": destination, "csrf": token},
            headers={"Origin": "http://evil.example"},
        )
    assert missing.status == 403 and "security token" in missing.body
    assert wrong.status == 403 and "security token" in wrong.body
    assert foreign.status == 403 and "another site (evil.example)" in foreign.body
    assert not [e for e in logs if e["event"] == "dashboard_action"]  # nothing was done
    assert len([e for e in logs if e["event"] == "dashboard_request_refused"]) == 3
    # a GET cannot act
    assert client.request("/actions/echo").status == 405


def test_action_works_and_is_logged_with_the_user(node: Node) -> None:
    client = _client(node)
    client.login()
    token = client.csrf()
    destination = str(node.settings.export.destinations[0])
    origin = client.base
    with capture_logs() as logs:
        echoed = client.request(
            "/actions/echo", {"destination": destination, "csrf": token}, {"Origin": origin}
        )
        unknown = client.request(
            "/actions/retry-job", {"job_id": "999", "csrf": token}, {"Origin": origin}
        )
    assert echoed.status == 303 and unknown.status == 303
    page = client.request("/")
    assert f"echo {destination}: ok" in page.body  # the result shown on the page
    assert "no job 999" in page.body
    actions = [e for e in logs if e["event"] == "dashboard_action"]
    assert [(a["action"], a["user"], a["ok"]) for a in actions] == [
        ("echo", "alice", True),
        ("retry-job", "alice", False),
    ]
    assert actions[0]["destination"] == destination
    assert actions[1]["reason"] == "no job 999"


def test_token_logs_in_and_acts_as_token(node: Node) -> None:
    client = _client(node)
    token = client.csrf("/login")
    assert client.request("/login", {"csrf": token, "token": TOKEN}).status == 303
    csrf = client.csrf()
    with capture_logs() as logs:
        reply = client.request("/actions/retry-job", {"job_id": "7", "csrf": csrf})
    assert reply.status == 303
    assert [e["user"] for e in logs if e["event"] == "dashboard_action"] == ["token"]


def test_without_credentials_pages_are_refused_with_how_to(tmp_path: Path) -> None:
    node = _node(tmp_path, {}, [])
    try:
        client = _client(node)
        page = client.request("/")
        assert page.status == 403
        assert "No dashboard credentials are configured" in page.body
        assert "http.users" in page.body and "python -m service.passwords" in page.body
        assert client.request("/login").status == 403
        # this host may still probe, as before the dashboard
        assert client.request("/readyz").body == "ready\n"
        assert client.request("/healthz").status == 200
        # ... and no other host
        remote = (
            create_app(node)
            .test_client()
            .get("/metrics", environ_base={"REMOTE_ADDR": "192.0.2.7"})
        )
        assert remote.status_code == 403
        assert "only this host may read it without credentials" in remote.get_data(as_text=True)
    finally:
        node.stop()


def test_delivery_actions_name_what_they_did(node: Node) -> None:
    client = _client(node)
    client.login()
    token = client.csrf()
    destination = str(node.settings.export.destinations[0])
    with capture_logs() as logs:
        for path, value in (
            ("retry-deliveries", destination),
            ("retry-deliveries", "OTHER@192.0.2.1:104"),
            ("cancel-deliveries", destination),
        ):
            reply = client.request(f"/actions/{path}", {"destination": value, "csrf": token})
            assert reply.status == 303
    page = client.request("/").body
    assert f"no delivery to {destination} is waiting" in page
    assert "OTHER@192.0.2.1:104 is not a configured destination" in page
    actions = [(e["action"], e["ok"], e["user"]) for e in logs if e["event"] == "dashboard_action"]
    assert actions == [
        ("retry-deliveries", True, "alice"),
        ("retry-deliveries", False, "alice"),
        ("cancel-deliveries", True, "alice"),
    ]
