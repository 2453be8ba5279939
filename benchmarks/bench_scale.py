"""Scale-out (issue 15): exams per hour with 1 and 2 workers, and the queue's overhead per job.

Two measurements, each for the ``sqlite`` backend (the node's own worker
threads) and the ``celery`` backend (a private RabbitMQ from
:mod:`tests.helpers.rabbitmq`, the node as receiver, ``wbdwi worker``
processes):

- **throughput**: the node (a subprocess) receives ``--exams`` small phantom
  exams over DICOM (all at once) and processes them on the CPU with 1, then 2 workers
  (``node.workers`` threads, or worker processes). Exams per hour =
  exams x 3600 / (time from the first job leaving ``receiving`` to the last job
  ``done``). On a 2-core machine two workers share the cores, so the ratio
  shows what the queue costs and how much a second worker gains here, not what
  a second GPU host gains.
- **overhead per job**: from submitting a job to the ledger until the worker's
  runner starts it, with a runner that returns at once (``--jobs`` jobs, one at
  a time, the dispatcher and the worker woken at submit). For ``celery`` this
  is ledger -> publish with confirm -> RabbitMQ -> worker; for ``sqlite`` the
  worker thread's claim.

Prints both with ratios and writes ``benchmarks/out/scale.json``. Needs
``rabbitmq-server`` (Debian package); without it only the sqlite figures are
printed. ``python -m benchmarks scale --exams 4 --jobs 20``.
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pydicom

from dicom_node.package_version import installed_version
from dicom_node.scu.send import Destination, send_files
from service.jobs import JobSpec, JobState, make_job_key
from service.jobstore import SqliteJobStore
from service.logging import configure_logging
from service.settings import LoggingSettings
from service.worker import JobOutcome, Worker
from tests.helpers.celery_worker import WorkerProcess
from tests.helpers.node_harness import NodeProcess, wait_for, write_phantom_exam
from tests.helpers.rabbitmq import RabbitMQ, running_rabbitmq

OUT = Path(__file__).resolve().parent / "out" / "scale.json"


def _exams(folder: Path, count: int) -> list[list[Path]]:
    return [
        write_phantom_exam(folder / f"exam-{i}", patient_id=f"SCALE-{i:04d}", seed=100 + i)
        for i in range(count)
    ]


def _throughput(
    workdir: Path, exams: list[list[Path]], workers: int, broker_url: str | None
) -> dict[str, float]:
    """Exams per hour of the node with ``workers`` workers (celery when ``broker_url``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"WBDWI_NODE_WORKERS": str(workers)}
    extra: list[str] = []
    if broker_url:
        env.update(
            {
                "WBDWI_QUEUE_BACKEND": "celery",
                "WBDWI_QUEUE_BROKER_URL": broker_url,
                "WBDWI_QUEUE_DELIVERY_LIMIT": "3",  # as the workers (the queue's x-delivery-limit)
            }
        )
        extra = ["--role", "receiver"]
    node = NodeProcess(workdir, quiet_seconds=1.0, extra_args=extra, env=env)
    processes = (
        [WorkerProcess(workdir, broker_url, f"w{i}", 3) for i in range(workers)]
        if broker_url
        else []
    )
    with node:
        for process in processes:
            process.start()
        try:
            destination = Destination("127.0.0.1", node.port, "WBDWI", calling_aet="SCANNER")
            first_ready: list[float] = []

            def watch() -> None:
                while not first_ready:
                    if any(s != "receiving" for _, s, _, _ in node.job_states()):
                        first_ready.append(time.monotonic())
                    time.sleep(0.05)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            # All exams at once (one association each), so that the workers, not
            # the sending, set the pace.
            senders = [
                threading.Thread(target=send_files, args=(files, destination)) for files in exams
            ]
            for sender in senders:
                sender.start()
            for sender in senders:
                sender.join()
            wait_for(
                lambda: len(node.job_states()) == len(exams) and node.all_jobs_in("done", "failed"),
                3600,
                f"every job done ({node.log_path})",
                poll=0.2,
            )
            finished = time.monotonic()
            watcher.join(timeout=5)
        finally:
            for process in processes:
                process.stop()
    states = [s for _, s, _, _ in node.job_states()]
    if states != ["done"] * len(exams):
        raise RuntimeError(f"jobs did not all finish: {states} ({node.log_path})")
    seconds = finished - first_ready[0]
    return {"seconds": seconds, "exams_per_hour": len(exams) * 3600.0 / seconds}


def _spec(index: int) -> JobSpec:
    uid = f"2.25.{time.time_ns()}{index}"
    return JobSpec(
        job_key=make_job_key(uid, installed_version(), [f"{uid}.1"]),
        job_id=0,
        study_uid=uid,
        version=1,
        input_paths=(f"/nonexistent/{uid}.dcm",),
        output_dir=f"/nonexistent/{uid}",
        device="cpu",
    )


def _job_id(store: SqliteJobStore, job_key: str) -> int:
    return next(r.job_id for r in store.jobs(limit=10) if r.job_key == job_key)


