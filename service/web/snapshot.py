"""What the dashboard shows, read from the running node in one go.

The job store's own queries (those ``wbdwi status`` uses) and the node's
in-memory state (threads, device, receiver counters); nothing is queried
from SQLite here. (:mod:`service.commands` is not imported: it imports the
node, which builds the web application.)
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from service.completion import ready_estimate
from service.dead_letters import DeadLetterGroup, summarise_dead_letters
from service.jobs import JobRecord, JobState, OutboxRecord, OutboxState
from service.jobstore.records import ReceivingStudy
from service.retention import RetentionPlan, plan_retention
from service.web.view import NodeView

__all__ = [
    "DeadLetterGroup",
    "DestinationRow",
    "DiskRow",
    "ReceivingRow",
    "SenderRow",
    "Snapshot",
    "ThreadRow",
    "read_snapshot",
]

RECENT_JOBS = 50


@dataclass(frozen=True, slots=True)
class ThreadRow:
    """One thread of the node and whether it runs."""

    name: str
    alive: bool
    detail: str


@dataclass(frozen=True, slots=True)
class SenderRow:
    """A recent study received: who sent it, how many instances, when the last came."""

    calling_ae: str
    study_uid: str
    job_id: int
    instances: int
    last_instance_at: float


@dataclass(frozen=True, slots=True)
class ReceivingRow:
    """A study still receiving and when it should become ready."""

    study: ReceivingStudy
    eta: float
    why: str


@dataclass(frozen=True, slots=True)
class DestinationRow:
    """The outbox of one destination."""

    destination: str
    configured: bool
    counts: dict[OutboxState, int]
    last_error: str
    next_try_at: float | None


@dataclass(frozen=True, slots=True)
class DiskRow:
    """Use of the file system holding one folder."""

    label: str
    path: Path
    total: int
    free: int


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one dashboard page shows."""

    now: float
    version: str
    ae_title: str
    dicom_port: int
    device: str
    problems: list[str]
    threads: list[ThreadRow]
    associations_accepted: int
    associations_rejected: int
    associations_active: int
    senders: list[SenderRow]
    receiving: list[ReceivingRow]
    counts: dict[JobState, int]
    jobs: list[JobRecord]
    destinations: list[DestinationRow]
    dead: list[DeadLetterGroup]
    disks: list[DiskRow]
    retention_enabled: bool
    plan: RetentionPlan


def _destinations(
    rows: list[OutboxRecord], counts: dict[tuple[str, OutboxState], int], configured: set[str]
) -> list[DestinationRow]:
    """Per destination: counts by state, the latest error and the next try of pending rows."""
    names = sorted({d for d, _ in counts} | configured)
    result = []
    for name in names:
        own = [row for row in rows if row.destination == name]
        failed = [row for row in own if row.last_error]
        pending = [row.next_try_at for row in own if row.state is OutboxState.PENDING]
        result.append(
            DestinationRow(
                destination=name,
                configured=name in configured,
                counts={state: counts.get((name, state), 0) for state in OutboxState},
                last_error=failed[-1].last_error if failed else "",
                next_try_at=min(pending) if pending else None,
            )
        )
    return result


def _disks(node: NodeView) -> list[DiskRow]:
    rows = []
    for label, path in (("data folder", node.data_dir), ("results", node.results_dir)):
        target = path if path.exists() else path.parent
        try:
            usage = shutil.disk_usage(target)
        except OSError:
            continue
        rows.append(DiskRow(label, path, usage.total, usage.free))
    return rows


def _threads(node: NodeView) -> list[ThreadRow]:
    rows = []
    for name, thread in sorted(node.threads().items()):
        detail = ""
        if name.startswith("worker") and node.worker.current_job is not None:
            detail = f"job {node.worker.current_job}"
        rows.append(ThreadRow(name, thread.is_alive(), detail))
    return rows


def read_snapshot(node: NodeView) -> Snapshot:
    """Read everything the dashboard shows from ``node`` now."""
    now = time.time()
    store, settings = node.store, node.settings
    jobs = store.jobs(limit=RECENT_JOBS)
    outbox_counts = store.outbox_counts()
    unsent = [row for row in store.outbox(limit=None) if row.state is not OutboxState.SENT]
    stats = node.receiver.stats
    senders = [
        SenderRow(j.calling_ae, j.study_uid, j.job_id, j.instance_count, j.last_instance_at)
        for j in sorted(jobs, key=lambda j: j.last_instance_at, reverse=True)[:10]
        if j.calling_ae
    ]
    receiving = []
    for study in store.receiving_studies():
        estimate = ready_estimate(study, settings, now)
        receiving.append(ReceivingRow(study, estimate.at, estimate.rule))
    return Snapshot(
        now=now,
        version=node.version,
        ae_title=settings.node.ae_title,
        dicom_port=settings.node.port,
        device=node.device_description or "not chosen yet",
        problems=node.readiness_problems(),
        threads=_threads(node),
        associations_accepted=stats.associations_accepted,
        associations_rejected=stats.associations_rejected,
        associations_active=node.receiver.active_associations,
        senders=senders,
        receiving=receiving,
        counts=store.job_counts(),
        jobs=jobs,
        destinations=_destinations(
            unsent, outbox_counts, {str(d) for d in settings.export.destinations}
        ),
        dead=summarise_dead_letters([r for r in unsent if r.state is OutboxState.DEAD]),
        disks=_disks(node),
        retention_enabled=settings.retention.enabled,
        plan=plan_retention(
            store.job_deliveries(), store.spooled_studies(), settings.retention, now
        ),
    )
