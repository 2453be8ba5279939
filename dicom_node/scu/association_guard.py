"""Make pynetdicom 3's requestor pause its reactor for real before each exchange.

Before a DIMSE exchange, pynetdicom's ``Association.send_*`` methods clear the
reactor checkpoint and spin until ``_is_paused`` is true, so that the reactor
thread does not take the peer's response off the DIMSE queue. The reactor sets
``_is_paused = True`` just *before* it waits on the checkpoint; a requester that
looks at that moment proceeds while the reactor is already past the wait, and
the reactor then consumes the response ("Received unexpected C-STORE service
message") while the requester waits for the DIMSE timeout. We saw this about once
in 5,000 exchanges on loopback (pynetdicom issues #875 and #435 show the symptom).

:func:`reactor_paused` swaps in a checkpoint that counts its clears
(generations) and records the generation in which the reactor is blocked on it.
It clears the checkpoint and returns only once the reactor is blocked in *that*
generation (or its thread has ended): a flag left over from the previous
exchange, set while the reactor was still waking up, cannot be mistaken for a
pause. A woken reactor that finds the checkpoint cleared again goes back to
waiting, so it can only run while the checkpoint stays set. pynetdicom sets the
checkpoint when its exchange is over, and so does the context manager on exit.
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


class _TrackingCheckpoint:
    """The ``threading.Event`` interface pynetdicom uses, with clear generations."""

    def __init__(self, *, is_set: bool) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._flag = is_set
        self._generation = 0
        self._blocked_generation = -1

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._cond:
            self._flag = True
            self._cond.notify_all()

    def clear(self) -> None:
        self.pause()

    def pause(self) -> int:
        """Clear the flag and return the new generation."""
        with self._cond:
            self._flag = False
            self._generation += 1
            # A waiter already blocked wakes, finds the flag cleared and records
            # this generation before it waits again.
            self._cond.notify_all()
            return self._generation

    def blocked_in(self, generation: int) -> bool:
        """True when a waiter is blocked and has seen the flag cleared in ``generation``."""
        with self._cond:
            return not self._flag and self._blocked_generation >= generation

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._flag:
                self._blocked_generation = self._generation
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True


def _tracking_checkpoint(association: Any) -> _TrackingCheckpoint:
    checkpoint = association._reactor_checkpoint
    if isinstance(checkpoint, _TrackingCheckpoint):
        return checkpoint
    replacement = _TrackingCheckpoint(is_set=checkpoint.is_set())
    # The reactor looks the attribute up on every loop, and the old event is set
    # so that a reactor waiting on it now wakes and comes round to this one.
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
    generation = checkpoint.pause()
    deadline = time.monotonic() + timeout_s
    try:
        while not checkpoint.blocked_in(generation) and association.is_alive():
            if time.monotonic() > deadline:
                raise ReactorPauseTimeoutError(
                    f"the association reactor did not pause within {timeout_s:g} s"
                )
            time.sleep(_POLL_S)
        yield
    finally:
        checkpoint.set()
