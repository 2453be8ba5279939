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
from waitress import wasyncore
from waitress.server import create_server

__all__ = ["WebServer"]

LOGGER = structlog.get_logger(__name__)

#: Requests served at once (an echo of a slow destination holds one for up to 10 s).
THREADS = 4
#: How long the serving loop waits for a socket event before it looks whether to stop.
_LOOP_SECONDS = 0.2


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
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)

    def _serve(self) -> None:
        """Waitress's event loop until :meth:`stop`; then the sockets are closed here.

        Closing them from another thread while the loop polls them fails the
        loop with ``EBADF`` (seen under load), so the loop's own thread closes them.
        """
        try:
            while not self._stopping.is_set():
                wasyncore.loop(
                    timeout=_LOOP_SECONDS,
                    map=self._server._map,
                    use_poll=self._server.adj.asyncore_use_poll,
                    count=1,
                )
        finally:
            self.close()

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
        self._stopping.set()
        if self._thread.ident is not None:  # the loop closes the sockets within _LOOP_SECONDS
            self._thread.join(timeout=5)
        else:  # bound, never served
            self.close()
        self._server.task_dispatcher.shutdown(timeout=5)

    def close(self) -> None:
        """Close the listening socket and every open connection (the serving loop then ends)."""
        for channel in list(self._server._map.values()):  # connections and the wake-up pipe
            if channel is not self._server:
                with contextlib.suppress(OSError):
                    channel.close()
        self._server.del_channel()  # the trigger is closed above
        self._server.socket.close()
