"""The outbox loop: deliver result files to each destination, with backoff and a ledger.

Each due outbox row is first checked against the ledger: an instance the
destination already acknowledged (a job that ran twice, a restart after the
acknowledgement) is marked sent without sending it again. The rest of a
destination's round is split into ``associations_per_destination`` runs of
consecutive files, each sent over an association of its own at the same time
(the destination stores one file while the next comes; a destination that
refuses the extra associations gets those files over the one it took). Every
acknowledgement is written to the ledger before the next file of its
association is sent.

Retry policy (``[export]`` settings):

- a failed file or an unreachable destination: ``backoff_initial_seconds``
  doubling up to ``backoff_max_seconds``;
- an association *rejected* by the destination (AE titles): logged as a
  configuration problem and retried every ``rejected_retry_seconds``;
- after ``max_attempts`` a row is dead-lettered: visible in ``wbdwi status``
  and the metrics, requeued with ``wbdwi retry JOB``.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from dicom_node.errors import AssociationFailedError, AssociationRejectedError, SendError
from dicom_node.scu.export import (
    GroupsReport,
    ResultFile,
    read_result_identity,
    store_result_groups,
)
from dicom_node.scu.send import Destination, StoreOutcome
from service.jobs import OutboxRecord, OutboxState
from service.queue_protocols import Outbox
from service.settings import ExportSettings, parse_destination

__all__ = ["ExportCounters", "Exporter", "backoff_seconds", "split_round"]

LOGGER = structlog.get_logger(__name__)

#: Fewest files an association of a round carries: a smaller share costs more in
#: opening the association (a few ms) than it saves.
MIN_FILES_PER_ASSOCIATION = 16


def split_round(count: int, associations: int) -> list[range]:
    """``count`` files as consecutive runs for up to ``associations`` associations.

    As many runs as allowed with at least :data:`MIN_FILES_PER_ASSOCIATION`
    files each (always one); their lengths differ by one at most.
    """
    runs = max(1, min(associations, count // MIN_FILES_PER_ASSOCIATION))
    size, extra = divmod(count, runs)
    starts = [number * size + min(number, extra) for number in range(runs + 1)]
    return [range(starts[number], starts[number + 1]) for number in range(runs)]


def backoff_seconds(attempts: int, settings: ExportSettings) -> float:
    """Delay before the next try after ``attempts`` failures (1, 2, 4, ... up to the cap)."""
    exponent = max(attempts - 1, 0)
    if exponent > 60:
        return settings.backoff_max_seconds
    return float(min(settings.backoff_initial_seconds * 2**exponent, settings.backoff_max_seconds))


@dataclass(slots=True)
class ExportCounters:
    """Counters since start (read by the metrics endpoint)."""

    attempts: int = 0
    sent: int = 0
    failures: int = 0
    rejected_associations: int = 0
    failed_rounds: int = 0  # rounds to a destination that failed whole (unreachable, rejected)
    dead_lettered: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **increments: int) -> None:
        """Add to counters atomically."""
        with self._lock:
            for name, value in increments.items():
                setattr(self, name, getattr(self, name) + value)


class Exporter:
    """Delivers due outbox rows.

    Parameters
    ----------
    store
        The job store (outbox and ledger).
    settings
        Retry policy and timeouts.
    calling_ae
        Our AE title towards the destinations.
    clock
        Wall clock (injectable for tests).
    tls
        Client TLS context towards the destinations (``None``: plain TCP).
    """

    def __init__(
        self,
        store: Outbox,
        settings: ExportSettings,
        calling_ae: str,
        clock: Callable[[], float] = time.time,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.calling_ae = calling_ae
        self.tls = tls
        self.counters = ExportCounters()
        self._clock = clock
        self._wake = threading.Event()

    def wake(self, *_: object) -> None:
        """Look at the outbox now (called when a job finished processing)."""
        self._wake.set()

    def run(self, stop: threading.Event, idle_seconds: float = 1.0) -> None:
        """Deliver until ``stop`` is set; the file in flight is finished first."""
        while not stop.is_set():
            try:
                self.deliver_due(stop)
            except Exception:
                # A database hiccup must not end delivery; log and try again later.
                LOGGER.exception("export_round_failed")
            self._wake.wait(self._sleep_seconds(idle_seconds))
            self._wake.clear()

    def _sleep_seconds(self, idle_seconds: float) -> float:
        pending = self.store.outbox(state=OutboxState.PENDING, limit=1)
        if not pending:
            return idle_seconds
        next_due = min(row.next_try_at for row in self.store.outbox(state=OutboxState.PENDING))
        return max(0.05, min(idle_seconds, next_due - self._clock()))

    def deliver_due(self, stop: threading.Event | None = None) -> int:
        """One round: send every due row; returns how many were acknowledged."""
        due = self.store.outbox(state=OutboxState.PENDING, due_before=self._clock())
        by_destination: dict[str, list[OutboxRecord]] = defaultdict(list)
        for row in due:
            by_destination[row.destination].append(row)
        acknowledged = 0
        for destination, rows in by_destination.items():
            if stop is not None and stop.is_set():
                break
            acknowledged += self._deliver(destination, rows)
        return acknowledged

    def _fail(self, row: OutboxRecord, error: str, delay: float) -> None:
        self._fail_until(row, error, self._clock() + delay)

    def _fail_until(self, row: OutboxRecord, error: str, retry_at: float) -> None:
        self.counters.add(failures=1)
        state = self.store.mark_attempt_failed(
            row.outbox_id,
            error,
            retry_at,
            max_attempts=self.settings.max_attempts,
        )
        if state is OutboxState.DEAD:
            self.counters.add(dead_lettered=1)
            LOGGER.error(
                "export_dead_lettered",
                job_id=row.job_id,
                destination=row.destination,
                sop_instance_uid=row.sop_instance_uid,
                attempts=row.attempts + 1,
                last_error=error,
            )

    def _deliver(self, destination_text: str, rows: list[OutboxRecord]) -> int:
        """Send ``rows`` to one destination, over one association or several at once;
        how many were acknowledged."""
        peer = self._peer(destination_text)
        to_send, acknowledged = self._files_to_send(destination_text, rows)
        if not to_send:
            return acknowledged
        by_path = {result.path: row for row, result in to_send}
        runs = [
            [to_send[index][1] for index in run]
            for run in split_round(len(to_send), self.settings.associations_per_destination)
        ]
        # one forced disk write (~3 ms) per association, not per file: the last
        # acknowledgement of each run forces the earlier ones (a failure is recorded
        # durably anyway)
        last_paths = {run[-1].path for run in runs}
        stored: list[OutboxRecord] = []

        def record(outcome: StoreOutcome) -> None:  # from each association's thread
            row = by_path[outcome.path]
            if self._record(destination_text, row, outcome, durable=outcome.path in last_paths):
                stored.append(row)

        report = store_result_groups(runs, peer, record, tls=self.tls)
        if report.unsent:
            self._not_carried(destination_text, report, by_path)
        sent_now = len(stored)
        if report.associations:
            LOGGER.info(
                "export_round",
                destination=destination_text,
                sent=sent_now,
                failed=len(to_send) - sent_now,
                associations=report.associations,
                refused_associations=report.refused,
                seconds=round(report.seconds, 3),
            )
        return acknowledged + sent_now

    def _not_carried(
        self, destination_text: str, report: GroupsReport, by_path: dict[str, OutboxRecord]
    ) -> None:
        """Record the files no association carried, once for the round."""
        rows = [by_path[result.path] for group, _ in report.unsent for result in group]
        error = report.unsent[-1][1]
        if report.associations:
            # the destination took an association this round: an extra one it refused is
            # neither a configuration problem nor an outage; those files are retried
            self._refused(destination_text, rows, error)
        elif isinstance(error, AssociationRejectedError):
            self._rejected(destination_text, rows, error)
        else:
            self._unreachable(destination_text, rows, error)

    def _peer(self, destination_text: str) -> Destination:
        """The configured destination ``host:port:AE`` as the peer of this node's AE title."""
        destination = parse_destination(destination_text)
        return Destination(
            host=destination.host,
            port=destination.port,
            called_aet=destination.ae_title,
            calling_aet=self.calling_ae,
            timeout_s=self.settings.timeout_seconds,
        )

    def _files_to_send(
        self, destination_text: str, rows: list[OutboxRecord]
    ) -> tuple[list[tuple[OutboxRecord, ResultFile]], int]:
        """The rows still to send with their files, and how many the destination already has.

        Rows the destination acknowledged before are marked sent; a file that
        cannot be read counts as a failed attempt.
        """
        to_send: list[tuple[OutboxRecord, ResultFile]] = []
        acknowledged = 0
        already = self.store.acknowledged_among(
            destination_text, [row.sop_instance_uid for row in rows]
        )
        for row in rows:
            if row.sop_instance_uid in already:
                self.store.mark_sent(row.outbox_id)
                acknowledged += 1
                LOGGER.info(
                    "export_skipped_already_acknowledged",
                    job_id=row.job_id,
                    destination=destination_text,
                    sop_instance_uid=row.sop_instance_uid,
                )
                continue
            try:
                to_send.append((row, read_result_identity(row.path)))
            except SendError as error:
                self._fail(row, str(error), backoff_seconds(row.attempts + 1, self.settings))
        return to_send, acknowledged

    def _record(
        self, destination_text: str, row: OutboxRecord, outcome: StoreOutcome, *, durable: bool
    ) -> bool:
        """Record the outcome of one C-STORE; ``True`` when the destination stored the file.

        ``durable``: force the acknowledgement (and every earlier one) to disk
        (see :meth:`service.jobstore.delivery.DeliveryRecords.mark_sent`); a
        failure is always recorded durably.
        """
        self.counters.add(attempts=1)
        if outcome.stored:
            self.store.mark_sent(row.outbox_id, durable=durable)
            self.counters.add(sent=1)
            return True
        LOGGER.warning(
            "export_file_failed",
            job_id=row.job_id,
            destination=destination_text,
            sop_instance_uid=row.sop_instance_uid,
            detail=outcome.detail,
        )
        self._fail(row, outcome.detail, backoff_seconds(row.attempts + 1, self.settings))
        return False

    def _rejected(
        self, destination_text: str, rows: list[OutboxRecord], error: AssociationRejectedError
    ) -> None:
        """The destination refused the association: a configuration problem, retried slowly."""
        self.counters.add(attempts=len(rows), rejected_associations=1, failed_rounds=1)
        LOGGER.error(
            "export_configuration_problem",
            destination=destination_text,
            reason=str(error),
            retry_in_seconds=self.settings.rejected_retry_seconds,
            hint=error.hint or "check both AE titles (the destination's own and this node's)",
        )
        retry_at = self._clock() + self.settings.rejected_retry_seconds
        for row in rows:
            self._fail_until(row, str(error), retry_at)

    def _refused(
        self, destination_text: str, rows: list[OutboxRecord], error: AssociationFailedError
    ) -> None:
        """The destination took one association of the round but no more for these files."""
        self._retry_together(destination_text, rows, error, "export_association_refused")

    def _unreachable(
        self, destination_text: str, rows: list[OutboxRecord], error: AssociationFailedError
    ) -> None:
        """No association could be made: every row is retried after its back-off."""
        self.counters.add(failed_rounds=1)
        self._retry_together(destination_text, rows, error, "export_destination_unreachable")

    def _retry_together(
        self,
        destination_text: str,
        rows: list[OutboxRecord],
        error: AssociationFailedError,
        event: str,
    ) -> None:
        """``rows`` went over no association: one warning ``event``, and one next try for
        them all after the back-off of the least tried."""
        self.counters.add(attempts=len(rows))
        delay = backoff_seconds(min(row.attempts for row in rows) + 1, self.settings)
        LOGGER.warning(
            event,
            destination=destination_text,
            reason=str(error),
            retry_in_seconds=delay,
            files=len(rows),
        )
        # One next try for the whole destination (it is down, not a file): rows that
        # drifted apart would otherwise come due one by one, a round (and a log
        # line) each, more of them with every back-off.
        retry_at = self._clock() + delay
        for row in rows:
            self._fail_until(row, str(error), retry_at)
