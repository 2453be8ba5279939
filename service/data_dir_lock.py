"""One node per data folder: an exclusive ``flock`` on ``<data_dir>/wbdwi.lock``.

A second ``wbdwi serve`` on the same folder would otherwise run the start-up
recovery on a live job store (putting the running node's job back to
``ready``, deleting its half-written spool files) before failing on the port.
The lock is taken, non-blocking, before the job store is opened; the kernel
drops it when the process ends, however it ends, so a ``kill -9`` never leaves
a stale lock. The holder's PID is written into the file for the message.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from service.errors import DataDirLockedError

__all__ = ["LOCK_FILE", "DataDirLock", "running_node_pid"]

LOCK_FILE = "wbdwi.lock"


class DataDirLock:
    """The held lock of one data folder; :meth:`release` (or process exit) frees it."""

    def __init__(self, data_dir: Path, descriptor: int) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._descriptor: int | None = descriptor

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Take the lock of ``data_dir`` (created when missing) without waiting.

        Raises
        ------
        DataDirLockedError
            Another process holds it (the message names the folder and its PID).
        OSError
            The folder or the lock file cannot be created or opened.
        """
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / LOCK_FILE
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_holder(descriptor)
            os.close(descriptor)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise DataDirLockedError(
                f"data folder {data_dir} is in use by another wbdwi node (PID {holder}, "
                f"lock {path}); stop it first, or give this node its own --data-dir"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
        return cls(data_dir, descriptor)

    @property
    def held(self) -> bool:
        """True until :meth:`release`."""
        return self._descriptor is not None

    def release(self) -> None:
        """Free the lock (idempotent)."""
        if self._descriptor is None:
            return
        descriptor, self._descriptor = self._descriptor, None
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)


def _read_holder(descriptor: int) -> str:
    text = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip()
    return text if text.isdigit() else "unknown"


def running_node_pid(data_dir: Path) -> int | None:
    """The PID of the node holding ``data_dir``'s lock, or ``None`` when no node runs there.

    Probes with a shared, non-blocking ``flock`` released at once: it fails only
    while a node holds the exclusive lock. A node starting in that same instant
    would see the folder in use and exit with that message; nothing is harmed.
    """
    path = data_dir / LOCK_FILE
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            holder = _read_holder(descriptor)
            return int(holder) if holder.isdigit() else 0
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return None
    finally:
        os.close(descriptor)
