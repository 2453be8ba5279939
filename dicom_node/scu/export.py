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
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicom_node.errors import SendError
from dicom_node.scu.association import associate, reactor_paused
from dicom_node.scu.send import Destination, StoreOutcome, c_store, requested_contexts

__all__ = ["ResultFile", "read_result_identity", "store_results"]

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
    return time.perf_counter() - started


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
