"""pynetdicom acceptor threads that wait on events instead of polling.

pynetdicom 3's acceptor runs two threads per association that poll: the
association loop sleeps 1 ms between checks of the DIMSE queue, and the DUL
loop sleeps 1 ms whenever it found nothing to do. With a synchronous sender
(one C-STORE at a time, as dcmtk ``storescu`` and most scanners) every
instance pays those sleeps several times, which caps one association at a few
hundred instances per second whatever the handler does.

Here the association loop blocks on the DIMSE message queue, and the DUL loop
blocks in ``select`` on the socket and on a wake-up pipe that is written when
the association queues a primitive to send. Both still wake at least every
``_IDLE_WAKE_S`` to check timers, release and abort, exactly as the polling
loops do. Protocol handling (state machine, PDUs, DIMSE) is pynetdicom's own.

The two ``run`` loops mirror ``Association._run_reactor`` and
``DULServiceProvider.run_reactor`` of pynetdicom 3.0 (pinned ``<4`` in
pyproject); only the waiting differs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import time
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer
from pynetdicom.utils import make_target

__all__ = ["EventDrivenAssociationServer"]

LOGGER = logging.getLogger(__name__)

_IDLE_WAKE_S = 0.05


class _WakingQueue(queue.Queue[Any]):
    """A queue that writes a byte to a pipe on every ``put`` to wake the DUL thread."""

    def __init__(self, wake_fd: int) -> None:
        super().__init__()
        self._wake_fd = wake_fd

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        # A full pipe already holds wake-up bytes; a closed one means the DUL has ended.
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_fd, b"\x01")


class _EventDrivenDUL(DULServiceProvider):
    """DUL reactor that sleeps in ``select`` on the socket and the wake-up pipe."""

    _wake_read: int
    _wake_write: int

    def install_wakeup(self) -> None:
        """Swap in the waking queue and point the thread at our loop (before ``start``)."""
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self.to_provider_queue = _WakingQueue(self._wake_write)
        self._target = make_target(self.run_reactor)

    def _wait_for_work(self) -> None:
        readers: list[Any] = [self._wake_read]
        raw_socket = getattr(self.socket, "socket", None)
        if raw_socket is not None:
            readers.append(raw_socket)
        try:
            ready, _, _ = select.select(readers, [], [], _IDLE_WAKE_S)
        except (OSError, ValueError):
            # The socket was closed under us: let the state machine notice it.
            time.sleep(self._run_loop_delay)
            return
        if self._wake_read in ready:
            os.read(self._wake_read, 65536)

    def run_reactor(self) -> None:
        try:
            self._run_event_driven()
        finally:
            os.close(self._wake_read)
            os.close(self._wake_write)

    def _run_event_driven(self) -> None:
        self._idle_timer.start()
        idle = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if idle:
                self._wait_for_work()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception:
                # Same recovery as pynetdicom's reactor: log, abort, stop both loops.
                LOGGER.exception("DUL reactor failed; aborting the association")
                self._abort_after_error()
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            self.state_machine.do_action(event)
            idle = False

    def _abort_after_error(self) -> None:
        from pynetdicom.pdu import A_ABORT_RQ

        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        if self.socket is not None:
            self.socket.send(abort_pdu.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


class _EventDrivenAssociation(Association):
    """Acceptor loop that blocks on the DIMSE message queue instead of sleeping 1 ms."""

    def _run_reactor(self) -> None:
        self._is_paused = False
        while not self._kill:
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            try:
                context_id, message = self.dimse.msg_queue.get(timeout=_IDLE_WAKE_S)
            except queue.Empty:
                context_id, message = None, None
            if message is not None and context_id is not None:
                self._serve_request(message, context_id)
            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return
            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return
            if not self.dul.is_alive():
                self.kill()
                return
            if self.dul.idle_timer_expired():
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()
                self.kill()
                return


class _EventDrivenRequestHandler(RequestHandler):
    def _create_association(self) -> Association:
        association = super()._create_association()
        association.__class__ = _EventDrivenAssociation
        dul = association.dul
        dul.__class__ = _EventDrivenDUL
        assert isinstance(dul, _EventDrivenDUL)
        dul.install_wakeup()
        return association


class EventDrivenAssociationServer(ThreadedAssociationServer):
    """Threaded association server whose acceptors wait on events (pass as ``server_class``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["request_handler"] = _EventDrivenRequestHandler
        super().__init__(*args, **kwargs)
