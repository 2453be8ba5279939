"""``wbdwi status``: jobs, outbox and failures of a node, read from its job store.

Also, per job, the reliability verdict of its result with the reasons (kept in
the job store), the exam it was compared with (from the job's ``job.json``), and
what retention is waiting on (:func:`service.retention.plan_retention` with the
node's ``[retention]`` settings at the current time).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processing.quality import QualityAssessment, Verdict
from service.commands.serve import add_config_argument, open_node_job_store
from service.completion import ReadyEstimate, ready_estimate
from service.corrections import CORRECTION_JOB_PREFIX
from service.data_dir_lock import LOCK_FILE, running_node_pid
from service.dead_letters import summarise_dead_letters
from service.disk import room_problem
from service.jobs import JobRecord, JobState, OutboxRecord, OutboxState
from service.retention import RetentionPlan, plan_retention
from service.worker import JOB_SUMMARY_FILE

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``status`` subcommand."""
    parser = subparsers.add_parser(
        "status",
        help="show jobs, deliveries and failures",
        description="Print the node's jobs (newest first), the outbox per destination, "
        "failed jobs with their reasons and dead-lettered deliveries.",
    )
    add_config_argument(parser)
    parser.add_argument("--limit", type=int, default=20, help="jobs shown (default 20)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def _time(value: float) -> str:
    return dt.datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def _ready_line(estimate: ReadyEstimate, now: float) -> str:
    """When a receiving job becomes ready, and by which rule."""
    delay = estimate.at - now
    when = "now" if delay <= 0 else f"in {delay:.0f} s"
    return f"\n       ready {when} ({_time(estimate.at)}): {estimate.rule}"


def _job_line(
    job: JobRecord, priors: dict[str, Any] | None, estimate: ReadyEstimate | None, now: float
) -> str:
    seconds = "" if job.processing_seconds is None else f"{job.processing_seconds:.1f}s"
    line = (
        f"{job.job_id:>5}  {job.state.value:<10} v{job.version:<2} {job.instance_count:>5} inst  "
        f"{seconds:>7}  {_time(job.updated_at)}  {job.study_uid}"
    )
    if job.job_key and job.job_key.startswith(CORRECTION_JOB_PREFIX):
        line += f"\n       reader's correction: SEG {job.job_key[len(CORRECTION_JOB_PREFIX) :]}"
    if job.reason:
        line += f"\n       reason: {job.reason}"
    if estimate is not None:
        line += _ready_line(estimate, now)
    if job.quality is not None:
        line += _verdict_lines(job.quality)
    if priors and priors.get("unreadable"):
        line += f"\n       job.json unreadable: {priors['unreadable']}"
    if priors and priors.get("previous_study_uid"):
        line += (
            f"\n       compared with {priors['previous_study_uid']} "
            f"(baseline {priors.get('baseline_study_uid')})"
        )
    return line


def _verdict_lines(quality: QualityAssessment) -> str:
    """The verdict of a processed job, and one line per reason when it is not ``ok``."""
    verdict = quality.verdict
    if verdict is Verdict.OK:
        return "\n       verdict: ok"
    text = f"\n       verdict: {verdict.value.upper()}: {verdict.meaning}"
    for finding in quality.findings:
        text += f"\n         - {finding.severity.value} ({finding.code}): {finding.message}"
    return text


def _job_priors(output_dir: str | None) -> dict[str, Any] | None:
    """The ``priors`` block of a job's ``job.json`` (``None`` when absent or removed)."""
    if output_dir is None:
        return None
    path = Path(output_dir) / JOB_SUMMARY_FILE
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return {"unreadable": f"{path}: {error}"}
    block = summary.get("priors") if isinstance(summary, dict) else None
    return block if isinstance(block, dict) else None


def _retention_lines(plan: RetentionPlan, enabled: bool) -> list[str]:
    if not enabled:
        return ["retention: off (retention.enabled = false); nothing is removed"]
    counts = plan.waiting_counts()
    lines = [f"retention: {len(plan.due)} due now, {len(plan.waiting)} kept"]
    for (kind, waiting_on), n in sorted(counts.items(), key=lambda i: (i[0][0].value, -i[1])):
        lines.append(f"  {kind.value}: {n} waiting on {waiting_on.value}")
    next_due = plan.next_due_at()
    if next_due is not None:
        lines.append(f"  next removal after {_time(next_due)}")
    return lines


def _dead_letter_lines(dead: list[OutboxRecord], limit: int) -> list[str]:
    groups = summarise_dead_letters(dead)
    lines = [
        f"dead letters: {len(dead)} file(s) in {len(groups)} job/destination group(s); "
        "send them again with `wbdwi retry JOB` (list every file: --json)"
    ]
    for group in groups[:limit]:
        lines.append(
            f"  job {group.job_id} -> {group.destination}: {group.files} file(s), "
            f"up to {group.max_attempts} attempt(s); retry: wbdwi retry {group.job_id}"
        )
        if group.distinct_errors == 1:
            lines.append(f"       error: {group.last_error}")
        else:
            lines.append(f"       first error: {group.first_error}")
            lines.append(
                f"       last error: {group.last_error} ({group.distinct_errors} different errors)"
            )
    if len(groups) > limit:
        lines.append(f"  ... {len(groups) - limit} more group(s) (--limit, or --json)")
    return lines


@dataclass(frozen=True, slots=True)
class DestinationWait:
    """The waiting deliveries to one destination: when the next try is and what failed last."""

    pending: int
    next_try_at: float
    last_error: str  # the newest error among the waiting rows; empty when none failed yet

    def as_dict(self) -> dict[str, Any]:
        """JSON values."""
        return {
            "pending": self.pending,
            "next_try_at": self.next_try_at,
            "last_error": self.last_error or None,
        }

    def describe(self, now: float) -> str:
        """One line: next try (now, or in how long) and the last error."""
        delay = self.next_try_at - now
        when = "now" if delay <= 0 else f"in {delay:.0f} s"
        stamp = dt.datetime.fromtimestamp(self.next_try_at).strftime("%Y-%m-%d %H:%M:%S")
        text = f"next try {when} ({stamp})"
        if self.last_error:
            text += f"; last error: {self.last_error}"
        return text + "; send now: wbdwi retry --deliveries"


def destination_waits(pending: list[OutboxRecord]) -> dict[str, DestinationWait]:
    """Per destination: waiting rows, the earliest next try and the last error."""
    grouped: dict[str, list[OutboxRecord]] = {}
    for row in pending:
        grouped.setdefault(row.destination, []).append(row)
    waits: dict[str, DestinationWait] = {}
    for destination, rows in grouped.items():
        errors = [row for row in rows if row.last_error]
        waits[destination] = DestinationWait(
            pending=len(rows),
            next_try_at=min(row.next_try_at for row in rows),
            last_error=max(errors, key=lambda r: (r.attempts, r.outbox_id)).last_error
            if errors
            else "",
        )
    return waits


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What ``wbdwi status`` shows, read from the job store in one go."""

    jobs: list[JobRecord]
    counts: dict[JobState, int]
    verdicts: dict[Verdict, int]
    outbox: dict[tuple[str, OutboxState], int]
    dead: list[OutboxRecord]
    failed: list[JobRecord]
    plan: RetentionPlan
    retention_enabled: bool
    priors: dict[int, dict[str, Any] | None]
    lock_file: Path
    node_pid: int | None
    waiting: dict[str, DestinationWait]
    disk_problem: str | None
    now: float
    ready: dict[int, ReadyEstimate]  # receiving jobs: when they become ready, by which rule


def run(args: argparse.Namespace) -> int:
    """Print the status; 0 when nothing failed, 1 when a job failed or a delivery is dead."""
    opened = open_node_job_store(args, "status", missing_hint=" (has the node run here?)")
    if opened is None:
        return 2
    settings, store = opened
    try:
        jobs = store.jobs(limit=args.limit)
        counts = store.job_counts()
        verdicts = store.verdict_counts()
        outbox = store.outbox_counts()
        dead = store.dead_letters()
        waiting = destination_waits(store.outbox(state=OutboxState.PENDING, limit=None))
        failed = [job for job in store.jobs(limit=100000) if job.state is JobState.FAILED]
        deliveries = store.job_deliveries()
        now = time.time()
        plan = plan_retention(deliveries, store.spooled_studies(), settings.retention, now)
        ready = {
            study.job_id: ready_estimate(study, settings, now)
            for study in store.receiving_studies()
        }
    finally:
        store.close()
    output_dirs = {d.job_id: d.output_dir for d in deliveries}
    snapshot = _Snapshot(
        jobs=jobs,
        counts=counts,
        verdicts=verdicts,
        outbox=outbox,
        dead=dead,
        failed=failed,
        plan=plan,
        retention_enabled=settings.retention.enabled,
        priors={job.job_id: _job_priors(output_dirs.get(job.job_id)) for job in jobs},
        lock_file=settings.node.data_dir.resolve() / LOCK_FILE,
        node_pid=running_node_pid(settings.node.data_dir.resolve()),
        waiting=waiting,
        disk_problem=room_problem(settings.node.data_dir.resolve(), settings.node.min_free_disk_mb),
        now=now,
        ready=ready,
    )
    if args.json:
        print(json.dumps(_json_payload(snapshot), indent=2))
    else:
        for line in _text_lines(snapshot, args.limit):
            print(line)
    return 1 if failed or dead else 0


def _json_payload(snapshot: _Snapshot) -> dict[str, Any]:
    """The ``--json`` document."""
    plan = snapshot.plan
    return {
        "node": {"running": snapshot.node_pid is not None, "pid": snapshot.node_pid or None},
        "disk_problem": snapshot.disk_problem,
        "jobs_by_state": {state.value: n for state, n in snapshot.counts.items()},
        "results_by_verdict": {verdict.value: n for verdict, n in snapshot.verdicts.items()},
        "jobs": [
            {
                "job_id": j.job_id,
                "state": j.state.value,
                "version": j.version,
                "study_uid": j.study_uid,
                "instances": j.instance_count,
                "reason": j.reason,
                "processing_seconds": j.processing_seconds,
                "not_before": j.not_before or None,
                "priors": snapshot.priors[j.job_id],
                "quality": None if j.quality is None else j.quality.as_dict(),
                "held_since": j.held_since,
                "ready_estimate": None
                if j.job_id not in snapshot.ready
                else snapshot.ready[j.job_id].as_dict(),
            }
            for j in snapshot.jobs
        ],
        "outbox": [
            {"destination": d, "state": s.value, "count": n}
            for (d, s), n in snapshot.outbox.items()
        ],
        "waiting_deliveries": {d: w.as_dict() for d, w in snapshot.waiting.items()},
        "dead_letter_groups": [group.as_dict() for group in summarise_dead_letters(snapshot.dead)],
        "dead_letters": [
            {
                "job_id": r.job_id,
                "destination": r.destination,
                "path": r.path,
                "attempts": r.attempts,
                "last_error": r.last_error,
            }
            for r in snapshot.dead
        ],
        "retention": {
            "enabled": snapshot.retention_enabled,
            "due": len(plan.due),
            "next_due_at": plan.next_due_at(),
            "waiting": [
                {
                    "kind": item.kind.value,
                    "study_uid": item.study_uid,
                    "job_id": item.job_id,
                    "waiting_on": item.waiting_on.value if item.waiting_on else None,
                    "due_at": item.due_at,
                    "detail": item.detail,
                }
                for item in plan.waiting
            ],
        },
    }


def _node_line(snapshot: _Snapshot) -> str:
    """Whether a node runs on this data folder (it holds the folder's lock)."""
    if snapshot.node_pid is None:
        return f"node: not running (no process holds {snapshot.lock_file})"
    pid = f"PID {snapshot.node_pid}" if snapshot.node_pid else "PID unknown"
    return f"node: running ({pid})"


def _text_lines(snapshot: _Snapshot, limit: int) -> list[str]:
    """The plain-text report, one string per printed line."""
    counts, verdicts, outbox = snapshot.counts, snapshot.verdicts, snapshot.outbox
    lines = [_node_line(snapshot)]
    if snapshot.disk_problem:
        lines.append(f"warning: {snapshot.disk_problem}")
    lines.append("jobs: " + (", ".join(f"{s.value} {n}" for s, n in counts.items() if n) or "none"))
    if any(verdicts.values()):
        lines.append("results: " + ", ".join(f"{v.value} {n}" for v, n in verdicts.items()))
    lines.append("   id  state      ver  inputs   proc.  updated              study")
    lines.extend(
        _job_line(job, snapshot.priors[job.job_id], snapshot.ready.get(job.job_id), snapshot.now)
        for job in snapshot.jobs
    )
    lines.append("outbox:")
    destinations = sorted({d for d, _ in outbox})
    for destination in destinations:
        parts = [f"{s.value} {outbox.get((destination, s), 0)}" for s in OutboxState]
        lines.append(f"  {destination}: " + ", ".join(parts))
        wait = snapshot.waiting.get(destination)
        if wait is not None:
            lines.append(f"    {wait.describe(time.time())}")
    if not destinations:
        lines.append("  empty")
    if snapshot.failed:
        lines.append(f"failed jobs ({len(snapshot.failed)}): retry with `wbdwi retry JOB`")
        lines.extend(f"  {job.job_id}: {job.reason}" for job in snapshot.failed[:limit])
    if snapshot.dead:
        lines.extend(_dead_letter_lines(snapshot.dead, limit))
    lines.extend(_retention_lines(snapshot.plan, snapshot.retention_enabled))
    return lines
