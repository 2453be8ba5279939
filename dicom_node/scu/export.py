"""C-STORE SCU for result files, telling apart the ways a delivery can fail.

The exporter needs to know *why* a delivery failed, because each calls for a
different retry:

- :class:`~dicom_node.errors.AssociationRejectedError`: the peer answered
  A-ASSOCIATE-RJ (our AE title unknown to it, wrong called AE, no common
  context). A configuration problem; retried slowly.
- :class:`~dicom_node.errors.AssociationFailedError`: no association (peer
  down, connection refused, aborted during negotiation). Retried with backoff.
- per file: a failure status from the peer, or the association lost mid-way
  (``status is None``). Retried with backoff, file by file.

Each file's outcome is handed to ``on_outcome`` before the next file is sent
(the last one's before the association is released), so the caller can record
an acknowledgement before anything else goes out.

:func:`store_result_groups` sends several groups of files at once, each over
an association of its own (the peer's time per file, writing or indexing it,
then overlaps ours); a group whose association the peer refuses (a PACS that
limits concurrent associations per AE title) is sent by one that was made.
"""

from __future__ import annotations

import contextvars
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_node.errors import AssociationFailedError, SendError
from dicom_node.scu.association import associate, reactor_paused
from dicom_node.scu.send import Destination, StoreOutcome, c_store, requested_contexts

__all__ = [
    "GroupsReport",
    "ResultFile",
    "read_result_identity",
    "store_result_groups",
    "store_results",
]

#: Pauses between the tries of the association that sends the groups no other one took.
_FALLBACK_PAUSES_S = (0.2, 0.5)

# pynetdicom converts between the two little-endian uncompressed syntaxes when sending.
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


@dataclass(frozen=True, slots=True)
class ResultFile:
    """A result file with the identity read from its file meta."""

    path: str
    sop_class_uid: UID
    sop_instance_uid: str
    transfer_syntax: UID


def read_result_identity(path: Path | str) -> ResultFile:
    """SOP class, SOP instance and transfer syntax of a DICOM file (file meta only).

    Raises :class:`~dicom_node.errors.SendError` when the file has no usable meta.
    """
    try:
        meta = read_file_meta_info(path)
        return ResultFile(
            path=str(path),
            sop_class_uid=UID(str(meta.MediaStorageSOPClassUID)),
            sop_instance_uid=str(meta.MediaStorageSOPInstanceUID),
            transfer_syntax=UID(str(meta.TransferSyntaxUID)),
        )
    except (OSError, ValueError, AttributeError) as error:
        raise SendError(f"result file {path} has no readable file meta: {error}") from None


def store_results(
    files: Sequence[ResultFile],
    destination: Destination,
    on_outcome: Callable[[StoreOutcome], None],
    *,
    tls: ssl.SSLContext | None = None,
) -> float:
    """Send ``files`` to ``destination`` over one association; returns elapsed seconds.

    With ``tls`` (a client context) the association runs over DICOM TLS, the
    peer's certificate checked against ``destination.host``.

    Raises
    ------
    AssociationRejectedError
        The peer rejected the association (the message quotes its reason).
    AssociationFailedError
        The peer could not be reached or aborted the negotiation.
    """
    started = time.perf_counter()
    if not files:
        return 0.0
    contexts = requested_contexts(
        (result.sop_class_uid, result.transfer_syntax) for result in files
    )
    with associate(destination, contexts, purpose="C-STORE", tls=tls) as association:
        _store_all(association, files, destination, on_outcome)
    return time.perf_counter() - started


@dataclass(frozen=True, slots=True)
class GroupsReport:
    """What :func:`store_result_groups` did.

    ``associations``: how many associations were made (0: the peer took none);
    ``refused``: how many more the peer refused (their groups went over others,
    or are in ``unsent``); ``unsent``: the groups no association carried, each
    with the error of the last association refused for it (every group when
    ``associations`` is 0).
    """

    seconds: float
    associations: int
    unsent: tuple[tuple[tuple[ResultFile, ...], AssociationFailedError], ...]
    refused: int = 0


