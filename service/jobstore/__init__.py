"""SQLite job store: received instances, MPPS, jobs, the outbox and the sender ledger.

One database file in WAL mode, one connection guarded by a lock
(:mod:`~service.jobstore.connection`). Instance rows are committed with
``synchronous=NORMAL``: a process crash loses nothing, and after a power cut
the node's start-up recovery (:meth:`service.node.Node.recover`) re-indexes
from the spool, which was fsynced first. Every state change of a job or a
delivery is committed with ``synchronous=FULL``.

Modules
-------
``schema``      tables, schema version, in-place upgrade (:class:`~service.errors.JobStoreError`)
``connection``  the connection, its lock and transactions
``records``     row types returned besides :mod:`service.jobs` records
``intake``      instances, MPPS, receiving studies, the spool side of retention
``queue``       the job queue
``events``      what the worker reports, keyed by the job spec
``delivery``    the outbox and the ledger

Schema version 2 added ``jobs.not_before`` and ``jobs.deferred_since`` (a job
waiting for priors from PACS); a version 1 store is upgraded in place at open.
"""

from __future__ import annotations

from service.jobstore.delivery import DeliveryRecords
from service.jobstore.events import JobEventRecords
from service.jobstore.intake import IntakeRecords
from service.jobstore.records import (
    InstanceRow,
    JobDelivery,
    QueueOutcome,
    ReceivingStudy,
    StudySpool,
)
from service.jobstore.schema import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "InstanceRow",
    "JobDelivery",
    "QueueOutcome",
    "ReceivingStudy",
    "SqliteJobStore",
    "StudySpool",
]


class SqliteJobStore(IntakeRecords, JobEventRecords, DeliveryRecords):
    """The embedded :mod:`service.queue_protocols` backend and the node's intake records.

    Parameters
    ----------
    path
        Database file (created with its folder when missing).

    Raises
    ------
    service.errors.JobStoreError
        The file is not an SQLite database, or a newer node wrote its schema.
    """
