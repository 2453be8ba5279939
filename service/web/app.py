"""The Flask application on ``node.http_port``: the dashboard, its actions and the probes.

Access (``deploy/README.md``, "Dashboard"):

- ``/healthz`` is open to anyone who reaches the port (liveness).
- ``/readyz`` and ``/metrics``: with credentials configured, they need them
  (``Authorization: Bearer TOKEN`` for a scraper, or basic auth); with none
  configured they answer clients on this host only (127.0.0.1, ::1), as
  before the dashboard, and refuse others with how to configure credentials.
- The dashboard pages need a login (session cookie, basic auth or the token);
  with no credentials configured they are refused with how to configure them.
- Actions are POST forms with the session's CSRF token, from a page of this
  node (``Origin``); each is logged (``dashboard_action``) with who did it
  (the form's fields, less the Patient ID and its issuer: never logged).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any

import structlog
from flask import Flask, Response, abort, flash, g, redirect, render_template, request, session

from service.http import render_metrics
from service.jobs import JobState, OutboxState
from service.logging import PATIENT_KEYS
from service.web import actions
from service.web.auth import Authenticator, Principal, csrf_problem, new_csrf_token
from service.web.snapshot import read_snapshot
from service.web.view import NodeView

__all__ = ["LOOPBACK", "NO_CREDENTIALS", "create_app"]

LOGGER = structlog.get_logger(__name__)

LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})
NO_CREDENTIALS = (
    "No dashboard credentials are configured. Set http.users (NAME:HASH) or http.token_hash "
    "in the settings; make a hash with 'python -m service.passwords' (see the IT guide, "
    "Dashboard)."
)
_PLAIN = "text/plain; charset=utf-8"
# Form fields never logged with a dashboard action (the baseline form's patient).
_UNLOGGED_FIELDS = PATIENT_KEYS | {"csrf", "issuer"}
_TEMPLATES = Path(__file__).parent / "templates"


def _time(value: float | None) -> str:
    if not value:
        return "-"
    return dt.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def _bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{int(value)} B"
        value /= 1024
    return f"{value:.1f} TiB"


def _in(seconds: float) -> str:
    if seconds <= 0:
        return "now"
    if seconds < 120:
        return f"in {seconds:.0f} s"
    if seconds < 7200:
        return f"in {seconds / 60:.0f} min"
    return f"in {seconds / 3600:.1f} h"


def create_app(node: NodeView) -> Flask:
    """The application serving ``node`` (its settings' ``[http]`` section decides access)."""
    app = Flask(__name__, template_folder=str(_TEMPLATES), static_folder=None)
    http = node.settings.http
    app.config.update(
        SECRET_KEY=secrets.token_bytes(32),  # sessions end when the node restarts
        SESSION_COOKIE_NAME="wbdwi_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=http.session_hours),
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    app.jinja_env.filters.update(time=_time, bytes=_bytes, eta=_in)
    app.jinja_env.globals.update(OutboxState=OutboxState, JobState=JobState)
    auth = Authenticator(http)
    # Logged when the server starts serving (not when the port turns out to be taken).
    app.config["WBDWI_START_WARNINGS"] = (
        [] if auth.configured else [("dashboard_off", {"reason": NO_CREDENTIALS})]
    )
    _register_probes(app, node, auth)
    _register_pages(app, node, auth)
    _register_actions(app, node)
    return app


def _text(body: str, status: int = 200, content_type: str = _PLAIN) -> Response:
    return Response(body, status=status, content_type=content_type)


def _probe_allowed(auth: Authenticator) -> bool:
    if auth.configured:
        return auth.header(request.headers.get("Authorization")) is not None
    return (request.remote_addr or "") in LOOPBACK


def _probe_refusal(auth: Authenticator) -> Response:
    if auth.configured:
        response = _text(
            "authentication required: send 'Authorization: Bearer TOKEN' (http.token_hash) "
            "or basic auth (http.users)\n",
            401,
        )
        response.headers["WWW-Authenticate"] = 'Basic realm="wbdwi", charset="UTF-8"'
        return response
    return _text(
        f"refused: only this host may read it without credentials. {NO_CREDENTIALS}\n", 403
    )


def _register_probes(app: Flask, node: NodeView, auth: Authenticator) -> None:
    @app.get("/healthz")
    def healthz() -> Response:
        return _text("ok\n")

    @app.get("/readyz")
    def readyz() -> Response:
        if not _probe_allowed(auth):
            return _probe_refusal(auth)
        problems = node.readiness_problems()
        if problems:
            return _text("not ready: " + "; ".join(problems) + "\n", 503, "text/plain")
        return _text("ready\n")

    @app.get("/metrics")
    def metrics() -> Response:
        if not _probe_allowed(auth):
            return _probe_refusal(auth)
        body = render_metrics(node.metrics())
        return _text(body, 200, "text/plain; version=0.0.4; charset=utf-8")

    @app.errorhandler(404)
    def not_found(_error: Exception) -> Response:
        return _text("not found: try /, /healthz, /readyz or /metrics\n", 404, "text/plain")


def _principal(auth: Authenticator) -> Principal | None:
    name = session.get("user")
    if isinstance(name, str) and name:
        return Principal(name, "session")
    return auth.header(request.headers.get("Authorization"))


def _csrf_token() -> str:
    token = session.get("csrf")
    if not isinstance(token, str) or not token:
        token = new_csrf_token()
        session["csrf"] = token
    return token


def _refused_page(auth: Authenticator) -> tuple[str, int]:
    if not auth.configured:
        return render_template("refused.html", message=NO_CREDENTIALS), 403
    return render_template("login.html", csrf=_csrf_token(), error=""), 401


def _register_pages(app: Flask, node: NodeView, auth: Authenticator) -> None:
    @app.before_request
    def authenticate() -> Any:
        if request.path in ("/healthz", "/readyz", "/metrics") or request.endpoint is None:
            return None
        if request.path == "/login":
            return None if auth.configured else _refused_page(auth)
        principal = _principal(auth)
        if principal is None:
            return _refused_page(auth)
        g.principal = principal
        return None

    @app.get("/")
    def dashboard() -> str:
        return render_template(
            "dashboard.html",
            s=read_snapshot(node),
            user=g.principal.name,
            csrf=_csrf_token(),
        )

    @app.get("/login")
    def login_form() -> str:
        return render_template("login.html", csrf=_csrf_token(), error="")

    @app.post("/login")
    def login() -> Any:
        _check_csrf()
        form = request.form
        principal = (
            auth.token(form.get("token", ""))
            if form.get("token")
            else auth.password(form.get("user", ""), form.get("password", ""))
        )
        if principal is None:
            LOGGER.warning("dashboard_login_failed", user=form.get("user") or "token",
                           remote=request.remote_addr)  # fmt: skip
            page = render_template(
                "login.html", csrf=_csrf_token(), error="Wrong name, password or token."
            )
            return page, 401
        session.clear()
        session.permanent = True
        session["user"] = principal.name
        session["csrf"] = new_csrf_token()
        LOGGER.info("dashboard_login", user=principal.name, remote=request.remote_addr)
        return redirect("/", code=303)

    @app.post("/logout")
    def logout() -> Any:
        _check_csrf()
        LOGGER.info("dashboard_logout", user=g.principal.name, remote=request.remote_addr)
        session.clear()
        return redirect("/login", code=303)


def _check_csrf() -> None:
    problem = csrf_problem(
        session.get("csrf"),
        request.form.get("csrf"),
        request.headers.get("Origin"),
        request.headers.get("Referer"),
        request.host,
    )
    if problem is not None:
        LOGGER.warning(
            "dashboard_request_refused",
            path=request.path,
            reason=problem,
            remote=request.remote_addr,
        )
        abort(Response(f"refused: {problem}\n", status=403, content_type=_PLAIN))


def _action(app: Flask, path: str) -> Callable[[Callable[[], str | actions.Done]], None]:
    """Register ``path`` as a CSRF-checked, logged POST action that reports back on the page."""

    def register(run: Callable[[], str | actions.Done]) -> None:
        @wraps(run)
        def view() -> Any:
            _check_csrf()
            user = g.principal.name
            fields = {k: v for k, v in request.form.items() if k not in _UNLOGGED_FIELDS}
            try:
                result = run()
            except actions.ActionError as error:
                LOGGER.warning("dashboard_action", action=path, user=user, ok=False,
                               reason=str(error), remote=request.remote_addr, **fields)  # fmt: skip
                flash(str(error), "error")
            else:
                done = result if isinstance(result, actions.Done) else actions.Done(result, result)
                LOGGER.info("dashboard_action", action=path, user=user, ok=True,
                            result=done.logged, remote=request.remote_addr, **fields)  # fmt: skip
                flash(done.shown, "ok")
            return redirect("/", code=303)

        app.add_url_rule(f"/actions/{path}", endpoint=f"action_{path}", view_func=view,
                         methods=["POST"])  # fmt: skip

    return register


def _job_id() -> int:
    text = request.form.get("job_id", "").strip()
    if not text.isdigit():
        raise actions.ActionError(f"job number {text!r} is not a number")
    return int(text)


def _register_actions(app: Flask, node: NodeView) -> None:
    @_action(app, "retry-job")
    def retry_job() -> str:
        return actions.retry_job(node, _job_id())

    @_action(app, "retry-deliveries")
    def retry_deliveries() -> str:
        return actions.retry_deliveries(node, request.form.get("destination", "").strip())

    @_action(app, "cancel-deliveries")
    def cancel_deliveries() -> str:
        destination = request.form.get("destination", "").strip()
        return actions.cancel_deliveries(node, destination, g.principal.name)

    @_action(app, "echo")
    def echo_destination() -> str:
        return actions.echo_destination(node, request.form.get("destination", "").strip())

    @_action(app, "baseline")
    def baseline() -> actions.Done:
        form = request.form
        return actions.mark_baseline(
            node,
            form.get("patient_id", ""),
            form.get("issuer", ""),
            form.get("study_uid", ""),
            clear=form.get("clear") == "1",
        )