def _overhead_sqlite(workdir: Path, jobs: int) -> list[float]:
    store = SqliteJobStore(workdir / "sqlite-overhead.sqlite")
    started: dict[int, float] = {}

    def runner(spec: JobSpec) -> JobOutcome:
        started[spec.job_id] = time.time()
        return JobOutcome(result_files=(), device="cpu")

    worker = Worker(store, runner=runner)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    delays = []
    try:
        for index in range(jobs + 1):
            spec = _spec(index)
            submitted = time.time()
            store.submit(spec)
            worker.wake()
            job_id = _job_id(store, spec.job_key)
            wait_for(partial(dict.__contains__, started, job_id), 30, "the sqlite worker")
            if index:  # the first job warms up
                delays.append(started[job_id] - submitted)
    finally:
        stop.set()
        worker.wake()
        thread.join(timeout=10)
        store.close()
    return delays


def _overhead_celery(workdir: Path, broker_url: str, jobs: int) -> list[float]:
    from service.queue_celery.receiver import CeleryReceiver

    store = SqliteJobStore(workdir / "celery-overhead.sqlite")
    receiver = CeleryReceiver(
        store,
        broker_url=broker_url,
        delivery_limit=3,
        device_class="cpu",
        software_version=installed_version(),
    )
    stop = threading.Event()
    threads = [
        threading.Thread(target=receiver.run_dispatcher, args=(stop,), daemon=True),
        threading.Thread(target=receiver.run_events, args=(stop,), daemon=True),
    ]
    for thread in threads:
        thread.start()
    worker = WorkerProcess(workdir / "overhead", broker_url, "o", 3, noop=True).start()
    delays = []
    try:
        for index in range(jobs + 1):
            spec = _spec(index)
            submitted = time.time()
            store.submit(spec)
            receiver.wake()
            job_id = _job_id(store, spec.job_key)
            pattern = f"{job_id}-*"
            marker = wait_for(
                lambda: next(worker.started_dir.glob(pattern), None),  # noqa: B023 (called now)
                120 if index == 0 else 30,
                f"the celery worker ({worker.log_path})",
                poll=0.002,
            )
            done_id = job_id
            wait_for(
                lambda: store.status(done_id).state is JobState.DONE,  # noqa: B023 (called now)
                30,
                "the job's report",
            )
            if index:
                delays.append(marker.stat().st_mtime - submitted)
    finally:
        worker.stop()
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        store.close()
    return delays


@contextmanager
def _broker(workdir: Path) -> Iterator[RabbitMQ | None]:
    """A private RabbitMQ, or ``None`` (said) when rabbitmq-server is not installed."""
    if not glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server"):
        print("celery backend not measured: rabbitmq-server is not installed (make tools)")
        yield None
        return
    with running_rabbitmq(workdir) as broker:
        yield broker


def _ms(values: list[float]) -> str:
    p90 = sorted(values)[int(0.9 * (len(values) - 1))]
    return f"median {statistics.median(values) * 1000:.1f} ms, p90 {p90 * 1000:.1f} ms"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks scale")
    parser.add_argument("--exams", type=int, default=6, help="phantom exams per run (default 6)")
    parser.add_argument("--jobs", type=int, default=20, help="jobs for the overhead (default 20)")
    args = parser.parse_args(argv or [])
    configure_logging(LoggingSettings(level="warning"))  # the in-process workers' job lines
    report: dict[str, Any] = {"exams": args.exams, "jobs": args.jobs}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        exams = _exams(root / "exams", args.exams)
        uid = pydicom.dcmread(exams[0][0], stop_before_pixels=True).StudyInstanceUID
        print(f"{args.exams} small phantom exams of {len(exams[0])} instances (first {uid})")
        with _broker(root) as broker:
            backends: list[tuple[str, str | None]] = [("sqlite", None)]
            if broker is not None:
                backends.append(("celery", broker.vhost_url("bench")))
            for backend, url in backends:
                for workers in (1, 2):
                    run = _throughput(root / f"{backend}-{workers}", exams, workers, url)
                    report[f"{backend}_{workers}_workers"] = run
                    print(
                        f"{backend:6} {workers} worker(s): {run['exams_per_hour']:7.0f} exams/hour "
                        f"({args.exams} exams in {run['seconds']:.1f} s)",
                        flush=True,
                    )
            overhead = {"sqlite": _overhead_sqlite(root, args.jobs)}
            if broker is not None:
                overhead["celery"] = _overhead_celery(root, broker.vhost_url("overhead"), args.jobs)
        for backend, delays in overhead.items():
            report[f"{backend}_overhead_s"] = delays
            print(f"{backend:6} submit to start: {_ms(delays)}")
        for backend, _ in backends:
            one = report[f"{backend}_1_workers"]["exams_per_hour"]
            two = report[f"{backend}_2_workers"]["exams_per_hour"]
            print(f"ratio {backend} 2 workers / 1 worker: {two / one:.2f}")
        if "celery" in overhead:
            for workers in (1, 2):
                ratio = (
                    report[f"celery_{workers}_workers"]["exams_per_hour"]
                    / report[f"sqlite_{workers}_workers"]["exams_per_hour"]
                )
                print(f"ratio celery / sqlite exams/hour, {workers} worker(s): {ratio:.2f}")
            ratio = statistics.median(overhead["celery"]) / statistics.median(overhead["sqlite"])
            print(f"ratio celery / sqlite submit-to-start (median): {ratio:.1f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
