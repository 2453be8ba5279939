"""A ``wbdwi worker`` process for the celery backend's tests, with test-only knobs.

:class:`WorkerProcess` runs this module as a subprocess in its own process
group (``kill -9`` of the group takes the worker and its pool process, as a
host going down would). The worker is the real one
(:func:`service.queue_celery.worker.run_worker` with :func:`service.worker.run_job`);
the flags only add what a test needs to observe or provoke:

``--started-dir``
    the runner writes ``<job_id>-<pid>`` there when a job starts (so a test
    can kill the worker mid-job);
``--hold-seconds``
    the runner waits this long after writing the marker (a job long enough to
    be killed mid-way);
``--crash-study UID``
    the runner kills its own process with SIGKILL for that study (an exam that
    crashes the worker, as a fault in native code would);
``--software-version``
    the version the worker claims (a worker of another release);
``--noop``
    the runner returns at once with no result files (queue overhead only; the
    marker's modification time is when the job started).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["WorkerProcess", "main"]

REPO = Path(__file__).resolve().parents[2]


@dataclass
class WorkerProcess:
    """One worker subprocess."""

    workdir: Path
    broker_url: str
    name: str
    delivery_limit: int = 3
    queue: str = "cpu"
    software_version: str = ""
    crash_study: str = ""
    hold_seconds: float = 0.0
    noop: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def started_dir(self) -> Path:
        return self.workdir / "started"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"worker-{self.name}.log"

    def start(self) -> WorkerProcess:
        self.started_dir.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "tests.helpers.celery_worker",
            "--broker", self.broker_url,
            "--delivery-limit", str(self.delivery_limit),
            "--queue", self.queue,
            "--name", self.name,
            "--started-dir", str(self.started_dir),
            "--hold-seconds", str(self.hold_seconds),
        ]  # fmt: skip
        if self.software_version:
            command += ["--software-version", self.software_version]
        if self.crash_study:
            command += ["--crash-study", self.crash_study]
        if self.noop:
            command.append("--noop")
        environment = {k: v for k, v in os.environ.items() if not k.startswith("WBDWI_")}
        environment["WBDWI_LOGGING_FORMAT"] = "json"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=environment,
                start_new_session=True,
            )
        return self

    def markers(self) -> list[str]:
        """``<job_id>-<pid>`` of every job this worker (or any sharing the folder) started."""
        return (
            sorted(p.name for p in self.started_dir.glob("*-*"))
            if self.started_dir.exists()
            else []
        )

    def kill9(self) -> None:
        """``kill -9`` of the worker and its pool process."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (warm shutdown), then kill."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def main() -> None:
    """Run one worker with the test knobs (see the module docstring)."""
    from dicom_node.package_version import installed_version
    from service.history import ExamHistory
    from service.jobs import JobSpec
    from service.logging import configure_logging
    from service.queue_celery.worker import WorkerOptions, run_worker
    from service.settings import load_settings
    from service.worker import JobOutcome, run_job

    parser = argparse.ArgumentParser()
    parser.add_argument("--broker", required=True)
    parser.add_argument("--delivery-limit", type=int, required=True)
    parser.add_argument("--queue", default="cpu")
    parser.add_argument("--name", required=True)
    parser.add_argument("--started-dir", type=Path, required=True)
    parser.add_argument("--hold-seconds", type=float, default=0.0)
    parser.add_argument("--crash-study", default="")
    parser.add_argument("--software-version", default="")
    parser.add_argument("--noop", action="store_true")
    args = parser.parse_args()
    configure_logging(load_settings(None).logging)

    def runner(spec: JobSpec, *, history: ExamHistory | None = None) -> JobOutcome:
        (args.started_dir / f"{spec.job_id}-{os.getpid()}").write_text(args.name)
        if args.noop:
            return JobOutcome(result_files=(), device="cpu")
        if spec.study_uid == args.crash_study:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(args.hold_seconds)
        return run_job(spec, history=history)

    options = WorkerOptions(
        broker_url=args.broker,
        delivery_limit=args.delivery_limit,
        queue=args.queue,
        device="cpu",
        software_version=args.software_version or installed_version(),
        name=f"{args.name}@test",
    )
    run_worker(options, runner)


if __name__ == "__main__":
    main()
