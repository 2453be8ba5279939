"""The node's DICOM listener: C-ECHO, C-STORE into the durable spool, MPPS N-CREATE/N-SET.

Accepted (PS3.4 annex B, F):

- Verification; MR Image Storage and Enhanced MR Image Storage; every other
  storage class too when ``accept_other_storage`` (answered with success and
  not kept), otherwise their presentation contexts are rejected;
- Modality Performed Procedure Step (N-CREATE ``IN PROGRESS``, N-SET
  ``COMPLETED``/``DISCONTINUED``), which tells the node an exam is complete;
- transfer syntaxes implicit and explicit VR little endian, deflated, JPEG
  lossless, JPEG-LS, JPEG 2000 and RLE. Data are stored exactly as received and
  decoded when the exam is processed.

Association requests are checked against the calling-AE allow-list (empty:
any), the called AE title, and the maximum number of associations; a rejection
is logged with its reason. The C-STORE handler never raises: a failure answers
0xA700 (out of resources) or 0xC211 (cannot understand) and is logged, and the
association goes on.
"""

from __future__ import annotations

import itertools
import socketserver
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import structlog
from pydicom.dataset import Dataset
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    MRImageStorage,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.dimse_primitives import C_STORE, N_CREATE, N_SET

from dicom_node._fast_association import EventDrivenAssociationServer
from dicom_node.spool import (
    InstanceRecorder,
    InvalidInstanceError,
    Spool,
    SpooledInstance,
    SpoolWriteError,
    is_valid_uid,
)

__all__ = [
    "ACCEPTED_TRANSFER_SYNTAXES",
    "MODALITY_PERFORMED_PROCEDURE_STEP",
    "MR_STORAGE_CLASSES",
    "VERIFICATION",
    "DicomReceiver",
    "MppsRecorder",
    "ReceiverConfig",
    "ReceiverStats",
]

LOGGER = structlog.get_logger(__name__)

VERIFICATION = UID("1.2.840.10008.1.1")
MODALITY_PERFORMED_PROCEDURE_STEP = UID("1.2.840.10008.3.1.2.3.3")

MR_STORAGE_CLASSES: frozenset[str] = frozenset({MRImageStorage, EnhancedMRImageStorage})

ACCEPTED_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC211
STATUS_PROCESSING_FAILURE = 0x0110
STATUS_INVALID_ATTRIBUTE_VALUE = 0x0106
STATUS_DUPLICATE_SOP_INSTANCE = 0x0111
STATUS_NO_SUCH_SOP_INSTANCE = 0x0112


class MppsRecorder(Protocol):
    """Where MPPS are recorded (the service's job store)."""

    def mpps_exists(self, sop_instance_uid: str) -> bool:
        """True when this MPPS was created."""
        ...

    def record_mpps(
        self,
        sop_instance_uid: str,
        *,
        study_uid: str | None,
        status: str,
        calling_ae: str,
        referenced_sop_uids: Sequence[str] = (),
    ) -> str | None:
        """Create or update an MPPS; returns its study UID when known."""
        ...


class _Recorder(InstanceRecorder, MppsRecorder, Protocol):
    pass


@dataclass(frozen=True, slots=True)
class ReceiverConfig:
    """How the listener presents itself and whom it accepts."""

    ae_title: str
    port: int
    bind_address: str = "0.0.0.0"
    max_associations: int = 16
    calling_ae_allow: tuple[str, ...] = ()
    check_called_ae: bool = True
    accept_other_storage: bool = True
    network_timeout_seconds: float = 60.0
    max_pdu_bytes: int = 131072


@dataclass(slots=True)
class ReceiverStats:
    """Counters since start (read by the metrics endpoint)."""

    instances_stored: int = 0
    instances_duplicate: int = 0
    instances_ignored: int = 0
    instances_failed: int = 0
    bytes_stored: int = 0
    associations_accepted: int = 0
    associations_rejected: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **increments: int) -> None:
        """Add to counters atomically."""
        with self._lock:
            for name, value in increments.items():
                setattr(self, name, getattr(self, name) + value)


_ASSOCIATION_IDS = itertools.count(1)