class _GroupSender:
    """The groups of one call of :func:`store_result_groups` and the threads sending them."""

    def __init__(
        self,
        destination: Destination,
        contexts: Sequence[tuple[UID, list[UID]]],
        on_outcome: Callable[[StoreOutcome], None],
        tls: ssl.SSLContext | None,
    ) -> None:
        self._destination = destination
        self._contexts = contexts
        self._on_outcome = on_outcome
        self._tls = tls
        self._lock = threading.Lock()
        # groups whose association was refused, waiting for an association that was made
        self._orphans: deque[tuple[tuple[ResultFile, ...], AssociationFailedError]] = deque()
        self.associations = 0
        self.refused = 0
        self.failures: list[BaseException] = []

    def send(self, group: tuple[ResultFile, ...]) -> None:
        """In a thread of its own: send ``group`` over an association of its own, then any
        orphaned group; a refused association orphans ``group``, and an unexpected error
        is kept for the calling thread to raise."""
        try:
            with self.associate() as association:
                self.send_on(association, group)
        except AssociationFailedError as error:
            with self._lock:
                self._orphans.append((group, error))
                self.refused += 1
        except BaseException as error:
            self.failures.append(error)

    def send_on(self, association: Any, group: tuple[ResultFile, ...]) -> None:
        """Send ``group`` on ``association``, then the groups orphaned meanwhile."""
        _store_all(association, group, self._destination, self._on_outcome)
        while (orphan := self._take()) is not None:
            _store_all(association, orphan, self._destination, self._on_outcome)

    def send_left(self) -> list[tuple[tuple[ResultFile, ...], AssociationFailedError]]:
        """After the threads: the groups no association took go over one more; what is left."""
        with self._lock:
            left = list(self._orphans)
            self._orphans.clear()
        if not left or not self.associations:
            return left
        # the peer took an association but refused one more while it was busy: the groups
        # left go over one association now that the others are released (a peer may count
        # a released association a moment longer: a few tries, a short pause between)
        for pause in (*_FALLBACK_PAUSES_S, None):
            try:
                with self.associate() as association:
                    for group, _ in left:
                        _store_all(association, group, self._destination, self._on_outcome)
                return []
            except AssociationFailedError as error:
                with self._lock:
                    self.refused += 1
                if pause is None:
                    return [(group, error) for group, _ in left]
                time.sleep(pause)
        return left

    @contextmanager
    def associate(self) -> Iterator[Any]:
        """An association with the destination, counted in :attr:`associations`."""
        with associate(
            self._destination, self._contexts, purpose="C-STORE", tls=self._tls
        ) as association:
            with self._lock:
                self.associations += 1
            yield association

    def _take(self) -> tuple[ResultFile, ...] | None:
        with self._lock:
            return self._orphans.popleft()[0] if self._orphans else None


