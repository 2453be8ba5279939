"""The store's one connection, its lock and its transactions.

One connection guarded by a re-entrant lock (SQLite serialises writers anyway;
the lock keeps Python threads from tripping over one connection). A
transaction is ``durable`` (``synchronous=FULL``, every job and delivery state
change) or not (``synchronous=NORMAL``, instance rows, which the spool can
rebuild).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.jobstore.schema import open_database

__all__ = ["StoreConnection"]


class StoreConnection:
    """Base of the store's parts: the database file, its connection, lock and transactions.

    Parameters
    ----------
    path
        Database file (created with its folder when missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._synchronous = ""
        self._db = open_database(path)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        with self._lock:
            wanted = "FULL" if durable else "NORMAL"
            if wanted != self._synchronous:
                self._db.execute(f"PRAGMA synchronous={wanted}")
                self._synchronous = wanted
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def ping(self) -> None:
        """Raise ``sqlite3.Error`` when the database cannot be read."""
        with self._lock:
            self._db.execute("SELECT 1 FROM jobs LIMIT 1").fetchall()