class DicomReceiver:
    """The SCP: spool C-STOREs, record MPPS, answer echoes.

    Parameters
    ----------
    config
        AE title, port and association policy.
    spool
        Where instances are stored.
    recorder
        The job store (records instances and MPPS).
    on_stored
        Called after each newly stored instance (cheap work only).
    on_mpps_completed
        Called with the study UID when an MPPS reaches ``COMPLETED``.
    """

    def __init__(
        self,
        config: ReceiverConfig,
        spool: Spool,
        recorder: _Recorder,
        *,
        on_stored: Callable[[SpooledInstance], None] | None = None,
        on_mpps_completed: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.spool = spool
        self.recorder = recorder
        self.stats = ReceiverStats()
        self._on_stored = on_stored
        self._on_mpps_completed = on_mpps_completed
        self._ae = self._make_ae()
        self._server: EventDrivenAssociationServer | None = None
        self._thread: threading.Thread | None = None

    def _make_ae(self) -> AE:
        config = self.config
        ae = AE(ae_title=config.ae_title)
        ae.maximum_associations = config.max_associations
        ae.require_calling_aet = list(config.calling_ae_allow)
        ae.require_called_aet = config.check_called_ae
        ae.network_timeout = config.network_timeout_seconds
        ae.maximum_pdu_size = config.max_pdu_bytes
        ae.add_supported_context(VERIFICATION, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        ae.add_supported_context(
            MODALITY_PERFORMED_PROCEDURE_STEP, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        )
        for sop_class in sorted(MR_STORAGE_CLASSES):
            ae.add_supported_context(sop_class, list(ACCEPTED_TRANSFER_SYNTAXES))
        if config.accept_other_storage:
            for context in AllStoragePresentationContexts:
                syntax = context.abstract_syntax
                if syntax is not None and syntax not in MR_STORAGE_CLASSES:
                    ae.add_supported_context(syntax, list(ACCEPTED_TRANSFER_SYNTAXES))
        return ae

    @property
    def port(self) -> int:
        """The port listened on (resolves port 0 after :meth:`start`)."""
        if self._server is None:
            return self.config.port
        return int(self._server.server_address[1])

    @property
    def is_running(self) -> bool:
        """True while the listener thread serves."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def active_associations(self) -> int:
        """Associations currently open."""
        return len(self._ae.active_associations)

    def start(self) -> None:
        """Bind and serve in a background thread."""
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._handle_requested),
            (evt.EVT_ACCEPTED, self._handle_accepted),
            (evt.EVT_REJECTED, self._handle_rejected),
            (evt.EVT_RELEASED, self._handle_ended, ["released"]),
            (evt.EVT_ABORTED, self._handle_ended, ["aborted"]),
            (evt.EVT_C_ECHO, self._handle_echo),
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_N_CREATE, self._handle_n_create),
            (evt.EVT_N_SET, self._handle_n_set),
        ]
        server = self._ae.make_server(
            (self.config.bind_address, self.config.port),
            evt_handlers=handlers,
            server_class=EventDrivenAssociationServer,
        )
        assert isinstance(server, EventDrivenAssociationServer)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="dicom-listener", daemon=True
        )
        self._thread.start()
        LOGGER.info(
            "dicom_listener_started",
            ae_title=self.config.ae_title,
            port=self.port,
            calling_ae_allow=list(self.config.calling_ae_allow) or "any",
        )

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting; let open associations end for ``grace_seconds``, then abort them.

        Every instance already answered with success is in the spool, so aborting
        an association loses nothing that was acknowledged.
        """
        if self._server is None:
            return
        socketserver.BaseServer.shutdown(self._server)
        self._server.server_close()
        deadline = time.monotonic() + grace_seconds
        while self._ae.active_associations and time.monotonic() < deadline:
            time.sleep(0.05)
        for association in self._ae.active_associations:
            LOGGER.warning("association_aborted_at_shutdown")
            association.abort()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        LOGGER.info("dicom_listener_stopped")

    # ------------------------------------------------------------- handlers
    def _handle_requested(self, event: evt.Event) -> None:
        association = event.assoc
        association_id = f"a{next(_ASSOCIATION_IDS)}"
        association.wbdwi_id = association_id  # type: ignore[attr-defined]
        association.wbdwi_counts = [0, 0]  # type: ignore[attr-defined]
        primitive = association.requestor.primitive
        calling_ae = str(primitive.calling_ae_title if primitive is not None else "").strip()
        structlog.contextvars.bind_contextvars(assoc_id=association_id, calling_ae=calling_ae)

    def _rejection_reason(self, event: evt.Event) -> str:
        association = event.assoc
        calling = association.requestor.ae_title.strip()
        primitive = association.requestor.primitive
        called = str(primitive.called_ae_title if primitive is not None else "").strip()
        if self.config.calling_ae_allow and calling not in self.config.calling_ae_allow:
            return f"calling AE {calling!r} is not in the allow-list"
        if self.config.check_called_ae and called != self.config.ae_title:
            return f"called AE {called!r} is not this node's {self.config.ae_title!r}"
        return f"more than {self.config.max_associations} associations at once"

    def _handle_rejected(self, event: evt.Event) -> None:
        self.stats.add(associations_rejected=1)
        LOGGER.warning(
            "association_rejected",
            reason=self._rejection_reason(event),
            peer=event.assoc.requestor.address,
        )

    def _handle_accepted(self, event: evt.Event) -> None:
        self.stats.add(associations_accepted=1)
        LOGGER.info("association_accepted", peer=event.assoc.requestor.address)

    def _handle_ended(self, event: evt.Event, how: str) -> None:
        counts = getattr(event.assoc, "wbdwi_counts", [0, 0])
        LOGGER.info(f"association_{how}", instances_stored=counts[0], bytes_stored=counts[1])

    def _handle_echo(self, _event: evt.Event) -> int:
        return STATUS_SUCCESS

    def _handle_store(self, event: evt.Event) -> int:
        request = cast(C_STORE, event.request)
        sop_class_uid = str(request.AffectedSOPClassUID or "")
        sop_instance_uid = str(request.AffectedSOPInstanceUID or "")
        if sop_class_uid not in MR_STORAGE_CLASSES:
            self.stats.add(instances_ignored=1)
            LOGGER.info(
                "instance_ignored",
                reason="not an MR image storage class",
                sop_class_uid=sop_class_uid,
            )
            return STATUS_SUCCESS
        calling_ae = event.assoc.requestor.ae_title.strip()
        try:
            if request.DataSet is None:
                raise InvalidInstanceError("the C-STORE request carries no data set")
            encoded = request.DataSet.getvalue()
            instance, is_new = self.spool.store(
                encoded,
                sop_class_uid=sop_class_uid,
                sop_instance_uid=sop_instance_uid,
                transfer_syntax_uid=str(event.context.transfer_syntax),
                calling_ae=calling_ae,
                recorder=self.recorder,
            )
        except InvalidInstanceError as error:
            self.stats.add(instances_failed=1)
            LOGGER.warning("instance_refused", reason=str(error), sop_instance_uid=sop_instance_uid)
            return STATUS_CANNOT_UNDERSTAND
        except SpoolWriteError as error:
            self.stats.add(instances_failed=1)
            LOGGER.error(
                "instance_not_stored", reason=str(error), sop_instance_uid=sop_instance_uid
            )
            return STATUS_OUT_OF_RESOURCES
        except Exception:
            # Boundary: the association must go on; the failure is logged in full.
            self.stats.add(instances_failed=1)
            LOGGER.exception("instance_store_failed", sop_instance_uid=sop_instance_uid)
            return STATUS_OUT_OF_RESOURCES
        if instance is None or not is_new:
            self.stats.add(instances_duplicate=1)
            LOGGER.debug("instance_duplicate", sop_instance_uid=sop_instance_uid)
            return STATUS_SUCCESS
        self.stats.add(instances_stored=1, bytes_stored=instance.size_bytes)
        counts = getattr(event.assoc, "wbdwi_counts", None)
        if counts is not None:
            counts[0] += 1
            counts[1] += instance.size_bytes
        if self._on_stored is not None:
            self._on_stored(instance)
        return STATUS_SUCCESS

    def _handle_n_create(self, event: evt.Event) -> tuple[int, Dataset | None]:
        request = cast(N_CREATE, event.request)
        if request.AffectedSOPClassUID != MODALITY_PERFORMED_PROCEDURE_STEP:
            return STATUS_PROCESSING_FAILURE, None
        try:
            attributes: Dataset = event.attribute_list
            sop_instance_uid = str(request.AffectedSOPInstanceUID or generate_uid())
            status = str(attributes.get("PerformedProcedureStepStatus", "")).strip().upper()
            study_uid = _mpps_study_uid(attributes)
        except Exception:
            LOGGER.exception("mpps_create_unreadable")
            return STATUS_PROCESSING_FAILURE, None
        if status != "IN PROGRESS":
            LOGGER.warning("mpps_create_refused", reason=f"status {status!r} is not IN PROGRESS")
            return STATUS_INVALID_ATTRIBUTE_VALUE, None
        if not is_valid_uid(sop_instance_uid):
            return STATUS_INVALID_ATTRIBUTE_VALUE, None
        try:
            if self.recorder.mpps_exists(sop_instance_uid):
                return STATUS_DUPLICATE_SOP_INSTANCE, None
            self.recorder.record_mpps(
                sop_instance_uid,
                study_uid=study_uid,
                status=status,
                calling_ae=event.assoc.requestor.ae_title.strip(),
            )
        except Exception:
            LOGGER.exception("mpps_create_failed", mpps_uid=sop_instance_uid)
            return STATUS_PROCESSING_FAILURE, None
        LOGGER.info("mpps_in_progress", mpps_uid=sop_instance_uid, study_uid=study_uid)
        response = Dataset()
        response.SOPInstanceUID = sop_instance_uid
        response.PerformedProcedureStepStatus = status
        return STATUS_SUCCESS, response

    def _handle_n_set(self, event: evt.Event) -> tuple[int, Dataset | None]:
        request = cast(N_SET, event.request)
        sop_instance_uid = str(request.RequestedSOPInstanceUID or "")
        try:
            modifications: Dataset = event.modification_list
            status = str(modifications.get("PerformedProcedureStepStatus", "")).strip().upper()
            references = _mpps_referenced_instances(modifications)
        except Exception:
            LOGGER.exception("mpps_set_unreadable", mpps_uid=sop_instance_uid)
            return STATUS_PROCESSING_FAILURE, None
        try:
            if not self.recorder.mpps_exists(sop_instance_uid):
                return STATUS_NO_SUCH_SOP_INSTANCE, None
            study_uid = self.recorder.record_mpps(
                sop_instance_uid,
                study_uid=None,
                status=status or "IN PROGRESS",
                calling_ae=event.assoc.requestor.ae_title.strip(),
                referenced_sop_uids=references,
            )
        except Exception:
            LOGGER.exception("mpps_set_failed", mpps_uid=sop_instance_uid)
            return STATUS_PROCESSING_FAILURE, None
        LOGGER.info(
            "mpps_updated",
            mpps_uid=sop_instance_uid,
            status=status,
            study_uid=study_uid,
            referenced_instances=len(references),
        )
        if status == "COMPLETED" and study_uid and self._on_mpps_completed is not None:
            self._on_mpps_completed(study_uid)
        response = Dataset()
        if status:
            response.PerformedProcedureStepStatus = status
        return STATUS_SUCCESS, response


def _mpps_study_uid(attributes: Dataset) -> str | None:
    """Study Instance UID from the Scheduled Step Attributes Sequence (PS3.3 C.4.13)."""
    for item in attributes.get("ScheduledStepAttributesSequence", []) or []:
        value = str(item.get("StudyInstanceUID", "") or "").strip()
        if value:
            return value
    return None


def _mpps_referenced_instances(modifications: Dataset) -> list[str]:
    """SOP Instance UIDs listed in the Performed Series Sequence (PS3.3 C.4.15)."""
    uids: list[str] = []
    for series in modifications.get("PerformedSeriesSequence", []) or []:
        for image in series.get("ReferencedImageSequence", []) or []:
            value = str(image.get("ReferencedSOPInstanceUID", "") or "").strip()
            if value:
                uids.append(value)
    return uids
