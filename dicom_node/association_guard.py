"""Make pynetdicom 3's requestor pause its reactor for real before each exchange.

Before a DIMSE exchange, pynetdicom's ``Association.send_*`` methods clear the
reactor checkpoint and spin until ``_is_paused`` is true, so that the reactor
thread does not take the peer's response off the DIMSE queue. The reactor sets
``_is_paused = True`` just *before* it waits on the checkpoint; a requester that
looks at that moment proceeds while the reactor is already past the wait, and
the reactor then consumes the response ("Received unexpected C-STORE service
message") while the requester waits for the DIMSE timeout. We saw this about once
in 400 C-STOREs on loopback (pynetdicom issues #875 and #435 show the symptom).

:func:`reactor_paused` swaps in a checkpoint event that knows when the reactor is
really blocked on it, clears it, and returns only once the reactor is blocked (or
its thread has ended). The exchange that follows cannot race; pynetdicom itself
sets the checkpoint again when the exchange is over, and so does the context
manager on exit.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dicom_node.errors import ReactorPauseTimeoutError

__all__ = ["reactor_paused"]

_POLL_S = 0.0002


class _TrackingCheckpoint(threading.Event):
    """A :class:`threading.Event` that records when a waiter is blocked on it."""

    def __init__(self) -> None:
        super().__init__()
        self.waiter_blocked = threading.Event()

    def wait(self, timeout: float | None = None) -> bool:
        if self.is_set():
            return True
        self.waiter_blocked.set()
        try:
            return super().wait(timeout)
        finally:
            self.waiter_blocked.clear()


def _tracking_checkpoint(association: Any) -> _TrackingCheckpoint:
    checkpoint = association._reactor_checkpoint
    if isinstance(checkpoint, _TrackingCheckpoint):
        return checkpoint
    replacement = _TrackingCheckpoint()
    if checkpoint.is_set():
        replacement.set()
    # The reactor looks the attribute up on every loop, and the old event stays
    # set so that a reactor waiting on it now wakes and comes round to this one.
    association._reactor_checkpoint = replacement
    checkpoint.set()
    return replacement


@contextmanager
def reactor_paused(association: Any, timeout_s: float = 10.0) -> Iterator[None]:
    """Hold ``association``'s reactor blocked while the body exchanges messages.

    Parameters
    ----------
    association
        An established :class:`pynetdicom.association.Association` (requestor).
    timeout_s
        How long to wait for the reactor to block.

    Raises
    ------
    ReactorPauseTimeoutError
        When the reactor thread is alive but did not block within ``timeout_s``.
    """
    checkpoint = _tracking_checkpoint(association)
    checkpoint.clear()
    deadline = time.monotonic() + timeout_s
    try:
        while not checkpoint.waiter_blocked.is_set() and association.is_alive():
            if time.monotonic() > deadline:
                raise ReactorPauseTimeoutError(
                    f"the association reactor did not pause within {timeout_s:g} s"
                )
            time.sleep(_POLL_S)
        yield
    finally:
        checkpoint.set()
