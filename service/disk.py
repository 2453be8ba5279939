"""Free space of the data folder: the node stops processing before the disk is full.

A job writes some 50-100 MB of results; a disk that fills up half-way through
makes every write fail (``ENOSPC``) and every claim of the job store with it.
:class:`DiskGuard` measures the free space of the data folder before each
claim. Below ``node.min_free_disk_mb`` no job is started, ``/readyz`` answers
503 with the reason, and one line is logged when the state changes
(``disk_space_low``, then ``disk_space_recovered``), not once per try.
Receiving goes on (the spool refuses an instance it cannot write with
``0xA700``, the scanner keeps it) and so do deliveries (they free nothing but
write little).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

__all__ = ["DiskGuard", "room_problem"]

LOGGER = structlog.get_logger(__name__)

_MB = 1024 * 1024


def room_problem(
    path: Path, min_free_mb: int, free_bytes: Callable[[Path], int] | None = None
) -> str | None:
    """Why ``path`` has no room for a job (fewer than ``min_free_mb`` MB free), or ``None``."""
    try:
        free = (free_bytes or _disk_free)(path)
    except OSError as error:
        return f"cannot measure free space of {path}: {error}"
    if free >= min_free_mb * _MB:
        return None
    return (
        f"disk almost full: {free // _MB} MB free in {path}, node.min_free_disk_mb is "
        f"{min_free_mb}; no job starts until space is freed (results of finished jobs, "
        "old spool files: see retention)"
    )


def _disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


class DiskGuard:
    """Whether the data folder has room for a job.

    Parameters
    ----------
    path
        The data folder.
    min_free_mb
        Free space it must keep (0: never hold jobs back).
    free_bytes
        How free space is measured (injectable for tests).
    """

    def __init__(
        self,
        path: Path,
        min_free_mb: int,
        free_bytes: Callable[[Path], int] | None = None,
    ) -> None:
        self.path = path
        self.min_free_mb = min_free_mb
        self._free_bytes = free_bytes or _disk_free
        self._lock = threading.Lock()
        self._problem: str | None = None

    def check(self) -> str | None:
        """Measure now; the reason no job may start, or ``None`` when there is room."""
        problem = room_problem(self.path, self.min_free_mb, self._free_bytes)
        with self._lock:
            before, self._problem = self._problem, problem
        if problem is not None and before is None:
            LOGGER.error("disk_space_low", reason=problem)
        elif problem is None and before is not None:
            LOGGER.info("disk_space_recovered", data_dir=str(self.path))
        return problem

    @property
    def problem(self) -> str | None:
        """The reason found by the last :meth:`check` (``None``: room, or not checked yet)."""
        with self._lock:
            return self._problem
