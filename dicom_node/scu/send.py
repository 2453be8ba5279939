"""C-STORE SCU: send stored DICOM files to a remote application entity.

Used by ``wbdwi send`` (the scanner side of every demo and test). For each SOP
class among the files it proposes one presentation context with the
uncompressed transfer syntaxes (Explicit and Implicit VR Little Endian) and one
per other transfer syntax the files are stored in, so that a file is sent as
stored whenever the peer accepts its syntax. A compressed file whose syntax the
peer refuses is decompressed and sent uncompressed (PS3.4 B.4.1 lets the SCU
choose among the accepted contexts).

Every file gets an outcome (the C-STORE status, or why nothing was sent); a
failure never stops the files after it unless the association itself is lost.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import _config as pynetdicom_config
from pynetdicom.association import Association
from pynetdicom.status import code_to_category

from dicom_node.errors import SendError
from dicom_node.scu.association import (
    DEFAULT_CALLING_AET,
    Peer,
    associate,
    end_if_unanswered,
    reactor_paused,
)

__all__ = [
    "DEFAULT_CALLING_AET",
    "Destination",
    "SendReport",
    "StoreOutcome",
    "requested_contexts",
    "send_files",
]

LOGGER = logging.getLogger(__name__)

_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def send_files_as_stored() -> None:
    """Make pynetdicom send a file given by path as its stored bytes.

    By default pynetdicom reads the whole file into a dataset and encodes it
    again for every C-STORE; with ``STORE_SEND_CHUNKED_DATASET`` it sends the
    bytes after the file meta as they are, read in chunks (several ms less per
    file, and the peer gets exactly the bytes written). Then a path is sent only
    in a presentation context with the file's own transfer syntax: the senders
    here pass a path only when the peer accepted that context, and a dataset
    otherwise (converted by pynetdicom). A process-wide pynetdicom setting, set
    when this module is imported; nothing else in the node sends a path.
    """
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True


send_files_as_stored()

_MAX_CONTEXTS = 128  # PS3.8 9.3.2.2: presentation context IDs are odd numbers 1..255


#: The node's one peer type (:class:`dicom_node.scu.association.Peer`), under its old name.
Destination = Peer


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    """What happened to one file.

    ``status`` is the C-STORE response status, or ``None`` when no request was
    sent or no response came; ``detail`` says why in words.
    """

    path: str
    sop_instance_uid: str
    status: int | None
    detail: str = ""

    @property
    def stored(self) -> bool:
        """Success or warning (PS3.4 B.2.3: warnings mean the instance was stored)."""
        return self.status is not None and code_to_category(self.status) in ("Success", "Warning")

    @property
    def warning(self) -> bool:
        return self.status is not None and code_to_category(self.status) == "Warning"

    @classmethod
    def from_response(
        cls,
        path: str,
        sop_instance_uid: str,
        response: Dataset,
        *,
        no_response: str,
        detail: str = "",
    ) -> StoreOutcome:
        """What a C-STORE response says (an empty one, from pynetdicom: ``no_response``);
        ``detail`` is kept for a stored file, a failure status gets its own."""
        if "Status" not in response:
            return cls(path, sop_instance_uid, None, no_response)
        status = int(response.Status)
        if code_to_category(status) not in ("Success", "Warning"):
            comment = str(response.get("ErrorComment", "") or "").strip()
            detail = f"C-STORE status 0x{status:04X}" + (f": {comment}" if comment else "")
        return cls(path, sop_instance_uid, status, detail)


@dataclass(frozen=True, slots=True)
class SendReport:
    """Outcomes of one send, in file order."""

    destination: str
    outcomes: tuple[StoreOutcome, ...]
    elapsed_s: float

    @property
    def stored(self) -> int:
        return sum(1 for o in self.outcomes if o.stored)

    @property
    def failed(self) -> tuple[StoreOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.stored)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        """One line for people."""
        warnings = sum(1 for o in self.outcomes if o.warning)
        rate = self.stored / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (
            f"stored {self.stored}/{len(self.outcomes)} instance(s) at {self.destination} "
            f"({len(self.failed)} failed, {warnings} with warnings) in {self.elapsed_s:.2f} s "
            f"({rate:.0f} instances/s)"
        )


@dataclass(frozen=True, slots=True)
class _FileHeader:
    path: str
    sop_class_uid: UID
    sop_instance_uid: str
    transfer_syntax: UID


def _read_header(path: str) -> _FileHeader | StoreOutcome:
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID", "SOPInstanceUID"])
    except Exception as exc:
        # Any parse failure means this one file cannot be sent; it is reported, not hidden.
        return StoreOutcome(path, "", None, f"not a readable DICOM file: {exc}")
    meta = ds.get("file_meta") or Dataset()
    sop_class = UID(str(ds.get("SOPClassUID") or meta.get("MediaStorageSOPClassUID", "")))
    sop_instance = str(ds.get("SOPInstanceUID") or meta.get("MediaStorageSOPInstanceUID", ""))
    transfer_syntax = UID(str(meta.get("TransferSyntaxUID", "")))
    if not sop_class or not sop_instance or not transfer_syntax:
        return StoreOutcome(
            path, sop_instance, None, "no SOP Class, SOP Instance or Transfer Syntax UID"
        )
    return _FileHeader(path, sop_class, sop_instance, transfer_syntax)


def requested_contexts(
    headers: Iterable[tuple[UID, UID]],
) -> list[tuple[UID, list[UID]]]:
    """Presentation contexts to propose for ``(sop_class, transfer_syntax)`` pairs.

    One context per SOP class with the uncompressed syntaxes, plus one per other
    transfer syntax in which files of that class are stored.

    Raises
    ------
    SendError
        When more than 128 contexts would be needed (PS3.8 limit).
    """
    contexts: dict[tuple[UID, tuple[UID, ...]], None] = {}
    for sop_class, transfer_syntax in headers:
        contexts[(sop_class, _UNCOMPRESSED)] = None
        if transfer_syntax not in _UNCOMPRESSED:
            contexts[(sop_class, (transfer_syntax,))] = None
    if len(contexts) > _MAX_CONTEXTS:
        raise SendError(
            f"{len(contexts)} presentation contexts needed (SOP class x transfer syntax), "
            f"more than the {_MAX_CONTEXTS} one association allows; send in smaller batches"
        )
    return [(sop_class, list(syntaxes)) for sop_class, syntaxes in contexts]


def _send_one(assoc: Association, header: _FileHeader) -> StoreOutcome:
    accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    uncompressed_ok = any((header.sop_class_uid, ts) in accepted for ts in _UNCOMPRESSED)
    exact_ok = (header.sop_class_uid, header.transfer_syntax) in accepted
    detail = ""
    if exact_ok:
        payload: str | Dataset = header.path  # sent as stored (see send_files_as_stored)
    elif header.transfer_syntax in _UNCOMPRESSED and uncompressed_ok:
        try:
            # the other uncompressed syntax: pynetdicom converts a dataset, not a file
            payload = dcmread(header.path)
        except Exception as exc:
            # Any parse failure means this one file cannot be sent; it is reported, not hidden.
            return StoreOutcome(
                header.path, header.sop_instance_uid, None, f"not a readable DICOM file: {exc}"
            )
    elif uncompressed_ok:
        try:
            payload = dcmread(header.path)
            # Same instance in another transfer syntax: the SOP Instance UID must not change.
            payload.decompress(generate_instance_uid=False)
        except Exception as exc:
            # Decoder failures come in many types; this file is reported as not sent.
            return StoreOutcome(
                header.path,
                header.sop_instance_uid,
                None,
                f"peer refused {header.transfer_syntax.name} and decompressing failed: {exc}",
            )
        detail = f"decompressed from {header.transfer_syntax.name}"
    else:
        return StoreOutcome(
            header.path,
            header.sop_instance_uid,
            None,
            f"peer accepted no presentation context for {header.sop_class_uid.name} "
            f"in {header.transfer_syntax.name} or uncompressed",
        )
    with reactor_paused(assoc):
        return c_store(assoc, payload, header.path, header.sop_instance_uid, detail=detail)


def c_store(
    association: Association,
    payload: str | Dataset,
    path: str,
    sop_instance_uid: str,
    *,
    detail: str = "",
) -> StoreOutcome:
    """One C-STORE on ``association`` (its reactor paused by the caller) and its outcome;
    an unanswered request ends the association (:func:`end_if_unanswered`)."""
    response = association.send_c_store(payload)
    end_if_unanswered(association, response)
    return StoreOutcome.from_response(
        path,
        sop_instance_uid,
        response,
        no_response="no C-STORE response (association lost or DIMSE timeout)",
        detail=detail,
    )


def send_files(paths: Sequence[Path | str], destination: Destination) -> SendReport:
    """Send ``paths`` to ``destination`` over one association.

    Parameters
    ----------
    paths
        DICOM files (PS3.10).
    destination
        The remote SCP.

    Returns
    -------
    SendReport
        One outcome per path, in order.

    Raises
    ------
    AssociationFailedError
        When the association cannot be established (unreachable, rejected,
        aborted), with the destination in the message.
    SendError
        When the files need more presentation contexts than one association allows.
    """
    started = time.perf_counter()
    outcomes: dict[str, StoreOutcome] = {}
    headers: list[_FileHeader] = []
    for path in (str(p) for p in paths):
        header = _read_header(path)
        if isinstance(header, StoreOutcome):
            outcomes[path] = header
        else:
            headers.append(header)
    if headers:
        contexts = requested_contexts((h.sop_class_uid, h.transfer_syntax) for h in headers)
        with associate(destination, contexts, purpose="C-STORE") as assoc:
            for header in headers:
                if not assoc.is_established:
                    outcomes[header.path] = StoreOutcome(
                        header.path, header.sop_instance_uid, None, "association lost before send"
                    )
                    continue
                outcomes[header.path] = _send_one(assoc, header)
                if not outcomes[header.path].stored:
                    LOGGER.warning(
                        "C-STORE of %s failed: %s", header.path, outcomes[header.path].detail
                    )
    ordered = tuple(outcomes[str(p)] for p in paths)
    return SendReport(str(destination), ordered, time.perf_counter() - started)
