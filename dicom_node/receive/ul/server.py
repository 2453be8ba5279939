"""The listening socket: one thread per association, optional TLS, graceful stop.

:class:`AssociationServer` accepts TCP connections, wraps them in TLS when
given an :class:`ssl.SSLContext` (DICOM TLS, PS3.15 B.1: the handshake runs in
the association's thread under the network timeout), and serves each in its
own thread with :func:`~dicom_node.receive.ul.association.serve_association`.

Connections are counted when they are accepted, before anything is read from
them: past ``max_connections`` open connections in all, or
``max_connections_per_address`` from one source address, a new connection is
closed at once (and logged, at most once a second), so a peer that opens many
sockets costs neither threads nor memory and cannot starve the association
slots of other senders. Every connection is further bounded in time by
:class:`~dicom_node.receive.ul.association.AssociationLimits` (the whole
A-ASSOCIATE-RQ, each PDU); a TLS handshake must end within the A-ASSOCIATE-RQ
deadline too (a deadline of its own, before the A-ASSOCIATE-RQ's starts).
"""

from __future__ import annotations

import collections
import itertools
import select
import socket
import ssl
import threading
import time

import structlog

from dicom_node.receive.ul.association import (
    Association,
    AssociationEnd,
    AssociationLimits,
    DimseServiceUser,
    serve_association,
)

__all__ = ["AssociationServer"]

LOGGER = structlog.get_logger(__name__)

_ACCEPT_POLL_SECONDS = 0.2
_REFUSAL_LOG_INTERVAL = 1.0


def _handshake(context: ssl.SSLContext, sock: socket.socket, deadline: float) -> socket.socket:
    """The server side of a TLS handshake that must end by ``deadline`` (monotonic seconds).

    Non-blocking, so that a peer that trickles the handshake cannot extend it
    (a blocking socket's timeout restarts on every read). Raises
    :class:`TimeoutError` at the deadline, :class:`ssl.SSLError` when it fails.
    """
    tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    tls.setblocking(False)
    while True:
        try:
            tls.do_handshake()
        except ssl.SSLWantReadError:
            readable, writable = [tls], []
        except ssl.SSLWantWriteError:
            readable, writable = [], [tls]
        else:
            tls.setblocking(True)
            return tls
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not any(select.select(readable, writable, [], remaining)):
            tls.close()
            raise TimeoutError("the TLS handshake did not end within the A-ASSOCIATE-RQ deadline")


class AssociationServer:
    """Accept associations on ``(host, port)`` for a :class:`DimseServiceUser`.

    Parameters
    ----------
    address
        ``(host, port)``; port 0 picks a free port (see :attr:`port`).
    service_user
        Decides on associations and performs the DIMSE operations.
    limits
        Time and memory bounds of each association (PDU length, deadlines,
        data set size).
    max_connections
        Open connections in all; more are closed as they are accepted.
    max_connections_per_address
        Open connections from one source address.
    ssl_context
        Server-side TLS context; ``None`` for plain TCP.
    """

    def __init__(
        self,
        address: tuple[str, int],
        service_user: DimseServiceUser,
        *,
        limits: AssociationLimits,
        max_connections: int = 64,
        max_connections_per_address: int = 16,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._address = address
        self._user = service_user
        self._limits = limits
        self._max_connections = max_connections
        self._max_per_address = max_connections_per_address
        self._ssl_context = ssl_context
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._open: dict[str, tuple[Association, threading.Thread]] = {}
        self._per_address: collections.Counter[str] = collections.Counter()
        self._ids = itertools.count(1)
        self._refused = 0
        self._refusal_logged_at = 0.0

    @property
    def refused_connections(self) -> int:
        """Connections closed at accept time because a connection cap was reached."""
        return self._refused

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
            if not self._admit(sock, address[0]):
                continue
            association = Association(f"a{next(self._ids)}", f"{address[0]}:{address[1]}")
            thread = threading.Thread(
                target=self._serve,
                args=(sock, association, address[0]),
                name=f"dicom-{association.association_id}",
                daemon=True,
            )
            with self._lock:
                self._open[association.association_id] = (association, thread)
            thread.start()

    def _admit(self, sock: socket.socket, host: str) -> bool:
        """Count a new connection, or close it when a cap is reached (False)."""
        with self._lock:
            total = len(self._open)
            from_host = self._per_address[host]
            admitted = total < self._max_connections and from_host < self._max_per_address
            if admitted:
                self._per_address[host] += 1
            else:
                self._refused += 1
        if admitted:
            return True
        sock.close()
        now = time.monotonic()
        if now - self._refusal_logged_at >= _REFUSAL_LOG_INTERVAL:
            self._refusal_logged_at = now
            LOGGER.warning(
                "connection_refused",
                peer=host,
                reason=f"{total} connections open ({from_host} from {host}); caps "
                f"{self._max_connections} in all, {self._max_per_address} per address",
                refused_so_far=self._refused,
            )
        return False

    def _serve(self, sock: socket.socket, association: Association, host: str) -> None:
        structlog.contextvars.bind_contextvars(assoc_id=association.association_id)
        how: AssociationEnd | None = None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl_context is not None:
                try:
                    sock = _handshake(
                        self._ssl_context, sock, time.monotonic() + self._limits.associate_timeout
                    )
                except (ssl.SSLError, OSError) as error:
                    LOGGER.warning(
                        "tls_handshake_failed",
                        peer=association.peer,
                        reason=str(error) or type(error).__name__,
                    )
                    return
            how = serve_association(
                sock,
                association,
                self._user,
                open_associations=self._requested_associations,
                limits=self._limits,
            )
        finally:
            sock.close()
            with self._lock:
                self._open.pop(association.association_id, None)
                self._per_address[host] -= 1
                if self._per_address[host] <= 0:
                    del self._per_address[host]
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