def store_result_groups(
    groups: Sequence[Sequence[ResultFile]],
    destination: Destination,
    on_outcome: Callable[[StoreOutcome], None],
    *,
    tls: ssl.SSLContext | None = None,
) -> GroupsReport:
    """Send each of ``groups`` over an association of its own, all at the same time.

    The first group is sent from the calling thread, each other one from a
    thread of its own once the first association is made (when the peer refuses
    the first, nothing is sent and every group is in :attr:`GroupsReport.unsent`
    with that error). Within a group, files go out in order and each outcome is
    handed to ``on_outcome`` before the group's next file is sent, as in
    :func:`store_results`; ``on_outcome`` is called from several threads (the
    outcomes of different groups interleave). A group whose association could
    not be made (refused, rejected: a peer that limits concurrent associations)
    is sent after its own by an association that was made, or, when none was
    free any more, by one more association once the others are released; what
    no association carried is in :attr:`GroupsReport.unsent`. With one group
    this is :func:`store_results` without its exceptions.

    Raises
    ------
    SendError
        The files need more presentation contexts than an association allows.
    """
    started = time.perf_counter()
    parts = [tuple(group) for group in groups if group]
    if not parts:
        return GroupsReport(0.0, 0, ())
    # every association proposes the contexts of all files: any of them may take a group
    contexts = requested_contexts(
        (result.sop_class_uid, result.transfer_syntax) for group in parts for result in group
    )
    sender = _GroupSender(destination, contexts, on_outcome, tls)
    threads: list[threading.Thread] = []
    try:
        # The other associations are asked for once the first is made: a round the peer
        # refuses fails as a whole, as with one association, and a peer that takes one
        # association at a time sees the first alone (not several at once, all refused).
        with sender.associate() as association:
            threads = [
                threading.Thread(
                    target=contextvars.copy_context().run,
                    args=(sender.send, group),
                    name=f"c-store-{number}",
                    daemon=True,
                )
                for number, group in enumerate(parts[1:], start=2)
            ]
            for thread in threads:
                thread.start()
            sender.send_on(association, parts[0])
    except AssociationFailedError as error:
        if threads:
            raise  # not the first association's: none other raises out of it
        return GroupsReport(time.perf_counter() - started, 0, tuple((g, error) for g in parts))
    finally:
        for thread in threads:
            thread.join()
    if sender.failures:
        raise sender.failures[0]
    left = sender.send_left()
    return GroupsReport(
        time.perf_counter() - started, sender.associations, tuple(left), sender.refused
    )


def _store_all(
    association: Any,
    files: Sequence[ResultFile],
    destination: Destination,
    on_outcome: Callable[[StoreOutcome], None],
) -> None:
    """Send ``files`` on ``association``, each outcome handed over before the next file."""
    accepted = {
        (context.abstract_syntax, context.transfer_syntax[0])
        for context in association.accepted_contexts
    }
    # The outcome of a file is handed over inside the pause for the next one (still
    # before that file is sent): pausing right after pynetdicom lets the reactor go
    # catches it still blocked, while pausing after the caller's bookkeeping finds it
    # in its 1 ms sleep (474 files: ~0.5 s of waiting).
    pending: StoreOutcome | None = None
    for result in files:
        with reactor_paused(association):
            if pending is not None:
                on_outcome(pending)
            pending = _store_one(association, accepted, result, destination)
    if pending is not None:
        on_outcome(pending)


def _store_one(
    association: Any,
    accepted: AbstractSet[tuple[str | None, str]],
    result: ResultFile,
    destination: Destination,
) -> StoreOutcome:
    """Send one file on ``association`` (its reactor paused); what became of it."""
    if not association.is_established:
        return StoreOutcome(result.path, result.sop_instance_uid, None, "association lost")
    exact_ok = (result.sop_class_uid, result.transfer_syntax) in accepted
    uncompressed_ok = result.transfer_syntax in _UNCOMPRESSED and any(
        (result.sop_class_uid, syntax) in accepted for syntax in _UNCOMPRESSED
    )
    if not exact_ok and not uncompressed_ok:
        return StoreOutcome(
            result.path,
            result.sop_instance_uid,
            None,
            f"{destination} accepted no context for {result.sop_class_uid.name} "
            f"in {result.transfer_syntax.name}",
        )
    # As stored when the peer accepted the file's own syntax (the bytes of the file,
    # send_files_as_stored); else as a dataset that pynetdicom converts to the other
    # uncompressed syntax.
    payload: str | Dataset = result.path
    if not exact_ok:
        try:
            payload = dcmread(result.path)
        except (OSError, ValueError, InvalidDicomError) as error:
            return StoreOutcome(
                result.path,
                result.sop_instance_uid,
                None,
                f"result file could not be read: {error}",
            )
    return c_store(association, payload, result.path, result.sop_instance_uid)
