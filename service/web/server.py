"""The web application served by waitress in a daemon thread of the node.

The port is bound when the object is made (``OSError`` when it cannot be), so
that a port in use stops the node's start before anything runs or is logged;
:meth:`WebServer.start` serves it and logs the application's start warnings
(``dashboard_off``).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import structlog
from waitress.server import create_server

__all__ = ["WebServer"]

LOGGER = structlog.get_logger(__name__)

#: Requests served at once (an echo of a slow destination holds one for up to 10 s).
THREADS = 4


class WebServer:
    """A WSGI application on ``bind_address:port`` (port 0 picks a free one).

    Parameters
    ----------
    bind_address, port
        Where to listen.
    app
        The WSGI application (:func:`service.web.app.create_app`).
    """

    def __init__(self, bind_address: str, port: int, app: Any) -> None:
        self._server: Any = create_server(
            app,
            host=bind_address,
            port=port,
            threads=THREADS,
            ident="wbdwi",
            clear_untrusted_proxy_headers=True,
            channel_timeout=30,
        )
        self.bind_address = bind_address
        self._app = app
        self._thread = threading.Thread(target=self._server.run, name="http", daemon=True)

    @property
    def port(self) -> int:
        """The port listened on."""
        return int(self._server.effective_port)

    def start(self) -> None:
        """Serve in the background."""
        self._thread.start()
        LOGGER.info(
            "http_started",
            address=self.bind_address,
            port=self.port,
            endpoints=["/ (dashboard)", "/healthz", "/readyz", "/metrics"],
        )
        # What the application found wrong with its settings (``dashboard_off``), logged
        # only now: a node that cannot bind its ports stops with one line.
        config = getattr(self._app, "config", {})
        for event, fields in config.get("WBDWI_START_WARNINGS", ()):
            LOGGER.warning(event, **fields)

    def stop(self) -> None:
        """Stop serving: close the listening socket and open connections, end the threads."""
        self.close()
        if self._thread.ident is not None:  # the loop sees the empty map within a second
            self._thread.join(timeout=5)
        self._server.task_dispatcher.shutdown(timeout=5)

    def close(self) -> None:
        """Close the listening socket and every open connection (the serving loop then ends)."""
        for channel in list(self._server._map.values()):  # connections and the wake-up pipe
            if channel is not self._server:
                with contextlib.suppress(OSError):
                    channel.close()
        self._server.del_channel()  # the trigger is closed above
        self._server.socket.close()
