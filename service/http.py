"""``/healthz``, ``/readyz`` and ``/metrics`` over the standard library's HTTP server.

- ``/healthz``: 200 while the process runs (liveness).
- ``/readyz``: 200 when the DICOM listener is up, the job store answers and the
  worker and exporter threads are alive; otherwise 503 listing what is not.
- ``/metrics``: Prometheus text exposition format 0.0.4.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import structlog

__all__ = ["HealthServer", "Metric", "render_metrics"]

LOGGER = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric family with its samples ``(labels, value)``."""

    name: str
    kind: str  # counter | gauge
    help: str
    samples: tuple[tuple[dict[str, str], float], ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render_metrics(metrics: Iterable[Metric]) -> str:
    """Prometheus text format of ``metrics``."""
    lines: list[str] = []
    for metric in metrics:
        lines.append(f"# HELP {metric.name} {metric.help}")
        lines.append(f"# TYPE {metric.name} {metric.kind}")
        for labels, value in metric.samples:
            label_text = ",".join(f'{key}="{_escape(val)}"' for key, val in sorted(labels.items()))
            suffix = f"{{{label_text}}}" if label_text else ""
            number = repr(float(value)) if not float(value).is_integer() else str(int(value))
            lines.append(f"{metric.name}{suffix} {number}")
    return "\n".join(lines) + "\n"


class HealthServer:
    """A small HTTP server in a daemon thread.

    The port is bound when the object is made (``OSError`` when it cannot
    be); :meth:`start` serves it.

    Parameters
    ----------
    bind_address, port
        Where to listen (port 0 picks a free one).
    readiness
        Returns the list of problems (empty when ready).
    metrics
        Returns the current metric families.
    """

    def __init__(
        self,
        bind_address: str,
        port: int,
        readiness: Callable[[], list[str]],
        metrics: Callable[[], list[Metric]],
    ) -> None:
        self._readiness = readiness
        self._metrics = metrics
        handler = self._make_handler()
        self._server = ThreadingHTTPServer((bind_address, port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        """The port listened on."""
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()
        LOGGER.info("http_started", port=self.port, endpoints=["/healthz", "/readyz", "/metrics"])

    def stop(self) -> None:
        """Stop serving and close the socket (only close it when serving never started)."""
        if self._thread.ident is None:
            self.close()
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def close(self) -> None:
        """Close the socket of a server that was bound and never started."""
        self._server.server_close()

    def _make_handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class _Handler(BaseHTTPRequestHandler):
            server_version = "wbdwi"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    self._reply(200, "ok\n", "text/plain; charset=utf-8")
                elif path == "/readyz":
                    problems = outer._readiness()
                    if problems:
                        self._reply(503, "not ready: " + "; ".join(problems) + "\n", "text/plain")
                    else:
                        self._reply(200, "ready\n", "text/plain; charset=utf-8")
                elif path == "/metrics":
                    body = render_metrics(outer._metrics())
                    self._reply(200, body, "text/plain; version=0.0.4; charset=utf-8")
                else:
                    self._reply(404, "not found: try /healthz, /readyz or /metrics\n", "text/plain")

            def _reply(self, status: int, body: str, content_type: str) -> None:
                data = body.encode("utf-8")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                LOGGER.debug("http_request", request=format % args)

        return _Handler
