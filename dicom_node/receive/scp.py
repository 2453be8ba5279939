"""The node's DICOM listener: C-ECHO, C-STORE into the durable spool, MPPS N-CREATE/N-SET.

Built on the native Upper Layer acceptor (:mod:`dicom_node.receive.ul`): a thread per
association; the data set of a C-STORE of a kept class goes to a spool
temporary file as its PDUs arrive (:meth:`DicomReceiver.data_set_sink`), is
parsed whole there, and is refused (no file, no row) when it could not be
processed (:func:`dicom_node.receive.spool.check_instance`); it is stored as
received, never re-encoded. Accepted (PS3.4 annex A, B, F):

- Verification; MR Image Storage and Enhanced MR Image Storage; Segmentation
  and Label Map Segmentation Storage (a reader's corrected SEG, kept in the
  spool like MR images: :mod:`dicom_node.readers.seg_reader`); every other
  storage class too when ``accept_other_storage`` (answered with success and
  not kept), otherwise their presentation contexts are rejected (abstract
  syntax not supported);
- Modality Performed Procedure Step (N-CREATE ``IN PROGRESS``, N-SET
  ``COMPLETED``/``DISCONTINUED``), which tells the node an exam is complete;
  these small data sets are decoded with pydicom;
- transfer syntaxes implicit and explicit VR little endian, deflated, JPEG
  lossless, JPEG-LS, JPEG 2000 and RLE. Data are stored exactly as received and
  decoded when the exam is processed.

Association requests are checked against the calling-AE allow-list (empty:
any), the called AE title, and the maximum number of associations; a rejection
is logged with its reason (PS3.8 9.3.4 result/source/reason in the A-ASSOCIATE-RJ).
The handlers never raise: a failure answers 0xA700 (out of resources) or 0xC211
(cannot understand) with an error comment and is logged, and the association
goes on.
"""

from __future__ import annotations

import collections
import ipaddress
import ssl
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from typing import Protocol

import structlog
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
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
from pynetdicom import AllStoragePresentationContexts

from dicom_node.errors import InstanceRefusedError, InvalidInstanceError, SpoolWriteError
from dicom_node.readers.seg_reader import SEGMENTATION_STORAGE_CLASSES
from dicom_node.receive.element_walker import ByteString
from dicom_node.receive.spool import (
    IncomingInstance,
    InstanceRecorder,
    Spool,
    SpooledInstance,
    is_valid_uid,
)
from dicom_node.receive.ul import (
    AcceptedContext,
    Association,
    AssociationEnd,
    AssociationLimits,
    AssociationServer,
    DataSetSink,
    DimseReply,
    DimseRequest,
    Rejection,
)
from dicom_node.receive.ul.dimse import (
    C_ECHO_RQ,
    C_STORE_RQ,
    N_CREATE_RQ,
    N_SET_RQ,
    DimseCommand,
)
from dicom_node.receive.ul.pdu import AssociationRequest

