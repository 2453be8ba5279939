"""The node: receiver, completion, worker, exporter and HTTP, started and stopped together.

Start order: lock the data folder (one node per folder,
:mod:`service.data_dir_lock`); open the job store; check that the DICOM port can
be bound and bind the HTTP port (a port in use stops the start here, with one
line naming it, before anything runs); recover (delete half-written spool files,
index spool files the store does not know, put interrupted jobs back to
``ready``); pick the processing device and say which; start the threads; open
the DICOM port last, so nothing is acknowledged before the node can keep it.

Stop order (SIGTERM): close the DICOM port (open associations get a grace
period; what they already got acknowledged is in the spool), stop completion
detection, let the worker finish its job for ``shutdown_grace_seconds`` (a job
still running then is left ``processing`` and resumes at the next start), let
the exporter finish the file in flight, stop HTTP, close the store.
"""

from __future__ import annotations

import errno
import functools
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from dicom_node.assembly.read_ahead import InstanceCache, ReadAhead
from dicom_node.errors import InvalidInstanceError
from dicom_node.package_version import installed_version
from dicom_node.receive.scp import DicomReceiver, ReceiverConfig
from dicom_node.receive.spool import InstanceLimits, Spool, SpooledInstance
from processing.backend import Backend, select_backend
from service.completion import CompletionDetector
from service.data_dir_lock import DataDirLock
from service.disk import DiskGuard
from service.errors import PortUnavailableError
from service.exporter import Exporter
from service.http import Metric
from service.jobs import JobSpec, JobState, OutboxState
from service.jobstore import SqliteJobStore
from service.retention import RetentionCleaner, RetentionKind
from service.settings import OtherStoragePolicy, Settings
from service.storage import LocalStorage
from service.web.app import create_app
from service.web.server import WebServer
from service.worker import (
    JobOutcome,
    PriorsWait,
    Worker,
    WorkerIdentity,
    run_job,
    warm_up_gpu,
)

if TYPE_CHECKING:
    from service.queue_celery.receiver import CeleryReceiver

__all__ = ["Node", "PortUnavailableError", "RecoveryReport", "check_port_free"]

LOGGER = structlog.get_logger(__name__)

#: The interpreter's thread switch interval in the node (Python's default: 0.005 s).
SWITCH_INTERVAL_S = 0.0005

# What is read ahead: the images assembly reads (MR Image, Enhanced MR Image Storage).
_READ_AHEAD_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.5.1.4.1.1.4.1"})

JOB_STORE_FILE = "jobs.sqlite"


def _port_message(kind: str, setting: str, bind_address: str, port: int, error: OSError) -> str:
    reason = error.strerror or str(error)
    if error.errno == errno.EADDRINUSE:
        reason = "already in use (another program, or another node, listens on it)"
    elif error.errno == errno.EACCES:
        reason = "not allowed for this user (ports below 1024 need privileges)"
    return f"{kind} port {port} on {bind_address} ({setting}): {reason}"


