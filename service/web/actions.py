"""The dashboard's actions, each calling what the matching ``wbdwi`` command calls.

Every function returns the sentence shown to the user (a :class:`Done` when
the log must get another sentence: the Patient ID is shown to the logged-in
user, never logged) and raises :class:`ActionError` with the reason when the
action cannot be done.
"""

from __future__ import annotations

from dataclasses import dataclass

from dicom_node.errors import (
    AssociationFailedError,
    AssociationRejectedError,
    TlsConfigurationError,
)
from dicom_node.receive.scp import VERIFICATION
from dicom_node.scu.association import Peer, associate, reactor_paused
from service.errors import ActionError, HistoryError
from service.history import HISTORY_FILE, HistoryStore, PatientKey
from service.web.view import NodeView

__all__ = [
    "ECHO_TIMEOUT_SECONDS",
    "ActionError",
    "Done",
    "cancel_deliveries",
    "echo_destination",
    "mark_baseline",
    "retry_deliveries",
    "retry_job",
]

ECHO_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Done:
    """An action's result: the sentence shown on the page and the one logged."""

    shown: str
    logged: str


def retry_job(node: NodeView, job_id: int) -> str:
    """Requeue a failed job or its dead-lettered deliveries (``wbdwi retry JOB``)."""
    try:
        record = node.store.retry(job_id)
    except KeyError as error:
        raise ActionError(f"no job {job_id}") from error
    except ValueError as error:
        raise ActionError(str(error)) from error
    node.worker.wake()
    node.exporter.wake()
    return f"job {record.job_id} requeued: now {record.state.value}"


def echo_destination(node: NodeView, destination: str) -> str:
    """C-ECHO a configured destination, as ``wbdwi echo --destinations`` does for each.

    (:mod:`service.commands` is not imported here: it imports the node, which
    builds the web application.)
    """
    settings = node.settings
    peers = {str(peer): peer for peer in settings.export.destinations}
    peer = peers.get(destination)
    if peer is None:
        raise ActionError(f"{destination} is not a configured destination")
    try:
        tls = settings.tls.export_context()
    except TlsConfigurationError as error:
        raise ActionError(f"TLS settings: {error}") from error
    target = Peer(peer.host, peer.port, peer.ae_title, settings.node.ae_title, ECHO_TIMEOUT_SECONDS)
    try:
        with (
            associate(target, [(VERIFICATION, None)], purpose="C-ECHO", tls=tls) as association,
            reactor_paused(association),
        ):
            status = association.send_c_echo()
    except AssociationRejectedError as error:
        hint = error.hint or "check the AE titles"
        raise ActionError(
            f"echo {destination}: association rejected ({error.reason}); {hint}"
        ) from error
    except AssociationFailedError as error:
        raise ActionError(
            f"echo {destination}: no association (peer unreachable, refused or aborted)"
        ) from error
    if "Status" not in status or int(status.Status) != 0:
        code = f"0x{int(status.Status):04X}" if "Status" in status else "none"
        raise ActionError(f"echo {destination}: C-ECHO status {code}")
    return f"echo {destination}: ok"


def mark_baseline(
    node: NodeView, patient_id: str, issuer: str, study_uid: str, clear: bool
) -> Done:
    """Mark (or unmark) an exam as the patient's baseline (``wbdwi baseline``).

    The page names the patient; the sentence logged does not.
    """
    if not patient_id.strip() or not study_uid.strip():
        raise ActionError("give the Patient ID and the Study Instance UID")
    path = node.data_dir / HISTORY_FILE
    if not path.exists():
        raise ActionError(f"no exam history at {path} (has the node processed exams?)")
    try:
        store = HistoryStore(path)
        patient = PatientKey(patient_id.strip(), issuer.strip())
        if clear:
            store.clear_baseline(patient, study_uid.strip())
        else:
            store.set_baseline(patient, study_uid.strip())
    except HistoryError as error:
        raise ActionError(str(error)) from error
    action = "is no longer a baseline" if clear else "is marked as the baseline"
    return Done(
        shown=f"study {study_uid.strip()} of patient {patient_id.strip()} {action}",
        logged=f"study {study_uid.strip()} {action}",
    )


def retry_deliveries(node: NodeView, destination: str) -> str:
    """Make the waiting deliveries to ``destination`` (empty: all) due now.

    As ``wbdwi retry --deliveries [--destination DEST]``: back-off and the slow
    retry after a rejected association are skipped (the peer was fixed).
    """
    configured = {str(peer) for peer in node.settings.export.destinations}
    if destination and destination not in configured:
        raise ActionError(f"{destination} is not a configured destination (cancel its deliveries)")
    count = node.store.retry_deliveries_now(destination or None)
    node.exporter.wake()
    target = destination or "every destination"
    if not count:
        return f"no delivery to {target} is waiting"
    return f"{count} delivery(ies) to {target} due now"


def cancel_deliveries(node: NodeView, destination: str, who: str) -> str:
    """Give up the waiting deliveries to ``destination`` (``wbdwi deliveries cancel DEST``)."""
    if not destination:
        raise ActionError("name the destination whose deliveries to cancel")
    count = node.store.cancel_deliveries(destination, who)
    node.exporter.wake()
    if not count:
        return f"no delivery to {destination} is waiting"
    return f"{count} delivery(ies) to {destination} cancelled"