__all__ = [
    "ACCEPTED_TRANSFER_SYNTAXES",
    "ERROR_ID_MPPS_NO_LONGER_UPDATABLE",
    "KEPT_STORAGE_CLASSES",
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
# What the spool keeps: the exams' MR images and the readers' SEGs.
KEPT_STORAGE_CLASSES: frozenset[str] = MR_STORAGE_CLASSES | SEGMENTATION_STORAGE_CLASSES

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
_UNCOMPRESSED: tuple[str, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC211
STATUS_PROCESSING_FAILURE = 0x0110
STATUS_INVALID_ATTRIBUTE_VALUE = 0x0106
STATUS_DUPLICATE_SOP_INSTANCE = 0x0111
STATUS_NO_SUCH_SOP_INSTANCE = 0x0112
STATUS_SOP_CLASS_NOT_SUPPORTED = 0x0122
# PS3.4 F.7.2.2: an N-SET of a COMPLETED or DISCONTINUED MPPS fails with this Error ID.
ERROR_ID_MPPS_NO_LONGER_UPDATABLE = 0xA310
_MPPS_FINAL_STATES = frozenset({"COMPLETED", "DISCONTINUED"})

# PS3.8 Table 9-21, A-ASSOCIATE-RJ reasons with source "service user" / "presentation".
_REASON_CALLING_AE_NOT_RECOGNIZED = 3
_REASON_CALLED_AE_NOT_RECOGNIZED = 7
_REASON_LOCAL_LIMIT_EXCEEDED = 2

_SUCCESS = DimseReply(STATUS_SUCCESS)


class _DroppedDataSet:
    """A sink that counts nothing and keeps nothing (data sets not stored)."""

    __slots__ = ("failed",)

    def __init__(self, *, failed: bool) -> None:
        self.failed = failed

    def write(self, fragment: ByteString) -> None:
        """Let the fragment go."""

    def discard(self) -> None:
        """Nothing to let go."""


_DROP = _DroppedDataSet(failed=False)
_DROP_FAILED = _DroppedDataSet(failed=True)


class MppsRecorder(Protocol):
    """Where MPPS are recorded (the service's job store)."""

    def mpps_exists(self, sop_instance_uid: str) -> bool:
        """True when this MPPS was created."""
        ...

    def mpps_status(self, sop_instance_uid: str) -> str | None:
        """The MPPS's recorded status (``None`` when it was never created)."""
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
    """How the listener presents itself and whom it accepts.

    ``ssl_context`` (server side) turns the port into a DICOM TLS port
    (:func:`dicom_node.tls.server_context`).
    """

    ae_title: str
    port: int
    bind_address: str = "0.0.0.0"
    max_associations: int = 16
    calling_ae_allow: tuple[str, ...] = ()
    check_called_ae: bool = True
    accept_other_storage: bool = True
    network_timeout_seconds: float = 60.0
    max_pdu_bytes: int = 131072
    ssl_context: ssl.SSLContext | None = None
    associate_timeout_seconds: float = 10.0
    pdu_timeout_seconds: float = 30.0
    max_connections: int = 64
    max_connections_per_address: int = 16


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
    instances_refused: collections.Counter[str] = field(default_factory=collections.Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **increments: int) -> None:
        """Add to counters atomically."""
        with self._lock:
            for name, value in increments.items():
                setattr(self, name, getattr(self, name) + value)

    def refused(self, reason: str) -> None:
        """Count a C-STORE refused before it was stored (``reason``: a metric label)."""
        with self._lock:
            self.instances_failed += 1
            self.instances_refused[reason] += 1


def _supported_contexts(accept_other_storage: bool) -> dict[str, tuple[str, ...]]:
    contexts: dict[str, tuple[str, ...]] = {}
    if accept_other_storage:
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                contexts[str(context.abstract_syntax)] = ACCEPTED_TRANSFER_SYNTAXES
    for sop_class in KEPT_STORAGE_CLASSES:
        contexts[sop_class] = ACCEPTED_TRANSFER_SYNTAXES
    contexts[VERIFICATION] = _UNCOMPRESSED
    contexts[MODALITY_PERFORMED_PROCEDURE_STEP] = _UNCOMPRESSED
    return contexts


def _decode_data_set(request: DimseRequest) -> Dataset:
    """An N-CREATE/N-SET attribute list, decoded with pydicom (explicit or implicit VR LE)."""
    if request.data_set is None:
        raise ValueError("the request carries no data set")
    implicit = request.context.transfer_syntax == ImplicitVRLittleEndian
    return read_dataset(BytesIO(bytes(request.data_set)), implicit, True)


def _encode_data_set(dataset: Dataset, transfer_syntax: str) -> bytes:
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = transfer_syntax == ImplicitVRLittleEndian
    write_dataset(buffer, dataset)
    return buffer.getvalue()


class DicomReceiver:
    """The SCP: spool C-STOREs, record MPPS, answer echoes.

    Parameters
    ----------
    config
        AE title, port, association policy and TLS.
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
        self._contexts = _supported_contexts(config.accept_other_storage)
        self._server: AssociationServer | None = None

    @property
    def supported_contexts(self) -> Mapping[str, Sequence[str]]:
        """Abstract syntax to the transfer syntaxes accepted for it."""
        return self._contexts

    @property
    def port(self) -> int:
        """The port listened on (resolves port 0 after :meth:`start`)."""
        if self._server is None:
            return self.config.port
        return self._server.port

    @property
    def is_running(self) -> bool:
        """True while the listener accepts associations."""
        return self._server is not None and self._server.is_serving

    @property
    def active_associations(self) -> int:
        """Associations currently open."""
        return 0 if self._server is None else self._server.open_associations

    @property
    def refused_connections(self) -> int:
        """Connections closed at accept time by the connection caps (since start)."""
        return 0 if self._server is None else self._server.refused_connections

    def start(self) -> None:
        """Bind and serve in background threads."""
        config = self.config
        limits = AssociationLimits(
            max_pdu_length=config.max_pdu_bytes,
            idle_timeout=config.network_timeout_seconds,
            associate_timeout=config.associate_timeout_seconds,
            pdu_timeout=config.pdu_timeout_seconds,
            max_data_set_bytes=self.spool.limits.max_instance_bytes,
        )
        server = AssociationServer(
            (config.bind_address, config.port),
            self,
            limits=limits,
            max_connections=config.max_connections,
            max_connections_per_address=config.max_connections_per_address,
            ssl_context=config.ssl_context,
        )
        server.start()
        self._server = server
        LOGGER.info(
            "dicom_listener_started",
            ae_title=config.ae_title,
            port=self.port,
            tls=config.ssl_context is not None,
            calling_ae_allow=list(config.calling_ae_allow) or "any",
        )

    def stop(self, grace_seconds: float = 10.0) -> None:
        """Stop accepting; let open associations end for ``grace_seconds``, then abort them.

        Every instance already answered with success is in the spool, so aborting
        an association loses nothing that was acknowledged.
        """
        if self._server is None:
            return
        self._server.stop(grace_seconds)
        self._server = None
        LOGGER.info("dicom_listener_stopped")

    # ------------------------------------------------------ association policy
    def _own_verification(self, request: AssociationRequest, peer: str) -> bool:
        """The node's own ``wbdwi echo``: its AE title, from this host, Verification only.

        Accepted whatever ``calling_ae_allow`` says, so that an operator (or a
        health check) can echo the node on its host without adding the node's
        own AE title to the scanners' allow-list. Nothing can be stored on such
        an association: Verification is its only context.
        """
        host = peer.rsplit(":", 1)[0].strip("[]")
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
        return (
            loopback
            and request.calling_ae == self.config.ae_title
            and bool(request.contexts)
            and all(context.abstract_syntax == VERIFICATION for context in request.contexts)
        )

    def check_association(
        self, association: Association, open_associations: int
    ) -> Rejection | None:
        """Apply the calling-AE allow-list, the called-AE check and the association limit."""
        request = association.request
        assert request is not None
        config = self.config
        rejection: Rejection | None = None
        if (
            config.calling_ae_allow
            and request.calling_ae not in config.calling_ae_allow
            and not self._own_verification(request, association.peer)
        ):
            rejection = Rejection(
                Rejection.PERMANENT,
                Rejection.SOURCE_USER,
                _REASON_CALLING_AE_NOT_RECOGNIZED,
                f"calling AE {request.calling_ae!r} is not in the allow-list",
            )
        elif config.check_called_ae and request.called_ae != config.ae_title:
            rejection = Rejection(
                Rejection.PERMANENT,
                Rejection.SOURCE_USER,
                _REASON_CALLED_AE_NOT_RECOGNIZED,
                f"called AE {request.called_ae!r} is not this node's {config.ae_title!r}",
            )
        elif open_associations > config.max_associations:
            rejection = Rejection(
                Rejection.TRANSIENT,
                Rejection.SOURCE_PRESENTATION,
                _REASON_LOCAL_LIMIT_EXCEEDED,
                f"more than {config.max_associations} associations at once",
            )
        if rejection is None:
            self.stats.add(associations_accepted=1)
            LOGGER.info(
                "association_accepted",
                peer=association.peer,
                implementation=request.implementation_version_name
                or request.implementation_class_uid,
            )
        else:
            self.stats.add(associations_rejected=1)
            LOGGER.warning(
                "association_rejected", reason=rejection.explanation, peer=association.peer
            )
        return rejection

    def association_ended(self, association: Association, how: AssociationEnd) -> None:
        """Log the end of an accepted association with what it stored."""
        if how is AssociationEnd.REJECTED:
            return
        LOGGER.info(
            f"association_{how.value}",
            instances_stored=association.tally["instances"],
            bytes_stored=association.tally["bytes"],
        )

    # ---------------------------------------------------------------- services
    def data_set_sink(
        self, association: Association, command: DimseCommand, context: AcceptedContext
    ) -> DataSetSink | None:
        """A C-STORE's data set goes to a spool temporary file (kept classes) or nowhere.

        Instances of the kept classes are written to disk as they arrive, so an
        association holds one PDU in memory whatever the instance's size; the data
        set of any other C-STORE (ignored class, or a SOP class that differs from
        the context's: answered without its data set) is counted and dropped.
        N-CREATE and N-SET attribute lists stay in memory (bounded by
        ``receive.max_instance_bytes``).
        """
        if command.command_field != C_STORE_RQ:
            return None
        sop_class_uid = command.affected_sop_class_uid
        if sop_class_uid != context.abstract_syntax or sop_class_uid not in KEPT_STORAGE_CLASSES:
            return _DROP
        try:
            return self.spool.open_incoming(
                sop_class_uid=sop_class_uid,
                sop_instance_uid=command.affected_sop_instance_uid,
                transfer_syntax_uid=context.transfer_syntax,
                calling_ae=association.calling_ae,
            )
        except SpoolWriteError as error:
            LOGGER.error("instance_not_spooled_ahead", reason=str(error))
            return _DROP_FAILED

    def serve(self, association: Association, request: DimseRequest) -> DimseReply:
        """Perform one DIMSE request (C-ECHO, C-STORE, N-CREATE, N-SET)."""
        operation = request.command.command_field
        if operation == C_STORE_RQ:
            return self._store(association, request)
        if operation == C_ECHO_RQ:
            return _SUCCESS
        if operation == N_CREATE_RQ:
            return self._n_create(association, request)
        if operation == N_SET_RQ:
            return self._n_set(association, request)
        return DimseReply(STATUS_PROCESSING_FAILURE, f"operation 0x{operation:04X} not served")

    def _store(self, association: Association, request: DimseRequest) -> DimseReply:
        refused = self._refuse_store_class(request)
        if refused is not None:
            return refused
        stored = self._spool_or_reply(association, request)
        if isinstance(stored, DimseReply):
            return stored
        instance, is_new = stored
        if instance is None or not is_new:
            self.stats.add(instances_duplicate=1)
            LOGGER.debug(
                "instance_duplicate", sop_instance_uid=request.command.affected_sop_instance_uid
            )
            return _SUCCESS
        self.stats.add(instances_stored=1, bytes_stored=instance.size_bytes)
        association.tally["instances"] += 1
        association.tally["bytes"] += instance.size_bytes
        if self._on_stored is not None:
            self._on_stored(instance)
        return _SUCCESS

    def _refuse_store_class(self, request: DimseRequest) -> DimseReply | None:
        """The answer to a C-STORE whose SOP class is not kept here, or ``None`` to store it."""
        sop_class_uid = request.command.affected_sop_class_uid
        if sop_class_uid != request.context.abstract_syntax:
            self.stats.add(instances_failed=1)
            LOGGER.warning(
                "instance_refused",
                reason="SOP class differs from the presentation context",
                sop_class_uid=sop_class_uid,
                context_abstract_syntax=request.context.abstract_syntax,
            )
            return DimseReply(
                STATUS_SOP_CLASS_NOT_SUPPORTED,
                "SOP class differs from the presentation context's abstract syntax",
            )
        if sop_class_uid not in KEPT_STORAGE_CLASSES:
            self.stats.add(instances_ignored=1)
            LOGGER.info(
                "instance_ignored",
                reason="neither an MR image nor a segmentation storage class",
                sop_class_uid=sop_class_uid,
            )
            return _SUCCESS
        return None

    def _spool_or_reply(
        self, association: Association, request: DimseRequest
    ) -> tuple[SpooledInstance | None, bool] | DimseReply:
        """Spool the data set, or the failure answer (refused, not understood, not stored)."""
        sop_instance_uid = request.command.affected_sop_instance_uid
        try:
            return self._spool(association, request)
        except InstanceRefusedError as error:
            self.stats.refused(error.reason)
            LOGGER.warning(
                "instance_refused",
                reason=str(error),
                refusal=error.reason,
                status=f"0x{error.status:04X}",
                sop_instance_uid=sop_instance_uid,
                peer=association.peer,
            )
            return DimseReply(error.status, str(error))
        except InvalidInstanceError as error:
            self.stats.add(instances_failed=1)
            LOGGER.warning("instance_refused", reason=str(error), sop_instance_uid=sop_instance_uid)
            return DimseReply(STATUS_CANNOT_UNDERSTAND, str(error))
        except SpoolWriteError as error:
            self.stats.add(instances_failed=1)
            LOGGER.error(
                "instance_not_stored", reason=str(error), sop_instance_uid=sop_instance_uid
            )
            return DimseReply(STATUS_OUT_OF_RESOURCES, str(error))
        except Exception as error:
            # Boundary: the association must go on; the failure is logged in full.
            self.stats.add(instances_failed=1)
            LOGGER.exception("instance_store_failed", sop_instance_uid=sop_instance_uid)
            return DimseReply(STATUS_OUT_OF_RESOURCES, f"{type(error).__name__}: {error}")

    def _spool(
        self, association: Association, request: DimseRequest
    ) -> tuple[SpooledInstance | None, bool]:
        """Store a C-STORE's data set: from its temporary file, or from memory."""
        if request.sink is _DROP_FAILED:
            raise SpoolWriteError("no temporary file could be made in the spool")
        if isinstance(request.sink, IncomingInstance):
            return self.spool.store_incoming(request.sink, self.recorder)
        if request.data_set is None:
            raise InvalidInstanceError("the C-STORE request carries no data set")
        return self.spool.store(
            request.data_set,
            sop_class_uid=request.command.affected_sop_class_uid,
            sop_instance_uid=request.command.affected_sop_instance_uid,
            transfer_syntax_uid=request.context.transfer_syntax,
            calling_ae=association.calling_ae,
            recorder=self.recorder,
        )

    def _n_create(self, association: Association, request: DimseRequest) -> DimseReply:
        command = request.command
        if command.affected_sop_class_uid != MODALITY_PERFORMED_PROCEDURE_STEP:
            return DimseReply(STATUS_SOP_CLASS_NOT_SUPPORTED, "only MPPS is created here")
        try:
            attributes = _decode_data_set(request)
            sop_instance_uid = command.affected_sop_instance_uid or str(generate_uid())
            status = str(attributes.get("PerformedProcedureStepStatus", "")).strip().upper()
            study_uid = _mpps_study_uid(attributes)
        except Exception as error:
            LOGGER.exception("mpps_create_unreadable")
            return DimseReply(STATUS_PROCESSING_FAILURE, f"attribute list unreadable: {error}")
        if status != "IN PROGRESS":
            LOGGER.warning("mpps_create_refused", reason=f"status {status!r} is not IN PROGRESS")
            return DimseReply(STATUS_INVALID_ATTRIBUTE_VALUE, f"status {status!r} not IN PROGRESS")
        if not is_valid_uid(sop_instance_uid):
            return DimseReply(STATUS_INVALID_ATTRIBUTE_VALUE, "SOP instance UID is not a UID")
        failed = self._record_new_mpps(association, sop_instance_uid, study_uid, status)
        if failed is not None:
            return failed
        LOGGER.info("mpps_in_progress", mpps_uid=sop_instance_uid, study_uid=study_uid)
        response = Dataset()
        response.SOPInstanceUID = sop_instance_uid
        response.PerformedProcedureStepStatus = status
        return DimseReply(
            STATUS_SUCCESS,
            data_set=_encode_data_set(response, request.context.transfer_syntax),
            affected_sop_instance_uid=sop_instance_uid,
        )

    def _record_new_mpps(
        self, association: Association, sop_instance_uid: str, study_uid: str | None, status: str
    ) -> DimseReply | None:
        """Record an N-CREATE's MPPS; the failure answer when it exists or cannot be recorded."""
        try:
            if self.recorder.mpps_exists(sop_instance_uid):
                return DimseReply(STATUS_DUPLICATE_SOP_INSTANCE, "MPPS exists already")
            self.recorder.record_mpps(
                sop_instance_uid,
                study_uid=study_uid,
                status=status,
                calling_ae=association.calling_ae,
            )
        except Exception as error:
            LOGGER.exception("mpps_create_failed", mpps_uid=sop_instance_uid)
            return DimseReply(STATUS_PROCESSING_FAILURE, f"{type(error).__name__}: {error}")
        return None

    def _n_set(self, association: Association, request: DimseRequest) -> DimseReply:
        command = request.command
        sop_instance_uid = command.requested_sop_instance_uid
        if command.requested_sop_class_uid != MODALITY_PERFORMED_PROCEDURE_STEP:
            return DimseReply(STATUS_SOP_CLASS_NOT_SUPPORTED, "only MPPS is set here")
        try:
            modifications = _decode_data_set(request)
            status = str(modifications.get("PerformedProcedureStepStatus", "")).strip().upper()
            references = _mpps_referenced_instances(modifications)
        except Exception as error:
            LOGGER.exception("mpps_set_unreadable", mpps_uid=sop_instance_uid)
            return DimseReply(STATUS_PROCESSING_FAILURE, f"modification list unreadable: {error}")
        try:
            current = self.recorder.mpps_status(sop_instance_uid)
            if current is None:
                return DimseReply(STATUS_NO_SUCH_SOP_INSTANCE, "no such MPPS")
            if current in _MPPS_FINAL_STATES:
                LOGGER.warning(
                    "mpps_set_refused",
                    mpps_uid=sop_instance_uid,
                    reason=f"the MPPS is {current}; it may no longer be updated",
                    requested_status=status,
                )
                return DimseReply(
                    STATUS_PROCESSING_FAILURE,
                    "Performed Procedure Step Object may no longer be updated",
                    error_id=ERROR_ID_MPPS_NO_LONGER_UPDATABLE,
                )
            study_uid = self.recorder.record_mpps(
                sop_instance_uid,
                study_uid=None,
                status=status or "IN PROGRESS",
                calling_ae=association.calling_ae,
                referenced_sop_uids=references,
            )
        except Exception as error:
            LOGGER.exception("mpps_set_failed", mpps_uid=sop_instance_uid)
            return DimseReply(STATUS_PROCESSING_FAILURE, f"{type(error).__name__}: {error}")
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
        return DimseReply(
            STATUS_SUCCESS, data_set=_encode_data_set(response, request.context.transfer_syntax)
        )


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
