"""The listening socket: one thread per association, optional TLS, graceful stop.

:class:`AssociationServer` accepts TCP connections, wraps them in TLS when
given an :class:`ssl.SSLContext` (DICOM TLS, PS3.15 B.1: the handshake runs in
the association's thread under the network timeout), and serves each in its
own thread with :func:`~dicom_node.receive.ul.association.serve_association`.
"""

from __future__ import annotations

import itertools
import socket
import ssl
import threading
import time

import structlog

from dicom_node.receive.ul.association import (
    Association,
    AssociationEnd,
    DimseServiceUser,
    serve_association,
)

__all__ = ["AssociationServer"]

LOGGER = structlog.get_logger(__name__)

_ACCEPT_POLL_SECONDS = 0.2


class AssociationServer:
    """Accept associations on ``(host, port)`` for a :class:`DimseServiceUser`.

    Parameters
    ----------
    address
        ``(host, port)``; port 0 picks a free port (see :attr:`port`).
    service_user
        Decides on associations and performs the DIMSE operations.
    max_pdu_length
        Largest P-DATA-TF variable field we announce and accept (0 = unlimited).
    network_timeout
        Seconds without a PDU (or a TLS handshake, or an A-ASSOCIATE-RQ) before
        the association is aborted.
    ssl_context
        Server-side TLS context; ``None`` for plain TCP.
    """

    def __init__(
        self,
        address: tuple[str, int],
        service_user: DimseServiceUser,
        *,
        max_pdu_length: int,
        network_timeout: float,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._address = address
        self._user = service_user
        self._max_pdu_length = max_pdu_length
        self._network_timeout = network_timeout
        self._ssl_context = ssl_context
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: dict[str, tuple[Association, threading.Thread]] = {}
        self._ids = itertools.count(1)

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`), else the configured one."""
        if self._listener is None:
            return self._address[1]
        port: int = self._listener.getsockname()[1]
        return port

    @property
    def is_serving(self) -> bool:
        """True while the accept loop runs."""
        return self._accept_thread is not None and self._accept_thread.is_alive()

    @property
    def open_associations(self) -> int:
        """Connections being served (negotiating or established)."""
        with self._lock:
            return len(self._open)

    def _requested_associations(self) -> int:
        """Associations asked for and not yet released (an idle connection does not count)."""
        with self._lock:
            return sum(
                1
                for association, _ in self._open.values()
                if association.request is not None and not association.released
            )

    def start(self) -> None:
        """Bind, listen and accept in a background thread (raises OSError when binding fails)."""
        listener = socket.create_server(self._address, backlog=64)
        listener.settimeout(_ACCEPT_POLL_SECONDS)
        self._listener = listener
        self._stopping.clear()
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="dicom-listener", daemon=True
        )
        self._accept_thread.start()

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stopping.is_set():
            try:
                sock, address = listener.accept()
            except TimeoutError:
                continue
            except OSError as error:
                if self._stopping.is_set():
                    return
                LOGGER.error("dicom_accept_failed", reason=str(error))
                time.sleep(_ACCEPT_POLL_SECONDS)
                continue
            association = Association(f"a{next(self._ids)}", f"{address[0]}:{address[1]}")
            thread = threading.Thread(
                target=self._serve,
                args=(sock, association),
                name=f"dicom-{association.association_id}",
                daemon=True,
            )
            with self._lock:
                self._open[association.association_id] = (association, thread)
            thread.start()

    def _serve(self, sock: socket.socket, association: Association) -> None:
        structlog.contextvars.bind_contextvars(assoc_id=association.association_id)
        how: AssociationEnd | None = None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self._network_timeout)
            if self._ssl_context is not None:
                try:
                    sock = self._ssl_context.wrap_socket(sock, server_side=True)
                except (ssl.SSLError, OSError) as error:
                    LOGGER.warning("tls_handshake_failed", peer=association.peer, reason=str(error))
                    return
            how = serve_association(
                sock,
                association,
                self._user,
                open_associations=self._requested_associations,
                max_pdu_length=self._max_pdu_length,
                network_timeout=self._network_timeout,
            )
        finally:
            sock.close()
            with self._lock:
                self._open.pop(association.association_id, None)
            if how is not None and association.request is not None:
                self._user.association_ended(association, how)
            structlog.contextvars.clear_contextvars()

    def stop(self, grace_seconds: float) -> None:
        """Stop accepting; open associations get ``grace_seconds`` to end, then are aborted."""
        if self._listener is None:
            return
        self._stopping.set()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5)
        self._listener.close()
        deadline = time.monotonic() + grace_seconds
        while self.open_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        with self._lock:
            remaining = list(self._open.values())
        for association, _ in remaining:
            LOGGER.warning("association_aborted_at_shutdown", assoc_id=association.association_id)
            association.abort()
        for _, thread in remaining:
            thread.join(timeout=5)
        self._listener = None