def check_port_free(kind: str, setting: str, bind_address: str, port: int) -> None:
    """Raise :class:`PortUnavailableError` when ``bind_address:port`` cannot be bound now.

    Binds (with the listener's own options, ``socket.create_server``) and
    closes again; port 0 (any free port) is not checked.
    """
    if port == 0:
        return
    try:
        probe = socket.create_server((bind_address, port))
    except OSError as error:
        raise PortUnavailableError(
            _port_message(kind, setting, bind_address, port, error)
        ) from error
    probe.close()


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What the start-up recovery found."""

    partial_files_removed: int
    spool_files_indexed: int
    spool_files_unreadable: int
    jobs_resumed: int


class Node:
    """The whole node in one process.

    Parameters
    ----------
    settings
        Everything configurable.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data_dir = settings.node.data_dir.resolve()
        # Before the store is opened (and migrated) or anything is recovered.
        self.data_dir_lock = DataDirLock.acquire(self.data_dir)
        try:
            self.store = SqliteJobStore(self.data_dir / JOB_STORE_FILE)
        except BaseException:
            self.data_dir_lock.release()
            raise
        self.spool = Spool(
            self.data_dir / "spool",
            fsync=settings.receive.fsync,
            limits=InstanceLimits(
                max_instance_bytes=settings.receive.max_instance_bytes,
                max_inflation_ratio=settings.receive.max_inflation_ratio,
                max_sequence_depth=settings.receive.max_sequence_depth,
            ),
        )
        self.version = installed_version()
        self.completion = CompletionDetector(self.store, settings, self.version)
        self.exporter = Exporter(
            self.store, settings.export, settings.node.ae_title, tls=settings.tls.export_context()
        )
        self.disk = DiskGuard(self.data_dir, settings.node.min_free_disk_mb)
        # Input images are read as they arrive when this process runs the jobs.
        self.read_ahead = (
            ReadAhead(InstanceCache(settings.node.read_ahead_mb * 1024 * 1024))
            if settings.node.read_ahead_mb > 0 and settings.queue.backend != "celery"
            else None
        )
        # The jobs run in this process: their derived series are delivered while their
        # SEG and SR are made, and their inputs come from the read-ahead cache.
        runner = functools.partial(
            run_job,
            instances=None if self.read_ahead is None else self.read_ahead.cache,
            on_results_ready=self._results_ready,
        )
        # One Worker per thread (node.workers), each with its own current job and counters.
        self.workers = [
            Worker(
                self.store,
                runner=runner,
                on_finished=self._job_finished,
                priors_wait=PriorsWait(
                    retry_seconds=settings.priors.retry_seconds,
                    max_wait_seconds=settings.priors.max_wait_seconds,
                ),
                room=self.disk.check,
                identity=WorkerIdentity(name=f"worker-{index + 1}"),
            )
            for index in range(settings.node.workers)
        ]
        self.worker = self.workers[0]
        # [queue] backend = "celery": jobs run on ``wbdwi worker`` processes (issue 15).
        self.queue_receiver = (
            self._celery_receiver() if settings.queue.backend == "celery" else None
        )
        self.retention = RetentionCleaner(
            self.store,
            settings.retention,
            spool_dir=self.data_dir / "spool",
            results_dir=settings.results_dir,
        )
        self.receiver = DicomReceiver(
            ReceiverConfig(
                ae_title=settings.node.ae_title,
                port=settings.node.port,
                bind_address=settings.node.bind_address,
                max_associations=settings.receive.max_associations,
                calling_ae_allow=settings.receive.calling_ae_allow,
                check_called_ae=settings.receive.check_called_ae,
                accept_other_storage=(
                    settings.receive.other_storage is OtherStoragePolicy.ACCEPT_AND_IGNORE
                ),
                network_timeout_seconds=settings.receive.network_timeout_seconds,
                max_pdu_bytes=settings.receive.max_pdu_bytes,
                ssl_context=settings.tls.listener_context(),
                associate_timeout_seconds=settings.receive.associate_timeout_seconds,
                pdu_timeout_seconds=settings.receive.pdu_timeout_seconds,
                max_connections=settings.receive.max_connections,
                max_connections_per_address=settings.receive.max_connections_per_address,
            ),
            self.spool,
            self.store,
            on_stored=self._stored,
            on_mpps_completed=self.completion.wake,
        )
        self.http: WebServer | None = None
        self.device_description = ""
        self._stop = threading.Event()
        self._worker_stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._processing_seconds_total = 0.0
        self._jobs_finished = 0
        self._jobs_failed = 0
        self._gpu_fallbacks = 0
        self._started = False
        self._switch_interval_before: float | None = None

    # --------------------------------------------------------------- lifecycle
    def recover(self) -> RecoveryReport:
        """Repair what a crash may have left: partial files, unindexed files, running jobs."""
        removed = self.spool.discard_incomplete()
        known = self.store.known_instance_paths()
        indexed = unreadable = 0
        for path in self.spool.scan():
            if str(path) in known:
                continue
            try:
                instance: SpooledInstance = self.spool.read_spooled(path)
            except InvalidInstanceError as error:
                unreadable += 1
                LOGGER.error("spool_file_unreadable", path=str(path), reason=str(error))
                continue
            if self.store.record_instance(instance):
                indexed += 1
        resumed = self.store.resume_after_restart()
        report = RecoveryReport(removed, indexed, unreadable, resumed)
        LOGGER.info(
            "recovered",
            partial_files_removed=removed,
            spool_files_indexed=indexed,
            spool_files_unreadable=unreadable,
            jobs_resumed=resumed,
        )
        return report

    def warn_unconfigured_destinations(self) -> list[str]:
        """Log one warning per destination with waiting deliveries that the settings no
        longer name (they would wait forever); returns those destinations."""
        configured = {str(d) for d in self.settings.export.destinations}
        waiting: dict[str, int] = {}
        for (destination, state), count in self.store.outbox_counts().items():
            if state is OutboxState.PENDING and destination not in configured:
                waiting[destination] = waiting.get(destination, 0) + count
        for destination, count in sorted(waiting.items()):
            LOGGER.warning(
                "destination_not_configured",
                destination=destination,
                waiting=count,
                hint=f"add it back to export.destinations, or cancel its deliveries with "
                f"'wbdwi deliveries cancel {destination}'",
            )
        return sorted(waiting)

    def start(self) -> None:
        """Check the ports, recover, choose the device, start every part; the DICOM port opens last.

        Raises
        ------
        PortUnavailableError
            The DICOM or HTTP port cannot be listened on (in use, or not
            allowed); raised before anything is recovered or started.
        """
        node = self.settings.node
        check_port_free("DICOM", "node.port", node.bind_address, node.port)
        # The node's threads are mostly waiting on sockets and disks while one may compute
        # (a job's SEG and SR); each of their waits ends with taking the interpreter lock
        # back, which a computing thread gives up only after the switch interval (5 ms by
        # default): 469 C-STORE exchanges next to a computing job took seconds instead of
        # ~1 s. 0.5 ms keeps the I/O threads moving at a small cost to the computing one.
        self._switch_interval_before = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch_interval_before, SWITCH_INTERVAL_S))
        if node.http_port:
            http = self.settings.http
            try:  # binds now, serves once the rest has started
                self.http = WebServer(http.bind_address, node.http_port, create_app(self))
            except OSError as error:
                raise PortUnavailableError(
                    _port_message(
                        "HTTP", "node.http_port", http.bind_address, node.http_port, error
                    )
                ) from error
        LOGGER.info(
            "node_starting",
            version=self.version,
            ae_title=self.settings.node.ae_title,
            data_dir=str(self.data_dir),
        )
        self._started = True  # from here on, a failure stops what started (stop())
        self.recover()
        self.warn_unconfigured_destinations()
        self.select_device()
        if self.read_ahead is not None:
            self.read_ahead.start()
        self._spawn(
            "completion",
            lambda: self.completion.run(self._stop, on_submitted=self._wake_job_takers),
        )
        if self.queue_receiver is None:
            for worker in self.workers:
                self._spawn(worker.name, functools.partial(worker.run, self._worker_stop))
        else:
            receiver = self.queue_receiver
            self._spawn("dispatcher", lambda: receiver.run_dispatcher(self._worker_stop))
            self._spawn("queue-events", lambda: receiver.run_events(self._worker_stop))
        self._spawn("exporter", lambda: self.exporter.run(self._stop))
        if self.settings.retention.enabled:
            self._spawn("retention", lambda: self.retention.run(self._stop))
        if self.http is not None:
            self.http.start()
        try:
            self.receiver.start()
        except OSError as error:  # taken since the check (recovery can take a while)
            raise PortUnavailableError(
                _port_message("DICOM", "node.port", node.bind_address, node.port, error)
            ) from error
        LOGGER.info(
            "node_started",
            dicom_port=self.receiver.port,
            http_port=self.http.port if self.http else None,
            destinations=[str(d) for d in self.settings.export.destinations] or "results folder",
        )

    def select_device(self) -> Backend:
        """Pick the processing backend and log it, with why the GPU is not used when not.

        Raises
        ------
        BackendUnavailableError
            ``node.device = gpu`` and no GPU is usable.
        """
        backend = select_backend(self.settings.node.device)
        self.device_description = backend.description
        details = {"gpu_unused_reason": backend.gpu_unused_reason} if not backend.is_gpu else {}
        LOGGER.info(
            "processing_device",
            device=backend.name,
            description=backend.description,
            requested=self.settings.node.device.value,
            **details,
        )
        if backend.is_gpu:  # off the receive path, not a readiness thread (it ends)
            threading.Thread(
                target=warm_up_gpu,
                args=(self.settings.node.device,),
                name="gpu-warmup",
                daemon=True,
            ).start()
        return backend

    def _spawn(self, name: str, target: object) -> None:
        assert callable(target)
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads[name] = thread

    def _restore_switch_interval(self) -> None:
        """The interpreter's switch interval as it was before :meth:`start`."""
        if self._switch_interval_before is not None:
            sys.setswitchinterval(self._switch_interval_before)
            self._switch_interval_before = None

    def stop(self) -> None:
        """Graceful stop (see the module docstring)."""
        self._restore_switch_interval()
        if not self._started:
            if self.http is not None:  # bound, never served
                self.http.stop()
                self.http = None
            self.store.close()
            self.data_dir_lock.release()
            return
        LOGGER.info("node_stopping")
        grace = self.settings.node.shutdown_grace_seconds
        self.receiver.stop(grace_seconds=min(grace, 10.0))
        self.spool.close()
        self._stop.set()
        self._worker_stop.set()
        if self.read_ahead is not None:
            self.read_ahead.stop()
        self.completion.wake()
        for worker in self.workers:
            worker.wake()
        if self.queue_receiver is not None:
            self.queue_receiver.wake()
        self.exporter.wake()
        deadline = time.monotonic() + grace
        for name, thread in self._threads.items():
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                LOGGER.warning(
                    "thread_left_running",
                    thread=name,
                    job_id=next((w.current_job for w in self.workers if w.name == name), None),
                    note="the job resumes at the next start",
                )
        if self.http is not None:
            self.http.stop()
        running = [name for name, thread in self._threads.items() if thread.is_alive()]
        if not running:
            self.store.close()
        self.data_dir_lock.release()
        self._started = False
        LOGGER.info("node_stopped", left_running=running)

    # ----------------------------------------------------------------- probes
    def threads(self) -> dict[str, threading.Thread]:
        """The node's long-running threads by name (the dashboard shows them)."""
        return dict(self._threads)

    def readiness_problems(self) -> list[str]:
        """What keeps the node from being ready (empty list: ready)."""
        problems: list[str] = []
        if not self.receiver.is_running:
            problems.append("DICOM listener not running")
        try:
            self.store.ping()
        except Exception as error:
            problems.append(f"job store unavailable: {error}")
        problems.extend(
            f"{name} thread stopped"
            for name, thread in self._threads.items()
            if not thread.is_alive()
        )
        disk = self.disk.check()
        if disk:
            problems.append(disk)
        return problems

    def _celery_receiver(self) -> CeleryReceiver:
        from service.queue_celery.receiver import CeleryReceiver, device_class_for

        def finished(_job_id: int, ok: bool, seconds: float) -> None:
            self._processing_seconds_total += seconds
            if ok:
                self._jobs_finished += 1
                self.exporter.wake()
            else:
                self._jobs_failed += 1

        queue = self.settings.queue
        return CeleryReceiver(
            self.store,
            broker_url=queue.broker_url,
            delivery_limit=queue.delivery_limit,
            device_class=device_class_for(self.settings.node.device.value),
            software_version=self.version,
            on_finished=finished,
            priors_wait=self.worker.priors_wait,
            storage=None if queue.storage_root is None else LocalStorage(queue.storage_root),
        )

    def _stored(self, instance: SpooledInstance) -> None:
        """An instance was stored: an MR image is read ahead for its exam's assembly."""
        if self.read_ahead is not None and instance.sop_class_uid in _READ_AHEAD_CLASSES:
            self.read_ahead.offer(instance.path)

    def _results_ready(self, spec: JobSpec, results: list[tuple[str, str]]) -> None:
        """Part of a running job's results is written: queue it and send it now."""
        queued = self.store.queue_results_early(spec.job_id, results, spec.destinations)
        if queued:
            LOGGER.info("results_queued_early", job_id=spec.job_id, files=len(results))
            self.exporter.wake()

    def _wake_job_takers(self) -> None:
        """A job was queued: the workers (or the queue dispatcher) look at once."""
        for worker in self.workers:
            worker.wake()
        if self.queue_receiver is not None:
            self.queue_receiver.wake()

    def _job_finished(self, spec: JobSpec, outcome: JobOutcome | None, seconds: float) -> None:
        self._processing_seconds_total += seconds
        if outcome is None:
            self._jobs_failed += 1
        else:
            self._jobs_finished += 1
            if outcome.gpu_fallback:
                self._gpu_fallbacks += 1
            self.exporter.wake()

    def metrics(self) -> list[Metric]:
        """Current metric families (see ``docs/service.md``)."""
        return [
            *self._receive_metrics(),
            *self._job_metrics(),
            *self._export_metrics(),
            *self._retention_metrics(),
        ]

    def _receive_metrics(self) -> list[Metric]:
        stats = self.receiver.stats
        refused = dict(stats.instances_refused)
        return [
            Metric(
                "wbdwi_instances_received_total",
                "counter",
                "Instances stored in the spool since start.",
                (({}, stats.instances_stored),),
            ),
            Metric(
                "wbdwi_instances_received_bytes_total",
                "counter",
                "Bytes of instances stored since start.",
                (({}, stats.bytes_stored),),
            ),
            Metric(
                "wbdwi_instances_duplicate_total",
                "counter",
                "Instances received again (stored once).",
                (({}, stats.instances_duplicate),),
            ),
            Metric(
                "wbdwi_instances_ignored_total",
                "counter",
                "Non-MR instances accepted and not kept.",
                (({}, stats.instances_ignored),),
            ),
            Metric(
                "wbdwi_instances_failed_total",
                "counter",
                "C-STOREs answered with an error status.",
                (({}, stats.instances_failed),),
            ),
            Metric(
                "wbdwi_instances_refused_total",
                "counter",
                "C-STOREs refused before storing, by reason (truncated, malformed, sop_class, "
                "sop_instance, pixel_data, pixel_module, too_large, inflation).",
                tuple(({"reason": reason}, n) for reason, n in sorted(refused.items())),
            ),
            Metric(
                "wbdwi_associations_rejected_total",
                "counter",
                "Association requests rejected.",
                (({}, stats.associations_rejected),),
            ),
            Metric(
                "wbdwi_connections_refused_total",
                "counter",
                "TCP connections closed as they were accepted (receive.max_connections, "
                "receive.max_connections_per_address).",
                (({}, self.receiver.refused_connections),),
            ),
        ]

    def _job_metrics(self) -> list[Metric]:
        jobs = self.store.job_counts()
        pending = sum(
            n
            for (_, state), n in self.store.outbox_counts().items()
            if state is OutboxState.PENDING
        )
        return [
            Metric(
                "wbdwi_jobs",
                "gauge",
                "Jobs by state.",
                tuple(({"state": state.value}, count) for state, count in jobs.items()),
            ),
            Metric(
                "wbdwi_queue_depth",
                "gauge",
                "Work waiting: ready jobs plus pending deliveries.",
                (({}, jobs[JobState.READY] + pending),),
            ),
            Metric(
                "wbdwi_processing_seconds_total",
                "counter",
                "Seconds spent running jobs since start.",
                (({}, self._processing_seconds_total),),
            ),
            Metric(
                "wbdwi_jobs_processed_total",
                "counter",
                "Jobs run since start, by outcome.",
                (
                    ({"outcome": "ok"}, self._jobs_finished),
                    ({"outcome": "failed"}, self._jobs_failed),
                    ({"outcome": "ignored"}, sum(w.jobs_ignored for w in self.workers)),
                ),
            ),
            Metric(
                "wbdwi_results_by_verdict",
                "gauge",
                "Processed jobs by the reliability verdict of their result (ok, review, "
                "unreliable), from the job store.",
                tuple(
                    ({"verdict": verdict.value}, count)
                    for verdict, count in self.store.verdict_counts().items()
                ),
            ),
            Metric(
                "wbdwi_gpu_fallbacks_total",
                "counter",
                "Jobs that failed on the GPU and were processed again on the CPU since start.",
                (({}, self._gpu_fallbacks),),
            ),
        ]

    def _export_metrics(self) -> list[Metric]:
        counters = self.exporter.counters
        outbox = self.store.outbox_counts()
        dead = sum(n for (_, state), n in outbox.items() if state is OutboxState.DEAD)
        return [
            Metric(
                "wbdwi_export_file_attempts_total",
                "counter",
                "Result files offered to a destination since start (one per file and try).",
                (({}, counters.attempts),),
            ),
            Metric(
                "wbdwi_export_files_sent_total",
                "counter",
                "Result files a destination acknowledged since start.",
                (({}, counters.sent),),
            ),
            Metric(
                "wbdwi_export_file_failures_total",
                "counter",
                "Failed tries of one result file since start (one per file and try; "
                "a round to an unreachable destination counts each of its files).",
                (({}, counters.failures),),
            ),
            Metric(
                "wbdwi_export_rounds_failed_total",
                "counter",
                "Delivery rounds (one association per destination) that failed as a whole: "
                "destination unreachable or association rejected.",
                (({}, counters.failed_rounds),),
            ),
            Metric(
                "wbdwi_export_rejected_associations_total",
                "counter",
                "Associations a destination rejected (configuration problems).",
                (({}, counters.rejected_associations),),
            ),
            Metric(
                "wbdwi_outbox",
                "gauge",
                "Outbox rows by destination and state.",
                tuple(
                    ({"destination": dest, "state": state.value}, n)
                    for (dest, state), n in sorted(
                        outbox.items(), key=lambda i: (i[0][0], i[0][1].value)
                    )
                ),
            ),
            Metric("wbdwi_dead_letters", "gauge", "Deliveries given up.", (({}, dead),)),
        ]

    @property
    def results_dir(self) -> Path:
        """Where result files are written."""
        return self.settings.results_dir.resolve()

    def _retention_metrics(self) -> list[Metric]:
        counters = self.retention.counters
        kinds = tuple(RetentionKind)
        return [
            Metric(
                "wbdwi_retention_removed_files_total",
                "counter",
                "Files removed by retention since start, by kind (spool, results).",
                tuple(({"kind": k.value}, counters.removed_files[k]) for k in kinds),
            ),
            Metric(
                "wbdwi_retention_removed_bytes_total",
                "counter",
                "Bytes removed by retention since start, by kind.",
                tuple(({"kind": k.value}, counters.removed_bytes[k]) for k in kinds),
            ),
            Metric(
                "wbdwi_retention_waiting",
                "gauge",
                "Items retention keeps at its last pass, by kind and what they wait on.",
                tuple(
                    ({"kind": kind.value, "waiting_on": on.value}, n)
                    for (kind, on), n in sorted(
                        counters.waiting.items(), key=lambda i: (i[0][0].value, i[0][1].value)
                    )
                ),
            ),
            Metric(
                "wbdwi_retention_failures_total",
                "counter",
                "Retention passes that failed (see the log event retention_pass_failed).",
                (({}, counters.failures),),
            ),
        ]
