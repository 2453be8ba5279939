"""A stand-in PACS for the demo and tests: a storage SCP that writes what it receives to a folder.

``make demo`` plays the hospital's PACS with it when Orthanc is not installed,
so that the node's results have somewhere to go. It is the receiving side of
the simulator, as :mod:`dicom_node.simulator.scanner` is the sending side:

- Verification and every storage SOP class pynetdicom knows, in the uncompressed
  transfer syntaxes (the node sends its results uncompressed);
- each C-STORE request written, as received (file meta information and the
  dataset in the negotiated transfer syntax, PS3.10), to
  ``<folder>/<SOP Instance UID>.dcm`` through a temporary file and a rename, so
  that a file in the folder is always whole;
- any AE title may call (no check of the calling or called AE title);
- a request whose SOP Instance UID is not a valid UID (it would become a file
  name) is refused with 0xC000 (Cannot understand), a write that fails with
  0xA700 (Out of resources, as PS3.4 B.2.3 has it): the sender then knows the
  instance was not stored.

It is not a PACS: no query, no retrieve, no storage commitment, no index.

Usage::

    with running_folder_pacs(tmp_path / "pacs") as pacs:
        send to Peer(pacs.host, pacs.port, pacs.ae_title)
        pacs.received()   # the files written so far
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE

from dicom_node.receive.scp import VERIFICATION

__all__ = [
    "CANNOT_UNDERSTAND",
    "DEFAULT_PACS_AET",
    "OUT_OF_RESOURCES",
    "SUCCESS",
    "FolderPacs",
    "running_folder_pacs",
    "store_received_instance",
]

LOGGER = logging.getLogger(__name__)

DEFAULT_PACS_AET = "DEMOPACS"
#: C-STORE statuses (PS3.4 B.2.3, PS3.7 C.4.2).
SUCCESS = 0x0000
CANNOT_UNDERSTAND = 0xC000
OUT_OF_RESOURCES = 0xA700
_TRANSFER_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


@dataclass(frozen=True, slots=True)
class FolderPacs:
    """A running stand-in PACS: where to send, and where the received files are.

    Parameters
    ----------
    ae_title
        Its AE title (it answers whatever called AE title it is given).
    host, port
        The address it listens on.
    folder
        Where each received instance is written as ``<SOP Instance UID>.dcm``.
    """

    ae_title: str
    host: str
    port: int
    folder: Path

    def received(self) -> list[Path]:
        """The files received so far, sorted by name (partly written ones excluded)."""
        return sorted(self.folder.glob("*.dcm"))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def store_received_instance(folder: Path, event: evt.Event) -> int:
    """C-STORE handler: write the received instance to ``folder``; the response status.

    Parameters
    ----------
    folder
        The PACS's folder (it exists).
    event
        pynetdicom's ``EVT_C_STORE`` event.

    Returns
    -------
    int
        0x0000 when the file was written; 0xC000 when the SOP Instance UID is
        not a valid UID; 0xA700 when the file could not be written.
    """
    request = event.request
    if not isinstance(request, C_STORE):
        raise TypeError(f"a C-STORE handler was given a {type(request).__name__} event")
    uid = UID(str(request.AffectedSOPInstanceUID or ""))
    if not uid.is_valid:
        LOGGER.warning("stand-in PACS: refused an instance with SOP Instance UID %r", str(uid))
        return CANNOT_UNDERSTAND
    path = folder / f"{uid}.dcm"
    partial = folder / f".{uid}.part"
    try:
        partial.write_bytes(event.encoded_dataset())
        os.replace(partial, path)
    except OSError as error:
        LOGGER.error("stand-in PACS: could not write %s: %s", path, error)
        partial.unlink(missing_ok=True)
        return OUT_OF_RESOURCES
    return SUCCESS


@contextmanager
def running_folder_pacs(
    folder: Path,
    *,
    ae_title: str = DEFAULT_PACS_AET,
    host: str = "127.0.0.1",
    port: int = 0,
) -> Iterator[FolderPacs]:
    """Run a storage SCP writing to ``folder`` (created when missing); stop it on exit.

    Parameters
    ----------
    folder
        Where received instances are written.
    ae_title
        Its AE title.
    host
        The address to listen on (loopback by default).
    port
        The TCP port; 0 lets the system choose a free one (read it from the
        yielded :class:`FolderPacs`).

    Raises
    ------
    OSError
        When the folder cannot be created or the port cannot be bound.
    """
    folder.mkdir(parents=True, exist_ok=True)
    ae = AE(ae_title=ae_title)
    ae.add_supported_context(VERIFICATION, _TRANSFER_SYNTAXES)
    for context in AllStoragePresentationContexts:
        if context.abstract_syntax is not None:
            ae.add_supported_context(context.abstract_syntax, _TRANSFER_SYNTAXES)

    def on_store(event: evt.Event) -> int:
        return store_received_instance(folder, event)

    server = ae.start_server((host, port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    if server is None:  # never with block=False
        raise RuntimeError("pynetdicom did not return the storage server it started")
    try:
        if server.socket is None:  # never once bound
            raise RuntimeError("the stand-in PACS's server has no socket")
        bound_port = int(server.socket.getsockname()[1])
        yield FolderPacs(ae_title=ae_title, host=host, port=bound_port, folder=folder)
    finally:
        server.shutdown()
